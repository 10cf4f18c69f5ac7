// sd_notify: tells systemd (Type=notify / notify-reload) where the master is in
// its lifecycle. A no-op when NOTIFY_SOCKET is not set.
import { sendDatagram } from './native';

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
