// The master's listening sockets: bound once, kept for the master's whole life
// (invariant 1), one per worker slot on Linux so each slot keeps its own accept
// queue in one SO_REUSEPORT group (invariant 2), one shared socket elsewhere.
import * as fs from 'node:fs';
import type * as net from 'node:net';
import { type Address, formatBound, parseAddress } from '../platform/address';
import { MAX_FDS_PER_MESSAGE, encode } from '../protocol';
import type { WireTicketKeys } from '../ticket-keys';
import { sendWithFds } from './control-server';
import * as native from '../platform/native';
import { type FdStore, parseFdName } from '../platform/fdstore';
import type { Identity } from '../platform/identity';
import type { ActivatedSocket } from '../platform/systemd';
import { type BindPolicy, allowedByOperator, checkBindFor, mayUnlinkFor, withUmask } from './privilege';

export interface Listener {
  /** The registration key: the address string, '#n' added for repeated ephemeral ports. */
  key: string;
  address: Address;
  /** The address as bound, with the real port: '127.0.0.1:41234'. */
  bound: string;
  /** One fd per slot, or a single fd that every slot shares. */
  fds: number[];
  /** Every slot shares fds[0]: a Unix socket, one systemd passed in, or any socket off Linux. */
  shared: boolean;
  /** inode of the Unix socket file we created, so we remove only our own. */
  createdInode?: number;
  /** systemd passed it in and keeps a copy to pass on again: a stop never filters or shuts it down. */
  adopted?: boolean;
}


export interface ListenerOptions {
  /** Sockets per TCP address (Linux); grows with addSlot(). */
  slots: number;
  backlog: number;
  /** Join an existing SO_REUSEPORT group instead of failing with EADDRINUSE. */
  shared: boolean;
  /** File mode for Unix socket files. */
  unixMode?: number;
  /** systemd's fd store: every socket we bind is stored there, and removed when a reload drops it. */
  store?: FdStore;
  /** `handover start --user`: bind only what the program's user could bind itself, or the operator allowed. */
  bindFor?: BindPolicy;
}

/** Sockets a previous master of this service left us, per slot: from the fd store, or kept across an upgrade's exec. */
interface Inherited {
  fds: Map<number, number>;
  createdInode?: number;
  /** As it was in the previous image (an upgrade); else by kind: Unix sockets, and any off Linux. */
  shared?: boolean;
}

const HINTS: Record<string, string> = {
  EADDRINUSE: 'another process is listening there; stop it or choose another address (or join its SO_REUSEPORT group on purpose: `shared: true`, handover start --shared)',
  EACCES: 'ports below 1024 need root or CAP_NET_BIND_SERVICE; use a port >= 1024, or start the master as root with the `user` option',
  EADDRNOTAVAIL: 'that IP is not an address of this machine',
  ENAMETOOLONG: 'use a shorter Unix socket path',
  ENOENT: 'the directory of the Unix socket path does not exist',
  EEXIST: 'a file that is not a socket is in the way; handover never deletes it',
};

/** Adds the address and the likely fix to a system error, keeping code/errno/syscall. */
function explain(error: unknown, address: string): Error {
  if (!(error instanceof Error)) return new Error(String(error));
  const code = (error as native.SystemError).code;
  const hint = HINTS[code];
  error.message = `cannot listen on ${address}: ${error.message}${hint ? `; ${hint}` : ''}`;
  (error as Error & { address?: string }).address = address;
  return error;
}

export class ListenerSet {
  private readonly listeners = new Map<string, Listener>();
  /** Sockets systemd passed in that no registered address has claimed yet. */
  private activated: ActivatedSocket[] = [];
  /** Our own predecessor's sockets by address key, claimed by key and slot (invariant 16). */
  private readonly inherited = new Map<string, Inherited>();

  constructor(private readonly options: ListenerOptions) {}

  /** Every socket is in systemd's fd store too: a stop must leave them listening for the next master. */
  get stored(): boolean {
    return this.options.store !== undefined;
  }

  /**
   * Socket activation: these sockets serve matching addresses instead of new
   * binds. Those named by our fd store go back to their own address and slot.
   */
  adopt(sockets: ActivatedSocket[]): void {
    for (const socket of sockets) {
      const stored = parseFdName(socket.name);
      if (stored) this.inherit(stored.key, new Map([[stored.slot, socket.fd]]));
      else this.activated.push(socket);
    }
  }

  /** Sockets of `key` by slot that a previous image of this master bound. */
  inherit(key: string, fds: Map<number, number>, createdInode?: number, shared?: boolean): void {
    const entry = this.inherited.get(key) ?? { fds: new Map(), createdInode, shared };
    for (const [slot, fd] of fds) {
      const replaced = entry.fds.get(slot);
      if (replaced !== undefined) native.closeFd(replaced);
      entry.fds.set(slot, fd);
    }
    this.inherited.set(key, entry);
  }

  /** Activated sockets no registered address matched (they are not served). */
  get unclaimed(): string[] {
    return this.activated.map((s) => `${formatBound(s.bound)}${s.name ? ` (${s.name})` : ''}`);
  }

  /** The activated socket for an address: by FileDescriptorName= equal to it, else by bound address. */
  private claimActivated(text: string, address: Address): ActivatedSocket | undefined {
    // systemd names every fd (by default after its .socket unit), so a name
    // that is not our address string says nothing: then match the address.
    const byName = this.activated.findIndex((s) => s.name === text);
    if (byName >= 0) return this.activated.splice(byName, 1)[0];
    const matches = (s: ActivatedSocket): boolean => {
      const b = s.bound;
      if (address.kind === 'unix') return b.family === 'unix' && b.path === address.path;
      if (b.family === 'unix' || b.port !== address.port || address.port === 0) return false;
      const anyHost = (host: string) => host === '::' || host === '0.0.0.0';
      return b.address === address.host || (address.anyHost && anyHost(b.address));
    };
    const index = this.activated.findIndex(matches);
    return index < 0 ? undefined : this.activated.splice(index, 1)[0];
  }

  /**
   * Our predecessor's sockets for `text`, slot k's socket for slot k: the
   * queue a client waits in is served by the slot it was meant for. Missing
   * slots are bound into the same group; sockets beyond today's slots are
   * closed (and dropped from the store), as no worker would accept from them.
   */
  private claimInherited(text: string, address: Address): Omit<Listener, 'key'> | undefined {
    const entry = this.inherited.get(text);
    if (!entry) return undefined;
    this.inherited.delete(text);
    const shared = entry.shared ?? (address.kind === 'unix' || process.platform !== 'linux');
    const want = shared ? 1 : this.options.slots;
    const fds: number[] = [];
    while (fds.length < want && entry.fds.has(fds.length)) {
      fds.push(entry.fds.get(fds.length)!);
      entry.fds.delete(fds.length - 1);
    }
    for (const [slot, fd] of entry.fds) {
      native.closeFd(fd);
      this.options.store?.remove(text, 1, slot);
    }
    if (fds.length === 0) return undefined;
    const bound = native.localAddress(fds[0]);
    try {
      while (fds.length < want) {
        const { address: host, port } = bound as { address: string; port: number };
        fds.push(native.bindTcp({ host, port, backlog: this.options.backlog, reusePort: true }));
      }
    } catch (error) {
      fds.forEach(native.closeFd);
      throw explain(error, text);
    }
    let createdInode = entry.createdInode;
    if (createdInode === undefined && address.kind === 'unix' && !address.path.startsWith('@')) {
      try {
        createdInode = fs.lstatSync(address.path).ino; // stored by our predecessor, which made the file
      } catch {
        // gone: the socket still serves whoever holds it
      }
    }
    return { address, fds, shared, bound: formatBound(bound), createdInode };
  }

  /** The listener for an address string, binding it first if need be. */
  ensure(text: string): Listener {
    const existing = this.listeners.get(text);
    if (existing) return existing;
    const address = parseAddress(text.replace(/#\d+$/, '')); // '127.0.0.1:0#1': the 2nd ephemeral port
    const inherited = this.claimInherited(text, address);
    if (inherited) {
      const listener = { key: text, ...inherited };
      this.listeners.set(text, listener);
      this.options.store?.store(text, listener.fds);
      return listener;
    }
    const activated = this.claimActivated(text, address);
    if (activated) {
      // Every slot shares an adopted socket. Its file is systemd's, never
      // unlinked, unless our predecessor made it (single-process handover).
      const onDisk = activated.owned && address.kind === 'unix' && !address.path.startsWith('@');
      const createdInode = onDisk ? fs.lstatSync(address.path).ino : undefined;
      const listener = { key: text, address, fds: [activated.fd], shared: true, bound: formatBound(activated.bound), createdInode, adopted: true };
      this.listeners.set(text, listener);
      return listener;
    }
    let listener: Listener;
    try {
      if (this.options.bindFor) checkBindFor(address, this.options.bindFor);
      listener = { key: text, ...(address.kind === 'tcp' ? this.bindTcp(address) : this.bindUnix(address)) };
    } catch (error) {
      throw explain(error, text);
    }
    this.listeners.set(text, listener);
    this.options.store?.store(text, listener.fds);
    return listener;
  }

  /** The fd of `slot` (or the shared one) for this address. */
  fdFor(text: string, slot: number): number {
    const listener = this.listeners.get(text);
    if (!listener) throw new Error(`no listener for ${text}`);
    return listener.fds[listener.fds.length === 1 ? 0 : slot];
  }

  /**
   * Answers a hello: binds any address not bound yet and sends, per address,
   * the socket of every slot (the worker accepts from its own and keeps the
   * rest dormant until asked to cover a slot) with the `listeners` frame,
   * which also carries the TLS ticket keys. If
   * that cannot be done (a bind failed), sends `refused` instead and returns why.
   */
  async sendTo(conn: net.Socket, addresses: string[], ticketKeys?: WireTicketKeys): Promise<string | undefined> {
    try {
      const listeners = addresses.map((a) => this.ensure(a));
      const fds = listeners.flatMap((l) => l.fds);
      if (fds.length > MAX_FDS_PER_MESSAGE) {
        throw new RangeError(
          `${addresses.length} address(es) x ${this.options.slots} workers need ${fds.length} sockets in one message; ` +
            `the kernel passes at most ${MAX_FDS_PER_MESSAGE}: use fewer workers or addresses`,
        );
      }
      const frame = encode({
        type: 'listeners',
        listeners: listeners.map((l) => ({
          address: l.key, bound: l.bound, backlog: this.options.backlog, fds: l.fds.length, owned: l.createdInode !== undefined,
        })),
        ticketKeys,
      });
      await sendWithFds(conn, frame, fds);
      return undefined;
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      if (!conn.destroyed) conn.write(encode({ type: 'refused', message }));
      return message;
    }
  }

  /**
   * One more slot: every TCP address (Linux) gets one more socket in its
   * SO_REUSEPORT group, bound to the same port. Unix and activated sockets
   * are shared by every slot already. The new socket is bound but does not
   * listen: the group hashes no connection to it until the slot's first
   * worker listens on it, so a worker that never starts strands none.
   */
  addSlot(): void {
    this.options.slots++;
    if (process.platform !== 'linux') return;
    for (const listener of this.listeners.values()) {
      if (listener.shared) continue;
      const bound = native.localAddress(listener.fds[0]) as { address: string; port: number };
      try {
        listener.fds.push(native.bindTcp({ host: bound.address, port: bound.port, backlog: this.options.backlog, reusePort: true, listen: false }));
      } catch (error) {
        throw explain(error, listener.key);
      }
      this.options.store?.store(listener.key, listener.fds.slice(-1), listener.fds.length - 1);
    }
  }

  /** The sockets of `slot` alone (TCP on Linux; every other kind is shared by all slots), with their bound address. */
  slotSockets(slot: number): { fd: number; bound: string }[] {
    return this.all.filter((l) => !l.shared && l.fds.length > slot).map((l) => ({ fd: l.fds[slot], bound: l.bound }));
  }

  get backlog(): number {
    return this.options.backlog;
  }

  get all(): Listener[] {
    return [...this.listeners.values()];
  }

  /** Closes every listener whose address is not in `inUse` (a reload dropped it), and drops it from the fd store. */
  release(inUse: Set<string>, unlink = true): string[] {
    const dropped: string[] = [];
    for (const [text, listener] of this.listeners) {
      if (inUse.has(text)) continue;
      this.options.store?.remove(text, listener.fds.length);
      this.close(listener, unlink);
      this.listeners.delete(text);
      dropped.push(listener.bound);
    }
    return dropped;
  }

  /**
   * Closes every socket; `unlink: false` leaves Unix socket files for a
   * successor that serves them. With the fd store the sockets stay stored, and
   * their files in place, for the next master (`systemctl restart`, a crash
   * with Restart=); systemd itself drops them when the unit stops for good.
   */
  closeAll(unlink = true): void {
    for (const listener of this.listeners.values()) this.close(listener, unlink && !this.options.store);
    this.listeners.clear();
    for (const socket of this.activated.splice(0)) native.closeFd(socket.fd);
    for (const entry of this.inherited.values()) entry.fds.forEach((fd) => native.closeFd(fd));
    this.inherited.clear();
  }

  private close(listener: Listener, unlink: boolean): void {
    for (const fd of listener.fds) native.closeFd(fd);
    if (unlink && listener.createdInode !== undefined && listener.address.kind === 'unix') {
      const path = listener.address.path;
      try {
        if (fs.lstatSync(path).ino === listener.createdInode) fs.unlinkSync(path);
      } catch {
        // already gone
      }
    }
  }

  private bindTcp(address: Extract<Address, { kind: 'tcp' }>): Omit<Listener, 'key'> {
    const count = process.platform === 'linux' ? this.options.slots : 1;
    const bindAll = (host: string): number[] => {
      if (address.port !== 0 && !this.options.shared) native.probeTcp({ host, port: address.port });
      const fds: number[] = [];
      try {
        let port = address.port;
        for (let i = 0; i < count; i++) {
          const fd = native.bindTcp({ host, port, backlog: this.options.backlog, reusePort: true });
          fds.push(fd);
          if (port === 0) port = (native.localAddress(fd) as { port: number }).port;
        }
      } catch (error) {
        for (const fd of fds) native.closeFd(fd);
        throw error;
      }
      return fds;
    };
    let fds: number[];
    try {
      fds = bindAll(address.host);
    } catch (error) {
      // ':PORT' means every interface: IPv6 dual stack where there is IPv6, else IPv4.
      const ipv6Missing = native.isSystemError(error, 'EAFNOSUPPORT') || native.isSystemError(error, 'EADDRNOTAVAIL');
      if (!address.anyHost || !ipv6Missing) throw error;
      fds = bindAll('0.0.0.0');
    }
    return { address, fds, shared: process.platform !== 'linux', bound: formatBound(native.localAddress(fds[0])) };
  }

  private bindUnix(address: Extract<Address, { kind: 'unix' }>): Omit<Listener, 'key'> {
    const { path } = address;
    const { bindFor } = this.options;
    if (!path.startsWith('@')) this.removeStaleSocket(address, bindFor && !allowedByOperator(address, bindFor) ? bindFor.identity : undefined);
    // The mode comes from the umask at bind: a chmod after it would follow a symlink swapped in meanwhile.
    const { unixMode } = this.options;
    const bind = () => native.bindUnix({ path, backlog: this.options.backlog });
    const fd = unixMode === undefined || path.startsWith('@') ? bind() : withUmask(~unixMode & 0o777, bind);
    let createdInode: number | undefined;
    try {
      createdInode = path.startsWith('@') ? undefined : fs.lstatSync(path).ino;
    } catch (error) {
      native.closeFd(fd); // the file went away under us: nothing serves it
      throw error;
    }
    return { address, fds: [fd], shared: true, bound: address.text, createdInode };
  }

  /**
   * A socket file nobody listens on is stale and replaced (for `onBehalfOf`,
   * only one that user could remove itself); anything else stays.
   */
  private removeStaleSocket(address: Extract<Address, { kind: 'unix' }>, onBehalfOf: Identity | undefined): void {
    const { path } = address;
    let stat: fs.Stats;
    try {
      stat = fs.lstatSync(path);
    } catch {
      return;
    }
    if (!stat.isSocket()) {
      throw Object.assign(new Error(`bind EEXIST ${path} (exists and is not a socket)`), {
        code: 'EEXIST', errno: -17, syscall: 'bind',
      });
    }
    try {
      native.closeFd(native.connectUnix(path));
    } catch (error) {
      if (native.isSystemError(error, 'ECONNREFUSED')) {
        if (onBehalfOf && !mayUnlinkFor(path, stat, onBehalfOf)) {
          throw Object.assign(new Error(
            `bind EADDRINUSE ${path} (a stale socket file ${onBehalfOf.label} could not remove itself, so root leaves it; ` +
              `remove it, or allow the address with --allow-listen ${address.text})`,
          ), { code: 'EADDRINUSE', errno: -98, syscall: 'bind' });
        }
        fs.unlinkSync(path);
        return;
      }
      throw error;
    }
    throw Object.assign(new Error(`bind EADDRINUSE ${path} (a live socket listens there)`), {
      code: 'EADDRINUSE', errno: -98, syscall: 'bind',
    });
  }
}
