import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  FINAL_ORDER_STATES,
  ORDER_STATES,
  ORDER_TRANSITIONS,
  transitionOrder,
  type OrderEffect,
  type OrderEvent,
  type OrderState,
} from '../../src/commerce/order-machine.js';

const ORDER_EVENTS: readonly OrderEvent[] = [
  'payment_awaiting', 'payment_authorized', 'payment_captured', 'payment_cancelled', 'payment_expired',
  'refund_partial', 'refund_full', 'refund_covered', 'hold', 'release_to_paid', 'release_to_cancelled',
  'ship', 'complete', 'cancel', 'expire',
];

const PAID: OrderEffect[] = ['commit_stock', 'fulfil', 'notify_paid'];
const CANCELLED: OrderEffect[] = ['release_stock', 'notify_cancelled'];

/**
 * The specification, written out independently of the implementation's table,
 * so an accidental edit of ORDER_TRANSITIONS fails here.
 */
const SPEC: Partial<Record<OrderState, Partial<Record<OrderEvent, [OrderState, OrderEffect[]]>>>> = {
  pending_payment: {
    payment_awaiting: ['awaiting_payment', ['notify_payment_instructions']],
    payment_authorized: ['authorized', []],
    payment_captured: ['paid', PAID],
    payment_cancelled: ['cancelled', CANCELLED],
    payment_expired: ['expired', ['release_stock']],
    cancel: ['cancelled', CANCELLED],
    expire: ['expired', ['release_stock']],
    hold: ['on_hold', ['alert_hold']],
  },
  awaiting_payment: {
    payment_awaiting: ['awaiting_payment', ['notify_payment_instructions']], // retry with a new slip
    payment_authorized: ['authorized', []],
    payment_captured: ['paid', PAID],
    payment_cancelled: ['cancelled', CANCELLED],
    payment_expired: ['expired', CANCELLED],
    cancel: ['cancelled', CANCELLED],
    hold: ['on_hold', ['alert_hold']],
  },
  authorized: {
    payment_awaiting: ['awaiting_payment', ['notify_payment_instructions']], // retry after a failed authorization
    payment_authorized: ['authorized', []], // retry after a failed authorization
    payment_captured: ['paid', PAID],
    payment_cancelled: ['cancelled', CANCELLED],
    payment_expired: ['expired', ['release_stock']],
    cancel: ['cancelled', CANCELLED],
    hold: ['on_hold', ['alert_hold']],
  },
  paid: {
    ship: ['shipped', ['notify_shipped']],
    refund_partial: ['partially_refunded', ['notify_refund']],
    refund_full: ['refunded', ['notify_refund']],
    refund_covered: ['paid', ['notify_refund']], // the money kept still pays for the order
    hold: ['on_hold', ['alert_hold']],
  },
  shipped: {
    complete: ['completed', []],
    refund_partial: ['partially_refunded', ['notify_refund']],
    refund_full: ['refunded', ['notify_refund']],
    refund_covered: ['shipped', ['notify_refund']], // the money kept still pays for the order
    hold: ['on_hold', ['alert_hold']],
  },
  completed: {
    refund_partial: ['partially_refunded', ['notify_refund']],
    refund_full: ['refunded', ['notify_refund']],
    refund_covered: ['completed', ['notify_refund']], // the money kept still pays for the order
  },
  partially_refunded: {
    refund_partial: ['partially_refunded', ['notify_refund']],
    refund_full: ['refunded', ['notify_refund']],
    hold: ['on_hold', ['alert_hold']],
  },
  on_hold: {
    release_to_paid: ['paid', PAID],
    release_to_cancelled: ['cancelled', CANCELLED],
    refund_partial: ['on_hold', []],
    refund_full: ['on_hold', []],
    hold: ['on_hold', []],
  },
};

test('every (state, event) pair answers exactly as the specification says', () => {
  let allowed = 0;
  for (const state of ORDER_STATES) {
    for (const event of ORDER_EVENTS) {
      const expected = SPEC[state]?.[event];
      const actual = transitionOrder(state, event);
      if (expected === undefined) {
        assert.deepEqual(actual, { ok: false, reason: `order in state ${state} cannot take event ${event}` }, `${state} + ${event}`);
      } else {
        allowed++;
        assert.deepEqual(actual, { ok: true, to: expected[0], effects: expected[1] }, `${state} + ${event}`);
      }
    }
  }
  assert.equal(allowed, ORDER_TRANSITIONS.length, 'the table has no rows beyond the specification');
});

test('every table row agrees with transitionOrder', () => {
  for (const row of ORDER_TRANSITIONS) {
    assert.deepEqual(transitionOrder(row.from, row.event), { ok: true, to: row.to, effects: row.effects });
  }
});

test('table rows only name declared states and events', () => {
  const states = new Set<string>(ORDER_STATES);
  const events = new Set<string>(ORDER_EVENTS);
  for (const row of ORDER_TRANSITIONS) {
    assert.ok(states.has(row.from), `unknown from-state ${row.from}`);
    assert.ok(states.has(row.to), `unknown to-state ${row.to}`);
    assert.ok(events.has(row.event), `unknown event ${row.event}`);
  }
});

test('there is at most one row per (from, event)', () => {
  const seen = new Set<string>();
  for (const row of ORDER_TRANSITIONS) {
    const key = `${row.from}:${row.event}`;
    assert.ok(!seen.has(key), `duplicate row ${key}`);
    seen.add(key);
  }
});

test('no row asks to both commit and release stock', () => {
  for (const row of ORDER_TRANSITIONS) {
    assert.ok(!(row.effects.includes('commit_stock') && row.effects.includes('release_stock')), `${row.from} + ${row.event}`);
  }
});

test('final states are exactly those with no outgoing rows; completed can still be refunded', () => {
  assert.deepEqual([...FINAL_ORDER_STATES].sort(), ['cancelled', 'expired', 'refunded']);
  for (const state of ORDER_STATES) {
    const outgoing = ORDER_TRANSITIONS.filter((r) => r.from === state).length;
    assert.equal(outgoing === 0, FINAL_ORDER_STATES.has(state), state);
  }
  assert.deepEqual(transitionOrder('completed', 'refund_full'), { ok: true, to: 'refunded', effects: ['notify_refund'] });
});

test('every state is reachable from pending_payment', () => {
  const reached = new Set<OrderState>(['pending_payment']);
  let grew = true;
  while (grew) {
    grew = false;
    for (const row of ORDER_TRANSITIONS) {
      if (reached.has(row.from) && !reached.has(row.to)) {
        reached.add(row.to);
        grew = true;
      }
    }
  }
  assert.deepEqual([...reached].sort(), [...ORDER_STATES].sort());
});

test('only the money-receiving rows ask for fulfilment', () => {
  const fulfilling = ORDER_TRANSITIONS.filter((r) => r.effects.includes('fulfil')).map((r) => `${r.from}:${r.event}`);
  assert.deepEqual(fulfilling.sort(), [
    'authorized:payment_captured',
    'awaiting_payment:payment_captured',
    'on_hold:release_to_paid',
    'pending_payment:payment_captured',
  ]);
});
