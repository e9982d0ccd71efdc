/**
 * SBPS result notifications: verified result CGIs per second against a bare Fastify POST route.
 *
 *   node --import tsx bench/sbps-notifications.ts [--engine sqlite|postgres] [--orders 3000]
 *                                                 [--seconds 3] [--connections 64] [--rounds 5]
 *   (KESSAI_BENCH_ENGINE=postgres works too)
 *
 * The whole store runs in this process as `kessai serve` runs it (real database, Fastify on
 * loopback, sandbox mounted, the demo shop seeded, job worker off). A second, bare Fastify app in the
 * same process has one POST route that takes the raw body (buffer content-type parser) and answers
 * `OK,`. autocannon runs in a worker thread, so the load generator does not share the servers' event
 * loop. Every load uses `connections` connections and sends SBPS result bodies. Per round:
 *   0. (not timed) `orders` orders of a fresh serial-code product with `orders` units, each paying
 *      with SBPS (createOrder, provider sbps, method credit3d2). For each attempt the purchase form
 *      is built by the SBPS provider exactly as the checkout builds it, and the result notification
 *      exactly as the SBPS sandbox sends it: the request's fields echoed plus res_* (res_result=OK,
 *      credit3d2, a fresh res_tracking_id), `encodeMessage('result', …, {shuffle, uppercaseHash})`:
 *      urlencoded Shift_JIS, fields in random order, hash in uppercase hex;
 *   1. baseline: `seconds` seconds of those bodies (cycled) against the bare route;
 *   2. fresh: every body once to POST /webhooks/sbps/default. Each is a real state change through
 *      applyFact: payment event, attempt captured, order paid, stock committed, order_paid mail job;
 *   3. duplicates: the same bodies again (verify, then the event's unique key makes it a no-op);
 *   4. forged: the same bodies with the last hash digit changed (rejected after verification, no
 *      transaction): the store's HTTP stack, settings read and hash check without applyFact.
 * Rates are responses over the time from the first request to the last response; latency is per
 * request from when autocannon builds it to its response (fractional ms). After each round the
 * script checks: every notification answered 200 `OK,` (forged: `NG,`), orders paid = notifications
 * = payment_events rows (all `applied`, one per attempt), one order → paid state change per order,
 * every attempt captured with its amount, stock committed (on_hand 0, reserved 0), one order_paid
 * mail job per order, no unknown-attempt event or alert; and after the duplicates and the forged
 * bodies, that nothing changed. Figures: medians over the rounds.
 * PostgreSQL: a throwaway cluster as in bench/flash-sale.ts (initdb/pg_ctl, removed at the end).
 * `--profile DIR`: V8's CPU profiler (what `node --cpu-prof` runs) on this thread during each
 * measured load (the bare route's too: it runs on this thread), not during the preparation or the
 * warm-up: DIR/<series>-round<n>.cpuprofile, for Chrome DevTools or any .cpuprofile reader.
 */
import { freePort } from '../test/helpers/net.js';
import { median, startBenchStore } from './lib.js';
import { mkdirSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { createRequire } from 'node:module';
import { availableParallelism, cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { Worker } from 'node:worker_threads';
import type { RawBuilder } from 'kysely';

const GOAL = 0.5;

// ------------------------------------------------------------------ load generator (worker thread)

interface LoadJob {
  url: string;
  /** Request bodies (ASCII: urlencoded Shift_JIS); request i sends bodies[i % length]. */
  bodies: string[];
  connections: number;
  /** Send exactly this many requests (fresh, duplicates, forged), … */
  amount?: number;
  /** … or send for this many seconds (the baseline). */
  seconds?: number;
  /** The answer every request should get. */
  expect: { status: number; body: string };
}

interface LoadResult {
  sent: number;
  responses: number;
  seconds: number;
  rps: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  statuses: Record<string, number>;
  /** Responses whose status and body differ from `expect`, by answer (first 60 characters). */
  unexpected: Record<string, number>;
  /** Bodies answered as expected exactly once (only meaningful with `amount` = bodies.length). */
  answeredOnce: number;
  errors: number;
  timeouts: number;
}

/**
 * The worker's code, plain JavaScript: a worker thread does not inherit tsx's loader on Node 20.
 * `setupRequest` runs right before each request is written (autocannon builds the first request of a
 * connection when it creates it and writes it at once), so it hands out the bodies one by one from a
 * counter shared by all connections, and stamps the request's start for the latency.
 */
const LOAD_WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const autocannon = require(workerData.autocannon);
const job = workerData.job;
const bodies = job.bodies;
const perBody = new Uint32Array(bodies.length);
const latencies = [];
const unexpected = {};
let next = 0;
let first = 0;
let last = 0;
let responses = 0;
const opts = {
  url: job.url,
  connections: job.connections,
  timeout: 60,
  ...(job.amount ? { amount: job.amount } : { duration: job.seconds }),
  requests: [{
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded; charset=Shift_JIS', 'user-agent': 'kessai-bench-sbps' },
    setupRequest: (req, context) => {
      const i = next++;
      context.i = i % bodies.length;
      context.t = performance.now();
      if (first === 0) first = context.t;
      return { ...req, body: bodies[context.i] };
    },
    onResponse: (status, body, context) => {
      last = performance.now();
      responses += 1;
      latencies.push(last - context.t);
      if (status === job.expect.status && body === job.expect.body) perBody[context.i] += 1;
      else {
        const key = status + ' ' + String(body).slice(0, 60);
        unexpected[key] = (unexpected[key] || 0) + 1;
      }
    },
  }],
};
autocannon(opts).then((raw) => {
  const r = autocannon.aggregateResult([raw], opts);
  const statuses = {};
  for (const [code, s] of Object.entries(r.statusCodeStats || {})) statuses[code] = s.count;
  latencies.sort((a, b) => a - b);
  const pct = (p) => latencies.length ? Number(latencies[Math.min(latencies.length - 1, Math.floor(p / 100 * latencies.length))].toFixed(2)) : 0;
  let answeredOnce = 0;
  for (const n of perBody) if (n === 1) answeredOnce += 1;
  const seconds = (last - first) / 1000;
  parentPort.postMessage({
    sent: next, responses, seconds, rps: responses / seconds,
    p50: pct(50), p90: pct(90), p99: pct(99), max: latencies.length ? Number(latencies[latencies.length - 1].toFixed(2)) : 0,
    statuses, unexpected, answeredOnce, errors: r.errors, timeouts: r.timeouts,
  });
});
`;

/** Runs one load in a worker thread (the servers keep this thread's event loop to themselves). */
function load(job: LoadJob): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(LOAD_WORKER, { eval: true, workerData: { job, autocannon: createRequire(import.meta.url).resolve('autocannon') } });
    worker.once('message', (m: LoadResult) => resolve(m));
    worker.once('error', reject);
    worker.once('exit', (code) => {
      if (code !== 0) reject(new Error(`load worker exited with ${code}`));
    });
  });
}

// ------------------------------------------------------------------ the benchmark


const pct = (xs: number[], p: number): number => {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;
};

type Series = 'baseline' | 'fresh' | 'duplicate' | 'forged';
const SERIES: Series[] = ['baseline', 'fresh', 'duplicate', 'forged'];

async function main(): Promise<void> {
  const { values: args } = parseArgs({
    options: {
      engine: { type: 'string', default: process.env.KESSAI_BENCH_ENGINE ?? 'sqlite' },
      orders: { type: 'string', default: '3000' },
      seconds: { type: 'string', default: '3' },
      connections: { type: 'string', default: '64' },
      rounds: { type: 'string', default: '5' },
      profile: { type: 'string' },
    },
  });
  const engine = args.engine;
  if (engine !== 'sqlite' && engine !== 'postgres') throw new Error(`--engine ${engine}: expected sqlite or postgres`);
  const ORDERS = Number(args.orders);
  const SECONDS = Number(args.seconds);
  const CONNECTIONS = Number(args.connections);
  const ROUNDS = Number(args.rounds);
  if (!(ORDERS >= CONNECTIONS)) throw new Error('--orders must be at least --connections (autocannon spreads a fixed amount over the connections)');

  const { default: Fastify } = await import('fastify');
  const { sql } = await import('kysely');
  const { createProduct } = await import('../src/commerce/catalog.js');
  const { createOrder } = await import('../src/commerce/orders.js');
  const { DEFAULT_SHOP_ID, getShopSettings } = await import('../src/commerce/shops.js');
  const { encodeMessage, orderedEntries } = await import('../src/gateways/sbps/index.js');
  const { sbpsDate } = await import('../src/payments/sbps.js');
  const { attemptContext } = await import('../src/payments/service.js');

  const store = await startBenchStore(engine, 'sbps');
  const { cleanup } = store;

  const loadAtStart = loadavg().map((x) => Number(x.toFixed(2)));
  try {
    const { rt, app, base, port, engineVersion } = store;
    const { ctx } = rt;
    const db = ctx.db;

    // Server-side time of the webhook route per series (Fastify's elapsedTime: request to response sent).
    let phase: Series | undefined;
    const serverTimes = new Map<Series, number[]>();
    app.addHook('onResponse', async (request, reply) => {
      if (phase && request.url === '/webhooks/sbps/default') {
        let list = serverTimes.get(phase);
        if (!list) serverTimes.set(phase, (list = []));
        list.push(reply.elapsedTime);
      }
    });
    await app.listen({ port, host: '127.0.0.1' });

    // The baseline: a bare Fastify app in this process, one POST route, raw body, `OK,`.
    const barePort = await freePort();
    const bare = Fastify({ logger: false });
    bare.removeAllContentTypeParsers();
    bare.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: 256 * 1024 }, (_request, body, done) => done(null, body));
    let bareBytes = 0;
    bare.post('/webhooks/sbps/default', async (request, reply) => {
      bareBytes += Buffer.isBuffer(request.body) ? request.body.length : 0;
      return reply.type('text/plain; charset=Shift_JIS').send('OK,');
    });
    await bare.listen({ port: barePort, host: '127.0.0.1' });

    const settings = await getShopSettings(ctx, DEFAULT_SHOP_ID);
    const hashKey = String(settings['sbps.hashKey']);
    const sbpsOrNone = rt.payments.providers.get('sbps');
    if (!sbpsOrNone) throw new Error('the SBPS provider is not registered');
    const sbps = sbpsOrNone;
    const resultNames = orderedEntries('result', { fields: {}, details: [] }).map(([name]) => name);
    const cpuModel = cpus()[0]?.model ?? 'unknown CPU';
    process.stderr.write(`[sbps-notifications] ${engineVersion}, ${cpuModel} × ${availableParallelism()}, store at ${base}, bare route at 127.0.0.1:${barePort}; ${ROUNDS} rounds of ${ORDERS} notifications, ${CONNECTIONS} connections, baseline ${SECONDS} s\n`);

    let trackingSeq = 0;
    /** `n` SBPS orders of a fresh product with n units, and the result notification SBPS would send for each. */
    async function prepare(code: string, n: number): Promise<{ skuId: string; bodies: string[]; forged: string[] }> {
      await createProduct(ctx, DEFAULT_SHOP_ID, { code, name: `SBPS ベンチ ${code}`, kind: 'serial_code', price: 1500, stock: n });
      const sku = await db.selectFrom('skus').select('id').where('shop_id', '=', DEFAULT_SHOP_ID).where('code', '=', code).executeTakeFirstOrThrow();
      const bodies: string[] = [];
      const forged: string[] = [];
      for (let i = 0; i < n; i++) {
        const created = await createOrder(ctx, {
          shop: DEFAULT_SHOP_ID,
          customer: { email: `buyer${i}@example.jp`, name: '山田 花子' },
          lines: [{ sku: code, quantity: 1 }],
          payment: { provider: 'sbps', method: 'credit3d2' },
        });
        const attempt = await db.selectFrom('payment_attempts').selectAll().where('id', '=', created.attemptId).executeTakeFirstOrThrow();
        // The purchase form exactly as the checkout hands it to the browser …
        const started = await sbps.start(await attemptContext(rt.payments, attempt, created.order, created.token));
        if (started.action?.type !== 'form') throw new Error(`SBPS start gave ${JSON.stringify(started.action)}, expected a form`);
        const request = Object.fromEntries(started.action.fields);
        if (request.order_id !== attempt.merchant_ref || request.amount !== String(attempt.amount)) throw new Error(`form for ${attempt.merchant_ref} does not carry its order_id and amount`);
        // … and the result CGI exactly as SBPS (and the sandbox) sends it for that form.
        trackingSeq += 1;
        const merged: Record<string, string> = {
          ...request,
          res_pay_method: 'credit3d2',
          res_result: 'OK',
          res_tracking_id: String(30_000_000_000_000 + trackingSeq),
          res_sps_cust_no: '',
          res_sps_payment_no: '',
          res_payinfo_key: '',
          res_payment_date: '',
          res_err_code: '',
          res_date: sbpsDate(),
        };
        const fields = Object.fromEntries(resultNames.map((name) => [name, merged[name] ?? '']));
        const body = encodeMessage('result', { fields, details: [] }, hashKey, { shuffle: Math.random, uppercaseHash: true }).toString('latin1');
        bodies.push(body);
        // The same body with the hash's last hex digit changed: well-formed, verified, refused.
        forged.push(body.replace(/(sps_hashcode=[0-9A-F]{39})([0-9A-F])/, (_m, head: string, d: string) => head + (d === '0' ? '1' : '0')));
      }
      return { skuId: sku.id, bodies, forged };
    }

    const count = async (query: RawBuilder<{ n: number | string }>): Promise<number> => Number((await query.execute(db)).rows[0]?.n ?? 0);

    /** What the database says about one round's orders; every figure should equal `n` (or 0 where noted). */
    async function stateOf(skuId: string) {
      const orders = sql`select order_id from order_lines where sku_id = ${skuId}`;
      const states = (await sql<{ state: string; n: number | string }>`select state, count(*) as n from orders where id in (${orders}) group by state`.execute(db)).rows;
      const events = (
        await sql<{ n: number | string; attempts: number | string; applied: number | string | null }>`
          select count(*) as n, count(distinct e.attempt_id) as attempts, sum(case when e.outcome = 'applied' then 1 else 0 end) as applied
          from payment_events e join payment_attempts a on a.id = e.attempt_id where a.order_id in (${orders})`.execute(db)
      ).rows[0]!;
      const paidChanges = (
        await sql<{ n: number | string; orders: number | string }>`
          select count(*) as n, count(distinct entity_id) as orders from state_changes
          where entity = 'order' and to_state = 'paid' and entity_id in (${orders})`.execute(db)
      ).rows[0]!;
      const sku = await db.selectFrom('skus').select(['on_hand', 'reserved']).where('id', '=', skuId).executeTakeFirstOrThrow();
      return {
        ordersByState: Object.fromEntries(states.map((s) => [s.state, Number(s.n)])),
        events: Number(events.n),
        eventAttempts: Number(events.attempts),
        eventsApplied: Number(events.applied ?? 0),
        paidStateChanges: Number(paidChanges.n),
        paidStateChangeOrders: Number(paidChanges.orders),
        capturedAttempts: await count(sql`select count(*) as n from payment_attempts where order_id in (${orders}) and state = 'captured' and captured_amount = amount`),
        committedReservations: await count(sql`select count(*) as n from reservations where sku_id = ${skuId} and state = 'committed'`),
        paidMailJobs: await count(sql`select count(*) as n from jobs where kind = 'mail.send' and dedupe_key in (select 'mail:order_paid:' || order_id from order_lines where sku_id = ${skuId})`),
        onHand: sku.on_hand,
        reserved: sku.reserved,
        unknownAttemptEvents: await count(sql`select count(*) as n from payment_events where attempt_id is null`),
        alerts: await count(sql`select count(*) as n from alerts`),
      };
    }
    type DbState = Awaited<ReturnType<typeof stateOf>>;

    function checkPaid(s: DbState, n: number): string[] {
      const problems: string[] = [];
      const expect = (what: string, got: number, want: number) => {
        if (got !== want) problems.push(`${what} = ${got}, expected ${want}`);
      };
      expect('orders paid', s.ordersByState.paid ?? 0, n);
      const other = Object.entries(s.ordersByState).filter(([state]) => state !== 'paid');
      if (other.length) problems.push(`orders not paid: ${JSON.stringify(Object.fromEntries(other))}`);
      expect('payment_events rows', s.events, n);
      expect('attempts with an event', s.eventAttempts, n);
      expect('events applied', s.eventsApplied, n);
      expect('order → paid state changes', s.paidStateChanges, n);
      expect('orders with a → paid state change', s.paidStateChangeOrders, n);
      expect('attempts captured with their amount', s.capturedAttempts, n);
      expect('committed reservations', s.committedReservations, n);
      expect('order_paid mail jobs', s.paidMailJobs, n);
      expect('on_hand', s.onHand, 0);
      expect('reserved', s.reserved, 0);
      expect('payment_events without an attempt', s.unknownAttemptEvents, 0);
      expect('alerts', s.alerts, 0);
      return problems;
    }

    function checkLoad(what: string, r: LoadResult, n: number, status: number): string[] {
      const problems: string[] = [];
      if (r.sent !== n) problems.push(`${what}: ${r.sent} requests sent, expected ${n}`);
      if (r.answeredOnce !== n) problems.push(`${what}: ${r.answeredOnce} of ${n} bodies answered ${status} as expected exactly once`);
      if (Object.keys(r.unexpected).length) problems.push(`${what}: unexpected answers ${JSON.stringify(r.unexpected)}`);
      if (r.errors || r.timeouts) problems.push(`${what}: ${r.errors} connection errors, ${r.timeouts} timeouts`);
      return problems;
    }

    const OK = { status: 200, body: 'OK,' };
    const NG = { status: 200, body: 'NG,sps_hashcode mismatch' };
    const loopDelays: Record<Series, { p50: number; p99: number; max: number }[]> = { baseline: [], fresh: [], duplicate: [], forged: [] };

    /** One measured load with the store's server-side time and event-loop delay recorded under `series`. */
    let profiler: Session | undefined;
    let roundNo = 0;
    if (args.profile) {
      mkdirSync(args.profile, { recursive: true });
      profiler = new Session();
      profiler.connect();
      await profiler.post('Profiler.enable');
    }
    async function measured(series: Series, job: LoadJob): Promise<LoadResult> {
      const delay = monitorEventLoopDelay({ resolution: 10 });
      const profiling = profiler !== undefined && roundNo > 0;
      if (profiling) await profiler!.post('Profiler.start');
      phase = series;
      delay.enable();
      const r = await load(job);
      delay.disable();
      phase = undefined;
      if (profiling) {
        const { profile } = await profiler!.post('Profiler.stop');
        writeFileSync(join(args.profile!, `${series}-round${roundNo}.cpuprofile`), JSON.stringify(profile));
      }
      loopDelays[series].push({ p50: delay.percentile(50) / 1e6, p99: delay.percentile(99) / 1e6, max: delay.max / 1e6 });
      return r;
    }

    interface Round {
      results: Record<Series, LoadResult>;
      problems: string[];
      prepareSeconds: number;
    }

    async function round(code: string, n: number, baselineSeconds: number): Promise<Round> {
      const t0 = performance.now();
      const { skuId, bodies, forged } = await prepare(code, n);
      const prepareSeconds = (performance.now() - t0) / 1000;
      const problems: string[] = [];
      const before = await stateOf(skuId);
      if ((before.ordersByState.pending_payment ?? 0) !== n || before.events !== 0) problems.push(`before: ${JSON.stringify(before)}`);

      const baseline = await measured('baseline', { url: `http://127.0.0.1:${barePort}/webhooks/sbps/default`, bodies, connections: CONNECTIONS, seconds: baselineSeconds, expect: OK });
      if (Object.keys(baseline.unexpected).length || baseline.errors || baseline.timeouts) problems.push(`baseline: ${JSON.stringify({ unexpected: baseline.unexpected, errors: baseline.errors, timeouts: baseline.timeouts })}`);

      const url = `${base}/webhooks/sbps/default`;
      const fresh = await measured('fresh', { url, bodies, connections: CONNECTIONS, amount: n, expect: OK });
      problems.push(...checkLoad('fresh', fresh, n, 200));
      const afterFresh = await stateOf(skuId);
      problems.push(...checkPaid(afterFresh, n).map((p) => `after the notifications: ${p}`));

      const duplicate = await measured('duplicate', { url, bodies, connections: CONNECTIONS, amount: n, expect: OK });
      problems.push(...checkLoad('duplicates', duplicate, n, 200));
      const afterDuplicates = await stateOf(skuId);
      problems.push(...checkPaid(afterDuplicates, n).map((p) => `after the duplicates: ${p}`));

      const forgedRun = await measured('forged', { url, bodies: forged, connections: CONNECTIONS, amount: n, expect: NG });
      problems.push(...checkLoad('forged', forgedRun, n, 200));
      const afterForged = await stateOf(skuId);
      if (JSON.stringify(afterForged) !== JSON.stringify(afterDuplicates)) problems.push(`the forged bodies changed something: ${JSON.stringify(afterForged)}`);

      return { results: { baseline, fresh, duplicate, forged: forgedRun }, problems, prepareSeconds };
    }

    // Warm-up: JIT, statement caches and page cache on every path, then forget its figures.
    const warm = await round('sbps-bench-warmup', Math.max(CONNECTIONS, Math.min(500, ORDERS)), 1);
    if (warm.problems.length) process.stderr.write(`[sbps-notifications] warm-up problems: ${warm.problems.join('; ')}\n`);
    serverTimes.clear();
    for (const s of SERIES) loopDelays[s] = [];

    const rounds: Round[] = [];
    for (let i = 1; i <= ROUNDS; i++) {
      roundNo = i;
      const r = await round(`sbps-bench-${i}`, ORDERS, SECONDS);
      rounds.push(r);
      const f = (x: LoadResult) => `${x.rps.toFixed(0)}/s p50 ${x.p50} p99 ${x.p99} ms`;
      process.stderr.write(
        `[sbps-notifications] round ${i} (prepared ${ORDERS} orders in ${r.prepareSeconds.toFixed(1)} s): bare ${f(r.results.baseline)}; ` +
          `fresh ${f(r.results.fresh)} (${((r.results.fresh.rps / r.results.baseline.rps) * 100).toFixed(1)} %); duplicates ${f(r.results.duplicate)}; forged ${f(r.results.forged)}; ` +
          `${r.problems.length ? `PROBLEMS: ${r.problems.join('; ')}` : 'all checks passed'}\n`,
      );
    }

    profiler?.disconnect();
    await app.close();
    await bare.close();
    await rt.close();

    const pick = (s: Series, f: (r: LoadResult) => number) => median(rounds.map((r) => f(r.results[s])));
    const series = Object.fromEntries(
      SERIES.map((s) => [
        s,
        {
          rps: Math.round(pick(s, (r) => r.rps)),
          rpsRange: [Math.round(Math.min(...rounds.map((r) => r.results[s].rps))), Math.round(Math.max(...rounds.map((r) => r.results[s].rps)))],
          p50: Number(pick(s, (r) => r.p50).toFixed(2)),
          p99: Number(pick(s, (r) => r.p99).toFixed(2)),
          max: Number(Math.max(...rounds.map((r) => r.results[s].max)).toFixed(1)),
          perRound: rounds.map((r) => Math.round(r.results[s].rps)),
          ratio: s === 'baseline' ? 1 : Number((pick(s, (r) => r.rps) / pick('baseline', (r) => r.rps)).toFixed(4)),
          ratioPerRoundMedian: s === 'baseline' ? 1 : Number(median(rounds.map((r) => r.results[s].rps / r.results.baseline.rps)).toFixed(4)),
          serverSideMs: s === 'baseline' ? undefined : { p50: Number(pct(serverTimes.get(s) ?? [], 50).toFixed(2)), p99: Number(pct(serverTimes.get(s) ?? [], 99).toFixed(2)) },
          eventLoopDelayMs: { p50: Number(median(loopDelays[s].map((d) => d.p50)).toFixed(1)), p99: Number(median(loopDelays[s].map((d) => d.p99)).toFixed(1)), max: Number(Math.max(...loopDelays[s].map((d) => d.max)).toFixed(1)) },
        },
      ]),
    ) as Record<Series, { rps: number; rpsRange: number[]; p50: number; p99: number; max: number; perRound: number[]; ratio: number; ratioPerRoundMedian: number; serverSideMs?: { p50: number; p99: number }; eventLoopDelayMs: { p50: number; p99: number; max: number } }>;

    const summary = {
      bench: 'sbps-notifications',
      engine,
      engineVersion,
      node: process.version,
      cpu: cpuModel,
      cpus: availableParallelism(),
      loadavg: { start: loadAtStart, end: loadavg().map((x) => Number(x.toFixed(2))) },
      orders: ORDERS,
      connections: CONNECTIONS,
      baselineSeconds: SECONDS,
      rounds: ROUNDS,
      bodyBytes: Math.round(bareBytes / Math.max(1, rounds.reduce((a, r) => a + r.results.baseline.responses, warm.results.baseline.responses))),
      goal: GOAL,
      goalMet: series.fresh.ratio >= GOAL,
      series,
      checksPassed: rounds.every((r) => r.problems.length === 0),
      problems: rounds.flatMap((r, i) => r.problems.map((p) => `round ${i + 1}: ${p}`)),
    };

    const label: Record<Series, string> = {
      baseline: 'bare Fastify POST (raw body, OK,)',
      fresh: 'store: fresh notifications (applied)',
      duplicate: 'store: duplicates (verify + dedupe)',
      forged: 'store: forged hash (verify, NG,)',
    };
    const rows = [['load', 'req/s (median)', 'min – max', 'share of bare', 'p50 ms', 'p99 ms', 'server p50/p99 ms']];
    for (const s of SERIES) {
      const v = series[s];
      rows.push([label[s], String(v.rps), `${v.rpsRange[0]} – ${v.rpsRange[1]}`, s === 'baseline' ? '' : `${(v.ratio * 100).toFixed(1)} %`, String(v.p50), String(v.p99), v.serverSideMs ? `${v.serverSideMs.p50} / ${v.serverSideMs.p99}` : '']);
    }
    const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
    console.log(`\nSBPS result notifications — ${engineVersion}, Node ${process.version}, ${cpuModel} × ${availableParallelism()}: ${ORDERS} per round, ${CONNECTIONS} connections, ${ROUNDS} rounds (baseline ${SECONDS} s)`);
    for (const r of rows) console.log(r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  '));
    console.log(`event-loop delay during the store's loads (median of rounds p50/p99, max): ${SERIES.filter((s) => s !== 'baseline').map((s) => `${s} ${series[s].eventLoopDelayMs.p50}/${series[s].eventLoopDelayMs.p99}, ${series[s].eventLoopDelayMs.max} ms`).join('; ')}`);
    console.log(
      `verified notifications/s as a share of the bare route: ${(series.fresh.ratio * 100).toFixed(1)} % (of the medians; median of per-round shares ${(series.fresh.ratioPerRoundMedian * 100).toFixed(1)} %); goal ≥ ${GOAL * 100} %: ${summary.goalMet ? 'met' : 'NOT met'}`,
    );
    console.log(`checks (every notification OK, and per round: orders paid = events = paid state changes = captured attempts = committed reservations = mail jobs = ${ORDERS}; duplicates and forged bodies change nothing): ${summary.checksPassed ? 'all passed' : `FAILED\n  ${summary.problems.join('\n  ')}`}`);
    console.log(JSON.stringify(summary));
    if (!summary.checksPassed) process.exitCode = 1;
  } finally {
    cleanup();
  }
}

await main();
