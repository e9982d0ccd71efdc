import { createHmac, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';
import type { PaymentFact } from '../commerce/payment-machine.js';
import type { ShopSettings } from '../commerce/shops.js';
import type { AttemptContext, GatewayFact, GatewayReply, NotificationResult, PaymentProvider } from './provider.js';

/*
 * Adapter for testpay, the sandbox's own gateway (src/sandbox/testpay.ts). It is the smallest
 * complete example of the provider seam: a hosted page to redirect to, a webhook signed with
 * HMAC-SHA256 over the raw body, a read-back API, and money operations with idempotency keys.
 * Everything testpay says is turned into facts by one function, whichever channel it came by.
 */

const statusSchema = z.enum(['pending', 'awaiting_payment', 'authorized', 'captured', 'partially_refunded', 'refunded', 'failed', 'cancelled', 'expired']);
const yen = z.number().int().nonnegative();
const refundSchema = z.object({ id: z.string().min(1), amount: z.number().int().positive() });

/** A payment as testpay shows it, in API answers and in webhook `data`. */
const paymentSchema = z.object({
  id: z.string().min(1),
  merchant_ref: z.string().min(1),
  status: statusSchema,
  amount: z.number().int().positive(),
  captured_amount: yen,
  refunded_amount: yen,
  refunds: z.array(refundSchema),
  konbini: z.object({ receipt: z.string(), deadline: z.string() }).optional(),
  failure_reason: z.string().optional(),
});
type TestpayPayment = z.infer<typeof paymentSchema>;

const eventSchema = z.object({ id: z.string().min(1), type: z.string(), data: z.unknown(), refund: z.unknown().optional() });

/** Which payment status each webhook type announces. */
const EVENT_STATUS: Record<string, TestpayPayment['status']> = {
  'payment.awaiting': 'awaiting_payment',
  'payment.authorized': 'authorized',
  'payment.captured': 'captured',
  'payment.failed': 'failed',
  'payment.cancelled': 'cancelled',
  'payment.expired': 'expired',
};

/** The store's method names → what testpay's hosted page offers; card_manual only changes the capture mode. */
const GATEWAY_METHODS: Record<string, ('card' | 'konbini')[]> = { card: ['card'], card_manual: ['card'], konbini: ['konbini'] };

const OK_REPLY: GatewayReply = { status: 200, contentType: 'application/json', body: '{"ok":true}' };
const SIGNATURE_HEADER = 'x-testpay-signature';

/** A 4xx/5xx answer from testpay; `code` is the gateway's own error code (e.g. amount_exceeds_refundable). */
export class TestpayApiError extends Error {
  override name = 'TestpayApiError';
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

function secretOf(settings: ShopSettings): string {
  const secret = settings['testpay.secret'];
  if (typeof secret !== 'string' || secret === '') {
    throw new Error('testpay.secret is not set for this shop: set it to the secret the testpay sandbox was started with');
  }
  return secret;
}

/**
 * The fact a payment's status states, or none while the customer has not chosen yet. A refunded
 * payment still states its capture: applied to a pending attempt it first records the money taken.
 */
function statusFact(status: TestpayPayment['status'], p: TestpayPayment): PaymentFact | undefined {
  switch (status) {
    case 'pending':
      return undefined;
    case 'awaiting_payment':
      return { type: 'awaiting_payment', amount: p.amount };
    case 'authorized':
      return { type: 'authorized', amount: p.amount };
    case 'captured':
    case 'partially_refunded':
    case 'refunded':
      return { type: 'captured', amount: p.captured_amount };
    case 'failed':
      return { type: 'failed', reason: p.failure_reason ?? 'unknown' };
    case 'cancelled':
      return { type: 'cancelled' };
    case 'expired':
      return { type: 'expired' };
  }
}

/** The one place a refund becomes a fact: webhook and read-back share its key, so it counts once. */
function refundFact(p: TestpayPayment, refund: { id: string; amount: number }, payload: unknown): GatewayFact {
  return {
    eventKey: `refund:${refund.id}`,
    merchantRef: p.merchant_ref,
    gatewayRef: p.id,
    fact: { type: 'refunded', amount: refund.amount, refundId: refund.id },
    payload,
  };
}

function withDetails(p: TestpayPayment, fact: PaymentFact): Pick<GatewayFact, 'details'> {
  return fact.type === 'awaiting_payment' && p.konbini ? { details: { konbini: p.konbini } } : {};
}

/**
 * Everything a payment's current state says, as facts: its status, then each refund. The keys are
 * stable for the same state, so reading back twice records nothing new.
 */
export function testpayFacts(p: TestpayPayment): GatewayFact[] {
  const facts: GatewayFact[] = [];
  const fact = statusFact(p.status, p);
  if (fact) {
    const amount = 'amount' in fact ? `:${fact.amount}` : '';
    facts.push({ eventKey: `readback:${p.id}:${fact.type}${amount}`, merchantRef: p.merchant_ref, gatewayRef: p.id, fact, ...withDetails(p, fact), payload: p });
  }
  for (const refund of p.refunds) facts.push(refundFact(p, refund, p));
  return facts;
}

/** One webhook event → its one fact (an event states a change, not the whole history). */
function eventFacts(event: z.infer<typeof eventSchema>): GatewayFact[] {
  if (event.type !== 'payment.refunded' && !(event.type in EVENT_STATUS)) return []; // unknown kinds are acknowledged, not applied
  const p = paymentSchema.parse(event.data);
  if (event.type === 'payment.refunded') return [refundFact(p, refundSchema.parse(event.refund), event)];
  const fact = statusFact(EVENT_STATUS[event.type]!, p);
  return fact ? [{ eventKey: event.id, merchantRef: p.merchant_ref, gatewayRef: p.id, fact, ...withDetails(p, fact), payload: event }] : [];
}

function rejected(reason: string, status = 401): NotificationResult {
  return { rejected: true, reason, reply: { status, contentType: 'application/json', body: JSON.stringify({ error: reason }) } };
}

export function testpayProvider(opts: { baseUrl: string; fetchImpl?: typeof fetch; timeoutMs?: number }): PaymentProvider {
  const fetchImpl = opts.fetchImpl ?? fetch;
  const baseUrl = opts.baseUrl.replace(/\/+$/, '');

  /** One API call; any non-2xx answer throws (4xx with testpay's code, 5xx so the job retries). */
  async function call(settings: ShopSettings, method: 'GET' | 'POST', path: string, body?: unknown, idempotencyKey?: string): Promise<unknown> {
    const headers: Record<string, string> = { authorization: `Bearer ${secretOf(settings)}` };
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (idempotencyKey) headers['idempotency-key'] = idempotencyKey;
    const res = await fetchImpl(`${baseUrl}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(opts.timeoutMs ?? 10_000),
    });
    const text = await res.text();
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    if (!res.ok) {
      const error = (json as { error?: { code?: string; message?: string } } | undefined)?.error;
      const code = error?.code ?? `http_${res.status}`;
      throw new TestpayApiError(res.status, code, `testpay ${method} ${path} answered ${res.status} ${code}${error?.message ? `: ${error.message}` : ''}`);
    }
    if (json === undefined) throw new Error(`testpay ${method} ${path} answered ${res.status} with a body that is not JSON`);
    return json;
  }

  /** The attempt's testpay id: known after start; before that, found by our merchant reference. */
  async function find(a: AttemptContext): Promise<TestpayPayment> {
    const path = a.attempt.gateway_ref
      ? `/api/payments/${encodeURIComponent(a.attempt.gateway_ref)}`
      : `/api/payments?merchant_ref=${encodeURIComponent(a.attempt.merchant_ref)}`;
    return paymentSchema.parse(await call(a.settings, 'GET', path));
  }

  async function operate(a: AttemptContext, op: 'capture' | 'refund' | 'cancel', body: unknown, idempotencyKey: string): Promise<GatewayFact[]> {
    const id = a.attempt.gateway_ref ?? (await find(a)).id;
    const answer = await call(a.settings, 'POST', `/api/payments/${encodeURIComponent(id)}/${op}`, body, idempotencyKey);
    return testpayFacts(paymentSchema.parse(answer));
  }

  return {
    name: 'testpay',

    methods: (settings) => (settings['testpay.enabled'] === true ? ['card', 'konbini'] : []),

    async start(a) {
      const method = a.attempt.method;
      const methods = method ? GATEWAY_METHODS[method] : undefined;
      if (method && !methods) throw new Error(`testpay does not offer the method "${method}"`);
      const answer = await call(a.settings, 'POST', '/api/payments', {
        merchant_ref: a.attempt.merchant_ref,
        amount: a.attempt.amount,
        currency: 'JPY',
        return_url: a.urls.returnUrl,
        cancel_url: a.urls.cancelUrl,
        notify_url: a.urls.notifyUrl,
        email: a.order.email,
        capture: method === 'card_manual' ? 'manual' : 'auto',
        ...(methods ? { methods } : {}),
      });
      const created = z.object({ id: z.string().min(1), pay_url: z.url() }).parse(answer);
      return { action: { type: 'redirect', url: created.pay_url }, gatewayRef: created.id };
    },

    async parseNotification({ rawBody, headers, settings }) {
      if (!Buffer.isBuffer(rawBody)) {
        // Parsed-and-re-serialized JSON never matches the bytes testpay signed.
        throw new TypeError('testpay parseNotification needs the raw request body as a Buffer, not parsed JSON');
      }
      const header = headers[SIGNATURE_HEADER];
      if (typeof header !== 'string' || !/^[0-9a-f]{64}$/i.test(header)) {
        return rejected(`missing or malformed ${SIGNATURE_HEADER} header (expected 64 hex digits of HMAC-SHA256)`);
      }
      const expected = createHmac('sha256', secretOf(settings)).update(rawBody).digest();
      if (!timingSafeEqual(expected, Buffer.from(header, 'hex'))) {
        return rejected('signature does not match the body (wrong testpay.secret, or the body was altered)');
      }
      try {
        return { verified: true, facts: eventFacts(eventSchema.parse(JSON.parse(rawBody.toString('utf8')))), reply: OK_REPLY };
      } catch (error) {
        // Signed but unreadable: a gateway bug, not something to apply. 400 makes it visible on their side.
        return rejected(`signed event is malformed: ${error instanceof Error ? error.message : String(error)}`, 400);
      }
    },

    async readBack(a) {
      try {
        return testpayFacts(await find(a));
      } catch (error) {
        // Never reached testpay (start failed before it created the payment): nothing to say yet.
        if (!a.attempt.gateway_ref && error instanceof TestpayApiError && error.code === 'not_found') return [];
        throw error;
      }
    },

    capture: (a, amount, key) => operate(a, 'capture', { amount }, key),
    refund: (a, amount, key) => operate(a, 'refund', { amount }, key),
    cancel: (a, key) => operate(a, 'cancel', {}, key),
  };
}
