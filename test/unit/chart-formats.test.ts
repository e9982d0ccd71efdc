import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { decodeSjis } from '../../src/gateways/common/sjis.js';
import { billboardFormat, DEFAULT_BILLBOARD_LAYOUT, layoutToText, parseBillboardLayout } from '../../src/integrations/charts/billboard.js';
import { ChartFormatError, fileNameOf, writeChartFile, type ChartFormat, type ChartSale } from '../../src/integrations/charts/file.js';
import { DEFAULT_ORICON_COLUMNS, oriconFormat, parseOriconColumns } from '../../src/integrations/charts/oricon.js';

const sale = (jan: string, quantity: number, title = 'はじまりの歌（通常盤）'): ChartSale => ({ date: '2026-11-23', jan, title, quantity });

async function* from(sales: ChartSale[]): AsyncGenerator<ChartSale> {
  yield* sales;
}

async function render(format: ChartFormat, sales: ChartSale[]) {
  const dir = mkdtempSync(join(tmpdir(), 'kessai-chart-unit-'));
  try {
    const info = await writeChartFile(from(sales), format, join(dir, 'out'));
    const bytes = readFileSync(info.path);
    return { info, bytes };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const billboard = (layout = DEFAULT_BILLBOARD_LAYOUT) => billboardFormat({ chainCode: '9650', storeCode: '557001', layout });

describe('Billboard Japan file', () => {
  it('writes 36-byte ASCII records ending in CRLF: chain, store, date, JAN, quantity', async () => {
    const { bytes, info } = await render(billboard(), [sale('4988001234562', 12)]);
    assert.equal(bytes.toString('latin1'), '9650557001202611234988001234562' + '00012' + '\r\n');
    assert.equal(info.rows, 1);
    assert.equal(info.bytes, 38);
    assert.equal(info.checksum, createHash('sha256').update(bytes).digest('hex'));
  });

  it('splits a quantity over 99,999 into records of 99,999 and the rest', async () => {
    const { bytes, info } = await render(billboard(), [sale('4988001234562', 250_000), sale('4988001234579', 99_999), sale('4988001234586', 100_000)]);
    const records = bytes.toString('latin1').split('\r\n');
    assert.equal(records.pop(), '', 'the file ends with CRLF');
    assert.deepEqual(
      records.map((r) => [r.slice(18, 31), r.slice(31)]),
      [
        ['4988001234562', '99999'],
        ['4988001234562', '99999'],
        ['4988001234562', '50002'],
        ['4988001234579', '99999'],
        ['4988001234586', '99999'],
        ['4988001234586', '00001'],
      ],
    );
    assert.equal(info.rows, 6);
    for (const r of records) assert.equal(r.length, 36);
  });

  it('writes a JAN-8 in its 13-digit form and refuses a value wider than its field', async () => {
    const { bytes } = await render(billboard(), [sale('49123456', 1)]);
    assert.equal(bytes.toString('latin1').slice(18, 31), '0000049123456');
    const wide = billboardFormat({ chainCode: '9650', storeCode: '5570019', layout: DEFAULT_BILLBOARD_LAYOUT });
    assert.throws(() => wide.records(sale('4988001234562', 1)), (e: Error) => e instanceof ChartFormatError && /store "5570019" is 7 characters, wider than its field \(6\)/.test(e.message));
  });

  it('takes its layout from one table: order, widths, fillers; the split follows the quantity width', async () => {
    assert.equal(layoutToText(DEFAULT_BILLBOARD_LAYOUT), 'chain:4,store:6,date:8,jan:13,quantity:5');
    const layout = parseBillboardLayout('date:8,filler:2,jan:13,quantity:3,store:8:space');
    const { bytes } = await render(billboard(layout), [sale('4988001234562', 1500)]);
    assert.deepEqual(bytes.toString('latin1').split('\r\n'), ['20261123  4988001234562999557001  ', '20261123  4988001234562501557001  ', '']);
    for (const [text, reason] of [
      ['chain:4,jan:13', /"quantity" is missing/],
      ['chain:4,jan:13,quantity:5,jan:13', /"jan" appears 2 times/],
      ['chain:x,jan:13,quantity:5', /needs a width/],
      ['colour:4,jan:13,quantity:5', /unknown field "colour"/],
      ['jan:13,quantity:5:space', /quantity must be zero-padded/],
    ] as const) {
      assert.throws(() => parseBillboardLayout(text), reason);
    }
  });

  it('refuses a record that is not printable ASCII', () => {
    assert.throws(() => billboard().encode('96505570012026112349880012345６2', sale('4988001234562', 1)), /not printable ASCII/);
  });
});

describe('Oricon file', () => {
  it('default layout: date, JAN, title, quantity separated by tabs, LF, UTF-8, no header', async () => {
    assert.deepEqual(DEFAULT_ORICON_COLUMNS, ['date', 'jan', 'title', 'quantity']);
    const format = oriconFormat({ columns: DEFAULT_ORICON_COLUMNS, encoding: 'utf8' });
    const { bytes, info } = await render(format, [sale('4988001234562', 12), sale('4988001234579', 3, 'タイトル\tと\n改行')]);
    assert.equal(bytes.toString('utf8'), '20261123\t4988001234562\tはじまりの歌（通常盤）\t12\n20261123\t4988001234579\tタイトル と 改行\t3\n');
    assert.equal(info.rows, 2);
  });

  it('Shift_JIS (CP932) on request: bytes checked, Mac wave dash written as its CP932 twin', async () => {
    const format = oriconFormat({ columns: ['jan', 'title', 'quantity'], encoding: 'sjis' });
    const { bytes } = await render(format, [sale('4988001234562', 2, 'あ〜い')]);
    assert.equal(bytes.toString('hex'), Buffer.concat([Buffer.from('4988001234562\t'), Buffer.from('82a0816082a2', 'hex'), Buffer.from('\t2\n')]).toString('hex'));
    assert.equal(decodeSjis(bytes), '4988001234562\tあ～い\t2\n');
  });

  it('refuses a title Shift_JIS cannot hold instead of writing "?"', async () => {
    const format = oriconFormat({ columns: DEFAULT_ORICON_COLUMNS, encoding: 'sjis' });
    await assert.rejects(render(format, [sale('4988001234562', 1, '𠮷野家の歌')]), (e: Error) => e instanceof ChartFormatError && /record of JAN 4988001234562 \(title "𠮷野家の歌"\) has "𠮷"/.test(e.message) && /oricon.encoding=utf8/.test(e.message));
  });

  it('columns are configurable, and a bad list is named', async () => {
    const format = oriconFormat({ columns: parseOriconColumns('store, jan,quantity'), encoding: 'utf8', storeCode: '1234' });
    assert.equal((await render(format, [sale('4988001234562', 5)])).bytes.toString(), '1234\t4988001234562\t5\n');
    assert.throws(() => parseOriconColumns('date,price'), /unknown column\(s\) "price"/);
    assert.throws(() => parseOriconColumns('jan,jan'), /"jan" appears twice/);
    assert.throws(() => oriconFormat({ columns: ['store', 'jan'], encoding: 'utf8' }), /oricon.storeCode is not set/);
  });
});

describe('file names and empty days', () => {
  it('fills {date} and the target codes; refuses unsafe names', () => {
    assert.equal(fileNameOf('{store}_{date}.txt', { date: '20261123', store: '557001' }), '557001_20261123.txt');
    assert.throws(() => fileNameOf('{shop}.txt', { date: '20261123' }), /unknown placeholder \{shop\}/);
    assert.throws(() => fileNameOf('../{date}', { date: '20261123' }), /must be 1–200 letters/);
  });

  it('a day without sales is an empty file, still sent (the agency sees the store reported)', async () => {
    const { bytes, info } = await render(billboard(), []);
    assert.equal(bytes.length, 0);
    assert.equal(info.rows, 0);
    assert.equal(info.checksum, createHash('sha256').digest('hex'));
  });
});
