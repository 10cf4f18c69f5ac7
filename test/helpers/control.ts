// Talking to a running master over its control socket, as the admin command does.
import * as net from 'node:net';
import { FrameDecoder, type MasterStatus, encode } from '../../src/protocol';

/** The master's status, with each worker's open connections. */
export function adminStatus(socketPath: string): Promise<MasterStatus> {
  return new Promise((resolve, reject) => {
    const decoder = new FrameDecoder();
    const socket = net.connect(socketPath, () => socket.write(encode({ type: 'status' })));
    socket.on('data', (chunk) => {
      for (const message of decoder.push(chunk)) {
        if (message.type === 'status-result') {
          socket.destroy();
          resolve(message.status);
        }
      }
    });
    socket.on('error', reject);
    socket.on('close', () => reject(new Error('the master closed the control connection without a status')));
  });
}
