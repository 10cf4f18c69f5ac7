// Signal handling shared by the master and single-process mode (invariant 9):
// reload signals are coalesced by the reloader and never fatal; a stop signal
// starts one graceful stop. Ctrl-C, GNU timeout, Docker and systemd's default
// KillMode deliver the same signal to the whole process group, often twice
// within microseconds, so a stop signal within DUPLICATE_STOP_MS of the first
// is the same stop. Only one that arrives later forces the stop.
import type { Logger } from './log';

/**
 * Signals an operator (or a tool built for nginx, unicorn or HAProxy) is
 * likely to send. Each one either has a job here or is logged and ignored:
 * none ends a master or a single process by its default action. (SIGPIPE
 * and SIGWINCH never do: Node ignores SIGPIPE, SIGWINCH is ignored by default.)
 */
export const OPERATOR_SIGNALS: NodeJS.Signals[] = [
  'SIGHUP', 'SIGUSR1', 'SIGUSR2', 'SIGTERM', 'SIGINT', 'SIGQUIT', 'SIGTTIN', 'SIGTTOU', 'SIGWINCH', 'SIGPIPE',
];

/** A stop signal this soon after the first is a duplicate delivery, not a request to force. */
export const DUPLICATE_STOP_MS = 1_000;

export interface SignalActions {
  reloadSignals: NodeJS.Signals[];
  stopSignals: NodeJS.Signals[];
  /** Upgrade in place (master); without `upgrade` they reload, which in single mode starts a fresh image anyway. */
  upgradeSignals?: NodeJS.Signals[];
  log: Logger;
  /** True once a stop has begun: reload signals are then ignored (and say so). */
  stopping(): boolean;
  reload(): void;
  stop(): void;
  force(): void;
  /** Master only: SIGTTIN adds a worker, SIGTTOU removes one (as gunicorn and Unicorn do). */
  scale?(delta: 1 | -1): void;
  /** Master only: exec a fresh image of the master in the same pid. */
  upgrade?(): void;
}

/**
 * The signals a worker ignores: they are meant for its master (which ignores
 * SIGQUIT too), and may reach the worker as well (process group, cgroup).
 */
export function masterOnlySignals(options: { reloadSignals: NodeJS.Signals[]; upgradeSignals: NodeJS.Signals[] }): NodeJS.Signals[] {
  return [...options.reloadSignals, ...options.upgradeSignals, 'SIGTTIN', 'SIGTTOU', 'SIGQUIT'];
}

/**
 * Installs the handlers; returns a function that removes them. (The global
 * `performance`, loaded when first read: workers load this module but never
 * call this, and importing node:perf_hooks would cost each about 1 ms of CPU.)
 */
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
  for (const signal of actions.upgradeSignals ?? []) {
    const upgrade = actions.upgrade;
    on(signal, () => {
      if (actions.stopping()) return actions.log.info(`${signal}: ${upgrade ? 'upgrade' : 'reload'} ignored, stopping`);
      actions.log.info(`${signal}: ${upgrade ? 'upgrade in place' : 'reload'} requested`);
      (upgrade ?? actions.reload)();
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
  const handled = new Set(installed.map(([signal]) => signal));
  for (const signal of OPERATOR_SIGNALS) {
    if (handled.has(signal) || signal === 'SIGPIPE' || signal === 'SIGWINCH') continue;
    on(signal, () => actions.log.warn(`${signal}: ignored (it has no job here; the README's signal table lists what each signal does)`));
  }
  return () => {
    for (const [signal, handler] of installed) process.removeListener(signal, handler);
  };
}
