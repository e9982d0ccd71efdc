import { sql } from 'kysely';
import { z } from 'zod';
import type { Context } from '../context.js';
import type { Tx } from '../db/index.js';
import type { Order, PaymentAttempt } from '../db/schema.js';
import { KessaiError, invalid, parseInput, type FieldProblem } from '../errors.js';
import { newId, nowIso } from '../ids.js';
import { findOrder, lockOrder, orderLinesInput, orderTotals, recordChange, skuLockOrder } from './orders.js';

/*
 * An operator makes a paid order smaller before it ships: fewer of a line, or a line removed (a
 * customer changed their mind, an item cannot be supplied). The body names the quantities the
 * order should have, not changes to make, so a repeated request changes nothing the second time.
 * More of a line is refused: it needs a new payment, so it is a new order. Tickets and serial codes
 * were delivered with the payment and are refunded, not edited.
 *
 * Totals and tax are computed as at checkout, the stock given back, the edit written to the order's
 * history; the payment is adjusted by the caller's `adjust`, inside the same transaction, through
 * the outbox (payments/edits.ts: atone's 取引更新, otherwise a refund of the difference).
 */

export const orderEditInput = z.strictObject({ lines: orderLinesInput(0) });
export type OrderEditInput = z.input<typeof orderEditInput>;

export interface OrderEditAdjustment {
  order: Order;
  attempt: PaymentAttempt;
  /** The yen the order no longer costs. */
  difference: number;
  /** Unique per edit: the key of the payment adjustment's job. */
  editId: string;
}

export interface OrderEditResult {
  order: Order;
  /** False when the order already had these quantities (a repeated request). */
  changed: boolean;
  difference: number;
}

export async function editOrder(
  ctx: Context,
  orderRef: string,
  input: unknown,
  who: string,
  adjust: (tx: Tx, a: OrderEditAdjustment) => Promise<void>,
): Promise<OrderEditResult> {
  const wanted = parseInput(orderEditInput, input);
  const found = await findOrder(ctx, orderRef);
  return ctx.db.transaction().execute(async (tx) => {
    const order = await lockOrder(ctx, tx, found.id);
    if (order.state !== 'paid') {
      throw new KessaiError('order_not_editable', `order ${order.number} is ${order.state}; only a paid order that has not shipped can be edited`, 409);
    }
    const lines = await tx
      .selectFrom('order_lines')
      .innerJoin('skus', 'skus.id', 'order_lines.sku_id')
      .selectAll('order_lines')
      .select('skus.code')
      .where('order_lines.order_id', '=', order.id)
      .orderBy('order_lines.position')
      .execute();

    const problems: FieldProblem[] = [];
    const next = new Map(lines.map((l) => [l.id, l.quantity]));
    wanted.lines.forEach((w, i) => {
      const line = lines.find((l) => l.code === w.sku);
      if (!line) return problems.push({ field: `lines.${i}.sku`, reason: `"${w.sku}" is not a line of order ${order.number}` });
      if (wanted.lines.findIndex((x) => x.sku === w.sku) !== i) return problems.push({ field: `lines.${i}.sku`, reason: `"${w.sku}" is named twice` });
      if (w.quantity > line.quantity) {
        return problems.push({ field: `lines.${i}.quantity`, reason: `${w.quantity} is more than the ${line.quantity} ordered: more items need a new payment, so place a new order for them` });
      }
      if (w.quantity < line.quantity && line.product_kind !== 'physical') {
        return problems.push({ field: `lines.${i}.sku`, reason: `"${w.sku}" (${line.product_kind}) was delivered with the payment; refund it instead` });
      }
      next.set(line.id, w.quantity);
    });
    if (problems.length > 0) throw invalid(problems);
    const changes = lines.filter((l) => next.get(l.id)! < l.quantity);
    if (changes.length === 0) return { order, changed: false, difference: 0 };
    if (lines.every((l) => next.get(l.id) === 0)) {
      throw invalid([{ field: 'lines', reason: 'an edit must leave at least one item; cancel or refund the whole order instead' }]);
    }
    const attempt = order.current_attempt_id
      ? await tx.selectFrom('payment_attempts').selectAll().where('id', '=', order.current_attempt_id).executeTakeFirst()
      : undefined;
    if (attempt?.state !== 'captured') {
      throw new KessaiError('order_not_editable', `the payment of order ${order.number} is ${attempt?.state ?? 'missing'}; only an order whose payment is captured in full can be edited`, 409);
    }

    const at = nowIso();
    // SKUs in the one lock order, as the checkout takes them: an edit and a checkout of the same
    // two SKUs never wait on each other's rows crosswise.
    for (const line of [...changes].sort((a, b) => skuLockOrder(a.sku_id, b.sku_id))) {
      const quantity = next.get(line.id)!;
      const given = line.quantity - quantity;
      if (quantity === 0) await tx.deleteFrom('order_lines').where('id', '=', line.id).execute();
      else await tx.updateTable('order_lines').set({ quantity, amount: line.unit_price * quantity }).where('id', '=', line.id).execute();
      // Paid stock left the shelf (on_hand) at payment; it goes back, and the order holds less of it.
      if (order.stock_committed === 1) {
        const held = await tx.selectFrom('reservations').select(['id', 'quantity']).where('order_id', '=', order.id).where('sku_id', '=', line.sku_id).where('state', '=', 'committed').execute();
        let left = given;
        for (const r of held) {
          const take = Math.min(left, r.quantity);
          if (take === r.quantity) await tx.deleteFrom('reservations').where('id', '=', r.id).execute();
          else await tx.updateTable('reservations').set({ quantity: r.quantity - take, updated_at: at }).where('id', '=', r.id).execute();
          left -= take;
          if (left === 0) break;
        }
        await tx.updateTable('skus').set({ on_hand: sql`on_hand + ${given}` }).where('id', '=', line.sku_id).execute();
      }
    }
    const kept = lines.filter((l) => next.get(l.id)! > 0).map((l) => ({ amount: l.unit_price * next.get(l.id)!, taxRate: l.tax_rate }));
    const totals = orderTotals(kept, order.shipping_fee);
    await tx.updateTable('orders').set({ subtotal: totals.subtotal, total: totals.total, tax_10: totals.tax10, tax_8: totals.tax8, updated_at: at }).where('id', '=', order.id).execute();
    const what = changes.map((l) => `${l.code} ${l.quantity} → ${next.get(l.id)}`).join(', ');
    await recordChange(tx, 'order', order.id, order.state, order.state, `edited by ${who}: ${what}; total ${order.total} → ${totals.total} yen`);
    const edited = { ...order, subtotal: totals.subtotal, total: totals.total, tax_10: totals.tax10, tax_8: totals.tax8, updated_at: at };
    const difference = order.total - totals.total;
    await adjust(tx, { order: edited, attempt, difference, editId: newId('edt') });
    return { order: edited, changed: true, difference };
  });
}
