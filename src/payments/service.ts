import { createHash } from 'node:crypto';
import { createValidOrder, findOrder, lockOrder, openAttempt, orderInput, orderSnapshot, applyOrderChange } from '../commerce/orders.js';
import { applyOrderEvent } from '../commerce/decide.js';
import { basketOf, type Basket } from '../commerce/catalog.js';
import { findShopSettings, getShopSettings, type ShopSettings } from '../commerce/shops.js';
import { RECURRING_PROVIDER } from '../commerce/subscriptions.js';
import type { Context } from '../context.js';
import type { Tx } from '../db/index.js';
import type { Order, PaymentAttempt } from '../db/schema.js';
import { KessaiError, invalid, notFound, parseInput } from '../errors.js';
import { newId, nowIso } from '../ids.js';
import { enqueue } from '../jobs/outbox.js';
import { applyFact, type ApplyResult, type FactSource } from './apply-fact.js';
import { insertRow } from '../db/insert.js';
import { beginOperation, checkRefundable, finishOperation } from './operations.js';
import { applyWaiting, type NotificationInbox } from './inbox.js';
import type { AttemptContext, GatewayFact, GatewayReply, PaymentAction, ProviderRegistry } from './provider.js';

/*
 * The store's payment use cases, between the HTTP/CLI/job entry points and the domain. Gateway
 * calls happen here, always outside a database transaction; their results come back as facts
 * through applyFact.
 */

export interface Payments {
  ctx: Context;
  providers: ProviderRegistry;
  /** Where verified notifications are recorded before they are answered, and applied after. */
  inbox: NotificationInbox;
}

/**
 * Why `provider` cannot pay for `basket` under these settings, in words for the customer; undefined
 * when it can. The shop's amount limits (never below the gateway's own floor: atone from 1 yen) and
 * ticket providers; a subscription is renewed later with the member's saved token, which only the
 * recurring gateway can charge, and only where the shop takes recurring purchases.
 */
function unusableBecause(p: Payments, provider: string, settings: ShopSettings, basket: Basket): string | undefined {
  const yen = (n: number) => `${n.toLocaleString('ja-JP')} yen`;
  const min = Math.max(Number(settings[`${provider}.minAmount`] ?? 0), p.providers.get(provider)?.minAmount ?? 0);
  const gateway = p.providers.get(provider);
  const max = Math.min(settings[`${provider}.maxAmount`] === undefined ? Infinity : Number(settings[`${provider}.maxAmount`]), gateway?.maxAmount ?? Infinity);
  if (basket.total < min) return `${provider} takes orders from ${yen(min)}; this order is ${yen(basket.total)}`;
  if (basket.total > max) return `${provider} takes orders up to ${yen(max)}; this order is ${yen(basket.total)}`;
  if (gateway?.maxUnitPrice !== undefined && basket.maxUnitPrice > gateway.maxUnitPrice) {
    return `${provider} takes items priced up to ${yen(gateway.maxUnitPrice)}; this order has one at ${yen(basket.maxUnitPrice)}`;
  }
  const forTickets = settings['payments.ticketProviders'];
  if (basket.kinds.includes('ticket') && typeof forTickets === 'string' && forTickets && !forTickets.split(',').includes(provider)) {
    return `${provider} is not offered for tickets (offered: ${forTickets.split(',').join(', ')})`;
  }
  if (basket.subscriptions.length > 0) {
    const codes = basket.subscriptions.map((c) => `"${c}"`).join(', ');
    if (provider !== RECURRING_PROVIDER) return `${codes} is a subscription, renewed later with the member's saved ${RECURRING_PROVIDER} payment; pay it with ${RECURRING_PROVIDER}`;
    if (settings[`${provider}.recurring`] !== true) return `this shop does not take subscriptions (${provider}.recurring is off)`;
  }
  return undefined;
}

/**
 * The providers and methods a shop currently offers, for the checkout and for validation; with a
 * basket, only those that can pay for it (see unusableBecause).
 */
export async function availableMethods(p: Payments, shopId: string, basket?: Basket): Promise<{ provider: string; methods: string[] }[]> {
  const settings = await getShopSettings(p.ctx, shopId);
  return offered(p, settings).filter((m) => !(basket && unusableBecause(p, m.provider, settings, basket)));
}

/** What the shop's settings switch on, whatever the basket. */
function offered(p: Payments, settings: ShopSettings): { provider: string; methods: string[] }[] {
  return p.providers
    .all()
    .map((provider) => ({ provider: provider.name, methods: provider.methods(settings) }))
    .filter((m) => m.methods.length > 0);
}

/** `prefix` is where the payment choice sits in the caller's request body, so errors name the field sent. */
export async function assertPayable(p: Payments, shopId: string, payment: { provider: string; method?: string }, prefix: string, basket: Basket): Promise<void> {
  const settings = await getShopSettings(p.ctx, shopId);
  const shopOffers = offered(p, settings);
  const provider = shopOffers.find((m) => m.provider === payment.provider);
  if (!provider) {
    const names = shopOffers.map((m) => m.provider).join(', ') || 'none';
    throw invalid([{ field: `${prefix}provider`, reason: `"${payment.provider}" is not offered by this shop (offered: ${names})` }]);
  }
  const refusal = unusableBecause(p, payment.provider, settings, basket);
  if (refusal) throw invalid([{ field: `${prefix}provider`, reason: refusal }]);
  if (payment.method && !provider.methods.includes(payment.method)) {
    throw invalid([{ field: `${prefix}method`, reason: `"${payment.method}" is not offered with ${payment.provider} (offered: ${provider.methods.join(', ')})` }]);
  }
}

/** An existing order's basket, for paying it again. */
export async function orderBasket(p: Payments, order: Order): Promise<Basket> {
  const lines = await p.ctx.db
    .selectFrom('order_lines')
    .innerJoin('skus', 'skus.id', 'order_lines.sku_id')
    .innerJoin('products', 'products.id', 'skus.product_id')
    .select(['order_lines.product_kind', 'order_lines.unit_price', 'skus.code', 'products.recurring_interval_months'])
    .where('order_lines.order_id', '=', order.id)
    .execute();
  return {
    total: order.total,
    maxUnitPrice: Math.max(0, ...lines.map((l) => l.unit_price)),
    kinds: [...new Set(lines.map((l) => l.product_kind))],
    subscriptions: lines.filter((l) => l.recurring_interval_months !== null).map((l) => l.code),
  };
}

export async function attemptContext(p: Payments, attempt: PaymentAttempt, order: Order, token?: string): Promise<AttemptContext> {
  const lines = await p.ctx.db
    .selectFrom('order_lines')
    .innerJoin('skus', 'skus.id', 'order_lines.sku_id')
    .innerJoin('products', 'products.id', 'skus.product_id')
    .select(['order_lines.name', 'order_lines.unit_price', 'order_lines.quantity', 'products.recurring_interval_months'])
    .where('order_lines.order_id', '=', order.id)
    .orderBy('order_lines.position')
    .execute();
  const customer = await p.ctx.db.selectFrom('customers').select('name').where('id', '=', order.customer_id).executeTakeFirstOrThrow();
  const base = p.ctx.config.publicUrl;
  const orderPage = token ? `${base}/orders/${token}` : `${base}/orders`;
  return {
    attempt,
    settings: await getShopSettings(p.ctx, attempt.shop_id),
    order: { id: order.id, number: order.number, total: order.total, email: order.email, customerName: customer.name, expiresAt: order.expires_at, lines: lines.map((l) => ({ name: l.name, unitPrice: l.unit_price, quantity: l.quantity })), recurring: lines.some((l) => l.recurring_interval_months !== null) },
    urls: {
      returnUrl: `${orderPage}/return?attempt=${attempt.id}`,
      cancelUrl: `${orderPage}/return?attempt=${attempt.id}&cancelled=1`,
      notifyUrl: `${base}/webhooks/${attempt.provider}/${attempt.shop_id}`,
    },
  };
}

function providerFor(p: Payments, name: string) {
  const provider = p.providers.get(name);
  if (!provider) throw new KessaiError('unknown_provider', `payment provider "${name}" is not installed`, 400);
  return provider;
}

export interface CheckoutResult {
  order: Order;
  token: string;
  action: PaymentAction | null;
  /** The same checkout key came before: its order is answered, nothing new was made or started. */
  replayed?: boolean;
  /** Set when the gateway could not be reached: the order exists, the customer may retry paying. */
  error?: { code: string; message: string };
}

/**
 * Checkout: the order and its reservation first (committed), then the gateway hand-off. With a
 * `checkoutKey` (an API client's Idempotency-Key, the shop front's confirm form), the same request
 * sent again answers the order the first one made (`replayed`), without a hand-off: the first
 * answer had it, and the order page pays again if it was lost.
 */
export async function checkout(p: Payments, input: unknown, checkoutKey?: string): Promise<CheckoutResult> {
  let created;
  try {
    checkIdempotencyKey(checkoutKey);
    const order = parseInput(orderInput, input);
    // An unknown shop is reported by createValidOrder, with the field named.
    const shop = await p.ctx.db.selectFrom('shops').select('id').where('id', '=', order.shop).executeTakeFirst();
    if (shop) await assertPayable(p, order.shop, order.payment, 'payment.', await basketOf(p.ctx, order.shop, order.lines));
    const request = createHash('sha256').update(JSON.stringify(order)).digest('base64url');
    created = await createValidOrder(p.ctx, order, checkoutKey === undefined ? {} : { checkoutKey: { key: checkoutKey, request } });
  } catch (error) {
    if (error instanceof KessaiError) p.ctx.metrics.checkouts.inc({ outcome: error.code === 'out_of_stock' ? 'out_of_stock' : 'invalid' });
    throw error;
  }
  if (created.replayed) return { order: created.order, token: created.token, action: null, replayed: true };
  p.ctx.metrics.checkouts.inc({ outcome: 'created' });
  const started = await startAttempt(p, created.attemptId, created.order, created.token);
  return { order: created.order, token: created.token, ...started };
}

/** Pays again for an order that is still waiting for payment (after a decline or a cancel at the gateway). */
export async function retryPayment(p: Payments, order: Order, token: string, payment: { provider: string; method?: string }): Promise<Omit<CheckoutResult, 'token' | 'order'>> {
  await assertPayable(p, order.shop_id, payment, '', await orderBasket(p, order));
  const attemptId = await openAttempt(p.ctx, order.id, payment);
  return startAttempt(p, attemptId, order, token);
}

/**
 * The page of the order's current payment, made again, for a gateway whose page the store shows
 * itself (`pageInStore`): the checkout redirects to it, so reloading it shows the page again
 * rather than posting the checkout a second time. Undefined once the order no longer waits for it.
 */
export async function pageAgain(p: Payments, order: Order, token: string): Promise<PaymentAction | undefined> {
  if (order.state !== 'pending_payment' || !order.current_attempt_id) return undefined;
  const attempt = await p.ctx.db.selectFrom('payment_attempts').selectAll().where('id', '=', order.current_attempt_id).executeTakeFirstOrThrow();
  const provider = providerFor(p, attempt.provider);
  if (attempt.state !== 'pending' || !provider.pageInStore) return undefined;
  return (await provider.start(await attemptContext(p, attempt, order, token))).action;
}

async function startAttempt(p: Payments, attemptId: string, order: Order, token: string): Promise<Omit<CheckoutResult, 'token' | 'order'>> {
  const attempt = await p.ctx.db.selectFrom('payment_attempts').selectAll().where('id', '=', attemptId).executeTakeFirstOrThrow();
  const provider = providerFor(p, attempt.provider);
  try {
    const { action, gatewayRef } = await provider.start(await attemptContext(p, attempt, order, token));
    if (gatewayRef) {
      await p.ctx.db.updateTable('payment_attempts').set({ gateway_ref: gatewayRef, updated_at: nowIso() }).where('id', '=', attempt.id).where('gateway_ref', 'is', null).execute();
    }
    return { action };
  } catch (error) {
    // The order and its reservation stand; the customer can try again from the order page.
    const message = error instanceof Error ? error.message : String(error);
    p.ctx.log.error({ err: error, attempt: attempt.id, provider: attempt.provider }, 'payment start failed');
    return { action: null, error: { code: 'payment_start_failed', message: `${attempt.provider} could not start the payment: ${message}` } };
  }
}

/**
 * A gateway notification. Verified facts are recorded, then answered, then applied (inbox.ts): the
 * gateway's OK means "stored", and the state change follows within moments. A forged or malformed
 * one gets the provider's error answer and writes nothing; an unverifiable one only triggers a
 * read-back.
 */
export async function handleNotification(
  p: Payments,
  providerName: string,
  shopId: string,
  request: { rawBody: Buffer; headers: Record<string, string | string[] | undefined>; remoteAddress: string },
): Promise<GatewayReply> {
  const provider = p.providers.get(providerName);
  if (!provider) return { status: 404, contentType: 'text/plain', body: `unknown provider ${providerName}` };
  const settings = await findShopSettings(p.ctx, shopId);
  if (!settings) return { status: 404, contentType: 'text/plain', body: `unknown shop ${shopId}` };
  const result = await provider.parseNotification({ ...request, settings });
  if ('rejected' in result) {
    p.ctx.log.warn({ provider: providerName, shopId, reason: result.reason, from: request.remoteAddress }, 'notification rejected');
    return result.reply;
  }
  if (!result.verified) {
    const attempt = await p.ctx.db
      .selectFrom('payment_attempts')
      .select('id')
      .where('shop_id', '=', shopId)
      .where('provider', '=', providerName)
      .where('merchant_ref', '=', result.merchantRef)
      .executeTakeFirst();
    if (attempt) await enqueue(p.ctx.db, { kind: 'payment.readback', payload: { attemptId: attempt.id } });
    return result.reply;
  }
  if (result.ignored) p.ctx.log.warn({ provider: providerName, shopId, reason: result.ignored }, 'verified notification not acted on');
  await p.inbox.record(shopId, providerName, result.facts);
  return result.reply;
}

async function loadAttempt(p: Payments, attemptId: string): Promise<{ attempt: PaymentAttempt; order: Order }> {
  const attempt = await p.ctx.db.selectFrom('payment_attempts').selectAll().where('id', '=', attemptId).executeTakeFirst();
  if (!attempt) throw notFound('payment attempt', attemptId);
  const order = await p.ctx.db.selectFrom('orders').selectAll().where('id', '=', attempt.order_id).executeTakeFirstOrThrow();
  return { attempt, order };
}

/** Applies what the gateway said of an attempt, one fact after another, in its order. */
async function applyFacts(p: Payments, attempt: PaymentAttempt, facts: readonly GatewayFact[], source: FactSource): Promise<ApplyResult[]> {
  const results: ApplyResult[] = [];
  for (const fact of facts) results.push(await applyFact(p.ctx, attempt.shop_id, attempt.provider, fact, source));
  return results;
}

/** Asks the gateway for the attempt's state and applies what it says. */
export async function readBack(p: Payments, attemptId: string, source: FactSource = 'readback'): Promise<ApplyResult[]> {
  const { attempt, order } = await loadAttempt(p, attemptId);
  const facts = await providerFor(p, attempt.provider).readBack(await attemptContext(p, attempt, order));
  return applyFacts(p, attempt, facts, source);
}

/**
 * Reconciliation's check of a payment held as captured (the SBPS cases "unpaid at the gateway ×
 * delivered"): it is read back and applied like any read-back, and if the gateway states a payment
 * that is not captured (authorised only, waiting for the customer, cancelled …), the two records
 * disagree in a way no fact can settle — a later authorisation never undoes a capture — so the
 * order is held for a person (or, past holding, an alert raised).
 */
export async function checkPaid(p: Payments, attemptId: string): Promise<void> {
  const { attempt, order } = await loadAttempt(p, attemptId);
  if (attempt.state !== 'captured' && attempt.state !== 'partially_refunded') return;
  const facts = await providerFor(p, attempt.provider).readBack(await attemptContext(p, attempt, order));
  await applyFacts(p, attempt, facts, 'readback');
  // Nothing the gateway could tell (a status kessai does not know) decides nothing: only a gateway
  // that states the payment is not captured disagrees.
  if (facts.length === 0 || facts.some((f) => f.fact.type === 'captured' || f.fact.type === 'refunded')) return;
  const said = facts.map((f) => f.fact.type).join(', ');
  const reason = `${attempt.provider} does not show payment ${attempt.merchant_ref} as captured (it says: ${said}), while the store holds ${attempt.captured_amount} yen captured`;
  await p.ctx.db.transaction().execute(async (tx) => {
    const current = await lockOrder(p.ctx, tx, order.id);
    // Already held: a person has it in hand (and a rerun of this check adds nothing).
    if (current.state === 'on_hold') return;
    const t = applyOrderEvent(orderSnapshot(current), 'hold');
    if (t.ok) {
      await applyOrderChange(tx, current, { ...t.order, holdReason: reason }, t.effects, 'reconciliation');
    } else {
      await insertRow(tx, 'alerts', { id: newId('alr'), kind: 'payment_discrepancy', message: `order ${current.number}: ${reason}`, ref: current.id, created_at: nowIso(), resolved_at: null });
    }
  });
}

/** `payment`: which of the order's payments (attempt id or merchant reference); the order's current one when left out. */
export type Operation = ({ kind: 'capture'; amount: number } | { kind: 'refund'; amount: number } | { kind: 'cancel' }) & { payment?: string };

/**
 * Runs a money operation at the gateway (from its outbox job `jobId`) and applies the facts it
 * answers with; one operation at a time per payment, and nothing again that an earlier run of the
 * job already did (operations.ts).
 */
export async function runOperation(p: Payments, attemptId: string, op: Operation, jobId: string): Promise<void> {
  const amount = op.kind === 'cancel' ? 0 : op.amount;
  const run = await beginOperation(p.ctx, jobId, attemptId, op.kind, amount);
  if (!run) return;
  const { attempt, order } = await loadAttempt(p, attemptId);
  const provider = providerFor(p, attempt.provider);
  const a = await attemptContext(p, attempt, order);
  const idempotencyKey = `kessai-${jobId}`;
  const facts =
    op.kind === 'capture' ? await provider.capture(a, op.amount, idempotencyKey)
    : op.kind === 'refund' ? await provider.refund(a, op.amount, idempotencyKey, run)
    : await provider.cancel(a, idempotencyKey);
  await applyFacts(p, attempt, facts, 'operation');
  await finishOperation(p.ctx, jobId);
}

const positiveYen = (field: string, amount: unknown): number => {
  if (typeof amount !== 'number' || !Number.isSafeInteger(amount) || amount <= 0) {
    throw invalid([{ field, reason: 'must be a positive whole number of yen' }]);
  }
  return amount;
};

/** An Idempotency-Key as the API and the CLI take it: visible ASCII, at most 255 characters. */
function checkIdempotencyKey(key: string | undefined): void {
  if (key !== undefined && !/^[\x21-\x7e]{1,255}$/.test(key)) {
    throw invalid([{ field: 'Idempotency-Key', reason: 'must be 1 to 255 visible ASCII characters (a UUID, for example)' }]);
  }
}

/**
 * An operator asks for a capture, refund or cancel. The request is checked against the money the
 * order holds now (including refunds already queued), then queued as an outbox job in the same
 * transaction: the gateway call itself happens in the worker, retried until it is certain.
 *
 * With an idempotency key (the API's `Idempotency-Key` header, the CLI's `--idempotency-key`), the
 * same request sent again — a retry after a lost answer, a double click — answers the job queued
 * the first time (`replayed`) instead of queueing a second refund; the same key with another amount
 * is refused.
 *
 * `op.payment` names another payment of the order than its current one: a duplicate payment (the
 * customer paid a second time through an older attempt, and the order was held for it) is refunded
 * by naming it.
 */
export async function requestOperation(p: Payments, orderRef: string, op: Operation, idempotencyKey?: string): Promise<{ jobKey: string; replayed: boolean }> {
  checkIdempotencyKey(idempotencyKey);
  const found = await findOrder(p.ctx, orderRef);
  const amount = op.kind === 'cancel' ? 0 : positiveYen('amount', op.amount);
  return p.ctx.db.transaction().execute(async (tx) => {
    const order = await lockOrder(p.ctx, tx, found.id);
    const attempt = await operationAttempt(tx, order, op.payment);
    if (idempotencyKey !== undefined) {
      // Under the order's lock: the same request sent twice at once finds the first one's job.
      const jobKey = `payment.${op.kind}:${order.id}:key:${idempotencyKey}`;
      const earlier = await tx.selectFrom('jobs').select('payload').where('dedupe_key', '=', jobKey).executeTakeFirst();
      if (earlier) {
        const was = JSON.parse(earlier.payload) as { amount: number; attemptId: string };
        if (was.amount !== amount || (op.payment !== undefined && was.attemptId !== attempt.id)) {
          throw new KessaiError('idempotency_key_reused', `Idempotency-Key "${idempotencyKey}" was used for a ${op.kind} of ${was.amount} yen on order ${order.number}; another request needs another key`, 409);
        }
        return { jobKey, replayed: true };
      }
    }
    if (op.kind === 'capture') {
      if (attempt.state !== 'authorized') throw new KessaiError('not_capturable', `payment is ${attempt.state}; only an authorized payment can be captured`, 409);
      if (amount > attempt.amount) throw invalid([{ field: 'amount', reason: `exceeds the authorized ${attempt.amount} yen` }]);
    }
    if (op.kind === 'refund') {
      if (attempt.state !== 'captured' && attempt.state !== 'partially_refunded') {
        throw new KessaiError('not_refundable', `payment is ${attempt.state}; only a captured payment can be refunded`, 409);
      }
      await checkRefundable(tx, attempt, amount);
    }
    if (op.kind === 'cancel' && !['pending', 'awaiting_payment', 'authorized'].includes(attempt.state)) {
      throw new KessaiError('not_cancellable', `payment is ${attempt.state}; refund a captured payment instead`, 409);
    }
    const refusal = providerFor(p, attempt.provider).refusal?.(attempt, op.kind, amount);
    if (refusal) throw new KessaiError(`not_${op.kind === 'capture' ? 'capturable' : op.kind === 'refund' ? 'refundable' : 'cancellable'}`, refusal, 409);
    const jobKey = idempotencyKey === undefined ? `payment.${op.kind}:${attempt.id}:${newId('op')}` : `payment.${op.kind}:${order.id}:key:${idempotencyKey}`;
    await enqueue(tx, { kind: `payment.${op.kind}`, payload: { attemptId: attempt.id, amount }, dedupeKey: jobKey });
    return { jobKey, replayed: false };
  });
}

/** The payment an operation is for: the one the operator named, or the order's current one. */
async function operationAttempt(tx: Tx, order: Order, payment: string | undefined): Promise<PaymentAttempt> {
  const attempts = await tx.selectFrom('payment_attempts').selectAll().where('order_id', '=', order.id).orderBy('created_at').execute();
  const wanted = payment ?? order.current_attempt_id;
  const attempt = attempts.find((a) => a.id === wanted || a.merchant_ref === wanted);
  if (attempt) return attempt;
  if (payment === undefined) throw new KessaiError('no_payment', `order ${order.number} has no payment`, 409);
  const known = attempts.map((a) => `${a.merchant_ref} (${a.provider}, ${a.state})`).join(', ') || 'none';
  throw invalid([{ field: 'payment', reason: `order ${order.number} has no payment "${payment}" (its payments: ${known})` }]);
}

/**
 * A new attempt replaced this one while its gateway page may still be open (another tab): where
 * the gateway can, that page is closed (`abandon`), so the customer cannot pay twice. A payment
 * made there meanwhile is applied as a superseded attempt's (a capture holds a paid order for a
 * refund, as before).
 */
export async function abandonSuperseded(p: Payments, attemptId: string): Promise<void> {
  const { attempt, order } = await loadAttempt(p, attemptId);
  const provider = providerFor(p, attempt.provider);
  if (order.current_attempt_id === attempt.id || attempt.state !== 'pending' || !provider.abandon) return;
  const facts = await provider.abandon(await attemptContext(p, attempt, order), `kessai-supersede-${attempt.id}`);
  await applyFacts(p, attempt, facts, 'readback');
}

/**
 * The reservation's time is up. The gateway is asked first (the customer may have paid a moment
 * ago), and where it can, told to stop taking the payment: a payment page left open would take
 * money for stock given back. Only an order still waiting for payment afterwards expires and gives
 * its stock back.
 */
export async function expireOrder(p: Payments, orderId: string): Promise<string> {
  const order = await p.ctx.db.selectFrom('orders').selectAll().where('id', '=', orderId).executeTakeFirst();
  if (!order) return 'gone';
  if (order.state !== 'pending_payment') return order.state;
  // Not a moment early: the customer's chance to pay cannot be given back once ended.
  if (order.expires_at > nowIso()) return order.state;
  const attemptId = order.current_attempt_id;
  // A payment may have been notified and answered, but not applied yet (the inbox is behind, or
  // applying it failed and waits for the sweep): it comes first, or a paid order would expire.
  await applyWaiting(p.ctx, order.shop_id, (await p.ctx.db.selectFrom('payment_attempts').select('merchant_ref').where('order_id', '=', order.id).execute()).map((a) => a.merchant_ref));
  if (attemptId) {
    const { attempt } = await loadAttempt(p, attemptId);
    const provider = providerFor(p, attempt.provider);
    if (!provider.abandon) await readBack(p, attemptId);
    else {
      // The key is the attempt's: a rerun of this job repeats the same request.
      const facts = await provider.abandon(await attemptContext(p, attempt, order), `kessai-expire-${attemptId}`);
      await applyFacts(p, attempt, facts, 'readback');
    }
  }
  return p.ctx.db.transaction().execute(async (tx) => {
    const current = await lockOrder(p.ctx, tx, orderId);
    if (current.state !== 'pending_payment') return current.state;
    if (current.expires_at > nowIso()) return current.state;
    const t = applyOrderEvent(orderSnapshot(current), 'expire');
    if (!t.ok) return current.state;
    await applyOrderChange(tx, current, t.order, t.effects, 'reservation expired');
    return t.order.state;
  });
}
