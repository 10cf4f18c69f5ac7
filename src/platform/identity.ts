// Privilege separation: the user and group workers run as, resolved once.
import type * as childProcess from 'node:child_process';
import * as fs from 'node:fs';

export interface Identity {
  uid: number;
  gid: number;
  /** 'nobody:nogroup (65534:65534)', for messages. */
  label: string;
}

function lookup(args: string[], what: string): number {
  try {
    // child_process only here: it costs ~6 ms of boot CPU in every process that loads options.
    const { execFileSync } = require('node:child_process') as typeof childProcess;
    return Number(execFileSync('id', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim());
  } catch {
    throw new Error(`${what} does not exist on this machine; set the \`user\`/\`group\` options to an existing account`);
  }
}

function groupId(group: string | number): number {
  if (typeof group === 'number' || /^\d+$/.test(group)) return Number(group);
  const line = fs.readFileSync('/etc/group', 'utf8').split('\n').find((l) => l.split(':')[0] === group);
  if (!line) throw new Error(`group ${JSON.stringify(group)} does not exist on this machine; set the \`group\` option to an existing group`);
  return Number(line.split(':')[2]);
}

/**
 * The identity workers run as: the given user (name or uid) with the given
 * group, or the user's primary group. Undefined user: the master's own.
 */
export function resolveIdentity(user?: string | number, group?: string | number): Identity | undefined {
  if (user === undefined && group === undefined) return undefined;
  const uid = user === undefined ? process.getuid!() : lookup(['-u', String(user)], `user ${JSON.stringify(user)}`);
  const gid = group !== undefined
    ? groupId(group)
    : user === undefined ? process.getgid!() : lookup(['-g', String(user)], `user ${JSON.stringify(user)}`);
  if ((uid !== process.getuid!() || gid !== process.getgid!()) && process.getuid!() !== 0) {
    throw new Error(`workers can run as ${user ?? uid}:${group ?? gid} only if the master runs as root (it runs as uid ${process.getuid!()})`);
  }
  return { uid, gid, label: `${user ?? uid}:${group ?? gid} (${uid}:${gid})` };
}
