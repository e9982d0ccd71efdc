/**
 * The harness behind bench/sbps-notifications.ts and bench/komoju-webhooks.ts: verified gateway
 * notifications per second against a bare Fastify POST route in the same process and run.
 *
 * The whole store runs in this process as `kessai serve` runs it (real database, Fastify on
 * loopback, sandbox mounted, the demo shop seeded, job worker off: the inbox applies notifications
 * in-process, as it does in `kessai serve`). A second, bare Fastify app in the same process has one
 * POST route on the same path that takes the raw body (buffer content-type parser) and answers what
 * the gateway expects. autocannon runs in a worker thread, so the load generator does not share the
 * servers' event loop. Every load uses `connections` connections. Per round:
 *   0. (not timed) `orders` orders of a fresh serial-code product with `orders` units, each paying
 *      with the gateway, and for each attempt the notification the gateway sends (the script of
 *      each gateway says how it is built), plus a forged copy (signature changed);
 *   1. baseline: `seconds` seconds of those bodies (cycled) against the bare route; then "floor":
 *      as long against a route of the bare app that checks an HMAC of the body and appends it to a
 *      table with group commit before answering (see openFloor: the least the rule costs here);
 *      then "app": as long against a route of the store's own Fastify that answers at once (every
 *      hook of the notification route, no verification, no database): the app's share of the cost;
 *   2. fresh: every notification once to POST /webhooks/<gateway>/default. Each is verified and
 *      recorded (group commit) before its answer, then applied by the inbox: payment event, attempt
 *      captured, order paid, stock committed, order_paid mail job. After the load the script waits
 *      until no event is left `received`: that wait is the "drain", and applied_at − received_at of
 *      each event is its time from OK to applied;
 *   3. duplicates: the same notifications again (verified, then ignored by the event's unique key);
 *   4. forged: the forged copies (refused after verification, nothing written).
 * Rates are responses over the time from the first request to the last response; latency is per
 * request from when autocannon builds it to its response (fractional ms). "CPU µs/req" is this
 * thread's CPU time between the first and the last answer (/proc schedstat, sampled every 5 ms) per
 * answer: the server's cost, which moves far less than the rates when other processes take the
 * cores. The load generator reports its own thread's CPU per response too, and both threads' time
 * spent ready but waiting for a core (schedstat's second field): how much the machine's other work
 * took from the run. The fresh load also counts the events applied before it ended. After each round, once the
 * inbox has applied everything, the script checks: every notification answered as expected, orders
 * paid = notifications = payment_events rows (all `applied`, one per attempt, none left `received`),
 * one order → paid state change per order, every attempt captured with its amount, stock committed
 * (on_hand 0, reserved 0), one order_paid mail job per order, no unknown-attempt event or alert; and
 * after the duplicates and the forged bodies, that nothing changed. Figures: medians over the rounds.
 * PostgreSQL: a throwaway cluster as in bench/flash-sale.ts (initdb/pg_ctl, removed at the end).
 * `--profile DIR`: V8's CPU profiler on this thread during each measured load (not during the
 * preparation, the drain or the warm-up): DIR/<series>-round<n>.cpuprofile.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { createRequire } from 'node:module';
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { Worker } from 'node:worker_threads';
import Database from 'better-sqlite3';
import Fastify from 'fastify';
import pg from 'pg';
import { sql, type RawBuilder } from 'kysely';
import { createProduct } from '../src/commerce/catalog.js';
import { createOrder } from '../src/commerce/orders.js';
import { DEFAULT_SHOP_ID, findShopSettings } from '../src/commerce/shops.js';
import { handleNotification } from '../src/payments/service.js';
import type { Order, PaymentAttempt } from '../src/db/schema.js';
import { WEBHOOK_BODY_LIMIT } from '../src/http/routes/webhooks.js';
import type { Runtime } from '../src/runtime.js';
import { freePort } from '../test/helpers/net.js';
import { median, startBenchStore } from './lib.js';

export const GOAL = 0.5;

/** One request as the gateway sends it: the body (ASCII) and the headers that belong to it. */
export interface Notification {
  body: string;
  headers?: Record<string, string>;
}

export interface Answer {
  status: number;
  body: string;
}

/** What differs between gateways; everything else is this harness. */
export interface GatewayBench {
  /** The script's name: its JSON line's `bench`, its messages' prefix. */
  name: string;
  /** For the table's title, e.g. "SBPS result notifications". */
  title: string;
  provider: string;
  /** The payment method each order is created with. */
  method: string;
  /** Headers every request carries (content type, user agent). */
  headers: Record<string, string>;
  /** What the gateway must hear for a notification it sent, and its content type. */
  ok: Answer & { contentType: string };
  /** What the store answers a forged one. */
  refused: Answer;
  /** The store's running runtime → a maker of the notification (and a forged copy) for one attempt. */
  setup(rt: Runtime): Promise<(a: { attempt: PaymentAttempt; order: Order; token: string }) => Promise<{ genuine: Notification; forged: Notification }>>;
}

// ------------------------------------------------------------------ load generator (worker thread)

interface LoadJob {
  url: string;
  /** Request i sends requests[i % length]. */
  requests: Notification[];
  headers: Record<string, string>;
  connections: number;
  /** Send exactly this many requests (fresh, duplicates, forged), … */
  amount?: number;
  /** … or send for this many seconds (the baseline). */
  seconds?: number;
  /** The answer every request should get. */
  expect: Answer;
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
  /** Requests answered as expected exactly once (only meaningful with `amount` = requests.length). */
  answeredOnce: number;
  errors: number;
  timeouts: number;
  /** The load generator's thread: CPU µs per response, and the share of the load's time it waited for a core. */
  loadCpuUsPerRequest: number;
  loadWaitShare: number;
}

/**
 * The worker's code, plain JavaScript: a worker thread does not inherit tsx's loader on Node 20.
 * `setupRequest` runs right before each request is written (autocannon builds the first request of a
 * connection when it creates it and writes it at once), so it hands out the requests one by one from
 * a counter shared by all connections, and stamps the request's start for the latency.
 */
const LOAD_WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const autocannon = require(workerData.autocannon);
const job = workerData.job;
const requests = job.requests;
const perRequest = new Uint32Array(requests.length);
const latencies = [];
const unexpected = {};
let next = 0;
let first = 0;
let last = 0;
let responses = 0;
// This thread's CPU and run-queue wait (ns) from the first request to the last response: the load generator's own cost.
const fs = require('node:fs');
const sched = () => { try { return fs.readFileSync('/proc/thread-self/schedstat', 'utf8').split(' ').map(Number); } catch { return [NaN, NaN]; } };
let schedFirst;
let schedLast;
const opts = {
  url: job.url,
  connections: job.connections,
  timeout: 60,
  ...(job.amount ? { amount: job.amount } : { duration: job.seconds }),
  requests: [{
    method: 'POST',
    headers: job.headers,
    setupRequest: (req, context) => {
      const i = next++;
      context.i = i % requests.length;
      context.t = performance.now();
      if (first === 0) { first = context.t; schedFirst = sched(); }
      const r = requests[context.i];
      return r.headers ? { ...req, body: r.body, headers: { ...req.headers, ...r.headers } } : { ...req, body: r.body };
    },
    onResponse: (status, body, context) => {
      last = performance.now();
      responses += 1;
      if (responses === job.amount) schedLast = sched();
      latencies.push(last - context.t);
      if (status === job.expect.status && body === job.expect.body) perRequest[context.i] += 1;
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
  for (const n of perRequest) if (n === 1) answeredOnce += 1;
  const seconds = (last - first) / 1000;
  schedLast ??= sched();
  parentPort.postMessage({
    loadCpuUsPerRequest: (schedLast[0] - schedFirst[0]) / 1000 / Math.max(1, responses),
    loadWaitShare: (schedLast[1] - schedFirst[1]) / 1e6 / (last - first),
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

/** CPU time at `t`, interpolated between the samples ([time, cpu ns]) around it. */
function cpuAt(samples: [number, number][], t: number): number {
  const i = samples.findIndex(([at]) => at >= t);
  if (i <= 0) return samples[Math.max(0, i)]?.[1] ?? Number.NaN;
  const [t0, c0] = samples[i - 1]!;
  const [t1, c1] = samples[i]!;
  return t1 === t0 ? c1 : c0 + ((c1 - c0) * (t - t0)) / (t1 - t0);
}

/**
 * CPU time of this process's main thread (the servers' thread), ns, from the scheduler's own
 * account (/proc/<pid>/task/<pid>/schedstat): unlike throughput or event-loop utilisation it does
 * not grow when other processes take the cores. The second figure is the time the thread was ready
 * but waited for a core: how much the machine's other work took from the server.
 */
function threadSched(): [cpu: number, wait: number] {
  try {
    const [cpu, wait] = readFileSync(`/proc/${process.pid}/task/${process.pid}/schedstat`, 'utf8').split(' ').map(Number);
    return [cpu!, wait!];
  } catch {
    return [Number.NaN, Number.NaN];
  }
}

const pct = (xs: number[], p: number): number => {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;
};

type Series = 'baseline' | 'floor' | 'app' | 'fresh' | 'duplicate' | 'forged';
const SERIES: Series[] = ['baseline', 'floor', 'app', 'fresh', 'duplicate', 'forged'];

/**
 * The floor: the least that "verify, record durably, then answer" costs on this machine, built from
 * nothing but the parts every implementation needs. On the bare Fastify app, a route that checks an
 * HMAC-SHA256 of the raw body (hex, in a header, constant-time compare), appends the body to a table
 * in a database of the store's engine — every request read in one turn of the event loop in one
 * insert and commit, as the store's inbox does — and answers once that commit returns. No parsing,
 * no shop, no framework hooks. The store's fresh notifications do more (they parse the gateway's
 * format, find the shop, keep the event's unique key, apply it afterwards); the gap between the
 * floor and them is the store's own cost, and the floor's own share of the bare route is the most
 * any implementation of the rule could reach here.
 */
const FLOOR_KEY = 'floor-key-for-the-benchmark';
const floorSignature = (body: string): string => createHmac('sha256', FLOOR_KEY).update(body, 'latin1').digest('hex');

/** The floor's verification: the HMAC in the header matches the body's. */
function floorAccepts(body: Buffer, signature: string | string[] | undefined): boolean {
  const given = Buffer.from(String(signature ?? ''), 'hex');
  const expected = createHmac('sha256', FLOOR_KEY).update(body).digest();
  return given.length === expected.length && timingSafeEqual(given, expected);
}

interface Floor {
  /** Appends the bodies in one transaction; resolves when it is committed. */
  append(bodies: Buffer[]): Promise<void>;
  close(): Promise<void>;
}

async function openFloor(engine: 'sqlite' | 'postgres', databaseUrl: string): Promise<Floor> {
  if (engine === 'postgres') {
    const pool = new pg.Pool({ connectionString: databaseUrl, max: 4 });
    await pool.query('create table bench_floor (id bigserial primary key, received_at timestamptz not null default now(), body bytea not null)');
    return {
      append: async (bodies) => void (await pool.query('insert into bench_floor (body) select unnest($1::bytea[])', [bodies])),
      close: () => pool.end(),
    };
  }
  // The store's SQLite settings: WAL, synchronous=NORMAL (docs/decisions.md).
  const dir = mkdtempSync(join(tmpdir(), 'kessai-bench-floor-'));
  const db = new Database(join(dir, 'floor.db'));
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.exec('create table bench_floor (id integer primary key, received_at text not null, body blob not null)');
  const insert = db.prepare('insert into bench_floor (received_at, body) values (?, ?)');
  const appendAll = db.transaction((bodies: Buffer[]) => {
    const at = new Date().toISOString();
    for (const body of bodies) insert.run(at, body);
  });
  return {
    append: async (bodies) => appendAll(bodies),
    close: async () => {
      db.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Group commit for the floor: what arrives in one turn of the event loop is appended together. */
function floorRecorder(floor: Floor): (body: Buffer) => Promise<void> {
  let waiting: { body: Buffer; done: (error?: unknown) => void }[] = [];
  let scheduled = false;
  const flush = async () => {
    const batch = waiting;
    waiting = [];
    try {
      await floor.append(batch.map((w) => w.body));
      for (const w of batch) w.done();
    } catch (error) {
      for (const w of batch) w.done(error);
    }
    scheduled = false;
    if (waiting.length > 0) schedule();
  };
  const schedule = () => {
    scheduled = true;
    setImmediate(() => void flush());
  };
  return (body) =>
    new Promise<void>((resolve, reject) => {
      waiting.push({ body, done: (error) => (error ? reject(error) : resolve()) });
      if (!scheduled) schedule();
    });
}

/** How the inbox kept up with one fresh load. */
interface Application {
  /** From the load's last response until no event was left `received`. */
  drainSeconds: number;
  /** applied_at − received_at per event (ms; timestamps have 1 ms resolution). */
  lagMs: { p50: number; p99: number; max: number };
  /** Distinct received_at values among the round's events: a lower bound of the inserts (batches) that recorded them. */
  batches: number;
  /** Events applied before the load's end was seen here (the load generator reports a little after its last response). */
  appliedDuringLoad: number;
}

export async function runNotificationBench(spec: GatewayBench): Promise<void> {
  const { values: args } = parseArgs({
    options: {
      engine: { type: 'string', default: process.env.KESSAI_BENCH_ENGINE ?? 'sqlite' },
      orders: { type: 'string', default: '3000' },
      seconds: { type: 'string', default: '3' },
      connections: { type: 'string', default: '64' },
      rounds: { type: 'string', default: '5' },
      profile: { type: 'string' },
      parts: { type: 'boolean', default: false },
    },
  });
  const engine = args.engine;
  if (engine !== 'sqlite' && engine !== 'postgres') throw new Error(`--engine ${engine}: expected sqlite or postgres`);
  const ORDERS = Number(args.orders);
  const SECONDS = Number(args.seconds);
  const CONNECTIONS = Number(args.connections);
  const ROUNDS = Number(args.rounds);
  if (!(ORDERS >= CONNECTIONS)) throw new Error('--orders must be at least --connections (autocannon spreads a fixed amount over the connections)');
  const log = (line: string) => process.stderr.write(`[${spec.name}] ${line}\n`);
  const path = `/webhooks/${spec.provider}/${DEFAULT_SHOP_ID}`;

  const store = await startBenchStore(engine, spec.provider);
  const { cleanup } = store;
  const loadAtStart = loadavg().map((x) => Number(x.toFixed(2)));
  try {
    const { rt, app, base, port, engineVersion } = store;
    const { ctx } = rt;
    const db = ctx.db;

    // Server-side time of the webhook route per series (Fastify's elapsedTime: request to response sent).
    let phase: Series | undefined;
    const serverTimes = new Map<Series, number[]>();
    /** When this series' first and last answers left, on this thread's clock (both servers). */
    const answered = { first: 0, last: 0, count: 0, applyingFirst: 0, applyingLast: 0 };
    const answer = () => {
      const now = performance.now();
      const applying = rt.payments.inbox.applyingMs;
      if (answered.count++ === 0) {
        answered.first = now;
        answered.applyingFirst = applying;
      }
      answered.last = now;
      answered.applyingLast = applying;
    };
    // The store's own Fastify answering at once: every hook the notification route has (request id,
    // child logger, helmet's check, the metrics histogram), the same raw-body parser, no verification
    // and no database. What separates it from the bare route is the app; what separates the
    // notifications from it is verifying and recording.
    const appPath = `/bench${path}`;
    await app.register(async (scope) => {
      scope.removeAllContentTypeParsers();
      scope.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: WEBHOOK_BODY_LIMIT }, (_request, body, done) => done(null, body));
      scope.post(appPath, { helmet: false }, async (_request, reply) => reply.status(spec.ok.status).type(spec.ok.contentType).send(spec.ok.body));
    });
    app.addHook('onResponse', async (request, reply) => {
      if (phase && (request.url === path || request.url === appPath)) {
        answer();
        let list = serverTimes.get(phase);
        if (!list) serverTimes.set(phase, (list = []));
        list.push(reply.elapsedTime);
      }
    });
    await app.listen({ port, host: '127.0.0.1' });

    // The baseline: a bare Fastify app in this process, one POST route, raw body, the gateway's OK.
    const barePort = await freePort();
    const bare = Fastify({ logger: false });
    bare.removeAllContentTypeParsers();
    bare.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: 256 * 1024 }, (_request, body, done) => done(null, body));
    let bareBytes = 0;
    bare.addHook('onResponse', async () => {
      if (phase) answer();
    });
    bare.post(path, async (request, reply) => {
      bareBytes += Buffer.isBuffer(request.body) ? request.body.length : 0;
      return reply.status(spec.ok.status).type(spec.ok.contentType).send(spec.ok.body);
    });
    const floor = await openFloor(engine, ctx.config.databaseUrl);
    const floorAppend = floorRecorder(floor);
    let floorRecorded = 0;
    bare.post(`/floor${path}`, async (request, reply) => {
      const body = Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0);
      if (!floorAccepts(body, request.headers['x-floor-signature'])) return reply.status(401).send('signature mismatch');
      await floorAppend(body);
      floorRecorded += 1;
      return reply.status(spec.ok.status).type(spec.ok.contentType).send(spec.ok.body);
    });
    await bare.listen({ port: barePort, host: '127.0.0.1' });

    const notificationFor = await spec.setup(rt);
    const cpuModel = cpus()[0]?.model ?? 'unknown CPU';
    log(`${engineVersion}, ${cpuModel} × ${availableParallelism()}, store at ${base}, bare route at 127.0.0.1:${barePort}; ${ROUNDS} rounds of ${ORDERS} notifications, ${CONNECTIONS} connections, baseline ${SECONDS} s`);

    /** `n` orders of a fresh product with n units, and the notification the gateway would send for each. */
    async function prepare(code: string, n: number): Promise<{ skuId: string; genuine: Notification[]; forged: Notification[] }> {
      await createProduct(ctx, DEFAULT_SHOP_ID, { code, name: `ベンチ ${code}`, kind: 'serial_code', price: 1500, stock: n });
      const sku = await db.selectFrom('skus').select('id').where('shop_id', '=', DEFAULT_SHOP_ID).where('code', '=', code).executeTakeFirstOrThrow();
      const genuine: Notification[] = [];
      const forged: Notification[] = [];
      for (let i = 0; i < n; i++) {
        const created = await createOrder(ctx, {
          shop: DEFAULT_SHOP_ID,
          customer: { email: `buyer${i}@example.jp`, name: '山田 花子' },
          lines: [{ sku: code, quantity: 1 }],
          payment: { provider: spec.provider, method: spec.method },
        });
        const attempt = await db.selectFrom('payment_attempts').selectAll().where('id', '=', created.attemptId).executeTakeFirstOrThrow();
        const made = await notificationFor({ attempt, order: created.order, token: created.token });
        genuine.push(made.genuine);
        forged.push(made.forged);
      }
      return { skuId: sku.id, genuine, forged };
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
        eventsReceived: await count(sql`select count(*) as n from payment_events where outcome = 'received'`),
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
      expect('events still received', s.eventsReceived, 0);
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

    function checkLoad(what: string, r: LoadResult, n: number, want: Answer): string[] {
      const problems: string[] = [];
      if (r.sent !== n) problems.push(`${what}: ${r.sent} requests sent, expected ${n}`);
      if (r.answeredOnce !== n) problems.push(`${what}: ${r.answeredOnce} of ${n} requests answered ${want.status} ${JSON.stringify(want.body)} exactly once`);
      if (Object.keys(r.unexpected).length) problems.push(`${what}: unexpected answers ${JSON.stringify(r.unexpected)}`);
      if (r.errors || r.timeouts) problems.push(`${what}: ${r.errors} connection errors, ${r.timeouts} timeouts`);
      return problems;
    }

    /** Waits until the inbox has applied every recorded event; how long that took after the load ended. */
    async function drained(): Promise<number> {
      const t0 = performance.now();
      const deadline = t0 + 600_000;
      while ((await count(sql`select count(*) as n from payment_events where outcome = 'received'`)) > 0) {
        if (performance.now() > deadline) throw new Error('events still received 10 minutes after the load: the inbox is stuck');
        await sleep(5);
      }
      return (performance.now() - t0) / 1000;
    }

    async function applicationOf(skuId: string, drainSeconds: number, loadEnd: string): Promise<Application> {
      const rows = (
        await sql<{ received_at: string; applied_at: string | null }>`
          select e.received_at, e.applied_at from payment_events e join payment_attempts a on a.id = e.attempt_id
          where a.order_id in (select order_id from order_lines where sku_id = ${skuId})`.execute(db)
      ).rows;
      const lags = rows.map((r) => (r.applied_at ? Date.parse(r.applied_at) - Date.parse(r.received_at) : Number.NaN));
      return {
        drainSeconds: Number(drainSeconds.toFixed(3)),
        lagMs: { p50: pct(lags, 50), p99: pct(lags, 99), max: Math.max(...lags) },
        batches: new Set(rows.map((r) => r.received_at)).size,
        appliedDuringLoad: rows.filter((r) => r.applied_at !== null && r.applied_at <= loadEnd).length,
      };
    }

    const loopDelays: Record<Series, { p50: number; p99: number; max: number }[]> = { baseline: [], floor: [], app: [], fresh: [], duplicate: [], forged: [] };
    /** This thread's CPU time from the first to the last answer, per answer, µs: what a request costs the server, however busy the machine was. */
    const busyPerRequest: Record<Series, number[]> = { baseline: [], floor: [], app: [], fresh: [], duplicate: [], forged: [] };
    /** The share of the load's time the server's thread (and the load generator's) waited for a core, and the load generator's CPU µs per response. */
    const serverWaitShare: Record<Series, number[]> = { baseline: [], floor: [], app: [], fresh: [], duplicate: [], forged: [] };
    const loadWait: Record<Series, number[]> = { baseline: [], floor: [], app: [], fresh: [], duplicate: [], forged: [] };
    const loadCpu: Record<Series, number[]> = { baseline: [], floor: [], app: [], fresh: [], duplicate: [], forged: [] };
    /** The inbox's time applying between a load's first and last answer, as a share of that time. */
    const applyingShare: Record<Series, number[]> = { baseline: [], floor: [], app: [], fresh: [], duplicate: [], forged: [] };
    let profiler: Session | undefined;
    let roundNo = 0;
    if (args.profile) {
      mkdirSync(args.profile, { recursive: true });
      profiler = new Session();
      profiler.connect();
      await profiler.post('Profiler.enable');
    }
    /** One measured load with the store's server-side time and event-loop delay recorded under `series`. */
    async function measured(series: Series, job: LoadJob): Promise<LoadResult> {
      const delay = monitorEventLoopDelay({ resolution: 10 });
      const profiling = profiler !== undefined && roundNo > 0;
      if (profiling) await profiler!.post('Profiler.start');
      phase = series;
      delay.enable();
      // This thread's CPU time sampled every 5 ms, read at the first and the last answer: what
      // happens before the first request and after the last (the inbox applying) is not counted.
      answered.count = 0;
      const samples: [number, number][] = [];
      const waits: [number, number][] = [];
      const sample = () => {
        const now = performance.now();
        const [cpu, wait] = threadSched();
        samples.push([now, cpu]);
        waits.push([now, wait]);
      };
      sample();
      const sampler = setInterval(sample, 5);
      const r = await load(job);
      clearInterval(sampler);
      sample();
      delay.disable();
      phase = undefined;
      busyPerRequest[series].push((cpuAt(samples, answered.last) - cpuAt(samples, answered.first)) / 1000 / Math.max(1, answered.count - 1));
      serverWaitShare[series].push((cpuAt(waits, answered.last) - cpuAt(waits, answered.first)) / 1e6 / Math.max(1e-9, answered.last - answered.first));
      loadCpu[series].push(r.loadCpuUsPerRequest);
      // From the first to the last answer, as the CPU figures: what the inbox applied after the load is the drain's.
      applyingShare[series].push((answered.applyingLast - answered.applyingFirst) / Math.max(1e-9, answered.last - answered.first));
      loadWait[series].push(r.loadWaitShare);
      if (profiling) {
        const { profile } = await profiler!.post('Profiler.stop');
        writeFileSync(join(args.profile!, `${series}-round${roundNo}.cpuprofile`), JSON.stringify(profile));
      }
      loopDelays[series].push({ p50: delay.percentile(50) / 1e6, p99: delay.percentile(99) / 1e6, max: delay.max / 1e6 });
      return r;
    }

    interface Round {
      results: Record<Series, LoadResult>;
      application: Application;
      problems: string[];
      prepareSeconds: number;
    }

    const OK: Answer = { status: spec.ok.status, body: spec.ok.body };
    async function round(code: string, n: number, baselineSeconds: number): Promise<Round> {
      const t0 = performance.now();
      const { skuId, genuine, forged } = await prepare(code, n);
      const prepareSeconds = (performance.now() - t0) / 1000;
      const problems: string[] = [];
      const before = await stateOf(skuId);
      if ((before.ordersByState.pending_payment ?? 0) !== n || before.events !== 0) problems.push(`before: ${JSON.stringify(before)}`);

      const baseline = await measured('baseline', { url: `http://127.0.0.1:${barePort}${path}`, requests: genuine, headers: spec.headers, connections: CONNECTIONS, seconds: baselineSeconds, expect: OK });
      if (Object.keys(baseline.unexpected).length || baseline.errors || baseline.timeouts) problems.push(`baseline: ${JSON.stringify({ unexpected: baseline.unexpected, errors: baseline.errors, timeouts: baseline.timeouts })}`);

      const floorRequests = genuine.map((g) => ({ body: g.body, headers: { ...g.headers, 'x-floor-signature': floorSignature(g.body) } }));
      const floorBefore = floorRecorded;
      const floorLoad = await measured('floor', { url: `http://127.0.0.1:${barePort}/floor${path}`, requests: floorRequests, headers: spec.headers, connections: CONNECTIONS, seconds: baselineSeconds, expect: OK });
      if (Object.keys(floorLoad.unexpected).length || floorLoad.errors || floorLoad.timeouts) problems.push(`floor: ${JSON.stringify({ unexpected: floorLoad.unexpected, errors: floorLoad.errors, timeouts: floorLoad.timeouts })}`);
      if (floorRecorded - floorBefore < floorLoad.responses) problems.push(`floor: ${floorLoad.responses} answered but ${floorRecorded - floorBefore} recorded`);

      const appLoad = await measured('app', { url: `${base}${appPath}`, requests: genuine, headers: spec.headers, connections: CONNECTIONS, seconds: baselineSeconds, expect: OK });
      if (Object.keys(appLoad.unexpected).length || appLoad.errors || appLoad.timeouts) problems.push(`app: ${JSON.stringify({ unexpected: appLoad.unexpected, errors: appLoad.errors, timeouts: appLoad.timeouts })}`);

      const url = `${base}${path}`;
      const fresh = await measured('fresh', { url, requests: genuine, headers: spec.headers, connections: CONNECTIONS, amount: n, expect: OK });
      const loadEnd = new Date().toISOString();
      problems.push(...checkLoad('fresh', fresh, n, OK));
      const application = await applicationOf(skuId, await drained(), loadEnd);
      const afterFresh = await stateOf(skuId);
      problems.push(...checkPaid(afterFresh, n).map((p) => `after the notifications: ${p}`));

      const duplicate = await measured('duplicate', { url, requests: genuine, headers: spec.headers, connections: CONNECTIONS, amount: n, expect: OK });
      problems.push(...checkLoad('duplicates', duplicate, n, OK));
      await drained();
      const afterDuplicates = await stateOf(skuId);
      problems.push(...checkPaid(afterDuplicates, n).map((p) => `after the duplicates: ${p}`));

      const forgedRun = await measured('forged', { url, requests: forged, headers: spec.headers, connections: CONNECTIONS, amount: n, expect: spec.refused });
      problems.push(...checkLoad('forged', forgedRun, n, spec.refused));
      await drained();
      const afterForged = await stateOf(skuId);
      if (JSON.stringify(afterForged) !== JSON.stringify(afterDuplicates)) problems.push(`the forged bodies changed something: ${JSON.stringify(afterForged)}`);

      return { results: { baseline, floor: floorLoad, app: appLoad, fresh, duplicate, forged: forgedRun }, application, problems, prepareSeconds };
    }

    if (args.parts) {
      await parts();
      await app.close();
      await bare.close();
      await floor.close();
      await rt.close();
      return;
    }

    /**
     * `--parts`: where a notification's time goes, without HTTP. Per round, `orders` fresh orders and
     * their notifications as above; then this thread's CPU per notification for: the floor's work
     * (HMAC check and group-committed append, `GROUP` at a time); the provider's verification and
     * reading of the facts alone; a forged notification through `handleNotification`; fresh
     * notifications through `handleNotification`, `GROUP` at a time as the inbox groups them under
     * load (the inbox applies meanwhile at its burst share, as in the server); the rest of the
     * application once they stop, per event it applied; and the same notifications again
     * (duplicates). On PostgreSQL the database server's own CPU is not in these figures.
     */
    async function parts(): Promise<void> {
      const GROUP = 26;
      const provider = rt.payments.providers.get(spec.provider);
      const settings = await findShopSettings(ctx, DEFAULT_SHOP_ID);
      if (!provider || !settings) throw new Error(`the ${spec.provider} provider or the demo shop is missing`);
      const names = ['floor', 'verify', 'forged', 'fresh', 'applied after', 'duplicate'] as const;
      const figures = Object.fromEntries(names.map((n) => [n, [] as number[]])) as Record<(typeof names)[number], number[]>;
      const cpuUs = () => threadSched()[0] / 1000;
      const requestOf = (x: Notification) => ({
        rawBody: Buffer.from(x.body, 'latin1'),
        headers: Object.fromEntries(Object.entries({ ...spec.headers, ...x.headers }).map(([k, v]) => [k.toLowerCase(), v])),
        remoteAddress: '127.0.0.1',
      });
      async function timed(run: () => Promise<void>): Promise<number> {
        const before = cpuUs();
        await run();
        return cpuUs() - before;
      }
      async function grouped<T>(items: T[], each: (item: T) => Promise<unknown>): Promise<void> {
        for (let i = 0; i < items.length; i += GROUP) await Promise.all(items.slice(i, i + GROUP).map(each));
      }
      for (let r = 0; r <= ROUNDS; r++) {
        const n = r === 0 ? Math.min(500, ORDERS) : ORDERS;
        const { skuId, genuine, forged } = await prepare(`${spec.provider}-parts-${r}`, n);
        const fresh = genuine.map(requestOf);
        const refused = forged.map(requestOf);
        const floorBodies = genuine.map((g) => ({ body: Buffer.from(g.body, 'latin1'), signature: floorSignature(g.body) }));
        const answers: string[] = [];
        const answer = async (req: ReturnType<typeof requestOf>) => {
          const a = await handleNotification(rt.payments, spec.provider, DEFAULT_SHOP_ID, req);
          answers.push(`${a.status} ${a.body}`);
        };
        const floorCpu = await timed(() =>
          grouped(floorBodies, async ({ body, signature }) => {
            if (!floorAccepts(body, signature)) throw new Error('the floor refused a body it signed');
            await floorAppend(body);
          }),
        );
        const verifyCpu = await timed(async () => {
          for (const req of fresh) {
            const v = await provider.parseNotification({ ...req, settings });
            if (!('verified' in v) || !v.verified) throw new Error(`${spec.provider} did not verify its own notification`);
          }
        });
        const forgedCpu = await timed(async () => {
          for (const req of refused) await answer(req);
        });
        const freshCpu = await timed(() => grouped(fresh, answer));
        const waiting = Number((await sql<{ n: number | string }>`select count(*) as n from payment_events where outcome = 'received'`.execute(db)).rows[0]?.n ?? 0);
        const drainCpu = await timed(() => rt.payments.inbox.settled());
        const duplicateCpu = await timed(() => grouped(fresh, answer));
        const problems = checkPaid(await stateOf(skuId), n);
        const ok = `${spec.ok.status} ${spec.ok.body}`;
        const no = `${spec.refused.status} ${spec.refused.body}`;
        const wrong = answers.filter((a, i) => a !== (i < n ? no : ok));
        if (wrong.length) problems.push(`${wrong.length} unexpected answers, e.g. ${wrong[0]}`);
        if (problems.length) throw new Error(`parts round ${r}: ${problems.join('; ')}`);
        if (r === 0) continue;
        figures.floor.push(floorCpu / n);
        figures.verify.push(verifyCpu / n);
        figures.forged.push(forgedCpu / n);
        figures.fresh.push(freshCpu / n);
        figures['applied after'].push(waiting > 0 ? drainCpu / waiting : Number.NaN);
        figures.duplicate.push(duplicateCpu / n);
        log(`parts round ${r}: ${names.map((k) => `${k} ${figures[k].at(-1)!.toFixed(1)}`).join(', ')} µs per notification (${waiting} of ${n} applied after the last)`);
      }
      const floorUs = median(figures.floor);
      const label: Record<(typeof names)[number], string> = {
        floor: `floor: HMAC check + append, ${GROUP} at a time`,
        verify: `${spec.provider}: verify and read the facts (parseNotification)`,
        forged: 'forged notification (handleNotification)',
        fresh: `fresh notification, ${GROUP} at a time (verify, record; the inbox applies meanwhile)`,
        'applied after': 'applying, per event applied after the last one arrived',
        duplicate: `duplicate, ${GROUP} at a time (verify, insert ignored)`,
      };
      console.log(`\n${spec.title}, the parts without HTTP — ${engineVersion}, Node ${process.version}: ${ORDERS} per round, ${ROUNDS} rounds; this thread's CPU µs per notification (median; min – max) and as a multiple of the floor`);
      for (const k of names) {
        const xs = figures[k];
        console.log(`${label[k].padEnd(92)} ${median(xs).toFixed(1).padStart(7)}  (${Math.min(...xs).toFixed(1)} – ${Math.max(...xs).toFixed(1)})  ${(median(xs) / floorUs).toFixed(1).padStart(5)} ×`);
      }
      console.log(JSON.stringify({ bench: `${spec.name}-parts`, engine, engineVersion, node: process.version, orders: ORDERS, rounds: ROUNDS, group: GROUP, usPerNotification: Object.fromEntries(names.map((k) => [k, Number(median(figures[k]).toFixed(1))])) }));
    }

    // Warm-up: JIT, statement caches and page cache on every path, then forget its figures.
    const warm = await round(`${spec.provider}-bench-warmup`, Math.max(CONNECTIONS, Math.min(500, ORDERS)), 1);
    if (warm.problems.length) log(`warm-up problems: ${warm.problems.join('; ')}`);
    serverTimes.clear();
    for (const s of SERIES) {
      loopDelays[s] = [];
      busyPerRequest[s] = [];
      serverWaitShare[s] = [];
      loadWait[s] = [];
      loadCpu[s] = [];
      applyingShare[s] = [];
    }

    const rounds: Round[] = [];
    for (let i = 1; i <= ROUNDS; i++) {
      roundNo = i;
      const r = await round(`${spec.provider}-bench-${i}`, ORDERS, SECONDS);
      rounds.push(r);
      const f = (x: LoadResult) => `${x.rps.toFixed(0)}/s p50 ${x.p50} p99 ${x.p99} ms`;
      const busy = (s: Series) =>
        `${Math.round(busyPerRequest[s].at(-1) ?? 0)} µs CPU/req (load generator ${Math.round(loadCpu[s].at(-1) ?? 0)}; waited for a core: server ${Math.round((serverWaitShare[s].at(-1) ?? 0) * 100)} %, load generator ${Math.round((loadWait[s].at(-1) ?? 0) * 100)} %)`;
      log(
        `round ${i} (prepared ${ORDERS} orders in ${r.prepareSeconds.toFixed(1)} s): bare ${f(r.results.baseline)} ${busy('baseline')}; floor ${f(r.results.floor)} ${busy('floor')} (${((r.results.floor.rps / r.results.baseline.rps) * 100).toFixed(1)} %); app ${f(r.results.app)} ${busy('app')} (${((r.results.app.rps / r.results.baseline.rps) * 100).toFixed(1)} %); ` +
          `fresh ${f(r.results.fresh)} ${busy('fresh')} (${((r.results.fresh.rps / r.results.baseline.rps) * 100).toFixed(1)} %), all applied ${r.application.drainSeconds.toFixed(2)} s after the last OK, OK→applied p50 ${r.application.lagMs.p50} p99 ${r.application.lagMs.p99} ms, ≥ ${r.application.batches} inserts, ${r.application.appliedDuringLoad} applied during the load (applying took ${Math.round((applyingShare.fresh.at(-1) ?? 0) * 100)} % of it); ` +
          `duplicates ${f(r.results.duplicate)} ${busy('duplicate')}; forged ${f(r.results.forged)} ${busy('forged')}; ${r.problems.length ? `PROBLEMS: ${r.problems.join('; ')}` : 'all checks passed'}`,
      );
    }

    profiler?.disconnect();
    await app.close();
    await bare.close();
    await floor.close();
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
          busyUsPerRequest: Math.round(median(busyPerRequest[s])),
          loadGeneratorUsPerRequest: Math.round(median(loadCpu[s])),
          waitedForCore: { server: Number(median(serverWaitShare[s]).toFixed(3)), loadGenerator: Number(median(loadWait[s]).toFixed(3)) },
          eventLoopDelayMs: { p50: Number(median(loopDelays[s].map((d) => d.p50)).toFixed(1)), p99: Number(median(loopDelays[s].map((d) => d.p99)).toFixed(1)), max: Number(Math.max(...loopDelays[s].map((d) => d.max)).toFixed(1)) },
        },
      ]),
    ) as Record<Series, { rps: number; rpsRange: number[]; p50: number; p99: number; max: number; perRound: number[]; ratio: number; ratioPerRoundMedian: number; serverSideMs?: { p50: number; p99: number }; busyUsPerRequest: number; loadGeneratorUsPerRequest: number; waitedForCore: { server: number; loadGenerator: number }; eventLoopDelayMs: { p50: number; p99: number; max: number } }>;
    const application = {
      drainSeconds: median(rounds.map((r) => r.application.drainSeconds)),
      drainSecondsRange: [Math.min(...rounds.map((r) => r.application.drainSeconds)), Math.max(...rounds.map((r) => r.application.drainSeconds))],
      lagMs: { p50: median(rounds.map((r) => r.application.lagMs.p50)), p99: median(rounds.map((r) => r.application.lagMs.p99)), max: Math.max(...rounds.map((r) => r.application.lagMs.max)) },
      appliedPerSecond: Math.round(median(rounds.map((r) => ORDERS / (r.results.fresh.seconds + r.application.drainSeconds)))),
      rowsPerInsertAtMost: Number(median(rounds.map((r) => ORDERS / r.application.batches)).toFixed(1)),
      appliedDuringLoad: median(rounds.map((r) => r.application.appliedDuringLoad)),
      applyingShareOfFreshLoad: Number(median(applyingShare.fresh).toFixed(3)),
    };

    const summary = {
      bench: spec.name,
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
      application,
      checksPassed: rounds.every((r) => r.problems.length === 0),
      problems: rounds.flatMap((r, i) => r.problems.map((p) => `round ${i + 1}: ${p}`)),
    };

    const label: Record<Series, string> = {
      baseline: `bare Fastify POST (raw body, ${spec.ok.body})`,
      floor: 'floor: bare + HMAC check + group-committed insert',
      app: `store's Fastify, a route that only answers ${spec.ok.body}`,
      fresh: 'store: fresh notifications (recorded, answered)',
      duplicate: 'store: duplicates (verify, insert ignored)',
      forged: `store: forged signature (verify, ${spec.refused.status})`,
    };
    const rows = [['load', 'req/s (median)', 'min – max', 'share of bare', 'p50 ms', 'p99 ms', 'server p50/p99 ms', 'CPU µs/req', 'load gen. µs/req', 'waited for a core: server / load gen.']];
    for (const s of SERIES) {
      const v = series[s];
      rows.push([label[s], String(v.rps), `${v.rpsRange[0]} – ${v.rpsRange[1]}`, s === 'baseline' ? '' : `${(v.ratio * 100).toFixed(1)} %`, String(v.p50), String(v.p99), v.serverSideMs ? `${v.serverSideMs.p50} / ${v.serverSideMs.p99}` : '', String(v.busyUsPerRequest), String(v.loadGeneratorUsPerRequest), `${Math.round(v.waitedForCore.server * 100)} % / ${Math.round(v.waitedForCore.loadGenerator * 100)} %`]);
    }
    const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
    console.log(`\n${spec.title} — ${engineVersion}, Node ${process.version}, ${cpuModel} × ${availableParallelism()}: ${ORDERS} per round, ${CONNECTIONS} connections, ${ROUNDS} rounds (baseline ${SECONDS} s)`);
    for (const r of rows) console.log(r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  '));
    console.log(`event-loop delay during the store's loads (median of rounds p50/p99, max): ${SERIES.filter((s) => s !== 'baseline').map((s) => `${s} ${series[s].eventLoopDelayMs.p50}/${series[s].eventLoopDelayMs.p99}, ${series[s].eventLoopDelayMs.max} ms`).join('; ')}`);
    console.log(
      `application (median of rounds): all ${ORDERS} applied ${application.drainSeconds.toFixed(2)} s after the last OK (${application.drainSecondsRange.map((x) => x.toFixed(2)).join(' – ')}), ` +
        `${application.appliedPerSecond} applied/s over load + drain, OK → applied p50 ${application.lagMs.p50} ms, p99 ${application.lagMs.p99} ms, max ${application.lagMs.max} ms; ` +
        `at most ${application.rowsPerInsertAtMost} notifications per insert on average; applying took ${Math.round(application.applyingShareOfFreshLoad * 100)} % of the fresh load's time`,
    );
    console.log(
      `verified notifications/s as a share of the bare route: ${(series.fresh.ratio * 100).toFixed(1)} % (of the medians; median of per-round shares ${(series.fresh.ratioPerRoundMedian * 100).toFixed(1)} %), p99 ${series.fresh.p99} ms at ${CONNECTIONS} connections; goal ≥ ${GOAL * 100} %: ${summary.goalMet ? 'met' : 'NOT met'}`,
    );
    console.log(`checks (every notification answered, and per round once applied: orders paid = events applied = paid state changes = captured attempts = committed reservations = mail jobs = ${ORDERS}, none left received; duplicates and forged bodies change nothing): ${summary.checksPassed ? 'all passed' : `FAILED\n  ${summary.problems.join('\n  ')}`}`);
    console.log(JSON.stringify(summary));
    if (!summary.checksPassed) process.exitCode = 1;
  } finally {
    cleanup();
  }
}
