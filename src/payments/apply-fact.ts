import { decide, type Decision } from '../commerce/decide.js';
import { applyOrderChange, lockOrder, orderSnapshot, recordChange } from '../commerce/orders.js';
import type { PaymentSnapshot, PaymentState } from '../commerce/payment-machine.js';
import type { Context } from '../context.js';
import { forUpdate, type Db, type Tx } from '../db/index.js';
import type { PaymentAttempt } from '../db/schema.js';
import { newId, nowIso } from '../ids.js';
import type { GatewayFact } from './provider.js';

/** Where a fact came from, for the audit trail: only verified or read-back facts ever get here. */
export type FactSource = 'notification' | 'readback' | 'return' | 'operation';

export interface ApplyResult {
  outcome: Decision['outcome'] | 'unknown_attempt';
  orderId?: string;
  orderState?: string;
  paymentState?: string;
  note: string;
}

function paymentSnapshot(attempt: PaymentAttempt): PaymentSnapshot {
  return {
    state: attempt.state as PaymentState,
    amount: attempt.amount,
    capturedAmount: attempt.captured_amount,
    refundedAmount: attempt.refunded_amount,
  };
}

/**
 * The one command that moves money state. In a single transaction it records the gateway event
 * (its unique key makes a redelivery a no-op), decides the payment and order transitions, moves
 * stock and enqueues side effects. Webhooks, read-backs, browser returns and operator operations
 * all come through here, so duplicates, races and out-of-order delivery converge on one state.
 */
export async function applyFact(ctx: Context, shopId: string, provider: string, f: GatewayFact, source: FactSource): Promise<ApplyResult> {
  // A redelivery is answered from one read, without taking a write lock; an event row is never
  // deleted, so a key seen here stays seen. The transaction below checks again under its locks.
  const seen = await findEvent(ctx.db, shopId, provider, f.eventKey);
  if (seen) return report(ctx, provider, shopId, f, { outcome: 'duplicate', note: `event ${f.eventKey} already applied` });
  const result = await ctx.db.transaction().execute(async (tx): Promise<ApplyResult> => {
    const located = await tx
      .selectFrom('payment_attempts')
      .select(['id', 'order_id'])
      .where('shop_id', '=', shopId)
      .where('provider', '=', provider)
      .where('merchant_ref', '=', f.merchantRef)
      .executeTakeFirst();
    const receivedAt = nowIso();
    const event = {
      id: newId('evt'),
      shop_id: shopId,
      provider,
      event_key: f.eventKey,
      attempt_id: located?.id ?? null,
      fact_type: f.fact.type,
      amount: 'amount' in f.fact ? f.fact.amount : null,
      source,
      outcome: 'unknown_attempt',
      note: '',
      payload: JSON.stringify(f.payload ?? null),
      received_at: receivedAt,
    };

    if (!located) {
      // Kept, not dropped: a verified fact for a reference we do not know needs a human.
      const note = `no payment attempt "${f.merchantRef}" in shop "${shopId}"`;
      const inserted = await tx
        .insertInto('payment_events')
        .values({ ...event, note })
        .onConflict((oc) => oc.columns(['shop_id', 'provider', 'event_key']).doNothing())
        .executeTakeFirst();
      if (Number(inserted.numInsertedOrUpdatedRows ?? 0) === 1) {
        await tx
          .insertInto('alerts')
          .values({ id: newId('alr'), kind: 'unknown_payment', message: `${provider}: ${note}`, ref: event.id, created_at: receivedAt, resolved_at: null })
          .execute();
      }
      return { outcome: 'unknown_attempt', note };
    }

    // Lock order before attempt, always in this order, so concurrent facts cannot deadlock.
    const order = await lockOrder(ctx, tx, located.order_id);
    const attempt = await forUpdate(ctx.engine, tx.selectFrom('payment_attempts').selectAll().where('id', '=', located.id)).executeTakeFirstOrThrow();

    // Under the order's lock, concurrent deliveries of one event are serialised: this read is exact.
    if (await findEvent(tx, shopId, provider, f.eventKey)) {
      return { outcome: 'duplicate', orderId: order.id, orderState: order.state, paymentState: attempt.state, note: `event ${f.eventKey} already applied` };
    }

    const isCurrentAttempt = order.current_attempt_id === attempt.id;
    const d = decide(orderSnapshot(order), paymentSnapshot(attempt), f.fact, { isCurrentAttempt });
    const cause = `${provider} ${f.fact.type} (${source}, event ${f.eventKey})`;
    // The unique key stays the last line of defence: a second insert fails and rolls everything back.
    await tx.insertInto('payment_events').values({ ...event, outcome: d.outcome, note: d.note }).execute();

    const details = f.details ? { ...(JSON.parse(attempt.details) as object), ...f.details } : undefined;
    if (d.paymentChanged || details || (f.gatewayRef && !attempt.gateway_ref)) {
      await tx
        .updateTable('payment_attempts')
        .set({
          state: d.payment.state,
          captured_amount: d.payment.capturedAmount,
          refunded_amount: d.payment.refundedAmount,
          gateway_ref: attempt.gateway_ref ?? f.gatewayRef ?? null,
          details: details ? JSON.stringify(details) : attempt.details,
          updated_at: nowIso(),
        })
        .where('id', '=', attempt.id)
        .execute();
      if (d.payment.state !== attempt.state) await recordChange(tx, 'payment', attempt.id, attempt.state, d.payment.state, cause);
    }
    if (!isCurrentAttempt && d.outcome === 'applied' && f.fact.type === 'captured') {
      // The money came through an earlier attempt: that attempt is now the order's payment.
      await tx.updateTable('orders').set({ current_attempt_id: attempt.id }).where('id', '=', order.id).execute();
    }
    if (d.orderChanged || d.effects.length > 0) {
      const held = d.outcome === 'conflict' || d.outcome === 'amount_mismatch';
      await applyOrderChange(tx, order, { ...d.order, holdReason: held ? d.note : undefined }, d.effects, cause);
    }
    return { outcome: d.outcome, orderId: order.id, orderState: d.order.state, paymentState: d.payment.state, note: d.note };
  });
  return report(ctx, provider, shopId, f, result);
}

function findEvent(db: Db | Tx, shopId: string, provider: string, eventKey: string) {
  return db
    .selectFrom('payment_events')
    .select('id')
    .where('shop_id', '=', shopId)
    .where('provider', '=', provider)
    .where('event_key', '=', eventKey)
    .executeTakeFirst();
}

function report(ctx: Context, provider: string, shopId: string, f: GatewayFact, result: ApplyResult): ApplyResult {
  ctx.metrics.paymentFacts.inc({ provider, fact: f.fact.type, outcome: result.outcome });
  if (result.outcome === 'conflict' || result.outcome === 'amount_mismatch' || result.outcome === 'unknown_attempt') {
    ctx.log.warn({ provider, shopId, merchantRef: f.merchantRef, eventKey: f.eventKey, outcome: result.outcome }, result.note);
  } else {
    ctx.log.info({ provider, shopId, merchantRef: f.merchantRef, eventKey: f.eventKey, outcome: result.outcome, orderState: result.orderState }, 'payment fact');
  }
  return result;
}
