/**
 * Checkout throughput against the raw transaction rate of the same SQLite file.
 *
 *   node --import tsx bench/checkout-throughput.ts [--seconds 2] [--rounds 5] [--concurrency 8] [--busy 32] [--statements]
 *
 * One fresh SQLite file (WAL, synchronous=NORMAL, as openDatabase sets it), one process, one driver
 * stack (Kysely over better-sqlite3, BEGIN IMMEDIATE). Measured, interleaved round by round so that
 * drift hits every series alike:
 *   baseline  — transactions that each insert one row into a scratch table and commit on their own
 *               (a second connection to the same file, opened with group commit off): the raw
 *               single-row transaction rate of the file;
 *   grouped baseline — the same transactions through the store's connection, where concurrent
 *               transactions share a commit (group commit, src/db/index.ts);
 *   checkout  — createOrder (validation, stock reservation, customer, order, line, address,
 *               reservation, payment attempt, two audit rows, one outbox job) through the store's
 *               connection, without the gateway hand-off of payments/checkout(), which is a
 *               network call to the sandbox gateway.
 * Each series runs sequentially (one caller), with N concurrent callers and with a busy store's
 * many (`--busy`, default 32, the most that share one commit). SQLite has one writer:
 * concurrent callers queue on the one connection, and the store commits the transactions that
 * queued together (one caller alone commits each one, so the grouped baseline is measured with N
 * callers only).
 * Figures are medians over the rounds; the ratio checkout/baseline is the figure that travels
 * between machines. The goal is stated for throughput, the most a store sustains: the peak ratio
 * divides the checkout's best median (whatever the callers) by the baseline's best. `--statements` wraps every prepared statement with a timer and prints where a
 * checkout's time goes (it slows everything a little: read the throughput from a run without it).
 */
import { median } from './lib.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { parseArgs } from 'node:util';
import BetterSqlite3 from 'better-sqlite3';
import { sql } from 'kysely';
import { createProduct } from '../src/commerce/catalog.js';
import { createOrder, type OrderInput } from '../src/commerce/orders.js';
import { createShop } from '../src/commerce/shops.js';
import { loadConfig } from '../src/config.js';
import { openDatabase } from '../src/db/index.js';
import { newId } from '../src/ids.js';
import type { Context } from '../src/context.js';
import { createRuntime } from '../src/runtime.js';

const { values: args } = parseArgs({
  options: {
    seconds: { type: 'string', default: '2' },
    rounds: { type: 'string', default: '5' },
    concurrency: { type: 'string', default: '8' },
    busy: { type: 'string', default: '32' },
    warmup: { type: 'string', default: '1' },
    statements: { type: 'boolean', default: false },
  },
});
const SECONDS = Number(args.seconds);
const ROUNDS = Number(args.rounds);
const CONCURRENCY = Number(args.concurrency);
const BUSY = Number(args.busy);
const WARMUP_SECONDS = Number(args.warmup);
const GOAL = 0.3;

// ------------------------------------------------------------------ optional statement timing

interface StatementStat {
  count: number;
  ms: number;
}
const statementStats = new Map<string, StatementStat>();
let timing = false;

if (args.statements) {
  // Every statement Kysely runs goes through Database#prepare (the store caches the result), and
  // then through Statement#all or #run: wrapping those times the SQLite side of each query.
  const proto = BetterSqlite3.prototype as unknown as { prepare: (this: BetterSqlite3.Database, text: string) => BetterSqlite3.Statement };
  const prepare = proto.prepare;
  proto.prepare = function (this: BetterSqlite3.Database, text: string) {
    const statement = prepare.call(this, text);
    const timed = (fn: (...p: unknown[]) => unknown) => (...p: unknown[]) => {
      if (!timing) return fn.apply(statement, p);
      const t0 = performance.now();
      try {
        return fn.apply(statement, p);
      } finally {
        const stat = statementStats.get(text) ?? { count: 0, ms: 0 };
        stat.count += 1;
        stat.ms += performance.now() - t0;
        statementStats.set(text, stat);
      }
    };
    return { reader: statement.reader, all: timed(statement.all), run: timed(statement.run), iterate: statement.iterate.bind(statement) } as unknown as BetterSqlite3.Statement;
  };
}

// ------------------------------------------------------------------ the store's database

const dir = mkdtempSync(join(tmpdir(), 'kessai-bench-throughput-'));
const file = join(dir, 'kessai.db');
const config = loadConfig({
  DATABASE_URL: file,
  KESSAI_DATA_DIR: dir,
  KESSAI_MASTER_KEY: '00'.repeat(32),
  KESSAI_ADMIN_TOKEN: 'bench-admin-token-0123456789abcdef',
  LOG_LEVEL: 'silent',
});
const rt = await createRuntime(config, { logDestination: new Writable({ write: (_c, _e, done) => done() }) });
const { ctx } = rt;
const db = ctx.db;

// The scratch table of the baseline: one row per transaction, an id of the store's own shape.
type Scratch = {
  bench_scratch: { id: string; payload: string; created_at: string };
};
await sql`create table bench_scratch (id text primary key, payload text not null, created_at text not null)`.execute(db);
const scratch = db.withTables<Scratch>();
// The raw rate: every transaction commits on its own.
const raw = openDatabase(file, { maxGroupCommit: 1 });
const rawScratch = raw.db.withTables<Scratch>();

await createShop(ctx, { id: 'bench', name: 'bench shop' });
// A physical product (so the address row is written too) with stock that never runs out.
await createProduct(ctx, 'bench', { code: 'bench-cd', name: 'ベンチ シングルCD', kind: 'physical', janCode: '4988001234562', chartEligible: true, price: 1320, stock: 10_000_000 });

const checkoutInput: OrderInput = {
  shop: 'bench',
  customer: { email: 'taro@example.jp', name: '山田 太郎', nameKana: 'ヤマダ タロウ', phone: '090-1234-5678' },
  shippingAddress: { name: '山田 太郎', postcode: '100-0001', prefecture: '東京都', city: '千代田区', line1: '千代田1-1', phone: '03-1234-5678' },
  lines: [{ sku: 'bench-cd', quantity: 1 }],
  payment: { provider: 'testpay', method: 'card' },
};

function insertRow(on: typeof scratch): () => Promise<void> {
  return () =>
    on.transaction().execute(async (tx) => {
      await tx.insertInto('bench_scratch').values({ id: newId('bch'), payload: 'x', created_at: new Date().toISOString() }).execute();
    });
}
const baselineTx = insertRow(rawScratch);
const groupedBaselineTx = insertRow(scratch);

async function checkoutTx(): Promise<void> {
  await createOrder(ctx, checkoutInput);
}

// ------------------------------------------------------------------ measurement

/** Runs `op` back to back from `callers` loops until `seconds` have passed; answers ops per second. */
async function rate(op: () => Promise<void>, callers: number, seconds: number): Promise<number> {
  let done = 0;
  const t0 = performance.now();
  const deadline = t0 + seconds * 1000;
  await Promise.all(
    Array.from({ length: callers }, async () => {
      while (performance.now() < deadline) {
        await op();
        done += 1;
      }
    }),
  );
  return done / ((performance.now() - t0) / 1000);
}


const series = {
  baselineSeq: [] as number[],
  checkoutSeq: [] as number[],
  baselineConc: [] as number[],
  groupedBaselineConc: [] as number[],
  checkoutConc: [] as number[],
  baselineBusy: [] as number[],
  checkoutBusy: [] as number[],
};

const loadAtStart = loadavg().map((x) => Number(x.toFixed(2)));
const sqliteVersion = (await sql<{ v: string }>`select sqlite_version() as v`.execute(db)).rows[0]!.v;
process.stderr.write(`[throughput] SQLite ${sqliteVersion} at ${file}; warm-up ${WARMUP_SECONDS} s per series, then ${ROUNDS} rounds of ${SECONDS} s per series\n`);

// Warm-up: JIT, statement cache, page cache, WAL file grown.
await rate(baselineTx, 1, WARMUP_SECONDS);
await rate(checkoutTx, 1, WARMUP_SECONDS);
await rate(baselineTx, CONCURRENCY, WARMUP_SECONDS / 2);
await rate(groupedBaselineTx, CONCURRENCY, WARMUP_SECONDS / 2);
await rate(checkoutTx, CONCURRENCY, WARMUP_SECONDS / 2);
await rate(checkoutTx, BUSY, WARMUP_SECONDS / 2);

for (let round = 1; round <= ROUNDS; round++) {
  series.baselineSeq.push(await rate(baselineTx, 1, SECONDS));
  series.checkoutSeq.push(await rate(checkoutTx, 1, SECONDS));
  series.baselineConc.push(await rate(baselineTx, CONCURRENCY, SECONDS));
  series.groupedBaselineConc.push(await rate(groupedBaselineTx, CONCURRENCY, SECONDS));
  series.checkoutConc.push(await rate(checkoutTx, CONCURRENCY, SECONDS));
  series.baselineBusy.push(await rate(baselineTx, BUSY, SECONDS));
  series.checkoutBusy.push(await rate(checkoutTx, BUSY, SECONDS));
  const last = (xs: number[]) => xs[xs.length - 1]!.toFixed(0);
  process.stderr.write(
    `[throughput] round ${round}: baseline ${last(series.baselineSeq)}/s, checkout ${last(series.checkoutSeq)}/s; ` +
      `×${CONCURRENCY}: baseline ${last(series.baselineConc)}/s, grouped baseline ${last(series.groupedBaselineConc)}/s, checkout ${last(series.checkoutConc)}/s; ` +
      `×${BUSY}: baseline ${last(series.baselineBusy)}/s, checkout ${last(series.checkoutBusy)}/s\n`,
  );
}

// Sanity: every checkout reserved one unit, and the counts agree.
const counts = await db
  .selectFrom('skus')
  .select(['reserved', 'on_hand'])
  .where('code', '=', 'bench-cd')
  .executeTakeFirstOrThrow();
const orderCount = Number((await db.selectFrom('orders').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow()).n);
if (counts.reserved !== orderCount) throw new Error(`reserved ${counts.reserved} but ${orderCount} orders`);

// ------------------------------------------------------------------ statement breakdown (optional)

let breakdown: { sql: string; perCheckout: number; usPerCall: number; share: number }[] = [];
let baselineStatements: string[] = [];
let breakdownSummary: { checkoutUs: number; sqlUs: number; baselineUs: number; baselineSqlUs: number } | undefined;
if (args.statements) {
  const n = 3000;
  statementStats.clear();
  timing = true;
  let t0 = performance.now();
  for (let i = 0; i < n; i++) await baselineTx();
  const baselineUs = ((performance.now() - t0) * 1000) / n;
  const baselineSqlUs = ([...statementStats.values()].reduce((s, x) => s + x.ms, 0) * 1000) / n;
  baselineStatements = [...statementStats].map(([text, st]) => `${text.replace(/\s+/g, ' ').slice(0, 40)} ${((st.ms * 1000) / st.count).toFixed(1)} µs`);
  statementStats.clear();
  t0 = performance.now();
  for (let i = 0; i < n; i++) await checkoutTx();
  const checkoutUs = ((performance.now() - t0) * 1000) / n;
  timing = false;
  const sqlUs = ([...statementStats.values()].reduce((s, x) => s + x.ms, 0) * 1000) / n;
  breakdown = [...statementStats]
    .map(([text, s]) => ({ sql: text, perCheckout: s.count / n, usPerCall: (s.ms * 1000) / s.count, share: (s.ms * 1000) / n / checkoutUs }))
    .sort((a, b) => b.share - a.share);
  breakdownSummary = { checkoutUs, sqlUs, baselineUs, baselineSqlUs };
}

// ------------------------------------------------------------------ pages written per transaction

/**
 * WAL frames (= database pages) one transaction writes: empty the WAL, switch the automatic
 * checkpoint off, run a batch, read the frame count. Every frame is a pwrite of header and page at
 * commit, and is copied back into the database file by the next checkpoint.
 */
async function pagesPerTx(op: (on: Context) => Promise<void>, batch: number, callers = 1): Promise<number> {
  await sql`pragma wal_checkpoint(truncate)`.execute(counting.db);
  await Promise.all(Array.from({ length: callers }, async () => {
    for (let i = 0; i < batch / callers; i++) await op(countingCtx);
  }));
  const row = (await sql<{ log: number }>`pragma wal_checkpoint(passive)`.execute(counting.db)).rows[0]!;
  return row.log / batch;
}
// The store's connection checkpoints from a thread of its own, which would restart the WAL while
// frames are counted: counted instead on a second connection to the file that never checkpoints
// (its own checkpoint thread off, automatic checkpoints off), with the same group commit.
await raw.close();
await rt.close();
const counting = openDatabase(file, { checkpointThread: false });
await sql`pragma wal_autocheckpoint = 0`.execute(counting.db);
const countingCtx: Context = { ...ctx, db: counting.db };
const baselinePages = await pagesPerTx((on) => insertRow(on.db.withTables<Scratch>())(), 1000);
const checkoutPages = await pagesPerTx((on) => createOrder(on, checkoutInput).then(() => undefined), 200);
const checkoutPagesConc = await pagesPerTx((on) => createOrder(on, checkoutInput).then(() => undefined), 200 * CONCURRENCY, CONCURRENCY);
const checkoutPagesBusy = await pagesPerTx((on) => createOrder(on, checkoutInput).then(() => undefined), 100 * BUSY, BUSY);
await counting.close();

// ------------------------------------------------------------------ report

const result = {
  bench: 'checkout-throughput',
  engine: 'sqlite',
  sqlite: sqliteVersion,
  node: process.version,
  cpus: availableParallelism(),
  loadavg: { start: loadAtStart, end: loadavg().map((x) => Number(x.toFixed(2))) },
  seconds: SECONDS,
  rounds: ROUNDS,
  concurrency: CONCURRENCY,
  busy: BUSY,
  baselineSeq: Math.round(median(series.baselineSeq)),
  checkoutSeq: Math.round(median(series.checkoutSeq)),
  baselineConc: Math.round(median(series.baselineConc)),
  groupedBaselineConc: Math.round(median(series.groupedBaselineConc)),
  checkoutConc: Math.round(median(series.checkoutConc)),
  baselineBusy: Math.round(median(series.baselineBusy)),
  checkoutBusy: Math.round(median(series.checkoutBusy)),
  ratioSeq: median(series.checkoutSeq) / median(series.baselineSeq),
  ratioConc: median(series.checkoutConc) / median(series.baselineConc),
  ratioBusy: median(series.checkoutBusy) / median(series.baselineBusy),
  // Throughput against throughput: each kind at its best median, whatever the number of callers.
  ratioPeak: Math.max(...[series.checkoutSeq, series.checkoutConc, series.checkoutBusy].map(median)) / Math.max(...[series.baselineSeq, series.baselineConc, series.baselineBusy].map(median)),
  // Against single-row transactions that share commits as the checkouts do.
  ratioConcGrouped: median(series.checkoutConc) / median(series.groupedBaselineConc),
  // Each round's checkout rate over the same round's baseline: less sensitive to drift between rounds.
  ratioSeqPerRoundMedian: median(series.checkoutSeq.map((c, i) => c / series.baselineSeq[i]!)),
  ratioConcPerRoundMedian: median(series.checkoutConc.map((c, i) => c / series.baselineConc[i]!)),
  ratioBusyPerRoundMedian: median(series.checkoutBusy.map((c, i) => c / series.baselineBusy[i]!)),
  ratioConcGroupedPerRoundMedian: median(series.checkoutConc.map((c, i) => c / series.groupedBaselineConc[i]!)),
  ordersCreated: orderCount,
  walPagesPerTx: { baseline: Number(baselinePages.toFixed(1)), checkout: Number(checkoutPages.toFixed(1)), checkoutConc: Number(checkoutPagesConc.toFixed(1)), checkoutBusy: Number(checkoutPagesBusy.toFixed(1)) },
  goal: GOAL,
};

const pct = (x: number) => `${(x * 100).toFixed(1)} %`;
const rows = [
  ['series', 'callers', 'median tx/s', 'min', 'max'],
  ['baseline (1-row insert tx)', '1', ...stats(series.baselineSeq)],
  ['checkout (createOrder)', '1', ...stats(series.checkoutSeq)],
  ['baseline (1-row insert tx)', String(CONCURRENCY), ...stats(series.baselineConc)],
  ['grouped baseline (1-row insert tx, shared commits)', String(CONCURRENCY), ...stats(series.groupedBaselineConc)],
  ['checkout (createOrder)', String(CONCURRENCY), ...stats(series.checkoutConc)],
  ['baseline (1-row insert tx)', String(BUSY), ...stats(series.baselineBusy)],
  ['checkout (createOrder)', String(BUSY), ...stats(series.checkoutBusy)],
];
function stats(xs: number[]): string[] {
  return [median(xs), Math.min(...xs), Math.max(...xs)].map((x) => x.toFixed(0));
}
const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
console.log(`\ncheckout throughput — SQLite ${sqliteVersion} (WAL, synchronous=NORMAL), Node ${process.version}, ${ROUNDS} rounds × ${SECONDS} s`);
for (const r of rows) console.log(r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  '));
const verdict = (x: number) => (x >= GOAL ? 'met' : 'NOT met');
console.log(`ratio checkout/baseline (of the medians): sequential ${pct(result.ratioSeq)}, ${CONCURRENCY} callers ${pct(result.ratioConc)}, ${BUSY} callers ${pct(result.ratioBusy)}; median of per-round ratios ${pct(result.ratioSeqPerRoundMedian)} / ${pct(result.ratioConcPerRoundMedian)} / ${pct(result.ratioBusyPerRoundMedian)}`);
console.log(`throughput (best median of each kind): checkout/baseline ${pct(result.ratioPeak)} (goal ≥ ${pct(GOAL)}: ${verdict(result.ratioPeak)}; sequential ${verdict(result.ratioSeq)}, ${CONCURRENCY} callers ${verdict(result.ratioConc)}, ${BUSY} callers ${verdict(result.ratioBusy)})`);
console.log(`ratio checkout/grouped baseline, ${CONCURRENCY} callers: ${pct(result.ratioConcGrouped)} of the medians, ${pct(result.ratioConcGroupedPerRoundMedian)} median of per-round ratios`);
console.log(`WAL pages written per transaction: baseline ${baselinePages.toFixed(1)}, checkout ${checkoutPages.toFixed(1)} (1 caller), ${checkoutPagesConc.toFixed(1)} (${CONCURRENCY} callers), ${checkoutPagesBusy.toFixed(1)} (${BUSY} callers)`);

if (breakdownSummary) {
  const b = breakdownSummary;
  console.log(`\nstatement breakdown, sequential, per transaction (timers on):`);
  console.log(`  baseline ${b.baselineUs.toFixed(1)} µs, of which SQLite ${b.baselineSqlUs.toFixed(1)} µs (${baselineStatements.join('; ')})`);
  console.log(`  checkout ${b.checkoutUs.toFixed(1)} µs, of which SQLite ${b.sqlUs.toFixed(1)} µs (${pct(b.sqlUs / b.checkoutUs)}); the rest is JavaScript: zod, Kysely building/compiling, ids, awaits`);
  for (const s of breakdown) {
    console.log(`  ${pct(s.share).padStart(7)}  ${s.usPerCall.toFixed(1).padStart(6)} µs × ${s.perCheckout.toFixed(2)}  ${s.sql.replace(/\s+/g, ' ').slice(0, 110)}`);
  }
}
console.log(JSON.stringify(result));

rmSync(dir, { recursive: true, force: true });
