// The listening side of the control socket: a directory of the master's
// (privilege.ts decides its owner and modes), and a gate every connection
// passes before anything else (invariant 6): the kernel's peer credentials
// (the workers' uid and a pid we spawned, or an administrator: root or the
// master's own uid) and that process's one-time token. Anything else is
// refused, logged with its pid (a burst of lines, then at most one a second
// with a count of the rest: a flood must not fill the log), and only that
// connection is closed; garbage never reaches the handlers.
// Connections not from a process we are waiting for are capped per uid and
// closed if silent; admin connections (the `handover` command) are capped and
// closed once idle: no local process can grow the master (invariant 18).
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { FrameDecoder, type Hello, type Message, encode } from '../protocol';
import { tokensEqual } from '../platform/crypto';
import type { ResolvedOptions } from '../options';
import type { Logger } from '../log';
import * as native from '../platform/native';
import { administrators, controlSocketUmask, makeControlDirectory, mayAdminister, notOurs, removeControlDirectory, withUmask } from './privilege';

/** How long a control connection may stay silent before its first frame. */
const HANDSHAKE_TIMEOUT_MS = 5_000;

/** Admin connections open at once; more are refused. */
const MAX_ADMIN_CONNECTIONS = 64;

/**
 * Connections of one uid open at once that have not yet said who they are,
 * from processes the master is not waiting for (its new workers are never
 * counted); more are refused. Per uid, so the workers' user cannot crowd
 * out the operator's command.
 */
const MAX_UNIDENTIFIED_PER_UID = 32;

/**
 * Refused connections are logged one line each up to a burst of this many,
 * then at most one a second; the ones left out are counted.
 */
const REFUSAL_LOG_BURST = 10;
const REFUSAL_LOG_INTERVAL_MS = 1_000;

/** Refusal lines from a token bucket; a line at most once a second says how many were left out. */
class RefusalLog {
  private tokens = REFUSAL_LOG_BURST;
  private refilledAt = Date.now();
  private suppressed = 0;
  private timer?: NodeJS.Timeout;

  constructor(private readonly log: Logger) {}

  refused(line: string): void {
    const now = Date.now();
    this.tokens = Math.min(REFUSAL_LOG_BURST, this.tokens + (now - this.refilledAt) / REFUSAL_LOG_INTERVAL_MS);
    this.refilledAt = now;
    if (this.tokens >= 1) {
      this.tokens--;
      this.log.warn(line);
      return;
    }
    this.suppressed++;
    this.timer ??= setTimeout(() => this.flush(), REFUSAL_LOG_INTERVAL_MS).unref();
  }

  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.suppressed === 0) return;
    this.log.warn(`control: refused ${this.suppressed} more connection(s) (a flood: not logged one by one)`);
    this.suppressed = 0;
  }
}

export interface ControlHandlers {
  /** A process we spawned proved who it is; `conn` is now its connection. */
  hello(pid: number, hello: Hello, conn: net.Socket): void;
  /** A later frame from a process that said hello. */
  message(pid: number, message: Message): void;
  /** A frame from a same-uid tool (status, reload, stop); `reply` answers it. */
  admin(message: Message, reply: (answer: Message) => void, conn: net.Socket): void;
}

/** The fd under a Node-owned socket (Unix: `_handle.fd`). */
function fdOf(socket: net.Socket): number {
  return (socket as unknown as { _handle?: { fd?: number } })._handle?.fd ?? -1;
}

/**
 * Writes a frame whose first byte carries `fds` (SCM_RIGHTS) on a Node-owned
 * Unix socket. Must be the first write on that connection, so nothing Node has
 * queued can overtake it.
 */
export async function sendWithFds(socket: net.Socket, frame: Buffer, fds: number[]): Promise<void> {
  const fd = fdOf(socket);
  if (fd < 0) throw new Error('control connection has no fd');
  for (let attempt = 0; ; attempt++) {
    try {
      const written = native.sendFds(fd, frame, fds);
      if (written < frame.length) socket.write(frame.subarray(written));
      return;
    } catch (error) {
      if (!native.isSystemError(error, 'EAGAIN') || attempt >= 100) throw error;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }
}

/**
 * Every master holds an flock on this file in its control directory for its
 * whole life; the kernel releases it only when the master is gone, however it
 * died. The file appears under this name already locked (locked as
 * LOCK_FILE + '.new', then renamed), so a lock file that can be locked is
 * never one a master is about to take.
 */
const LOCK_FILE = 'lock';

/**
 * A directory with no lock file yet may belong to a master between mkdtemp
 * and its lock: it is left alone for this long.
 */
const UNLOCKED_GRACE_MS = 60_000;

/**
 * A master killed with SIGKILL cannot clean up: remove our dead masters'
 * directories. Dead is proven by taking the directory's lock, never guessed
 * from its pid: in containers sharing /tmp but not a pid namespace, a live
 * master's pid does not exist here (invariant 13).
 */
function removeStaleDirectories(parentDir: string): void {
  let entries: string[];
  try {
    entries = fs.readdirSync(parentDir);
  } catch {
    return; // reported when the new directory cannot be made
  }
  for (const name of entries) {
    if (!/^handover-\d+-/.test(name)) continue;
    const dir = path.join(parentDir, name);
    try {
      if (notOurs(parentDir, name)) continue;
      const stat = fs.lstatSync(dir);
      const lockPath = path.join(dir, LOCK_FILE);
      if (!fs.existsSync(lockPath)) {
        // No lock: a master of an older handover, or one between mkdtemp and
        // its lock. Proven gone only if, past the grace, nothing listens on
        // its control socket (a live master always does).
        if (Date.now() - stat.mtimeMs >= UNLOCKED_GRACE_MS && !listening(path.join(dir, 'control.sock'))) {
          removeControlDirectory(dir);
        }
        continue;
      }
      const lock = native.lockFile(lockPath); // throws EAGAIN while its master lives
      try {
        removeControlDirectory(dir);
      } finally {
        native.closeFd(lock);
      }
    } catch {
      // alive (locked), or raced with another master doing the same
    }
  }
}

/** True unless connecting to the Unix socket proves nobody listens there (refused, or no such file). */
function listening(socketPath: string): boolean {
  try {
    native.closeFd(native.connectUnix(socketPath));
    return true;
  } catch (error) {
    return !(native.isSystemError(error, 'ECONNREFUSED') || native.isSystemError(error, 'ENOENT'));
  }
}

/** Locks `dir` for this master's life; returns the lock's fd. */
function lockDirectory(dir: string): number {
  const lockPath = path.join(dir, LOCK_FILE);
  const lock = native.lockFile(`${lockPath}.new`);
  try {
    fs.renameSync(`${lockPath}.new`, lockPath);
  } catch (error) {
    native.closeFd(lock);
    throw error;
  }
  return lock;
}

export class ControlServer {
  /** One-time tokens of the processes we spawned and have not heard from yet. */
  private readonly expected = new Map<number, string>();
  private adminConnections = 0;
  /** Per uid: connections that have not said who they are yet (MAX_UNIDENTIFIED_PER_UID). */
  private readonly unidentified = new Map<number, number>();
  /** Every open connection, so close() ends them: an idle admin client must not keep a stopped master alive. */
  private readonly connections = new Set<net.Socket>();
  private readonly refusals: RefusalLog;

  private constructor(
    readonly dir: string,
    private readonly lock: number,
    private readonly server: net.Server,
    private readonly peerUid: number,
    private readonly adminIdleTimeout: number,
    private readonly log: Logger,
  ) {
    this.refusals = new RefusalLog(log);
  }

  /** Makes the private directory under `parentDir` and listens there. */
  static async open(
    { controlDir: parentDir, identity, adminIdleTimeout }: Pick<ResolvedOptions, 'controlDir' | 'identity' | 'adminIdleTimeout'>,
    log: Logger,
    handlers: ControlHandlers,
  ): Promise<ControlServer> {
    removeStaleDirectories(parentDir);
    let dir: string;
    try {
      dir = makeControlDirectory(parentDir, identity);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (!code) throw error; // the privilege check's own message
      throw new Error(
        `cannot create the control directory in ${parentDir} (${code}); ` +
          'set the `controlDir` option (or TMPDIR) to a writable directory',
      );
    }
    let lock: number;
    try {
      lock = lockDirectory(dir);
    } catch (error) {
      removeControlDirectory(dir);
      throw error;
    }
    const socketPath = path.join(dir, 'control.sock');
    let control: ControlServer | undefined;
    const server = net.createServer((socket) => control?.accept(socket, handlers));
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        // listen() binds synchronously: the socket file is born with its mode
        withUmask(controlSocketUmask(identity), () => server.listen(socketPath, () => {
          server.removeListener('error', reject);
          resolve();
        }));
      });
    } catch (error) {
      removeControlDirectory(dir);
      native.closeFd(lock);
      throw error;
    }
    // accept() failing (EMFILE, ENFILE) is an 'error' on the server: logged, never fatal
    server.on('error', (error) => control?.log.warn(`control: ${error.message}; the connection was not accepted`));
    control = new ControlServer(dir, lock, server, identity?.uid ?? process.getuid!(), adminIdleTimeout, log);
    return control;
  }

  get path(): string {
    return path.join(this.dir, 'control.sock');
  }

  /** Admits `pid` once, if it presents `token`. */
  expect(pid: number, token: string): void {
    this.expected.set(pid, token);
  }

  forget(pid: number): void {
    this.expected.delete(pid);
  }

  close(): void {
    this.refusals.flush();
    this.server.close();
    for (const socket of this.connections) socket.destroy();
    removeControlDirectory(this.dir);
    native.closeFd(this.lock); // after the removal: nobody else may sweep it meanwhile
  }

  /** Counts one more unidentified connection of `uid`; returns its (idempotent) release, or undefined past the cap. */
  private admitUnidentified(uid: number): (() => void) | undefined {
    const open = this.unidentified.get(uid) ?? 0;
    if (open >= MAX_UNIDENTIFIED_PER_UID) return undefined;
    this.unidentified.set(uid, open + 1);
    let counted = true;
    return () => {
      if (!counted) return;
      counted = false;
      const left = this.unidentified.get(uid)! - 1;
      if (left === 0) this.unidentified.delete(uid);
      else this.unidentified.set(uid, left);
    };
  }

  private accept(socket: net.Socket, handlers: ControlHandlers): void {
    socket.on('error', () => {});
    this.connections.add(socket);
    socket.once('close', () => this.connections.delete(socket));
    let peer: native.PeerCredentials;
    try {
      peer = native.peerCredentials(fdOf(socket));
    } catch {
      socket.destroy();
      return;
    }
    const refuse = (why: string) => {
      this.refusals.refused(`control: refused pid ${peer.pid} (uid ${peer.uid}): ${why}`);
      socket.destroy();
    };
    const ownUid = process.getuid!();
    const administrator = mayAdminister(peer.uid, ownUid);
    if (peer.uid !== this.peerUid && !administrator) {
      return refuse(`not the workers' uid (${this.peerUid}), nor ${administrators(ownUid, (uid) => `uid ${uid}`)}`);
    }
    // our own new workers are never counted: a flood cannot keep them out
    const identified = this.expected.has(peer.pid) ? () => {} : this.admitUnidentified(peer.uid);
    if (!identified) return refuse(`${MAX_UNIDENTIFIED_PER_UID} connections of this uid have not said who they are yet`);
    socket.once('close', identified);
    const handshake = setTimeout(() => refuse(`sent no frame within ${HANDSHAKE_TIMEOUT_MS} ms`), HANDSHAKE_TIMEOUT_MS);
    socket.once('close', () => clearTimeout(handshake));
    const decoder = new FrameDecoder();
    let known = false;
    // Admin: requests awaiting their answer, and the idle timer that runs while there are none.
    let admin = false;
    let pending = 0;
    let idle: NodeJS.Timeout | undefined;
    socket.once('close', () => clearTimeout(idle));
    const answerOnce = () => {
      let answered = false;
      return (reply: Message) => {
        if (!answered) {
          answered = true;
          // (an answer can come after the client left: no timer then, and never one that keeps a stopped master up)
          if (--pending === 0 && !socket.destroyed) idle = setTimeout(() => socket.destroy(), this.adminIdleTimeout).unref();
        }
        if (!socket.destroyed) socket.write(encode(reply));
      };
    };
    socket.on('data', (chunk) => {
      let messages: Message[];
      try {
        messages = decoder.push(chunk);
      } catch (error) {
        return refuse((error as Error).message);
      }
      for (const message of messages) {
        clearTimeout(handshake);
        if (socket.destroyed) return;
        identified();
        if (known) {
          handlers.message(peer.pid, message);
        } else if (message.type !== 'hello') {
          if (!administrator) return refuse(`admin requests come from ${administrators(ownUid, (uid) => `uid ${uid}`)} only`);
          if (!admin) {
            if (this.adminConnections >= MAX_ADMIN_CONNECTIONS) {
              return refuse(`${MAX_ADMIN_CONNECTIONS} admin connections are open already`);
            }
            admin = true;
            this.adminConnections++;
            socket.once('close', () => this.adminConnections--);
          }
          pending++;
          clearTimeout(idle);
          handlers.admin(message, answerOnce(), socket);
        } else {
          if (peer.uid !== this.peerUid) return refuse('not the workers\' uid');
          const token = this.expected.get(peer.pid);
          if (token === undefined || message.pid !== peer.pid) return refuse('not a process this master spawned');
          if (!tokensEqual(message.token, token)) return refuse('wrong token');
          this.expected.delete(peer.pid); // one-time
          known = true;
          handlers.hello(peer.pid, message, socket);
        }
      }
    });
  }
}
