// systemd's file descriptor store (FileDescriptorStoreMax=, invariant 16):
// every listening socket the master binds is stored with the service manager
// (sd_pid_notify_with_fds: FDSTORE=1 with SCM_RIGHTS on the NOTIFY_SOCKET
// datagram), so a crash or a restart of the master loses no accept queue; the
// next master gets them back as LISTEN_FDS with these names and adopts each
// for its address and slot instead of binding.
import { sendDatagram } from './native';

/** Names look like 'handover.<slot>.<address key, URI-encoded>': LISTEN_FDNAMES is ':'-separated, so no ':'. */
const PREFIX = 'handover.';
/** systemd's limit for FDNAME= (fdname_is_valid). */
const MAX_NAME = 255;

/** On with `fdStore: true`, or when the service manager offers a store ($FDSTORE > 0, systemd 254+). */
export function fdStoreWanted(option: boolean): boolean {
  return option || Number(process.env.FDSTORE) > 0;
}

export function fdName(key: string, slot: number): string {
  const name = `${PREFIX}${slot}.${encodeURIComponent(key)}`;
  if (name.length > MAX_NAME) throw new RangeError(`the fd store name for ${key} is longer than systemd's ${MAX_NAME} characters`);
  return name;
}

/** The address key and slot a stored socket was named for, or undefined for any other name. */
export function parseFdName(name: string | undefined): { key: string; slot: number } | undefined {
  const match = name && /^handover\.(\d+)\.(.+)$/.exec(name);
  if (!match) return undefined;
  try {
    return { slot: Number(match[1]), key: decodeURIComponent(match[2]) };
  } catch {
    return undefined; // not our encoding
  }
}

/**
 * Talks to the store over $NOTIFY_SOCKET. A failure is logged, never thrown:
 * the master serves without a store rather than not at all.
 */
export class FdStore {
  constructor(
    private readonly warn: (message: string) => void,
    private readonly socket = process.env.NOTIFY_SOCKET,
  ) {
    if (!socket) warn('fdStore: NOTIFY_SOCKET is not set, so there is no service manager to store the listening sockets with');
  }

  /** Stores slot i's socket as fdName(key, i), one datagram each (FDNAME= names every fd of a datagram). */
  store(key: string, fds: number[], firstSlot = 0): void {
    this.send(fds.map((fd, i) => [`FDSTORE=1\nFDNAME=${fdName(key, firstSlot + i)}`, [fd]]));
  }

  /** Drops the stored sockets of `slots` slots of `key` (FDSTOREREMOVE=1 closes every fd of that name). */
  remove(key: string, slots: number, firstSlot = 0): void {
    this.send(Array.from({ length: slots }, (_, i) => [`FDSTOREREMOVE=1\nFDNAME=${fdName(key, firstSlot + i)}`, []]));
  }

  private send(datagrams: [string, number[]][]): void {
    if (!this.socket) return;
    try {
      for (const [text, fds] of datagrams) sendDatagram(this.socket, Buffer.from(text), fds);
    } catch (error) {
      this.warn(`fdStore: cannot reach the service manager at ${this.socket} (${error instanceof Error ? error.message : String(error)}); ` +
        'the sockets are not stored, so a master restart refuses connections until it binds again');
    }
  }
}
