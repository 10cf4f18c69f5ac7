// The environment variables that make a process a worker, in a module of
// their own: the package's entry (main.ts) reads them before it loads any
// of the rest.

/** Environment variables that make a process a worker; set by the master at spawn. */
export const ENV = {
  socket: 'HANDOVER_CONTROL_SOCKET',
  token: 'HANDOVER_TOKEN',
  slot: 'HANDOVER_SLOT',
  generation: 'HANDOVER_GENERATION',
  masterPid: 'HANDOVER_MASTER_PID',
} as const;
