// systemd: sd_notify (Type=notify / notify-reload: where the master is in its
// lifecycle; a no-op without NOTIFY_SOCKET) and socket activation (LISTEN_FDS).
import { type BoundAddress, closeFd, dup, localAddress, sendDatagram } from './native';

/** Sends `KEY=value` lines to $NOTIFY_SOCKET; never throws (systemd may be gone). */
export function notify(...lines: string[]): boolean {
  const socket = process.env.NOTIFY_SOCKET;
  if (!socket) return false;
  try {
    sendDatagram(socket, Buffer.from(lines.join('\n')));
    return true;
  } catch {
    return false;
  }
}

/** CLOCK_MONOTONIC in microseconds, as RELOADING=1 wants it in MONOTONIC_USEC. */
export function monotonicUsec(): string {
  return (process.hrtime.bigint() / 1000n).toString();
}

/** A socket systemd passed in (LISTEN_FDS), made close-on-exec. */
export interface ActivatedSocket {
  fd: number;
  bound: BoundAddress;
  /** Its FileDescriptorName= (LISTEN_FDNAMES), if systemd gave one. */
  name?: string;
  /** Handed over by our own predecessor (single mode): we remove its Unix file at stop. */
  owned?: boolean;
}

const SD_LISTEN_FDS_START = 3;

/**
 * The sockets systemd passed to this process, or none. Like
 * sd_listen_fds(unset_environment=1): only when LISTEN_PID is our pid, and the
 * variables are removed so workers never see them. Each fd is replaced by a
 * close-on-exec duplicate, so no worker inherits it at spawn.
 */
export function takeActivatedSockets(): ActivatedSocket[] {
  const { LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES } = process.env;
  delete process.env.LISTEN_PID;
  delete process.env.LISTEN_FDS;
  delete process.env.LISTEN_FDNAMES;
  if (Number(LISTEN_PID) !== process.pid || !/^\d+$/.test(LISTEN_FDS ?? '')) return [];
  const names = LISTEN_FDNAMES?.split(':') ?? [];
  return Array.from({ length: Number(LISTEN_FDS) }, (_, i) => {
    const inherited = SD_LISTEN_FDS_START + i;
    const fd = dup(inherited);
    closeFd(inherited);
    const name = names[i] && names[i] !== 'unknown' ? names[i] : undefined;
    return { fd, bound: localAddress(fd), name };
  });
}
