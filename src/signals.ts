// Signal handling shared by the master and single-process mode (invariant 9):
// reload signals are coalesced by the reloader and never fatal; a stop signal
// starts one graceful stop. Ctrl-C, GNU timeout, Docker and systemd's default
// KillMode deliver the same signal to the whole process group, often twice
// within microseconds, so a stop signal within DUPLICATE_STOP_MS of the first
// is the same stop. Only one that arrives later forces the stop.
import { performance } from 'node:perf_hooks';
import type { Logger } from './log';

/** A stop signal this soon after the first is a duplicate delivery, not a request to force. */
export const DUPLICATE_STOP_MS = 1_000;

export interface SignalActions {
  reloadSignals: NodeJS.Signals[];
  stopSignals: NodeJS.Signals[];
  log: Logger;
  /** True once a stop has begun: reload signals are then ignored (and say so). */
  stopping(): boolean;
  reload(): void;
  stop(): void;
  force(): void;
  /** Master only: SIGTTIN adds a worker, SIGTTOU removes one (as gunicorn and Unicorn do). */
  scale?(delta: 1 | -1): void;
}

/** Installs the handlers; returns a function that removes them. */
export function handleSignals(actions: SignalActions, now: () => number = () => performance.now()): () => void {
  const installed: [NodeJS.Signals, () => void][] = [];
  const on = (signal: NodeJS.Signals, handler: () => void) => {
    process.on(signal, handler);
    installed.push([signal, handler]);
  };
  for (const signal of actions.reloadSignals) {
    on(signal, () => {
      if (actions.stopping()) return actions.log.info(`${signal}: reload ignored, stopping`);
      actions.log.info(`${signal}: reload requested`);
      actions.reload();
    });
  }
  if (actions.scale) {
    const scale = actions.scale;
    on('SIGTTIN', () => {
      actions.log.info('SIGTTIN: one more worker');
      if (!actions.stopping()) scale(1);
    });
    on('SIGTTOU', () => {
      actions.log.info('SIGTTOU: one worker fewer');
      if (!actions.stopping()) scale(-1);
    });
  }
  let firstStop: number | undefined;
  let forced = false;
  for (const signal of actions.stopSignals) {
    on(signal, () => {
      const at = now();
      if (firstStop === undefined) {
        firstStop = at;
        actions.log.info(`${signal}: stop requested`);
        return actions.stop();
      }
      if (forced) return;
      if (at - firstStop < DUPLICATE_STOP_MS) {
        return actions.log.info(`${signal}: again within ${DUPLICATE_STOP_MS} ms (delivered to the whole process group); one stop`);
      }
      forced = true;
      actions.log.warn(`${signal}: second stop request: stopping now without waiting for in-flight requests`);
      actions.force();
    });
  }
  return () => {
    for (const [signal, handler] of installed) process.removeListener(signal, handler);
  };
}
