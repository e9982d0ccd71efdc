/**
 * Serial-code import: a million Chekicha codes in a Shift_JIS CSV inside a ZIP, imported through
 * the service (commerce/serial-codes.ts: unzip, decode, parse, six rules, all-or-nothing batch),
 * against a raw prepared-statement insert of the same rows into the same table of the same engine.
 *
 *   node --import tsx bench/serial-import.ts [--engine sqlite|postgres] [--rows 1000000]
 *
 * Each side gets a fresh database (the same tables and indexes, empty), so neither pays for the
 * other's index. The raw side is the floor of what the database can do, without reading a file:
 *   SQLite     one prepared single-row INSERT (better-sqlite3) run once per row, one transaction;
 *   PostgreSQL one named prepared 1,000-row INSERT run once per 1,000 rows, one transaction (a
 *              single-row statement would pay a round trip per row and flatter the service).
 * The service side is `kessai import-serials` itself, built into a scratch directory and run as an
 * operator runs it (its wall time includes the process start, about a second), with its peak RSS
 * from /usr/bin/time; where that is not possible it runs in a tsx child process instead (whose RSS
 * carries ~120 MB of tsx). Reported: wall time of each, ratio (raw ÷ service; goal ≥ 25 %), peak
 * RSS of the importing process (goal ≤ 300 MB). The ZIP is written by another child process first
 * (not timed).
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, createWriteStream, existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { availableParallelism, cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import BetterSqlite3 from 'better-sqlite3';
import { sql } from 'kysely';
import pg from 'pg';
import yazl from 'yazl';
import { createProduct } from '../src/commerce/catalog.js';
import { importSerialCodes } from '../src/commerce/serial-codes.js';
import { createShop } from '../src/commerce/shops.js';
import { loadConfig } from '../src/config.js';
import type { Context } from '../src/context.js';
import { migrateToLatest, openDatabase, type DatabaseHandle } from '../src/db/index.js';
import { encodeSjis } from '../src/gateways/common/sjis.js';
import { newId, nowIso } from '../src/ids.js';
import { createLogger, Metrics } from '../src/observability.js';
import { startPostgres, type Cluster } from './lib.js';

const { values: args } = parseArgs({
  options: {
    engine: { type: 'string', default: process.env.KESSAI_BENCH_ENGINE ?? 'sqlite' },
    rows: { type: 'string', default: '1000000' },
    // Internal: the two child processes.
    'write-zip': { type: 'string' },
    'import-zip': { type: 'string' },
    'database-url': { type: 'string' },
  },
});
const engine = args.engine === 'postgres' ? 'postgres' : 'sqlite';
const ROWS = Number(args.rows);
const SPEC = { artistName: 'デモアーティスト', groupName: 'デモグループ', codeType: '特典会参加券' };
const MB = 1024 * 1024;
const ROOT = fileURLToPath(new URL('..', import.meta.url));

const work = mkdtempSync(join(tmpdir(), 'kessai-bench-serials-'));
let cluster: Cluster | undefined;
const cleanup = () => {
  cluster?.stop();
  cluster = undefined;
  rmSync(work, { recursive: true, force: true });
};
process.once('SIGINT', () => {
  cleanup();
  process.exit(130);
});

/** The i-th code: 16 characters, unique, not in order (as Chekicha's are not). */
function code(i: number): string {
  return createHash('sha1').update(String(i)).digest('hex').slice(0, 12).toUpperCase() + String(i % 10_000).padStart(4, '0');
}

function row(i: number): string {
  return `${code(i)},${SPEC.artistName},${SPEC.groupName},${SPEC.codeType},2026/01/01,2027/03/31\r\n`;
}

/** Writes the ZIP without holding the CSV: Shift_JIS chunks of 10,000 rows, deflated as they stream. */
async function writeZip(path: string): Promise<void> {
  function* chunks() {
    yield encodeSjis('シリアルコード,アーティスト名,グループ名,コード種別,有効期間開始,有効期間終了\r\n');
    for (let i = 0; i < ROWS; i += 10_000) {
      let text = '';
      for (let j = i; j < Math.min(ROWS, i + 10_000); j++) text += row(j);
      yield encodeSjis(text);
    }
  }
  const zip = new yazl.ZipFile();
  zip.addReadStream(Readable.from(chunks()), 'シリアルコード一覧.csv');
  zip.end();
  await pipeline(zip.outputStream, createWriteStream(path));
}

interface Store {
  handle: DatabaseHandle;
  ctx: Context;
  url: string;
  productId: string;
  skuId: string;
}

let databases = 0;
async function freshStore(): Promise<Store> {
  let url = join(work, `db-${++databases}.sqlite`);
  if (engine === 'postgres') {
    const name = `bench_${databases}`;
    const admin = new pg.Client({ connectionString: cluster!.url });
    await admin.connect();
    await admin.query(`create database ${name}`);
    await admin.end();
    const u = new URL(cluster!.url);
    u.pathname = `/${name}`;
    url = u.toString();
  }
  const handle = openDatabase(url);
  await migrateToLatest(handle.db);
  const config = loadConfig({ DATABASE_URL: url, KESSAI_DATA_DIR: work, KESSAI_MASTER_KEY: '00'.repeat(32), LOG_LEVEL: 'silent' });
  const ctx: Context = { config, db: handle.db, engine: handle.engine, log: createLogger('silent'), metrics: new Metrics() };
  await createShop(ctx, { id: 'bench', name: 'ベンチ店' });
  const { productId, skuId } = await createProduct(ctx, 'bench', { code: 'codes', name: 'シリアル', kind: 'serial_code', price: 1000, stock: ROWS, serial: SPEC });
  return { handle, ctx, url, productId, skuId };
}

/** RSS sampled while `fn` runs. */
async function sampled<T>(fn: () => Promise<T>): Promise<{ result: T; seconds: number; peakRss: number }> {
  let peakRss = process.memoryUsage.rss();
  const timer = setInterval(() => {
    peakRss = Math.max(peakRss, process.memoryUsage.rss());
  }, 20);
  const t0 = performance.now();
  try {
    const result = await fn();
    return { result, seconds: (performance.now() - t0) / 1000, peakRss: Math.max(peakRss, process.memoryUsage.rss()) };
  } finally {
    clearInterval(timer);
  }
}

const COLUMNS = 'product_id, code, shop_id, sku_id, batch_id, artist_name, group_name, code_type, valid_from, valid_until, state, source_file, source_line';

/** The raw floor: the same rows straight into the same table, no file, no checks. */
async function rawInsert(store: Store): Promise<void> {
  const batchId = newId('scb');
  const at = nowIso();
  await store.ctx.db
    .insertInto('serial_code_batches')
    .values({ id: batchId, shop_id: 'bench', product_id: store.productId, file_name: 'raw', checksum: '', files: '[]', state: 'imported', rows_read: ROWS, rows_imported: ROWS, rows_rejected: 0, error: null, imported_by: 'bench', started_at: at, updated_at: at, finished_at: at })
    .execute();
  const values = (i: number) => [store.productId, code(i), 'bench', store.skuId, batchId, SPEC.artistName, SPEC.groupName, SPEC.codeType, '2026-01-01', '2027-03-31', 'available', 0, i + 2];
  if (engine === 'sqlite') {
    await store.handle.close();
    const db = new BetterSqlite3(store.url);
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    db.pragma('foreign_keys = ON');
    const insert = db.prepare(`insert into serial_codes (${COLUMNS}) values (${Array(13).fill('?').join(', ')})`);
    db.transaction(() => {
      for (let i = 0; i < ROWS; i++) insert.run(values(i));
    })();
    db.close();
    return;
  }
  const client = new pg.Client({ connectionString: store.url });
  await client.connect();
  const per = 1000;
  const text = (n: number) => `insert into serial_codes (${COLUMNS}) values ${Array.from({ length: n }, (_, r) => `(${Array.from({ length: 13 }, (_, c) => `$${r * 13 + c + 1}`).join(', ')})`).join(', ')}`;
  await client.query('begin');
  for (let i = 0; i < ROWS; i += per) {
    const n = Math.min(per, ROWS - i);
    const params: unknown[] = [];
    for (let j = i; j < i + n; j++) params.push(...values(j));
    await client.query({ name: n === per ? 'raw_full' : `raw_${n}`, text: text(n), values: params });
  }
  await client.query('commit');
  await client.end();
  await store.handle.close();
}

async function main(): Promise<void> {
  if (engine === 'postgres') cluster = startPostgres();
  const zipPath = join(work, 'codes.zip');
  const t0 = performance.now();
  // Written by a child process: building a million rows would leave its garbage in this heap and
  // blur the import's peak RSS.
  const child = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--rows', String(ROWS), '--write-zip', zipPath], { stdio: 'inherit' });
  if (child.status !== 0) throw new Error(`writing the ZIP failed (exit ${child.status})`);
  const zipBytes = statSync(zipPath).size;
  process.stderr.write(`[serial-import] ${ROWS} rows, ZIP ${(zipBytes / MB).toFixed(1)} MB, written in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);

  const a = await freshStore();
  await a.handle.close();
  const service = runBuiltCli(zipPath, a.url) ?? runTsxChild(zipPath, a.url);
  if (service.state !== 'imported' || service.imported !== ROWS) throw new Error(`import did not import everything: ${JSON.stringify(service)}`);
  a.handle = openDatabase(a.url);
  const counted = await a.handle.db.selectFrom('serial_codes').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
  if (Number(counted.n) !== ROWS) throw new Error(`expected ${ROWS} codes, found ${counted.n}`);
  const version = engine === 'sqlite' ? `SQLite ${(await sql<{ v: string }>`select sqlite_version() as v`.execute(a.handle.db)).rows[0]!.v}` : cluster!.version;
  await a.handle.close();

  const b = await freshStore();
  const raw = await sampled(() => rawInsert(b));

  const ratio = raw.seconds / service.seconds;
  const out = [
    `serial-code import, ${engine} (${version}), ${ROWS.toLocaleString('en')} rows, ZIP ${(zipBytes / MB).toFixed(1)} MB; node ${process.version}, ${availableParallelism()} cores (${cpus()[0]?.model.trim()}), ${(totalmem() / 1024 / MB).toFixed(1)} GB`,
    `  service  ${service.seconds.toFixed(2)} s  ${Math.round(ROWS / service.seconds).toLocaleString('en')} rows/s  peak RSS ${(service.kernelPeak / MB).toFixed(0)} MB (${service.how})`,
    `  raw      ${raw.seconds.toFixed(2)} s  ${Math.round(ROWS / raw.seconds).toLocaleString('en')} rows/s`,
    `  ratio    ${(ratio * 100).toFixed(0)} % (goal ≥ 25 %)   peak RSS goal ≤ 300 MB: ${service.kernelPeak <= 300 * MB ? 'met' : 'NOT met'}`,
  ];
  process.stdout.write(`${out.join('\n')}\n`);
  const figures = { bench: 'serial-import', engine, version, rows: ROWS, zipBytes, serviceSeconds: service.seconds, rawSeconds: raw.seconds, ratio, peakRssBytes: service.kernelPeak, measuredAs: service.how };
  process.stdout.write(`${JSON.stringify(figures)}\n`);
}

interface ChildReport {
  state: string;
  imported: number;
  seconds: number;
  /** The importing process's peak RSS (the kernel's high-water mark), bytes. */
  kernelPeak: number;
  how: string;
}

/**
 * The import as an operator runs it: `kessai import-serials` from a fresh build (into a directory
 * under node_modules/.cache, so dist/ is left alone), timed and measured by /usr/bin/time. Undefined when either is
 * not available; then the tsx child stands in.
 */
function runBuiltCli(zipPath: string, url: string): ChildReport | undefined {
  // Inside the project, so that the build finds node_modules as dist/ does.
  const out = join(ROOT, 'node_modules/.cache', `kessai-bench-dist-${process.pid}`);
  process.once('exit', () => rmSync(out, { recursive: true, force: true }));
  const build = spawnSync(process.execPath, [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', join(ROOT, 'tsconfig.build.json'), '--outDir', out], { encoding: 'utf8' });
  // What scripts/copy-assets.mjs adds to dist/: the store loads them on start.
  for (const dir of ['http/views', 'http/assets']) if (existsSync(join(out, 'cli'))) cpSync(join(ROOT, 'src', dir), join(out, dir), { recursive: true });
  const main = join(out, 'cli/main.js');
  if (!existsSync(main) || !existsSync('/usr/bin/time')) {
    process.stderr.write(`[serial-import] no built CLI (${build.stdout.split('\n')[0] ?? ''}); measuring through tsx instead\n`);
    return undefined;
  }
  const timeFile = join(work, 'time.txt');
  const env = { PATH: process.env.PATH ?? '', DATABASE_URL: url, KESSAI_DATA_DIR: work, KESSAI_MASTER_KEY: '00'.repeat(32), LOG_LEVEL: 'warn' };
  const t0 = performance.now();
  const run = spawnSync('/usr/bin/time', ['-f', '%M', '-o', timeFile, process.execPath, main, 'import-serials', zipPath, '--shop', 'bench', '--product', 'codes'], { encoding: 'utf8', env });
  const seconds = (performance.now() - t0) / 1000;
  if (run.status !== 0) {
    process.stderr.write(`[serial-import] the built CLI failed (exit ${run.status}): ${run.stderr.slice(0, 500)}; measuring through tsx instead\n`);
    return undefined;
  }
  const imported = Number(/imported (\d+),/.exec(run.stdout)?.[1] ?? -1);
  return { state: /: imported\n/.test(run.stdout) ? 'imported' : 'rejected', imported, seconds, kernelPeak: Number(readFileSync(timeFile, 'utf8').trim().split('\n').pop()) * 1024, how: 'kessai import-serials, built, whole process incl. start-up; /usr/bin/time max RSS' };
}

function runTsxChild(zipPath: string, url: string): ChildReport {
  const importer = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--engine', engine, '--rows', String(ROWS), '--import-zip', zipPath, '--database-url', url], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  if (importer.status !== 0) throw new Error(`the import child failed (exit ${importer.status})`);
  return JSON.parse(importer.stdout) as ChildReport;
}

/** The child: open the prepared database, run the import, report (JSON on stdout). */
async function importChild(zipPath: string, url: string): Promise<void> {
  const handle = openDatabase(url);
  const config = loadConfig({ DATABASE_URL: url, KESSAI_DATA_DIR: work, KESSAI_MASTER_KEY: '00'.repeat(32), LOG_LEVEL: 'silent' });
  const ctx: Context = { config, db: handle.db, engine: handle.engine, log: createLogger('silent'), metrics: new Metrics() };
  const rssBefore = process.memoryUsage.rss();
  const t0 = performance.now();
  const summary = await importSerialCodes(ctx, { shop: 'bench', product: 'codes', path: zipPath, importedBy: 'bench' });
  const seconds = (performance.now() - t0) / 1000;
  await handle.close();
  const how = `in a tsx child process (tsx's loader thread and transpiled sources add ~120 MB over the built CLI); ${Math.round(rssBefore / MB)} MB before the import`;
  const report: ChildReport = { state: summary.state, imported: summary.imported, seconds, kernelPeak: process.resourceUsage().maxRSS * 1024, how };
  process.stdout.write(JSON.stringify(report));
}

if (args['write-zip']) {
  await writeZip(args['write-zip']);
  rmSync(work, { recursive: true, force: true });
} else if (args['import-zip'] && args['database-url']) {
  await importChild(args['import-zip'], args['database-url']);
  rmSync(work, { recursive: true, force: true });
} else {
  await main().then(cleanup, (error: unknown) => {
    cleanup();
    process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exitCode = 1;
  });
}
