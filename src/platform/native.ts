// Loads the native binding and gives it types. The binding does only the
// syscalls Node cannot: binding with SO_REUSEPORT, dup, SCM_RIGHTS, peer
// credentials, PR_SET_PDEATHSIG, flock. Its errors are Node-style system errors
// (`code`, `errno`, `syscall`, the address in the message).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { NoAddonError } from '../errors';

if (process.platform !== 'linux' && process.platform !== 'darwin') {
  throw new Error(
    `handover supports linux and darwin only (this is ${process.platform}): ` +
      'it passes listening sockets between processes with SCM_RIGHTS, which Windows lacks',
  );
}

export interface TcpBindOptions {
  host: string;
  port: number;
  backlog?: number;
  reusePort?: boolean;
  ipv6Only?: boolean;
  /** false: bind only; the socket takes connections once someone calls listen(2) on it. Default true. */
  listen?: boolean;
}

export interface UnixBindOptions {
  path: string;
  backlog?: number;
  /** File mode of the socket, e.g. 0o660; the umask decides when omitted. */
  mode?: number;
}

export type BoundAddress =
  | { family: 'IPv4' | 'IPv6'; address: string; port: number }
  | { family: 'unix'; path: string };

export interface Received {
  /** The bytes read; empty when the peer closed the connection. */
  data: Buffer;
  /** Received fds, close-on-exec, at most the `maxFds` asked for. */
  fds: number[];
  /** How many fds beyond `maxFds` arrived and were closed. */
  surplusClosed: number;
}

export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
}

interface Binding {
  bindTcp(options: TcpBindOptions): number;
  probeTcp(options: TcpBindOptions): void;
  bindUnix(options: UnixBindOptions): number;
  connectUnix(path: string): number;
  refuseNewConnections(fd: number): boolean;
  allowNewConnections(fd: number): void;
  acceptQueueLength(fd: number): number;
  shutdownSocket(fd: number, direction: 'both' | 'write'): void;
  localAddress(fd: number): BoundAddress;
  dup(fd: number): number;
  close(fd: number): void;
  sendDatagram(path: string, data: Buffer, fds?: number[]): void;
  sendWhole(fd: number, data: Buffer): boolean;
  sendFds(fd: number, data: Buffer, fds: number[]): number;
  recvFds(fd: number, maxBytes: number, maxFds: number, timeoutMs: number): Promise<Received>;
  peerCredentials(fd: number): PeerCredentials;
  setParentDeathSignal(signal: number): boolean;
  setParentDeathStop(stopSignal: number, alarmSeconds: number): boolean;
  lockFile(path: string): number;
  markCloseOnExec(minFd: number): number;
  fixMallocThresholds(bytes: number): boolean;
  trimMalloc(): boolean;
  setCloseOnExec(fd: number, on: boolean): void;
  execve(file: string, argv: string[], env: string[]): never;
  reapChild(pid: number): { code: number | null; signal: number | null } | null;
}

const binding: Binding = loadBinding();

/** The prebuild for this platform, or build/ from a source build; an error that says how to get one. */
function loadBinding(): Binding {
  const root = path.join(__dirname, '..', '..');
  try {
    const prebuild = plainPrebuild(root);
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return prebuild ? openAddon(prebuild) : require('node-gyp-build')(root);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new NoAddonError(
      `handover's native addon did not load for ${process.platform}-${process.arch} (${reason}). ` +
        'No prebuild matched, so it must be built from source: approve the install script ' +
        '(`npm install-scripts approve handover && npm rebuild handover`; needs python3, make and a C++ compiler; ' +
        'on Alpine `apk add python3 make g++ linux-headers`)',
      { cause: error },
    );
  }
}

/**
 * Loads the addon at `file` as require() would, without the module lookup
 * (a stat and a realpath of every directory on the way, ~0.3 ms of every
 * worker's boot): this module is its one loader, so no require.cache entry is
 * needed.
 */
function openAddon(file: string): Binding {
  const addon = { exports: {} as Binding };
  process.dlopen(addon, file);
  return addon.exports;
}

/**
 * The prebuild node-gyp-build would pick, found without its directory scan
 * (~4 ms of boot CPU in every process): only when nothing could change its
 * choice, that is no build/ from source (which node-gyp-build prefers) and none
 * of the variables that redirect it; otherwise undefined and node-gyp-build decides.
 */
function plainPrebuild(root: string): string | undefined {
  const env = process.env;
  if (env.HANDOVER_PREBUILD || env.PREBUILDS_ONLY || env.LIBC || env.npm_config_arch || env.npm_config_platform) return undefined;
  if (fs.existsSync(path.join(root, 'build'))) return undefined;
  const libc = fs.existsSync('/etc/alpine-release') ? 'musl' : 'glibc';
  const file = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`, `handover.${libc}.node`);
  return fs.existsSync(file) ? file : undefined;
}

/** A system error as thrown by the binding and by Node itself. */
export interface SystemError extends Error {
  code: string;
  errno: number;
  syscall: string;
}

export function isSystemError(error: unknown, code?: string): error is SystemError {
  return error instanceof Error && typeof (error as SystemError).code === 'string' &&
    (code === undefined || (error as SystemError).code === code);
}

/** Binds a TCP listening socket (SO_REUSEADDR, optional SO_REUSEPORT); returns its fd. */
export const bindTcp = (options: TcpBindOptions): number => binding.bindTcp(options);

/** Throws EADDRINUSE if a socket already listens on host:port; binds nothing. */
export const probeTcp = (options: TcpBindOptions): void => binding.probeTcp(options);

/** Binds a Unix stream listening socket at `path` (or '@abstract'); returns its fd. */
export const bindUnix = (options: UnixBindOptions): number => binding.bindUnix(options);

/** Connects to a Unix stream socket without blocking; returns the connected fd. */
export const connectUnix = (socketPath: string): number => binding.connectUnix(socketPath);

/**
 * Linux, TCP: a socket filter drops new SYNs on this listening socket (every
 * socket of a SO_REUSEPORT group needs its own); handshakes under way and
 * queued connections are kept. False where unsupported.
 */
export const refuseNewConnections = (fd: number): boolean => binding.refuseNewConnections(fd);

/** Takes refuseNewConnections' filter off again (none attached is not an error). */
export const allowNewConnections = (fd: number): void => binding.allowNewConnections(fd);

/** Connections waiting in a listening TCP socket's accept queue; -1 where the platform cannot tell. */
export const acceptQueueLength = (fd: number): number => binding.acceptQueueLength(fd);

/**
 * shutdown(2) on a socket, acting on every copy in every process. 'both' on a
 * listening socket: no process holding a copy accepts from it any more, and
 * connections are refused. 'write' on a connected one: the peer reads end of
 * file after the last byte sent; this side can still read.
 */
export const shutdownSocket = (fd: number, direction: 'both' | 'write'): void => binding.shutdownSocket(fd, direction);

/** The address an fd is bound to: ip/port, or the Unix path. */
export const localAddress = (fd: number): BoundAddress => binding.localAddress(fd);

/** A close-on-exec duplicate of `fd`. */
export const dup = (fd: number): number => binding.dup(fd);

/** Closes an fd that no Node handle owns. */
export const closeFd = (fd: number): void => binding.close(fd);

/** Sends one datagram to a Unix datagram socket (path or '@abstract'), with `fds` attached (SCM_RIGHTS) if given. */
export const sendDatagram = (socketPath: string, data: Buffer, fds?: number[]): void => binding.sendDatagram(socketPath, data, fds);

/**
 * Writes a small `data` on a connected TCP socket whole, now, or not at all
 * (false: the kernel still holds unsent bytes, or its buffer is full; always
 * false where the platform cannot tell). For a frame between two of another
 * writer's writes.
 */
export const sendWhole = (fd: number, data: Buffer): boolean => binding.sendWhole(fd, data);

/** Sends `data` with `fds` attached (SCM_RIGHTS); returns bytes written, throws EAGAIN if none. */
export const sendFds = (fd: number, data: Buffer, fds: number[]): number => binding.sendFds(fd, data, fds);

/**
 * Receives up to `maxBytes` and at most `maxFds` fds, waiting on the event
 * loop (never blocking it) for at most `timeoutMs`; rejects with ETIMEDOUT.
 */
export const recvFds = (fd: number, maxBytes: number, maxFds: number, timeoutMs: number): Promise<Received> =>
  binding.recvFds(fd, maxBytes, maxFds, timeoutMs);

/** pid, uid and gid of the process at the other end of a Unix socket. */
export const peerCredentials = (fd: number): PeerCredentials => binding.peerCredentials(fd);

/** PR_SET_PDEATHSIG on Linux (returns true); false on darwin, which has none. */
export const setParentDeathSignal = (signal: number): boolean => binding.setParentDeathSignal(signal);

/**
 * Linux: when the parent dies, a native signal handler arms
 * `alarm(alarmSeconds)` (SIGALRM's default action ends the process even if
 * its event loop is blocked) and raises `stopSignal` (so JavaScript drains if
 * it can; 0 raises nothing). The kernel's parent-death signal is a realtime one no JavaScript
 * listens to. Returns true; false on darwin, which has no PR_SET_PDEATHSIG.
 */
export const setParentDeathStop = (stopSignal: number, alarmSeconds: number): boolean =>
  binding.setParentDeathStop(stopSignal, alarmSeconds);

/**
 * Takes an exclusive flock on `path` (created 0600 if missing) and returns
 * its close-on-exec fd: the lock lasts until the fd is closed (`closeFd`) or
 * the process dies. Throws EWOULDBLOCK (`EAGAIN`) if another open file holds it.
 */
export const lockFile = (lockPath: string): number => binding.lockFile(lockPath);

/** Sets FD_CLOEXEC on every open fd >= minFd (inherited ones included); returns how many changed. */
export const markCloseOnExec = (minFd: number): number => binding.markCloseOnExec(minFd);

/**
 * Fixes glibc malloc's trim and mmap thresholds at `bytes` (4 KiB to 32 MiB),
 * so freed memory above that goes back to the kernel instead of staying in an
 * arena; false where the allocator is not glibc's.
 */
export const fixMallocThresholds = (bytes: number): boolean => binding.fixMallocThresholds(bytes);

/** glibc's malloc_trim(0): free pages anywhere in the arenas go back to the kernel. False elsewhere, or when none did. */
export const trimMalloc = (): boolean => binding.trimMalloc();

/** Sets (true) or clears (false) FD_CLOEXEC on one fd. */
export const setCloseOnExec = (fd: number, on: boolean): void => binding.setCloseOnExec(fd, on);

/** execve(2): replaces this process's image in the same pid; returns only by throwing. */
export const execve = (file: string, argv: string[], env: string[]): never => binding.execve(file, argv, env);

/**
 * waitpid(pid, WNOHANG) for a child this image did not spawn (libuv reaps
 * only its own): its exit once it has exited, null while it runs.
 */
export const reapChild = (pid: number): { code: number | null; signal: number | null } | null => binding.reapChild(pid);
