/**
 * The lifecycle of one payment attempt, driven by verified gateway facts.
 *
 * Gateways deliver facts late, twice and out of order (webhook and browser
 * return race; konbini notifications arrive days later). The machine therefore
 * sorts every (state, fact) pair into exactly one of three tables-driven answers:
 *   - a row of PAYMENT_TRANSITIONS          → the payment moves,
 *   - a row of PAYMENT_IGNORED_FACTS        → old news, nothing changes,
 *   - neither                               → the money story disagrees; a human must look.
 *
 * Refund idempotency is NOT handled here: the snapshot carries no refund ids, so
 * the caller must drop a refund fact whose refundId it has already recorded
 * before calling, or the refund is counted twice.
 */

export const PAYMENT_STATES = [
  'pending',
  'awaiting_payment',
  'authorized',
  'captured',
  'partially_refunded',
  'refunded',
  'failed',
  'cancelled',
  'expired',
] as const;
export type PaymentState = typeof PAYMENT_STATES[number];

/** A verified fact from a gateway, normalized. Amounts are integer yen. */
export type PaymentFact =
  | { type: 'awaiting_payment'; amount: number } // konbini / bank: customer still has to pay
  | { type: 'authorized'; amount: number }
  | { type: 'captured'; amount: number } // the total captured on this payment
  | { type: 'refunded'; amount: number; refundId: string } // amount of THIS refund (not cumulative)
  | { type: 'failed'; reason: string }
  | { type: 'cancelled' }
  | { type: 'expired' };

export interface PaymentSnapshot {
  state: PaymentState;
  amount: number;
  capturedAmount: number;
  refundedAmount: number;
}

export type PaymentOutcome =
  | { kind: 'changed'; next: PaymentSnapshot }
  | { kind: 'unchanged'; reason: string } // duplicate or stale fact
  | { kind: 'conflict'; reason: string }; // needs a human

type FactType = PaymentFact['type'];

/**
 * Every move a payment can make. `refunded` facts have two rows per state; the
 * refund amount picks between them (the whole remainder → refunded).
 */
export const PAYMENT_TRANSITIONS: ReadonlyArray<{ from: PaymentState; fact: FactType; to: PaymentState }> = Object.freeze([
  { from: 'pending', fact: 'awaiting_payment', to: 'awaiting_payment' },
  { from: 'pending', fact: 'authorized', to: 'authorized' },
  { from: 'pending', fact: 'captured', to: 'captured' },
  { from: 'pending', fact: 'failed', to: 'failed' },
  { from: 'pending', fact: 'cancelled', to: 'cancelled' },
  { from: 'pending', fact: 'expired', to: 'expired' },

  { from: 'awaiting_payment', fact: 'authorized', to: 'authorized' },
  { from: 'awaiting_payment', fact: 'captured', to: 'captured' },
  { from: 'awaiting_payment', fact: 'failed', to: 'failed' },
  { from: 'awaiting_payment', fact: 'cancelled', to: 'cancelled' },
  { from: 'awaiting_payment', fact: 'expired', to: 'expired' },

  { from: 'authorized', fact: 'captured', to: 'captured' },
  { from: 'authorized', fact: 'failed', to: 'failed' },
  { from: 'authorized', fact: 'cancelled', to: 'cancelled' },
  { from: 'authorized', fact: 'expired', to: 'expired' },

  { from: 'captured', fact: 'refunded', to: 'partially_refunded' },
  { from: 'captured', fact: 'refunded', to: 'refunded' },

  { from: 'partially_refunded', fact: 'refunded', to: 'partially_refunded' },
  { from: 'partially_refunded', fact: 'refunded', to: 'refunded' },
] as const);

/**
 * Facts that are duplicates or "behind" the current state: ignoring them is what
 * makes replays and reorderings converge. A `captured` fact is only old news
 * when its amount equals what was already captured; otherwise it is a conflict.
 * Once a payment ended without money (failed/cancelled/expired), a second
 * no-money ending changes nothing.
 */
export const PAYMENT_IGNORED_FACTS: ReadonlyArray<{ from: PaymentState; fact: FactType }> = Object.freeze([
  { from: 'awaiting_payment', fact: 'awaiting_payment' },

  { from: 'authorized', fact: 'awaiting_payment' },
  { from: 'authorized', fact: 'authorized' },

  { from: 'captured', fact: 'awaiting_payment' },
  { from: 'captured', fact: 'authorized' },
  { from: 'captured', fact: 'captured' },

  { from: 'partially_refunded', fact: 'awaiting_payment' },
  { from: 'partially_refunded', fact: 'authorized' },
  { from: 'partially_refunded', fact: 'captured' },

  { from: 'refunded', fact: 'awaiting_payment' },
  { from: 'refunded', fact: 'authorized' },
  { from: 'refunded', fact: 'captured' },

  { from: 'failed', fact: 'awaiting_payment' },
  { from: 'failed', fact: 'failed' },
  { from: 'failed', fact: 'cancelled' },
  { from: 'failed', fact: 'expired' },

  { from: 'cancelled', fact: 'awaiting_payment' },
  { from: 'cancelled', fact: 'failed' },
  { from: 'cancelled', fact: 'cancelled' },
  { from: 'cancelled', fact: 'expired' },

  { from: 'expired', fact: 'awaiting_payment' },
  { from: 'expired', fact: 'failed' },
  { from: 'expired', fact: 'cancelled' },
  { from: 'expired', fact: 'expired' },
] as const);

export function applyPaymentFact(p: PaymentSnapshot, fact: PaymentFact): PaymentOutcome {
  assertWellFormed(fact);

  const targets = PAYMENT_TRANSITIONS.filter((r) => r.from === p.state && r.fact === fact.type).map((r) => r.to);
  if (targets.length === 0) return notAMove(p, fact);

  if (fact.type === 'refunded') return applyRefund(p, fact);

  const to = targets[0]!; // non-refund facts have exactly one row per state
  const capturedAmount = fact.type === 'captured' ? fact.amount : p.capturedAmount;
  return { kind: 'changed', next: { ...p, state: to, capturedAmount } };
}

function notAMove(p: PaymentSnapshot, fact: PaymentFact): PaymentOutcome {
  const ignored = PAYMENT_IGNORED_FACTS.some((r) => r.from === p.state && r.fact === fact.type);

  if (!ignored) {
    if (fact.type === 'refunded') {
      return { kind: 'conflict', reason: `refund ${fact.refundId} of ${fact.amount} yen on a payment that is ${p.state}; nothing is captured to refund` };
    }
    return { kind: 'conflict', reason: `${fact.type} fact conflicts with payment state ${p.state}` };
  }

  if (fact.type === 'captured' && fact.amount !== p.capturedAmount) {
    return { kind: 'conflict', reason: `captured ${fact.amount} yen but the payment already captured ${p.capturedAmount} yen` };
  }

  // A same-amount capture on a (partially) refunded payment is the original capture replayed.
  const duplicate = fact.type === p.state || fact.type === 'captured';
  return {
    kind: 'unchanged',
    reason: duplicate ? `duplicate ${fact.type} fact; payment is already ${p.state}` : `stale ${fact.type} fact; payment is already ${p.state}`,
  };
}

function applyRefund(p: PaymentSnapshot, fact: Extract<PaymentFact, { type: 'refunded' }>): PaymentOutcome {
  const refundedAmount = p.refundedAmount + fact.amount;
  if (refundedAmount > p.capturedAmount) {
    return {
      kind: 'conflict',
      reason: `refund ${fact.refundId} of ${fact.amount} yen would bring refunds to ${refundedAmount} yen, above the ${p.capturedAmount} yen captured`,
    };
  }
  const to: PaymentState = refundedAmount === p.capturedAmount ? 'refunded' : 'partially_refunded';
  return { kind: 'changed', next: { ...p, state: to, refundedAmount } };
}

/** A malformed fact is a bug in a gateway adapter, not something a gateway told us: fail loudly. */
function assertWellFormed(fact: PaymentFact): void {
  if ('amount' in fact) assertPositiveYen(`${fact.type}.amount`, fact.amount);
  if (fact.type === 'refunded' && (typeof fact.refundId !== 'string' || fact.refundId === '')) {
    throw new TypeError(`refunded.refundId must be a non-empty string, got ${JSON.stringify(fact.refundId)}`);
  }
}

function assertPositiveYen(field: string, value: number): void {
  if (!Number.isSafeInteger(value) || value <= 0) {
    throw new TypeError(`${field} must be a positive safe integer (yen), got ${String(value)}`);
  }
}
