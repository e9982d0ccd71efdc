#!/usr/bin/env node
import { readFile } from 'node:fs/promises';
import formbody from '@fastify/formbody';
import { Command, Option } from 'commander';
import Fastify, { type FastifyBaseLogger } from 'fastify';
import { DEMO_PRODUCTS, seedDemo } from '../commerce/demo.js';
import { yen } from '../commerce/labels.js';
import { ORDER_STATES } from '../commerce/order-machine.js';
import { setSerialSpec } from '../commerce/serial-codes.js';
import { importSerials } from './import-serials.js';
import { addChartCommands } from './charts.js';
import { findOrder, listOrders, OPERATOR_EVENTS, operatorEvent, orderHistory, orderView, type OperatorEvent } from '../commerce/orders.js';
import { requestOperation } from '../payments/service.js';
import { editOrder } from '../payments/edits.js';
import { cancelSubscription, listSubscriptions } from '../commerce/subscriptions.js';
import { createShop, describeShop, listShops, setShopSettings } from '../commerce/shops.js';
import { ConfigError, loadConfig, readDotEnv, type Config } from '../config.js';
import { migrateDown, migrateToLatest, migrationStatus, openDatabase } from '../db/index.js';
import { KessaiError } from '../errors.js';
import { listAlerts, listJobs, retryJob } from '../jobs/admin.js';
import { listMailLog } from '../jobs/mail.js';
import { verifyReport } from '../gateways/sbps/verify-report.js';
import { createLogger } from '../observability.js';

const IDEMPOTENCY_KEY_HELP = 'run the same command again safely: with the same key it answers the job queued the first time';
const PAYMENT_HELP = "which of the order's payments (id or merchant reference, see 'order show'); the current one when left out";
import { createRuntime, createServer, sandboxPlugins, startWorker, type Runtime } from '../runtime.js';

/*
 * `kessai`: every command reads the same validated configuration (environment and .env) and
 * prints one clear line per problem when it is wrong.
 */

function config(overrides: Partial<Record<string, string>> = {}): Config {
  readDotEnv(process.env);
  const env = { ...process.env };
  for (const [k, v] of Object.entries(overrides)) if (v !== undefined) env[k] = v;
  return loadConfig(env);
}

async function withRuntime<T>(fn: (rt: Runtime) => Promise<T>, overrides: Partial<Record<string, string>> = {}): Promise<T> {
  const rt = await createRuntime(config(overrides));
  try {
    return await fn(rt);
  } finally {
    await rt.close();
  }
}

async function readStdin(): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

const list = (items: string[]) => new Intl.ListFormat('en').format(items);

function print(value: unknown): void {
  process.stdout.write(`${typeof value === 'string' ? value : JSON.stringify(value, null, 2)}\n`);
}

async function serve(opts: { port?: string; worker?: boolean; seed?: boolean }): Promise<void> {
  const cfg = config({ PORT: opts.port });
  const rt = await createRuntime(cfg);
  for (const w of cfg.warnings) rt.ctx.log.warn(w);
  if (opts.seed) {
    const created = await seedDemo(rt.ctx);
    if (created.length > 0) rt.ctx.log.info({ created }, 'demo data created');
  }
  const app = await createServer(rt);
  await app.listen({ port: cfg.port, host: cfg.host });
  const worker = opts.worker !== false && cfg.inProcessWorker ? startWorker(rt) : undefined;
  const base = cfg.publicUrl;
  const lines = [
    '',
    `kessai is running (${rt.ctx.engine}${cfg.engine === 'sqlite' ? `: ${cfg.databaseUrl}` : ''}${worker ? ', in-process worker' : ''})`,
    `  shop       ${base}/`,
    `  API docs   ${base}/docs`,
    `  health     ${base}/healthz  ${base}/readyz  ${base}/metrics`,
  ];
  if (cfg.sandbox) {
    // Only pages a browser can open: testpay and the geocoder have no overview, just the paths the store calls.
    lines.push(`  sandbox    ${base}/sandbox/sbps (SBPS), ${base}/sandbox/komoju (KOMOJU), ${base}/sandbox/atone (atone: taro@example.jp / password) and ${base}/sandbox/chekicha (Chekicha account links); test card 4111111111111111`);
    lines.push(cfg.smtpUrl ? `  mail       sent through ${new URL(cfg.smtpUrl).host}` : `  mail       ${base}/sandbox/mail (every mail the store sent; files in ${cfg.dataDir}/mail, no SMTP server in the sandbox)`);
  }
  if (cfg.sandbox && !process.env.KESSAI_ADMIN_TOKEN) lines.push(`  operator   Authorization: Bearer ${cfg.adminToken}`);
  process.stdout.write(`${lines.join('\n')}\n\n`);

  let closing = false;
  const shutdown = async (signal: string) => {
    if (closing) return;
    closing = true;
    rt.ctx.log.info({ signal }, 'shutting down');
    await app.close();
    await worker?.stop();
    await rt.close();
    process.exit(0);
  };
  process.on('SIGINT', () => void shutdown('SIGINT'));
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
}

export function program(): Command {
  const cli = new Command('kessai')
    .description('Commerce backend for Japanese web shops: SBPS, atone and KOMOJU payments, charts, serial codes, mail.')
    .showHelpAfterError();

  cli
    .command('serve')
    .description('run the HTTP server (and, unless KESSAI_WORKER=off, the job worker in the same process)')
    .option('-p, --port <port>', 'port to listen on (default: PORT or 3000)')
    .option('--no-worker', 'do not run jobs in this process (run `kessai worker` separately)')
    .action((opts: { port?: string; worker?: boolean }) => serve(opts));

  cli
    .command('start')
    .description('what `npm start` runs: migrate, create the demo shop if missing, serve with the sandbox')
    .option('-p, --port <port>', 'port to listen on')
    .action(async (opts: { port?: string }) => {
      const cfg = config({ PORT: opts.port });
      const handle = openDatabase(cfg.databaseUrl);
      await migrateToLatest(handle.db);
      await handle.close();
      await serve({ ...opts, seed: true });
    });

  cli
    .command('worker')
    .description('run the outbox job worker and schedules without the HTTP server (scale-out)')
    .option('--once', 'run the jobs that are due now, then exit')
    .option('--concurrency <n>', 'jobs run at the same time', '4')
    .action(async (opts: { once?: boolean; concurrency: string }) => {
      const rt = await createRuntime(config());
      for (const w of rt.ctx.config.warnings) rt.ctx.log.warn(w);
      const concurrency = Number.parseInt(opts.concurrency, 10);
      if (opts.once) {
        const { Dispatcher } = await import('../jobs/dispatcher.js');
        const dispatcher = new Dispatcher(rt.ctx, rt.jobs, { concurrency });
        let total = 0;
        for (let n = await dispatcher.runOnce(); n > 0; n = await dispatcher.runOnce()) total += n;
        print(`ran ${total} job(s)`);
        await rt.close();
        return;
      }
      const worker = startWorker(rt, { concurrency });
      rt.ctx.log.info('worker started');
      const stop = async () => {
        await worker.stop();
        await rt.close();
        process.exit(0);
      };
      process.on('SIGINT', () => void stop());
      process.on('SIGTERM', () => void stop());
    });

  cli
    .command('migrate')
    .description('apply (up), undo the last (down) or list (status) database migrations')
    .addArgument(new Command().createArgument('[direction]', 'up | down | status').choices(['up', 'down', 'status']).default('up'))
    .action(async (direction: 'up' | 'down' | 'status') => {
      const handle = openDatabase(config().databaseUrl);
      try {
        if (direction === 'status') {
          for (const m of await migrationStatus(handle.db)) print(`${m.executedAt ? 'applied' : 'pending'}  ${m.name}${m.executedAt ? `  ${m.executedAt.toISOString()}` : ''}`);
        } else {
          const names = direction === 'up' ? await migrateToLatest(handle.db) : await migrateDown(handle.db);
          print(names.length > 0 ? `${direction === 'up' ? 'applied' : 'reverted'}: ${names.join(', ')}` : 'nothing to do');
        }
      } finally {
        await handle.close();
      }
    });

  cli
    .command('seed-demo')
    .description(
      `create what is missing of the demo shop "default" (products ${list(DEMO_PRODUCTS.map((p) => p.code))}; serial codes for ${list(DEMO_PRODUCTS.filter((p) => p.serial).map((p) => p.code))}) ` +
        'and, with the sandbox on, turn on every sandbox gateway for it; running it again adds nothing',
    )
    .action(() =>
      withRuntime(async (rt) => {
        const created = await seedDemo(rt.ctx);
        print(created.length > 0 ? `created: ${created.join(', ')}` : 'demo data already present');
      }),
    );

  const shop = cli.command('shop').description('shops and their gateway settings');
  shop
    .command('create <id>')
    .description('create a shop')
    .requiredOption('--name <name>', 'shop name shown to customers')
    .action((id: string, opts: { name: string }) =>
      withRuntime(async (rt) => {
        await createShop(rt.ctx, { id, name: opts.name });
        print(`shop ${id} created`);
      }),
    );
  shop
    .command('list')
    .description('list shops')
    .action(() => withRuntime(async (rt) => print((await listShops(rt.ctx)).map((s) => `${s.id}\t${s.name}`).join('\n') || 'no shops')));
  shop
    .command('show <id>')
    .description('show a shop\'s settings (secrets masked) and where each value comes from')
    .action((id: string) =>
      withRuntime(async (rt) => {
        const view = await describeShop(rt.ctx, id);
        print(`${view.id}\t${view.name}`);
        for (const s of view.settings) print(`  ${s.key.padEnd(22)} ${String(s.value ?? '-').padEnd(24)} ${s.source}`);
      }),
    );
  shop
    .command('set <id> <key=value...>')
    .description('set settings (an empty value clears one), e.g. `kessai shop set default sbps.merchantId=30132 sbps.hashKey=…`')
    .action((id: string, pairs: string[]) =>
      withRuntime(async (rt) => {
        const values: Record<string, string> = {};
        for (const pair of pairs) {
          const eq = pair.indexOf('=');
          if (eq <= 0) throw new KessaiError('invalid_input', `"${pair}" is not key=value`);
          values[pair.slice(0, eq)] = pair.slice(eq + 1);
        }
        await setShopSettings(rt.ctx, id, values);
        print(`shop ${id}: set ${Object.keys(values).join(', ')}`);
      }),
    );

  cli
    .command('sandbox')
    .description('run only the sandbox (simulated SBPS, atone, KOMOJU, testpay, Chekicha, geocoder, and the sent-mail viewer) on its own port, for a store elsewhere')
    .option('-p, --port <port>', 'port to listen on', '3001')
    .action(async (opts: { port: string }) => {
      const cfg = config({ PORT: opts.port });
      if (!cfg.sandbox) throw new KessaiError('sandbox_off', 'KESSAI_SANDBOX=off: the sandbox is for development and tests only');
      const log = createLogger(cfg.logLevel);
      const app = Fastify({ loggerInstance: log as FastifyBaseLogger });
      await app.register(formbody);
      for (const plugin of sandboxPlugins(cfg, log)) await plugin(app);
      await app.listen({ port: cfg.port, host: cfg.host });
      print(`kessai sandbox on http://${cfg.host}:${cfg.port}/sandbox/sbps, /sandbox/komoju, /sandbox/atone, /sandbox/geocoder, /sandbox/chekicha, /sandbox/mail and /sandbox/testpay`);
      process.on('SIGTERM', () => void app.close().then(() => process.exit(0)));
      process.on('SIGINT', () => void app.close().then(() => process.exit(0)));
    });

  cli
    .command('import-serials <file>')
    .description('import Chekicha serial codes from a ZIP of CSV files (Shift_JIS or UTF-8), all or nothing')
    .requiredOption('--shop <shop>', 'shop id')
    .requiredOption('--product <product>', 'serial_code product (its code)')
    .addOption(new Option('--encoding <encoding>', 'encoding of CSV files without a BOM').choices(['sjis', 'utf8']).default('sjis'))
    .option('--report <file>', 'write every rejection (file, line, column, reason) to this CSV')
    .action((file: string, opts: { shop: string; product: string; encoding: 'sjis' | 'utf8'; report?: string }) =>
      withRuntime(async (rt) => {
        process.exitCode = await importSerials(rt.ctx, file, opts);
      }),
    );
  cli
    .command('serial-spec <shop> <product>')
    .description('set what every imported row of a serial_code product must name (Chekicha artist, group, code type)')
    .requiredOption('--artist <name>', 'artist name (アーティスト名)')
    .requiredOption('--group <name>', 'group name (グループ名)')
    .requiredOption('--code-type <type>', 'code type (コード種別)')
    .action((shopId: string, product: string, opts: { artist: string; group: string; codeType: string }) =>
      withRuntime(async (rt) => {
        await setSerialSpec(rt.ctx, shopId, product, { artistName: opts.artist, groupName: opts.group, codeType: opts.codeType });
        print(`${shopId}/${product}: artist ${opts.artist}, group ${opts.group}, code type ${opts.codeType}`);
      }),
    );

  const sbps = cli.command('sbps').description('SBPS tools');
  sbps
    .command('verify [file]')
    .description('check the sps_hashcode of a raw body as SBPS sends it (urlencoded Shift_JIS); reads stdin without a file or with -')
    .requiredOption('--hash-key <key>', 'the shop\'s SBPS hash key')
    .addOption(new Option('--kind <kind>', 'which message the body is').choices(['request', 'result', 'return']).makeOptionMandatory())
    .action(async (file: string | undefined, opts: { hashKey: string; kind: 'request' | 'result' | 'return' }) => {
      const body = !file || file === '-' ? await readStdin() : await readFile(file);
      const report = verifyReport(opts.kind, body, opts.hashKey);
      print(report.text);
      process.exitCode = report.ok ? 0 : 2;
    });

  const orders = cli.command('order').description('orders: look up, and queue money operations at the gateway');
  orders
    .command('list')
    .description('recent orders, newest first')
    .option('--shop <shop>', 'only this shop')
    .addOption(new Option('--state <state>', 'only orders in this state').choices(ORDER_STATES))
    .action((opts: { shop?: string; state?: string }) =>
      withRuntime(async (rt) => {
        const rows = await listOrders(rt.ctx, { ...opts, limit: 100 });
        print(rows.map((o) => `${o.number}\t${o.shop_id}\t${o.state}\t${yen(o.total)}\t${o.email}${o.hold_reason ? `\t${o.hold_reason}` : ''}`).join('\n') || 'no orders');
      }),
    );
  orders
    .command('show <order>')
    .description('an order (number or id) with its attempts, gateway events and history')
    .action((ref: string) =>
      withRuntime(async (rt) => {
        const order = await findOrder(rt.ctx, ref);
        print({ ...(await orderView(rt.ctx, order)), holdReason: order.hold_reason, ...(await orderHistory(rt.ctx, order.id)) });
      }),
    );
  for (const kind of ['capture', 'refund'] as const) {
    orders
      .command(`${kind} <order>`)
      .description(`queue a ${kind} of an explicit amount at the gateway (the worker performs it)`)
      .requiredOption('--amount <yen>', 'amount in yen')
      .option('--idempotency-key <key>', IDEMPOTENCY_KEY_HELP)
      .option('--payment <ref>', PAYMENT_HELP)
      .action((ref: string, opts: { amount: string; idempotencyKey?: string; payment?: string }) =>
        withRuntime(async (rt) => {
          const amount = /^\d+$/.test(opts.amount) ? Number(opts.amount) : Number.NaN;
          const { jobKey, replayed } = await requestOperation(rt.payments, ref, { kind, amount, payment: opts.payment }, opts.idempotencyKey);
          print(`${kind} of ${yen(amount)} ${replayed ? 'already queued' : 'queued'} (${jobKey})`);
        }),
      );
  }
  orders
    .command('cancel <order>')
    .description('queue a cancel of an unpaid or authorized payment at the gateway')
    .option('--idempotency-key <key>', IDEMPOTENCY_KEY_HELP)
    .option('--payment <ref>', PAYMENT_HELP)
    .action((ref: string, opts: { idempotencyKey?: string; payment?: string }) =>
      withRuntime(async (rt) => {
        const { jobKey, replayed } = await requestOperation(rt.payments, ref, { kind: 'cancel', payment: opts.payment }, opts.idempotencyKey);
        print(`cancel ${replayed ? 'already queued' : 'queued'} (${jobKey})`);
      }),
    );
  orders
    .command('event <order> <event>')
    .description(`apply an operator event: ${OPERATOR_EVENTS.join(', ')}`)
    .action((ref: string, event: string) =>
      withRuntime(async (rt) => {
        if (!(OPERATOR_EVENTS as readonly string[]).includes(event)) throw new KessaiError('invalid_input', `event must be one of ${OPERATOR_EVENTS.join(', ')}`);
        const order = await operatorEvent(rt.ctx, ref, event as OperatorEvent, 'operator (cli)');
        print(`${order.number}: ${order.state}`);
      }),
    );

  orders
    .command('edit <order> <sku=quantity...>')
    .description('make a paid, unshipped order smaller (0 removes a line); atone is updated, other gateways refund the difference')
    .action((ref: string, pairs: string[]) =>
      withRuntime(async (rt) => {
        const lines = pairs.map((pair) => {
          const [sku = '', quantity = ''] = pair.split('=');
          return { sku, quantity: /^\d+$/.test(quantity) ? Number(quantity) : Number.NaN };
        });
        const { order, changed, difference } = await editOrder(rt.payments, ref, { lines }, 'operator (cli)');
        print(changed ? `${order.number}: total ${yen(order.total)} (${yen(difference)} less)` : `${order.number}: unchanged`);
      }),
    );

  const subscriptions = cli.command('subscription').description('recurring purchases');
  subscriptions
    .command('list')
    .description('subscriptions, newest first')
    .option('--shop <shop>', 'only this shop')
    .option('--state <state>', 'active or cancelled')
    .action((opts: { shop?: string; state?: string }) =>
      withRuntime(async (rt) => {
        const rows = await listSubscriptions(rt.ctx, opts);
        print(rows.map((s) => `${s.id}\t${s.state}\t${s.email}\t${s.sku} ×${s.quantity}\tevery ${s.intervalMonths} month(s)\tnext ${s.nextDate}`).join('\n') || 'no subscriptions');
      }),
    );
  subscriptions
    .command('cancel <id>')
    .description('end a subscription: no further renewal orders')
    .action((id: string) =>
      withRuntime(async (rt) => {
        const sub = await cancelSubscription(rt.ctx, id, 'operator (cli)');
        print(`${sub.id}: ${sub.state}`);
      }),
    );

  const jobs = cli.command('jobs').description('outbox jobs and alerts');
  jobs
    .command('list')
    .description('list jobs, e.g. `kessai jobs list --state dead`')
    .addOption(new Option('--state <state>', 'job state').choices(['pending', 'running', 'done', 'dead']))
    .option('--kind <kind>', 'job kind')
    .action((opts: { state?: 'pending' | 'running' | 'done' | 'dead'; kind?: string }) =>
      withRuntime(async (rt) => {
        const rows = await listJobs(rt.ctx.db, opts);
        print(rows.map((j) => `${j.id}\t${j.kind}\t${j.state}\tattempts=${j.attempts}\t${j.last_error ?? ''}`).join('\n') || 'no jobs');
      }),
    );
  jobs
    .command('retry <id>')
    .description('run a dead job again')
    .action((id: string) =>
      withRuntime(async (rt) => {
        if (!(await retryJob(rt.ctx, id))) throw new KessaiError('not_retryable', `job ${id} does not exist or is running or done`);
        print(`job ${id} queued again`);
      }),
    );
  jobs
    .command('alerts')
    .description('open alerts for the operator')
    .action(() =>
      withRuntime(async (rt) => {
        const rows = await listAlerts(rt.ctx.db, { open: true });
        print(rows.map((a) => `${a.created_at}\t${a.kind}\t${a.message}`).join('\n') || 'no open alerts');
      }),
    );
  const mail = cli.command('mail').description('transactional mail');
  mail
    .command('log')
    .description('mail send attempts, newest first, e.g. `kessai mail log --outcome failed`')
    .option('--to <address>', 'only mail to this address')
    .option('--template <name>', 'only this template (e.g. order_paid, inquiry_staff)')
    .addOption(new Option('--outcome <outcome>', 'only sent or only failed attempts').choices(['sent', 'failed']))
    .option('--limit <n>', 'how many', '50')
    .action((opts: { to?: string; template?: string; outcome?: 'sent' | 'failed'; limit: string }) =>
      withRuntime(async (rt) => {
        const limit = /^\d+$/.test(opts.limit) ? Math.min(500, Math.max(1, Number(opts.limit))) : 50;
        const { entries } = await listMailLog(rt.ctx.db, { ...opts, limit });
        print(entries.map((e) => `${e.created_at}\t${e.outcome}\t${e.template}\t${e.recipient}\tattempt=${e.attempt}\t${e.response ?? ''}`).join('\n') || 'no mail sent yet');
      }),
    );
  addChartCommands(cli, withRuntime);
  return cli;
}

// `kessai order list | head`: the reader has all it wants; stop as Unix tools do, without a stack trace.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code !== 'EPIPE') throw error;
  process.exit(0);
});

program()
  .parseAsync(process.argv)
  .catch((error: unknown) => {
    if (error instanceof ConfigError) {
      process.stderr.write(`kessai: ${error.message}\n`);
    } else if (error instanceof KessaiError) {
      process.stderr.write(`kessai: ${error.message}\n`);
    } else {
      process.stderr.write(`kessai: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    }
    process.exit(1);
  });
