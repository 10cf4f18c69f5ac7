// Invariant 13: the master survives its surroundings.
//   - a log flood into a stream that cannot keep up holds at most
//     MAX_PENDING_LOG_BYTES (plus one line) and says how many lines it dropped;
//   - a closed stderr pipe (a log reader that exits, `node app.js 2>&1 | head -2`)
//     never takes the master or its workers down: the next log line's EPIPE is
//     swallowed and the service keeps reloading and serving;
// test/fixtures/app.js is the app; its master prints lifecycle events on stdout.
import * as http from 'node:http';
import { Writable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { MAX_PENDING_LOG_BYTES, streamLogger } from '../src/log';
import { reapAll, startMaster } from './helpers/processes';

afterEach(async () => {
  await reapAll();
});

/** One GET on a fresh connection; resolves with the status and the worker pid. */
function get(port: number): Promise<{ status: number; pid: number }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/', agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode!, pid: Number(res.headers['x-pid']) }));
    });
    req.setTimeout(30_000, () => req.destroy(new Error('no answer within 30 s')));
    req.on('error', reject);
  });
}

describe('a closed log pipe', () => {
  it('does not take the master down: after its stderr reader is gone it still reloads and serves', async () => {
    const master = await startMaster();
    const port = master.port;
    // The reader of the master's (and its workers') stderr goes away.
    master.proc.stderr!.destroy();
    for (let i = 0; i < 2; i++) {
      const outcome = await master.reload(); // logs "reload requested", workers log their drain
      expect(outcome.event).toBe('reloaded');
    }
    const reply = await get(port);
    expect(reply.status).toBe(200);
    expect(master.proc.exitCode).toBeNull();
    expect(master.proc.signalCode).toBeNull();
  });
});

describe('a log flood', () => {
  it('buffers a bounded amount in a stream that cannot keep up, then reports what it dropped', () => {
    const written: string[] = [];
    let release: (() => void) | undefined;
    // A reader that is stuck: the first write never completes until released.
    const stuck = new Writable({
      write(chunk: Buffer, _encoding, callback) {
        written.push(chunk.toString());
        if (release) callback();
        else release = callback;
      },
    });
    const log = streamLogger(stuck, 'master');
    const message = 'x'.repeat(200);
    for (let i = 0; i < 100_000; i++) log.info(message); // 20 MB of lines
    expect(stuck.writableLength).toBeLessThanOrEqual(MAX_PENDING_LOG_BYTES + 300);
    release!();
    log.warn('after the flood');
    const tail = written.slice(-2).join('');
    expect(tail).toMatch(/master warn: \d+ log line\(s\) dropped/);
    expect(tail).toMatch(/master warn: after the flood\n$/);
  });
});
