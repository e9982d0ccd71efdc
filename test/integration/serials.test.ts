/**
 * Chekicha serial codes as the operator and the buyer meet them: a ZIP of Shift_JIS or UTF-8 CSVs
 * imported all or nothing, every rule's rejection named by file, line and column, hostile archives
 * refused before anything is read; paid orders take one valid code per unit inside the payment's
 * transaction, never the same code twice, and an order that cannot get its codes waits on hold.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { deflateRawSync } from 'node:zlib';
import yazl from 'yazl';
import { createProduct } from '../../src/commerce/catalog.js';
import { importSerialCodes, jstDate, type ImportSummary } from '../../src/commerce/serial-codes.js';
import { encodeSjis } from '../../src/gateways/common/sjis.js';
import { CsvReader } from '../../src/integrations/chekicha/csv.js';
import { parseDate, type Rejection } from '../../src/integrations/chekicha/import.js';
import { applyFact } from '../../src/payments/apply-fact.js';
import { DEFAULT_ZIP_LIMITS, type ZipLimits } from '../../src/integrations/chekicha/zip.js';
import { forEachEngine } from '../helpers/db.js';
import { eventually } from '../helpers/eventually.js';
import { readMails } from '../helpers/mail.js';
import { ADMIN_TOKEN, notificationsApplied, startStore, type TestStore } from '../helpers/store.js';

const ROOT = join(import.meta.dirname, '../..');
const SPEC = { artistName: '星野アイ', groupName: 'B小町', codeType: '特典会参加券' };
const HEADER = 'シリアルコード,アーティスト名,グループ名,コード種別,有効期間開始,有効期間終了';
const tmp = mkdtempSync(join(tmpdir(), 'kessai-serials-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

// ---------------------------------------------------------------- building uploads

interface Row {
  code: string;
  artist?: string;
  group?: string;
  type?: string;
  from?: string;
  until?: string;
}

const newCode = () => randomBytes(8).toString('hex').toUpperCase();

function csvText(rows: Row[], header = HEADER): string {
  const lines = rows.map((r) => [r.code, r.artist ?? SPEC.artistName, r.group ?? SPEC.groupName, r.type ?? SPEC.codeType, r.from ?? '2020/01/01', r.until ?? '2099/12/31'].join(','));
  return `${[header, ...lines].join('\r\n')}\r\n`;
}

const sjisCsv = (rows: Row[], header?: string) => encodeSjis(csvText(rows, header));
const utf8Csv = (rows: Row[], bom = true) => Buffer.concat([bom ? Buffer.from([0xef, 0xbb, 0xbf]) : Buffer.alloc(0), Buffer.from(csvText(rows), 'utf8')]);

interface Entry {
  name: string;
  data: Buffer;
  /** Unix mode (0o120777 makes a symbolic link). */
  mode?: number;
  compress?: boolean;
}

/** A ZIP as yazl writes it (UTF-8 names, flag bit 11 set). */
function zipOf(entries: Entry[]): Promise<Buffer> {
  const zip = new yazl.ZipFile();
  for (const e of entries) zip.addBuffer(e.data, e.name, { mode: e.mode, compress: e.compress ?? true });
  zip.end();
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    zip.outputStream.on('data', (c: Buffer) => chunks.push(c));
    zip.outputStream.on('end', () => resolve(Buffer.concat(chunks)));
    zip.outputStream.on('error', reject);
  });
}

/**
 * Rewrites an entry name in both its headers, as another archiver would have written it: raw bytes
 * (Shift_JIS, or a path yazl refuses to write) and, for Shift_JIS, without the UTF-8 flag. The
 * placeholder must have the same byte length.
 */
function renameEntry(zip: Buffer, placeholder: string, raw: Buffer, utf8Flag: boolean): Buffer {
  const from = Buffer.from(placeholder, 'utf8');
  assert.equal(from.length, raw.length, 'placeholder and name have the same length');
  const out = Buffer.from(zip);
  let found = 0;
  for (let at = out.indexOf(from); at >= 0; at = out.indexOf(from, at + 1)) {
    const header = out.readUInt32LE(at - 30) === 0x04034b50 ? { start: at - 30, flags: 6 } : out.readUInt32LE(at - 46) === 0x02014b50 ? { start: at - 46, flags: 8 } : undefined;
    assert.ok(header, 'the name sits in a local or central header');
    raw.copy(out, at);
    const flags = out.readUInt16LE(header.start + header.flags);
    out.writeUInt16LE(utf8Flag ? flags | 0x800 : flags & ~0x800, header.start + header.flags);
    found++;
  }
  assert.equal(found, 2, 'renamed in the local header and the central directory');
  return out;
}

function writeZip(zip: Buffer, name = `${randomBytes(4).toString('hex')}.zip`): string {
  const path = join(tmp, name);
  writeFileSync(path, zip);
  return path;
}

// ---------------------------------------------------------------- the store

async function serialProduct(store: TestStore, stock = 100): Promise<string> {
  const code = `serial-${randomBytes(4).toString('hex')}`;
  await createProduct(store.rt.ctx, 'default', { code, name: `特典会参加券 ${code}`, kind: 'serial_code', price: 1500, stock, serial: SPEC });
  return code;
}

async function runImport(store: TestStore, product: string, path: string, extra: { encoding?: 'sjis' | 'utf8'; limits?: ZipLimits } = {}): Promise<{ summary: ImportSummary; all: Rejection[] }> {
  const all: Rejection[] = [];
  const summary = await importSerialCodes(store.rt.ctx, { shop: 'default', product, path, importedBy: 'test', onRejection: (r) => all.push(r), ...extra });
  return { summary, all };
}

async function codesOf(store: TestStore, product: string) {
  return store.rt.ctx.db
    .selectFrom('serial_codes')
    .innerJoin('products', 'products.id', 'serial_codes.product_id')
    .select(['serial_codes.code', 'serial_codes.state', 'serial_codes.order_id', 'serial_codes.valid_from', 'serial_codes.valid_until', 'serial_codes.source_line'])
    .where('products.code', '=', product)
    .orderBy('serial_codes.code')
    .execute();
}

interface Placed {
  token: string;
  number: string;
  orderId: string;
  payUrl: string;
}

async function placeOrder(store: TestStore, sku: string, quantity: number): Promise<Placed> {
  const res = await fetch(`${store.url}/api/checkout`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ shop: 'default', customer: { email: 'fan@example.jp', name: '推し 活子' }, lines: [{ sku, quantity }], payment: { provider: 'testpay' } }),
  });
  const body = (await res.json()) as { order: { number: string; serialCodes: unknown[] }; orderToken: string; payment: { url: string } };
  assert.equal(res.status, 201, JSON.stringify(body));
  assert.deepEqual(body.order.serialCodes, [], 'an order being paid for has no codes yet');
  const row = await store.rt.ctx.db.selectFrom('orders').select('id').where('number', '=', body.order.number).executeTakeFirstOrThrow();
  return { token: body.orderToken, number: body.order.number, orderId: row.id, payUrl: body.payment.url };
}

/** Pays on testpay's hosted page; its signed webhook is then applied. */
async function payByCard(store: TestStore, order: Placed): Promise<void> {
  const res = await fetch(`${order.payUrl}/card`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: '', redirect: 'manual' });
  await res.arrayBuffer();
  assert.equal(res.status, 303);
  await notificationsApplied(store, 15_000);
}

interface OrderView {
  state: string;
  serialCodes: { productName: string; code: string; validFrom: string; validUntil: string }[];
}

async function view(store: TestStore, token: string): Promise<OrderView> {
  const res = await fetch(`${store.url}/api/orders/${token}`);
  assert.equal(res.status, 200);
  return ((await res.json()) as { order: OrderView }).order;
}

async function admin(store: TestStore, method: string, path: string, body?: unknown): Promise<Response> {
  return fetch(`${store.url}/api/admin${path}`, {
    method,
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
}

/** Imports the rows as codes.csv in a ZIP; answers the ZIP's name. */
async function importRows(store: TestStore, product: string, rows: Row[]): Promise<string> {
  const { summary } = await runImport(store, product, writeZip(await zipOf([{ name: 'codes.csv', data: sjisCsv(rows) }])));
  assert.equal(summary.state, 'imported', JSON.stringify(summary.rejections));
  return summary.fileName;
}

// ---------------------------------------------------------------- pure parts

describe('serial-code files', () => {
  it('read CSV records with their starting line, quotes, quoted newlines and CRLF, however the text is chunked', () => {
    const text = 'a,b\r\n"x,1","say ""hi""",z\n\n"two\nlines",2\nbad"q,4\n"open';
    const whole = [...new CsvReader().push(text)];
    const all = new CsvReader();
    const expected = [...all.push(text), ...all.end()];
    assert.deepEqual(expected, [
      { line: 1, fields: ['a', 'b'] },
      { line: 2, fields: ['x,1', 'say "hi"', 'z'] },
      { line: 4, fields: ['two\nlines', '2'] },
      { line: 6, fields: ['bad"q', '4'], error: 'a quote inside an unquoted field' },
      { line: 7, fields: ['open'], error: 'a quoted field is not closed' },
    ]);
    assert.equal(whole.length, 4, 'the unfinished last record waits for more text');
    for (let split = 0; split <= text.length; split++) {
      const r = new CsvReader();
      assert.deepEqual([...r.push(text.slice(0, split)), ...r.push(text.slice(split)), ...r.end()], expected, `split at ${split}`);
    }
  });

  it('refuse a record that never ends (an unclosed quote) instead of holding the file in memory', () => {
    const r = new CsvReader(1000);
    assert.throws(() => r.push(`"${'x'.repeat(2000)}`), /longer than 1000 characters/);
  });

  it('take dates as Chekicha writes them, and only real dates', () => {
    assert.equal(parseDate('2026-04-01'), '2026-04-01');
    assert.equal(parseDate('2026/4/1'), '2026-04-01');
    assert.equal(parseDate('20261231'), '2026-12-31');
    assert.equal(parseDate('2026-02-29'), undefined, 'not a leap year');
    assert.equal(parseDate('2026-13-01'), undefined);
    assert.equal(parseDate('2026-04-01 10:00'), undefined, 'a date, not a time');
    assert.equal(parseDate('令和8年4月1日'), undefined);
  });

  it('count validity in Japan: 15:00 UTC on 31 March is already 1 April', () => {
    assert.equal(jstDate(new Date('2026-03-31T14:59:59Z')), '2026-03-31');
    assert.equal(jstDate(new Date('2026-03-31T15:00:00Z')), '2026-04-01');
  });
});

forEachEngine('serial-code import', (engine) => {
  let store: TestStore;
  before(async () => {
    store = await startStore(engine);
  });
  after(async () => {
    await store?.close();
  });

  it('imports a Shift_JIS CSV with a Shift_JIS entry name and a UTF-8 CSV with a BOM from one ZIP', async () => {
    const product = await serialProduct(store);
    const sjisRows = Array.from({ length: 3 }, () => ({ code: newCode() }));
    const utf8Rows = [{ code: newCode(), from: '2026-01-01', until: '2026-12-31' }, { code: newCode(), artist: '星野アイ', group: 'Ｂ小町' }];
    // 'シリアル.csv' in Shift_JIS is 12 bytes, written as Japanese Windows does: no UTF-8 flag.
    const sjisName = encodeSjis('シリアル.csv');
    let zip = await zipOf([
      { name: 'x'.repeat(sjisName.length), data: sjisCsv(sjisRows) },
      { name: 'フォルダ/追加分.csv', data: utf8Csv(utf8Rows) },
      { name: 'readme.txt', data: Buffer.from('not a csv') },
    ]);
    zip = renameEntry(zip, 'x'.repeat(sjisName.length), sjisName, false);
    const { summary, all } = await runImport(store, product, writeZip(zip));
    assert.deepEqual(all, []);
    assert.equal(summary.state, 'imported');
    assert.deepEqual(summary.files.map((f) => [f.name, f.encoding, f.rows]), [['シリアル.csv', 'cp932', 3], ['フォルダ/追加分.csv', 'utf8', 2]]);
    assert.deepEqual(summary.skipped, [{ name: 'readme.txt', reason: 'not a .csv file' }]);
    assert.equal(summary.rowsRead, 5);
    assert.equal(summary.imported, 5);
    assert.equal(summary.rowsRejected, 0);
    const codes = await codesOf(store, product);
    assert.deepEqual(codes.map((c) => c.code).sort(), [...sjisRows, ...utf8Rows].map((r) => r.code).sort());
    assert.ok(codes.every((c) => c.state === 'available' && c.order_id === null), 'codes.every((c) => c.state === \'available\' && c.order_id === null)');
    const dated = codes.find((c) => c.code === utf8Rows[0]!.code)!;
    assert.deepEqual([dated.valid_from, dated.valid_until], ['2026-01-01', '2026-12-31'], 'dates stored as JST calendar dates');
    const batch = await store.rt.ctx.db.selectFrom('serial_code_batches').selectAll().where('id', '=', summary.batchId).executeTakeFirstOrThrow();
    assert.deepEqual([batch.state, batch.rows_read, batch.rows_imported, batch.imported_by, batch.checksum.length], ['imported', 5, 5, 'test', 64]);
  });

  it('rejects each rule with the file, line, column and reason, imports nothing, and names codes already imported', async () => {
    const product = await serialProduct(store);
    const existing = newCode();
    const earlierZip = await importRows(store, product, [{ code: existing }]);
    const good = newCode();
    const twice = newCode();
    const rows: Row[] = [
      { code: good }, // line 2
      { code: newCode(), artist: '有馬かな' }, // 3: rule 1
      { code: newCode(), group: 'ファン' }, // 4: rule 2
      { code: newCode(), type: 'お渡し会参加券' }, // 5: rule 3
      { code: twice }, // 6
      { code: twice }, // 7: rule 4, within the file
      { code: existing }, // 8: rule 4, against the database
      { code: newCode(), from: '2026/02/30' }, // 9: rule 5
      { code: newCode(), until: 'いつまでも' }, // 10: rule 6
      { code: newCode(), from: '2026-05-01', until: '2026-04-30' }, // 11: rule 6
      { code: '' }, // 12: no code
    ];
    const { summary, all } = await runImport(store, product, writeZip(await zipOf([{ name: '第1弾.csv', data: sjisCsv(rows) }])));
    assert.equal(summary.state, 'rejected');
    assert.equal(summary.imported, 0);
    assert.equal(summary.rowsRead, 11);
    assert.equal(summary.rowsRejected, 9, 'every row but lines 2 and 6');
    const got = all.map((r) => [r.file, r.line, r.column, r.reason]).sort((a, b) => (a[1] as number) - (b[1] as number));
    assert.deepEqual(got, [
      ['第1弾.csv', 3, 'アーティスト名', 'rule 1: artist name "有馬かな" is not the product\'s "星野アイ"'],
      ['第1弾.csv', 4, 'グループ名', 'rule 2: group name "ファン" is not the product\'s "B小町"'],
      ['第1弾.csv', 5, 'コード種別', 'rule 3: code type "お渡し会参加券" is not the product\'s "特典会参加券"'],
      ['第1弾.csv', 7, 'シリアルコード', `rule 4: code "${twice}" appears twice in the upload (first on line 6)`],
      ['第1弾.csv', 8, 'シリアルコード', `rule 4: code "${existing}" is already in the database (imported from ${earlierZip} on ${jstDate(new Date())})`],
      ['第1弾.csv', 9, '有効期間開始', 'rule 5: valid-from "2026/02/30" is not a date (YYYY-MM-DD, YYYY/MM/DD or YYYYMMDD)'],
      ['第1弾.csv', 10, '有効期間終了', 'rule 6: valid-until "いつまでも" is not a date (YYYY-MM-DD, YYYY/MM/DD or YYYYMMDD)'],
      ['第1弾.csv', 11, '有効期間終了', 'rule 6: valid-until 2026-04-30 is before valid-from 2026-05-01'],
      ['第1弾.csv', 12, 'シリアルコード', 'code is empty'],
    ]);
    assert.deepEqual((await codesOf(store, product)).map((c) => c.code), [existing], 'not even the good row was imported');
    const batch = await store.rt.ctx.db.selectFrom('serial_code_batches').selectAll().where('id', '=', summary.batchId).executeTakeFirstOrThrow();
    assert.deepEqual([batch.state, batch.rows_imported, batch.rows_rejected], ['rejected', 0, 9]);
  });

  it('is all or nothing: one bad row in 2,500 imports nothing; the corrected file then imports them all', async () => {
    const product = await serialProduct(store);
    const rows: Row[] = Array.from({ length: 2500 }, () => ({ code: newCode() }));
    rows[1999] = { ...rows[1999]!, until: '2019-12-31' };
    const { summary, all } = await runImport(store, product, writeZip(await zipOf([{ name: 'a.csv', data: sjisCsv(rows) }])));
    assert.equal(summary.state, 'rejected');
    assert.deepEqual(all.map((r) => [r.line, r.column]), [[2001, '有効期間終了']]);
    assert.equal((await codesOf(store, product)).length, 0);
    rows[1999] = { ...rows[1999]!, until: '2099-12-31' };
    const again = await runImport(store, product, writeZip(await zipOf([{ name: 'a.csv', data: sjisCsv(rows) }])));
    assert.equal(again.summary.state, 'imported', 'the rejected run left nothing that counts as a duplicate');
    assert.equal((await codesOf(store, product)).length, 2500);
  });

  it('reads a CSV without a BOM as Shift_JIS unless told it is UTF-8', async () => {
    const product = await serialProduct(store);
    const path = writeZip(await zipOf([{ name: 'utf8.csv', data: utf8Csv([{ code: newCode() }], false) }]));
    const wrong = await runImport(store, product, path);
    assert.equal(wrong.summary.state, 'rejected');
    assert.ok(wrong.all.length > 0, 'UTF-8 read as Shift_JIS does not match the product');
    const right = await runImport(store, product, path, { encoding: 'utf8' });
    assert.equal(right.summary.state, 'imported');
  });

  it('refuses a file whose header lacks a column, naming the column', async () => {
    const product = await serialProduct(store);
    const path = writeZip(await zipOf([{ name: 'short.csv', data: sjisCsv([{ code: newCode() }], 'シリアルコード,アーティスト名,グループ名,コード種別,有効期間開始') }]));
    const { summary, all } = await runImport(store, product, path);
    assert.equal(summary.state, 'rejected');
    assert.deepEqual(all.map((r) => [r.file, r.line, r.column]), [['short.csv', 1, '有効期間終了']]);
    assert.match(all[0]!.reason, /^the header has no 有効期間終了 \(validUntil\) column; expected one of: 有効期間終了, .*valid_until$/);
  });

  describe('hostile archives, refused before anything is imported', () => {
    const refused = async (zip: Buffer, code: string, message: RegExp, limits?: ZipLimits) => {
      const product = await serialProduct(store);
      await assert.rejects(runImport(store, product, writeZip(zip), { limits }), (error: Error & { code?: string }) => {
        assert.equal(error.code, code, error.message);
        assert.match(error.message, message);
        return true;
      });
      assert.equal((await codesOf(store, product)).length, 0);
      const batches = await store.rt.ctx.db.selectFrom('serial_code_batches').innerJoin('products', 'products.id', 'serial_code_batches.product_id').select('serial_code_batches.state').where('products.code', '=', product).execute();
      assert.ok(batches.every((b) => b.state === 'rejected'), 'no batch left importing');
    };
    const good = () => sjisCsv([{ code: newCode() }]);

    it('a path that climbs out with ..', async () => {
      const zip = renameEntry(await zipOf([{ name: 'ok.csv', data: good() }, { name: 'xx/evil.csv', data: good() }]), 'xx/evil.csv', Buffer.from('../evil.csv'), true);
      await refused(zip, 'zip_path_traversal', /"\.\.\/evil\.csv" climbs out/);
    });

    it('a Windows path that climbs out with ..\\', async () => {
      const zip = renameEntry(await zipOf([{ name: 'a/b/x.csv', data: good() }]), 'a/b/x.csv', Buffer.from('a\\..\\..\\x'), true);
      await refused(zip, 'zip_path_traversal', /climbs out/);
    });

    it('an absolute path', async () => {
      const zip = renameEntry(await zipOf([{ name: 'xetc/codes.csv', data: good() }]), 'xetc/codes.csv', Buffer.from('/etc/codes.csv'), true);
      await refused(zip, 'zip_absolute_path', /"\/etc\/codes\.csv" has an absolute path/);
    });

    it('a drive-letter path', async () => {
      const zip = renameEntry(await zipOf([{ name: 'xxcodes.csv', data: good() }]), 'xxcodes.csv', Buffer.from('C:codes.csv'), true);
      await refused(zip, 'zip_absolute_path', /absolute path/);
    });

    it('a symbolic link', async () => {
      const zip = await zipOf([{ name: 'codes.csv', data: Buffer.from('/etc/passwd'), mode: 0o120777, compress: false }]);
      await refused(zip, 'zip_symlink', /"codes\.csv" is a symbolic link/);
    });

    it('a ZIP bomb: an entry that inflates more than 100×', async () => {
      const zip = await zipOf([{ name: 'bomb.csv', data: Buffer.alloc(8 * 1024 * 1024, 0x41) }]);
      await refused(zip, 'zip_bomb', /inflates \d+× .* over the compression ratio limit of 100× \(maxRatio\)/);
    });

    it('an entry whose header understates what it inflates to', async () => {
      const data = Buffer.alloc(64 * 1024, 0x42);
      const zip = await zipOf([{ name: 'liar.csv', data }]);
      // Both headers claim 1,000 bytes; the deflate stream holds 64 KiB.
      const out = Buffer.from(zip);
      for (let at = out.indexOf(Buffer.from([0x50, 0x4b])); at >= 0; at = out.indexOf(Buffer.from([0x50, 0x4b]), at + 1)) {
        const sig = out.readUInt32LE(at);
        if (sig === 0x04034b50) out.writeUInt32LE(1000, at + 22);
        if (sig === 0x02014b50) out.writeUInt32LE(1000, at + 24);
      }
      assert.ok(deflateRawSync(data).length < 1000, 'small enough not to trip the ratio rule first');
      await refused(out, 'zip_unreadable', /liar\.csv/);
    });

    it('more entries than the limit (1,000)', async () => {
      const entries = Array.from({ length: DEFAULT_ZIP_LIMITS.maxEntries + 1 }, (_, i) => ({ name: `part-${i}.csv`, data: Buffer.from('x') }));
      await refused(await zipOf(entries), 'zip_too_many_entries', /1001 entries, over the limit of 1000 \(maxEntries\)/);
    });

    it('an entry or an archive over the size limits', async () => {
      const limits = { ...DEFAULT_ZIP_LIMITS, maxEntryBytes: 1000, maxTotalBytes: 1500 };
      await refused(await zipOf([{ name: 'big.csv', data: randomBytes(1001) }]), 'zip_entry_too_large', /over the limit of .* per file \(maxEntryBytes\)/, limits);
      await refused(await zipOf([{ name: 'a.csv', data: randomBytes(800) }, { name: 'b.csv', data: randomBytes(800) }]), 'zip_too_large', /maxTotalBytes/, limits);
    });

    it('something that is not a ZIP at all', async () => {
      await refused(Buffer.from('PK but not really a zip file'), 'zip_unreadable', /not a readable ZIP file/);
    });
  });

  it('kessai import-serials: a summary on stdout, no progress bar without a terminal, every rejection in the CSV report', async () => {
    const product = await serialProduct(store);
    const env = {
      PATH: process.env.PATH ?? '',
      DATABASE_URL: store.database.url,
      KESSAI_DATA_DIR: store.dataDir,
      KESSAI_MASTER_KEY: '00'.repeat(32),
      LOG_LEVEL: 'warn',
    };
    const kessai = (args: string[]) => {
      const r = spawnSync(process.execPath, ['--import', 'tsx', join(ROOT, 'src/cli/main.ts'), ...args], { env, encoding: 'utf8', timeout: 120_000 });
      return { code: r.status, out: r.stdout, err: r.stderr };
    };
    const bad = writeZip(await zipOf([{ name: 'codes.csv', data: sjisCsv([{ code: newCode() }, { code: newCode(), artist: '=1+2' }, { code: newCode(), from: 'soon' }]) }]));
    const reportPath = join(tmp, `report-${product}.csv`);
    const r1 = kessai(['import-serials', bad, '--shop', 'default', '--product', product, '--report', reportPath]);
    assert.equal(r1.code, 2, r1.err);
    assert.equal(r1.err, '', 'no progress bar when stderr is not a terminal');
    assert.match(r1.out, /rejected, nothing imported/);
    assert.match(r1.out, /codes\.csv {2}Shift_JIS {2}3 rows/);
    assert.match(r1.out, /rows read 3, imported 0, rejected 2/);
    assert.match(r1.out, /codes\.csv:4 \[有効期間開始\] rule 5: valid-from "soon" is not a date/);
    const report = readFileSync(reportPath, 'utf8');
    assert.ok(report.startsWith('\ufefffile,line,column,reason\r\n'), 'UTF-8 with a BOM, so Excel reads it as UTF-8');
    const lines = report.slice(1).trim().split('\r\n');
    assert.equal(lines.length, 3);
    assert.equal(lines[1], `codes.csv,3,アーティスト名,"rule 1: artist name ""=1+2"" is not the product's ""星野アイ"""`);
    assert.match(lines[2]!, /^codes\.csv,4,有効期間開始,"rule 5: valid-from ""soon"" is not a date/);

    const good = writeZip(await zipOf([{ name: 'codes.csv', data: sjisCsv([{ code: newCode() }, { code: newCode() }]) }]));
    const r2 = kessai(['import-serials', good, '--shop', 'default', '--product', product]);
    assert.equal(r2.code, 0, r2.err);
    assert.match(r2.out, /: imported\n/);
    assert.match(r2.out, /rows read 2, imported 2, rejected 0/);

    const bomb = writeZip(await zipOf([{ name: 'bomb.csv', data: Buffer.alloc(4 * 1024 * 1024) }]));
    const r3 = kessai(['import-serials', bomb, '--shop', 'default', '--product', product, '--report', reportPath]);
    assert.equal(r3.code, 2);
    assert.match(r3.out, /refused, nothing imported\n {2}entry "bomb\.csv" inflates/);
    assert.match(readFileSync(reportPath, 'utf8'), /bomb\.csv.*maxRatio/);

    const noSpec = kessai(['import-serials', good, '--shop', 'default', '--product', 'demo-cd']);
    assert.equal(noSpec.code, 1);
    assert.match(noSpec.err, /demo-cd" is a physical product/);
    assert.equal((await codesOf(store, product)).length, 2);
  });
});

forEachEngine('serial-code allocation', (engine) => {
  let store: TestStore;
  before(async () => {
    store = await startStore(engine);
    store.startWorker();
  });
  after(async () => {
    await store?.close();
  });

  it('a paid order takes one valid code per unit, shown in the API, on the order page and in the paid mail', async () => {
    const product = await serialProduct(store);
    const today = jstDate(new Date());
    const [y, m, d] = today.split('-').map(Number) as [number, number, number];
    const day = (offset: number) => new Date(Date.UTC(y, m - 1, d + offset)).toISOString().slice(0, 10);
    const expired = { code: `OLD-${newCode()}`, from: '2020-01-01', until: day(-1) };
    const future = { code: `NEW-${newCode()}`, from: day(1), until: '2099-12-31' };
    const lastDay = { code: `TODAY-${newCode()}`, from: '2020-01-01', until: today };
    const later = { code: `LATER-${newCode()}`, from: today, until: '2099-12-31' };
    await importRows(store, product, [expired, future, later, lastDay]);

    const order = await placeOrder(store, product, 2);
    await payByCard(store, order);
    const paid = await view(store, order.token);
    assert.equal(paid.state, 'paid');
    assert.deepEqual(paid.serialCodes.map((c) => c.code), [lastDay.code, later.code].sort(), 'only codes valid today (JST), soonest to expire first');
    assert.deepEqual(paid.serialCodes.find((c) => c.code === lastDay.code), { productName: `特典会参加券 ${product}`, code: lastDay.code, validFrom: '2020-01-01', validUntil: today });
    const rows = await codesOf(store, product);
    assert.deepEqual(rows.filter((r) => r.state === 'assigned').map((r) => [r.code, r.order_id]).sort(), [[lastDay.code, order.orderId], [later.code, order.orderId]].sort());

    const page = await (await fetch(`${store.url}/orders/${order.token}`)).text();
    for (const c of paid.serialCodes) assert.ok(page.includes(`<code>${c.code}</code>`), `the code is on the order page:\n${page}`);
    await eventually(async () => {
      const mail = readMails(store.dataDir).find((m) => m.name.startsWith(`order_paid.${order.number}.`));
      assert.ok(mail, 'the paid mail was sent');
      for (const c of paid.serialCodes) assert.ok(mail.text.includes(c.code), 'the code is in the paid mail');
      assert.match(mail.text, /シリアルコード \/ Serial codes \(2\)/);
    }, 10_000);
  });

  it('the demo product is delivered from the demo codes', async () => {
    const order = await placeOrder(store, 'demo-serial', 1);
    await payByCard(store, order);
    const paid = await view(store, order.token);
    assert.equal(paid.state, 'paid');
    assert.match(paid.serialCodes[0]!.code, /^DEMO-[2-9A-HJ-NP-Z]{4}-[2-9A-HJ-NP-Z]{4}-[2-9A-HJ-NP-Z]{4}$/);
  });

  it('out of codes: the order goes on hold with an alert, no paid mail; after an import, releasing it delivers', async () => {
    const product = await serialProduct(store);
    const first = newCode();
    await importRows(store, product, [{ code: first }]);
    const order = await placeOrder(store, product, 2);
    await payByCard(store, order);
    const held = await view(store, order.token);
    assert.equal(held.state, 'on_hold');
    assert.deepEqual(held.serialCodes, [], 'a held order shows no codes yet');
    const row = await store.rt.ctx.db.selectFrom('orders').select(['hold_reason', 'fulfilled']).where('id', '=', order.orderId).executeTakeFirstOrThrow();
    assert.match(row.hold_reason ?? '', /out of serial codes \(特典会参加券 serial-[0-9a-f]+: 1 of 2 without a code\)/);
    assert.equal(row.fulfilled, 0);
    const list = ((await (await admin(store, 'GET', '/alerts')).json()) as { alerts: { kind: string; message: string; ref: string }[] }).alerts;
    assert.ok(list.some((a) => a.kind === 'order_on_hold' && a.ref === order.orderId && /out of serial codes/.test(a.message)), JSON.stringify(list));
    assert.deepEqual((await codesOf(store, product)).map((c) => [c.code, c.order_id]), [[first, order.orderId]], 'the code found stays with the order');

    await new Promise((r) => setTimeout(r, 300));
    assert.equal(readMails(store.dataDir).filter((m) => m.name.startsWith(`order_paid.${order.number}.`)).length, 0, 'no "paid" mail without its codes');

    const second = newCode();
    await importRows(store, product, [{ code: second }]);
    const released = await admin(store, 'POST', `/orders/${order.orderId}/events`, { event: 'release_to_paid' });
    assert.equal(released.status, 200, await released.text());
    const paid = await view(store, order.token);
    assert.equal(paid.state, 'paid');
    assert.deepEqual(paid.serialCodes.map((c) => c.code), [first, second].sort());
    await eventually(async () => {
      const mail = readMails(store.dataDir).find((m) => m.name.startsWith(`order_paid.${order.number}.`));
      assert.ok(mail && mail.text.includes(first) && mail.text.includes(second), 'mail && mail.text.includes(first) && mail.text.includes(second)');
    }, 10_000);
  });

  it('a capture applied to an order short of codes reports the order held, not paid', async () => {
    const product = await serialProduct(store);
    await importRows(store, product, [{ code: newCode() }]);
    const order = await placeOrder(store, product, 2);
    const attempt = await store.rt.ctx.db
      .selectFrom('payment_attempts')
      .innerJoin('orders', 'orders.id', 'payment_attempts.order_id')
      .select(['payment_attempts.merchant_ref', 'orders.total'])
      .where('orders.id', '=', order.orderId)
      .executeTakeFirstOrThrow();
    const result = await applyFact(store.rt.ctx, 'default', 'testpay', { eventKey: `held-${order.number}`, merchantRef: attempt.merchant_ref, fact: { type: 'captured', amount: attempt.total }, payload: {} }, 'operation');
    assert.equal(result.outcome, 'applied');
    assert.equal(result.orderState, 'on_hold');
    assert.equal((await view(store, order.token)).state, 'on_hold');
  });

  it('a held order cancelled before delivery gives its codes back', async () => {
    const product = await serialProduct(store);
    const only = newCode();
    await importRows(store, product, [{ code: only }]);
    const order = await placeOrder(store, product, 3);
    await payByCard(store, order);
    assert.equal((await view(store, order.token)).state, 'on_hold');
    const res = await admin(store, 'POST', `/orders/${order.orderId}/events`, { event: 'release_to_cancelled' });
    assert.equal(res.status, 200, await res.text());
    assert.deepEqual((await codesOf(store, product)).map((c) => [c.code, c.state, c.order_id]), [[only, 'available', null]]);
  });

  it('parallel payments never share a code; those left without enough codes are held', async () => {
    const product = await serialProduct(store, 200);
    const pool = Array.from({ length: 40 }, () => ({ code: newCode() }));
    await importRows(store, product, pool);
    const orders = await Promise.all(Array.from({ length: 16 }, () => placeOrder(store, product, 3)));
    await Promise.all(orders.map((o) => payByCard(store, o)));
    await notificationsApplied(store, 20_000);

    const rows = await codesOf(store, product);
    const assigned = rows.filter((r) => r.state === 'assigned');
    const byOrder = new Map<string, number>();
    for (const r of assigned) byOrder.set(r.order_id!, (byOrder.get(r.order_id!) ?? 0) + 1);
    let paidCount = 0;
    const seen = new Set<string>();
    for (const o of orders) {
      const v = await view(store, o.token);
      const mine = byOrder.get(o.orderId) ?? 0;
      if (v.state === 'paid') {
        paidCount++;
        assert.equal(mine, 3, 'a paid order has one code per unit');
        for (const c of v.serialCodes) {
          assert.ok(!seen.has(c.code), `code ${c.code} given twice`);
          seen.add(c.code);
        }
      } else {
        assert.equal(v.state, 'on_hold');
        assert.ok(mine < 3, 'a held order lacks codes');
      }
    }
    assert.equal(new Set(assigned.map((r) => r.code)).size, assigned.length);
    assert.equal(assigned.length, 40, 'demand (48) exceeds the pool (40): every code went to some order');
    assert.ok(paidCount >= 8 && paidCount <= 13, `paid ${paidCount}`);
    assert.equal(rows.filter((r) => r.state === 'available').length, 0);
  });
});
