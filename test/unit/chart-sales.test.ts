import assert from 'node:assert/strict';
import { tmpdir } from 'node:os';
import { before, describe, it } from 'node:test';
import fc from 'fast-check';
import { createProduct } from '../../src/commerce/catalog.js';
import { chartSales, lastClosedDate, parseReportDate, reportingDateOf, reportingWindow } from '../../src/commerce/chart-sales.js';
import { createShop } from '../../src/commerce/shops.js';
import { loadConfig } from '../../src/config.js';
import type { Context } from '../../src/context.js';
import { createLogger, Metrics } from '../../src/observability.js';
import { forEachEngine, useTestDatabase } from '../helpers/db.js';
import { jst, orderWithHistory } from '../helpers/charts.js';

describe('reporting window', () => {
  it('date D covers [D−1 22:00, D 22:00) JST', () => {
    const { start, end } = reportingWindow('2026-01-15');
    assert.equal(start.toISOString(), '2026-01-14T13:00:00.000Z');
    assert.equal(end.toISOString(), '2026-01-15T13:00:00.000Z');
    assert.equal(start.toISOString(), jst('2026-01-14T22:00:00'));
  });

  it('21:59:59.999 JST is that day; 22:00 JST is the next day; midnight is the same day', () => {
    assert.equal(reportingDateOf(new Date(jst('2026-01-15T21:59:59.999'))), '2026-01-15');
    assert.equal(reportingDateOf(new Date(jst('2026-01-15T22:00:00'))), '2026-01-16');
    assert.equal(reportingDateOf(new Date(jst('2026-01-15T23:59:59'))), '2026-01-16');
    assert.equal(reportingDateOf(new Date(jst('2026-01-16T00:00:00'))), '2026-01-16');
    assert.equal(reportingDateOf(new Date(jst('2026-12-31T22:30:00'))), '2027-01-01', 'across the year');
  });

  it('the 22:00 run reports the day that just closed, even when it runs late', () => {
    assert.equal(lastClosedDate(new Date(jst('2026-01-15T22:00:00'))), '2026-01-15');
    assert.equal(lastClosedDate(new Date(jst('2026-01-15T21:59:00'))), '2026-01-14');
    assert.equal(lastClosedDate(new Date(jst('2026-01-16T03:00:00'))), '2026-01-15', 'a retry after midnight still means the 15th');
  });

  it('every instant lies in exactly the window of its reporting date', () => {
    fc.assert(
      fc.property(fc.date({ min: new Date('2000-01-01T00:00:00Z'), max: new Date('2100-01-01T00:00:00Z'), noInvalidDate: true }), (t) => {
        const date = reportingDateOf(t);
        const { start, end } = reportingWindow(date);
        assert.ok(start <= t && t < end, `${t.toISOString()} → ${date} [${start.toISOString()}, ${end.toISOString()})`);
        const next = reportingWindow(reportingDateOf(end));
        assert.equal(next.start.getTime(), end.getTime(), 'windows follow each other without gap or overlap');
      }),
    );
  });

  it('refuses dates that do not exist', () => {
    assert.equal(parseReportDate('2024-02-29'), '2024-02-29');
    for (const bad of ['2026-02-30', '2026-1-5', '20260115', '2026-13-01', '']) assert.throws(() => parseReportDate(bad), /is not a date as YYYY-MM-DD/);
  });
});

forEachEngine('chart sales: window and returns rules', (engine) => {
  const t = useTestDatabase(engine);
  const JAN_A = '4988001234562';
  const JAN_B = '4988001234579';
  let ctx: Context;
  const sku: Record<string, string> = {};

  const sales = async (date: string, shop = 'chart', pageSize?: number) => {
    const out: Record<string, number> = {};
    for await (const s of chartSales(ctx.db, shop, date, pageSize ? { pageSize } : {})) {
      assert.equal(s.date, date);
      assert.equal(out[s.jan], undefined, `JAN ${s.jan} appears once per day`);
      out[s.jan] = s.quantity;
    }
    return out;
  };

  before(async () => {
    const config = loadConfig({ DATABASE_URL: t.url, KESSAI_DATA_DIR: tmpdir(), KESSAI_MASTER_KEY: '0'.repeat(64), KESSAI_ADMIN_TOKEN: 'test-admin-token-0123456789' });
    ctx = { config, db: t.db, engine, log: createLogger('silent'), metrics: new Metrics() };
    await createShop(ctx, { id: 'chart', name: 'チャート店' });
    await createShop(ctx, { id: 'other', name: '別の店' });
    const product = async (shop: string, code: string, janCode: string | null, chartEligible: boolean, kind: 'physical' | 'serial_code' = 'physical') =>
      (sku[`${shop}/${code}`] = (await createProduct(ctx, shop, { code, name: `${code}の名前`, kind, janCode, chartEligible, price: 1000, stock: 1000 })).skuId);
    await product('chart', 'cd-a', JAN_A, true);
    await product('chart', 'cd-b', JAN_B, true);
    await product('chart', 'goods', '4988001234586', false);
    await product('chart', 'serial', null, false, 'serial_code');
    await product('other', 'cd-a', JAN_A, true);

    const A = (quantity: number) => ({ skuId: sku['chart/cd-a']!, jan: JAN_A, quantity });
    const B = (quantity: number) => ({ skuId: sku['chart/cd-b']!, jan: JAN_B, quantity });
    const order = (lines: Parameters<typeof orderWithHistory>[2], changes: [string, string][], shop = 'chart') => orderWithHistory(ctx.db, shop, lines, changes);

    await order([A(2)], [['shipped', jst('2026-01-15T10:00:00')]]);
    await order([A(1)], [['shipped', jst('2026-01-15T21:59:59.999')]]);
    await order([A(5)], [['shipped', jst('2026-01-15T22:00:00')]]); // → the 16th
    await order([B(3)], [['shipped', jst('2026-01-14T22:30:00')]]); // the evening before → the 15th
    await order([B(4)], [['shipped', jst('2026-01-14T21:59:00')]]); // → the 14th
    // Returned before the cutoff: never reported.
    await order([A(10)], [['shipped', jst('2026-01-15T10:00:00')], ['refunded', jst('2026-01-15T15:00:00')]]);
    // Returned after the cutoff: the day stays as reported (no negative quantities later either).
    await order([A(7)], [['shipped', jst('2026-01-15T10:00:00')], ['refunded', jst('2026-01-15T23:00:00')]]);
    await order([A(6)], [['shipped', jst('2026-01-14T12:00:00')], ['completed', jst('2026-01-14T13:00:00')], ['refunded', jst('2026-01-15T12:00:00')]]);
    // A partial refund is money only: the units stay counted.
    await order([B(2)], [['shipped', jst('2026-01-15T10:00:00')], ['partially_refunded', jst('2026-01-15T11:00:00')]]);
    // Shipped, held, released and shipped again: counted once, on its first shipment (the 13th).
    await order([A(8)], [['shipped', jst('2026-01-13T12:00:00')], ['on_hold', jst('2026-01-13T13:00:00')], ['paid', jst('2026-01-15T10:00:00')], ['shipped', jst('2026-01-15T11:00:00')]]);
    // Held after shipping and then cancelled by the operator before the cutoff.
    await order([A(20)], [['shipped', jst('2026-01-15T09:00:00')], ['on_hold', jst('2026-01-15T09:30:00')], ['cancelled', jst('2026-01-15T12:00:00')]]);
    // Cancelled before shipping: never shipped, never reported.
    await order([A(30)], [['cancelled', jst('2026-01-15T10:00:00')]]);
    // Not chart-eligible lines, and another shop's sale of the same JAN.
    await order([{ skuId: sku['chart/goods']!, jan: '4988001234586', quantity: 9 }], [['shipped', jst('2026-01-15T10:00:00')]]);
    await order([A(1), { skuId: sku['chart/goods']!, jan: '4988001234586', quantity: 1 }, { skuId: sku['chart/serial']!, jan: null, quantity: 1, kind: 'serial_code' }], [['shipped', jst('2026-01-15T10:00:00')]]);
    await order([{ skuId: sku['other/cd-a']!, jan: JAN_A, quantity: 100 }], [['shipped', jst('2026-01-15T10:00:00')]], 'other');
  });

  it('counts chart-eligible units shipped in the window, per JAN', async () => {
    assert.deepEqual(await sales('2026-01-15'), { [JAN_A]: 2 + 1 + 7 + 1, [JAN_B]: 3 + 2 });
  });

  it('22:00–23:59 shipments go to the next date; the previous evening belongs to this one', async () => {
    assert.deepEqual(await sales('2026-01-16'), { [JAN_A]: 5 });
    assert.deepEqual(await sales('2026-01-14'), { [JAN_A]: 6, [JAN_B]: 4 });
    assert.deepEqual(await sales('2026-01-13'), { [JAN_A]: 8 });
  });

  it('each shop reports its own sales', async () => {
    assert.deepEqual(await sales('2026-01-15', 'other'), { [JAN_A]: 100 });
  });

  it('pages through the JAN codes with the same result', async () => {
    assert.deepEqual(await sales('2026-01-15', 'chart', 1), await sales('2026-01-15'));
    assert.deepEqual(Object.keys(await sales('2026-01-15', 'chart', 1)), [JAN_A, JAN_B], 'in JAN order');
  });
});
