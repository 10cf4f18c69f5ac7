// The control protocol's framing on its own: a 4-byte big-endian length and
// that many bytes of JSON, validated field by field. Whatever bytes arrive, in
// whatever pieces, the decoder yields validated messages or throws a
// ProtocolError (which closes that one connection) -- never anything else,
// since anything else would escape the master's handler (invariant 6:
// "garbage never crashes the master").
//
// Sensitivity, checked by hand on a copy of src/control.ts: no length cap; a
// raw SyntaxError escaping; validate() dereferencing a null listener, or not
// checking hello.addresses or status-result.status (each caught by the fuzz
// run as well as by the explicit cases); tokensEqual comparing only a common
// prefix, or throwing on different lengths.
import { describe, expect, it } from 'vitest';
import { FrameDecoder, MAX_FRAME_BYTES, type Message, ProtocolError, encode, validate } from '../src/protocol';
import { randomHex, tokensEqual } from '../src/platform/crypto';
// eslint-disable-next-line @typescript-eslint/no-require-imports
const fuzz = require('./fixtures/auth-fuzz-frames.js');

/** A TLS session-ticket key as it travels: 48 bytes, base64. */
const KEY = Buffer.alloc(48, 7).toString('base64');

const samples: Message[] = [
  { type: 'hello', token: 'ab'.repeat(32), pid: 1234, slot: 0, generation: 7, addresses: ['127.0.0.1:0#0', 'unix:/tmp/é €.sock'] },
  { type: 'listeners', listeners: [{ address: ':9222', bound: '[::]:9222', backlog: 1024, fds: 2 }] },
  { type: 'listeners', listeners: [{ address: 'unix:/run/a.sock', bound: 'unix:/run/a.sock', backlog: 8, fds: 1, owned: false }] },
  { type: 'listeners', listeners: [], ticketKeys: [KEY, KEY, KEY] },
  { type: 'ticket-keys', keys: [KEY, KEY] },
  { type: 'ping' },
  { type: 'pong' },
  { type: 'cover', slot: 1 },
  { type: 'uncover', slot: 0 },
  { type: 'closing' },
  { type: 'refused', message: 'bind failed: 😀' },
  { type: 'ready' },
  { type: 'failed', message: '' },
  { type: 'drain' },
  { type: 'reload', id: 3 },
  { type: 'reload-result', id: 3, ok: false, message: 'nope' },
  { type: 'reload-result', id: 4, ok: true },
  { type: 'status' },
  { type: 'status-result', status: { pid: 1, generation: 2, uptimeMs: 3, reloading: false, addresses: [], workers: [] } },
  { type: 'stop' },
];

/** What a fresh decoder makes of `chunks`: messages, or the error it threw. */
function decodeAll(chunks: Buffer[]): { messages: Message[]; error?: unknown; pending: number } {
  const decoder = new FrameDecoder();
  const messages: Message[] = [];
  try {
    for (const chunk of chunks) messages.push(...decoder.push(chunk));
  } catch (error) {
    return { messages, error, pending: decoder.pending };
  }
  return { messages, pending: decoder.pending };
}

function header(length: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(length, 0);
  return b;
}

const rawFrame = (body: string | Buffer) => {
  const b = Buffer.isBuffer(body) ? body : Buffer.from(body, 'utf8');
  return Buffer.concat([header(b.length), b]);
};

function expectProtocolError(chunks: Buffer[], message?: RegExp): void {
  const { error } = decodeAll(chunks);
  expect(error, 'the decoder should have thrown').toBeInstanceOf(ProtocolError);
  expect((error as ProtocolError).code).toBe('ERR_HANDOVER_PROTOCOL');
  if (message) expect((error as Error).message).toMatch(message);
}

describe('encode / FrameDecoder', () => {
  it('round-trips every message type', () => {
    for (const message of samples) {
      const frame = encode(message);
      expect(frame.readUInt32BE(0)).toBe(frame.length - 4);
      const { messages, error, pending } = decodeAll([frame]);
      expect(error).toBeUndefined();
      expect(messages).toEqual([message]);
      expect(pending).toBe(0);
    }
  });

  it('reassembles a frame split at every byte boundary (multi-byte UTF-8 included)', () => {
    for (const message of samples) {
      const frame = encode(message);
      for (let cut = 0; cut <= frame.length; cut++) {
        const { messages, error, pending } = decodeAll([frame.subarray(0, cut), frame.subarray(cut)]);
        expect(error, `cut at ${cut}`).toBeUndefined();
        expect(messages, `cut at ${cut}`).toEqual([message]);
        expect(pending).toBe(0);
      }
      // and one byte at a time: nothing before the last byte, the message after it
      const decoder = new FrameDecoder();
      for (let i = 0; i < frame.length - 1; i++) {
        expect(decoder.push(frame.subarray(i, i + 1))).toEqual([]);
        expect(decoder.pending).toBe(i + 1);
      }
      expect(decoder.push(frame.subarray(frame.length - 1))).toEqual([message]);
    }
  });

  it('yields several frames that arrive in one chunk, in order, and keeps the partial tail', () => {
    const all = Buffer.concat(samples.map(encode));
    const tail = encode({ type: 'ready' }).subarray(0, 3);
    const decoder = new FrameDecoder();
    expect(decoder.push(Buffer.concat([all, tail]))).toEqual(samples);
    expect(decoder.pending).toBe(3);
    expect(decoder.push(encode({ type: 'ready' }).subarray(3))).toEqual([{ type: 'ready' }]);
    expect(decoder.pending).toBe(0);
  });

  it('accepts a frame of exactly MAX_FRAME_BYTES', () => {
    const skeleton = JSON.stringify({ type: 'failed', message: '' });
    const body = JSON.stringify({ type: 'failed', message: 'x'.repeat(MAX_FRAME_BYTES - skeleton.length) });
    expect(Buffer.byteLength(body)).toBe(MAX_FRAME_BYTES);
    const frame = encode(JSON.parse(body));
    expect(frame.length).toBe(4 + MAX_FRAME_BYTES);
    expect(decodeAll([frame]).messages).toHaveLength(1);
  });

  it('encode refuses a message larger than MAX_FRAME_BYTES with a ProtocolError', () => {
    expect(() => encode({ type: 'failed', message: 'x'.repeat(MAX_FRAME_BYTES) })).toThrow(ProtocolError);
  });

  it('a length prefix over MAX_FRAME_BYTES throws as soon as the 4 bytes are in, before any body', () => {
    for (const length of [MAX_FRAME_BYTES + 1, 0x7fffffff, 0xffffffff]) {
      expectProtocolError([header(length)], /exceeds/);
      // split prefix, too
      const h = header(length);
      expectProtocolError([h.subarray(0, 2), h.subarray(2)], /exceeds/);
      // after a good frame in the same chunk
      const { messages, error } = decodeAll([Buffer.concat([encode({ type: 'ready' }), h])]);
      expect(error).toBeInstanceOf(ProtocolError);
      expect(messages).toEqual([]);
    }
  });

  it('invalid JSON, an empty frame, and non-UTF-8 bytes throw ProtocolError', () => {
    expectProtocolError([rawFrame('{"type":"ready"')], /JSON/);
    expectProtocolError([rawFrame('')], /JSON/);
    expectProtocolError([rawFrame('{"type":"ready"} x')], /JSON/);
    expectProtocolError([rawFrame(Buffer.from([0xff, 0xfe, 0x7b, 0x7d]))], /JSON/);
    expectProtocolError([rawFrame('\u0000')]);
  });

  it('a frame that is JSON but not an object throws ProtocolError', () => {
    for (const body of ['null', '1', '"hello"', 'true', '[]', '[{"type":"ready"}]']) {
      expectProtocolError([rawFrame(body)], /not an object/);
    }
  });

  it('an unknown type, or a missing / wrongly typed field, throws ProtocolError', () => {
    const bad: unknown[] = [
      {},
      { type: 'bye' },
      { type: 'HELLO' },
      { type: 'constructor' },
      { type: '__proto__' },
      { type: ['ready'] },
      { type: 'hello', token: 1, pid: 1, slot: 0, generation: 1, addresses: [] },
      { type: 'hello', token: 't', pid: '1', slot: 0, generation: 1, addresses: [] },
      { type: 'hello', token: 't', pid: 1.5, slot: 0, generation: 1, addresses: [] },
      { type: 'hello', token: 't', pid: 2 ** 53, slot: 0, generation: 1, addresses: [] },
      { type: 'hello', token: 't', pid: 1, slot: null, generation: 1, addresses: [] },
      { type: 'hello', token: 't', pid: 1, slot: 0, addresses: [] },
      { type: 'hello', token: 't', pid: 1, slot: 0, generation: 1, addresses: 'x' },
      { type: 'hello', token: 't', pid: 1, slot: 0, generation: 1, addresses: [1] },
      { type: 'hello', token: 't', pid: 1, slot: 0, generation: 1, addresses: {} },
      { type: 'listeners', listeners: [null] },
      { type: 'listeners', listeners: [[]] },
      { type: 'listeners', listeners: [{ address: 'a', bound: 'b' }] },
      { type: 'listeners', listeners: [{ address: 'a', bound: 1, backlog: 1, fds: 1 }] },
      { type: 'listeners', listeners: [{ address: 'a', bound: 'b', backlog: 1, fds: 0 }] },
      { type: 'listeners', listeners: [{ address: 'a', bound: 'b', backlog: 1 }] },
      { type: 'cover', slot: -1 },
      { type: 'uncover' },
      { type: 'listeners', listeners: {} },
      { type: 'refused' },
      { type: 'failed', message: {} },
      { type: 'reload' },
      { type: 'reload', id: '1' },
      { type: 'reload-result', id: 1, ok: 'yes' },
      { type: 'reload-result', id: 1, ok: true, message: 5 },
      { type: 'status-result', status: null },
      { type: 'status-result', status: 'ok' },
      { type: 'ticket-keys' },
      { type: 'ticket-keys', keys: [] },
      { type: 'ticket-keys', keys: [KEY, KEY, KEY, KEY] },
      { type: 'ticket-keys', keys: [Buffer.alloc(32).toString('base64')] },
      { type: 'ticket-keys', keys: ['not base64!'] },
      { type: 'listeners', listeners: [], ticketKeys: 'x' },
    ];
    for (const value of bad) {
      expect(() => validate(value), JSON.stringify(value)).toThrow(ProtocolError);
      expectProtocolError([rawFrame(JSON.stringify(value))], /malformed or unknown|not an object/);
    }
  });

  it('validate accepts the sample messages', () => {
    for (const message of samples) expect(validate(JSON.parse(JSON.stringify(message)))).toEqual(message);
  });
});

describe('tokensEqual', () => {
  const token = 'f0'.repeat(32);
  it('is true only for identical tokens', () => {
    expect(tokensEqual(token, token)).toBe(true);
    expect(tokensEqual(token, `${token}`.slice(0))).toBe(true);
    expect(tokensEqual('', '')).toBe(true);
    expect(tokensEqual(token, `${token.slice(0, -1)}1`)).toBe(false);
    expect(tokensEqual(token, `1${token.slice(1)}`)).toBe(false);
    expect(tokensEqual(token, token.toUpperCase())).toBe(false);
  });

  it('is false (never throws) for tokens of different lengths', () => {
    expect(tokensEqual(token, token.slice(0, -1))).toBe(false);
    expect(tokensEqual(token, `${token}0`)).toBe(false);
    expect(tokensEqual(token, '')).toBe(false);
    expect(tokensEqual('', token)).toBe(false);
    // same number of characters, different number of UTF-8 bytes
    expect(tokensEqual('é', 'e')).toBe(false);
    expect(tokensEqual('é', 'ab')).toBe(false);
  });
});

describe('randomHex', () => {
  it('gives the bytes asked for, as hex, different every time', () => {
    const tokens = Array.from({ length: 64 }, () => randomHex(24));
    for (const token of tokens) expect(token).toMatch(/^[0-9a-f]{48}$/);
    expect(new Set(tokens).size).toBe(tokens.length);
    // every nibble value turns up: the bytes are not mostly zero
    expect(new Set(tokens.join('')).size).toBe(16);
  });
});

/**
 * The message shapes, written out independently of validate(): what the fuzz
 * run holds every yielded message to, so a validator that lets a wrong field
 * type through is caught too.
 */
function conforms(m: unknown): boolean {
  const int = (v: unknown) => typeof v === 'number' && Number.isInteger(v) && Math.abs(v) <= Number.MAX_SAFE_INTEGER;
  const str = (v: unknown) => typeof v === 'string';
  const keys = (v: unknown) => Array.isArray(v) && v.length >= 1 && v.length <= 3 &&
    v.every((k) => str(k) && Buffer.from(k, 'base64').toString('base64') === k && Buffer.from(k, 'base64').length === 48);
  if (typeof m !== 'object' || m === null || Array.isArray(m)) return false;
  const o = m as Record<string, unknown>;
  switch (o.type) {
    case 'hello':
      return str(o.token) && int(o.pid) && int(o.slot) && int(o.generation) && Array.isArray(o.addresses) && o.addresses.every(str);
    case 'listeners':
      return Array.isArray(o.listeners) && o.listeners.every((l) =>
        typeof l === 'object' && l !== null && !Array.isArray(l) && str(l.address) && str(l.bound) && int(l.backlog) &&
        int(l.fds) && l.fds >= 1 && (l.owned === undefined || typeof l.owned === 'boolean')) &&
        (o.ticketKeys === undefined || keys(o.ticketKeys));
    case 'ticket-keys':
      return keys(o.keys);
    case 'cover':
    case 'uncover':
      return int(o.slot) && (o.slot as number) >= 0;
    case 'ping':
    case 'pong':
    case 'closing':
      return true;
    case 'refused':
    case 'failed':
      return str(o.message);
    case 'ready':
    case 'drain':
    case 'status':
    case 'stop':
      return true;
    case 'reload':
      return int(o.id);
    case 'reload-result':
      return int(o.id) && typeof o.ok === 'boolean' && (o.message === undefined || str(o.message));
    case 'status-result':
      return typeof o.status === 'object' && o.status !== null;
    default:
      return false;
  }
}

describe('fuzz: a fresh decoder yields validated messages or throws ProtocolError, nothing else', () => {
  // Change SEED (or set HANDOVER_FUZZ_SEED) to explore; a failure names the
  // seed and the input index that reproduce it.
  const SEED = Number(process.env.HANDOVER_FUZZ_SEED ?? 0x5eed1);
  const RUNS = 20_000;

  function check(input: Buffer, chunks: Buffer[], where: string): { messages: Message[]; error?: unknown } {
    const result = decodeAll(chunks);
    if (result.error !== undefined && !(result.error instanceof ProtocolError)) {
      throw new Error(`${where}: threw ${String(result.error)} (not a ProtocolError) for input ${input.toString('hex')}`, {
        cause: result.error,
      });
    }
    for (const message of result.messages) {
      // every yielded message has the protocol's shape, and passes validation again as plain JSON
      expect(conforms(message), `${where}: yielded ${JSON.stringify(message)}`).toBe(true);
      expect(() => validate(JSON.parse(JSON.stringify(message))), `${where}: ${JSON.stringify(message)}`).not.toThrow();
    }
    return result;
  }

  it(`${RUNS} random and mutated inputs in random pieces (seed ${SEED})`, () => {
    const rng = fuzz.makeRng(SEED);
    let yielded = 0;
    let refused = 0;
    for (let i = 0; i < RUNS; i++) {
      const input: Buffer = fuzz.fuzzInput(rng, MAX_FRAME_BYTES);
      const where = `seed ${SEED}, input ${i}`;
      const whole = check(input, [input], where);
      const pieces = check(input, fuzz.randomChunks(rng, input), `${where} (in pieces)`);
      const bytes = check(input, [...input].map((b) => Buffer.of(b)), `${where} (byte by byte)`);
      // How the bytes are cut never changes whether they are refused, nor what
      // comes out. (A push that throws drops the frames it decoded before the
      // bad one, so with an error each cut yields a prefix of the byte-by-byte
      // messages: the connection is closed anyway.)
      expect(pieces.error === undefined, where).toBe(whole.error === undefined);
      expect(bytes.error === undefined, where).toBe(whole.error === undefined);
      if (whole.error === undefined) {
        expect(pieces.messages, where).toEqual(whole.messages);
        expect(bytes.messages, where).toEqual(whole.messages);
      } else {
        expect(bytes.messages.slice(0, whole.messages.length), where).toEqual(whole.messages);
        expect(bytes.messages.slice(0, pieces.messages.length), where).toEqual(pieces.messages);
      }
      yielded += bytes.messages.length;
      if (whole.error) refused++;
    }
    // the generator exercises both outcomes, plenty of each
    expect(yielded).toBeGreaterThan(RUNS / 10);
    expect(refused).toBeGreaterThan(RUNS / 10);
  });

  it('well-formed messages survive any cut and any company (seed-driven)', () => {
    const rng = fuzz.makeRng(SEED + 1);
    for (let i = 0; i < 2_000; i++) {
      const messages: Message[] = Array.from({ length: 1 + rng.int(4) }, () => fuzz.validMessage(rng));
      const bytes = Buffer.concat(messages.map(encode));
      const { messages: out, error } = check(bytes, fuzz.randomChunks(rng, bytes), `seed ${SEED + 1}, input ${i}`);
      expect(error, `seed ${SEED + 1}, input ${i}`).toBeUndefined();
      expect(out).toEqual(JSON.parse(JSON.stringify(messages)));
    }
  });

  it('a well-formed frame after garbage is never yielded: the connection is already dead', () => {
    const rng = fuzz.makeRng(SEED + 2);
    for (let i = 0; i < 1_000; i++) {
      const garbage = Buffer.concat([header(MAX_FRAME_BYTES + 1 + rng.int(1000)), rng.bytes(rng.int(32))]);
      const { messages, error } = decodeAll(fuzz.randomChunks(rng, Buffer.concat([garbage, encode({ type: 'stop' })])));
      expect(error).toBeInstanceOf(ProtocolError);
      expect(messages).toEqual([]);
    }
  });
});
