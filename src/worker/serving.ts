// The application's servers on received listening fds, and their drain.
import type * as net from 'node:net';
import type { ListenerInfo } from '../protocol';
import { ServerDrain } from './drain';

/** An address and how to build the server that serves it (in serving processes only). */
export interface Registration {
  address: string;
  create(): net.Server;
}

export class Serving {
  private readonly drains: ServerDrain[] = [];
  /** The addresses served, as bound ('127.0.0.1:41234'). */
  bound: string[] = [];

  constructor(private readonly registrations: Registration[]) {}

  /** True once every server listens. */
  get started(): boolean {
    return this.drains.length === this.registrations.length && this.bound.length > 0;
  }

  /** Open connections over all servers. */
  get connections(): number {
    return this.drains.reduce((n, d) => n + d.connections, 0);
  }

  /**
   * Builds each registered server and listens on its fd (which it then owns).
   * On failure, fds no server took are closed; the caller exits.
   */
  async listen(listeners: ListenerInfo[], fds: number[]): Promise<void> {
    await Promise.all(this.registrations.map((registration, i) => {
      const server = registration.create();
      this.drains[i] = new ServerDrain(server);
      return new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ fd: fds[i], backlog: listeners[i].backlog }, () => {
          server.removeListener('error', reject);
          resolve();
        });
      });
    }));
    this.bound = listeners.map((l) => l.bound);
  }

  /** Drains every server; resolves when the last connection has closed. */
  drain(): Promise<void> {
    return Promise.all(this.drains.map((d) => d.drain())).then(() => {});
  }
}
