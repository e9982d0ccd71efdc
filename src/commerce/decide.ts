/**
 * The single pure decision behind the "apply payment fact" command: given the
 * order, one of its payment attempts and a verified gateway fact, say what the
 * payment and order become and which side effects to perform.
 *
 * Everything that could lose or double money is settled here, in one place:
 * stale attempts, double payments, amount mismatches, and effects that must
 * happen at most once (fulfilment, stock).
 */
import { applyPaymentFact, type PaymentFact, type PaymentSnapshot } from './payment-machine.js';
import { transitionOrder, type OrderEffect, type OrderEvent, type OrderState } from './order-machine.js';

export interface OrderSnapshot {
  state: OrderState;
  total: number;
  fulfilled: boolean;
  stockCommitted: boolean;
  stockReleased: boolean;
}

export interface Decision {
  payment: PaymentSnapshot; // next payment snapshot (same as input when unchanged)
  paymentChanged: boolean;
  order: OrderSnapshot; // next order snapshot
  orderChanged: boolean;
  effects: OrderEffect[]; // side effects to enqueue/perform, already de-duplicated against the snapshot flags
  outcome: 'applied' | 'duplicate' | 'stale_attempt' | 'conflict' | 'amount_mismatch';
  note: string; // human-readable why, for the audit trail
}

/** Orders that have not received money yet: a capture on any attempt is welcome here. */
const AWAITING_MONEY: ReadonlySet<OrderState> = new Set<OrderState>(['pending_payment', 'awaiting_payment', 'authorized']);

export function decide(
  order: OrderSnapshot,
  payment: PaymentSnapshot,
  fact: PaymentFact,
  opts: { isCurrentAttempt: boolean },
): Decision {
  const applied = applyPaymentFact(payment, fact);
  if (applied.kind === 'unchanged') {
    return { payment, paymentChanged: false, order, orderChanged: false, effects: [], outcome: 'duplicate', note: applied.reason };
  }
  if (applied.kind === 'conflict') return holdOrder(order, payment, false, 'conflict', applied.reason);
  const next = applied.next;

  if (!opts.isCurrentAttempt) {
    // A superseded attempt must never steer the order: cancelling an old konbini slip
    // must not cancel an order the customer has since paid by card.
    if (fact.type !== 'captured') {
      return leaveOrder(order, next, 'stale_attempt', `${fact.type} fact on a previous payment attempt (now ${next.state}); order stays ${order.state}`);
    }
    if (!AWAITING_MONEY.has(order.state)) {
      return holdOrder(order, next, true, 'conflict',
        `a second payment of ${fact.amount} yen was captured on a previous attempt while the order is ${order.state}; it needs a refund: name that payment in the refund (CLI --payment, API "payment")`);
    }
    // Otherwise it is money we have for an unpaid order: apply it like the current attempt.
  }

  if ((fact.type === 'awaiting_payment' || fact.type === 'authorized' || fact.type === 'captured') && fact.amount !== order.total) {
    return holdOrder(order, next, true, 'amount_mismatch',
      `${fact.type} amount ${fact.amount} yen differs from the order total ${order.total} yen`);
  }

  const event = orderEventFor(fact, next, order);
  if (event === undefined) {
    // A failed attempt leaves the order open so the customer can try again with a new attempt.
    return leaveOrder(order, next, 'applied', `payment ${fact.type}; order stays ${order.state}`);
  }

  const t = transitionOrder(order.state, event);
  if (!t.ok) return holdOrder(order, next, true, 'conflict', `${t.reason} (payment ${fact.type} fact)`);

  const settled = settle(order, t.to, t.effects);
  const staleNote = opts.isCurrentAttempt ? '' : ' (captured on a previous attempt; make it the current attempt)';
  return {
    payment: next,
    paymentChanged: true,
    order: settled.order,
    orderChanged: changed(order, settled.order),
    effects: settled.effects,
    outcome: 'applied',
    note: `payment ${payment.state} → ${next.state}; order ${order.state} → ${t.to} on ${event}${staleNote}`,
  };
}

/**
 * Moves an order by an event that is not a payment fact (ship, release_to_paid,
 * cancel, …) with the same at-most-once effect bookkeeping as `decide`.
 */
export function applyOrderEvent(
  order: OrderSnapshot,
  event: OrderEvent,
): { ok: true; order: OrderSnapshot; effects: OrderEffect[] } | { ok: false; reason: string } {
  const t = transitionOrder(order.state, event);
  if (!t.ok) return t;
  return { ok: true, ...settle(order, t.to, t.effects) };
}

function orderEventFor(fact: PaymentFact, next: PaymentSnapshot, order: OrderSnapshot): OrderEvent | undefined {
  switch (fact.type) {
    case 'awaiting_payment': return 'payment_awaiting';
    case 'authorized': return 'payment_authorized';
    case 'captured': return 'payment_captured';
    case 'cancelled': return 'payment_cancelled';
    case 'expired': return 'payment_expired';
    case 'refunded':
      if (next.state === 'refunded') return 'refund_full';
      // An order an operator made smaller gets the difference back (order-edit.ts): the money kept
      // still pays for everything the order holds, so it keeps its state (where the table allows).
      if (next.capturedAmount - next.refundedAmount >= order.total && transitionOrder(order.state, 'refund_covered').ok) return 'refund_covered';
      return 'refund_partial';
    case 'failed': return undefined;
  }
}

/**
 * Puts the order on hold when its state allows it. Orders that cannot be held
 * (cancelled, expired, refunded, completed) stay as they are, but a human is
 * still alerted: the money disagrees with them.
 */
function holdOrder(
  order: OrderSnapshot,
  payment: PaymentSnapshot,
  paymentChanged: boolean,
  outcome: 'conflict' | 'amount_mismatch',
  why: string,
): Decision {
  const t = transitionOrder(order.state, 'hold');
  if (!t.ok) {
    return { payment, paymentChanged, order, orderChanged: false, effects: ['alert_hold'], outcome,
      note: `${why}; order is ${order.state} and cannot be held, alerting a human` };
  }
  const settled = settle(order, t.to, t.effects);
  return {
    payment,
    paymentChanged,
    order: settled.order,
    orderChanged: changed(order, settled.order),
    effects: settled.effects,
    outcome,
    note: order.state === 'on_hold' ? `${why}; order already on hold` : `${why}; order put on hold`,
  };
}

function leaveOrder(order: OrderSnapshot, payment: PaymentSnapshot, outcome: 'applied' | 'stale_attempt', note: string): Decision {
  return { payment, paymentChanged: true, order, orderChanged: false, effects: [], outcome, note };
}

/**
 * Applies a row's effects against the order's flags so that stock moves at most
 * once in one direction and goods are fulfilled at most once, however often
 * facts are replayed or a held order is released.
 */
function settle(order: OrderSnapshot, to: OrderState, rowEffects: readonly OrderEffect[]): { order: OrderSnapshot; effects: OrderEffect[] } {
  let { fulfilled, stockCommitted, stockReleased } = order;
  const effects: OrderEffect[] = [];
  for (const effect of rowEffects) {
    if (effect === 'commit_stock' || effect === 'release_stock') {
      // Stock given back cannot be committed again (and vice versa): the order is on hold by then.
      if (stockCommitted || stockReleased) continue;
      if (effect === 'commit_stock') stockCommitted = true;
      else stockReleased = true;
    }
    if (effect === 'fulfil') {
      // Never ship goods whose stock was not committed, and never ship twice.
      if (fulfilled || !stockCommitted) continue;
      fulfilled = true;
    }
    effects.push(effect);
  }
  return { order: { ...order, state: to, fulfilled, stockCommitted, stockReleased }, effects };
}

function changed(a: OrderSnapshot, b: OrderSnapshot): boolean {
  return a.state !== b.state || a.fulfilled !== b.fulfilled || a.stockCommitted !== b.stockCommitted || a.stockReleased !== b.stockReleased;
}
