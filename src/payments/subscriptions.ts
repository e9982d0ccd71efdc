import { z } from 'zod';
import { attachOrder } from '../accounts/orders.js';
import { jstDate } from '../commerce/serial-codes.js';
import { createRenewal, dueSubscriptions, RECURRING_PROVIDER, renewalOrder } from '../commerce/subscriptions.js';
import { insertRow } from '../db/insert.js';
import type { Order, Subscription } from '../db/schema.js';
import { StopRetrying } from '../errors.js';
import { newId, nowIso } from '../ids.js';
import { enqueue } from '../jobs/outbox.js';
import type { JobKind } from '../jobs/registry.js';
import { claimPayment, memberToken } from './claims.js';
import { attemptContext, type Payments } from './service.js';

/*
 * Renewing subscriptions (commerce/subscriptions.ts). Once a day (SCHEDULES in runtime.ts) every due
 * subscription gets a `subscription.renew` job, one per due date. The job creates the renewal order
 * (reserving its stock like any order), then charges it without the customer: the gateway registers a
 * payment with the member's saved token (atone's 取引登録 with transaction option 1), and the store
 * claims that payment and reads it back — the read-back is the fact that makes the order paid, through
 * the same idempotent command as every other payment.
 *
 * A renewal that cannot be charged — no saved token, atone refuses or declines — leaves the order
 * waiting for payment, like a checkout whose customer walked away, and raises a
 * `subscription_unpaid` alert; the reservation then expires as usual. A registration whose outcome is
 * unknown (no answer) is never sent again: atone's 決済Webhook brings the payment if it was made, and
 * the job is dead-lettered with an alert meanwhile.
 */

export async function renewSubscription(p: Payments, subscriptionId: string, dueDate: string): Promise<void> {
  const { ctx } = p;
  const orderId = (await renewalOrder(ctx, subscriptionId, dueDate)) ?? (await createRenewal(ctx, subscriptionId, dueDate))?.order.id ?? (await renewalOrder(ctx, subscriptionId, dueDate));
  if (!orderId) return; // cancelled, or not due on that date
  const sub = await ctx.db.selectFrom('subscriptions').selectAll().where('id', '=', subscriptionId).executeTakeFirstOrThrow();
  await attachOrder(ctx, orderId, sub.customer_id);
  await chargeRenewal(p, sub, orderId);
}

async function chargeRenewal(p: Payments, sub: Subscription, orderId: string): Promise<void> {
  const { ctx } = p;
  const order = await ctx.db.selectFrom('orders').selectAll().where('id', '=', orderId).executeTakeFirstOrThrow();
  if (order.state !== 'pending_payment' || !order.current_attempt_id) return;
  const attempt = await ctx.db.selectFrom('payment_attempts').selectAll().where('id', '=', order.current_attempt_id).executeTakeFirstOrThrow();
  if (attempt.state !== 'pending' || attempt.gateway_ref !== null) return;
  const details = JSON.parse(attempt.details) as Record<string, unknown>;
  if (details.registeredAt) {
    throw new StopRetrying(`renewal ${order.number} was sent to ${attempt.provider} at ${String(details.registeredAt)} with no answer kept; its payment notification brings the outcome, or look it up at ${attempt.provider}`);
  }
  const provider = p.providers.get(attempt.provider);
  if (!provider?.register) return unpaid(p, sub, order, `${attempt.provider} cannot charge a renewal without the customer`);
  const token = attempt.provider === RECURRING_PROVIDER ? await memberToken(p, sub.customer_id, RECURRING_PROVIDER) : undefined;
  if (!token) return unpaid(p, sub, order, `the member has no saved ${attempt.provider} token (they must pay once more with ${attempt.provider} while logged in)`);

  // Kept before the call: a registration is never sent twice (it has no idempotency key).
  const marked = { ...details, registeredAt: nowIso() };
  await ctx.db.updateTable('payment_attempts').set({ details: JSON.stringify(marked), updated_at: nowIso() }).where('id', '=', attempt.id).execute();
  let gatewayRef: string;
  try {
    gatewayRef = await provider.register(await attemptContext(p, { ...attempt, details: JSON.stringify(marked) }, order), token);
  } catch (error) {
    if (error instanceof StopRetrying) return unpaid(p, sub, order, error.message);
    throw new StopRetrying(`renewal ${order.number}: no certain answer from ${attempt.provider} (${error instanceof Error ? error.message : String(error)}); it may have been charged, its payment notification will tell`);
  }
  const results = await claimPayment(p, attempt.id, gatewayRef, 'operation');
  const paid = results.some((r) => r.orderState === 'paid');
  if (!paid) {
    const why = results.map((r) => r.note).join('; ') || 'no payment fact';
    await unpaid(p, sub, order, `${attempt.provider} did not authorize ${gatewayRef}: ${why}`);
  }
}

/** The renewal stays waiting for payment; an operator and the member hear of it once. */
async function unpaid(p: Payments, sub: Subscription, order: Order, reason: string): Promise<void> {
  const told = await p.ctx.db.transaction().execute(async (tx) => {
    const open = await tx.selectFrom('alerts').select('id').where('kind', '=', 'subscription_unpaid').where('ref', '=', order.id).where('resolved_at', 'is', null).executeTakeFirst();
    if (open) return false;
    await insertRow(tx, 'alerts', {
      id: newId('alr'),
      kind: 'subscription_unpaid',
      message: `subscription ${sub.id}: renewal order ${order.number} is not paid: ${reason}; it waits for payment until ${order.expires_at}, then expires`,
      ref: order.id,
      created_at: nowIso(),
      resolved_at: null,
    });
    await enqueue(tx, { kind: 'mail.send', payload: { template: 'renewal_unpaid', orderId: order.id }, dedupeKey: `mail:renewal_unpaid:${order.id}` });
    return true;
  });
  if (told) p.ctx.log.warn({ subscription: sub.id, order: order.number, reason }, 'subscription renewal not paid');
}

export function subscriptionJobKinds(p: Payments): JobKind[] {
  return [
    {
      // The daily tick: one renewal job per due subscription and due date.
      kind: 'subscriptions.renew',
      async run() {
        for (const s of await dueSubscriptions(p.ctx, jstDate(new Date()))) {
          await enqueue(p.ctx.db, { kind: 'subscription.renew', payload: { subscriptionId: s.id, dueDate: s.next_date }, dedupeKey: `subscription.renew:${s.id}:${s.next_date}` });
        }
      },
    },
    {
      kind: 'subscription.renew',
      async run(payload) {
        const { subscriptionId, dueDate } = z.object({ subscriptionId: z.string(), dueDate: z.string().regex(/^\d{4}-\d{2}-\d{2}$/) }).parse(payload);
        await renewSubscription(p, subscriptionId, dueDate);
      },
    },
  ];
}
