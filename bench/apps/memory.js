// Memory probe for the master (bench/soak.js --memory): on SIGUSR2 (which
// handover does not use) it runs a full GC and appends one JSON line to
// `file`: process.memoryUsage(), V8's physical size per heap space, the live
// libuv handles by type and
// /proc/self/smaps_rollup, so a soak can tell JS heap, Buffers (external,
// arrayBuffers), handles and native/allocator memory apart.
const fs = require('node:fs');
const v8 = require('node:v8');
const vm = require('node:vm');

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc');

function smapsRollup() {
  const out = {};
  try {
    for (const m of fs.readFileSync('/proc/self/smaps_rollup', 'utf8').matchAll(/^(\w+):\s+(\d+) kB/gm)) out[m[1]] = Number(m[2]);
  } catch {}
  return out;
}

module.exports = function memoryProbe(file) {
  process.on('SIGUSR2', () => {
    gc();
    const handles = {};
    for (const h of process._getActiveHandles()) handles[h.constructor.name] = (handles[h.constructor.name] || 0) + 1;
    const spaces = {};
    for (const sp of v8.getHeapSpaceStatistics()) spaces[sp.space_name] = sp.physical_space_size;
    const line = {
      at: Date.now(), ...process.memoryUsage(), spaces, handles, requests: process._getActiveRequests().length, smaps: smapsRollup(),
    };
    fs.appendFileSync(file, `${JSON.stringify(line)}\n`);
  });
};
