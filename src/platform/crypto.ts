// node:crypto, loaded only where it is used. A worker boots at every reload,
// and in one serving plain HTTP, loading node:crypto (about 3.5 ms of CPU) and
// OpenSSL's first digest (about 1.5 ms more) were a sixth of what handover
// itself cost it (issue 24, measured per phase with process.cpuUsage()). So the worker's
// modules take their randomness from the kernel and compare tokens in
// JavaScript; node:crypto loads when TLS or the master needs it.
import * as fs from 'node:fs';
import type * as Crypto from 'node:crypto';

/** node:crypto, loaded at the first call (Node's module cache keeps it). */
export function crypto(): typeof Crypto {
  return require('node:crypto') as typeof Crypto;
}

/** `bytes` random bytes from the kernel, as hex; node:crypto's if /dev/urandom cannot be read (a bare chroot). */
export function randomHex(bytes: number): string {
  const buffer = Buffer.alloc(bytes);
  let fd: number | undefined;
  try {
    fd = fs.openSync('/dev/urandom', 'r');
    let filled = 0;
    while (filled < bytes) {
      const n = fs.readSync(fd, buffer, filled, bytes - filled, null);
      if (n <= 0) throw new Error('/dev/urandom ended');
      filled += n;
    }
    return buffer.toString('hex');
  } catch {
    return crypto().randomBytes(bytes).toString('hex');
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/**
 * Compares two tokens in time that depends only on their lengths (which are
 * not secret: every token of a kind has the same).
 */
export function tokensEqual(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}
