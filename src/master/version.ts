// Which code a worker runs (invariant 20). A worker works out its version when
// it starts, from the code on disk at that moment, and says it in its hello;
// the master records the first version each generation reports and refuses
// a later worker of that generation whose code differs. That is what keeps a
// respawn, recycle or scale-up after a rollback from silently serving the
// code of the deploy that was rolled back: the code on disk is the newer one,
// so the slot stays vacant (covered by a sibling) and the log and status say
// why, until the code on disk is that generation's again or a reload runs.
import * as fs from 'node:fs';
import * as path from 'node:path';

/** The environment variable that names the version, as many platforms set it. */
export const VERSION_ENV = 'APP_VERSION';

/** The version of the nearest package.json above `dir`, if there is one with a version. */
function packageVersion(dir: string): string | undefined {
  for (let at = dir; ; at = path.dirname(at)) {
    try {
      const version = (JSON.parse(fs.readFileSync(path.join(at, 'package.json'), 'utf8')) as { version?: unknown }).version;
      return typeof version === 'string' ? version : undefined;
    } catch {
      // no package.json here (or not JSON): look further up
    }
    if (path.dirname(at) === at) return undefined;
  }
}

/**
 * This process's code version: `option` (the `version` option), else
 * $APP_VERSION, else the program's package.json version and a digest of the
 * entry file's contents (`1.4.0+3f9a0c1b2d4e`, contentDigest()). The digest sees the entry file
 * only: a deploy that changes other modules alone needs APP_VERSION (a commit
 * id) or the option to be told apart.
 */
export function codeVersion(option?: string, env: NodeJS.ProcessEnv = process.env, entry = process.argv[1]): string {
  if (option) return option;
  if (env[VERSION_ENV]) return env[VERSION_ENV];
  if (!entry) return 'unknown';
  const file = path.resolve(entry);
  return remembered.get(file) ?? fileVersion(file);
}

/**
 * 48 bits of a 64-bit hash of `bytes` (two murmur3-style lanes over 32-bit
 * words), as 12 hex digits: a label that tells versions apart, not a
 * cryptographic digest. Every worker computes it as it boots, and SHA-256
 * meant loading node:crypto and OpenSSL's first digest, about 5 ms of CPU per
 * worker per reload (issue 24); this takes microseconds for a usual entry file.
 */
export function contentDigest(bytes: Buffer): string {
  const aligned = bytes.byteOffset % 4 === 0 ? bytes : Buffer.from(bytes);
  const words = new Uint32Array(aligned.buffer, aligned.byteOffset, aligned.length >>> 2);
  let h1 = 0x9747b28c ^ bytes.length;
  let h2 = 0x85ebca6b ^ bytes.length;
  const mix = (h: number, k: number, c1: number, c2: number): number => {
    k = Math.imul(k, c1);
    k = Math.imul((k << 15) | (k >>> 17), c2);
    h ^= k;
    h = (h << 13) | (h >>> 19);
    return (Math.imul(h, 5) + 0xe6546b64) | 0;
  };
  for (let i = 0; i < words.length; i++) {
    h1 = mix(h1, words[i]!, 0xcc9e2d51, 0x1b873593);
    h2 = mix(h2, words[i]!, 0x1b873593, 0xcc9e2d51);
  }
  let tail = 0;
  for (let i = words.length * 4; i < bytes.length; i++) tail = (tail << 8) | bytes[i]!;
  h1 = mix(h1, tail, 0xcc9e2d51, 0x1b873593);
  h2 = mix(h2, tail ^ 0x5bd1e995, 0x1b873593, 0xcc9e2d51);
  const final = (h: number): number => {
    h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
    h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
    return (h ^ (h >>> 16)) >>> 0;
  };
  const a = final(h1 ^ h2);
  const b = final(h2 + a);
  return (b & 0xffff).toString(16).padStart(4, '0') + a.toString(16).padStart(8, '0');
}

function fileVersion(file: string): string {
  let digest: string;
  try {
    digest = contentDigest(fs.readFileSync(file));
  } catch {
    return 'unknown';
  }
  const pkg = packageVersion(path.dirname(file));
  return pkg ? `${pkg}+${digest}` : digest;
}

/** Entry files' versions as read when the worker started them (rememberEntry), for codeVersion. */
const remembered = new Map<string, string>();

/**
 * Reads `entry`'s version now, as the worker starts it, for codeVersion()
 * later. The hello comes only after the program's start-up, and a deploy
 * landing in between would otherwise label a worker with code it does not
 * run (invariant 20).
 */
export function rememberEntry(entry: string | undefined): void {
  if (!entry) return;
  const file = path.resolve(entry);
  remembered.set(file, fileVersion(file));
}

/** The version each generation runs, as its first worker reported it. */
export class GenerationVersions {
  private readonly versions = new Map<number, string>();

  /**
   * Records a worker's version. If its generation already runs other code,
   * says so: `refuse` when a sibling can cover its slot meanwhile; without
   * one (workers: 1) refusing would leave the slot unserved, so it serves,
   * labelled with its own version, and the message says that loudly.
   */
  check(generation: number, slot: number, version: string, coverable: boolean): { refuse: boolean; message: string } | undefined {
    const expected = this.versions.get(generation);
    if (expected === undefined) {
      this.versions.set(generation, version);
      return undefined;
    }
    if (expected === version) return undefined;
    const what = `slot ${slot} of generation ${generation} must run version ${expected}, but the code on disk is now version ${version} ` +
      `(a deploy after generation ${generation}, rolled back?)`;
    const fix = `put generation ${generation}'s code back, or reload to serve version ${version} everywhere`;
    return coverable
      ? { refuse: true, message: `${what}; not serving it: the slot stays covered by a sibling. To end this, ${fix}` }
      : { refuse: false, message: `${what}; no sibling can cover the slot, so it serves version ${version} meanwhile. To end this, ${fix}` };
  }

  /** True if `version` is what `generation` runs (or it has none recorded). */
  matches(generation: number, version: string | undefined): boolean {
    const expected = this.versions.get(generation);
    return expected === undefined || expected === version;
  }

  /** The versions of `generations` that have one, for status. */
  of(generations: Iterable<number>): Record<number, string> {
    const known: Record<number, string> = {};
    for (const g of generations) {
      const version = this.versions.get(g);
      if (version !== undefined) known[g] = version;
    }
    return known;
  }

  /** Forgets generations that no live worker runs, except `keep` (the committed one). */
  prune(live: Iterable<number>, keep: number): void {
    const alive = new Set(live);
    for (const generation of this.versions.keys()) {
      if (generation !== keep && !alive.has(generation)) this.versions.delete(generation);
    }
  }
}
