// The worker's side of the control socket (src/worker/control-client.ts):
// frames the master sends right behind its answer to the hello, which the
// kernel may deliver in the same read as that answer, reach the worker in
// order (a `closing` racing `listeners` at a stop with stopDelay, a `cover`
// right after a sibling died).
import * as net from 'node:net';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { FrameDecoder, type Message, encode } from '../src/protocol';
import { ControlClient } from '../src/worker/control-client';
import { cleanUp, onCleanUp, scratch } from './helpers/processes';
import { within } from './helpers/wait';

afterEach(cleanUp);

/** A master that answers the hello with `frames`, all in one write. */
async function fakeMaster(frames: Message[]): Promise<string> {
  const socketPath = path.join(scratch('handover-client-'), 'control.sock');
  const server = net.createServer((conn) => {
    const decoder = new FrameDecoder();
    conn.on('data', (chunk) => {
      if (decoder.push(chunk).some((m) => m.type === 'hello')) conn.write(Buffer.concat(frames.map(encode)));
    });
    conn.on('error', () => {});
  });
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  onCleanUp(() => server.close());
  return socketPath;
}

describe('the control client', () => {
  it('emits the frames that came in the same read as the answer to its hello, in order', async () => {
    const socketPath = await fakeMaster([
      { type: 'listeners', listeners: [] },
      { type: 'closing' },
      { type: 'cover', slot: 1 },
    ]);
    const { client } = await ControlClient.connect(socketPath, {
      type: 'hello', token: 'ab'.repeat(32), pid: process.pid, slot: 0, generation: 1, addresses: [],
    }, 10_000);
    onCleanUp(() => client.end());
    const seen: Message[] = [];
    await within(new Promise<void>((resolve) => client.on('message', (message) => {
      seen.push(message);
      if (seen.length === 2) resolve();
    })), 10_000, 'the two frames behind the answer');
    expect(seen).toEqual([{ type: 'closing' }, { type: 'cover', slot: 1 }]);
  });
});
