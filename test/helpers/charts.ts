/**
 * Orders with a history at chosen instants, for the chart reports: the sales query reads orders,
 * their lines and their state changes, and a reporting window is about *when* an order shipped, which
 * a test cannot wait for. Rows are written as the store writes them (one order, its lines, one state
 * change per transition); one test in charts.test.ts ships an order through the real path as well.
 */
import type { Db } from '../../src/db/index.js';
import { newId } from '../../src/ids.js';

export interface FixtureLine {
  skuId: string;
  jan: string | null;
  quantity: number;
  kind?: string;
}

/** An order of `shop` whose state went through `changes` ([state, ISO instant], in order). */
export async function orderWithHistory(db: Db, shop: string, lines: FixtureLine[], changes: [string, string][]): Promise<string> {
  const orderId = newId('ord');
  const customerId = newId('cus');
  const first = changes[0]?.[1] ?? new Date().toISOString();
  const last = changes.at(-1)?.[0] ?? 'paid';
  await db.transaction().execute(async (tx) => {
    await tx.insertInto('customers').values({ id: customerId, shop_id: shop, email: 'fan@example.jp', name: 'ファン', name_kana: null, phone: null, password_hash: null, email_verified_at: null, created_at: first }).execute();
    await tx
      .insertInto('orders')
      .values({
        id: orderId,
        shop_id: shop,
        number: `T${orderId.slice(4, 16)}`,
        token_hash: orderId,
        customer_id: customerId,
        email: 'fan@example.jp',
        state: last,
        subtotal: 0,
        shipping_fee: 0,
        total: 0,
        tax_10: 0,
        tax_8: 0,
        current_attempt_id: null,
        fulfilled: 1,
        stock_committed: 1,
        stock_released: 0,
        hold_reason: null,
        expires_at: first,
        created_at: first,
        updated_at: first,
      })
      .execute();
    await tx
      .insertInto('order_lines')
      .values(lines.map((l, position) => ({ id: newId('oln'), order_id: orderId, sku_id: l.skuId, position, product_kind: l.kind ?? 'physical', name: 'x', jan_code: l.jan, unit_price: 1000, quantity: l.quantity, tax_rate: 10, amount: 1000 * l.quantity })))
      .execute();
    let from: string | null = null;
    for (const [state, at] of [['pending_payment', first] as [string, string], ['paid', first] as [string, string], ...changes]) {
      await tx.insertInto('state_changes').values({ id: newId('chg'), entity: 'order', entity_id: orderId, from_state: from, to_state: state, cause: 'fixture', at }).execute();
      from = state;
    }
  });
  return orderId;
}

/** JST wall-clock time → the ISO UTC instant the store records. */
export function jst(local: string): string {
  return new Date(`${local}+09:00`).toISOString();
}
