// Public API only. The reference keeps Node's types (http.RequestListener,
// NodeJS.Signals) resolvable in a project whose tsconfig lists no `types`
// (the default since TypeScript 5.9's `tsc --init`).
/// <reference types="node" preserve="true" />
export { Server, listenAndServe, listenAndServeTLS, isMaster, isWorker, isServing } from './server';
export { ready } from './run/ready';
export { migrate, type MigratableWebSocket } from './worker/migrate';
export { adoptWebSocket, type AdoptingWebSocketServer } from './worker/adopt';
export * from './errors';
export type { Handler, HandlerOrModule, ServerEvents } from './server';
export type { ServerOptions } from './options';
export type { Logger } from './log';
export type { ConnectionTally, MasterStatus } from './protocol';
