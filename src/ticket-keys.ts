// TLS session-ticket keys shared by every TLS server of every worker of every
// generation, so a client resumes its session on any slot and after any
// reload. Each Node TLS server otherwise makes random keys of its own, and a
// ticket issued by one process is a full handshake on every other.
//
// The keeper (the master, or a single-mode process) makes the keys with
// crypto.randomBytes and rotates them every `ticketKeyRotation` ms; they
// reach workers only over the control connection (in the `listeners` frame at
// hello, then a `ticket-keys` frame at each rotation), never via argv, the
// environment or a file.
//
// A ring holds three keys: the one that encrypts new tickets, the previous
// one (tickets issued before the last rotation still resume, and are renewed
// under the current key), and the next one, which a worker already accepts
// before it encrypts with it, so a worker that gets the rotation frame a
// moment after a sibling still resumes the tickets that sibling issues. A
// ticket is therefore accepted for at least one rotation interval after it is
// issued: a TLS server's `sessionTimeout` (the ticket's lifetime) must not be
// longer.
//
// Node's `server.setTicketKeys()` takes one key, which would make every
// rotation a full handshake for every client. Decrypting with any key of the
// ring needs OpenSSL's ticket key callback, which Node reaches only through
// its SecureContext's `enableTicketKeyCallback()` and `onticketkeycallback`
// (not public API; pinned by test/tls-sessions.test.ts). Where that is
// missing, each server falls back to setTicketKeys() with the current key.
import { crypto } from './platform/crypto';
import type * as net from 'node:net';
import type * as tls from 'node:tls';
import { isTlsServer } from './tls-kind';

/** Node's ticket key layout: 16 bytes name, 16 bytes HMAC secret, 16 bytes AES-128 key. */
export const TICKET_KEY_BYTES = 48;
const PART = 16;

/** A ring as it travels: base64 keys, [0] encrypts, every one decrypts. */
export type WireTicketKeys = string[];

/** True for what a frame may carry as a ring: one to three base64 keys of 48 bytes. */
export function isWireTicketKeys(value: unknown): value is WireTicketKeys {
  return Array.isArray(value) && value.length >= 1 && value.length <= 3 &&
    value.every((k) => typeof k === 'string' && /^[A-Za-z0-9+/]+={0,2}$/.test(k) && Buffer.from(k, 'base64').length === TICKET_KEY_BYTES);
}

/** The keeper's side: makes the keys, rotates them, says when. */
export class TicketKeyRing {
  private current: Buffer;
  private next: Buffer;
  private previous?: Buffer;
  private timer?: NodeJS.Timeout;

  /** A fresh ring, or the one a predecessor handed over (single mode). */
  constructor(from?: WireTicketKeys) {
    const [current, next, previous] = (from ?? []).map((k) => Buffer.from(k, 'base64'));
    this.current = current ?? crypto().randomBytes(TICKET_KEY_BYTES);
    this.next = next ?? crypto().randomBytes(TICKET_KEY_BYTES);
    this.previous = previous;
  }

  /** Current, next, previous: what every TLS server is given. */
  get wire(): WireTicketKeys {
    return [this.current, this.next, ...(this.previous ? [this.previous] : [])].map((k) => k.toString('base64'));
  }

  /** Rotates every `intervalMs` and calls `rotated` with the new ring (to send to each worker). */
  start(intervalMs: number, rotated: (keys: WireTicketKeys) => void): void {
    this.timer = setInterval(() => {
      this.previous = this.current;
      this.current = this.next;
      this.next = crypto().randomBytes(TICKET_KEY_BYTES);
      rotated(this.wire);
    }, intervalMs).unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

type TicketKeyResult = [number, Buffer, Buffer] | [number, Buffer, Buffer, Buffer, Buffer];

/** The native SecureContext under a tls.Server (`server._sharedCreds.context`). */
interface NativeContext {
  enableTicketKeyCallback?: () => void;
  onticketkeycallback?: (name: Buffer, iv: Buffer, encrypt: boolean) => TicketKeyResult;
}

/** OpenSSL's answers: 1 use this key, 2 use it and issue a fresh ticket, 0 not ours (full handshake). */
const FOUND = 1;
const FOUND_RENEW = 2;
const NOT_FOUND = 0;
/** A decrypt miss still has to hand OpenSSL 16-byte secrets, or Node aborts the process. */
const UNUSED = Buffer.alloc(PART);

/** The worker's side: the ring it was given, applied to every TLS server it serves. */
export class TicketKeys {
  private keys: Buffer[] = [];
  /** Servers that fell back to setTicketKeys(), updated at each rotation. */
  private readonly fallback = new Set<tls.Server>();

  /** `warn` hears of a server whose tickets would outlive the keys that can decrypt them. */
  constructor(private readonly rotationMs: number, private readonly warn: (line: string) => void) {}

  /** A new ring (hello or rotation); the servers' callbacks read it from here. */
  set(wire: WireTicketKeys): void {
    this.keys = wire.map((k) => Buffer.from(k, 'base64'));
    for (const server of this.fallback) server.setTicketKeys(this.keys[0]);
  }

  /**
   * Makes `server` issue and resume tickets with the ring, also after the
   * application gives it a new certificate with setSecureContext() (which
   * makes new random keys). Anything but a tls.Server (https, tls and
   * http2 secure servers are) is left alone.
   */
  use(server: net.Server): void {
    if (!isTlsServer(server) || this.keys.length === 0) return;
    // Node's default ticket lifetime is 300 s; a server may set its own.
    const lifetime = (server as tls.Server & { sessionTimeout?: number }).sessionTimeout ?? 300;
    if (lifetime * 1000 > this.rotationMs) {
      this.warn(`a TLS server has sessionTimeout ${lifetime} s, longer than ticketKeyRotation (${this.rotationMs} ms): ` +
        'its older tickets will not resume; set sessionTimeout (seconds) to at most ticketKeyRotation');
    }
    this.install(server);
    const setSecureContext = server.setSecureContext;
    server.setSecureContext = (options: tls.SecureContextOptions) => {
      setSecureContext.call(server, options);
      this.install(server);
    };
  }

  private install(server: tls.Server): void {
    server.setTicketKeys(this.keys[0]);
    const context = (server as tls.Server & { _sharedCreds?: { context?: NativeContext } })._sharedCreds?.context;
    if (typeof context?.enableTicketKeyCallback !== 'function') {
      this.fallback.add(server);
      return;
    }
    context.onticketkeycallback = (name, _iv, encrypt) => {
      if (encrypt) {
        const key = this.keys[0];
        return [FOUND, key.subarray(PART, 2 * PART), key.subarray(2 * PART), key.subarray(0, PART), crypto().randomBytes(PART)];
      }
      const index = this.keys.findIndex((k) => k.subarray(0, PART).equals(name));
      if (index < 0) return [NOT_FOUND, UNUSED, UNUSED];
      const key = this.keys[index];
      return [index === 0 ? FOUND : FOUND_RENEW, key.subarray(PART, 2 * PART), key.subarray(2 * PART)];
    };
    context.enableTicketKeyCallback();
  }
}
