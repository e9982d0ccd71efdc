import { z } from 'zod';
import type { Context } from '../context.js';
import { forUpdate, type Tx } from '../db/index.js';
import { insertRow } from '../db/insert.js';
import type { Order, Subscription } from '../db/schema.js';
import { notFound, parseInput } from '../errors.js';
import { newId, nowIso } from '../ids.js';
import type { FulfilmentLine } from './fulfilment-lines.js';
import { createOrder, type CreatedOrder } from './orders.js';
import { jstDate } from './serial-codes.js';

/*
 * Recurring purchases (定期購入). A product with `recurring_interval_months` is sold as a
 * subscription: when a member's order of it is paid (the `fulfil` effect, in the fact's transaction)
 * a subscription starts, due again that many months later. On its due date a renewal is an ordinary
 * order, created by a scheduled job with the member's saved address and the SKU's price of the day,
 * and charged by the gateway that took the first payment with the member's token (payments/
 * subscriptions.ts). Guests have no account to keep a token on: their order is a single purchase.
 */

/** The gateway that can charge a renewal without the customer (atone's 取引登録 with the member's token). */
export const RECURRING_PROVIDER = 'atone';

/** `date` (YYYY-MM-DD) plus whole months, on the same day or the month's last (01-31 + 1 → 02-28). */
export function addMonths(date: string, months: number): string {
  const [y, m, d] = date.split('-').map(Number) as [number, number, number];
  const index = y * 12 + (m - 1) + months;
  const year = Math.floor(index / 12);
  const month = (index % 12) + 1;
  const last = new Date(Date.UTC(year, month, 0)).getUTCDate();
  return `${String(year).padStart(4, '0')}-${String(month).padStart(2, '0')}-${String(Math.min(d, last)).padStart(2, '0')}`;
}

/**
 * Starts the subscriptions of a paid order, in the caller's transaction: one per recurring line, for
 * a member paying with the recurring gateway. A renewal order continues its subscription instead,
 * and a replayed fulfilment finds its subscriptions made (one per order and SKU).
 */
export async function startSubscriptions(tx: Tx, order: Order, lines: readonly FulfilmentLine[]): Promise<void> {
  const recurring = lines.flatMap((l) => (l.recurringMonths === null ? [] : [{ skuId: l.skuId, quantity: l.quantity, interval: l.recurringMonths }]));
  if (recurring.length === 0) return;
  if (await tx.selectFrom('subscription_orders').select('order_id').where('order_id', '=', order.id).executeTakeFirst()) return;
  const attempt = order.current_attempt_id
    ? await tx.selectFrom('payment_attempts').select('provider').where('id', '=', order.current_attempt_id).executeTakeFirst()
    : undefined;
  if (attempt?.provider !== RECURRING_PROVIDER) return;
  const member = await tx.selectFrom('customers').select('id').where('id', '=', order.customer_id).where('password_hash', 'is not', null).executeTakeFirst();
  if (!member) return;
  const at = nowIso();
  const today = jstDate(new Date());
  for (const line of recurring) {
    await tx
      .insertInto('subscriptions')
      .values({
        id: newId('sub'),
        shop_id: order.shop_id,
        customer_id: member.id,
        sku_id: line.skuId,
        quantity: line.quantity,
        interval_months: line.interval,
        provider: attempt.provider,
        source_order_id: order.id,
        next_date: addMonths(today, line.interval),
        state: 'active',
        created_at: at,
        updated_at: at,
        cancelled_at: null,
      })
      .onConflict((oc) => oc.columns(['source_order_id', 'sku_id']).doNothing())
      .execute();
  }
}

/** Active subscriptions due on or before `today` (JST date), oldest first. */
export async function dueSubscriptions(ctx: Context, today: string, limit = 500): Promise<Pick<Subscription, 'id' | 'next_date'>[]> {
  return ctx.db
    .selectFrom('subscriptions')
    .select(['id', 'next_date'])
    .where('state', '=', 'active')
    .where('next_date', '<=', today)
    .orderBy('next_date')
    .limit(limit)
    .execute();
}

/** The renewal already made for a subscription's due date, if any. */
export async function renewalOrder(ctx: Context, subscriptionId: string, dueDate: string): Promise<string | undefined> {
  const row = await ctx.db.selectFrom('subscription_orders').select('order_id').where('subscription_id', '=', subscriptionId).where('due_date', '=', dueDate).executeTakeFirst();
  return row?.order_id;
}

/** The renewal was made meanwhile by another run (or the subscription changed): roll back, look again. */
class NotDue extends Error {}

/**
 * Creates the renewal order of a subscription due on `dueDate`, and moves its next date on, in one
 * transaction with the order. Undefined when the subscription is cancelled or no longer due then
 * (another run made the renewal: see renewalOrder).
 */
export async function createRenewal(ctx: Context, subscriptionId: string, dueDate: string): Promise<CreatedOrder | undefined> {
  const sub = await ctx.db.selectFrom('subscriptions').selectAll().where('id', '=', subscriptionId).executeTakeFirst();
  if (!sub) throw notFound('subscription', subscriptionId);
  if (sub.state !== 'active' || sub.next_date !== dueDate) return undefined;
  const [customer, sku, source] = await Promise.all([
    ctx.db.selectFrom('customers').select(['email', 'name', 'name_kana', 'phone']).where('id', '=', sub.customer_id).executeTakeFirstOrThrow(),
    ctx.db.selectFrom('skus').select('code').where('id', '=', sub.sku_id).executeTakeFirstOrThrow(),
    ctx.db.selectFrom('order_addresses').selectAll().where('order_id', '=', sub.source_order_id).where('kind', '=', 'shipping').executeTakeFirst(),
  ]);
  const input = {
    shop: sub.shop_id,
    customer: { email: customer.email, name: customer.name, ...(customer.name_kana ? { nameKana: customer.name_kana } : {}), ...(customer.phone ? { phone: customer.phone } : {}) },
    ...(source
      ? { shippingAddress: { name: source.name, postcode: source.postcode, prefecture: source.prefecture, city: source.city, line1: source.line1, ...(source.line2 ? { line2: source.line2 } : {}), phone: source.phone } }
      : {}),
    lines: [{ sku: sku.code, quantity: sub.quantity }],
    payment: { provider: sub.provider },
  };
  try {
    return await createOrder(ctx, input, {
      within: async (tx, order) => {
        const locked = await forUpdate(ctx.engine, tx.selectFrom('subscriptions').select(['state', 'next_date']).where('id', '=', sub.id)).executeTakeFirstOrThrow();
        if (locked.state !== 'active' || locked.next_date !== dueDate) throw new NotDue();
        const at = nowIso();
        await insertRow(tx, 'subscription_orders', { subscription_id: sub.id, due_date: dueDate, order_id: order.id, created_at: at });
        await tx.updateTable('subscriptions').set({ next_date: addMonths(dueDate, sub.interval_months), updated_at: at }).where('id', '=', sub.id).execute();
      },
    });
  } catch (error) {
    if (error instanceof NotDue) return undefined;
    throw error;
  }
}

export interface SubscriptionView {
  id: string;
  shop: string;
  customerId: string;
  email: string;
  sku: string;
  name: string;
  quantity: number;
  intervalMonths: number;
  provider: string;
  nextDate: string;
  state: string;
  sourceOrderId: string;
  orders: { dueDate: string; orderId: string; number: string; state: string }[];
  createdAt: string;
  cancelledAt: string | null;
}

const listQuery = z.strictObject({
  shop: z.string().optional(),
  state: z.enum(['active', 'cancelled'], { error: 'must be active or cancelled' }).optional(),
  customer: z.string().optional(),
  limit: z.coerce.number().int().min(1).max(500).optional(),
});

/** Subscriptions with their renewal orders, newest first. */
export async function listSubscriptions(ctx: Context, filter: unknown): Promise<SubscriptionView[]> {
  const f = parseInput(listQuery, filter ?? {});
  let q = ctx.db
    .selectFrom('subscriptions')
    .innerJoin('customers', 'customers.id', 'subscriptions.customer_id')
    .innerJoin('skus', 'skus.id', 'subscriptions.sku_id')
    .selectAll('subscriptions')
    .select(['customers.email', 'skus.code', 'skus.name'])
    .orderBy('subscriptions.created_at', 'desc')
    .limit(f.limit ?? 100);
  if (f.shop) q = q.where('subscriptions.shop_id', '=', f.shop);
  if (f.state) q = q.where('subscriptions.state', '=', f.state);
  if (f.customer) q = q.where('subscriptions.customer_id', '=', f.customer);
  const rows = await q.execute();
  const renewals = rows.length
    ? await ctx.db
        .selectFrom('subscription_orders')
        .innerJoin('orders', 'orders.id', 'subscription_orders.order_id')
        .select(['subscription_orders.subscription_id', 'subscription_orders.due_date', 'orders.id', 'orders.number', 'orders.state'])
        .where('subscription_orders.subscription_id', 'in', rows.map((r) => r.id))
        .orderBy('subscription_orders.due_date')
        .execute()
    : [];
  return rows.map((r) => ({
    id: r.id,
    shop: r.shop_id,
    customerId: r.customer_id,
    email: r.email,
    sku: r.code,
    name: r.name,
    quantity: r.quantity,
    intervalMonths: r.interval_months,
    provider: r.provider,
    nextDate: r.next_date,
    state: r.state,
    sourceOrderId: r.source_order_id,
    orders: renewals.filter((o) => o.subscription_id === r.id).map((o) => ({ dueDate: o.due_date, orderId: o.id, number: o.number, state: o.state })),
    createdAt: r.created_at,
    cancelledAt: r.cancelled_at,
  }));
}

/** Ends a subscription: no renewal is made after this. Orders already made stand. Cancelling twice is fine. */
export async function cancelSubscription(ctx: Context, id: string, who: string): Promise<Subscription> {
  return ctx.db.transaction().execute(async (tx) => {
    const sub = await forUpdate(ctx.engine, tx.selectFrom('subscriptions').selectAll().where('id', '=', id)).executeTakeFirst();
    if (!sub) throw notFound('subscription', id);
    if (sub.state === 'cancelled') return sub;
    const at = nowIso();
    await tx.updateTable('subscriptions').set({ state: 'cancelled', cancelled_at: at, updated_at: at }).where('id', '=', id).execute();
    ctx.log.info({ subscription: id, who }, 'subscription cancelled');
    return { ...sub, state: 'cancelled', cancelled_at: at, updated_at: at };
  });
}

