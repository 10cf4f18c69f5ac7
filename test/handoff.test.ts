// The hand-off protocol (src/worker/handoff.ts) with fakes: an in-memory
// wire between a sender and a receiver, and connections that record who owns
// them. Every path (taken, refused, no answer, new worker gone before or
// after it answered, old worker gone mid-hand-off, a byte read meanwhile)
// must end with exactly one owner, and the new worker must never read a
// connection the old one still reads (invariant 15).
import * as fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { type Chunk, type Held, HandoffReceiver, HandoffSender, type Item, type Wire } from '../src/worker/handoff';

/** One end of an in-memory stream that carries fds with its bytes. */
class FakeWire implements Wire {
  peer?: FakeWire;
  private readonly inbox: Chunk[] = [];
  private wake?: () => void;
  ended = false;
  /** Frames written by this end, decoded (for the tests to look at). */
  readonly written: { type: string; batch?: number }[] = [];
  /** When set, writes never complete (a peer that stopped reading). */
  stall = false;

  async write(data: Buffer, fds: number[]): Promise<void> {
    if (this.ended || !this.peer || this.peer.ended) throw Object.assign(new Error('write EPIPE'), { code: 'EPIPE' });
    if (this.stall) return new Promise(() => {});
    this.written.push(JSON.parse(data.subarray(4).toString()));
    this.peer.deliver({ data, fds });
  }

  deliver(chunk: Chunk): void {
    this.inbox.push(chunk);
    this.wake?.();
  }

  async read(): Promise<Chunk> {
    while (this.inbox.length === 0 && !this.ended) await new Promise<void>((resolve) => (this.wake = resolve));
    return this.inbox.shift() ?? { data: Buffer.alloc(0), fds: [] };
  }

  /** This end goes away: the peer reads the end of the stream. */
  close(): void {
    this.ended = true;
    this.wake?.();
    if (this.peer && !this.peer.ended) this.peer.deliver({ data: Buffer.alloc(0), fds: [] });
  }
}

function pair(): [FakeWire, FakeWire] {
  const a = new FakeWire();
  const b = new FakeWire();
  a.peer = b;
  b.peer = a;
  return [a, b];
}

/** A connection: who holds it, who reads it. The fd is a real one (/dev/null), as refused fds get closed. */
class Conn {
  readonly fd = fs.openSync('/dev/null', 'r');
  owners = new Set<'old' | 'new'>(['old']);
  reading = new Set<'old' | 'new'>(['old']);
  bytesRead = 0;
  readerConflicts = 0;
  outcome?: string;

  read(by: 'old' | 'new'): void {
    this.reading.add(by);
    if (this.reading.size > 1) this.readerConflicts++;
  }
}

const TOKEN = 'a'.repeat(48);

/** A sender on one end and a receiver (adopting `conns`) on the other; `refuse` makes the receiver say no. */
function setUp(options: { timeoutMs?: number; refuse?: (item: Item) => string | undefined; token?: string } = {}) {
  const [oldEnd, newEnd] = pair();
  const held = new Map<number, Conn>();
  const byFd = new Map<number, Conn>();
  const sender = new HandoffSender({ path: '/fake', token: options.token ?? TOKEN }, {
    connect: async () => oldEnd,
    timeoutMs: options.timeoutMs ?? 10_000,
  });
  const receiver = new HandoffReceiver(newEnd, TOKEN, (item: Item, fd: number): Held | string => {
    const conn = byFd.get(fd)!;
    const refused = options.refuse?.(item);
    if (refused) return refused;
    held.set(fd, conn);
    conn.owners.add('new'); // holds a copy, not reading
    return {
      commit: () => conn.read('new'),
      cancel: () => conn.owners.delete('new'),
    };
  });
  const offer = (conn: Conn) => new Promise<void>((resolve) => {
    byFd.set(conn.fd, conn);
    conn.reading.delete('old'); // stopped reading before the offer
    const bytesAtOffer = conn.bytesRead;
    sender.offer({
      item: { address: '127.0.0.1:1', kind: 'http' },
      fd: conn.fd,
      check: () => (conn.bytesRead !== bytesAtOffer ? 'it read bytes during the hand-off' : undefined),
      moved: () => {
        conn.owners.delete('old');
        conn.outcome = 'moved';
        resolve();
      },
      kept: (reason) => {
        conn.outcome = reason;
        conn.read('old');
        resolve();
      },
    });
  });
  return { oldEnd, newEnd, sender, receiver, offer };
}

function exactlyOneOwner(conn: Conn): 'old' | 'new' {
  expect([...conn.owners]).toHaveLength(1);
  expect(conn.readerConflicts).toBe(0);
  return [...conn.owners][0];
}

/** Polls until `check` holds (the receiver acts on its inbox asynchronously); fails after a generous deadline. */
async function until(check: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

describe('hand-off protocol: every path ends with exactly one owner', () => {
  it('taken: the old worker closes its copy, then the new worker reads', async () => {
    const { offer, newEnd, oldEnd } = setUp();
    const conns = [new Conn(), new Conn(), new Conn()];
    await Promise.all(conns.map(offer));
    await until(() => conns.every((c) => c.reading.has('new')), 'the new worker to read them');
    for (const c of conns) {
      expect(c.outcome).toBe('moved');
      expect(exactlyOneOwner(c)).toBe('new');
      expect(c.reading).toEqual(new Set(['new']));
    }
    expect(oldEnd.written.map((m) => m.type)).toEqual(['hello', 'offer', 'commit']); // one batch for one tick's offers
    expect(newEnd.written.map((m) => m.type)).toEqual(['taken']);
  });

  it('no answer in time: the old worker resumes it and the new worker closes its copy on the cancel', async () => {
    const { offer, newEnd, receiver } = setUp({ timeoutMs: 50 });
    newEnd.stall = true; // the new worker holds the fds but its answer never leaves
    const conn = new Conn();
    await offer(conn);
    expect(conn.outcome).toMatch(/did not answer within 50 ms/);
    await until(() => !conn.owners.has('new'), 'the new worker to close its copy on the cancel');
    expect(exactlyOneOwner(conn)).toBe('old');
    void receiver;
  });

  it('the new worker gone before it answers: the old worker keeps it', async () => {
    const { offer, newEnd } = setUp();
    newEnd.ended = true; // its process died: nothing reads or answers
    const conn = new Conn();
    const offered = offer(conn);
    newEnd.peer!.deliver({ data: Buffer.alloc(0), fds: [] }); // the kernel ends the old worker's stream
    await offered;
    expect(conn.outcome).toMatch(/^the new worker is gone/);
    expect(exactlyOneOwner(conn)).toBe('old');
  });

  it('the new worker unreachable (connect fails): the old worker keeps it, and later offers fail at once', async () => {
    const sender = new HandoffSender({ path: '/gone', token: TOKEN }, {
      connect: async () => {
        throw Object.assign(new Error('connect ECONNREFUSED /gone'), { code: 'ECONNREFUSED' });
      },
    });
    const outcomes: string[] = [];
    const offer = () => new Promise<void>((resolve) => sender.offer({
      item: { address: 'a', kind: 'http' },
      fd: -1,
      check: () => undefined,
      moved: () => resolve(void outcomes.push('moved')),
      kept: (reason) => resolve(void outcomes.push(reason)),
    }));
    await offer();
    await offer();
    expect(outcomes).toEqual(['the new worker is gone (ECONNREFUSED)', 'the new worker is gone (ECONNREFUSED)']);
  });

  it('the old worker gone after the new one answered, before its decision: the new worker adopts (the old copies died with it)', async () => {
    const { offer, oldEnd, receiver } = setUp();
    oldEnd.stall = false;
    const conn = new Conn();
    // The old worker dies right after its offer: it never reads `taken`.
    const reading = oldEnd.read.bind(oldEnd);
    oldEnd.read = () => new Promise(() => {});
    void offer(conn);
    await until(() => conn.owners.has('new'), 'the new worker to hold a copy');
    expect(conn.owners).toEqual(new Set(['old', 'new'])); // the new one holds a copy, not reading
    expect(conn.reading.has('new')).toBe(false);
    conn.owners.delete('old'); // its process is gone, and its copy with it
    oldEnd.close();
    await receiver.done;
    expect(exactlyOneOwner(conn)).toBe('new');
    expect(conn.reading).toEqual(new Set(['new']));
    void reading;
  });

  it('a byte read during the hand-off: it stays with the old worker and its fd is never sent', async () => {
    const { offer, oldEnd } = setUp();
    const conn = new Conn();
    const offered = offer(conn);
    conn.bytesRead++; // before the batch goes out
    await offered;
    expect(conn.outcome).toBe('it read bytes during the hand-off');
    expect(oldEnd.written.filter((m) => m.type === 'offer')).toHaveLength(0);
    expect(exactlyOneOwner(conn)).toBe('old');
  });

  it('refused by the new worker: it stays with the old one; the others of the batch move', async () => {
    let n = 0;
    const { offer } = setUp({ refuse: () => (n++ === 1 ? 'nothing listens here' : undefined) });
    const conns = [new Conn(), new Conn(), new Conn()];
    await Promise.all(conns.map(offer));
    await until(() => conns[0].reading.has('new') && conns[2].reading.has('new'), 'the new worker to read the two it took');
    expect(conns.map((c) => c.outcome)).toEqual(['moved', 'the new worker refused it: nothing listens here', 'moved']);
    expect(conns.map(exactlyOneOwner)).toEqual(['new', 'old', 'new']);
  });

  it('a sender without the token is ignored: nothing is adopted, the old worker keeps it', async () => {
    const { offer } = setUp({ token: 'b'.repeat(48), timeoutMs: 50 });
    const conn = new Conn();
    await offer(conn);
    expect(conn.outcome).toMatch(/gone|did not answer/);
    expect(exactlyOneOwner(conn)).toBe('old');
  });

  it('600 connections go in batches of at most 253 fds, one exchange at a time', async () => {
    const { offer, oldEnd } = setUp();
    const conns = Array.from({ length: 600 }, () => new Conn());
    await Promise.all(conns.map(offer));
    await until(() => conns.every((c) => c.reading.has('new')), 'the new worker to read all 600');
    expect(conns.every((c) => exactlyOneOwner(c) === 'new')).toBe(true);
    expect(oldEnd.written.map((m) => m.type)).toEqual(['hello', 'offer', 'commit', 'offer', 'commit', 'offer', 'commit']);
    for (const c of conns) fs.closeSync(c.fd);
  });
});
