// A closed-loop HTTP load client: `connections` loops, each on its own
// connection, each sending its next request when the last one is answered.
// Every outcome is counted: 200s, other statuses, and socket errors by code.
import * as http from 'node:http';

export interface LoadOptions {
  port: number;
  host?: string;
  connections: number;
  /** 'keep-alive' reuses each loop's connection; 'close' sends Connection: close every time. */
  mode?: 'keep-alive' | 'close';
  /** POST a body of this many bytes instead of GET. */
  postBytes?: number;
  /** Random idle gap before each request, [min, max] ms, per loop index. */
  gap?: (loop: number) => [number, number];
  path?: string;
}

export interface LoadStats {
  ok: number;
  failed: number;
  /** Failures by error code ('ECONNRESET', 'socket hang up', 'status 503', ...). */
  errors: Record<string, number>;
  /**
   * Of those, the ones of requests sent on a new connection (not a reused
   * keep-alive one): what a listening socket's queue did, where the others
   * are what happened to an established connection.
   */
  onNewConnection: Record<string, number>;
  /** Responses per worker pid (the x-pid header). */
  pids: Map<number, number>;
}

export class Load {
  readonly stats: LoadStats = { ok: 0, failed: 0, errors: {}, onNewConnection: {}, pids: new Map() };
  private running = true;
  private readonly loops: Promise<void>[] = [];
  private readonly agents: http.Agent[] = [];

  constructor(private readonly options: LoadOptions) {
    for (let i = 0; i < options.connections; i++) this.loops.push(this.loop(i));
  }

  private fail(code: string, req: http.ClientRequest): void {
    this.stats.failed++;
    this.stats.errors[code] = (this.stats.errors[code] ?? 0) + 1;
    if (!req.reusedSocket) this.stats.onNewConnection[code] = (this.stats.onNewConnection[code] ?? 0) + 1;
  }

  private async loop(index: number): Promise<void> {
    const keepAlive = (this.options.mode ?? 'keep-alive') === 'keep-alive';
    const agent = new http.Agent({ keepAlive, maxSockets: 1 });
    this.agents.push(agent);
    const body = this.options.postBytes ? Buffer.alloc(this.options.postBytes, 'x') : undefined;
    while (this.running) {
      const gap = this.options.gap?.(index);
      if (gap) await new Promise((resolve) => setTimeout(resolve, gap[0] + Math.random() * (gap[1] - gap[0])));
      if (!this.running) break;
      await new Promise<void>((resolve) => {
        const req = http.request({
          host: this.options.host ?? '127.0.0.1',
          port: this.options.port,
          path: this.options.path ?? '/',
          method: body ? 'POST' : 'GET',
          agent,
          headers: {
            ...(keepAlive ? {} : { connection: 'close' }),
            ...(body ? { 'content-length': body.length } : {}),
          },
          timeout: 60_000,
        });
        req.on('response', (res) => {
          res.resume();
          res.on('end', () => {
            if (res.statusCode === 200) {
              this.stats.ok++;
              const pid = Number(res.headers['x-pid']);
              this.stats.pids.set(pid, (this.stats.pids.get(pid) ?? 0) + 1);
            } else {
              this.fail(`status ${res.statusCode}`, req);
            }
            resolve();
          });
          res.on('error', (error: NodeJS.ErrnoException) => {
            this.fail(error.code ?? error.message, req);
            resolve();
          });
        });
        req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'TIMEOUT' })));
        req.on('error', (error: NodeJS.ErrnoException) => {
          this.fail(error.code ?? error.message, req);
          resolve();
        });
        req.end(body);
      });
    }
    agent.destroy();
  }

  /** Resolves once at least `count` responses have come from `pid`. */
  async servedBy(pid: number, count = 1, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while ((this.stats.pids.get(pid) ?? 0) < count) {
      if (Date.now() > deadline) {
        const seen = [...this.stats.pids].map(([p, n]) => `${p}: ${n}`).join(', ');
        throw new Error(`no response from pid ${pid} within ${timeoutMs} ms (responses by pid: ${seen}; failures: ${JSON.stringify(this.stats.errors)})`);
      }
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  /** Stops sending; resolves with the totals once every loop has its last answer. */
  async stop(): Promise<LoadStats> {
    this.running = false;
    await Promise.all(this.loops);
    return this.stats;
  }
}

/**
 * One request on its own connection that the server answers slowly:
 * `started` resolves with the answering pid once the first bytes arrive,
 * `done` with the whole body, or rejects if the response is cut short.
 */
export function inFlight(port: number, urlPath: string): { started: Promise<number>; done: Promise<string>; request: http.ClientRequest } {
  let onStarted!: (pid: number) => void;
  const started = new Promise<number>((resolve) => (onStarted = resolve));
  let request!: http.ClientRequest;
  const done = new Promise<string>((resolve, reject) => {
    request = http.request({ host: '127.0.0.1', port, path: urlPath, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.once('data', () => onStarted(Number(res.headers['x-pid'])));
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => (res.complete ? resolve(body) : reject(new Error(`response cut short after ${JSON.stringify(body)}`))));
      res.on('error', reject);
      res.on('aborted', () => reject(new Error(`response aborted after ${JSON.stringify(body)}`)));
    });
    request.on('error', reject);
    request.end();
  });
  done.catch(() => {}); // observed by the test that awaits it
  return { started, done, request };
}
