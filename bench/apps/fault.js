// Fault injection for the `faults` scenario (bench/lib/faults.js), a no-op
// unless FAULT_DIR is set. Called first thing in a worker with its slot
// (handover: HANDOVER_SLOT, read before handover takes it out of process.env;
// the cluster peer: SLOT; pm2: NODE_APP_INSTANCE). It records the worker's
// pid in FAULT_DIR/slot-<slot>.pid, and while FAULT_DIR/crash-slot-<slot>
// exists every new worker of that slot throws at start: a crash loop.
const fs = require('node:fs');
const path = require('node:path');

module.exports = function fault(slot) {
  const dir = process.env.FAULT_DIR;
  if (!dir || slot === undefined) return;
  if (fs.existsSync(path.join(dir, `crash-slot-${slot}`))) {
    throw new Error(`bench fault: slot ${slot} is crash-looping (${path.join(dir, `crash-slot-${slot}`)} exists)`);
  }
  fs.writeFileSync(path.join(dir, `slot-${slot}.pid`), `${process.pid}\n`);
};
