// The application of examples/lazy.js, loaded only in its workers: a module
// that exports the handler (a request listener, an Express app, a net.Server,
// or a default export of one). Heavy requires belong here, not in lazy.js.
module.exports = (req, res) => res.end(`hello from worker ${process.pid}\n`);
