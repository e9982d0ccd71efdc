/**
 * Flash sale: many concurrent checkouts over HTTP for a few units of one SKU.
 *
 *   node --import tsx bench/flash-sale.ts [--engine sqlite|postgres] [--requests 10000] [--stock 500]
 *                                         [--connections 200] [--rounds 5]
 *   (KESSAI_BENCH_ENGINE=postgres works too)
 *
 * The whole store runs in this process as `kessai serve` runs it (real database, Fastify on
 * loopback, sandbox gateways mounted). autocannon runs in a worker thread of the same process, so
 * the load generator does not share the server's event loop. Per round:
 *   1. baseline: the same number of requests with the same connections against GET /healthz, the
 *      cost of the HTTP stack alone on this machine;
 *   2. the sale: POST /api/checkout for one SKU with `stock` units, `requests` times. Each successful
 *      checkout also creates the payment at the testpay sandbox over loopback, as in production.
 * Then it checks: exactly `stock` × 201 (each with a payment action), the rest 409 out_of_stock,
 * nothing else; reserved = stock = orders of that SKU = held reservations, on_hand − reserved = 0,
 * and availability never seen below zero while the sale ran. Round 1 sells the demo shop's
 * `demo-serial` (stock 500 from the seed); later rounds sell fresh products of the same kind.
 * PostgreSQL: a throwaway cluster is started from the machine's binaries (initdb/pg_ctl, as the
 * postgres user when root, unix socket in its data dir) and removed at the end.
 */
import { median, startBenchStore } from './lib.js';
import { createRequire } from 'node:module';
import { availableParallelism, loadavg } from 'node:os';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { Worker } from 'node:worker_threads';

// ------------------------------------------------------------------ load generator (worker thread)

interface LoadJob {
  url: string;
  method: 'GET' | 'POST';
  body?: string;
  connections: number;
  amount: number;
}

interface LoadResult {
  seconds: number;
  /** Seconds from the start to the last response of each status. */
  lastResponseAt: Record<string, number>;
  rps: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  statuses: Record<string, number>;
  errors: number;
  timeouts: number;
  /** error.code of every 4xx/5xx JSON body; for 201s: "payment:<action type>" or "paymentError:<code>". */
  bodyCodes: Record<string, number>;
}

/**
 * The worker's code, plain JavaScript: a worker thread does not inherit tsx's loader on Node 20.
 * autocannon leaves its histograms encoded in a worker thread; aggregateResult decodes them.
 */
const LOAD_WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const autocannon = require(workerData.autocannon);
const job = workerData.job;
const bodyCodes = {};
const count = (key) => (bodyCodes[key] = (bodyCodes[key] || 0) + 1);
// autocannon reports its result on its next 1-second tick, so its own duration is rounded up to
// whole seconds; the rate is taken from the first request to the last response instead.
let first = 0;
let last = 0;
const lastByStatus = {};
const opts = {
  url: job.url,
  connections: job.connections,
  amount: job.amount,
  timeout: 60,
  requests: [{
    method: job.method,
    headers: job.body ? { 'content-type': 'application/json' } : {},
    body: job.body,
    onResponse: (status, body) => {
      last = performance.now();
      lastByStatus[status] = last;
      if (job.method === 'GET') return;
      try {
        const json = JSON.parse(body);
        if (status >= 400) count((json.error && json.error.code) || 'status ' + status + ' without code');
        else if (json.paymentError) count('paymentError:' + json.paymentError.code);
        else count('payment:' + ((json.payment && json.payment.type) || 'none'));
      } catch {
        count('status ' + status + ', body not JSON');
      }
    },
  }],
};
first = performance.now();
autocannon(opts).then((raw) => {
  const r = autocannon.aggregateResult([raw], opts);
  const seconds = (last - first) / 1000;
  const statuses = {};
  let total = 0;
  for (const [code, s] of Object.entries(r.statusCodeStats || {})) {
    statuses[code] = s.count;
    total += s.count;
  }
  const lastResponseAt = {};
  for (const [code, t] of Object.entries(lastByStatus)) lastResponseAt[code] = Number(((t - first) / 1000).toFixed(2));
  parentPort.postMessage({
    seconds,
    lastResponseAt,
    rps: total / seconds,
    p50: r.latency.p50, p90: r.latency.p90, p99: r.latency.p99, max: r.latency.max,
    statuses, errors: r.errors, timeouts: r.timeouts, bodyCodes,
  });
});
`;

/** Runs one load in a worker thread (the server keeps this thread's event loop to itself). */
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

// ------------------------------------------------------------------ the sale

async function main(): Promise<void> {
  const { values: args } = parseArgs({
    options: {
      engine: { type: 'string', default: process.env.KESSAI_BENCH_ENGINE ?? 'sqlite' },
      requests: { type: 'string', default: '10000' },
      stock: { type: 'string', default: '500' },
      connections: { type: 'string', default: '200' },
      rounds: { type: 'string', default: '5' },
    },
  });
  const engine = args.engine;
  if (engine !== 'sqlite' && engine !== 'postgres') throw new Error(`--engine ${engine}: expected sqlite or postgres`);
  const REQUESTS = Number(args.requests);
  const STOCK = Number(args.stock);
  const CONNECTIONS = Number(args.connections);
  const ROUNDS = Number(args.rounds);

  const { createProduct } = await import('../src/commerce/catalog.js');
  const { DEFAULT_SHOP_ID } = await import('../src/commerce/shops.js');

  const store = await startBenchStore(engine, 'flash');
  const { cleanup } = store;

  const loadAtStart = loadavg().map((x) => Number(x.toFixed(2)));
  try {
    const { rt, app, base, port, engineVersion } = store;
    const { ctx } = rt;
    const db = ctx.db;
    // Server-side time per route and status (Fastify's elapsedTime: from request to response sent),
    // to see which part of a checkout's latency is the store's and which is the queue in front of it.
    const serverTimes = new Map<string, number[]>();
    const record = (key: string, ms: number) => {
      let list = serverTimes.get(key);
      if (!list) serverTimes.set(key, (list = []));
      list.push(ms);
    };
    // A successful checkout's gateway hand-off, matched by merchant reference (order number + "-1"):
    // when the checkout request arrived, when the sandbox got the create-payment call, when it answered.
    const started = new WeakMap<object, number>();
    const gatewaySeen = new Map<string, { arrived: number; answered?: number }>();
    let recording = false;
    app.addHook('onRequest', async (request) => {
      if (recording) started.set(request, performance.now());
    });
    app.addHook('preHandler', async (request) => {
      const ref = (request.body as { merchant_ref?: unknown } | undefined)?.merchant_ref;
      if (recording && request.url === '/sandbox/testpay/api/payments' && typeof ref === 'string') {
        gatewaySeen.set(ref, { arrived: started.get(request) ?? performance.now() });
      }
    });
    app.addHook('onSend', async (request, reply, payload) => {
      if (!recording || reply.statusCode !== 201 || typeof payload !== 'string') return payload;
      if (request.url === '/sandbox/testpay/api/payments') {
        const ref = (request.body as { merchant_ref?: string }).merchant_ref;
        const seen = ref ? gatewaySeen.get(ref) : undefined;
        if (seen) seen.answered = performance.now();
      } else if (request.url === '/api/checkout') {
        const number = (JSON.parse(payload) as { order?: { number?: string } }).order?.number;
        const seen = number ? gatewaySeen.get(`${number}-1`) : undefined;
        const begin = started.get(request);
        if (seen?.answered !== undefined && begin !== undefined) {
          record('  201: arrival → gateway call received', seen.arrived - begin);
          record('  201: gateway call received → answered', seen.answered - seen.arrived);
          record('  201: gateway answered → checkout answered', performance.now() - seen.answered);
        }
      }
      return payload;
    });
    app.addHook('onResponse', async (request, reply) => {
      if (recording) record(`${request.method} ${request.routeOptions.url ?? request.url} ${reply.statusCode}`, reply.elapsedTime);
    });
    // How long a ready socket waits for the server's one thread while the sale runs (one monitor per
    // round: a re-enabled monitor counts the pause in between as one long delay).
    const loopDelays: { p50: number; p99: number; max: number }[] = [];
    await app.listen({ port, host: '127.0.0.1' });
    process.stderr.write(`[flash-sale] ${engineVersion}, store at ${base}; ${ROUNDS} rounds of ${REQUESTS} checkouts for ${STOCK} units, ${CONNECTIONS} connections\n`);

    const body = (sku: string) =>
      JSON.stringify({
        shop: DEFAULT_SHOP_ID,
        customer: { email: 'fan@example.jp', name: '山田 花子' },
        lines: [{ sku, quantity: 1 }],
        payment: { provider: 'testpay', method: 'card' },
      });

    async function skuOf(code: string) {
      return db.selectFrom('skus').select(['id', 'on_hand', 'reserved']).where('shop_id', '=', DEFAULT_SHOP_ID).where('code', '=', code).executeTakeFirstOrThrow();
    }

    interface Sale {
      load: LoadResult;
      /** Broken expectations about statuses, stock and orders. */
      problems: string[];
      minAvailable: number;
      /** 201s whose gateway hand-off failed (the order and its reservation stand; the customer must retry paying). */
      handOffFailures: number;
    }

    /** One sale; answers the load figures and the list of broken expectations. */
    async function sale(code: string, stock: number, requests: number): Promise<Sale> {
      const sku = await skuOf(code);
      const problems: string[] = [];
      if (sku.on_hand - sku.reserved !== stock) problems.push(`${code}: ${sku.on_hand - sku.reserved} available before the sale, expected ${stock}`);
      let minAvailable = Number.POSITIVE_INFINITY;
      let watching = true;
      const watcher = (async () => {
        while (watching) {
          const s = await skuOf(code);
          minAvailable = Math.min(minAvailable, s.on_hand - s.reserved);
          await new Promise((r) => setTimeout(r, 25));
        }
      })();
      const result = await load({ url: `${base}/api/checkout`, method: 'POST', body: body(code), connections: CONNECTIONS, amount: requests });
      watching = false;
      await watcher;

      const other = Object.entries(result.statuses).filter(([s]) => s !== '201' && s !== '409');
      if ((result.statuses['201'] ?? 0) !== stock) problems.push(`${result.statuses['201'] ?? 0} × 201, expected ${stock}`);
      if ((result.statuses['409'] ?? 0) !== requests - stock) problems.push(`${result.statuses['409'] ?? 0} × 409, expected ${requests - stock}`);
      if (other.length > 0) problems.push(`other statuses: ${other.map(([s, n]) => `${n} × ${s}`).join(', ')}`);
      if (result.errors || result.timeouts) problems.push(`${result.errors} connection errors, ${result.timeouts} timeouts`);
      if ((result.bodyCodes.out_of_stock ?? 0) !== requests - stock) problems.push(`409 bodies: ${JSON.stringify(result.bodyCodes)}`);
      const redirects = result.bodyCodes['payment:redirect'] ?? 0;
      const handOffFailures = Object.entries(result.bodyCodes)
        .filter(([k]) => k.startsWith('paymentError:'))
        .reduce((sum, [, n]) => sum + n, 0);
      if (redirects + handOffFailures !== stock) problems.push(`201 bodies: ${JSON.stringify(result.bodyCodes)} (expected ${stock} with a payment action or paymentError)`);

      const after = await skuOf(code);
      const orders = await db
        .selectFrom('order_lines')
        .select((eb) => [eb.fn.count<number>('order_id').distinct().as('orders'), eb.fn.sum<number>('quantity').as('units')])
        .where('sku_id', '=', sku.id)
        .executeTakeFirstOrThrow();
      const held = await db
        .selectFrom('reservations')
        .select((eb) => eb.fn.sum<number>('quantity').as('units'))
        .where('sku_id', '=', sku.id)
        .where('state', '=', 'held')
        .executeTakeFirstOrThrow();
      const handedOff = await db
        .selectFrom('payment_attempts')
        .innerJoin('order_lines', 'order_lines.order_id', 'payment_attempts.order_id')
        .select((eb) => eb.fn.countAll<number>().as('n'))
        .where('order_lines.sku_id', '=', sku.id)
        .where('payment_attempts.gateway_ref', 'is not', null)
        .executeTakeFirstOrThrow();
      if (after.reserved !== stock) problems.push(`reserved = ${after.reserved}, expected ${stock}`);
      if (after.on_hand - after.reserved !== 0) problems.push(`on_hand − reserved = ${after.on_hand - after.reserved}, expected 0`);
      if (Number(orders.orders) !== stock || Number(orders.units) !== stock) problems.push(`${orders.orders} orders / ${orders.units} units of ${code}, expected ${stock}`);
      if (Number(held.units) !== stock) problems.push(`${held.units} units in held reservations, expected ${stock}`);
      if (Number(handedOff.n) !== redirects) problems.push(`${handedOff.n} payment attempts with a testpay reference, but ${redirects} redirects answered`);
      if (minAvailable < 0) problems.push(`availability seen at ${minAvailable} during the sale`);
      return { load: result, problems, minAvailable, handOffFailures };
    }

    // Warm-up: JIT and statement caches on both paths (201 and 409) and on /healthz.
    await createProduct(ctx, DEFAULT_SHOP_ID, { code: 'flash-warmup', name: 'warm-up', kind: 'serial_code', price: 1500, stock: 100 });
    await load({ url: `${base}/healthz`, method: 'GET', connections: CONNECTIONS, amount: 2000 });
    const warm = await sale('flash-warmup', 100, 1000);
    if (warm.problems.length > 0) process.stderr.write(`[flash-sale] warm-up problems: ${warm.problems.join('; ')}\n`);

    const rounds: { healthz: LoadResult; checkout: LoadResult; problems: string[]; minAvailable: number; handOffFailures: number }[] = [];
    for (let round = 1; round <= ROUNDS; round++) {
      let code = 'demo-serial';
      if (round === 1) {
        const s = await skuOf(code);
        if (s.on_hand - s.reserved !== STOCK) await db.updateTable('skus').set({ on_hand: STOCK + s.reserved }).where('id', '=', s.id).execute();
      } else {
        code = `flash-${round}`;
        await createProduct(ctx, DEFAULT_SHOP_ID, { code, name: `フラッシュセール ${round}`, kind: 'serial_code', price: 1500, stock: STOCK });
      }
      const healthz = await load({ url: `${base}/healthz`, method: 'GET', connections: CONNECTIONS, amount: REQUESTS });
      recording = true;
      const loopDelay = monitorEventLoopDelay({ resolution: 10 });
      loopDelay.enable();
      const s = await sale(code, STOCK, REQUESTS);
      loopDelay.disable();
      recording = false;
      loopDelays.push({ p50: loopDelay.percentile(50) / 1e6, p99: loopDelay.percentile(99) / 1e6, max: loopDelay.max / 1e6 });
      rounds.push({ healthz, checkout: s.load, problems: s.problems, minAvailable: s.minAvailable, handOffFailures: s.handOffFailures });
      process.stderr.write(
        `[flash-sale] round ${round} (${code}): healthz ${healthz.rps.toFixed(0)} req/s; checkout ${s.load.rps.toFixed(0)} req/s, ` +
          `p50 ${s.load.p50} ms, p99 ${s.load.p99} ms; last response by status (s) ${JSON.stringify(s.load.lastResponseAt)}; statuses ${JSON.stringify(s.load.statuses)}; hand-off failures ${s.handOffFailures}; ${s.problems.length ? `PROBLEMS: ${s.problems.join('; ')}` : 'all checks passed'}\n`,
      );
    }

    await app.close();
    await rt.close();

    const pct = (xs: number[], p: number) => {
      const sorted = [...xs].sort((a, b) => a - b);
      return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
    };
    const serverSide = Object.fromEntries(
      [...serverTimes].map(([key, xs]) => [key, { n: xs.length, p50: Number(pct(xs, 50).toFixed(1)), p99: Number(pct(xs, 99).toFixed(1)), max: Number(Math.max(...xs).toFixed(1)) }]),
    );

    const pick = (f: (r: (typeof rounds)[number]) => number) => median(rounds.map(f));
    const summary = {
      bench: 'flash-sale',
      engine,
      engineVersion,
      node: process.version,
      cpus: availableParallelism(),
      loadavg: { start: loadAtStart, end: loadavg().map((x) => Number(x.toFixed(2))) },
      requests: REQUESTS,
      stock: STOCK,
      connections: CONNECTIONS,
      rounds: ROUNDS,
      healthzRps: Math.round(pick((r) => r.healthz.rps)),
      healthzP50: pick((r) => r.healthz.p50),
      healthzP99: pick((r) => r.healthz.p99),
      checkoutRps: Math.round(pick((r) => r.checkout.rps)),
      checkoutP50: pick((r) => r.checkout.p50),
      checkoutP99: pick((r) => r.checkout.p99),
      checkoutMax: pick((r) => r.checkout.max),
      ratio: pick((r) => r.checkout.rps) / pick((r) => r.healthz.rps),
      // Each round's sale over the same round's /healthz run: less sensitive to drift between rounds.
      ratioPerRoundMedian: pick((r) => r.checkout.rps / r.healthz.rps),
      statuses: rounds.map((r) => r.checkout.statuses),
      serverSideMs: serverSide,
      eventLoopDelayMs: {
        p50: Number(median(loopDelays.map((d) => d.p50)).toFixed(1)),
        p99: Number(median(loopDelays.map((d) => d.p99)).toFixed(1)),
        max: Number(Math.max(...loopDelays.map((d) => d.max)).toFixed(1)),
      },
      handOffFailures: rounds.map((r) => r.handOffFailures),
      lastResponseAt: rounds.map((r) => r.checkout.lastResponseAt),
      minAvailableSeen: Math.min(...rounds.map((r) => r.minAvailable)),
      checksPassed: rounds.every((r) => r.problems.length === 0),
      problems: rounds.flatMap((r, i) => r.problems.map((p) => `round ${i + 1}: ${p}`)),
    };

    const rows = [
      ['load', 'req/s (median)', 'p50 ms', 'p99 ms', 'per round req/s'],
      ['GET /healthz', String(summary.healthzRps), String(summary.healthzP50), String(summary.healthzP99), rounds.map((r) => r.healthz.rps.toFixed(0)).join(' ')],
      ['POST /api/checkout', String(summary.checkoutRps), String(summary.checkoutP50), String(summary.checkoutP99), rounds.map((r) => r.checkout.rps.toFixed(0)).join(' ')],
    ];
    const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
    console.log(`\nflash sale — ${engineVersion}, Node ${process.version}: ${REQUESTS} checkouts for ${STOCK} units, ${CONNECTIONS} connections, ${ROUNDS} rounds`);
    for (const r of rows) console.log(r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  '));
    console.log('server-side time per route and status during the sales (ms, all rounds):');
    for (const [key, v] of Object.entries(serverSide)) console.log(`  ${key.padEnd(44)} n ${String(v.n).padStart(6)}  p50 ${v.p50}  p99 ${v.p99}  max ${v.max}`);
    console.log(`event-loop delay of the store during the sales (median of rounds; max of all): p50 ${summary.eventLoopDelayMs.p50} ms, p99 ${summary.eventLoopDelayMs.p99} ms, max ${summary.eventLoopDelayMs.max} ms`);
    console.log(`checkout req/s as a share of /healthz req/s: ${(summary.ratio * 100).toFixed(1)} % (of the medians); median of per-round shares ${(summary.ratioPerRoundMedian * 100).toFixed(1)} %`);
    console.log(`checks (201 = ${STOCK}, 409 out_of_stock = ${REQUESTS - STOCK}, nothing else, reserved = orders = ${STOCK}, available 0, never < 0): ${summary.checksPassed ? 'all passed' : `FAILED\n  ${summary.problems.join('\n  ')}`}`);
    const failedHandOffs = summary.handOffFailures.reduce((a, b) => a + b, 0);
    if (failedHandOffs > 0) {
      console.log(
        `gateway hand-off failed for ${failedHandOffs} of ${STOCK * ROUNDS} created orders (201 with paymentError; per round ${summary.handOffFailures.join(', ')}): ` +
          'the order and its reservation stand, the customer has to retry paying. See the POST /sandbox/testpay/api/payments and checkout 201 server-side times above.',
      );
    }
    console.log(JSON.stringify(summary));
    if (!summary.checksPassed) process.exitCode = 1;
  } finally {
    cleanup();
  }
}

await main();
