/**
 * Chart files from 1,000,000 order lines, against raw streaming of the same rows to a file.
 *
 *   node --import tsx bench/chart-files.ts [--engine sqlite|postgres] [--lines 1000000] [--jans 10000] [--rounds 3]
 *
 * Setup (not measured): one shop, `--jans` chart-eligible CDs plus 100 other products, and
 * `--lines` order lines (two per order) whose orders all shipped inside one reporting day's window;
 * 2 % of the orders are refunded before the cutoff and a line in 20 is a non-eligible product, so
 * the rules of chart-sales.ts have work to do. Written with the raw driver (it is setup).
 *
 * Measured, each run in a fresh child process of this same script (so its peak RSS is its own):
 *
 * - **raw**: the rows the report is made of — the same joins and conditions as commerce/chart-sales.ts,
 *   without the grouping — streamed straight from the driver (better-sqlite3 `iterate`, a PostgreSQL
 *   cursor fetched 10,000 rows at a time) and written to a file as `jan<TAB>quantity` lines;
 * - **charts**: what the 22:00 run does before uploading: `buildChart` for Oricon (Shift_JIS TSV) and
 *   for Billboard Japan (fixed-width, split rows) — sales grouped by the database and read page by
 *   page, records formatted, encoded, hashed and written.
 *
 * Ratio = raw time / charts time (≥ 50 % is the goal: the two files cost at most twice the raw
 * stream). Peak RSS is the child's `maxRSS` (goal ≤ 200 MB). Rounds alternate raw and charts; medians.
 */
import { spawnSync } from 'node:child_process';
import { createWriteStream, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import BetterSqlite3 from 'better-sqlite3';
import pg from 'pg';
import { reportingWindow } from '../src/commerce/chart-sales.js';
import type { Context } from '../src/context.js';
import type { Cluster } from './lib.js';

// The kessai modules a phase needs are imported inside it, and bench/lib.ts (which loads the whole
// HTTP app) only by the parent: a child's peak RSS is then the chart code's, not the benchmark's.

const SHOP = 'bench';
const DATE = '2026-01-15';
const MASTER_KEY = '00'.repeat(32);

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? (process.argv[i + 1] ?? fallback) : fallback;
}

const engine = (arg('engine', process.env.KESSAI_BENCH_ENGINE ?? 'sqlite') as 'sqlite' | 'postgres');
const LINES = Number(arg('lines', '1000000'));
const JANS = Number(arg('jans', '10000'));
const ROUNDS = Number(arg('rounds', '3'));

/** A valid JAN-13 from a number (prefix 49, check digit computed). */
function jan(n: number): string {
  const body = `49${String(n).padStart(10, '0')}`;
  const sum = [...body].reverse().reduce((acc, d, i) => acc + Number(d) * (i % 2 === 0 ? 3 : 1), 0);
  return `${body}${(10 - (sum % 10)) % 10}`;
}

async function contextFor(url: string, dataDir: string): Promise<{ ctx: Context; close: () => Promise<void> }> {
  const { openDatabase } = await import('../src/db/index.js');
  const { loadConfig } = await import('../src/config.js');
  const { createLogger, Metrics } = await import('../src/observability.js');
  const handle = openDatabase(url);
  const config = loadConfig({ DATABASE_URL: url, KESSAI_DATA_DIR: dataDir, KESSAI_MASTER_KEY: MASTER_KEY, KESSAI_ADMIN_TOKEN: 'bench-admin-token-0123456789abcdef', LOG_LEVEL: 'silent' });
  const ctx: Context = { config, db: handle.db, engine: handle.engine, log: createLogger('silent', new Writable({ write: (_c, _e, d) => d() })), metrics: new Metrics() };
  return { ctx, close: () => handle.close() };
}

// ------------------------------------------------------------------ setup

/** Deterministic pseudo-random numbers (mulberry32), so every run has the same data. */
function prng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Row = Record<string, string | number | null>;

async function seed(url: string, dataDir: string): Promise<{ orders: number; refunded: number }> {
  const { ctx, close } = await contextFor(url, dataDir);
  const { migrateToLatest } = await import('../src/db/index.js');
  const { createShop, setShopSettings } = await import('../src/commerce/shops.js');
  await migrateToLatest(ctx.db);
  await createShop(ctx, { id: SHOP, name: 'ベンチ店' });
  await setShopSettings(ctx, SHOP, { 'oricon.encoding': 'sjis' });
  await close();

  const now = new Date().toISOString();
  const products: Row[] = [];
  const skus: Row[] = [];
  for (let i = 0; i < JANS + 100; i++) {
    const eligible = i < JANS;
    products.push({ id: `p${i}`, shop_id: SHOP, code: `p${i}`, name: eligible ? `ベンチ シングル 第${i}番「決済の歌」` : `グッズ ${i}`, kind: 'physical', description: '', jan_code: jan(i), chart_eligible: eligible ? 1 : 0, tax_rate: 10, active: 1, created_at: now });
    skus.push({ id: `s${i}`, shop_id: SHOP, product_id: `p${i}`, code: `p${i}`, name: `p${i}`, price: 1000, on_hand: 1_000_000_000, reserved: 0, created_at: now });
  }
  const customer: Row = { id: 'cus_bench', shop_id: SHOP, email: 'bench@example.jp', name: 'ベンチ', name_kana: null, phone: null, password_hash: null, email_verified_at: null, created_at: now };

  const { start, end } = reportingWindow(DATE);
  const span = end.getTime() - start.getTime();
  const orders = Math.ceil(LINES / 2);
  const random = prng(42);
  let refunded = 0;
  /** Rows of one batch of orders, for the three tables. */
  function* batches(size: number) {
    for (let from = 0; from < orders; from += size) {
      const o: Row[] = [];
      const l: Row[] = [];
      const c: Row[] = [];
      for (let n = from; n < Math.min(orders, from + size); n++) {
        const shipped = new Date(start.getTime() + Math.floor((n / orders) * span)).toISOString();
        const isRefunded = random() < 0.02;
        if (isRefunded) refunded++;
        o.push({ id: `o${n}`, shop_id: SHOP, number: `B${n}`, token_hash: `t${n}`, customer_id: 'cus_bench', email: 'bench@example.jp', state: isRefunded ? 'refunded' : 'shipped', subtotal: 0, shipping_fee: 0, total: 0, tax_10: 0, tax_8: 0, current_attempt_id: null, fulfilled: 1, stock_committed: 1, stock_released: 0, hold_reason: null, expires_at: shipped, created_at: shipped, updated_at: shipped });
        for (let k = 0; k < 2 && n * 2 + k < LINES; k++) {
          // Popularity is skewed, as sales are; one line in 20 is a non-eligible product.
          const p = random() < 0.05 ? JANS + Math.floor(random() * 100) : Math.floor(JANS * random() ** 2);
          const quantity = random() < 0.001 ? 1000 + Math.floor(random() * 5000) : 1 + Math.floor(random() * 3);
          l.push({ id: `l${n * 2 + k}`, order_id: `o${n}`, sku_id: `s${p}`, position: k, product_kind: 'physical', name: 'x', jan_code: jan(p), unit_price: 1000, quantity, tax_rate: 10, amount: 1000 * quantity });
        }
        c.push({ id: `c${n}a`, entity: 'order', entity_id: `o${n}`, from_state: null, to_state: 'pending_payment', cause: 'bench', at: shipped });
        c.push({ id: `c${n}b`, entity: 'order', entity_id: `o${n}`, from_state: 'pending_payment', to_state: 'paid', cause: 'bench', at: shipped });
        c.push({ id: `c${n}c`, entity: 'order', entity_id: `o${n}`, from_state: 'paid', to_state: 'shipped', cause: 'bench', at: shipped });
        if (isRefunded) c.push({ id: `c${n}d`, entity: 'order', entity_id: `o${n}`, from_state: 'shipped', to_state: 'refunded', cause: 'bench', at: new Date(Math.min(end.getTime() - 1, Date.parse(shipped) + 3_600_000)).toISOString() });
      }
      yield { o, l, c };
    }
  }

  if (engine === 'sqlite') {
    const db = new BetterSqlite3(url);
    db.pragma('journal_mode = WAL');
    const insert = (table: string, rows: Row[]) => {
      if (rows.length === 0) return;
      const cols = Object.keys(rows[0]!);
      const stmt = db.prepare(`insert into ${table} (${cols.join(',')}) values (${cols.map((c) => `@${c}`).join(',')})`);
      for (const r of rows) stmt.run(r);
    };
    db.transaction(() => {
      insert('customers', [customer]);
      insert('products', products);
      insert('skus', skus);
      for (const b of batches(50_000)) {
        insert('orders', b.o);
        insert('order_lines', b.l);
        insert('state_changes', b.c);
      }
    })();
    db.exec('analyze');
    db.close();
  } else {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    const insert = async (table: string, rows: Row[]) => {
      if (rows.length === 0) return;
      const cols = Object.keys(rows[0]!);
      // One statement per batch: each column as an array, unnested by the server.
      const types = cols.map((c) => (typeof rows[0]![c] === 'number' ? 'int8[]' : 'text[]'));
      await client.query(
        `insert into ${table} (${cols.join(',')}) select * from unnest(${cols.map((_, i) => `$${i + 1}::${types[i]}`).join(',')})`,
        cols.map((c) => rows.map((r) => r[c])),
      );
    };
    await client.query('begin');
    await insert('customers', [customer]);
    await insert('products', products);
    await insert('skus', skus);
    for (const b of batches(20_000)) {
      await insert('orders', b.o);
      await insert('order_lines', b.l);
      await insert('state_changes', b.c);
    }
    await client.query('commit');
    await client.query('analyze');
    await client.end();
  }
  return { orders, refunded };
}

// ------------------------------------------------------------------ the measured runs (child processes)

/** The rows chart-sales.ts adds up: the same joins and conditions, no grouping. */
function rawSql(p: (n: number) => string): string {
  return `select ol.jan_code, ol.quantity
    from state_changes sc
    join orders o on o.id = sc.entity_id
    join order_lines ol on ol.order_id = o.id
    join skus s on s.id = ol.sku_id
    join products p on p.id = s.product_id
    where sc.entity = 'order' and sc.to_state = 'shipped' and sc.at >= ${p(1)} and sc.at < ${p(2)}
      and o.shop_id = ${p(3)} and p.chart_eligible = 1 and ol.jan_code is not null
      and not exists (select 1 from state_changes x where x.entity_id = sc.entity_id and x.at < ${p(2)}
        and ((x.to_state = 'shipped' and (x.at < sc.at or (x.at = sc.at and x.id < sc.id))) or x.to_state in ('refunded', 'cancelled')))`;
}

/** Writes chunks with backpressure, 64 KiB at a time (as the chart writer does). */
function chunkedWriter(path: string) {
  const out = createWriteStream(path);
  let parts: string[] = [];
  let size = 0;
  return {
    async line(text: string) {
      parts.push(text);
      size += text.length;
      if (size >= 65_536) {
        const ok = out.write(parts.join(''));
        parts = [];
        size = 0;
        if (!ok) await new Promise<void>((r) => out.once('drain', () => r()));
      }
    },
    async close() {
      if (size > 0) out.write(parts.join(''));
      await new Promise<void>((r, j) => out.end((e?: Error | null) => (e ? j(e) : r())));
    },
  };
}

async function rawRun(url: string, dir: string): Promise<{ rows: number; bytes: number }> {
  const { start, end } = reportingWindow(DATE);
  const params = [start.toISOString(), end.toISOString(), SHOP];
  const path = join(dir, 'raw.tsv');
  const w = chunkedWriter(path);
  let rows = 0;
  if (engine === 'sqlite') {
    const db = new BetterSqlite3(url, { readonly: true });
    const stmt = db.prepare(rawSql((n) => ['@start', '@end', '@shop'][n - 1]!)).raw(true);
    for (const [j, q] of stmt.iterate({ start: params[0], end: params[1], shop: params[2] }) as IterableIterator<[string, number]>) {
      rows++;
      await w.line(`${j}\t${q}\n`);
    }
    db.close();
  } else {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    await client.query('begin');
    await client.query({ text: `declare lines no scroll cursor for ${rawSql((n) => `$${n}`)}`, values: params });
    for (;;) {
      const page = await client.query<[string, number]>({ text: 'fetch 10000 from lines', rowMode: 'array' });
      for (const [j, q] of page.rows) {
        rows++;
        await w.line(`${j}\t${q}\n`);
      }
      if (page.rows.length < 10000) break;
    }
    await client.query('commit');
    await client.end();
  }
  await w.close();
  return { rows, bytes: statSync(path).size };
}

async function chartsRun(url: string, dir: string) {
  const { ctx, close } = await contextFor(url, dir);
  const { buildChart } = await import('../src/commerce/charts.js');
  const files: Record<string, { rows: number; bytes: number; ms: number }> = {};
  for (const target of ['oricon', 'billboard'] as const) {
    const t0 = performance.now();
    const f = await buildChart(ctx, { shop: SHOP, target, date: DATE, out: join(dir, `${target}.out`) });
    files[target] = { rows: f.rows, bytes: f.bytes, ms: performance.now() - t0 };
  }
  await close();
  return files;
}

async function child(phase: string, url: string): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'kessai-bench-chart-out-'));
  const startRssMb = process.memoryUsage().rss / 2 ** 20;
  let peakSampled = 0;
  const sampler = setInterval(() => (peakSampled = Math.max(peakSampled, process.memoryUsage().rss)), 20);
  try {
    const t0 = performance.now();
    const result = phase === 'raw' ? await rawRun(url, dir) : await chartsRun(url, dir);
    const ms = performance.now() - t0;
    clearInterval(sampler);
    process.stdout.write(`${JSON.stringify({ phase, ms, startRssMb, maxRssMb: process.resourceUsage().maxRSS / 1024, sampledRssMb: peakSampled / 2 ** 20, heapMb: process.memoryUsage().heapUsed / 2 ** 20, result })}\n`);
  } finally {
    clearInterval(sampler);
    rmSync(dir, { recursive: true, force: true });
  }
}

// ------------------------------------------------------------------ main

async function main(): Promise<void> {
  const phase = arg('phase', '');
  if (phase) return child(phase, arg('url', ''));

  const { median, startPostgres } = await import('./lib.js');
  const dataDir = mkdtempSync(join(tmpdir(), 'kessai-bench-charts-'));
  let cluster: Cluster | undefined;
  try {
    let url = join(dataDir, 'kessai.db');
    let version = '';
    if (engine === 'postgres') {
      cluster = startPostgres();
      url = cluster.url;
      version = cluster.version;
    } else {
      const db = new BetterSqlite3(':memory:');
      version = `SQLite ${String((db.prepare('select sqlite_version() as v').get() as { v: string }).v)}`;
      db.close();
    }
    const t0 = performance.now();
    const { orders, refunded } = await seed(url, dataDir);
    process.stderr.write(`[chart-files] ${engine} (${version}): ${LINES.toLocaleString()} order lines in ${orders.toLocaleString()} orders (${refunded.toLocaleString()} refunded before the cutoff), ${JANS.toLocaleString()} chart JANs, seeded in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);

    const script = fileURLToPath(import.meta.url);
    const runChild = (p: string) => {
      const r = spawnSync(process.execPath, ['--import', 'tsx', script, '--phase', p, '--url', url, '--engine', engine], { encoding: 'utf8', maxBuffer: 1 << 20 });
      if (r.status !== 0) throw new Error(`phase ${p} failed (exit ${r.status}): ${r.stderr}`);
      return JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { ms: number; startRssMb: number; maxRssMb: number; sampledRssMb: number; result: unknown };
    };
    runChild('raw'); // warm the page cache once, unmeasured
    const raw: ReturnType<typeof runChild>[] = [];
    const charts: ReturnType<typeof runChild>[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      raw.push(runChild('raw'));
      charts.push(runChild('charts'));
      process.stderr.write(`[chart-files] round ${i + 1}: raw ${raw.at(-1)!.ms.toFixed(0)} ms, charts ${charts.at(-1)!.ms.toFixed(0)} ms\n`);
    }
    const rawMs = median(raw.map((r) => r.ms));
    const chartsMs = median(charts.map((r) => r.ms));
    const files = charts.at(-1)!.result as Record<string, { rows: number; bytes: number; ms: number }>;
    const rawResult = raw.at(-1)!.result as { rows: number; bytes: number };
    const summary = {
      bench: 'chart-files',
      engine,
      version,
      lines: LINES,
      jans: JANS,
      rawRows: rawResult.rows,
      rawMs: Math.round(rawMs),
      chartsMs: Math.round(chartsMs),
      oriconMs: Math.round(median(charts.map((c) => (c.result as typeof files).oricon!.ms))),
      billboardMs: Math.round(median(charts.map((c) => (c.result as typeof files).billboard!.ms))),
      ratio: rawMs / chartsMs,
      ratioPerRound: raw.map((r, i) => r.ms / charts[i]!.ms),
      /** Each file is its own job at 22:00: the raw stream against one file. */
      ratioOricon: 0,
      ratioBillboard: 0,
      rawPeakRssMb: Math.round(Math.max(...raw.map((r) => r.maxRssMb))),
      chartsPeakRssMb: Math.round(Math.max(...charts.map((r) => r.maxRssMb))),
      chartsStartRssMb: Math.round(median(charts.map((r) => r.startRssMb))),
      files,
    };
    summary.ratioOricon = rawMs / summary.oriconMs;
    summary.ratioBillboard = rawMs / summary.billboardMs;
    const line = (k: string, v: string) => process.stdout.write(`${k.padEnd(34)} ${v}\n`);
    process.stdout.write(`\nChart files from ${LINES.toLocaleString()} order lines (${engine}, ${version}), medians of ${ROUNDS} rounds\n`);
    line('raw stream of the same rows', `${summary.rawMs} ms (${rawResult.rows.toLocaleString()} rows, ${(rawResult.bytes / 2 ** 20).toFixed(1)} MiB), peak RSS ${summary.rawPeakRssMb} MB`);
    line('Oricon + Billboard files', `${summary.chartsMs} ms (Oricon ${summary.oriconMs} ms: ${files.oricon!.rows} rows; Billboard ${summary.billboardMs} ms: ${files.billboard!.rows} rows), peak RSS ${summary.chartsPeakRssMb} MB`);
    const pct = (r: number) => `${(r * 100).toFixed(0)} %`;
    line('ratio raw / one file (goal ≥ 50 %)', `Oricon ${pct(summary.ratioOricon)}, Billboard ${pct(summary.ratioBillboard)}`);
    line('ratio raw / both files', `${pct(summary.ratio)} (per round ${summary.ratioPerRound.map(pct).join(', ')})`);
    line('peak RSS of the charts (≤ 200 MB)', `${summary.chartsPeakRssMb} MB (${summary.chartsStartRssMb} MB before the work: Node, tsx and the modules)`);
    process.stdout.write(`${JSON.stringify(summary)}\n`);
  } finally {
    cluster?.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

await main();
