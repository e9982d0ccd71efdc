import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { basename } from 'node:path';
import { CompiledQuery, PostgresAdapter } from 'kysely';
import { z } from 'zod';
import type { Context } from '../context.js';
import type { Db, Tx } from '../db/index.js';
import { insertRow } from '../db/insert.js';
import type { Order } from '../db/schema.js';
import { KessaiError, notFound, parseInput } from '../errors.js';
import { newId, nowIso, random } from '../ids.js';
import { readChekichaZip, type CodeRow, type CsvEncoding, type CsvFile, type ImportEvent, type Rejection, type SerialSpec } from '../integrations/chekicha/import.js';
import type { ZipLimits } from '../integrations/chekicha/zip.js';
import type { FulfilmentLine } from './fulfilment-lines.js';
import { transitionOrder, type OrderEffect, type OrderState } from './order-machine.js';

/*
 * Chekicha serial codes: a pool per product, filled by imports, drawn from when an order is paid.
 *
 * A serial-code product takes part once it has a spec (artist, group, code type: what Chekicha's
 * export names on every row). A serial_code product without one delivers nothing through kessai
 * (codes handed out some other way) and is never held for want of codes.
 */

// ---------------------------------------------------------------- the spec

const text = z.string().trim().min(1, { error: 'must not be empty' }).max(200, { error: 'must be at most 200 characters' });
export const serialSpecInput = z.strictObject({ artistName: text, groupName: text, codeType: text });
export type SerialSpecInput = z.input<typeof serialSpecInput>;

async function serialProduct(db: Db | Tx, shopId: string, code: string) {
  const product = await db
    .selectFrom('products')
    .innerJoin('skus', 'skus.product_id', 'products.id')
    .leftJoin('serial_code_specs as spec', 'spec.product_id', 'products.id')
    .select(['products.id', 'products.kind', 'products.name', 'skus.id as sku_id', 'spec.artist_name', 'spec.group_name', 'spec.code_type'])
    .where('products.shop_id', '=', shopId)
    .where('products.code', '=', code)
    .executeTakeFirst();
  if (!product) throw notFound('product', `${shopId}/${code}`);
  if (product.kind !== 'serial_code') throw new KessaiError('not_serial_product', `product "${code}" is a ${product.kind} product; serial codes belong to serial_code products`, 409);
  return product;
}

/** Writes the spec inside the caller's transaction (createProduct uses it too). */
export async function writeSerialSpec(tx: Db | Tx, productId: string, spec: z.output<typeof serialSpecInput>): Promise<void> {
  const at = nowIso();
  await tx
    .insertInto('serial_code_specs')
    .values({ product_id: productId, artist_name: spec.artistName, group_name: spec.groupName, code_type: spec.codeType, created_at: at, updated_at: at })
    .onConflict((oc) => oc.column('product_id').doUpdateSet({ artist_name: spec.artistName, group_name: spec.groupName, code_type: spec.codeType, updated_at: at }))
    .execute();
}

/** Sets what every imported row of the product must name. Codes already imported are not re-checked. */
export async function setSerialSpec(ctx: Context, shopId: string, productCode: string, input: SerialSpecInput): Promise<SerialSpec> {
  const spec = parseInput(serialSpecInput, input);
  const product = await serialProduct(ctx.db, shopId, productCode);
  await writeSerialSpec(ctx.db, product.id, spec);
  return spec;
}

// ---------------------------------------------------------------- the import

/**
 * An import run whose heartbeat is older than this is taken for dead (its process crashed): the next
 * import of the product removes its rows, so they no longer count as duplicates.
 */
export const ABANDONED_AFTER_MS = 10 * 60_000;
/** Rows per INSERT: 13 parameters each, well under SQLite's 32,766 and PostgreSQL's 65,535. */
const INSERT_ROWS = 1000;
/**
 * Rows per transaction. Each commit writes every index page it touched, and random codes touch a
 * new page for almost every row, so small transactions multiply the writes: on SQLite, committing
 * every 1,000 rows made a 200,000-row import 1.7× slower than every 10,000, and every 10,000 made a
 * million-row import about 2.3× slower than every 50,000 (docs/benchmarks.md). The price: SQLite's
 * one write lock is held for a transaction's length, a second or two on a busy machine, which is
 * how long a payment may wait behind an import. PostgreSQL has no such lock.
 */
const TRANSACTION_ROWS = 50_000;
/** How often (in rows) an import writes its progress to its batch row, which is also its heartbeat. */
const HEARTBEAT_ROWS = 50_000;
/** Rejections kept in memory for the summary; all of them go to `onRejection`. */
const KEPT_REJECTIONS = 100;

export interface ImportOptions {
  shop: string;
  product: string;
  /** The ZIP on disk. */
  path: string;
  /** The name to record (an upload's original name); the path's base name by default. */
  fileName?: string;
  encoding?: CsvEncoding;
  /** Who ran it, for the record: `cli:<user>`, an operator's name. */
  importedBy: string;
  limits?: ZipLimits;
  onProgress?: (p: { bytesDone: number; bytesTotal: number; rowsRead: number }) => void;
  /** Every rejection as it is found (the report file); the summary keeps only the first ones. */
  onRejection?: (r: Rejection) => void;
}

export interface ImportSummary {
  batchId: string;
  state: 'imported' | 'rejected';
  fileName: string;
  checksum: string;
  files: CsvFile[];
  skipped: { name: string; reason: string }[];
  rowsRead: number;
  imported: number;
  /** Rows with at least one rejection. */
  rowsRejected: number;
  /** The first rejections (all of them went to onRejection). */
  rejections: Rejection[];
  rejectionCount: number;
}

async function sha256(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/**
 * Kysely does not say which engine a transaction runs on, and allocation needs to know (SQLite has
 * no row locks to skip). The adapter is the dialect's own object.
 */
function isPostgres(db: Db | Tx): boolean {
  return db.getExecutor().adapter instanceof PostgresAdapter;
}

const COLUMNS = ['product_id', 'code', 'shop_id', 'sku_id', 'batch_id', 'artist_name', 'group_name', 'code_type', 'valid_from', 'valid_until', 'state', 'source_file', 'source_line'] as const;

/** The multi-row INSERT for `n` rows, built once per size: its text is also the prepared-statement cache key. */
function insertText(postgres: boolean, n: number): string {
  let p = 0;
  const param = () => (postgres ? `$${++p}` : '?');
  const rows: string[] = [];
  for (let i = 0; i < n; i++) rows.push(`(${COLUMNS.map((c) => (c === 'state' ? `'available'` : param())).join(', ')})`);
  return `insert into serial_codes (${COLUMNS.join(', ')}) values ${rows.join(', ')} on conflict (product_id, code) do nothing`;
}

/**
 * Imports the codes of a Chekicha ZIP into a serial-code product, all or nothing.
 *
 * Rows are written as they stream in, in short transactions (constant memory, and other writers
 * are never locked out for the length of a file), into a batch that is `importing`: allocation
 * ignores its codes. Duplicates are found by the primary key as they arrive (ON CONFLICT DO
 * NOTHING, then a look at who holds the code). At the end one UPDATE of the batch row makes every
 * code available at once; any rejection deletes the batch's rows instead.
 */
export async function importSerialCodes(ctx: Context, options: ImportOptions): Promise<ImportSummary> {
  const product = await serialProduct(ctx.db, options.shop, options.product);
  if (product.artist_name === null || product.group_name === null || product.code_type === null) {
    throw new KessaiError('no_serial_spec', `product "${options.product}" has no serial-code spec (artist, group, code type) to check rows against; set it first: kessai serial-spec ${options.shop} ${options.product} --artist … --group … --code-type …`, 409);
  }
  const spec: SerialSpec = { artistName: product.artist_name, groupName: product.group_name, codeType: product.code_type };
  const fileName = options.fileName ?? basename(options.path);
  const checksum = await sha256(options.path);
  await abandonStaleBatches(ctx.db, product.id);

  const batchId = newId('scb');
  const started = nowIso();
  await insertRow(ctx.db, 'serial_code_batches', { id: batchId, shop_id: options.shop, product_id: product.id, file_name: fileName, checksum, files: '[]', state: 'importing', rows_read: 0, rows_imported: 0, rows_rejected: 0, error: null, imported_by: options.importedBy, started_at: started, updated_at: started, finished_at: null });

  const postgres = ctx.engine === 'postgres';
  const fullText = insertText(postgres, INSERT_ROWS);
  const files: CsvFile[] = [];
  const skipped: { name: string; reason: string }[] = [];
  const kept: Rejection[] = [];
  let rejectionCount = 0;
  let rowsRejected = 0;
  let rowsRead = 0;
  let inserted = 0;
  let nextBeat = HEARTBEAT_ROWS;
  const otherBatches = new Map<string, { file_name: string; state: string; started_at: string }>();

  const report = (list: Rejection[]) => {
    const lines = new Set<string>();
    for (const r of list) {
      rejectionCount++;
      if (kept.length < KEPT_REJECTIONS) kept.push(r);
      options.onRejection?.(r);
      if (r.line > 0) lines.add(`${r.file}\n${r.line}`);
    }
    rowsRejected += lines.size;
  };

  /** Writes one INSERT's worth of rows in the open transaction; duplicates become rejections. */
  const insert = async (tx: Tx, rows: CodeRow[]) => {
    if (rows.length === 0) return;
    const params: unknown[] = [];
    for (const r of rows) params.push(product.id, r.code, options.shop, product.sku_id, batchId, r.artistName, r.groupName, r.codeType, r.validFrom, r.validUntil, r.file, r.line);
    const result = await tx.executeQuery(CompiledQuery.raw(rows.length === INSERT_ROWS ? fullText : insertText(postgres, rows.length), params));
    const added = Number(result.numAffectedRows ?? 0n);
    inserted += added;
    if (added < rows.length) report(await duplicates(tx, rows));
  };

  /** Why the rows of a chunk that were not inserted were refused: who holds each code (rule 4). */
  const duplicates = async (tx: Tx, rows: CodeRow[]): Promise<Rejection[]> => {
    const holders = await tx
      .selectFrom('serial_codes')
      .select(['code', 'batch_id', 'source_file', 'source_line'])
      .where('product_id', '=', product.id)
      .where('code', 'in', rows.map((r) => r.code))
      .execute();
    const byCode = new Map(holders.map((h) => [h.code, h]));
    const out: Rejection[] = [];
    for (const r of rows) {
      const h = byCode.get(r.code);
      if (!h || (h.batch_id === batchId && h.source_file === r.file && h.source_line === r.line)) continue;
      const file = files[r.file]!.name;
      let reason: string;
      if (h.batch_id === batchId) {
        const where = h.source_file === r.file ? `line ${h.source_line}` : `${files[h.source_file]?.name ?? '?'} line ${h.source_line}`;
        reason = `rule 4: code "${r.code}" appears twice in the upload (first on ${where})`;
      } else {
        let other = otherBatches.get(h.batch_id);
        if (!other) {
          other = await tx.selectFrom('serial_code_batches').select(['file_name', 'state', 'started_at']).where('id', '=', h.batch_id).executeTakeFirstOrThrow();
          otherBatches.set(h.batch_id, other);
        }
        reason = other.state === 'importing'
          ? `rule 4: code "${r.code}" is being imported right now by another run (${other.file_name})`
          : `rule 4: code "${r.code}" is already in the database (imported from ${other.file_name} on ${jstDate(new Date(other.started_at))})`;
      }
      out.push({ file, line: r.line, column: files[r.file]!.codeColumn, reason });
    }
    return out;
  };

  let events: AsyncIterator<ImportEvent> | undefined;
  try {
    // Rows stream into an open transaction, one INSERT's worth in memory at a time; the
    // transaction commits every TRANSACTION_ROWS rows.
    const reading = readChekichaZip(options.path, { spec, encoding: options.encoding, limits: options.limits })[Symbol.asyncIterator]();
    events = reading;
    let pending: CodeRow[] = [];
    let done = false;
    while (!done) {
      await ctx.db.transaction().execute(async (tx) => {
        let written = 0;
        while (written < TRANSACTION_ROWS) {
          const next = await reading.next();
          if (next.done) {
            done = true;
            await insert(tx, pending);
            pending = [];
            return;
          }
          const event = next.value;
          if (event.type === 'file') files.push(event.file);
          else if (event.type === 'skipped') skipped.push({ name: event.name, reason: event.reason });
          else {
            report(event.rejections);
            rowsRead = event.rowsRead;
            for (const row of event.rows) {
              pending.push(row);
              if (pending.length === INSERT_ROWS) {
                const rows = pending;
                pending = [];
                await insert(tx, rows);
                written += rows.length;
              }
            }
            options.onProgress?.({ bytesDone: event.bytesDone, bytesTotal: event.bytesTotal, rowsRead });
          }
        }
      });
      if (rowsRead >= nextBeat) {
        nextBeat = rowsRead + HEARTBEAT_ROWS;
        await ctx.db.updateTable('serial_code_batches').set({ rows_read: rowsRead, updated_at: nowIso() }).where('id', '=', batchId).execute();
      }
    }
  } catch (error) {
    await events?.return?.(undefined); // closes the archive when the database failed, not the reader
    await finishRejected(ctx.db, batchId, { rowsRead, rowsRejected, files, error: error instanceof Error ? error.message : String(error) });
    throw error;
  }

  if (rejectionCount === 0 && inserted === 0) {
    report([{ file: files[0]?.name ?? fileName, line: 0, column: '', reason: 'the upload holds no codes' }]);
  }
  const summary = { batchId, fileName, checksum, files, skipped, rowsRead, rowsRejected, rejections: kept, rejectionCount };
  if (rejectionCount > 0) {
    await finishRejected(ctx.db, batchId, { rowsRead, rowsRejected, files, error: `${rejectionCount} rejection(s) in ${rowsRejected} row(s)` });
    return { ...summary, state: 'rejected', imported: 0 };
  }
  // The switch: one row, so every code of the upload becomes available at the same instant.
  const done = await ctx.db
    .updateTable('serial_code_batches')
    .set({ state: 'imported', rows_read: rowsRead, rows_imported: inserted, files: JSON.stringify(files), updated_at: nowIso(), finished_at: nowIso() })
    .where('id', '=', batchId)
    .where('state', '=', 'importing')
    .executeTakeFirst();
  if (Number(done.numUpdatedRows) !== 1) {
    throw new KessaiError('import_abandoned', `import ${batchId} was taken for abandoned by another run (no progress for ${ABANDONED_AFTER_MS / 60_000} minutes) and removed; run it again`, 409);
  }
  return { ...summary, state: 'imported', imported: inserted };
}

async function finishRejected(db: Db, batchId: string, r: { rowsRead: number; rowsRejected: number; files: CsvFile[]; error: string }): Promise<void> {
  // The rows go first: a batch marked rejected never has codes left behind.
  await db.deleteFrom('serial_codes').where('batch_id', '=', batchId).execute();
  const at = nowIso();
  await db
    .updateTable('serial_code_batches')
    .set({ state: 'rejected', rows_read: r.rowsRead, rows_rejected: r.rowsRejected, rows_imported: 0, files: JSON.stringify(r.files), error: r.error.slice(0, 2000), updated_at: at, finished_at: at })
    .where('id', '=', batchId)
    .execute();
}

/** Removes the rows of imports of this product that stopped without finishing (a crashed process). */
async function abandonStaleBatches(db: Db, productId: string): Promise<void> {
  const before = nowIso(new Date(Date.now() - ABANDONED_AFTER_MS));
  const stale = await db.selectFrom('serial_code_batches').select('id').where('product_id', '=', productId).where('state', '=', 'importing').where('updated_at', '<', before).execute();
  for (const { id } of stale) {
    await db.deleteFrom('serial_codes').where('batch_id', '=', id).execute();
    const at = nowIso();
    await db.updateTable('serial_code_batches').set({ state: 'abandoned', error: 'no progress: the importing process stopped', updated_at: at, finished_at: at }).where('id', '=', id).where('state', '=', 'importing').execute();
  }
}

export async function listSerialBatches(ctx: Context, shopId: string, productCode: string) {
  const product = await serialProduct(ctx.db, shopId, productCode);
  return ctx.db.selectFrom('serial_code_batches').selectAll().where('product_id', '=', product.id).orderBy('started_at', 'desc').execute();
}

/** Codes of a product by state, counting only imported batches; `valid` are those usable today (JST). */
export async function serialStock(db: Db, productId: string, now = new Date()) {
  const today = jstDate(now);
  const rows = await db
    .selectFrom('serial_codes')
    .innerJoin('serial_code_batches as b', 'b.id', 'serial_codes.batch_id')
    .select((eb) => [
      'serial_codes.state',
      eb.fn.countAll<number>().as('n'),
      eb.fn.sum<number>(eb.case().when(eb.and([eb('serial_codes.valid_from', '<=', today), eb('serial_codes.valid_until', '>=', today)])).then(1).else(0).end()).as('valid'),
    ])
    .where('serial_codes.product_id', '=', productId)
    .where('b.state', '=', 'imported')
    .groupBy('serial_codes.state')
    .execute();
  const available = rows.find((r) => r.state === 'available');
  return {
    available: Number(available?.n ?? 0),
    validToday: Number(available?.valid ?? 0),
    assigned: Number(rows.find((r) => r.state === 'assigned')?.n ?? 0),
  };
}

// ---------------------------------------------------------------- allocation

/** The calendar date in Japan: a code valid "until 2026-12-31" is valid all of that day in JST. */
export function jstDate(now: Date): string {
  return new Date(now.getTime() + 9 * 3600_000).toISOString().slice(0, 10);
}

export interface CodeShortfall {
  lineId: string;
  name: string;
  quantity: number;
  missing: number;
}

/**
 * Assigns one available, currently valid code per unit of the order's serial-code lines, inside the
 * caller's transaction (the `fulfil` effect of a payment). Lines of products without a spec are
 * left alone. Codes already assigned to a line count (a held order released again only takes what
 * it still lacks). Answers what could not be found; the codes found stay with the order.
 *
 * No code is given twice: the UPDATE takes a code only `WHERE state = 'available'`, so of two
 * transactions that picked the same row, the second updates nothing. On PostgreSQL the pick skips
 * rows other payments have locked (FOR UPDATE SKIP LOCKED), so parallel payments take different
 * codes instead of queueing; a short pick is confirmed by waiting for those locks (a payment that
 * rolls back gives its codes back) before the order is held. SQLite has one writer at a time.
 */
export async function allocateSerialCodes(tx: Tx, order: Pick<Order, 'id'>, orderLines: readonly FulfilmentLine[], now = new Date()): Promise<CodeShortfall[]> {
  const lines = orderLines.filter((l) => l.kind === 'serial_code' && l.hasCodeSpec);
  if (lines.length === 0) return [];
  const postgres = isPostgres(tx);
  const today = jstDate(now);
  const at = nowIso(now);
  const short: CodeShortfall[] = [];
  for (const line of lines) {
    const held = await tx.selectFrom('serial_codes').select((eb) => eb.fn.countAll<number>().as('n')).where('order_line_id', '=', line.id).executeTakeFirstOrThrow();
    let missing = line.quantity - Number(held.n);
    const pick = async (lock: 'skip' | 'wait') => {
      let candidates = tx
        .selectFrom('serial_codes')
        .select('code')
        .where('sku_id', '=', line.skuId)
        .where('state', '=', 'available')
        .where('valid_from', '<=', today)
        .where('valid_until', '>=', today)
        .where('batch_id', 'in', (eb) => eb.selectFrom('serial_code_batches').select('id').where('product_id', '=', line.productId).where('state', '=', 'imported'))
        // The codes that expire first go first.
        .orderBy('valid_until')
        .orderBy('code')
        .limit(missing);
      if (postgres) candidates = lock === 'skip' ? candidates.forUpdate().skipLocked() : candidates.forUpdate();
      // The pick is a materialized CTE, run exactly once: as an IN (subquery) PostgreSQL may run it
      // again for the same statement, and with SKIP LOCKED a second run finds other rows (an order
      // of 3 was seen taking 4 codes).
      const taken = await tx
        .with((cte) => cte('picked').materialized(), () => candidates)
        .updateTable('serial_codes')
        .set({ state: 'assigned', order_id: order.id, order_line_id: line.id, assigned_at: at })
        .where('product_id', '=', line.productId)
        .where('code', 'in', (eb) => eb.selectFrom('picked').select('picked.code'))
        .where('state', '=', 'available')
        .returning('code')
        .execute();
      return taken.length;
    };
    if (missing > 0) missing -= await pick('skip');
    // PostgreSQL only: rows skipped as locked may come back (a payment rolled back); wait and look again.
    while (postgres && missing > 0) {
      const got = await pick('wait');
      if (got === 0) break;
      missing -= got;
    }
    if (missing > 0) short.push({ lineId: line.id, name: line.name, quantity: line.quantity, missing });
  }
  return short;
}

/**
 * An order that was to be fulfilled but lacks codes goes on hold instead, unfulfilled: the customer
 * is not told "paid" yet (the paid mail would have no codes), the operator is alerted, and releasing
 * the order to paid after an import fulfils it then, codes and mail included.
 */
export function holdForMissingCodes<N extends { state: OrderState; fulfilled: boolean; holdReason?: string | null }>(
  next: N,
  effects: readonly OrderEffect[],
  short: CodeShortfall[],
): { next: N; effects: OrderEffect[] } {
  const what = short.map((s) => `${s.name}: ${s.missing} of ${s.quantity}`).join('; ');
  const t = transitionOrder(next.state, 'hold');
  return {
    next: { ...next, state: t.ok ? t.to : next.state, fulfilled: false, holdReason: `out of serial codes (${what} without a code); import codes, then release the order to paid` },
    effects: [...effects.filter((e) => e !== 'fulfil' && e !== 'notify_paid'), 'alert_hold'],
  };
}

/** An order cancelled before its codes were delivered gives them back to the pool. */
export async function releaseUndeliveredCodes(tx: Tx, orderId: string): Promise<number> {
  const result = await tx
    .updateTable('serial_codes')
    .set({ state: 'available', order_id: null, order_line_id: null, assigned_at: null })
    .where('order_id', '=', orderId)
    .where('state', '=', 'assigned')
    .executeTakeFirst();
  return Number(result.numUpdatedRows);
}

export interface SerialCodeView {
  productName: string;
  code: string;
  validFrom: string;
  validUntil: string;
}

/** The codes of an order, in line order, as the customer sees them. */
export async function orderSerialCodes(db: Db | Tx, orderId: string): Promise<SerialCodeView[]> {
  const rows = await db
    .selectFrom('serial_codes')
    .innerJoin('order_lines', 'order_lines.id', 'serial_codes.order_line_id')
    .select(['serial_codes.code', 'serial_codes.valid_from', 'serial_codes.valid_until', 'order_lines.name'])
    .where('serial_codes.order_id', '=', orderId)
    .orderBy('order_lines.position')
    .orderBy('serial_codes.code')
    .execute();
  return rows.map((r) => ({ productName: r.name, code: r.code, validFrom: r.valid_from, validUntil: r.valid_until }));
}

// ---------------------------------------------------------------- the demo shop

/**
 * Gives a product `count` made-up codes, valid for years, as one imported batch: what the demo
 * shop needs so that a newcomer's purchase is delivered. Does nothing once the product has had any
 * import. Answers the number of codes added.
 */
export async function addDemoCodes(ctx: Context, shopId: string, productCode: string, count: number): Promise<number> {
  const product = await serialProduct(ctx.db, shopId, productCode);
  if (product.artist_name === null || product.group_name === null || product.code_type === null) return 0;
  const any = await ctx.db.selectFrom('serial_code_batches').select('id').where('product_id', '=', product.id).limit(1).executeTakeFirst();
  if (any) return 0;
  const batchId = newId('scb');
  const at = nowIso();
  const alphabet = '23456789ABCDEFGHJKLMNPQRSTUVWXYZ';
  const code = () => `DEMO-${[...random(12)].map((b) => alphabet[b % alphabet.length]).join('').replace(/(.{4})(?=.)/g, '$1-')}`;
  const from = jstDate(new Date());
  await ctx.db.transaction().execute(async (tx) => {
    await insertRow(tx, 'serial_code_batches', { id: batchId, shop_id: shopId, product_id: product.id, file_name: '(demo)', checksum: '', files: '[]', state: 'imported', rows_read: count, rows_imported: count, rows_rejected: 0, error: null, imported_by: 'seed-demo', started_at: at, updated_at: at, finished_at: at });
    const rows = Array.from({ length: count }, (_, i) => ({
      product_id: product.id, code: code(), shop_id: shopId, sku_id: product.sku_id, batch_id: batchId,
      artist_name: product.artist_name!, group_name: product.group_name!, code_type: product.code_type!,
      valid_from: from, valid_until: '2099-12-31', state: 'available' as const, source_file: 0, source_line: i + 2,
    }));
    for (let i = 0; i < rows.length; i += 500) await tx.insertInto('serial_codes').values(rows.slice(i, i + 500)).onConflict((oc) => oc.doNothing()).execute();
  });
  return count;
}
