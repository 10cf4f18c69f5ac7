// `ready()`: a program run by `handover start` says it is ready to serve.
// The state lives on globalThis under a registered symbol, because the
// program's own `require('handover')` may load another copy of this package
// than the `handover` command that runs it.

interface ReadyState {
  /** Set by `handover start` in a worker; called at most once. */
  onReady?: () => void;
  called: boolean;
}

const KEY = Symbol.for('handover.start.ready');

/** The state shared by every copy of handover in this process. */
export function readyState(): ReadyState {
  const store = globalThis as unknown as Record<symbol, ReadyState | undefined>;
  return (store[KEY] ??= { called: false });
}

/**
 * Tells `handover start` that this worker is ready: it has listened on every
 * address and finished warming up. With `--wait-ready` a worker is ready only
 * when its program calls ready(). Without it, a worker is ready once its
 * program's entry has finished (a CommonJS main returned, an ES module's
 * top-level await settled), every listen() it made is bound and the event
 * loop has turned once with no new listen(), provided it had listened by
 * then; otherwise once it has listened and made no listen() call for 200 ms
 * (or at ready(), if that comes first). Outside `handover start` it does
 * nothing, so the same program also runs under plain `node`.
 * Call it from start-up code, not from a listen() callback: with
 * `--wait-ready` those run only once the worker is ready.
 *
 * ```js
 * app.listen(3000);
 * cache.warm().then(() => require('handover').ready());
 * ```
 */
export function ready(): void {
  const state = readyState();
  if (state.called) return;
  state.called = true;
  state.onReady?.();
}
