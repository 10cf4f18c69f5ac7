// Address strings: ':9222', '0.0.0.0:9223', '127.0.0.1:0', '[::1]:443',
// 'localhost:8080', a bare port number, and 'unix:/run/app.sock'.
import * as net from 'node:net';

import { AddressError } from '../errors';

export type Address =
  | {
      kind: 'tcp';
      /** The string the application registered; the key that identifies it. */
      text: string;
      /** A numeric IP; '::' (dual stack) for ':PORT'. */
      host: string;
      port: number;
      /** True for ':PORT': fall back to 0.0.0.0 where IPv6 is unavailable. */
      anyHost: boolean;
    }
  | { kind: 'unix'; text: string; path: string };

export { AddressError };

const FORMS = `expected ':PORT', 'HOST:PORT', '[IPv6]:PORT' or 'unix:/path/to.sock'`;

function parsePort(text: string, original: string): number {
  if (!/^\d{1,5}$/.test(text) || Number(text) > 65535) {
    throw new AddressError(`invalid address ${JSON.stringify(original)}: port must be 0-65535 (${FORMS})`);
  }
  return Number(text);
}

/** Parses an address; throws an AddressError that quotes it and lists the valid forms. */
export function parseAddress(input: string | number): Address {
  if (typeof input === 'number') return parseAddress(`:${input}`);
  const text = String(input);
  // a Unix path may hold spaces inside; nothing else may, and no address starts or ends with one
  if (text.trim() !== text || (!text.startsWith('unix:') && /\s/.test(text))) {
    const where = /^\s/.test(text) ? 'starts with' : /\s$/.test(text) ? 'ends with' : 'contains';
    const fixed = text.trim().startsWith('unix:') ? text.trim() : text.replace(/\s+/g, '');
    throw new AddressError(`invalid address ${JSON.stringify(text)}: it ${where} whitespace; remove it (${JSON.stringify(fixed)})`);
  }
  if (text.startsWith('unix:')) {
    const path = text.slice('unix:'.length);
    if (path === '') throw new AddressError(`invalid address ${JSON.stringify(text)}: empty Unix path (${FORMS})`);
    return { kind: 'unix', text, path };
  }
  const bracketed = /^\[([^\]]+)\]:([^:]*)$/.exec(text);
  if (bracketed) {
    if (!net.isIPv6(bracketed[1])) {
      throw new AddressError(`invalid address ${JSON.stringify(text)}: ${bracketed[1]} is not an IPv6 address (${FORMS})`);
    }
    return { kind: 'tcp', text, host: bracketed[1], port: parsePort(bracketed[2], text), anyHost: false };
  }
  const colon = text.lastIndexOf(':');
  if (colon < 0 || text.indexOf(':') !== colon) {
    throw new AddressError(`invalid address ${JSON.stringify(text)} (${FORMS})`);
  }
  const hostPart = text.slice(0, colon);
  const port = parsePort(text.slice(colon + 1), text);
  if (hostPart === '') return { kind: 'tcp', text, host: '::', port, anyHost: true };
  const host = hostPart === 'localhost' ? '127.0.0.1' : hostPart;
  if (!net.isIPv4(host)) {
    throw new AddressError(`invalid address ${JSON.stringify(text)}: ${hostPart} is not an IPv4 address or 'localhost' (${FORMS})`);
  }
  return { kind: 'tcp', text, host, port, anyHost: false };
}

/** '127.0.0.1:9222', '[::1]:443' or 'unix:/path', as a user would type it. */
export function formatBound(bound: { family: string; address?: string; port?: number; path?: string }): string {
  if (bound.family === 'unix') return `unix:${bound.path}`;
  return bound.family === 'IPv6' ? `[${bound.address}]:${bound.port}` : `${bound.address}:${bound.port}`;
}
