#!/usr/bin/env node
// Rewrites the README's options table from src/options.ts's OPTIONS (after
// `npm run build`): a new option is one row there, then `node scripts/readme-options.js`.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { optionsTable } = require('../dist/options');

const readmePath = path.join(__dirname, '..', 'README.md');
const readme = fs.readFileSync(readmePath, 'utf8');
const start = readme.indexOf('| option |');
if (start < 0) throw new Error('README.md has no options table (a line starting "| option |")');
const end = readme.indexOf('\n\n', start);
fs.writeFileSync(readmePath, readme.slice(0, start) + optionsTable() + readme.slice(end));
