import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  PAYMENT_IGNORED_FACTS,
  PAYMENT_STATES,
  PAYMENT_TRANSITIONS,
  applyPaymentFact,
  type PaymentFact,
  type PaymentSnapshot,
  type PaymentState,
} from '../../src/commerce/payment-machine.js';

type FactType = PaymentFact['type'];
const FACT_TYPES: readonly FactType[] = ['awaiting_payment', 'authorized', 'captured', 'refunded', 'failed', 'cancelled', 'expired'];

const TOTAL = 1000;

/** A realistic snapshot for each state of a 1000 yen payment. */
function snapshotIn(state: PaymentState): PaymentSnapshot {
  switch (state) {
    case 'captured': return { state, amount: TOTAL, capturedAmount: TOTAL, refundedAmount: 0 };
    case 'partially_refunded': return { state, amount: TOTAL, capturedAmount: TOTAL, refundedAmount: 300 };
    case 'refunded': return { state, amount: TOTAL, capturedAmount: TOTAL, refundedAmount: TOTAL };
    default: return { state, amount: TOTAL, capturedAmount: 0, refundedAmount: 0 };
  }
}

/** Representative facts: captures repeat the 1000 already captured; refunds are small. */
function representative(type: FactType): PaymentFact {
  switch (type) {
    case 'awaiting_payment': return { type, amount: TOTAL };
    case 'authorized': return { type, amount: TOTAL };
    case 'captured': return { type, amount: TOTAL };
    case 'refunded': return { type, amount: 100, refundId: 'rf_1' };
    case 'failed': return { type, reason: 'card_declined' };
    case 'cancelled': return { type };
    case 'expired': return { type };
  }
}

const U = 'unchanged';
const C = 'conflict';
type Expected = PaymentState | typeof U | typeof C;

/** The specification, cell by cell, written independently of the implementation's tables. */
const SPEC: Record<PaymentState, Record<FactType, Expected>> = {
  pending:            { awaiting_payment: 'awaiting_payment', authorized: 'authorized', captured: 'captured', refunded: C, failed: 'failed', cancelled: 'cancelled', expired: 'expired' },
  awaiting_payment:   { awaiting_payment: U, authorized: 'authorized', captured: 'captured', refunded: C, failed: 'failed', cancelled: 'cancelled', expired: 'expired' },
  authorized:         { awaiting_payment: U, authorized: U, captured: 'captured', refunded: C, failed: 'failed', cancelled: 'cancelled', expired: 'expired' },
  captured:           { awaiting_payment: U, authorized: U, captured: U, refunded: 'partially_refunded', failed: C, cancelled: C, expired: C },
  partially_refunded: { awaiting_payment: U, authorized: U, captured: U, refunded: 'partially_refunded', failed: C, cancelled: C, expired: C },
  refunded:           { awaiting_payment: U, authorized: U, captured: U, refunded: C, failed: C, cancelled: C, expired: C },
  failed:             { awaiting_payment: U, authorized: C, captured: C, refunded: C, failed: U, cancelled: U, expired: U },
  cancelled:          { awaiting_payment: U, authorized: C, captured: C, refunded: C, failed: U, cancelled: U, expired: U },
  expired:            { awaiting_payment: U, authorized: C, captured: C, refunded: C, failed: U, cancelled: U, expired: U },
};

test('every (state, fact type) pair answers exactly as the specification says', () => {
  for (const state of PAYMENT_STATES) {
    for (const type of FACT_TYPES) {
      const before = snapshotIn(state);
      const outcome = applyPaymentFact(before, representative(type));
      const expected = SPEC[state][type];
      const label = `${state} + ${type}`;
      if (expected === U || expected === C) {
        assert.equal(outcome.kind, expected, `${label}: ${JSON.stringify(outcome)}`);
      } else {
        assert.equal(outcome.kind, 'changed', `${label}: ${JSON.stringify(outcome)}`);
        if (outcome.kind === 'changed') assert.equal(outcome.next.state, expected, label);
      }
      assert.deepEqual(before, snapshotIn(state), `${label}: input snapshot must not be mutated`);
    }
  }
});

test('applyPaymentFact moves exactly along PAYMENT_TRANSITIONS and ignores exactly PAYMENT_IGNORED_FACTS', () => {
  for (const state of PAYMENT_STATES) {
    for (const type of FACT_TYPES) {
      const outcome = applyPaymentFact(snapshotIn(state), representative(type));
      const targets = PAYMENT_TRANSITIONS.filter((r) => r.from === state && r.fact === type).map((r) => r.to);
      const ignored = PAYMENT_IGNORED_FACTS.some((r) => r.from === state && r.fact === type);
      const label = `${state} + ${type}`;
      if (outcome.kind === 'changed') assert.ok(targets.includes(outcome.next.state), label);
      else assert.equal(targets.length, 0, label);
      assert.equal(outcome.kind === 'unchanged', ignored, label);
    }
  }
});

test('table rows name declared states and fact types, without duplicates or overlaps', () => {
  const states = new Set<string>(PAYMENT_STATES);
  const facts = new Set<string>(FACT_TYPES);
  const moves = new Set<string>();
  for (const row of PAYMENT_TRANSITIONS) {
    assert.ok(states.has(row.from) && states.has(row.to) && facts.has(row.fact), JSON.stringify(row));
    const key = `${row.from}:${row.fact}:${row.to}`;
    assert.ok(!moves.has(key), `duplicate row ${key}`);
    moves.add(key);
  }
  const ignored = new Set<string>();
  for (const row of PAYMENT_IGNORED_FACTS) {
    assert.ok(states.has(row.from) && facts.has(row.fact), JSON.stringify(row));
    const key = `${row.from}:${row.fact}`;
    assert.ok(!ignored.has(key), `duplicate ignored row ${key}`);
    ignored.add(key);
    assert.ok(!PAYMENT_TRANSITIONS.some((r) => r.from === row.from && r.fact === row.fact), `${key} is both a move and ignored`);
  }
});

test('only refund facts have more than one target per state, and then exactly partially_refunded | refunded', () => {
  for (const state of PAYMENT_STATES) {
    for (const type of FACT_TYPES) {
      const targets = PAYMENT_TRANSITIONS.filter((r) => r.from === state && r.fact === type).map((r) => r.to).sort();
      if (type === 'refunded' && targets.length > 0) assert.deepEqual(targets, ['partially_refunded', 'refunded'], state);
      else assert.ok(targets.length <= 1, `${state} + ${type}`);
    }
  }
});

test('failed, cancelled, expired and refunded are final', () => {
  for (const state of ['failed', 'cancelled', 'expired', 'refunded'] as const) {
    assert.equal(PAYMENT_TRANSITIONS.filter((r) => r.from === state).length, 0, state);
  }
});

test('capture records the captured amount; authorization does not', () => {
  const pending = snapshotIn('pending');
  assert.deepEqual(applyPaymentFact(pending, { type: 'authorized', amount: TOTAL }), {
    kind: 'changed', next: { state: 'authorized', amount: TOTAL, capturedAmount: 0, refundedAmount: 0 },
  });
  assert.deepEqual(applyPaymentFact(pending, { type: 'captured', amount: 900 }), {
    kind: 'changed', next: { state: 'captured', amount: TOTAL, capturedAmount: 900, refundedAmount: 0 },
  });
});

test('a capture of a different amount on an already captured payment is a conflict', () => {
  for (const state of ['captured', 'partially_refunded', 'refunded'] as const) {
    assert.equal(applyPaymentFact(snapshotIn(state), { type: 'captured', amount: 999 }).kind, 'conflict', state);
    assert.equal(applyPaymentFact(snapshotIn(state), { type: 'captured', amount: TOTAL }).kind, 'unchanged', state);
  }
});

test('refunds accumulate; the exact remainder makes the payment refunded; more is a conflict', () => {
  const captured = snapshotIn('captured');
  const partial = applyPaymentFact(captured, { type: 'refunded', amount: 300, refundId: 'r1' });
  assert.deepEqual(partial, { kind: 'changed', next: { ...captured, state: 'partially_refunded', refundedAmount: 300 } });
  assert.ok(partial.kind === 'changed', 'partial.kind === \'changed\'');

  const full = applyPaymentFact(partial.next, { type: 'refunded', amount: 700, refundId: 'r2' });
  assert.deepEqual(full, { kind: 'changed', next: { ...captured, state: 'refunded', refundedAmount: 1000 } });

  const over = applyPaymentFact(partial.next, { type: 'refunded', amount: 701, refundId: 'r3' });
  assert.equal(over.kind, 'conflict');

  assert.equal(applyPaymentFact(captured, { type: 'refunded', amount: 1200, refundId: 'r4' }).kind, 'conflict');
  assert.deepEqual(applyPaymentFact(captured, { type: 'refunded', amount: 1000, refundId: 'r5' }), {
    kind: 'changed', next: { ...captured, state: 'refunded', refundedAmount: 1000 },
  });
});

test('a malformed amount is a programming error: TypeError naming the field', () => {
  const bad = [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53];
  for (const amount of bad) {
    for (const fact of [
      { type: 'awaiting_payment', amount },
      { type: 'authorized', amount },
      { type: 'captured', amount },
      { type: 'refunded', amount, refundId: 'r1' },
    ] as PaymentFact[]) {
      assert.throws(() => applyPaymentFact(snapshotIn('captured'), fact), (err: unknown) =>
        err instanceof TypeError && err.message.includes(`${fact.type}.amount`), `${fact.type} ${amount}`);
    }
  }
  assert.throws(() => applyPaymentFact(snapshotIn('captured'), { type: 'refunded', amount: 1, refundId: '' }),
    (err: unknown) => err instanceof TypeError && err.message.includes('refundId'));
});

// --- properties ---------------------------------------------------------------------------

const factArb: fc.Arbitrary<PaymentFact> = fc.oneof(
  fc.record({ type: fc.constant('awaiting_payment' as const), amount: fc.constantFrom(TOTAL, 999) }),
  fc.record({ type: fc.constant('authorized' as const), amount: fc.constantFrom(TOTAL, 999) }),
  fc.record({ type: fc.constant('captured' as const), amount: fc.constantFrom(TOTAL, TOTAL, 999) }),
  fc.record({ type: fc.constant('refunded' as const), amount: fc.integer({ min: 1, max: 1200 }), refundId: fc.string({ minLength: 1, maxLength: 6 }) }),
  fc.record({ type: fc.constant('failed' as const), reason: fc.constantFrom('declined', 'fraud') }),
  fc.constant({ type: 'cancelled' as const }),
  fc.constant({ type: 'expired' as const }),
);

test('property: any fact sequence keeps the snapshot coherent', () => {
  fc.assert(
    fc.property(fc.array(factArb, { maxLength: 30, size: 'max' }), (facts) => {
      let p = snapshotIn('pending');
      for (const fact of facts) {
        const before = p;
        const outcome = applyPaymentFact(p, fact);
        if (outcome.kind === 'changed') p = outcome.next;
        assert.ok((PAYMENT_STATES as readonly string[]).includes(p.state), '(PAYMENT_STATES as readonly string[]).includes(p.state)');
        assert.equal(p.amount, TOTAL, 'the expected amount never changes');
        assert.ok(p.refundedAmount <= p.capturedAmount, 'never refund more than was captured');
        if (before.capturedAmount > 0) assert.equal(p.capturedAmount, before.capturedAmount, 'a capture is never overwritten');
        if (outcome.kind === 'changed') {
          assert.ok(PAYMENT_TRANSITIONS.some((r) => r.from === before.state && r.fact === fact.type && r.to === p.state), 'PAYMENT_TRANSITIONS.some((r) => r.from === before.state && r.fact === fact.type && r.to…');
        }
      }
    }),
    { numRuns: 500 },
  );
});

test('property: a non-refund fact delivered twice in a row changes nothing the second time', () => {
  fc.assert(
    fc.property(fc.array(factArb, { maxLength: 20, size: 'max' }), factArb.filter((f) => f.type !== 'refunded'), (prefix, fact) => {
      let p = snapshotIn('pending');
      for (const f of prefix) {
        const o = applyPaymentFact(p, f);
        if (o.kind === 'changed') p = o.next;
      }
      const first = applyPaymentFact(p, fact);
      const after = first.kind === 'changed' ? first.next : p;
      const second = applyPaymentFact(after, fact);
      assert.notEqual(second.kind, 'changed', JSON.stringify({ p, fact, first, second }));
      if (first.kind !== 'conflict') assert.equal(second.kind, 'unchanged');
    }),
    { numRuns: 500 },
  );
});

test('property: awaiting/authorized/captured facts in any order and multiplicity converge on captured', () => {
  const happy = fc.constantFrom<PaymentFact>(
    { type: 'awaiting_payment', amount: TOTAL },
    { type: 'authorized', amount: TOTAL },
  );
  fc.assert(
    fc.property(fc.array(happy, { maxLength: 10 }), fc.array(happy, { maxLength: 10 }), fc.integer({ min: 1, max: 3 }), (before, after, captures) => {
      const facts: PaymentFact[] = [...before, ...Array.from({ length: captures }, () => ({ type: 'captured' as const, amount: TOTAL })), ...after];
      let p = snapshotIn('pending');
      for (const fact of facts) {
        const o = applyPaymentFact(p, fact);
        assert.notEqual(o.kind, 'conflict');
        if (o.kind === 'changed') p = o.next;
      }
      assert.deepEqual(p, snapshotIn('captured'));
    }),
    { numRuns: 300 },
  );
});
