/**
 * The order lifecycle as an explicit transition table.
 *
 * The table is the single source of truth: `transitionOrder` only looks rows up,
 * so what an order can do is readable (and testable) in one place. Effects are
 * what the row *asks for*; whether an effect is actually performed again (stock,
 * fulfilment) is decided against the order's flags in `decide.ts`.
 */

export const ORDER_STATES = [
  'pending_payment',
  'awaiting_payment',
  'authorized',
  'paid',
  'shipped',
  'completed',
  'cancelled',
  'expired',
  'refunded',
  'partially_refunded',
  'on_hold',
] as const;
export type OrderState = typeof ORDER_STATES[number];

export type OrderEvent =
  | 'payment_awaiting'
  | 'payment_authorized'
  | 'payment_captured'
  | 'payment_cancelled'
  | 'payment_expired'
  | 'refund_partial'
  | 'refund_full'
  | 'refund_covered'
  | 'hold'
  | 'release_to_paid'
  | 'release_to_cancelled'
  | 'ship'
  | 'complete'
  | 'cancel'
  | 'expire';

export type OrderEffect =
  | 'fulfil'
  | 'commit_stock'
  | 'release_stock'
  | 'notify_payment_instructions'
  | 'notify_paid'
  | 'notify_refund'
  | 'notify_cancelled'
  | 'notify_shipped'
  | 'alert_hold';

export interface OrderTransition {
  readonly from: OrderState;
  readonly event: OrderEvent;
  readonly to: OrderState;
  readonly effects: readonly OrderEffect[];
}

const PAID: readonly OrderEffect[] = ['commit_stock', 'fulfil', 'notify_paid'];
const CANCELLED: readonly OrderEffect[] = ['release_stock', 'notify_cancelled'];
const REFUND: readonly OrderEffect[] = ['notify_refund'];
const HOLD: readonly OrderEffect[] = ['alert_hold'];
const NONE: readonly OrderEffect[] = [];

export const ORDER_TRANSITIONS: ReadonlyArray<OrderTransition> = Object.freeze([
  { from: 'pending_payment', event: 'payment_awaiting', to: 'awaiting_payment', effects: ['notify_payment_instructions'] },
  { from: 'pending_payment', event: 'payment_authorized', to: 'authorized', effects: NONE },
  { from: 'pending_payment', event: 'payment_captured', to: 'paid', effects: PAID },
  { from: 'pending_payment', event: 'payment_cancelled', to: 'cancelled', effects: CANCELLED },
  { from: 'pending_payment', event: 'payment_expired', to: 'expired', effects: ['release_stock'] },
  { from: 'pending_payment', event: 'cancel', to: 'cancelled', effects: CANCELLED },
  { from: 'pending_payment', event: 'expire', to: 'expired', effects: ['release_stock'] },
  { from: 'pending_payment', event: 'hold', to: 'on_hold', effects: HOLD },

  // A retry after a failed attempt (new konbini slip, new bank transfer) needs fresh instructions.
  { from: 'awaiting_payment', event: 'payment_awaiting', to: 'awaiting_payment', effects: ['notify_payment_instructions'] },
  { from: 'awaiting_payment', event: 'payment_authorized', to: 'authorized', effects: NONE },
  { from: 'awaiting_payment', event: 'payment_captured', to: 'paid', effects: PAID },
  { from: 'awaiting_payment', event: 'payment_cancelled', to: 'cancelled', effects: CANCELLED },
  // The customer was told to pay at the konbini; they must hear that the slip is void.
  { from: 'awaiting_payment', event: 'payment_expired', to: 'expired', effects: CANCELLED },
  { from: 'awaiting_payment', event: 'cancel', to: 'cancelled', effects: CANCELLED },
  { from: 'awaiting_payment', event: 'hold', to: 'on_hold', effects: HOLD },

  // After an authorization fails (e.g. capture refused) the customer may retry by card or switch to konbini.
  { from: 'authorized', event: 'payment_awaiting', to: 'awaiting_payment', effects: ['notify_payment_instructions'] },
  { from: 'authorized', event: 'payment_authorized', to: 'authorized', effects: NONE },
  { from: 'authorized', event: 'payment_captured', to: 'paid', effects: PAID },
  { from: 'authorized', event: 'payment_cancelled', to: 'cancelled', effects: CANCELLED },
  { from: 'authorized', event: 'payment_expired', to: 'expired', effects: ['release_stock'] },
  { from: 'authorized', event: 'cancel', to: 'cancelled', effects: CANCELLED },
  { from: 'authorized', event: 'hold', to: 'on_hold', effects: HOLD },

  { from: 'paid', event: 'ship', to: 'shipped', effects: ['notify_shipped'] },
  { from: 'paid', event: 'refund_partial', to: 'partially_refunded', effects: REFUND },
  { from: 'paid', event: 'refund_full', to: 'refunded', effects: REFUND },
  // An order made smaller (order-edit.ts) gets the difference back and still holds what it paid for.
  { from: 'paid', event: 'refund_covered', to: 'paid', effects: REFUND },
  { from: 'paid', event: 'hold', to: 'on_hold', effects: HOLD },

  { from: 'shipped', event: 'complete', to: 'completed', effects: NONE },
  { from: 'shipped', event: 'refund_partial', to: 'partially_refunded', effects: REFUND },
  { from: 'shipped', event: 'refund_full', to: 'refunded', effects: REFUND },
  { from: 'shipped', event: 'refund_covered', to: 'shipped', effects: REFUND },
  { from: 'shipped', event: 'hold', to: 'on_hold', effects: HOLD },

  // Completed orders can still be refunded (returns, goodwill), so completed is not final.
  { from: 'completed', event: 'refund_partial', to: 'partially_refunded', effects: REFUND },
  { from: 'completed', event: 'refund_full', to: 'refunded', effects: REFUND },
  { from: 'completed', event: 'refund_covered', to: 'completed', effects: REFUND },

  { from: 'partially_refunded', event: 'refund_partial', to: 'partially_refunded', effects: REFUND },
  { from: 'partially_refunded', event: 'refund_full', to: 'refunded', effects: REFUND },
  { from: 'partially_refunded', event: 'hold', to: 'on_hold', effects: HOLD },

  // Releasing to paid asks for fulfilment again; decide.ts suppresses it if the order was already fulfilled.
  { from: 'on_hold', event: 'release_to_paid', to: 'paid', effects: PAID },
  { from: 'on_hold', event: 'release_to_cancelled', to: 'cancelled', effects: CANCELLED },
  // Money moves on a held order are recorded, but the order stays held until a human decides.
  { from: 'on_hold', event: 'refund_partial', to: 'on_hold', effects: NONE },
  { from: 'on_hold', event: 'refund_full', to: 'on_hold', effects: NONE },
  { from: 'on_hold', event: 'hold', to: 'on_hold', effects: NONE },
] satisfies OrderTransition[]);

/** States no event leaves. `completed` is deliberately absent: it can still be refunded. */
export const FINAL_ORDER_STATES: ReadonlySet<OrderState> = new Set<OrderState>(['cancelled', 'expired', 'refunded']);

const byFromAndEvent = new Map<string, OrderTransition>(
  ORDER_TRANSITIONS.map((row) => [`${row.from}:${row.event}`, row]),
);

export function transitionOrder(
  state: OrderState,
  event: OrderEvent,
): { ok: true; to: OrderState; effects: readonly OrderEffect[] } | { ok: false; reason: string } {
  const row = byFromAndEvent.get(`${state}:${event}`);
  if (row === undefined) return { ok: false, reason: `order in state ${state} cannot take event ${event}` };
  return { ok: true, to: row.to, effects: row.effects };
}
