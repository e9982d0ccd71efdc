import type { Logger } from 'pino';
import type { Config } from './config.js';
import type { Db, Engine } from './db/index.js';
import type { Metrics } from './observability.js';

/** What every service of one process shares. */
export interface Context {
  config: Config;
  db: Db;
  engine: Engine;
  log: Logger;
  metrics: Metrics;
}
