import { sql, type Insertable } from 'kysely';
import { z } from 'zod';
import type { Context } from '../context.js';
import { forUpdate, type Tx } from '../db/index.js';
import { insertRow, insertRows } from '../db/insert.js';
import { prepared } from '../db/prepared.js';
import type { Database, Order } from '../db/schema.js';
import { KessaiError, notFound, parseInput, type FieldProblem, invalid } from '../errors.js';
import { derivedSecret, hashToken, newId, nowIso, readableNumber } from '../ids.js';
import { enqueue } from '../jobs/outbox.js';
import { linkAfterPurchase } from './chekicha-link.js';
import { fulfilmentLines } from './fulfilment-lines.js';
import { applyOrderEvent, type OrderSnapshot } from './decide.js';
import type { OrderEffect, OrderEvent, OrderState } from './order-machine.js';
import { allocateSerialCodes, holdForMissingCodes, orderSerialCodes, releaseUndeliveredCodes, type SerialCodeView } from './serial-codes.js';
import { issueTickets, orderTickets, voidTickets, type TicketView } from './tickets.js';
import { startSubscriptions } from './subscriptions.js';

export const PREFECTURES = [
  '北海道', '青森県', '岩手県', '宮城県', '秋田県', '山形県', '福島県', '茨城県', '栃木県', '群馬県', '埼玉県', '千葉県',
  '東京都', '神奈川県', '新潟県', '富山県', '石川県', '福井県', '山梨県', '長野県', '岐阜県', '静岡県', '愛知県', '三重県',
  '滋賀県', '京都府', '大阪府', '兵庫県', '奈良県', '和歌山県', '鳥取県', '島根県', '岡山県', '広島県', '山口県', '徳島県',
  '香川県', '愛媛県', '高知県', '福岡県', '佐賀県', '長崎県', '熊本県', '大分県', '宮崎県', '鹿児島県', '沖縄県',
] as const;

/** The largest order kessai takes: amounts are stored as 32-bit integers with headroom. */
export const MAX_ORDER_TOTAL = 100_000_000;

// The checkout pages show these reasons next to their fields, and the API names them with the field:
// "日本語 / English", as the account and inquiry forms do.
const atMost = (max: number) => ({ error: `${max}文字以内で入力してください / must be at most ${max} characters` });
const nonEmpty = (max: number) => z.string().trim().min(1, { error: '入力してください / must not be empty' }).max(max, atMost(max));
const phone = z
  .string()
  // NFKC: full-width digits (０３) typed on a Japanese keyboard are digits.
  .transform((s) => s.normalize('NFKC').replace(/[-‐－ー\s]/g, ''))
  .pipe(z.string().regex(/^0\d{9,10}$/, { error: '電話番号の形式ではありません（例 03-1234-5678）/ must be a Japanese phone number such as 03-1234-5678' }));

export const addressInput = z.strictObject({
  name: nonEmpty(100),
  postcode: z
    .string()
    .transform((s) => s.normalize('NFKC').replace(/[-‐－ー\s]/g, ''))
    .pipe(z.string().regex(/^\d{7}$/, { error: '郵便番号は7桁の数字で入力してください（例 100-0001）/ must be a 7-digit postcode such as 100-0001' })),
  prefecture: z.enum(PREFECTURES, { error: '47都道府県のいずれかを入力してください（例 東京都、大阪府、北海道）/ must be one of the 47 prefectures, written as 東京都, 大阪府, 北海道 …' }),
  city: nonEmpty(100),
  line1: nonEmpty(200),
  line2: z.string().trim().max(200, atMost(200)).optional(),
  phone,
});

/**
 * An order's lines as callers send them, SKU and quantity; `least` is the smallest quantity a line
 * may ask for (1 at checkout; 0 in an order edit, where it removes the line).
 */
export function orderLinesInput(least: 0 | 1) {
  return z
    .array(
      z.strictObject({
        sku: z.string().min(1, { error: 'must not be empty' }).max(64),
        quantity: z
          .number({ error: 'must be a number' })
          .int({ error: 'must be a whole number' })
          .min(least, { error: least === 0 ? 'must be 0 (remove the line) or more' : 'must be at least 1' })
          .max(99, { error: 'must be at most 99' }),
      }),
    )
    .min(1, { error: 'must contain at least one line' })
    .max(50, { error: 'must contain at most 50 lines' });
}

export const orderInput = z.strictObject({
  shop: z.string().min(1, { error: 'must not be empty' }).max(40),
  customer: z.strictObject({
    email: z.email({ error: 'メールアドレスの形式ではありません / must be an email address such as taro@example.jp' }).max(254, atMost(254)),
    name: nonEmpty(100),
    nameKana: z.string().trim().max(100, atMost(100)).optional(),
    phone: phone.optional(),
  }),
  shippingAddress: addressInput.optional(),
  lines: orderLinesInput(1),
  payment: z.strictObject({
    provider: z.string().min(1, { error: 'must not be empty' }).max(20),
    method: z.string().min(1).max(30).optional(),
  }),
});
export type OrderInput = z.input<typeof orderInput>;

/**
 * A number a customer can read out on the phone: K + JST date + 8 characters without look-alikes
 * (32^8 per day: a collision is a one-in-millions event even on a flash-sale day, and is retried).
 */
function orderNumber(now: Date): string {
  return readableNumber('K', now);
}

/** Tax included in a tax-inclusive amount, rounded down once per rate (the invoice rule). */
export function includedTax(amount: number, rate: number): number {
  return Math.floor((amount * rate) / (100 + rate));
}

/** An order's money from its lines (tax-inclusive amounts): at checkout, and again when an operator edits it. */
export function orderTotals(lines: readonly { amount: number; taxRate: number }[], shippingFee: number): { subtotal: number; total: number; tax10: number; tax8: number } {
  const subtotal = lines.reduce((sum, l) => sum + l.amount, 0);
  const byRate = (rate: number) => lines.filter((l) => l.taxRate === rate).reduce((sum, l) => sum + l.amount, 0);
  return { subtotal, total: subtotal + shippingFee, tax10: includedTax(byRate(10), 10), tax8: includedTax(byRate(8), 8) };
}

export interface CreatedOrder {
  order: Order;
  token: string;
  attemptId: string;
  /** The checkout key had made this order already: it is answered again, nothing new was made. */
  replayed?: boolean;
}

/**
 * Creates the order, its lines and address, reserves stock and opens the first payment attempt in
 * one transaction. Stock is reserved with a conditional UPDATE per SKU: the database decides, so two
 * checkouts can never both take the last unit, and a failure anywhere rolls everything back.
 */
export interface CreateOrderOptions {
  /** Runs inside the order's transaction, after the order is written (a subscription renewal records itself). */
  within?: (tx: Tx, order: Order) => Promise<void>;
  /**
   * The checkout request's own key (an API client's Idempotency-Key, the shop front's confirm
   * form): sent again, it answers the order it made the first time. `request`: a digest of what
   * was asked, so the key cannot be reused for another order.
   */
  checkoutKey?: { key: string; request: string };
}

/** The checkout key was taken by an earlier request: its order is the answer. */
class CheckoutKeyTaken extends Error {
  constructor(readonly orderId: string) {
    super('checkout key taken');
  }
}

/** The checkout's SKUs, by code, of active products (SQL built once: docs/benchmarks.md §1). */
const checkoutSkus = prepared('checkout skus', (db, p: { shop: string; codes: readonly string[] }) =>
  db
    .selectFrom('skus')
    .innerJoin('products', 'products.id', 'skus.product_id')
    .select(['skus.id', 'skus.code', 'skus.price', 'products.name', 'products.kind', 'products.jan_code', 'products.tax_rate'])
    .where('skus.shop_id', '=', p.shop)
    .where('skus.code', 'in', p.codes)
    .where('products.active', '=', 1),
);

/** Reserves stock with one conditional UPDATE: the database decides, never a read-then-write. */
const reserveStock = prepared('reserve stock', (db, p: { skuId: string; quantity: number }) =>
  db
    .updateTable('skus')
    .set({ reserved: sql`reserved + ${p.quantity}` })
    .where('id', '=', p.skuId)
    .where(sql<boolean>`on_hand - reserved >= ${p.quantity}`),
);

export async function createOrder(ctx: Context, input: unknown, opts: CreateOrderOptions = {}): Promise<CreatedOrder> {
  return createValidOrder(ctx, parseInput(orderInput, input), opts);
}

export type ValidOrderInput = z.output<typeof orderInput>;

/** createOrder for input already parsed with `orderInput` (the checkout parses it once, up front). */
export async function createValidOrder(ctx: Context, o: ValidOrderInput, opts: CreateOrderOptions = {}): Promise<CreatedOrder> {
  // One line per SKU: two lines of the same SKU must be checked against stock together.
  const wanted = new Map<string, number>();
  for (const line of o.lines) wanted.set(line.sku, (wanted.get(line.sku) ?? 0) + line.quantity);

  const now = new Date();
  const orderId = newId('ord');
  const token = derivedSecret(ctx.config.masterKey, orderLinkPurpose(orderId));
  const attemptId = newId('pay');
  const expiresAt = nowIso(new Date(now.getTime() + ctx.config.reservationTtlSeconds * 1000));

  let order: Order;
  try {
    order = await ctx.db.transaction().execute(async (tx) => {
      const skus = (await checkoutSkus(tx, { shop: o.shop, codes: [...wanted.keys()] })).rows;
      const byCode = new Map(skus.map((s) => [s.code, s]));
      const unknown: FieldProblem[] = o.lines.flatMap((l, i) =>
        byCode.has(l.sku) ? [] : [{ field: `lines.${i}.sku`, reason: `no product "${l.sku}" in shop "${o.shop}"` }],
      );
      if (unknown.length > 0) {
        // Only now, off the common path: is it the products or the whole shop that is missing?
        const shop = await tx.selectFrom('shops').select('id').where('id', '=', o.shop).executeTakeFirst();
        throw invalid(shop ? unknown : [{ field: 'shop', reason: `shop "${o.shop}" does not exist` }]);
      }
      const needsShipping = skus.some((s) => s.kind === 'physical');
      if (needsShipping && !o.shippingAddress) {
        throw invalid([{ field: 'shippingAddress', reason: 'is required when the order contains a physical product' }]);
      }
      // Before any stock moves, and only for a shop that exists (the key's row refers to it).
      if (opts.checkoutKey) await takeCheckoutKey(tx, o.shop, opts.checkoutKey, orderId, nowIso(now));

      const lines = [...wanted].map(([code, quantity]) => {
        const s = byCode.get(code)!;
        return { sku: s, quantity, amount: s.price * quantity };
      });
      const shippingFee = 0;
      const { subtotal, total, tax10, tax8 } = orderTotals(lines.map((l) => ({ amount: l.amount, taxRate: l.sku.tax_rate })), shippingFee);
      if (total > MAX_ORDER_TOTAL) throw invalid([{ field: 'lines', reason: `order total ${total} yen exceeds ${MAX_ORDER_TOTAL} yen` }]);

      // SKU rows are locked in id order, so two checkouts of the same SKUs cannot deadlock.
      for (const l of [...lines].sort((a, b) => skuLockOrder(a.sku.id, b.sku.id))) {
        const reserved = await reserveStock(tx, { skuId: l.sku.id, quantity: l.quantity });
        if (Number(reserved.numAffectedRows) !== 1) {
          throw new KessaiError('out_of_stock', `not enough stock for "${l.sku.code}" (wanted ${l.quantity})`, 409, [
            { field: `lines.${o.lines.findIndex((x) => x.sku === l.sku.code)}.quantity`, reason: 'exceeds the stock available' },
          ]);
        }
      }

      const customerId = newId('cus');
      const at = nowIso(now);
      await insertRow(tx, 'customers', { id: customerId, shop_id: o.shop, email: o.customer.email, name: o.customer.name, name_kana: o.customer.nameKana ?? null, phone: o.customer.phone ?? null, password_hash: null, email_verified_at: null, created_at: at });
      const row: Order = {
        id: orderId,
        shop_id: o.shop,
        number: orderNumber(now),
        token_hash: hashToken(token),
        customer_id: customerId,
        email: o.customer.email,
        state: 'pending_payment',
        subtotal,
        shipping_fee: shippingFee,
        total,
        tax_10: tax10,
        tax_8: tax8,
        current_attempt_id: attemptId,
        fulfilled: 0,
        stock_committed: 0,
        stock_released: 0,
        hold_reason: null,
        expires_at: expiresAt,
        created_at: at,
        updated_at: at,
      };
      // A number already taken (one in a trillion a day per pair) is skipped by the insert, not
      // failed, so the transaction carries on with a fresh one on either engine.
      while ((await insertRow(tx, 'orders', row, { skipDuplicateOf: 'number' })) === 0) row.number = orderNumber(now);
      await insertRows(
        tx,
        'order_lines',
        lines.map((l, position) => ({ id: newId('oln'), order_id: orderId, sku_id: l.sku.id, position, product_kind: l.sku.kind, name: l.sku.name, jan_code: l.sku.jan_code, unit_price: l.sku.price, quantity: l.quantity, tax_rate: l.sku.tax_rate, amount: l.amount })),
      );
      await insertRows(
        tx,
        'reservations',
        lines.map((l) => ({ id: newId('rsv'), order_id: orderId, sku_id: l.sku.id, quantity: l.quantity, state: 'held' as const, expires_at: expiresAt, created_at: at, updated_at: at })),
      );
      if (o.shippingAddress) {
        const a = o.shippingAddress;
        await insertRow(tx, 'order_addresses', { order_id: orderId, kind: 'shipping', name: a.name, postcode: a.postcode, prefecture: a.prefecture, city: a.city, line1: a.line1, line2: a.line2 ?? null, phone: a.phone });
      }
      await insertAttempt(tx, { id: attemptId, order: row, provider: o.payment.provider, method: o.payment.method ?? null, seq: 1, at });
      await insertRows(tx, 'state_changes', [changeRow('payment', attemptId, null, 'pending', 'attempt opened', at), changeRow('order', orderId, null, 'pending_payment', 'checkout', at)]);
      // Its own job, due when the reservation ends, so stock comes back on time (the sweep is a backstop).
      await enqueue(tx, { kind: 'order.expire', payload: { orderId }, dedupeKey: `order.expire:${orderId}`, runAt: new Date(expiresAt) });
      // What the caller records with the order, all or nothing (a subscription's renewal).
      await opts.within?.(tx, row);
      return row;
    });
  } catch (error) {
    if (!(error instanceof CheckoutKeyTaken)) throw error;
    const earlier = await ctx.db.selectFrom('orders').selectAll().where('id', '=', error.orderId).executeTakeFirstOrThrow();
    const again = orderToken(ctx, earlier);
    if (!again || !earlier.current_attempt_id) throw new Error(`order ${earlier.number} of a repeated checkout cannot be answered again`);
    return { order: earlier, token: again, attemptId: earlier.current_attempt_id, replayed: true };
  }
  return { order, token, attemptId };
}

/**
 * Takes the checkout key first thing in the order's transaction. A key already taken (committed,
 * or on PostgreSQL committed while this insert waited for it) makes nothing: its order answers.
 */
async function takeCheckoutKey(tx: Tx, shopId: string, checkoutKey: { key: string; request: string }, orderId: string, at: string): Promise<void> {
  const taken = await tx
    .insertInto('checkout_keys')
    .values({ shop_id: shopId, key: checkoutKey.key, order_id: orderId, request: checkoutKey.request, created_at: at })
    .onConflict((oc) => oc.columns(['shop_id', 'key']).doNothing())
    .executeTakeFirst();
  if (Number(taken.numInsertedOrUpdatedRows ?? 0) === 1) return;
  const earlier = await tx.selectFrom('checkout_keys').select(['order_id', 'request']).where('shop_id', '=', shopId).where('key', '=', checkoutKey.key).executeTakeFirstOrThrow();
  if (earlier.request !== checkoutKey.request) {
    throw new KessaiError('idempotency_key_reused', `Idempotency-Key "${checkoutKey.key}" was used for another checkout; a new order needs a new key`, 409);
  }
  throw new CheckoutKeyTaken(earlier.order_id);
}

async function insertAttempt(tx: Tx, a: { id: string; order: Order; provider: string; method: string | null; seq: number; at?: string }): Promise<void> {
  const at = a.at ?? nowIso();
  await insertRow(tx, 'payment_attempts', {
    id: a.id,
    order_id: a.order.id,
    shop_id: a.order.shop_id,
    provider: a.provider,
    method: a.method,
    // Unique per attempt: gateways refuse a reused order id, and an old attempt's late
    // notification must be told apart from the current one.
    merchant_ref: `${a.order.number}-${a.seq}`,
    state: 'pending',
    amount: a.order.total,
    captured_amount: 0,
    refunded_amount: 0,
    gateway_ref: null,
    details: '{}',
    created_at: at,
    updated_at: at,
  });
}

/**
 * Opens a new payment attempt on an order still waiting for payment (after a decline, or to pay
 * another way). The previous attempt stays on record; its late facts are recognised as stale.
 */
/**
 * Fewer seconds than this before an order's stock reservation ends leave no time to pay: a gateway's
 * page opened then would be closed under the customer (or, at SBPS, take money for stock given back).
 */
export const MIN_SECONDS_TO_PAY = 60;

export async function openAttempt(ctx: Context, orderId: string, payment: { provider: string; method?: string }): Promise<string> {
  return ctx.db.transaction().execute(async (tx) => {
    const order = await lockOrder(ctx, tx, orderId);
    if (order.state !== 'pending_payment') {
      throw new KessaiError('order_not_payable', `order ${order.number} is ${order.state}; only an order waiting for payment takes a new attempt`, 409);
    }
    const left = Math.floor((Date.parse(order.expires_at) - Date.now()) / 1000);
    if (left < MIN_SECONDS_TO_PAY) {
      throw new KessaiError('reservation_ending', `order ${order.number}'s reservation ends in ${Math.max(0, left)} seconds, too soon to pay (at least ${MIN_SECONDS_TO_PAY} are needed); please order again`, 409);
    }
    const count = await tx
      .selectFrom('payment_attempts')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('order_id', '=', orderId)
      .executeTakeFirstOrThrow();
    const id = newId('pay');
    await insertAttempt(tx, { id, order, provider: payment.provider, method: payment.method ?? null, seq: Number(count.n) + 1 });
    await recordChange(tx, 'payment', id, null, 'pending', 'attempt opened');
    await tx.updateTable('orders').set({ current_attempt_id: id, updated_at: nowIso() }).where('id', '=', orderId).execute();
    // The page of the attempt this one replaces may still be open in another tab: where the gateway
    // can, it is closed, so the customer does not pay twice (abandonSuperseded in payments/service.ts).
    const previous = order.current_attempt_id;
    if (previous) await enqueue(tx, { kind: 'payment.abandon', payload: { attemptId: previous }, dedupeKey: `payment.abandon:${previous}` });
    return id;
  });
}

export async function lockOrder(ctx: Context, tx: Tx, orderId: string): Promise<Order> {
  const order = await forUpdate(ctx.engine, tx.selectFrom('orders').selectAll().where('id', '=', orderId)).executeTakeFirst();
  if (!order) throw notFound('order', orderId);
  return order;
}

export async function recordChange(tx: Tx, entity: 'order' | 'payment', id: string, from: string | null, to: string, cause: string): Promise<void> {
  await insertRow(tx, 'state_changes', changeRow(entity, id, from, to, cause, nowIso()));
}

function changeRow(entity: 'order' | 'payment', id: string, from: string | null, to: string, cause: string, at: string): Insertable<Database['state_changes']> {
  return { id: newId('chg'), entity, entity_id: id, from_state: from, to_state: to, cause, at };
}

export function orderSnapshot(order: Order): OrderSnapshot {
  return {
    state: order.state as OrderState,
    total: order.total,
    fulfilled: order.fulfilled === 1,
    stockCommitted: order.stock_committed === 1,
    stockReleased: order.stock_released === 1,
  };
}

/** Events an operator may apply by hand; money moves go through the gateway instead. */
export const OPERATOR_EVENTS = ['ship', 'complete', 'release_to_paid', 'release_to_cancelled'] as const satisfies readonly OrderEvent[];
export type OperatorEvent = (typeof OPERATOR_EVENTS)[number];

export async function operatorEvent(ctx: Context, orderRef: string, event: OperatorEvent, who: string): Promise<Order> {
  const found = await findOrder(ctx, orderRef);
  return ctx.db.transaction().execute(async (tx) => {
    const order = await lockOrder(ctx, tx, found.id);
    const t = applyOrderEvent(orderSnapshot(order), event);
    if (!t.ok) throw new KessaiError('invalid_transition', t.reason, 409);
    const holdReason = event.startsWith('release_') ? null : undefined;
    await applyOrderChange(tx, order, { ...t.order, holdReason }, t.effects, `${event} by ${who}`);
    return (await tx.selectFrom('orders').selectAll().where('id', '=', order.id).executeTakeFirstOrThrow());
  });
}

export interface OrderChange {
  state: OrderState;
  fulfilled: boolean;
  stockCommitted: boolean;
  stockReleased: boolean;
  holdReason?: string | null;
}

/**
 * The order in which a transaction locks several SKU rows (checkout, payment, order edit): by id,
 * compared as JavaScript strings. Every writer of SKU rows uses it, so none waits on another's rows
 * crosswise (on PostgreSQL, a deadlock).
 */
export function skuLockOrder(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Writes an order's new state and carries out its effects inside the caller's transaction: stock
 * moves now (they are database rows), anything that talks to the outside world goes to the outbox.
 * `paymentChange`: the payment's own state change of the same fact, recorded with the order's.
 */
export async function applyOrderChange(
  tx: Tx,
  order: Order,
  next: OrderChange,
  effects: readonly OrderEffect[],
  cause: string,
  paymentChange?: { id: string; from: string; to: string },
): Promise<OrderState> {
  const at = nowIso();
  // Serial codes first: an order that cannot get all its codes is held, not fulfilled (serial-codes.ts).
  const lines = effects.includes('fulfil') ? await fulfilmentLines(tx, order.id) : [];
  const short = lines.length > 0 ? await allocateSerialCodes(tx, order, lines) : [];
  if (short.length > 0) ({ next, effects } = holdForMissingCodes(next, effects, short));
  const mails: Partial<Record<OrderEffect, string>> = {
    notify_paid: 'order_paid',
    notify_payment_instructions: 'payment_instructions',
    notify_refund: 'refund',
    notify_cancelled: 'order_cancelled',
    notify_shipped: 'order_shipped',
  };
  for (const effect of effects) {
    const template = mails[effect];
    if (template) {
      // Refunds can happen several times; the others once per order.
      const dedupeKey = template === 'refund' ? undefined : `mail:${template}:${order.id}`;
      await enqueue(tx, { kind: 'mail.send', payload: { template, orderId: order.id }, dedupeKey });
    }
  }
  if (effects.includes('alert_hold')) {
    await insertRow(tx, 'alerts', { id: newId('alr'), kind: 'order_on_hold', message: `order ${order.number} is on hold: ${next.holdReason ?? cause}`, ref: order.id, created_at: at, resolved_at: null });
  }
  // Tickets are rows, so they are issued with the payment; once the money is back they admit no one.
  if (effects.includes('fulfil')) await issueTickets(tx, order, lines);
  // Chekicha hears of it through the outbox: its outage must never roll back or delay the payment.
  if (effects.includes('fulfil')) await linkAfterPurchase(tx, order, lines);
  if (effects.includes('fulfil')) await startSubscriptions(tx, order, lines);
  if (order.fulfilled === 1 && (next.state === 'refunded' || next.state === 'cancelled')) await voidTickets(tx, order.id);
  // A gateway that confirms the sale on shipment (atone's 売上確定) hears of it through the outbox.
  if (next.state === 'shipped' && order.state !== 'shipped') await enqueue(tx, { kind: 'payment.settle', payload: { orderId: order.id }, dedupeKey: `payment.settle:${order.id}` });
  if (order.fulfilled === 0 && next.state === 'cancelled') await releaseUndeliveredCodes(tx, order.id);
  await tx
    .updateTable('orders')
    .set({
      state: next.state,
      fulfilled: next.fulfilled ? 1 : 0,
      stock_committed: next.stockCommitted ? 1 : 0,
      stock_released: next.stockReleased ? 1 : 0,
      hold_reason: next.holdReason === undefined ? order.hold_reason : next.holdReason,
      updated_at: at,
    })
    .where('id', '=', order.id)
    .execute();
  // Both state changes of a payment fact in one insert: a round trip fewer on PostgreSQL.
  const changes = [
    ...(paymentChange ? [changeRow('payment', paymentChange.id, paymentChange.from, paymentChange.to, cause, at)] : []),
    ...(next.state !== order.state ? [changeRow('order', order.id, order.state, next.state, cause, at)] : []),
  ];
  if (changes.length > 0) await insertRows(tx, 'state_changes', changes);
  // Stock last: a SKU row is shared by every order of it, so its lock is held as briefly as possible.
  // decide() never asks for both: stock given back is never committed, and vice versa.
  const move = effects.includes('commit_stock') ? 'committed' : effects.includes('release_stock') ? 'released' : undefined;
  if (move) {
    // SKUs in the one lock order: two transactions never wait on each other's rows crosswise.
    const held = await tx.updateTable('reservations').set({ state: move, updated_at: at }).where('order_id', '=', order.id).where('state', '=', 'held').returning(['sku_id', 'quantity']).execute();
    held.sort((a, b) => skuLockOrder(a.sku_id, b.sku_id));
    for (const r of held) {
      await tx
        .updateTable('skus')
        .set(move === 'committed' ? { on_hand: sql`on_hand - ${r.quantity}`, reserved: sql`reserved - ${r.quantity}` } : { reserved: sql`reserved - ${r.quantity}` })
        .where('id', '=', r.sku_id)
        .execute();
    }
  }
  return next.state;
}

export interface CustomerOrderView {
  number: string;
  state: string;
  email: string;
  subtotal: number;
  shippingFee: number;
  total: number;
  tax: { rate10: number; rate8: number };
  createdAt: string;
  expiresAt: string;
  lines: { name: string; kind: string; unitPrice: number; quantity: number; amount: number; taxRate: number }[];
  /** Amounts in yen: what the gateway took and how much of it went back (refunds add up here). */
  payment: { provider: string; method: string | null; state: string; capturedAmount: number; refundedAmount: number; details: Record<string, unknown> } | null;
  tickets: TicketView[];
  /** Shown once delivered (the order fulfilled); a held order's codes are not the customer's yet. */
  serialCodes: SerialCodeView[];
}

export async function orderView(ctx: Context, order: Order): Promise<CustomerOrderView> {
  const lines = await ctx.db.selectFrom('order_lines').selectAll().where('order_id', '=', order.id).orderBy('position').execute();
  const attempt = order.current_attempt_id
    ? await ctx.db.selectFrom('payment_attempts').selectAll().where('id', '=', order.current_attempt_id).executeTakeFirst()
    : undefined;
  return {
    number: order.number,
    state: order.state,
    email: order.email,
    subtotal: order.subtotal,
    shippingFee: order.shipping_fee,
    total: order.total,
    tax: { rate10: order.tax_10, rate8: order.tax_8 },
    createdAt: order.created_at,
    expiresAt: order.expires_at,
    lines: lines.map((l) => ({ name: l.name, kind: l.product_kind, unitPrice: l.unit_price, quantity: l.quantity, amount: l.amount, taxRate: l.tax_rate })),
    payment: attempt
      ? { provider: attempt.provider, method: attempt.method, state: attempt.state, capturedAmount: attempt.captured_amount, refundedAmount: attempt.refunded_amount, details: JSON.parse(attempt.details) as Record<string, unknown> }
      : null,
    tickets: lines.some((l) => l.product_kind === 'ticket') ? await orderTickets(ctx.db, ctx.config.publicUrl, order.id) : [],
    serialCodes: order.fulfilled === 1 && lines.some((l) => l.product_kind === 'serial_code') ? await orderSerialCodes(ctx.db, order.id) : [],
  };
}

const orderLinkPurpose = (orderId: string) => `order-link:${orderId}`;

/**
 * The order's status page, for its mails and the customer's account page: its link token is made
 * again from the order (`derivedSecret`). Undefined for an order whose token cannot be made again
 * (made at random before links were derived, or under another master key): its first link still
 * opens it, and nothing else can.
 */
export function orderPageUrl(ctx: Context, order: Pick<Order, 'id' | 'token_hash'>): string | undefined {
  const token = orderToken(ctx, order);
  return token === undefined ? undefined : `${ctx.config.publicUrl}/orders/${token}`;
}

function orderToken(ctx: Context, order: Pick<Order, 'id' | 'token_hash'>): string | undefined {
  const dot = order.token_hash.indexOf('.');
  if (dot === -1) return undefined;
  const token = derivedSecret(ctx.config.masterKey, orderLinkPurpose(order.id), order.token_hash.slice(0, dot));
  return hashToken(token) === order.token_hash ? token : undefined;
}

export async function findOrderByToken(ctx: Context, token: string): Promise<Order> {
  const order = await ctx.db.selectFrom('orders').selectAll().where('token_hash', '=', hashToken(token)).executeTakeFirst();
  // The same answer for a wrong token and a missing order: a token is the only key a customer has.
  if (!order) throw new KessaiError('not_found', 'このリンクのご注文は見つかりません。ご注文メールのリンクをご確認ください。/ No order for this link; check the link in your order mail.', 404);
  return order;
}

export async function findOrder(ctx: Context, idOrNumber: string): Promise<Order> {
  const order = await ctx.db
    .selectFrom('orders')
    .selectAll()
    .where((eb) => eb.or([eb('id', '=', idOrNumber), eb('number', '=', idOrNumber)]))
    .executeTakeFirst();
  if (!order) throw notFound('order', idOrNumber);
  return order;
}

export async function listOrders(ctx: Context, filter: { shop?: string; state?: string; limit?: number }): Promise<Order[]> {
  let q = ctx.db.selectFrom('orders').selectAll().orderBy('created_at', 'desc').limit(Math.min(filter.limit ?? 50, 500));
  if (filter.shop) q = q.where('shop_id', '=', filter.shop);
  if (filter.state) q = q.where('state', '=', filter.state);
  return q.execute();
}

/** Everything an operator needs to understand an order: attempts, gateway events, history. */
export async function orderHistory(ctx: Context, orderId: string) {
  const attempts = await ctx.db.selectFrom('payment_attempts').selectAll().where('order_id', '=', orderId).orderBy('created_at').execute();
  const ids = [orderId, ...attempts.map((a) => a.id)];
  const events = attempts.length
    ? await ctx.db.selectFrom('payment_events').selectAll().where('attempt_id', 'in', attempts.map((a) => a.id)).orderBy('received_at').execute()
    : [];
  const changes = await ctx.db.selectFrom('state_changes').selectAll().where('entity_id', 'in', ids).orderBy('at').orderBy('id').execute();
  return { attempts, events, changes };
}
