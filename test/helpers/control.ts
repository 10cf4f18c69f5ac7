// Talking to a running master over its control socket, as the admin command does.
import * as fs from 'node:fs';
import * as net from 'node:net';
import { FrameDecoder, type MasterStatus, type Message, encode } from '../../src/protocol';
import { type Master, childrenOf } from './processes';

/** The master's control socket, as its workers were told (read from a worker's environment). */
export function controlSocketOf(master: Master | number): string {
  const [worker] = childrenOf(typeof master === 'number' ? master : master.pid);
  const environ = fs.readFileSync(`/proc/${worker}/environ`, 'utf8').split('\0');
  const entry = environ.find((e) => e.startsWith('HANDOVER_CONTROL_SOCKET='));
  if (!entry) throw new Error(`worker ${worker} of master ${typeof master === 'number' ? master : master.pid} has no HANDOVER_CONTROL_SOCKET`);
  return entry.slice(entry.indexOf('=') + 1);
}

/** Sends one admin request and resolves with the first answer. */
function ask(socketPath: string, request: Message): Promise<Message> {
  return new Promise((resolve, reject) => {
    const decoder = new FrameDecoder();
    const socket = net.connect(socketPath, () => socket.write(encode(request)));
    socket.on('data', (chunk) => {
      const [answer] = decoder.push(chunk);
      if (answer) {
        socket.destroy();
        resolve(answer);
      }
    });
    socket.on('error', reject);
    socket.on('close', () => reject(new Error(`the master closed the control connection without answering ${request.type}`)));
  });
}

/** The master's status, with each worker's open connections. */
export async function adminStatus(socketPath: string): Promise<MasterStatus> {
  const answer = await ask(socketPath, { type: 'status' });
  if (answer.type !== 'status-result') throw new Error(`status was answered with ${answer.type}`);
  return answer.status;
}

/** Asks for a reload as `handover reload` does; resolves with its outcome. */
export async function adminReload(socketPath: string): Promise<{ ok: boolean; message?: string }> {
  const answer = await ask(socketPath, { type: 'reload', id: 1 });
  if (answer.type !== 'reload-result') throw new Error(`reload was answered with ${answer.type}`);
  return { ok: answer.ok, message: answer.message };
}

/** Asks for a number of workers as `handover scale` does; resolves with its outcome. */
export async function adminScale(socketPath: string, workers: number): Promise<{ ok: boolean; message?: string }> {
  const answer = await ask(socketPath, { type: 'scale', id: 1, workers });
  if (answer.type !== 'scale-result') throw new Error(`scale was answered with ${answer.type}`);
  return { ok: answer.ok, message: answer.message };
}

/** Asks for a rollback as `handover rollback` does; resolves with its outcome. */
export async function adminRollback(socketPath: string): Promise<{ ok: boolean; message?: string }> {
  const answer = await ask(socketPath, { type: 'rollback', id: 1 });
  if (answer.type !== 'reload-result') throw new Error(`rollback was answered with ${answer.type}`);
  return { ok: answer.ok, message: answer.message };
}
