import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { applyOrderEvent, decide, type Decision, type OrderSnapshot } from '../../src/commerce/decide.js';
import { ORDER_STATES, ORDER_TRANSITIONS, transitionOrder, type OrderEffect, type OrderEvent } from '../../src/commerce/order-machine.js';
import type { PaymentFact, PaymentSnapshot } from '../../src/commerce/payment-machine.js';

const TOTAL = 1000;

function freshOrder(overrides: Partial<OrderSnapshot> = {}): OrderSnapshot {
  return { state: 'pending_payment', total: TOTAL, fulfilled: false, stockCommitted: false, stockReleased: false, ...overrides };
}
function freshPayment(overrides: Partial<PaymentSnapshot> = {}): PaymentSnapshot {
  return { state: 'pending', amount: TOTAL, capturedAmount: 0, refundedAmount: 0, ...overrides };
}
const paidOrder = (): OrderSnapshot => freshOrder({ state: 'paid', fulfilled: true, stockCommitted: true });
const capturedPayment = (): PaymentSnapshot => freshPayment({ state: 'captured', capturedAmount: TOTAL });

const captured = (amount = TOTAL): PaymentFact => ({ type: 'captured', amount });
const current = { isCurrentAttempt: true };
const stale = { isCurrentAttempt: false };

/**
 * What the "apply payment fact" command would do around `decide`: keep one order
 * and its attempts, persist each decision, and adopt an old attempt as current
 * when its capture is what paid the order.
 */
class Shop {
  order = freshOrder();
  attempts: PaymentSnapshot[] = [freshPayment()];
  current = 0;
  effects: OrderEffect[] = [];

  newAttempt(): number {
    this.attempts.push(freshPayment({ amount: this.order.total }));
    this.current = this.attempts.length - 1;
    return this.current;
  }

  deliver(attempt: number, fact: PaymentFact): Decision {
    const isCurrentAttempt = attempt === this.current;
    const d = decide(this.order, this.attempts[attempt]!, fact, { isCurrentAttempt });
    this.attempts[attempt] = d.payment;
    this.order = d.order;
    this.effects.push(...d.effects);
    if (!isCurrentAttempt && d.outcome === 'applied' && fact.type === 'captured') this.current = attempt;
    return d;
  }

  merchant(event: OrderEvent): boolean {
    const r = applyOrderEvent(this.order, event);
    if (!r.ok) return false;
    this.order = r.order;
    this.effects.push(...r.effects);
    return true;
  }
}

const count = (effects: readonly OrderEffect[], e: OrderEffect) => effects.filter((x) => x === e).length;

// --- concrete scenarios a merchant would notice ---------------------------------------

describe('scenarios', () => {
  test('konbini: awaiting → captured → paid, fulfilled exactly once', () => {
    const shop = new Shop();
    const a = shop.deliver(0, { type: 'awaiting_payment', amount: TOTAL });
    assert.equal(a.outcome, 'applied');
    assert.equal(shop.order.state, 'awaiting_payment');
    assert.deepEqual(a.effects, ['notify_payment_instructions']);

    const b = shop.deliver(0, captured());
    assert.equal(b.outcome, 'applied');
    assert.equal(shop.order.state, 'paid');
    assert.deepEqual(b.effects, ['commit_stock', 'fulfil', 'notify_paid']);
    assert.deepEqual(shop.order, { ...freshOrder(), state: 'paid', fulfilled: true, stockCommitted: true });
    assert.equal(count(shop.effects, 'fulfil'), 1);
  });

  test('webhook and browser return deliver the same capture: the second is a duplicate', () => {
    const shop = new Shop();
    const webhook = shop.deliver(0, captured());
    const browser = shop.deliver(0, captured());
    assert.equal(webhook.outcome, 'applied');
    assert.equal(browser.outcome, 'duplicate');
    assert.equal(browser.paymentChanged, false);
    assert.equal(browser.orderChanged, false);
    assert.deepEqual(browser.effects, []);
    assert.equal(count(shop.effects, 'fulfil'), 1);
  });

  test('a late authorization after capture is a duplicate; the order stays paid', () => {
    const shop = new Shop();
    shop.deliver(0, captured());
    const late = shop.deliver(0, { type: 'authorized', amount: TOTAL });
    assert.equal(late.outcome, 'duplicate');
    assert.equal(shop.order.state, 'paid');
    assert.equal(shop.attempts[0]!.state, 'captured');
  });

  test('partial refund 300 of 1000, then 700: partially_refunded, then refunded', () => {
    const shop = new Shop();
    shop.deliver(0, captured());
    const first = shop.deliver(0, { type: 'refunded', amount: 300, refundId: 're_1' });
    assert.equal(first.outcome, 'applied');
    assert.equal(shop.order.state, 'partially_refunded');
    assert.deepEqual(shop.attempts[0], { ...capturedPayment(), state: 'partially_refunded', refundedAmount: 300 });
    assert.deepEqual(first.effects, ['notify_refund']);

    const second = shop.deliver(0, { type: 'refunded', amount: 700, refundId: 're_2' });
    assert.equal(second.outcome, 'applied');
    assert.equal(shop.order.state, 'refunded');
    assert.deepEqual(shop.attempts[0], { ...capturedPayment(), state: 'refunded', refundedAmount: 1000 });
    assert.deepEqual(second.effects, ['notify_refund']);
  });

  test('a refund of 1200 on a 1000 yen payment is a conflict and holds the order', () => {
    const shop = new Shop();
    shop.deliver(0, captured());
    const d = shop.deliver(0, { type: 'refunded', amount: 1200, refundId: 're_1' });
    assert.equal(d.outcome, 'conflict');
    assert.equal(d.paymentChanged, false);
    assert.deepEqual(shop.attempts[0], capturedPayment());
    assert.equal(shop.order.state, 'on_hold');
    assert.deepEqual(d.effects, ['alert_hold']);
  });

  test('cancelling an old attempt after the new attempt paid leaves the order paid', () => {
    const shop = new Shop();
    shop.deliver(0, { type: 'awaiting_payment', amount: TOTAL }); // konbini slip issued
    const card = shop.newAttempt(); // customer switches to card
    shop.deliver(card, captured());
    const d = shop.deliver(0, { type: 'cancelled' });
    assert.equal(d.outcome, 'stale_attempt');
    assert.equal(d.paymentChanged, true);
    assert.equal(shop.attempts[0]!.state, 'cancelled');
    assert.equal(shop.order.state, 'paid');
    assert.deepEqual(d.effects, []);
    assert.equal(count(shop.effects, 'release_stock'), 0);
  });
});

// --- rule by rule ---------------------------------------------------------------------

describe('rules', () => {
  test('1: a duplicate fact changes nothing and returns the inputs', () => {
    const order = paidOrder();
    const payment = capturedPayment();
    const d = decide(order, payment, captured(), current);
    assert.equal(d.outcome, 'duplicate');
    assert.equal(d.order, order);
    assert.equal(d.payment, payment);
    assert.deepEqual(d.effects, []);
  });

  test('2: a payment conflict holds the order and leaves the payment as it was', () => {
    const d = decide(paidOrder(), capturedPayment(), { type: 'cancelled' }, current);
    assert.equal(d.outcome, 'conflict');
    assert.equal(d.paymentChanged, false);
    assert.deepEqual(d.payment, capturedPayment());
    assert.equal(d.order.state, 'on_hold');
    assert.equal(d.orderChanged, true);
    assert.deepEqual(d.effects, ['alert_hold']);
  });

  test('2: a conflict on an order that cannot be held alerts without moving it', () => {
    const order = freshOrder({ state: 'cancelled', stockReleased: true });
    const d = decide(order, freshPayment({ state: 'cancelled' }), captured(), current);
    assert.equal(d.outcome, 'conflict');
    assert.deepEqual(d.order, order);
    assert.equal(d.orderChanged, false);
    assert.deepEqual(d.effects, ['alert_hold']);
  });

  test('2: a conflict on an order already on hold does not alert again', () => {
    const d = decide(freshOrder({ state: 'on_hold', fulfilled: true, stockCommitted: true }), capturedPayment(), { type: 'expired' }, current);
    assert.equal(d.outcome, 'conflict');
    assert.equal(d.order.state, 'on_hold');
    assert.deepEqual(d.effects, []);
    assert.match(d.note, /already on hold/);
  });

  test('3: non-capture facts of a previous attempt move the payment but never the order', () => {
    const facts: PaymentFact[] = [
      { type: 'awaiting_payment', amount: TOTAL },
      { type: 'authorized', amount: TOTAL },
      { type: 'cancelled' },
      { type: 'expired' },
      { type: 'failed', reason: 'declined' },
    ];
    for (const state of ['pending_payment', 'awaiting_payment', 'authorized', 'paid', 'shipped'] as const) {
      for (const fact of facts) {
        const order = freshOrder({ state });
        const d = decide(order, freshPayment(), fact, stale);
        assert.equal(d.outcome, 'stale_attempt', `${state} + ${fact.type}`);
        assert.equal(d.paymentChanged, true);
        assert.deepEqual(d.order, order);
        assert.deepEqual(d.effects, []);
      }
    }
  });

  test('3: a refund on a previous attempt (e.g. refunding a double payment) does not refund the order', () => {
    const d = decide(paidOrder(), capturedPayment(), { type: 'refunded', amount: TOTAL, refundId: 're_dup' }, stale);
    assert.equal(d.outcome, 'stale_attempt');
    assert.equal(d.payment.state, 'refunded');
    assert.equal(d.order.state, 'paid');
  });

  test('3: a capture on a previous attempt of a paid order is a double payment: hold, no second fulfilment', () => {
    const d = decide(paidOrder(), freshPayment({ state: 'awaiting_payment' }), captured(), stale);
    assert.equal(d.outcome, 'conflict');
    assert.equal(d.payment.state, 'captured');
    assert.equal(d.paymentChanged, true);
    assert.equal(d.order.state, 'on_hold');
    assert.deepEqual(d.effects, ['alert_hold']);
    assert.match(d.note, /second payment/);
    assert.match(d.note, /refund/);
  });

  test('3: a capture on a previous attempt of an unpaid order is money we have: the order is paid', () => {
    for (const state of ['pending_payment', 'awaiting_payment', 'authorized'] as const) {
      const d = decide(freshOrder({ state }), freshPayment({ state: 'awaiting_payment' }), captured(), stale);
      assert.equal(d.outcome, 'applied', state);
      assert.equal(d.order.state, 'paid');
      assert.deepEqual(d.effects, ['commit_stock', 'fulfil', 'notify_paid']);
    }
  });

  test('4: an amount that differs from the order total records the payment and holds the order', () => {
    for (const fact of [
      { type: 'awaiting_payment', amount: 999 },
      { type: 'authorized', amount: 1001 },
      { type: 'captured', amount: 500 },
    ] as PaymentFact[]) {
      const d = decide(freshOrder(), freshPayment(), fact, current);
      assert.equal(d.outcome, 'amount_mismatch', fact.type);
      assert.equal(d.paymentChanged, true);
      assert.equal(d.payment.state, fact.type);
      assert.equal(d.order.state, 'on_hold');
      assert.deepEqual(d.effects, ['alert_hold']);
      assert.equal(d.order.fulfilled, false);
      assert.equal(d.order.stockCommitted, false);
    }
  });

  test('5: a failed payment leaves the order open for a new attempt', () => {
    const shop = new Shop();
    const d = shop.deliver(0, { type: 'failed', reason: 'card_declined' });
    assert.equal(d.outcome, 'applied');
    assert.equal(d.orderChanged, false);
    assert.equal(shop.order.state, 'pending_payment');
    assert.equal(shop.attempts[0]!.state, 'failed');

    const retry = shop.newAttempt();
    assert.equal(shop.deliver(retry, captured()).outcome, 'applied');
    assert.equal(shop.order.state, 'paid');
  });

  test('5: a retry after a failed konbini attempt issues new instructions without holding', () => {
    const shop = new Shop();
    shop.deliver(0, { type: 'awaiting_payment', amount: TOTAL });
    shop.deliver(0, { type: 'failed', reason: 'gateway_error' });
    const retry = shop.newAttempt();
    const d = shop.deliver(retry, { type: 'awaiting_payment', amount: TOTAL });
    assert.equal(d.outcome, 'applied');
    assert.equal(shop.order.state, 'awaiting_payment');
    assert.deepEqual(d.effects, ['notify_payment_instructions']);
  });

  test('5: payment captured on a cancelled order (stock already released) alerts and never commits stock', () => {
    const order = freshOrder({ state: 'cancelled', stockReleased: true });
    const d = decide(order, freshPayment({ state: 'awaiting_payment' }), captured(), current);
    assert.equal(d.outcome, 'conflict');
    assert.equal(d.payment.state, 'captured');
    assert.equal(d.paymentChanged, true);
    assert.deepEqual(d.order, order);
    assert.deepEqual(d.effects, ['alert_hold']);
  });

  test('5: a refund on a held order is recorded and the order stays held', () => {
    const held = freshOrder({ state: 'on_hold', fulfilled: true, stockCommitted: true });
    const d = decide(held, capturedPayment(), { type: 'refunded', amount: 300, refundId: 're_1' }, current);
    assert.equal(d.outcome, 'applied');
    assert.equal(d.payment.state, 'partially_refunded');
    assert.equal(d.order.state, 'on_hold');
    assert.deepEqual(d.effects, []);
  });

  test('5: a payment cancelled before money moved cancels the order and releases stock once', () => {
    const d = decide(freshOrder({ state: 'authorized' }), freshPayment({ state: 'authorized' }), { type: 'cancelled' }, current);
    assert.equal(d.outcome, 'applied');
    assert.equal(d.order.state, 'cancelled');
    assert.deepEqual(d.effects, ['release_stock', 'notify_cancelled']);
    assert.equal(d.order.stockReleased, true);

    const already = decide(freshOrder({ stockReleased: true }), freshPayment(), { type: 'expired' }, current);
    assert.deepEqual(already.effects, []);
  });

  test('6: releasing a held, already fulfilled order to paid does not fulfil or commit again', () => {
    const shop = new Shop();
    shop.deliver(0, captured());
    shop.deliver(0, { type: 'refunded', amount: 5000, refundId: 'bogus' }); // conflict → on_hold
    assert.equal(shop.order.state, 'on_hold');
    assert.ok(shop.merchant('release_to_paid'), 'shop.merchant(\'release_to_paid\')');
    assert.equal(shop.order.state, 'paid');
    assert.equal(count(shop.effects, 'fulfil'), 1);
    assert.equal(count(shop.effects, 'commit_stock'), 1);
  });

  test('6: releasing an amount-mismatch hold to paid fulfils for the first time', () => {
    const shop = new Shop();
    shop.deliver(0, captured(900));
    assert.equal(shop.order.state, 'on_hold');
    const r = applyOrderEvent(shop.order, 'release_to_paid');
    assert.ok(r.ok, 'r.ok');
    assert.deepEqual(r.effects, ['commit_stock', 'fulfil', 'notify_paid']);
  });

  test('applyOrderEvent rejects events the table does not allow', () => {
    assert.deepEqual(applyOrderEvent(paidOrder(), 'cancel'), { ok: false, reason: 'order in state paid cannot take event cancel' });
  });
});

// --- properties -----------------------------------------------------------------------

// Weighted towards the happy path so that sequences get far enough (paid, shipped,
// refunded) for the interesting late, duplicate and stale facts to matter.
const amountArb = fc.oneof({ arbitrary: fc.constant(TOTAL), weight: 8 }, { arbitrary: fc.constantFrom(999, 1500), weight: 1 });
const factArb: fc.Arbitrary<PaymentFact> = fc.oneof(
  { arbitrary: fc.record({ type: fc.constant('awaiting_payment' as const), amount: amountArb }), weight: 2 },
  { arbitrary: fc.record({ type: fc.constant('authorized' as const), amount: amountArb }), weight: 2 },
  { arbitrary: fc.record({ type: fc.constant('captured' as const), amount: amountArb }), weight: 4 },
  {
    arbitrary: fc.record({
      type: fc.constant('refunded' as const),
      amount: fc.oneof(fc.constantFrom(300, 700, 1000, 1200), fc.integer({ min: 1, max: 1500 })),
      refundId: fc.string({ minLength: 1, maxLength: 8 }),
    }),
    weight: 3,
  },
  { arbitrary: fc.record({ type: fc.constant('failed' as const), reason: fc.constantFrom('declined', 'timeout') }), weight: 1 },
  { arbitrary: fc.constant({ type: 'cancelled' as const }), weight: 1 },
  { arbitrary: fc.constant({ type: 'expired' as const }), weight: 1 },
);

type Command =
  | { kind: 'fact'; attempt: number; fact: PaymentFact }
  | { kind: 'replay'; back: number }
  | { kind: 'new_attempt' }
  | { kind: 'merchant'; event: OrderEvent };

const commandArb: fc.Arbitrary<Command> = fc.oneof(
  // attempt -1 means "whichever attempt is current"; others are often stale.
  {
    arbitrary: fc.record({
      kind: fc.constant('fact' as const),
      attempt: fc.oneof({ arbitrary: fc.constant(-1), weight: 2 }, { arbitrary: fc.nat(3), weight: 1 }),
      fact: factArb,
    }),
    weight: 8,
  },
  { arbitrary: fc.record({ kind: fc.constant('replay' as const), back: fc.nat(10) }), weight: 3 },
  { arbitrary: fc.constant({ kind: 'new_attempt' as const }), weight: 2 },
  {
    arbitrary: fc.record({
      kind: fc.constant('merchant' as const),
      event: fc.constantFrom<OrderEvent>('ship', 'ship', 'complete', 'complete', 'cancel', 'expire', 'release_to_paid', 'release_to_cancelled'),
    }),
    weight: 2,
  },
);

const PAID_OR_LATER = new Set(['paid', 'shipped', 'completed', 'partially_refunded', 'refunded']);

function assertStepIsATableRow(before: OrderSnapshot, after: OrderSnapshot, effects: readonly OrderEffect[]): void {
  if (before.state === after.state && effects.length === 0) return;
  if (before.state === after.state && effects.length === 1 && effects[0] === 'alert_hold' && !transitionOrder(before.state, 'hold').ok) {
    return; // an order that cannot be held is only alerted about
  }
  const row = ORDER_TRANSITIONS.find((r) => r.from === before.state && r.to === after.state && effects.every((e) => r.effects.includes(e)));
  assert.ok(row, `${before.state} → ${after.state} with [${effects.join(', ')}] is not a table row`);
}

test('property: random fact sequences through decide keep every promise to the merchant', () => {
  fc.assert(
    fc.property(fc.array(commandArb, { maxLength: 30, size: 'max' }), (commands) => {
      const shop = new Shop();
      const delivered: Array<{ attempt: number; fact: PaymentFact }> = [];
      let everPaid = false;

      for (const command of commands) {
        const before = shop.order;
        let step: { attempt: number; fact: PaymentFact } | undefined;
        if (command.kind === 'new_attempt') shop.newAttempt();
        else if (command.kind === 'merchant') shop.merchant(command.event);
        else if (command.kind === 'fact') {
          const attempt = command.attempt < 0 ? shop.current : command.attempt % shop.attempts.length;
          step = { attempt, fact: command.fact };
        }
        else if (delivered.length > 0) step = delivered[Math.max(0, delivered.length - 1 - command.back)];

        const effectsBefore = shop.effects.length;
        let d: Decision | undefined;
        if (step !== undefined) {
          const wasCurrent = step.attempt === shop.current;
          d = shop.deliver(step.attempt, step.fact);
          delivered.push(step);

          if (d.outcome === 'duplicate' || d.outcome === 'stale_attempt') assert.deepEqual(d.order, before);
          if (d.outcome === 'duplicate') assert.equal(d.paymentChanged, false);
          assert.equal(d.orderChanged, JSON.stringify(d.order) !== JSON.stringify(before));

          // Money never reaches "paid" unless exactly the order total was captured.
          if (d.order.state === 'paid' && before.state !== 'paid') {
            assert.ok(step.fact.type === 'captured' && step.fact.amount === TOTAL, JSON.stringify(step.fact));
          }
          // A paid order is never cancelled or expired by a payment fact, least of all a stale one.
          // (A human may still release a held order to cancelled; that is not a payment fact.)
          if (everPaid && d.order.state !== before.state) {
            assert.ok(d.order.state !== 'cancelled' && d.order.state !== 'expired', d.note);
          }
          if (!wasCurrent && (step.fact.type === 'cancelled' || step.fact.type === 'expired') && PAID_OR_LATER.has(before.state)) {
            // It may be held (a cancel on a captured payment is a money conflict), but never cancelled.
            assert.ok(d.order.state === before.state || d.order.state === 'on_hold', d.note);
          }
        }

        const stepEffects = shop.effects.slice(effectsBefore);
        assert.ok((ORDER_STATES as readonly string[]).includes(shop.order.state), '(ORDER_STATES as readonly string[]).includes(shop.order.state)');
        assertStepIsATableRow(before, shop.order, stepEffects);
        if (d !== undefined) assert.deepEqual(d.effects, stepEffects);

        assert.ok(count(shop.effects, 'fulfil') <= 1, 'fulfilled twice');
        assert.ok(count(shop.effects, 'commit_stock') <= 1, 'stock committed twice');
        assert.ok(count(shop.effects, 'release_stock') <= 1, 'stock released twice');
        assert.ok(count(shop.effects, 'commit_stock') + count(shop.effects, 'release_stock') <= 1, 'stock both committed and released');
        assert.ok(!(shop.order.stockCommitted && shop.order.stockReleased), '!(shop.order.stockCommitted && shop.order.stockReleased)');
        assert.equal(shop.order.fulfilled, count(shop.effects, 'fulfil') === 1);
        if (shop.order.fulfilled) assert.ok(shop.order.stockCommitted, 'fulfilled without committed stock');
        for (const p of shop.attempts) assert.ok(p.refundedAmount <= p.capturedAmount, 'refunded more than captured');

        if (d !== undefined && PAID_OR_LATER.has(shop.order.state)) everPaid = true;
        if (command.kind === 'merchant' && shop.order.state === 'paid') everPaid = true;
      }
    }),
    { numRuns: 1000 },
  );
});

test('property: the same fact delivered twice in a row is a duplicate the second time (non-refunds)', () => {
  fc.assert(
    fc.property(fc.array(commandArb, { maxLength: 20, size: 'max' }), factArb.filter((f) => f.type !== 'refunded'), (commands, fact) => {
      const shop = new Shop();
      for (const c of commands) {
        if (c.kind === 'fact') shop.deliver(c.attempt < 0 ? shop.current : c.attempt % shop.attempts.length, c.fact);
        else if (c.kind === 'new_attempt') shop.newAttempt();
      }
      const first = shop.deliver(shop.current, fact);
      const orderAfterFirst = shop.order;
      const second = shop.deliver(shop.current, fact);
      if (first.outcome !== 'conflict') {
        assert.equal(second.outcome, 'duplicate', `${first.outcome} then ${second.outcome}: ${second.note}`);
        assert.deepEqual(shop.order, orderAfterFirst);
        assert.deepEqual(second.effects, []);
      }
    }),
    { numRuns: 500 },
  );
});
