// The hello handler every server in the bench runs (same as examples/hello.js),
// plus GET /slow?ms=N, which answers after N ms (the in-flight scenario).
// Memory for the rollouts scenario (bench/lib/rollouts.js), the same under every
// server: HOLD_MB, memory each worker touches at start and holds (so a reload's
// peak RSS shows how many workers overlap); LEAK_KB, memory every request
// retains on the JS heap (a leaking worker: it grows until recycled or until V8
// gives up at its heap limit).
const held = process.env.HOLD_MB ? Buffer.alloc(Number(process.env.HOLD_MB) << 20, 1) : undefined;
const leakKb = Number(process.env.LEAK_KB || 0);
const leaked = [];

module.exports = function hello(req, res) {
  res.setHeader('X-Worker-Pid', String(process.pid));
  if (held) res.setHeader('X-Held-Bytes', String(held.length));
  // an array of leakKb * 128 numbers: 8 bytes each on the V8 heap
  if (leakKb) leaked.push(new Array(leakKb * 128).fill(leaked.length + 0.5));
  if (req.url.startsWith('/slow')) {
    const ms = Number(new URL(req.url, 'http://x').searchParams.get('ms') || 3000);
    setTimeout(() => res.end('slow\n'), ms);
    return;
  }
  res.end('hello\n');
};
