import type { FastifyInstance } from 'fastify';
import { sandboxSecret } from './commerce/shops.js';
import type { Config } from './config.js';
import type { Context } from './context.js';
import { migrateToLatest, openDatabase } from './db/index.js';
import { buildApp } from './http/app.js';
import { createMailer, type Mailer } from './integrations/mail/index.js';
import { Dispatcher, type DispatcherOptions } from './jobs/dispatcher.js';
import { JobRegistry } from './jobs/registry.js';
import { Scheduler, type Schedule } from './jobs/schedules.js';
import { createLogger, Metrics } from './observability.js';
import { paymentJobKinds } from './payments/jobs.js';
import { ProviderRegistry } from './payments/provider.js';
import type { Payments } from './payments/service.js';
import { testpayProvider } from './payments/testpay.js';
import { testpaySandbox } from './sandbox/testpay.js';

/** Recurring work, in Asia/Tokyo time; each tick is an outbox job, so its outcome is recorded. */
export const SCHEDULES: Schedule[] = [
  { name: 'reconcile-payments', cron: '*/10 * * * *', kind: 'payments.reconcile' },
  { name: 'expire-reservations', cron: '*/5 * * * *', kind: 'orders.expire-due' },
];

export interface Runtime {
  ctx: Context;
  payments: Payments;
  jobs: JobRegistry;
  mailer: Mailer;
  close(): Promise<void>;
}

/**
 * Wires one process: database, logger, metrics, gateways, job kinds. The embedded SQLite mode
 * migrates on start; PostgreSQL deployments run `kessai migrate` once per release.
 */
export async function createRuntime(config: Config, opts: { logDestination?: NodeJS.WritableStream } = {}): Promise<Runtime> {
  const log = createLogger(config.logLevel, opts.logDestination);
  const handle = openDatabase(config.databaseUrl);
  if (handle.engine === 'sqlite') await migrateToLatest(handle.db);
  const ctx: Context = { config, db: handle.db, engine: handle.engine, log, metrics: new Metrics() };

  const providers = new ProviderRegistry();
  if (config.sandbox) providers.register(testpayProvider({ baseUrl: `${config.publicUrl}/sandbox/testpay` }));
  const payments: Payments = { ctx, providers };

  const mailer = createMailer({ smtpUrl: config.smtpUrl, from: config.mailFrom, folder: `${config.dataDir}/mail` });
  const jobs = new JobRegistry();
  for (const kind of paymentJobKinds(payments, mailer)) jobs.register(kind);

  return {
    ctx,
    payments,
    jobs,
    mailer,
    async close() {
      mailer.close();
      await handle.close();
    },
  };
}

/** The HTTP server of a runtime; with the sandbox on, the simulated gateways are mounted under /sandbox. */
export async function createServer(rt: Runtime): Promise<FastifyInstance> {
  const plugins = rt.ctx.config.sandbox
    ? [
        async (app: FastifyInstance) => {
          await app.register(testpaySandbox({ secret: sandboxSecret(rt.ctx.config, 'testpay'), log: rt.ctx.log }), { prefix: '/sandbox/testpay' });
        },
      ]
    : [];
  return buildApp({ payments: rt.payments, plugins });
}

export function startWorker(rt: Runtime, opts: DispatcherOptions = {}): { stop(): Promise<void> } {
  const dispatcher = new Dispatcher(rt.ctx, rt.jobs, opts);
  const scheduler = new Scheduler(rt.ctx, SCHEDULES);
  dispatcher.start();
  scheduler.start();
  return {
    async stop() {
      scheduler.stop();
      await dispatcher.stop();
    },
  };
}
