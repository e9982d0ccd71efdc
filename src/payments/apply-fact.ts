import { sql } from 'kysely';
import { decide, type Decision } from '../commerce/decide.js';
import { applyOrderChange, orderSnapshot, recordChange } from '../commerce/orders.js';
import type { PaymentSnapshot, PaymentState } from '../commerce/payment-machine.js';
import type { Context } from '../context.js';
import { forUpdate, type Db, type Tx } from '../db/index.js';
import { insertRow } from '../db/insert.js';
import type { NewPaymentEvent, PaymentAttempt, PaymentEvent } from '../db/schema.js';
import { newId, nowIso } from '../ids.js';
import { enqueue } from '../jobs/outbox.js';
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

/** The outcome of a notification's event that is recorded but not applied yet (record, answer, apply). */
export const RECEIVED = 'received';

/** What a fact is without its payload: what an event row keeps so that it can be applied later. */
export type StatedFact = Omit<GatewayFact, 'payload'>;

/** A payment_events row for a fact, still `received`: applying it writes the outcome. */
export function eventRow(shopId: string, provider: string, f: GatewayFact, source: FactSource, receivedAt = nowIso()): EventRow {
  const stated = { merchantRef: f.merchantRef, gatewayRef: f.gatewayRef, details: f.details, fact: f.fact };
  return {
    id: newId('evt'),
    shop_id: shopId,
    provider,
    event_key: f.eventKey,
    attempt_id: null,
    fact_type: f.fact.type,
    amount: 'amount' in f.fact ? f.fact.amount : null,
    source,
    outcome: RECEIVED,
    note: '',
    payload: JSON.stringify(f.payload ?? null),
    fact: JSON.stringify(stated),
    received_at: receivedAt,
    applied_at: null,
  };
}

type EventRow = NewPaymentEvent & { id: string; shop_id: string; provider: string; event_key: string; source: string };

/** The key was written by someone else between our first look and our insert: look again. */
class SeenMeanwhile extends Error {}

/**
 * The one command that moves money state. In a single transaction it records the gateway event
 * (its unique key makes a redelivery a no-op), decides the payment and order transitions, moves
 * stock and enqueues side effects. Read-backs, browser returns and operator operations come through
 * here and answer with the result; notifications are recorded first and applied by the inbox
 * (inbox.ts) through the same `settle`, so duplicates, races and out-of-order delivery converge on
 * one state whichever way a fact came.
 */
export async function applyFact(ctx: Context, shopId: string, provider: string, f: GatewayFact, source: FactSource): Promise<ApplyResult> {
  for (let look = 1; ; look++) {
    // A redelivery is answered from one read, without taking a write lock; an event row is never
    // deleted, so a key seen here stays seen. The insert below is the authority.
    const seen = await findEvent(ctx.db, shopId, provider, f.eventKey);
    try {
      if (!seen) {
        const result = await settling(ctx, (tx) => settle(ctx, tx, eventRow(shopId, provider, f, source), false, f));
        return report(ctx, provider, shopId, f, result);
      }
      // The same news came as a notification that is recorded but not applied yet: it is applied
      // now, so the caller (a customer on the return page) gets the answer, never "duplicate".
      if (seen.outcome === RECEIVED) {
        const result = await applyRecorded(ctx, seen.id, 'wait');
        if (result) return result;
      }
    } catch (error) {
      if (error instanceof SeenMeanwhile && look < 2) continue;
      throw error;
    }
    return report(ctx, provider, shopId, f, { outcome: 'duplicate', note: `event ${f.eventKey} already applied` });
  }
}

/**
 * Applies one recorded (`received`) event in its own transaction. An event another process is
 * applying right now is left to it (`skip`: the inbox and the sweep, with SKIP LOCKED on
 * PostgreSQL) or waited for (`wait`: applyFact, which then finds it done). Undefined when the event
 * is no longer waiting.
 */
export async function applyRecorded(ctx: Context, eventId: string, locked: 'skip' | 'wait'): Promise<ApplyResult | undefined> {
  const done = await settling(ctx, (tx) => settleRecorded(ctx, tx, eventId, locked));
  return done && reportRecorded(ctx, done);
}

/**
 * PostgreSQL rolled the transaction back to break a deadlock (40P01) or because it could not be
 * serialised (40001): nothing of it happened, and settling the fact again is safe. Concurrent
 * payments racing for the last serial codes can deadlock (each holds codes the other's waiting
 * pick wants); without this a recorded event waited for the sweep, a minute or more, and a
 * read-back or return answered an error.
 */
const RETRYABLE = new Set(['40P01', '40001']);
const SETTLE_TRIES = 3;

/** Runs one settlement in its own transaction, again (up to SETTLE_TRIES times) when PostgreSQL rolled it back as above. */
async function settling<T>(ctx: Context, run: (tx: Tx) => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await ctx.db.transaction().execute(run);
    } catch (error) {
      if (attempt >= SETTLE_TRIES || !RETRYABLE.has(String((error as { code?: unknown } | null)?.code))) throw error;
      ctx.log.warn({ err: error, attempt }, 'settling a payment fact was rolled back by PostgreSQL (deadlock or serialization); trying again');
    }
  }
}

/** Recorded events applied at the same time on PostgreSQL, each on its own pooled connection. */
const CONCURRENT_EVENTS = 4;

/**
 * Applies recorded events, each on its own so that one that fails stays `received` (for the sweep)
 * and holds up none of the others. On SQLite they share one transaction, each under a savepoint:
 * there is one writer anyway, and one commit instead of many is most of the saving. On PostgreSQL
 * each has its own transaction, so its row locks (the order's, the SKU's) are held for one event
 * only, and the events of a few attempts run at once: they wait for each other only on the rows
 * they share. The events of one attempt are applied one after another, in the order given (the
 * order they were recorded in): out of order they do not always converge, a refund applied before
 * its capture conflicts and puts the order on hold although the gateway did refund.
 */
export async function applyRecordedBatch(ctx: Context, eventIds: readonly string[]): Promise<{ applied: number; failed: { id: string; error: unknown }[] }> {
  const failed: { id: string; error: unknown }[] = [];
  let applied = 0;
  if (ctx.engine === 'postgres') {
    const attempts = (await byAttempt(ctx.db, eventIds)).values();
    // A few runners share one iterator: each takes the next attempt's events when it is done with one.
    const runner = async () => {
      for (const ids of attempts) {
        for (const [i, id] of ids.entries()) {
          try {
            if (await applyRecorded(ctx, id, 'skip')) applied += 1;
          } catch (error) {
            // What follows is later news of the same payment: applied before this, it may conflict.
            const held = new Error(`held back: event ${id} of the same payment before it could not be applied`, { cause: error });
            failed.push({ id, error }, ...ids.slice(i + 1).map((later) => ({ id: later, error: held })));
            break;
          }
        }
      }
    };
    await Promise.all(Array.from({ length: CONCURRENT_EVENTS }, runner));
    return { applied, failed };
  }
  const settled: Settled[] = [];
  try {
    await ctx.db.transaction().execute(async (tx) => {
      for (const id of eventIds) {
        await sql`savepoint apply_event`.execute(tx);
        try {
          const done = await settleRecorded(ctx, tx, id, 'skip');
          await sql`release savepoint apply_event`.execute(tx);
          if (done) settled.push(done);
        } catch (error) {
          await sql`rollback to savepoint apply_event`.execute(tx);
          await sql`release savepoint apply_event`.execute(tx);
          failed.push({ id, error });
        }
      }
    });
  } catch (error) {
    // The commit itself failed: nothing of the batch happened, every event stays received.
    return { applied: 0, failed: eventIds.map((id) => ({ id, error })) };
  }
  for (const done of settled) reportRecorded(ctx, done);
  return { applied: settled.length, failed };
}

/** Event ids by the attempt their fact is about (shop, gateway, merchant reference), each list in the order given. */
async function byAttempt(db: Db, eventIds: readonly string[]): Promise<Map<string, string[]>> {
  const rows = eventIds.length === 0 ? [] : await db.selectFrom('payment_events').select(['id', 'shop_id', 'provider', 'fact']).where('id', 'in', eventIds).execute();
  const attemptOf = new Map(rows.map((r) => [r.id, attemptKey(r)]));
  const groups = new Map<string, string[]>();
  for (const id of eventIds) {
    const key = attemptOf.get(id) ?? id;
    const group = groups.get(key);
    if (group) group.push(id);
    else groups.set(key, [id]);
  }
  return groups;
}

/** An event whose fact cannot be read is its own group: applying it says what is wrong with it. */
function attemptKey(row: { id: string; shop_id: string; provider: string; fact: string | null }): string {
  try {
    const { merchantRef } = JSON.parse(row.fact ?? '') as StatedFact;
    return JSON.stringify([row.shop_id, row.provider, merchantRef]);
  } catch {
    return row.id;
  }
}

interface Settled {
  row: PaymentEvent;
  f: StatedFact;
  result: ApplyResult;
}

async function settleRecorded(ctx: Context, tx: Tx, eventId: string, locked: 'skip' | 'wait'): Promise<Settled | undefined> {
  let query = tx.selectFrom('payment_events').selectAll().where('id', '=', eventId).where('outcome', '=', RECEIVED);
  // The event's row is locked first, then the order and the attempt: always in that order.
  if (ctx.engine === 'postgres') query = locked === 'skip' ? query.forUpdate().skipLocked() : query.forUpdate();
  const row = await query.executeTakeFirst();
  if (!row) return undefined;
  if (!row.fact) throw new Error(`payment event ${row.id} is received but keeps no fact to apply`);
  const f: StatedFact = { ...(JSON.parse(row.fact) as Omit<StatedFact, 'eventKey'>), eventKey: row.event_key };
  return { row, f, result: await settle(ctx, tx, row, true, f) };
}

function reportRecorded(ctx: Context, done: Settled): ApplyResult {
  ctx.metrics.paymentInboxLag.observe((Date.now() - Date.parse(done.row.received_at)) / 1000);
  return report(ctx, done.row.provider, done.row.shop_id, done.f, done.result);
}

/**
 * Applies an event's fact under the order's lock. `recorded`: the event's row exists (`received`)
 * and gets its outcome; otherwise the row is inserted with it, and a key that appeared meanwhile
 * rolls everything back (SeenMeanwhile) for the caller to look again.
 */
async function settle(ctx: Context, tx: Tx, event: EventRow, recorded: boolean, f: StatedFact): Promise<ApplyResult> {
  const { shop_id: shopId, provider, source } = event;
  const attemptQuery = tx.selectFrom('payment_attempts').where('shop_id', '=', shopId).where('provider', '=', provider).where('merchant_ref', '=', f.merchantRef);
  // Lock order before attempt, always in this order, so concurrent facts cannot deadlock. The order
  // is found through its attempt in the same statement (a round trip fewer on PostgreSQL).
  const order = await forUpdate(ctx.engine, tx.selectFrom('orders').selectAll().where('id', '=', attemptQuery.select('order_id'))).executeTakeFirst();
  const at = nowIso();
  const write = async (outcome: ApplyResult['outcome'], note: string, attemptId: string | null) => {
    const outcomeColumns = { outcome, note, attempt_id: attemptId, applied_at: at };
    if (recorded) {
      await tx.updateTable('payment_events').set(outcomeColumns).where('id', '=', event.id).execute();
      return;
    }
    const inserted = await tx
      .insertInto('payment_events')
      .values({ ...event, ...outcomeColumns })
      .onConflict((oc) => oc.columns(['shop_id', 'provider', 'event_key']).doNothing())
      .executeTakeFirst();
    if (Number(inserted.numInsertedOrUpdatedRows ?? 0) !== 1) throw new SeenMeanwhile();
  };

  if (!order) {
    // Kept, not dropped: a verified fact for a reference we do not know needs a human.
    const note = `no payment attempt "${f.merchantRef}" in shop "${shopId}"`;
    await write('unknown_attempt', note, null);
    await insertRow(tx, 'alerts', { id: newId('alr'), kind: 'unknown_payment', message: `${provider}: ${note}`, ref: event.id, created_at: at, resolved_at: null });
    return { outcome: 'unknown_attempt', note };
  }

  const attempt = await forUpdate(ctx.engine, attemptQuery.selectAll()).executeTakeFirstOrThrow();

  const isCurrentAttempt = order.current_attempt_id === attempt.id;
  const d = decide(orderSnapshot(order), paymentSnapshot(attempt), f.fact, { isCurrentAttempt });
  const cause = `${provider} ${f.fact.type} (${source}, event ${f.eventKey})`;
  // First of the writes: a key seen meanwhile rolls back before anything else was changed.
  await write(d.outcome, d.note, attempt.id);

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
        updated_at: at,
      })
      .where('id', '=', attempt.id)
      .execute();
  }
  const paymentChange = d.payment.state !== attempt.state ? { id: attempt.id, from: attempt.state, to: d.payment.state } : undefined;
  if (!isCurrentAttempt && d.outcome === 'applied' && f.fact.type === 'captured') {
    // The money came through an earlier attempt: that attempt is now the order's payment.
    await tx.updateTable('orders').set({ current_attempt_id: attempt.id }).where('id', '=', order.id).execute();
  }
  // The state written can differ from the decision's: a paid order short of serial codes is held.
  let orderState = d.order.state;
  if (d.orderChanged || d.effects.length > 0) {
    const held = d.outcome === 'conflict' || d.outcome === 'amount_mismatch';
    orderState = await applyOrderChange(tx, order, { ...d.order, holdReason: held ? d.note : undefined }, d.effects, cause, paymentChange);
  } else if (paymentChange) {
    await recordChange(tx, 'payment', paymentChange.id, paymentChange.from, paymentChange.to, cause);
  }
  // Money went back through a superseded payment (a duplicate the operator refunded): it steers
  // nothing, but the customer is told of the refund like any other. Not an effect of `decide`:
  // its effects are those of an order transition's table row, and the order does not move.
  if (d.outcome === 'stale_attempt' && f.fact.type === 'refunded') await enqueue(tx, { kind: 'mail.send', payload: { template: 'refund', orderId: order.id } });
  return { outcome: d.outcome, orderId: order.id, orderState, paymentState: d.payment.state, note: d.note };
}

function findEvent(db: Db | Tx, shopId: string, provider: string, eventKey: string) {
  return db
    .selectFrom('payment_events')
    .select(['id', 'outcome'])
    .where('shop_id', '=', shopId)
    .where('provider', '=', provider)
    .where('event_key', '=', eventKey)
    .executeTakeFirst();
}

function report(ctx: Context, provider: string, shopId: string, f: StatedFact, result: ApplyResult): ApplyResult {
  ctx.metrics.paymentFacts.inc({ provider, fact: f.fact.type, outcome: result.outcome });
  if (result.outcome === 'conflict' || result.outcome === 'amount_mismatch' || result.outcome === 'unknown_attempt') {
    ctx.log.warn({ provider, shopId, merchantRef: f.merchantRef, eventKey: f.eventKey, outcome: result.outcome }, result.note);
  } else {
    ctx.log.info({ provider, shopId, merchantRef: f.merchantRef, eventKey: f.eventKey, outcome: result.outcome, orderState: result.orderState }, 'payment fact');
  }
  return result;
}
