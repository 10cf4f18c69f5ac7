// Every decision a master makes on behalf of a less privileged side
// (invariant 17), in one place to audit: who may administer it, which
// directories and sockets it makes and with which owner and mode, which
// directories it may remove, which addresses it binds for a `--user` program,
// and which files it reads for the workers.
//
// The model: with `user`, the workers' user owns nothing the master relies on.
// The control directory and socket are the master's, group-accessible to the
// workers' gid (directory 02750, socket 0660; without `user`: 0700 and 0600),
// so a worker can connect but cannot remove, replace or chmod them. Modes are
// set by the umask at bind or on an open fd, never by chmod on a path. Root
// follows no path another user controls: it removes only its own uid's
// directories, one level deep, in a parent nobody else can rename entries of;
// it opens files for workers with O_NOFOLLOW and checks the fd it got.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { type Address, parseAddress } from '../platform/address';
import type { Identity } from '../platform/identity';

const S_ISVTX = 0o1000;
const S_ISGID = 0o2000;

// --- who may administer a master -------------------------------------------

/** Root and the master's own uid; never the workers' user (their code is what the master guards against). */
export function mayAdminister(callerUid: number, masterUid: number): boolean {
  return callerUid === 0 || callerUid === masterUid;
}

/** Who mayAdminister, for refusals: "root", or "root and www-data (the master's own user)". */
export function administrators(masterUid: number, name: (uid: number) => string): string {
  return masterUid === 0 ? 'root' : `root and ${name(masterUid)} (the master's own user)`;
}

// --- single mode ---------------------------------------------------------------

/**
 * `mode: 'single'` runs the application in the process that binds, and its
 * code has run (as root) before any bind: there is no moment to drop
 * privileges before application code runs, so `user` is refused there.
 */
export function checkSingleMode(mode: 'master' | 'single', identity: Identity | undefined): void {
  if (mode !== 'single' || !identity || (identity.uid === process.getuid!() && identity.gid === process.getgid!())) return;
  throw new TypeError(
    `mode: 'single' cannot run as ${identity.label}: the process that binds is the one that serves, and it already runs your code as uid ${process.getuid!()}; ` +
      'use the default mode (a root master binds, workers run as `user`), or start the process as that user ' +
      '(ports >= 1024, CAP_NET_BIND_SERVICE, or systemd socket activation)',
  );
}

// --- directories root relies on or removes ------------------------------------

function modeText(stat: fs.Stats): string {
  return (stat.mode & 0o7777).toString(8).padStart(4, '0');
}

/**
 * Why another user could rename or replace entries of `dir` (or of a
 * directory above it), or undefined if nobody but root and this uid can:
 * each directory on its real path belongs to one of them and is writable by
 * nobody else, or has the sticky bit (then only an entry's owner renames it).
 */
export function untrustedDirectory(dir: string): string | undefined {
  const uid = process.getuid!();
  let real: string;
  try {
    real = fs.realpathSync(dir);
  } catch (error) {
    return `${dir} cannot be resolved (${(error as NodeJS.ErrnoException).code})`;
  }
  for (let current = real; ; current = path.dirname(current)) {
    const stat = fs.statSync(current);
    if (stat.uid !== 0 && stat.uid !== uid) return `${current} belongs to uid ${stat.uid}`;
    if ((stat.mode & 0o022) !== 0 && (stat.mode & S_ISVTX) === 0) return `${current} is writable by other users (mode ${modeText(stat)}) without the sticky bit`;
    if (current === path.dirname(current)) return undefined;
  }
}

/**
 * Makes the control directory under `parent`: ours, and with `identity`
 * group-accessible to the workers (02750: the setgid bit gives the socket
 * and lock file the workers' group without a chown on a path), else 0700.
 * The parent must be one no other user can rename entries of, or removing
 * the directory at stop would follow a path they control.
 */
export function makeControlDirectory(parent: string, identity: Identity | undefined): string {
  const why = untrustedDirectory(parent);
  if (why) {
    throw new Error(
      `cannot make the control directory in ${parent}: ${why}, so another user could swap it; ` +
        'set the `controlDir` option (or TMPDIR, or --control-dir) to a directory only root and this user can write, or one with the sticky bit such as /tmp',
    );
  }
  const dir = fs.mkdtempSync(path.join(parent, `handover-${process.pid}-`));
  const fd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY | fs.constants.O_NOFOLLOW);
  try {
    if (identity) {
      fs.fchownSync(fd, process.getuid!(), identity.gid);
      fs.fchmodSync(fd, S_ISGID | 0o750);
    } else {
      fs.fchmodSync(fd, 0o700);
    }
  } catch (error) {
    fs.rmdirSync(dir);
    throw error;
  } finally {
    fs.closeSync(fd);
  }
  return dir;
}

/** The umask under which the control socket is bound: 0660 with `identity` (the workers' group), else 0600. */
export function controlSocketUmask(identity: Identity | undefined): number {
  return identity ? 0o117 : 0o177;
}

/**
 * Runs `bind` (a synchronous bind(2) of a Unix socket) with `mask` as the
 * umask, so the file is born with its mode: a chmod after bind would follow
 * whatever another user swapped in at that path meanwhile.
 */
export function withUmask<T>(mask: number, bind: () => T): T {
  const previous = process.umask(mask);
  try {
    return bind();
  } finally {
    process.umask(previous);
  }
}

/**
 * Why `name` in `parent` is not this master's to remove, or undefined if it
 * is: a real directory (not a symlink) of our own uid in a parent nobody else
 * can rename entries of. Root sweeps no other user's directory, ever.
 */
export function notOurs(parent: string, name: string): string | undefined {
  const stat = fs.lstatSync(path.join(parent, name));
  if (!stat.isDirectory()) return 'not a directory';
  if (stat.uid !== process.getuid!()) return `it belongs to uid ${stat.uid}`;
  return untrustedDirectory(parent);
}

/**
 * Removes a control directory this uid made: its files (unlinked one by one,
 * never following a symlink: unlink does not) and the directory itself. Not
 * recursive: a subdirectory nobody should have made stays, and so does the
 * directory then.
 */
export function removeControlDirectory(dir: string): void {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return; // gone already
  }
  for (const name of names) {
    try {
      if (!fs.lstatSync(path.join(dir, name)).isDirectory()) fs.unlinkSync(path.join(dir, name));
    } catch {
      // raced with another master removing the same directory
    }
  }
  try {
    fs.rmdirSync(dir);
  } catch {
    // not empty (left as it is), or gone
  }
}

// --- addresses bound for a `--user` program ------------------------------------

/** What a `handover start --user` master binds for its program beyond what that user could bind. */
export interface BindPolicy {
  identity: Identity;
  /** Addresses the operator allowed (`--allow-listen`, the `allowListen` option). */
  allowListen: string[];
}

function sameAddress(allowed: Address, wanted: Address): boolean {
  if (allowed.kind === 'unix' || wanted.kind === 'unix') {
    return allowed.kind === 'unix' && wanted.kind === 'unix' && path.resolve(allowed.path) === path.resolve(wanted.path);
  }
  return allowed.port === wanted.port && (allowed.anyHost || allowed.host === wanted.host);
}

/** Whether the operator allowed `address` for the program (it may then also replace a stale socket file there). */
export function allowedByOperator(address: Address, policy: BindPolicy): boolean {
  return policy.allowListen.some((allowed) => sameAddress(parseAddress(allowed), address));
}

/** Whether `identity` may do `bits` (r=4, w=2, x=1) on a file with `stat`, as the kernel decides for a non-root user. */
function permits(stat: fs.Stats, identity: Identity, bits: number): boolean {
  if (identity.uid === 0) return true;
  const shift = stat.uid === identity.uid ? 6 : stat.gid === identity.gid ? 3 : 0;
  return ((stat.mode >> shift) & bits) === bits;
}

/** Why `identity` could not create a file in `dir`, or undefined if it could (search every directory above, write and search `dir`). */
function cannotCreateIn(dir: string, identity: Identity): string | undefined {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(dir);
  } catch (error) {
    return `${dir} cannot be used (${(error as NodeJS.ErrnoException).code})`;
  }
  if (!permits(stat, identity, 0o3)) return `that user cannot create files in ${dir} (owner uid ${stat.uid}, mode ${modeText(stat)})`;
  for (let above = path.dirname(dir); ; above = path.dirname(above)) {
    if (!permits(fs.statSync(above), identity, 0o1)) return `that user cannot reach ${above}`;
    if (above === path.dirname(above)) return undefined;
  }
}

/**
 * Throws unless the program running as `policy.identity` could bind `address`
 * itself (a TCP port >= 1024 or 0, an abstract socket, a path in a directory
 * it can create files in) or the operator allowed it. The error names the
 * address and the flag that allows it.
 */
export function checkBindFor(address: Address, policy: BindPolicy): void {
  if (allowedByOperator(address, policy)) return;
  let why: string | undefined;
  if (address.kind === 'tcp') {
    if (address.port !== 0 && address.port < 1024) why = `port ${address.port} is below 1024, which that user cannot bind itself`;
  } else if (!address.path.startsWith('@')) {
    why = cannotCreateIn(path.dirname(address.path), policy.identity);
  }
  if (!why) return;
  throw Object.assign(
    new Error(
      `refused: the program runs as ${policy.identity.label}, and ${why}; ` +
        `allow it with --allow-listen ${address.text} (the \`allowListen\` option)`,
    ),
    { code: 'ERR_HANDOVER_NOT_ALLOWED', address: address.text },
  );
}

/**
 * Whether root may unlink a stale socket file at `file` for a program running
 * as `identity`: only if that user could unlink it too (write on the
 * directory and, if it is sticky, owning the file or the directory), so a
 * program cannot take over another service's path through root.
 */
export function mayUnlinkFor(file: string, stat: fs.Stats, identity: Identity): boolean {
  const dir = fs.statSync(path.dirname(file));
  if (!permits(dir, identity, 0o3)) return false;
  return (dir.mode & S_ISVTX) === 0 || stat.uid === identity.uid || dir.uid === identity.uid;
}

// --- files read for the workers -------------------------------------------------

/**
 * Reads a file whose contents root hands to the workers (the env file): the
 * real path of its directory, so no symlink above it can be re-pointed
 * between checks; the directories above that one nobody else can rename
 * entries of; the file itself opened with O_NOFOLLOW and, on the fd,
 * checked to be a regular file with one link, owned by root or this uid and
 * writable by nobody else. A workers' user that controls the file's
 * directory can then only make it unreadable, never point it elsewhere.
 */
export function readFileForWorkers(file: string, what: string): string {
  const refuse = (why: string): never => {
    throw new Error(`refused to read ${what} ${file}: ${why}`);
  };
  let real: string;
  try {
    real = path.join(fs.realpathSync(path.dirname(file)), path.basename(file));
  } catch (error) {
    return refuse(`its directory cannot be resolved (${(error as NodeJS.ErrnoException).code})`);
  }
  const dir = path.dirname(real);
  const above = untrustedDirectory(path.dirname(dir));
  if (above) refuse(`${above}, so another user could re-point its directory; keep it under directories only root and this user can write`);
  const parent = fs.statSync(path.dirname(dir));
  const owner = fs.statSync(dir).uid;
  if ((parent.mode & 0o022) !== 0 && owner !== 0 && owner !== process.getuid!()) {
    refuse(`its directory ${dir} belongs to uid ${owner} in a shared directory, who could replace it with a link; keep it in a directory of root's`);
  }
  let fd: number;
  try {
    fd = fs.openSync(real, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== 'ELOOP') throw new Error(`cannot read ${what} ${file} (${code})`);
    return refuse('it is a symbolic link (name the file it points to, in a directory only root and this user can write)');
  }
  try {
    const stat = fs.fstatSync(fd);
    const uid = process.getuid!();
    if (!stat.isFile()) refuse('not a regular file');
    if (stat.uid !== 0 && stat.uid !== uid) refuse(`it belongs to uid ${stat.uid}; it must belong to root${uid === 0 ? '' : ` or uid ${uid}`}`);
    if ((stat.mode & 0o022) !== 0) refuse(`it is writable by other users (mode ${modeText(stat)}); chmod go-w it`);
    if (stat.nlink !== 1) refuse(`it has ${stat.nlink} hard links; use a file with one`);
    return fs.readFileSync(fd, 'utf8');
  } finally {
    fs.closeSync(fd);
  }
}
