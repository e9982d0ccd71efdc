import { pino, type Logger } from 'pino';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Paths that may carry secrets: never written to a log. */
export const REDACT_PATHS = [
  'req.headers.authorization',
  'req.headers.cookie',
  'headers.authorization',
  '*.password',
  '*.secret',
  '*.secretKey',
  '*.hashKey',
  '*.webhookSecret',
  '*.masterKey',
  '*.token',
];

export function createLogger(level: string, destination?: NodeJS.WritableStream): Logger {
  return pino(
    { level, redact: { paths: REDACT_PATHS, censor: '[redacted]' }, base: { app: 'kessai' } },
    destination ?? pino.destination({ fd: 2, sync: false }),
  );
}

/** One registry per process; metric names are the operator's alerting contract (docs/operations.md). */
export class Metrics {
  readonly registry = new Registry();
  readonly httpDuration = new Histogram({
    name: 'kessai_http_request_duration_seconds',
    help: 'HTTP request duration by route and status',
    labelNames: ['method', 'route', 'status'],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [this.registry],
  });
  readonly jobsProcessed = new Counter({
    name: 'kessai_jobs_processed_total',
    help: 'Job attempts by kind and outcome (succeeded, failed, dead)',
    labelNames: ['kind', 'outcome'],
    registers: [this.registry],
  });
  readonly jobsDead = new Counter({
    name: 'kessai_jobs_dead_total',
    help: 'Jobs that exhausted their attempts and need an operator',
    labelNames: ['kind'],
    registers: [this.registry],
  });
  readonly paymentFacts = new Counter({
    name: 'kessai_payment_facts_total',
    help: 'Gateway facts applied, by provider, fact type and outcome',
    labelNames: ['provider', 'fact', 'outcome'],
    registers: [this.registry],
  });
  readonly paymentInboxLag = new Histogram({
    name: 'kessai_payment_inbox_lag_seconds',
    help: 'Time from recording a verified notification (and answering the gateway) to applying it',
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
    registers: [this.registry],
  });
  readonly paymentInboxApplying = new Counter({
    name: 'kessai_payment_inbox_applying_seconds_total',
    help: 'Time the in-process notification inbox spent applying recorded events (on SQLite the server thread answers nothing meanwhile)',
    registers: [this.registry],
  });
  readonly checkouts = new Counter({
    name: 'kessai_checkouts_total',
    help: 'Checkouts by outcome (created, out_of_stock, invalid)',
    labelNames: ['outcome'],
    registers: [this.registry],
  });
  readonly alertsOpen = new Gauge({
    name: 'kessai_alerts_open',
    help: 'Unresolved operator alerts',
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'kessai_' });
  }
}
