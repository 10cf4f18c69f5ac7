// Every error handover throws on purpose, one class per `code`, so a caller
// can test `error.code` (or `instanceof`) instead of parsing a message.
// System errors (EADDRINUSE, EACCES, ...) keep Node's own shape instead:
// `code` is the errno name, with `errno` and `syscall`.

/** Base of every ERR_HANDOVER_* error. */
export abstract class HandoverError extends Error {
  abstract readonly code: string;
}

/** An address string that does not parse (`':PORT'`, `'HOST:PORT'`, `'[IPv6]:PORT'`, `'unix:/path'`). */
export class AddressError extends TypeError {
  readonly code = 'ERR_HANDOVER_ADDRESS';
}

/** Two registrations of one program would listen on the same port of the same address. */
export class AddressOverlapError extends HandoverError {
  readonly code = 'ERR_HANDOVER_ADDRESS_OVERLAP';
}

/** A second Server, or a second listenAndServe(), in one program. */
export class SecondServerError extends HandoverError {
  readonly code = 'ERR_HANDOVER_SECOND_SERVER';
}

/** A TLS certificate or key file that is not PEM, or a key that does not match its certificate. */
export class TLSFileError extends HandoverError {
  readonly code = 'ERR_HANDOVER_TLS_FILE';
}

/** The native addon did not load (no prebuild for this platform and no source build). */
export class NoAddonError extends HandoverError {
  readonly code = 'ERR_HANDOVER_NO_ADDON';
}

/** A malformed or oversized control frame: that one connection is closed. */
export class ProtocolError extends HandoverError {
  readonly code = 'ERR_HANDOVER_PROTOCOL';
}

/** A reload cut short by a stop: a cancellation, not a failed deploy. */
export class ReloadCancelled extends HandoverError {
  readonly code = 'ERR_HANDOVER_RELOAD_CANCELLED';
}

/** `handover start`: listen() after the worker reported ready; the master serves only start-up addresses. */
export class LateListenError extends HandoverError {
  readonly code = 'ERR_HANDOVER_LATE_LISTEN';
  readonly syscall = 'listen';
}
