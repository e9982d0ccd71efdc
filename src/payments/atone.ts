import type { ShopSettings } from '../commerce/shops.js';
import { StopRetrying } from '../errors.js';
import {
  ATONE_OPTION_RECURRING,
  atoneApi,
  AtoneApiError,
  atoneConsistencyProblems,
  AtonePaymentError,
  atoneTransactionState,
  buildAtonePayment,
  buildAtonePaymentFields,
  parseAtoneWebhook,
  verifyAtoneWebhook,
  type AtoneApi,
  type AtonePaymentInput,
  type AtoneTransaction,
  type AtoneWebhookChecksumScheme,
} from '../gateways/atone/index.js';
import type { AttemptContext, GatewayFact, GatewayReply, NotificationResult, PaymentProvider } from './provider.js';

/*
 * atone (NP後払い) as a provider (gateways.md §2). The customer pays NP later; for the shop, a
 * transaction atone authorized is money it will be paid, so an authorization is the `captured` fact:
 * the order is paid and fulfilled. 売上確定 (settle) is atone's bookkeeping step, done at once (the
 * payment object's sales_settled) or on shipment (the `payment.settle` job), per shop.
 *
 * Nothing atone's browser script or webhooks say is taken as a fact: they only name a transaction id,
 * which is read back through 取引参照 and checked against the attempt (shop_transaction_no, amount,
 * items). A transaction that disagrees with the order is refunded at atone (課金払戻) and the attempt
 * fails, as the seed requires.
 */

function setting(settings: ShopSettings, key: string): string {
  const value = settings[`atone.${key}`];
  if (typeof value !== 'string' || value === '') throw new Error(`atone is not configured for this shop: atone.${key} is missing (kessai shop set <shop> atone.${key}=…)`);
  return value;
}

const reply = (status: number, body: string): GatewayReply => ({ status, contentType: 'text/plain; charset=utf-8', body });

/** atone refuses a longer item_name (EATN0338); the name is shown to the customer, not compared on read-back. */
const ATONE_ITEM_NAME_MAX = 100;

/** The payment object's items for an order: what 取引参照 must give back, line for line. */
function atoneLines(a: AttemptContext) {
  return a.order.lines.map((l, i) => ({ id: `line${i + 1}`, name: [...l.name].slice(0, ATONE_ITEM_NAME_MAX).join(''), unitPrice: l.unitPrice, quantity: l.quantity }));
}

/**
 * The payment object for the attempt as the order is now: for the modal, and the body of 取引更新 /
 * 取引登録. A basket with a subscription asks the member's consent to later charges (option 1) when
 * the shop takes recurring purchases.
 */
function paymentInput(a: AttemptContext): AtonePaymentInput {
  const recurring = a.order.recurring === true && a.settings['atone.recurring'] === true;
  return {
    shopTransactionNo: a.attempt.merchant_ref,
    lines: atoneLines(a),
    customer: { customer_name: a.order.customerName, email: a.order.email },
    salesSettled: a.settings['atone.settleMode'] === 'immediate',
    description: a.order.number,
    ...(recurring ? { transactionOptions: [ATONE_OPTION_RECURRING] } : {}),
  };
}

/** What the server sends in place of the modal (取引更新 / 取引登録): no checksum, the member's token. */
function registration(a: AttemptContext, token: string, salesSettled: boolean) {
  try {
    return { ...buildAtonePaymentFields({ ...paymentInput(a), salesSettled }), authentication_token: token };
  } catch (error) {
    if (error instanceof AtonePaymentError) throw new StopRetrying(`the order cannot be sent to atone: ${error.message}`);
    throw error;
  }
}

/** An answer atone will give again whatever we do: retrying cannot help, a person must look. */
function refused(what: string, error: unknown): never {
  if (error instanceof AtoneApiError && !error.retryable) throw new StopRetrying(`atone refused the ${what}: ${error.message}`);
  throw error;
}

export function atoneProvider(opts: { fetchImpl?: typeof fetch; timeoutMs?: number } = {}): PaymentProvider & {
  /** The transaction behind an id the browser or a webhook named, if it belongs to the attempt. */
  claim(a: AttemptContext, transactionId: string): Promise<boolean>;
} {
  const api = (settings: ShopSettings): AtoneApi => atoneApi({ secretKey: setting(settings, 'secretKey'), baseUrl: setting(settings, 'apiUrl'), fetchImpl: opts.fetchImpl, timeoutMs: opts.timeoutMs });

  /** What atone's transaction means for the attempt, refunding one that does not match the order. */
  async function factsOf(a: AttemptContext, t: AtoneTransaction): Promise<GatewayFact[]> {
    const base = { merchantRef: a.attempt.merchant_ref, gatewayRef: t.id, payload: t };
    const key = (what: string) => `${t.id}:${what}`;
    const state = atoneTransactionState(t);
    if (state === 'unknown') return [];
    if (state === 'declined') {
      return [{ ...base, eventKey: key('declined'), fact: { type: 'failed', reason: `atone declined the payment (reason ${String(t.authorization_result_ng_reason ?? 'unknown')})` } }];
    }
    const problems = atoneConsistencyProblems(t, {
      amount: a.attempt.amount,
      shop_transaction_no: a.attempt.merchant_ref,
      items: atoneLines(a).map((l) => ({ shop_item_id: l.id, item_price: l.unitPrice, item_count: l.quantity })),
    });
    // Checked when the payment is first accepted. Once accepted the order may change (an operator's
    // edit) before atone's transaction is updated, and a later read-back must not take that for a
    // tampered payment and refund the customer in full.
    if (problems.length > 0 && a.attempt.state === 'pending') {
      // Refunded in full (repeating it cannot refund twice: the client reads the transaction back).
      if (state !== 'refunded') await api(a.settings).refund(t.id);
      return [{ ...base, eventKey: key('inconsistent'), fact: { type: 'failed', reason: `atone transaction does not match the order, refunded at atone: ${problems.join('; ')}` } }];
    }
    const settled = t.sales_settled_datetime ?? (t.sales_settled === true ? 'yes' : undefined);
    const facts: GatewayFact[] = [{ ...base, eventKey: key(`captured:${a.attempt.amount}`), fact: { type: 'captured', amount: a.attempt.amount }, details: { transactionId: t.id, ...(settled ? { settled } : {}) } }];
    if (state === 'refunded') {
      const refunded = typeof t.amount_refund_total === 'number' && t.amount_refund_total > 0 ? t.amount_refund_total : a.attempt.amount;
      facts.push({ ...base, eventKey: key(`refunded:${refunded}`), fact: { type: 'refunded', amount: refunded, refundId: `${t.id}:refund` } });
    }
    return facts;
  }

  async function transactionOf(a: AttemptContext): Promise<AtoneTransaction | undefined> {
    if (!a.attempt.gateway_ref) return undefined;
    return api(a.settings).reference(a.attempt.gateway_ref);
  }

  return {
    name: 'atone',
    pageInStore: true,
    // EATN0331: amount ≥ 1 (the seed's 下限金額 1円).
    minAmount: 1,
    // amount 1–7 digits (EATN0331), item_price at most 6 digits (EATN0339).
    maxAmount: 9_999_999,
    maxUnitPrice: 999_999,

    methods(settings) {
      if (settings['atone.enabled'] !== true) return [];
      for (const key of ['publicKey', 'secretKey', 'apiUrl', 'scriptUrl']) if (!settings[`atone.${key}`]) return [];
      return ['atone'];
    },

    async start(a) {
      const { settings } = a;
      try {
        const payment = buildAtonePayment(paymentInput(a), { secretKey: setting(settings, 'secretKey') });
        return { action: { type: 'atone', config: { scriptUrl: setting(settings, 'scriptUrl'), pub_key: setting(settings, 'publicKey'), payment, pre_token: '' } } };
      } catch (error) {
        if (error instanceof AtonePaymentError) throw new Error(`the order cannot be sent to atone: ${error.message}`);
        throw error;
      }
    },

    async parseNotification({ rawBody, headers, settings }): Promise<NotificationResult> {
      const scheme = settings['atone.webhookChecksum'];
      if (typeof scheme === 'string' && scheme !== 'off') {
        const valid = verifyAtoneWebhook(rawBody, headers['np-confirmation-checksum'], setting(settings, 'secretKey'), { scheme: scheme as AtoneWebhookChecksumScheme });
        if (!valid) return { rejected: true, reason: 'Np-Confirmation-Checksum missing or not valid', reply: reply(401, 'invalid checksum') };
      }
      let claim;
      try {
        claim = parseAtoneWebhook(rawBody);
      } catch (error) {
        return { rejected: true, reason: `unreadable atone webhook: ${error instanceof Error ? error.message : String(error)}`, reply: reply(400, 'malformed') };
      }
      // Never trusted as it is: the transaction is read back and checked against the attempt.
      if (!claim.shopTransactionNo) return { verified: true, facts: [], reply: reply(200, 'ok') };
      return { verified: false, merchantRef: claim.shopTransactionNo, gatewayRef: claim.transactionId ?? undefined, reply: reply(200, 'ok') };
    },

    async claim(a, transactionId) {
      const t = await api(a.settings).reference(transactionId);
      return String(t.shop_transaction_no) === a.attempt.merchant_ref;
    },

    async readBack(a) {
      const t = await transactionOf(a);
      return t ? factsOf(a, t) : [];
    },

    async capture(a) {
      // An atone authorization is already the shop's money; there is nothing to capture.
      const t = await transactionOf(a);
      return t ? factsOf(a, t) : [];
    },

    async refund(a, amount) {
      const t = await transactionOf(a);
      if (!t) throw new StopRetrying(`atone has no transaction for ${a.attempt.merchant_ref} to refund`);
      if (amount !== a.attempt.captured_amount - a.attempt.refunded_amount || a.attempt.refunded_amount > 0) {
        throw new StopRetrying(`atone refunds a transaction in full only (${a.attempt.captured_amount} yen); to charge less, the order must be updated at atone (取引更新)`);
      }
      try {
        return await factsOf(a, await api(a.settings).refund(t.id));
      } catch (error) {
        if (error instanceof AtoneApiError) throw new StopRetrying(`atone refused the refund: ${error.message}`);
        throw error;
      }
    },

    async cancel(a) {
      // Before atone authorized anything there is nothing to cancel there; after, a cancel is a refund.
      const t = await transactionOf(a);
      if (t && atoneTransactionState(t) !== 'declined') throw new StopRetrying('an atone payment that was authorized is cancelled with a full refund');
      return [{ merchantRef: a.attempt.merchant_ref, eventKey: `${a.attempt.id}:cancelled`, fact: { type: 'cancelled' }, payload: { operation: 'cancel' } }];
    },

    async settle(a) {
      const t = await transactionOf(a);
      if (!t) throw new StopRetrying(`atone has no transaction for ${a.attempt.merchant_ref} to settle`);
      const state = atoneTransactionState(t);
      if (state === 'settled') return { settled: t.sales_settled_datetime ?? 'yes' };
      if (state !== 'authorized') throw new StopRetrying(`atone transaction ${t.id} is ${state}; only an authorized one is settled`);
      const settled = await api(a.settings).settle(t.id);
      return { settled: settled.sales_settled_datetime ?? 'yes' };
    },

    async update(a) {
      const client = api(a.settings);
      let t = await transactionOf(a);
      if (!t) throw new StopRetrying(`atone has no transaction for ${a.attempt.merchant_ref} to update`);
      // A run that stopped after atone answered: the transaction it made replaced ours (§2.7 pitfall 4).
      for (let hops = 0; t.related_transaction && hops < 5; hops++) {
        const newer: AtoneTransaction = await client.reference(t.related_transaction);
        if (!newer.updated_transactions?.includes(t.id)) break;
        t = newer;
      }
      const state = atoneTransactionState(t);
      if (state !== 'authorized' && state !== 'settled') throw new StopRetrying(`atone transaction ${t.id} is ${state}; only an authorized one is updated`);
      const matches = atoneConsistencyProblems(t, {
        amount: a.order.total,
        shop_transaction_no: a.attempt.merchant_ref,
        items: atoneLines(a).map((l) => ({ shop_item_id: l.id, item_price: l.unitPrice, item_count: l.quantity })),
      }).length === 0;
      if (!matches) {
        const token = t.authentication_token;
        if (typeof token !== 'string' || !token) throw new StopRetrying(`atone transaction ${t.id} names no member token, which 取引更新 needs`);
        // A sale already confirmed stays confirmed on the transaction that replaces it.
        const next = await client.update(t.id, registration(a, token, state === 'settled')).catch((error: unknown) => refused('update (取引更新)', error));
        if (atoneTransactionState(next) === 'declined') {
          throw new StopRetrying(`atone declined the update (取引更新, reason ${String(next.authorization_result_ng_reason ?? 'unknown')}); ${t.id} for ${t.amount} yen stands`);
        }
        t = next;
      }
      const settled = t.sales_settled_datetime ?? (t.sales_settled === true ? 'yes' : undefined);
      return { gatewayRef: t.id, amount: a.order.total, details: { transactionId: t.id, ...(settled ? { settled } : {}) } };
    },

    async register(a, memberToken) {
      if (a.settings['atone.recurring'] !== true) throw new StopRetrying('the shop does not take recurring purchases with atone (atone.recurring is off)');
      const t = await api(a.settings)
        .register({ ...registration(a, memberToken, a.settings['atone.settleMode'] === 'immediate'), transaction_options: [ATONE_OPTION_RECURRING] })
        .catch((error: unknown) => refused('registration (取引登録)', error));
      return t.id;
    },
  };
}
