// A heavy application for the memory scenario: generated modules (code, string
// constants and a table of rows each) that take about 45 MB of RSS once
// loaded, standing in for a framework, an ORM and templates, behind the hello
// handler. Written to a temp dir; its index.js exports the handler, so the
// bench apps load it as APP_MODULE (bench/apps/plain.js, bench/apps/handover.js).
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const FILES = 15;
const FUNCTIONS = 2000;

/** Writes the application into a new temp dir; returns {dir, module} (the module to require). */
function writeHeavyApp() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'handover-bench-heavy-'));
  const parts = [];
  for (let f = 0; f < FILES; f++) {
    const lines = ["'use strict';", 'const table = {};'];
    for (let i = 0; i < FUNCTIONS; i++) {
      lines.push(`table.f${i} = function f${f}_${i}(x) { const label = 'module ${f} function ${i} ${'x'.repeat(40)}'; ` +
        `return x > ${i} ? label.length + x * ${i} : [label, x, ${i}].join(':'); };`);
    }
    lines.push(`table.rows = Array.from({ length: ${FUNCTIONS} }, (_, i) => ({ id: i, name: 'row-' + i + '-${f}', tags: ['a' + i, 'b' + i] }));`);
    lines.push('module.exports = table;');
    fs.writeFileSync(path.join(dir, `part${f}.js`), `${lines.join('\n')}\n`);
    parts.push(`require('./part${f}.js');`);
  }
  const handler = path.join(__dirname, '..', 'apps', 'handler.js');
  fs.writeFileSync(path.join(dir, 'index.js'), `${parts.join('\n')}\nmodule.exports = require(${JSON.stringify(handler)});\n`);
  return { dir, module: path.join(dir, 'index.js') };
}

module.exports = { writeHeavyApp };
