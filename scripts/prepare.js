#!/usr/bin/env node
// npm's `prepare` hook: compiles src/ into dist/ with TypeScript, then the
// workers' bundle (scripts/bundle.js). npm runs it
// after `npm install` in a checkout, before `npm pack`, in the temporary clone
// it makes for a git dependency (`npm install git+https://...`), and in the
// directory of a local dependency (`npm install ../handover`). The last one
// runs in a checkout whose own dependencies npm has not installed, so say what
// to do instead of "tsc: not found" or "node-gyp-build: not found".
// It never compiles the addon: that is `npm run build:native`.
'use strict';
const { execFileSync } = require('node:child_process');
const path = require('node:path');

const root = path.resolve(__dirname, '..');

function resolveFrom(request) {
  try {
    return require.resolve(request, { paths: [root] });
  } catch {
    return undefined;
  }
}

const tsc = resolveFrom('typescript/bin/tsc');
if (!tsc || !resolveFrom('node-gyp-build')) {
  console.error(
    `handover: the checkout at ${root} has no node_modules, so dist/ cannot be built and the addon cannot load.\n` +
      `Run \`npm install\` in ${root} first (it installs TypeScript and builds dist/), then install it from there again.`,
  );
  process.exit(1);
}
execFileSync(process.execPath, [tsc, '-p', path.join(root, 'tsconfig.json')], { stdio: 'inherit' });
execFileSync(process.execPath, [path.join(__dirname, 'bundle.js')], { stdio: 'inherit' });
