// What cannot move to the new generation (TLS, HTTP/2) still drains, but
// the closes are spread over `closeSpread` ms: each connection gets its own
// moment, so its clients reconnect (a full TLS handshake each, before session
// resumption) over that window and not in the same second (Figma's
// 2020-04-29 postmortem; HAProxy's close-spread-time, Envoy's gradual drain).
import type * as http from 'node:http';
import type * as net from 'node:net';

/**
 * Calls each of `closes` at its own moment between `fromMs` and `windowMs`:
 * of n, the i-th at a random point of the i-th n-th of that span, so the
 * moments cover it evenly whatever n is. With a window of 0, all at once.
 * Returns what cancels the closes still to come (a parked generation put back
 * by a rollback).
 */
export function spreadOver(windowMs: number, closes: (() => void)[], fromMs = 0): () => void {
  if (windowMs <= 0) {
    closes.forEach((close) => close());
    return () => {};
  }
  const n = closes.length;
  const from = Math.min(fromMs, windowMs);
  // unref: the connections themselves keep the draining process up.
  const timers = closes.map((close, i) => setTimeout(close, from + ((i + Math.random()) * (windowMs - from)) / n).unref());
  return () => timers.forEach(clearTimeout);
}

/**
 * An idle HTTPS connection is closed no sooner than this after the drain
 * began (at most half the window): a keep-alive client that is still sending
 * requests sends one meanwhile, which gets `Connection: close` instead, so a
 * FIN never crosses a request it was about to send on a busy connection.
 */
export const IDLE_CLOSE_GUARD_MS = 1_000;

type Parser = { socket?: net.Socket };

/**
 * The HTTP/1 connections Node itself counts as idle at a request boundary
 * (no request being read): the list `server.closeIdleConnections()` uses,
 * not public API, so found by the symbol's name. Undefined where it is missing.
 */
function idleByNode(server: net.Server): Set<net.Socket> | undefined {
  const key = Object.getOwnPropertySymbols(server).find((s) => s.description === 'http.server.connections');
  const list = key && (server as unknown as Record<symbol, { idle?: () => Parser[] }>)[key];
  if (typeof list?.idle !== 'function') return undefined;
  return new Set(list.idle().map((p) => p.socket).filter((s): s is net.Socket => s !== undefined));
}

/**
 * For each of `sockets` (HTTP/1 on `server`), a close for its moment: a FIN
 * (on TLS, after close_notify) if it is idle: no response pending, and
 * nothing read since the drain began, when it was at a request boundary. One
 * with a request is left alone: the drain makes that request's response say
 * `Connection: close`, and Node ends the connection after it.
 */
export function closesWhenIdle(server: net.Server, sockets: net.Socket[]): (() => void)[] {
  const idle = idleByNode(server);
  return sockets.map((socket) => {
    // Not reading a request: on Node's list, or fresh (one that has sent none is not on it).
    const atBoundary = idle === undefined || idle.has(socket) || socket.bytesRead === 0;
    const bytesRead = socket.bytesRead;
    return () => {
      const response = (socket as net.Socket & { _httpMessage?: http.ServerResponse | null })._httpMessage;
      if (atBoundary && !response && socket.bytesRead === bytesRead) socket.end();
    };
  });
}
