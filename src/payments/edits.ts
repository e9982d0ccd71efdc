import { z } from 'zod';
import { editOrder as editOrderLines, type OrderEditResult } from '../commerce/order-edit.js';
import { lockOrder, recordChange } from '../commerce/orders.js';
import { forUpdate } from '../db/index.js';
import { KessaiError, StopRetrying } from '../errors.js';
import { nowIso } from '../ids.js';
import { enqueue } from '../jobs/outbox.js';
import type { JobKind } from '../jobs/registry.js';
import { refundableAmount } from './operations.js';
import { attemptContext, type Payments } from './service.js';

/*
 * The money side of an order edit (commerce/order-edit.ts). A gateway that can replace its payment
 * (atone's 取引更新) gets a `payment.update` job: the new transaction it answers with becomes the
 * attempt's, for every later read-back, settle and refund. Any other gateway refunds the difference
 * through the ordinary refund job. Both are queued in the edit's own transaction.
 *
 * If the update fails for good (atone refuses or declines it), the order stays edited — the goods
 * and the stock are what the operator decided — and the attempt is flagged (`updateFailed`) with the
 * dead job's alert: the shop's record and atone's transaction disagree until a person updates it at
 * atone or refunds it, and the sale is not confirmed (settled) meanwhile.
 */

export async function editOrder(p: Payments, orderRef: string, input: unknown, who: string): Promise<OrderEditResult> {
  return editOrderLines(p.ctx, orderRef, input, who, async (tx, { attempt, difference, editId }) => {
    if (p.providers.get(attempt.provider)?.update) {
      await enqueue(tx, { kind: 'payment.update', payload: { attemptId: attempt.id }, dedupeKey: `payment.update:${editId}` });
    } else if (difference > 0) {
      // Refunds already waiting in the outbox count: the edit must not queue more than was captured.
      const { refundable, detail } = await refundableAmount(tx, attempt);
      if (difference > refundable) {
        throw new KessaiError('not_refundable', `the edit lowers the total by ${difference} yen, more than the refundable ${refundable} yen (${detail})`, 409);
      }
      await enqueue(tx, { kind: 'payment.refund', payload: { attemptId: attempt.id, amount: difference }, dedupeKey: `payment.refund:${attempt.id}:${editId}` });
    }
  });
}

/** Brings the gateway's payment in line with the order as edited, and adopts what the gateway answers. */
export async function updatePayment(p: Payments, attemptId: string): Promise<void> {
  const attempt = await p.ctx.db.selectFrom('payment_attempts').selectAll().where('id', '=', attemptId).executeTakeFirstOrThrow();
  const order = await p.ctx.db.selectFrom('orders').selectAll().where('id', '=', attempt.order_id).executeTakeFirstOrThrow();
  const provider = p.providers.get(attempt.provider);
  if (!provider?.update || order.current_attempt_id !== attempt.id || attempt.state !== 'captured') return;
  let updated;
  try {
    updated = await provider.update(await attemptContext(p, attempt, order));
  } catch (error) {
    if (error instanceof StopRetrying) await flag(p, attempt.id, error.message);
    throw error;
  }
  await p.ctx.db.transaction().execute(async (tx) => {
    await lockOrder(p.ctx, tx, order.id);
    const current = await forUpdate(p.ctx.engine, tx.selectFrom('payment_attempts').selectAll().where('id', '=', attempt.id)).executeTakeFirstOrThrow();
    const { updateFailed: _resolved, ...details } = { ...(JSON.parse(current.details) as Record<string, unknown>), ...updated.details };
    const replacing = current.gateway_ref !== null && current.gateway_ref !== updated.gatewayRef;
    if (replacing) details.replacedTransactions = [...((details.replacedTransactions as string[] | undefined) ?? []), current.gateway_ref];
    await tx
      .updateTable('payment_attempts')
      .set({ gateway_ref: updated.gatewayRef, amount: updated.amount, captured_amount: updated.amount, details: JSON.stringify(details), updated_at: nowIso() })
      .where('id', '=', attempt.id)
      .execute();
    if (replacing || current.amount !== updated.amount) {
      const cause = `${attempt.provider} payment updated: ${current.gateway_ref ?? '-'} (${current.amount} yen) → ${updated.gatewayRef} (${updated.amount} yen)`;
      await recordChange(tx, 'payment', attempt.id, current.state, current.state, cause);
    }
  });
}

/** Marks the attempt as disagreeing with its edited order, for the operator (the job's alert says why). */
async function flag(p: Payments, attemptId: string, reason: string): Promise<void> {
  await p.ctx.db.transaction().execute(async (tx) => {
    const current = await forUpdate(p.ctx.engine, tx.selectFrom('payment_attempts').select('details').where('id', '=', attemptId)).executeTakeFirstOrThrow();
    const details = { ...(JSON.parse(current.details) as Record<string, unknown>), updateFailed: reason };
    await tx.updateTable('payment_attempts').set({ details: JSON.stringify(details), updated_at: nowIso() }).where('id', '=', attemptId).execute();
  });
}

export function editJobKinds(p: Payments): JobKind[] {
  return [
    {
      kind: 'payment.update',
      async run(payload) {
        await updatePayment(p, z.object({ attemptId: z.string() }).parse(payload).attemptId);
      },
    },
  ];
}
