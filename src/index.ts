// Public API only.
export { Server, listenAndServe, listenAndServeTLS, isMaster, isWorker } from './server';
export type { Handler } from './server';
export type { ServerOptions } from './options';
export type { Logger } from './log';
export type { MasterStatus } from './protocol';
