/** `kessai` as a library: run the store from your own program. Gateways: `kessai/sbps`. */
export { loadConfig, ConfigError, type Config } from './config.js';
export { createRuntime, createServer, startWorker, type Runtime } from './runtime.js';
export type { PaymentProvider, GatewayFact, PaymentAction } from './payments/provider.js';
