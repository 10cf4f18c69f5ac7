// Deploys for the versions, metrics and canary tests: each deploy is a new
// entry file that sets globalThis.DEPLOY and requires test/fixtures/deploy-app.js,
// so its digest (the default version) changes with every deploy.
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { codeVersion } from '../../src/master/version';
import { ROOT, type Master, scratch, startMaster } from './processes';

export interface Deploy {
  code: string;
  failEvery?: number;
  slowMs?: number;
  busyMs?: number;
  promCounter?: boolean;
  throwAtStartup?: boolean;
}

export class App {
  constructor(readonly entry: string) {}

  /** Writes `deploy` as the code on disk; returns its version as a worker will compute it. */
  deploy(deploy: Deploy): string {
    const text = `globalThis.DEPLOY = ${JSON.stringify(deploy)};\nrequire(${JSON.stringify(path.join(ROOT, 'test/fixtures/deploy-app.js'))});\n`;
    fs.writeFileSync(`${this.entry}.tmp`, text);
    fs.renameSync(`${this.entry}.tmp`, this.entry);
    return codeVersion(undefined, {}, this.entry);
  }

  start(options: Record<string, unknown>): Promise<Master> {
    return startMaster({ script: path.relative(ROOT, this.entry), fixture: options });
  }
}

/** A temp directory with an entry file holding `first`. */
export function app(first: Deploy): { app: App; version: string } {
  const a = new App(path.join(scratch('handover-deploy-'), 'server.js'));
  return { app: a, version: a.deploy(first) };
}

export interface Answer {
  status: number;
  pid: number;
  code: string;
}

/** One request on a fresh connection (the kernel picks the slot). */
export function get(port: number, urlPath = '/'): Promise<Answer> {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: urlPath, agent: false }, (res) => {
      res.resume();
      res.on('error', reject);
      res.on('end', () => resolve({ status: res.statusCode!, pid: Number(res.headers['x-pid']), code: String(res.headers['x-code']) }));
    }).on('error', reject);
  });
}

/** Plain text of an HTTP GET, with its status. */
export function fetchText(url: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    http.get(url, { agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (chunk: string) => (text += chunk));
      res.on('error', reject);
      res.on('end', () => resolve({ status: res.statusCode!, text }));
    }).on('error', reject);
  });
}

/**
 * Fresh-connection requests from `loops` loops until stop(); every answer is
 * kept, so a test can say which code and which pid served each one.
 */
export class Requests {
  readonly answers: Answer[] = [];
  readonly failures: string[] = [];
  private running = true;
  private readonly loops: Promise<void>[];

  constructor(port: number, loops = 4) {
    this.loops = Array.from({ length: loops }, async () => {
      while (this.running) {
        try {
          this.answers.push(await get(port));
        } catch (error) {
          this.failures.push((error as NodeJS.ErrnoException).code ?? String(error));
        }
      }
    });
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
  }
}
