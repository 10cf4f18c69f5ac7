// `handover upgrade [NAME] [--node PATH]`: the master execs a fresh image of
// itself in the same pid (src/master/upgrade.ts). The answer comes in two
// parts: the master says whether the new image passed its probe (if not,
// nothing changed and the cause is printed: exit 1); then the exec closes
// this connection, and the command reconnects until the new image's
// generation serves on the same pid (exit 0) or the master is gone (exit 1).
import * as path from 'node:path';
import { ReachError, ask, fetchStatus } from './admin';
import { locate } from './locate';

/** How long the new image may take to serve; its own startTimeout bounds the generation. */
const SERVE_TIMEOUT_MS = 120_000;
const POLL_MS = 200;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export async function upgrade(name: string | undefined, options: Map<string, string | true>): Promise<number> {
  const node = options.get('node');
  if (node === true) throw new ReachError('--node needs the path of a Node binary, e.g. --node /usr/local/bin/node');
  const target = await locate(name, options);
  const before = await fetchStatus(target);
  const answer = await ask(target.socket, { type: 'upgrade', id: 1, node: node === undefined ? undefined : path.resolve(node) });
  if (answer?.type !== 'upgrade-result') throw new ReachError(`the master at ${target.socket} closed the connection without answering; its log says why`);
  if (!answer.ok) {
    process.stdout.write(`upgrade failed: ${answer.message ?? 'no reason given'}\n`);
    return 1;
  }
  // Same pid, new control socket: find it again by pid, in the same control directory.
  const again = new Map<string, string | true>([['pid', String(before.pid)]]);
  if (options.has('socket') || options.has('control-dir')) {
    again.set('control-dir', (options.get('control-dir') as string | undefined) ?? path.dirname(path.dirname(target.socket)));
  }
  const deadline = Date.now() + SERVE_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (!alive(before.pid)) {
      process.stdout.write(`upgrade failed: master pid ${before.pid} exited after the exec (its log says why)\n`);
      return 1;
    }
    const now = await locate(undefined, again).then(fetchStatus).catch(() => undefined);
    const serving = now?.workers.filter((w) => w.generation === now.generation && w.state === 'ready').length ?? 0;
    if (now && (now.upgrades ?? 0) > (before.upgrades ?? 0) && !now.reloading && serving > 0) {
      process.stdout.write(`upgraded: pid ${now.pid}, generation ${now.generation} serving (${serving} worker(s))\n`);
      return 0;
    }
    if (now && (now.upgrades ?? 0) > (before.upgrades ?? 0) && now.lastReload?.ok === false && serving === 0) {
      process.stdout.write(`upgrade failed: the new image runs (pid ${now.pid}), but its workers did not start: ${now.lastReload.error ?? ''}; ` +
        'the previous workers keep serving until a reload succeeds\n');
      return 1;
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
  process.stdout.write(`upgrade failed: the new image of pid ${before.pid} did not serve within ${SERVE_TIMEOUT_MS} ms\n`);
  return 1;
}
