import type { FastifyInstance } from 'fastify';
import { accountJobKinds } from './accounts/jobs.js';
import { CHART_SCHEDULE, chartJobKinds } from './commerce/chart-jobs.js';
import { chekichaLinkJob } from './commerce/chekicha-link.js';
import { atoneSandboxKeys, CHEKICHA_SANDBOX_PARTNER, DEFAULT_SHOP_ID, komojuSandboxKeys, SBPS_SANDBOX_MERCHANT, sandboxSecret } from './commerce/shops.js';
import type { Config } from './config.js';
import type { Context } from './context.js';
import { migrateToLatest, openDatabase } from './db/index.js';
import { buildApp } from './http/app.js';
import { createMailer, type Mailer } from './integrations/mail/index.js';
import { Dispatcher, type DispatcherOptions } from './jobs/dispatcher.js';
import { MAIL_LOG_SCHEDULE, mailJobKinds } from './jobs/mail.js';
import { JobRegistry } from './jobs/registry.js';
import { Scheduler, type Schedule } from './jobs/schedules.js';
import { createLogger, Metrics } from './observability.js';
import { NotificationInbox } from './payments/inbox.js';
import { paymentJobKinds } from './payments/jobs.js';
import { atoneProvider } from './payments/atone.js';
import { settleJobKind } from './payments/claims.js';
import { editJobKinds } from './payments/edits.js';
import { subscriptionJobKinds } from './payments/subscriptions.js';
import { komojuProvider } from './payments/komoju.js';
import { ProviderRegistry } from './payments/provider.js';
import type { Payments } from './payments/service.js';
import { sbpsProvider } from './payments/sbps.js';
import { testpayProvider } from './payments/testpay.js';
import { atoneSandbox } from './sandbox/atone.js';
import { chekichaSandbox } from './sandbox/chekicha.js';
import { geocoderSandbox } from './sandbox/geocoder.js';
import { komojuSandbox } from './sandbox/komoju.js';
import { mailSandbox } from './sandbox/mail.js';
import { sbpsSandbox } from './sandbox/sbps.js';
import { testpaySandbox } from './sandbox/testpay.js';

/** Recurring work, in Asia/Tokyo time; each tick is an outbox job, so its outcome is recorded. */
export const SCHEDULES: Schedule[] = [
  { name: 'reconcile-payments', cron: '*/10 * * * *', kind: 'payments.reconcile' },
  { name: 'expire-reservations', cron: '*/5 * * * *', kind: 'orders.expire-due' },
  { name: 'apply-received-notifications', cron: '* * * * *', kind: 'payments.apply-received' },
  { name: 'sweep-accounts', cron: '17 * * * *', kind: 'accounts.sweep' },
  CHART_SCHEDULE,
  { name: 'renew-subscriptions', cron: '0 6 * * *', kind: 'subscriptions.renew' },
  MAIL_LOG_SCHEDULE,
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
  const handle = openDatabase(config.databaseUrl, {
    onIdleError: (err) => log.warn({ err }, 'idle PostgreSQL connection lost; the pool opens a new one'),
    onCheckpointError: (message) => log.error(message),
  });
  if (handle.engine === 'sqlite') await migrateToLatest(handle.db);
  const ctx: Context = { config, db: handle.db, engine: handle.engine, log, metrics: new Metrics() };

  const providers = new ProviderRegistry();
  providers.register(sbpsProvider());
  providers.register(komojuProvider());
  providers.register(atoneProvider());
  if (config.sandbox) providers.register(testpayProvider({ baseUrl: `${config.publicUrl}/sandbox/testpay` }));
  const payments: Payments = { ctx, providers, inbox: new NotificationInbox(ctx) };

  const mailer = createMailer({ smtpUrl: config.smtpUrl, from: config.mailFrom, folder: `${config.dataDir}/mail` });
  const jobs = new JobRegistry();
  for (const kind of paymentJobKinds(payments)) jobs.register(kind);
  jobs.register(settleJobKind(payments));
  for (const kind of [...editJobKinds(payments), ...subscriptionJobKinds(payments)]) jobs.register(kind);
  for (const kind of accountJobKinds(ctx)) jobs.register(kind);
  jobs.register(chekichaLinkJob);
  for (const kind of chartJobKinds()) jobs.register(kind);
  for (const kind of mailJobKinds(mailer, { maxAttempts: config.mailMaxAttempts })) jobs.register(kind);

  return {
    ctx,
    payments,
    jobs,
    mailer,
    async close() {
      await payments.inbox.close();
      mailer.close();
      await handle.close();
    },
  };
}

/** The simulated outside world, mounted under /sandbox: it knows the same derived secrets as the store. */
export function sandboxPlugins(config: Config, log: Runtime['ctx']['log']): ((app: FastifyInstance) => Promise<void>)[] {
  return [
    async (app) => {
      await app.register(testpaySandbox({ secret: sandboxSecret(config, 'testpay'), log }), { prefix: '/sandbox/testpay' });
      const merchant = {
        ...SBPS_SANDBOX_MERCHANT,
        hashKey: sandboxSecret(config, 'sbps'),
        basicAuth: { user: `${SBPS_SANDBOX_MERCHANT.merchantId}${SBPS_SANDBOX_MERCHANT.serviceId}`, password: sandboxSecret(config, 'sbps-api') },
      };
      await app.register(sbpsSandbox({ merchants: [merchant], log }), { prefix: '/sandbox/sbps' });
      // One KOMOJU test account; like a real account's dashboard setting, its webhook points at one shop.
      const komoju = komojuSandboxKeys(config);
      const webhooks = [{ url: `${config.publicUrl}/webhooks/komoju/${DEFAULT_SHOP_ID}`, secret: komoju.webhookSecret }];
      await app.register(komojuSandbox({ accounts: [{ secretKey: komoju.secretKey, webhooks }], log }), { prefix: '/sandbox/komoju' });
      const atone = atoneSandboxKeys(config);
      const atoneHooks = { member: `${config.publicUrl}/webhooks/atone/${DEFAULT_SHOP_ID}/member`, order: `${config.publicUrl}/webhooks/atone/${DEFAULT_SHOP_ID}/order` };
      await app.register(atoneSandbox({ shops: [{ ...atone, webhookUrls: atoneHooks, name: 'kessai demo' }], log }), { prefix: '/sandbox/atone' });
      await app.register(geocoderSandbox({ apiKey: sandboxSecret(config, 'geocoder') }), { prefix: '/sandbox/geocoder' });
      await app.register(chekichaSandbox({ partners: [{ partnerId: CHEKICHA_SANDBOX_PARTNER, apiKey: sandboxSecret(config, 'chekicha') }], log }), { prefix: '/sandbox/chekicha' });
      await app.register(mailSandbox({ folder: `${config.dataDir}/mail`, smtpUrl: config.smtpUrl }), { prefix: '/sandbox/mail' });
    },
  ];
}

/** The HTTP server of a runtime; with the sandbox on, the simulated gateways are mounted under /sandbox. */
export async function createServer(rt: Runtime): Promise<FastifyInstance> {
  return buildApp({ payments: rt.payments, plugins: rt.ctx.config.sandbox ? sandboxPlugins(rt.ctx.config, rt.ctx.log) : [] });
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
