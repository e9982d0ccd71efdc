import type { PaymentFact } from '../commerce/payment-machine.js';
import type { ShopSettings } from '../commerce/shops.js';
import { StopRetrying } from '../errors.js';
import {
  komojuApi,
  KomojuApiError,
  KomojuEventParseError,
  parseKomojuEvent,
  verifyKomojuWebhook,
  type KomojuApi,
  type KomojuPayment,
  type KomojuSession,
} from '../gateways/komoju/index.js';
import type { AttemptContext, GatewayFact, GatewayReply, NotificationResult, PaymentProvider } from './provider.js';

/*
 * KOMOJU hosted sessions as a provider (gateways.md §3). Checkout creates a session and sends the
 * customer to its page; webhooks (HMAC over the raw body), the browser return (read-back of the
 * session) and money operations (the payments API) all turn KOMOJU's payment object into the same
 * facts with the same keys, so whichever arrives first wins and the others are duplicates.
 *
 * Fact keys say what KOMOJU stated, not which message said it: `<payment id>:<status>` for a state,
 * `refund:<refund id>` for each refund. A webhook delivered twice (same X-Komoju-ID, same event id)
 * therefore yields keys already recorded, and so does a read-back of news a webhook already brought.
 */

/** Methods KOMOJU offers through sessions that kessai knows how to treat. */
export const KOMOJU_PAYMENT_TYPES = ['credit_card', 'konbini', 'bank_transfer', 'pay_easy', 'paypay', 'linepay', 'merpay', 'rakutenpay', 'au_pay'] as const;
const DEFAULT_PAYMENT_TYPES = ['credit_card', 'konbini'];
/** Methods where `authorized` means "the customer still has to pay" (konbini, bank, Pay-easy), not a card hold. */
const PAY_LATER = new Set(['konbini', 'bank_transfer', 'pay_easy']);

function setting(settings: ShopSettings, key: string): string {
  const value = settings[`komoju.${key}`];
  if (typeof value !== 'string' || value === '') throw new Error(`KOMOJU is not configured for this shop: komoju.${key} is missing (kessai shop set <shop> komoju.${key}=…)`);
  return value;
}

const reply = (status: number, body: string): GatewayReply => ({ status, contentType: 'text/plain; charset=utf-8', body });

/**
 * What the customer paid for the order, in yen: KOMOJU's total minus its payment-method fee (the
 * official plugin's check, gateways.md §3.6 #5). A payment in another currency (KOMOJU converted it)
 * is measured by the session's yen amount, which only a read-back knows.
 */
export function orderAmountOf(payment: KomojuPayment, sessionAmount?: number): number | undefined {
  if (payment.currency !== 'JPY') return sessionAmount;
  const total = typeof payment.total === 'number' ? payment.total : payment.amount;
  return total - (typeof payment.payment_method_fee === 'number' ? payment.payment_method_fee : 0);
}

/**
 * What the customer needs to pay at a konbini or bank, shown on the order page and in the mail:
 * `{ method, instructions: { store, confirmationCode, receipt, url, deadline, fee } }`.
 */
function payLaterDetails(payment: KomojuPayment): Record<string, unknown> {
  const d = payment.payment_details ?? { type: 'unknown' };
  const pick = (key: string) => (typeof d[key] === 'string' || typeof d[key] === 'number' ? d[key] : undefined);
  const instructions: Record<string, unknown> = {
    store: pick('store'),
    confirmationCode: pick('confirmation_code'),
    receipt: pick('receipt'),
    url: pick('instructions_url'),
    deadline: payment.payment_deadline ?? undefined,
    fee: payment.payment_method_fee,
  };
  return { method: d.type, instructions: Object.fromEntries(Object.entries(instructions).filter(([, v]) => v !== undefined && v !== null)) };
}

/**
 * KOMOJU's payment object as facts. A pending card payment says nothing yet; `failed` is not an API
 * status (gateways.md §5) and a failed card try leaves the session open for another, so it is no
 * fact either. A konbini, bank transfer or Pay-easy payment waits for the customer whether KOMOJU
 * shows it `authorized` (its current documents) or `pending` (older samples; gateways.md §5: treat
 * both as unpaid): either way the customer holds a slip, and the order must wait for it rather than
 * expire with its reservation.
 */
export function paymentFacts(payment: KomojuPayment, merchantRef: string, sessionAmount?: number): GatewayFact[] {
  const amount = orderAmountOf(payment, sessionAmount);
  const base = { merchantRef, gatewayRef: payment.session ?? undefined, payload: payment };
  const at = (state: string, fact: PaymentFact, details?: Record<string, unknown>): GatewayFact => ({ ...base, eventKey: `${payment.id}:${state}`, fact, ...(details ? { details } : {}) });
  // An amount that cannot be measured must still reach the order, as a mismatch a person looks at.
  const money = amount !== undefined && Number.isSafeInteger(amount) && amount > 0 ? amount : 1;
  const method = payment.payment_details?.type ?? '';
  switch (payment.status) {
    case 'pending':
      return PAY_LATER.has(method) ? [at('awaiting', { type: 'awaiting_payment', amount: money }, payLaterDetails(payment))] : [];
    case 'authorized':
      return PAY_LATER.has(method)
        ? [at('awaiting', { type: 'awaiting_payment', amount: money }, payLaterDetails(payment))]
        : [at('authorized', { type: 'authorized', amount: money }, { method })];
    case 'captured':
    case 'refunded': {
      const facts = [at(`captured:${money}`, { type: 'captured', amount: money }, { method })];
      for (const refund of payment.refunds ?? []) {
        if (typeof refund.amount === 'number' && refund.amount > 0 && refund.id) {
          facts.push({ ...base, eventKey: `refund:${refund.id}`, fact: { type: 'refunded', amount: refund.amount, refundId: refund.id }, payload: refund });
        }
      }
      return facts;
    }
    case 'cancelled':
      return [at('cancelled', { type: 'cancelled' })];
    case 'expired':
      return [at('expired', { type: 'expired' })];
    default:
      return [];
  }
}

/** A definite refusal from KOMOJU (4xx other than 409) will not change on a retry: a person must look. */
async function guarded<T>(what: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    if (error instanceof KomojuApiError && !error.retryable) throw new StopRetrying(`KOMOJU refused the ${what}: ${error.message}`);
    throw error;
  }
}

export function komojuProvider(opts: { fetchImpl?: typeof fetch; timeoutMs?: number } = {}): PaymentProvider {
  const api = (settings: ShopSettings): KomojuApi =>
    komojuApi({ secretKey: setting(settings, 'secretKey'), baseUrl: setting(settings, 'apiUrl'), fetchImpl: opts.fetchImpl, timeoutMs: opts.timeoutMs, headers: { 'komoju-via': 'kessai' } });

  /** The attempt's session with its payment, or the payment found by our reference when the session id was never stored. */
  async function current(a: AttemptContext): Promise<{ session?: KomojuSession; payment?: KomojuPayment }> {
    const client = api(a.settings);
    if (a.attempt.gateway_ref) {
      const session = await client.sessions.get(a.attempt.gateway_ref);
      return { session, payment: session.payment ?? undefined };
    }
    const list = await client.request<{ data?: KomojuPayment[] }>('GET', `/payments?external_order_num=${encodeURIComponent(a.attempt.merchant_ref)}`);
    return { payment: list.data?.[0] };
  }

  function factsOf(a: AttemptContext, found: { session?: KomojuSession; payment?: KomojuPayment }): GatewayFact[] {
    if (found.payment) return paymentFacts(found.payment, a.attempt.merchant_ref, found.session?.amount);
    if (found.session?.status === 'cancelled') {
      return [{ merchantRef: a.attempt.merchant_ref, gatewayRef: found.session.id, eventKey: `${found.session.id}:cancelled`, fact: { type: 'cancelled' }, payload: found.session }];
    }
    return [];
  }

  async function paymentOf(a: AttemptContext, what: string): Promise<KomojuPayment> {
    const { payment } = await current(a);
    if (!payment) throw new StopRetrying(`KOMOJU has no payment for ${a.attempt.merchant_ref} to ${what}`);
    return payment;
  }

  return {
    name: 'komoju',

    methods(settings) {
      if (settings['komoju.enabled'] !== true) return [];
      for (const key of ['secretKey', 'apiUrl']) if (!settings[`komoju.${key}`]) return [];
      const configured = settings['komoju.paymentTypes'];
      return typeof configured === 'string' && configured ? configured.split(',') : DEFAULT_PAYMENT_TYPES;
    },

    async start(a) {
      const { settings, order, attempt } = a;
      const types = attempt.method ? [attempt.method] : this.methods(settings);
      const session = await guarded('session', () =>
        api(settings).sessions.create(
          {
            amount: attempt.amount,
            currency: 'JPY',
            return_url: a.urls.returnUrl,
            default_locale: 'ja',
            email: order.email,
            payment_types: types,
            payment_data: {
              external_order_num: attempt.merchant_ref,
              ...(settings['komoju.captureMode'] === 'manual' ? { capture: 'manual' } : {}),
            },
            line_items: order.lines.map((l) => ({ description: l.name, quantity: l.quantity, amount: l.unitPrice })),
            metadata: { kessai_order: order.number, kessai_attempt: attempt.id },
          },
          // One session per attempt: a repeated start (double click, retry) gets the same session back.
          { idempotencyKey: `kessai-session-${attempt.id}` },
        ),
      );
      return { action: { type: 'redirect', url: session.session_url }, gatewayRef: session.id };
    },

    async parseNotification({ rawBody, headers, settings }): Promise<NotificationResult> {
      const secrets = [settings['komoju.webhookSecret'], settings['komoju.webhookSecretPrevious']].filter((s): s is string => typeof s === 'string' && s !== '');
      if (secrets.length === 0) return { rejected: true, reason: 'komoju.webhookSecret is not set for this shop', reply: reply(401, 'webhook secret not configured') };
      if (!verifyKomojuWebhook(rawBody, headers['x-komoju-signature'], secrets)) {
        return { rejected: true, reason: 'X-Komoju-Signature missing or not valid for the raw body', reply: reply(401, 'invalid signature') };
      }
      let event;
      try {
        event = parseKomojuEvent(rawBody);
      } catch (error) {
        const reason = error instanceof KomojuEventParseError ? error.message : String(error);
        return { rejected: true, reason: `signed but unreadable webhook: ${reason}`, reply: reply(400, 'malformed event') };
      }
      // ping, payment.updated, customer.*, settlement.* …: acknowledged, nothing to do.
      const data = event.data as Partial<KomojuPayment>;
      if (!event.type.startsWith('payment.') || data.resource !== 'payment' || typeof data.id !== 'string') return { verified: true, facts: [], reply: reply(200, 'ok') };
      const merchantRef = typeof data.external_order_num === 'string' ? data.external_order_num : '';
      // Converted into another currency: only the session knows the yen amount, so ask KOMOJU.
      if (data.currency !== 'JPY') return { verified: false, merchantRef, reply: reply(200, 'ok') };
      const payment = data as KomojuPayment;
      // A payment that ended without money speaks only for itself, not for the attempt: a session
      // keeps every try (a declined card stays pending beside the card that paid), all under the
      // attempt's external_order_num, and KOMOJU may expire or cancel a try long after another one
      // paid. Applied as it stands it would conflict with the capture and hold a paid order
      // (gateways.md §3.6 #2, #3). The session knows which payment completed it: ask it.
      if (payment.status === 'cancelled' || payment.status === 'expired') return { verified: false, merchantRef, reply: reply(200, 'ok') };
      const facts = paymentFacts(payment, merchantRef).map((f) => ({
        ...f,
        payload: { event: event.id, delivery: headers['x-komoju-id'] ?? null, type: event.type, data: f.payload },
      }));
      return { verified: true, facts, reply: reply(200, 'ok') };
    },

    async readBack(a) {
      return factsOf(a, await current(a));
    },

    async abandon(a, idempotencyKey) {
      let found = await current(a);
      if (!found.payment && found.session?.status === 'pending') {
        try {
          found = { session: await api(a.settings).sessions.cancel(found.session.id, { idempotencyKey }) };
        } catch (error) {
          if (!(error instanceof KomojuApiError) || error.retryable) throw error;
          // Refused: most likely the customer completed the session a moment ago. Its payment decides.
          found = await current(a);
        }
      }
      if (found.payment) return factsOf(a, found);
      // KOMOJU now says `cancelled`, but the attempt ended because its time was up, and the order
      // must say so (expired, no cancellation mail). Stated as expired, the attempt is final as
      // well, so a later read-back's `cancelled` is old news, not a conflict on an expired order.
      if (found.session?.status === 'cancelled') {
        return [{ merchantRef: a.attempt.merchant_ref, gatewayRef: found.session.id, eventKey: `${found.session.id}:expired`, fact: { type: 'expired' }, payload: found.session }];
      }
      return [];
    },

    async capture(a, amount, idempotencyKey) {
      const payment = await paymentOf(a, 'capture');
      if (payment.status !== 'authorized') return paymentFacts(payment, a.attempt.merchant_ref);
      const measured = orderAmountOf(payment);
      if (measured !== amount) throw new StopRetrying(`KOMOJU captures the whole authorization (${measured ?? payment.amount} yen); a capture of ${amount} yen cannot be made`);
      return paymentFacts(await guarded('capture', () => api(a.settings).payments.capture(payment.id, { idempotencyKey })), a.attempt.merchant_ref);
    },

    async refund(a, amount, idempotencyKey) {
      const payment = await paymentOf(a, 'refund');
      // Each refund carries the job's key as its description: a job that runs again after KOMOJU's
      // 24-hour key lifetime still finds its refund and does not refund twice.
      const done = (payment.refunds ?? []).some((r) => r.description === idempotencyKey);
      if (done || payment.status !== 'captured') return paymentFacts(payment, a.attempt.merchant_ref);
      const refunded = await guarded('refund', () => api(a.settings).payments.refund(payment.id, { idempotencyKey, amount, description: idempotencyKey }));
      return paymentFacts(refunded, a.attempt.merchant_ref);
    },

    async cancel(a, idempotencyKey) {
      const found = await current(a);
      const client = api(a.settings);
      if (!found.payment) {
        if (!found.session || found.session.status !== 'pending') return factsOf(a, found);
        // A key names one request: the session's cancel and the payment's (below) get their own.
        const cancelled = await guarded('session cancel', () => client.sessions.cancel(found.session!.id, { idempotencyKey: `${idempotencyKey}:session` }));
        return factsOf(a, { session: cancelled, payment: cancelled.payment ?? undefined });
      }
      if (found.payment.status !== 'pending' && found.payment.status !== 'authorized') return factsOf(a, found);
      const cancelled = await guarded('cancel', () => client.payments.cancel(found.payment!.id, { idempotencyKey }));
      return paymentFacts(cancelled, a.attempt.merchant_ref);
    },
  };
}
