import { z } from 'zod';
import { findOrderByToken } from '../commerce/orders.js';
import { open, seal } from '../commerce/secrets.js';
import { KessaiError, notFound, StopRetrying } from '../errors.js';
import { nowIso } from '../ids.js';
import type { JobKind } from '../jobs/registry.js';
import type { ApplyResult, FactSource } from './apply-fact.js';
import type { PaymentAction } from './provider.js';
import { attemptContext, readBack, type Payments } from './service.js';

/*
 * Gateways whose browser script or unsigned webhook only *name* a payment (atone): the name is
 * checked with the gateway's API (provider.claim), adopted as the attempt's gateway reference, and
 * the payment is read back — the read-back is the fact. Also the member links such gateways keep
 * (atone's authentication token) and the sale confirmation at shipment (provider.settle).
 */

async function load(p: Payments, attemptId: string) {
  const attempt = await p.ctx.db.selectFrom('payment_attempts').selectAll().where('id', '=', attemptId).executeTakeFirst();
  if (!attempt) throw notFound('payment attempt', attemptId);
  const order = await p.ctx.db.selectFrom('orders').selectAll().where('id', '=', attempt.order_id).executeTakeFirstOrThrow();
  return { attempt, order };
}

/** A gateway payment named for an attempt: adopted only if the gateway says it is the attempt's, then read back. */
export async function claimPayment(p: Payments, attemptId: string, gatewayRef: string, source: FactSource): Promise<ApplyResult[]> {
  const { attempt, order } = await load(p, attemptId);
  const provider = p.providers.get(attempt.provider);
  if (!provider?.claim) throw new KessaiError('unsupported', `${attempt.provider} payments are not claimed by id`, 400);
  // A payment the gateway replaced (atone's 取引更新) is old news: the answer is the current one's state.
  const replaced = (JSON.parse(attempt.details) as { replacedTransactions?: string[] }).replacedTransactions ?? [];
  if (replaced.includes(gatewayRef)) return readBack(p, attempt.id, source);
  if (attempt.gateway_ref !== null && attempt.gateway_ref !== gatewayRef) {
    throw new KessaiError('conflict', `payment attempt ${attempt.merchant_ref} already belongs to ${attempt.gateway_ref}, not ${gatewayRef}`, 409);
  }
  if (attempt.gateway_ref === null) {
    if (!(await provider.claim(await attemptContext(p, attempt, order), gatewayRef))) {
      throw new KessaiError('not_this_payment', `${attempt.provider} payment ${gatewayRef} is not the payment of order ${order.number}`, 409);
    }
    await p.ctx.db.updateTable('payment_attempts').set({ gateway_ref: gatewayRef, updated_at: nowIso() }).where('id', '=', attempt.id).where('gateway_ref', 'is', null).execute();
  }
  return readBack(p, attempt.id, source);
}

/** The attempt a gateway's unsigned notification is about, by our reference. */
export async function attemptByRef(p: Payments, shopId: string, provider: string, merchantRef: string): Promise<string | undefined> {
  const row = await p.ctx.db.selectFrom('payment_attempts').select('id').where('shop_id', '=', shopId).where('provider', '=', provider).where('merchant_ref', '=', merchantRef).executeTakeFirst();
  return row?.id;
}

/**
 * Keeps a gateway's member token for the order's customer, when the customer is a registered member
 * (a guest has no account to keep it on). Sealed at rest. Answers whether it was kept.
 */
export async function linkMemberToken(p: Payments, orderId: string, party: 'atone', token: string, externalId: string | null): Promise<boolean> {
  const order = await p.ctx.db.selectFrom('orders').select('customer_id').where('id', '=', orderId).executeTakeFirstOrThrow();
  const customer = await p.ctx.db.selectFrom('customers').select(['id', 'password_hash']).where('id', '=', order.customer_id).executeTakeFirstOrThrow();
  if (customer.password_hash === null) return false;
  const now = nowIso();
  const sealed = seal(p.ctx.config.masterKey, token, `customer:${customer.id}:${party}`);
  await p.ctx.db
    .insertInto('customer_links')
    .values({ customer_id: customer.id, party, external_id: externalId, secret: sealed, linked_at: now, updated_at: now })
    .onConflict((oc) => oc.columns(['customer_id', 'party']).doUpdateSet({ external_id: externalId, secret: sealed, updated_at: now }))
    .execute();
  return true;
}

/** The member's saved token at a party, for the order's customer; undefined for guests and the unlinked. */
export async function memberToken(p: Payments, customerId: string, party: 'atone'): Promise<string | undefined> {
  const link = await p.ctx.db.selectFrom('customer_links').select('secret').where('customer_id', '=', customerId).where('party', '=', party).executeTakeFirst();
  return link?.secret ? open(p.ctx.config.masterKey, link.secret, `customer:${customerId}:${party}`) : undefined;
}

/**
 * What the shop page needs besides the provider's action: for atone, the member's saved token as
 * pre_token (so a returning member skips atone's login) and where the modal's callbacks go.
 */
export async function forBrowser(p: Payments, orderToken: string, action: PaymentAction): Promise<PaymentAction> {
  if (action.type !== 'atone') return action;
  const order = await findOrderByToken(p.ctx, orderToken);
  const preToken = await memberToken(p, order.customer_id, 'atone');
  return { ...action, config: { ...action.config, pre_token: preToken ?? '', callbackUrl: `/orders/${orderToken}/atone`, orderUrl: `/orders/${orderToken}` } };
}

/** Confirms the sale of an order's payment at its gateway (atone's 売上確定), once, when it ships. */
export async function settlePayment(p: Payments, orderId: string): Promise<void> {
  const order = await p.ctx.db.selectFrom('orders').selectAll().where('id', '=', orderId).executeTakeFirstOrThrow();
  if (!order.current_attempt_id) return;
  const { attempt } = await load(p, order.current_attempt_id);
  const provider = p.providers.get(attempt.provider);
  const details = JSON.parse(attempt.details) as Record<string, unknown>;
  if (!provider?.settle || details.settled) return;
  // After an edit the sale is confirmed on the transaction that replaced the first (payments/edits.ts).
  if (details.updateFailed) throw new StopRetrying(`order ${order.number} was edited but its payment could not be updated (${String(details.updateFailed)}); settle after resolving that`);
  if (provider.update && attempt.amount !== order.total) throw new Error(`order ${order.number} was edited; waiting for its payment to be updated before the sale is confirmed`);
  const settled = await provider.settle(await attemptContext(p, attempt, order));
  await p.ctx.db.updateTable('payment_attempts').set({ details: JSON.stringify({ ...details, ...settled }), updated_at: nowIso() }).where('id', '=', attempt.id).execute();
}

export function settleJobKind(p: Payments): JobKind {
  return {
    kind: 'payment.settle',
    async run(payload) {
      await settlePayment(p, z.object({ orderId: z.string() }).parse(payload).orderId);
    },
  };
}
