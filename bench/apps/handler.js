// The hello handler every server in the bench runs (same as examples/hello.js),
// plus GET /slow?ms=N, which answers after N ms (the in-flight scenario).
module.exports = function hello(req, res) {
  res.setHeader('X-Worker-Pid', String(process.pid));
  if (req.url.startsWith('/slow')) {
    const ms = Number(new URL(req.url, 'http://x').searchParams.get('ms') || 3000);
    setTimeout(() => res.end('slow\n'), ms);
    return;
  }
  res.end('hello\n');
};
