import { randomBytes, randomInt, randomUUID, timingSafeEqual } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { z } from 'zod';
import {
  computeKomojuSignature,
  type KomojuEventResource,
  type KomojuPayment,
  type KomojuPaymentStatus,
  type KomojuRefund,
  type KomojuSession,
  type KomojuSessionStatus,
} from '../gateways/komoju/index.js';
import { escapeHtml as esc } from '../html.js';
import { luhn } from './cards.js';

/*
 * The KOMOJU simulator: hosted sessions, the payments API and signed webhooks, as strict as KOMOJU
 * where gateways.md §3 knows KOMOJU's behaviour, and documented below where it guesses. Mounted at
 * /sandbox/komoju by the app; the store talks to it with the library client (`komojuApi({ secretKey,
 * baseUrl: '<public>/sandbox/komoju/api/v1' })`).
 *
 *   POST /api/v1/sessions                     create (HTTP Basic: secret key, empty password)
 *   GET  /api/v1/sessions/:id                 with `payment` embedded once the session completed
 *   POST /api/v1/sessions/:id/cancel          only while pending
 *   GET  /api/v1/payments?external_order_num=…&status=…&currency=…&page=…&per_page=…
 *   GET  /api/v1/payments/:id
 *   POST /api/v1/payments/:id/capture         credit_card and authorized only
 *   POST /api/v1/payments/:id/refund          {amount?, description?}; captured only
 *   POST /api/v1/payments/:id/cancel          pending or authorized only
 *   GET  /api/v1/events/:id                   every event sent (or dropped) for the account
 *   GET  /sessions/:id                        hosted page (session_url); POST /sessions/:id/pay/:type
 *   GET|POST /sessions/:id/3ds                3-D Secure challenge (approve / fail)
 *   GET  /instructions/:paymentId             konbini / bank / Pay-easy instructions (instructions_url)
 *   POST /instructions/:paymentId/{pay-at-store,expire}   the same switches as buttons
 *   GET  /                                    overview: sessions, payments, webhook deliveries, faults
 *   GET|POST /api/faults, POST /api/payments/:id/pay-at-store, POST /api/payments/:id/expire,
 *   POST /api/webhooks/flush                  test switches (no credentials: the sandbox is off in production)
 *   GET  /api/payments/:id/webhooks           a payment's events and how each delivery ended
 *
 * Its state is in memory and invisible to the store: the store learns what happened only from the
 * webhooks, the browser return and the API, as with the real KOMOJU.
 *
 * Choices where the reference is silent or UNCONFIRMED (each one a guess at KOMOJU's behaviour):
 * - Errors: `{"error":{"code","message","param","details"}}`, `param` null and `details` {} when
 *   there is nothing to say. Codes are the generic ones of KOMOJU's error page: a missing parameter
 *   is 422 `missing_parameter`, a bad one 422 `invalid_parameter`; `param` names the field in KOMOJU's
 *   bracket notation (`payment_data[external_order_num]`, `line_items[0][quantity]`). A body that is
 *   not JSON is 400 `bad_request` (KOMOJU also takes form-encoded bodies; this simulator only JSON).
 *   A request the payment's state forbids (capture twice, refund an uncaptured payment…) is 422
 *   `unprocessable_entity` with `details.status`; a refund above what is left is 422 `invalid_parameter`
 *   param `amount` with `details.refundable`. Unknown ids (or another account's) are 404 `not_found`.
 *   Unknown top-level fields of a session are ignored (KOMOJU accepts e.g. `fraud_details`).
 * - Session create, stricter than KOMOJU documents: `currency` must be JPY (the only currency
 *   simulated), `return_url` is required (KOMOJU only recommends it) and absolute http(s), `amount`
 *   is 1…9,999,999 yen, `mode` may only be `payment`, `payment_types` ⊆ credit_card, konbini,
 *   bank_transfer, pay_easy, paypay, linepay, merpay, rakutenpay, au_pay (omitted: credit_card,
 *   konbini, bank_transfer, pay_easy, standing for "every method enabled on the account"),
 *   `external_order_num` is 1–255 printable ASCII. A reused `external_order_num` within the account
 *   is refused with 422 invalid_parameter: KOMOJU's guide says it must be unique per session, and
 *   refusing makes a store that reuses it fail here rather than in production.
 * - Manual capture is `payment_data.capture: "auto" | "manual"` (default auto): confirmed in KOMOJU's
 *   guide "Creating Payments" (ja.doc.komoju.com/docs/creating-payments-directly). It applies to cards;
 *   wallets (PayPay …) are always captured at once here, and konbini / bank / Pay-easy are
 *   `authorized` until the customer pays whatever it says.
 * - A session expires 24 hours after creation (KOMOJU's default is not in the reference): its page
 *   then refuses to take a payment; the API status stays `pending` (only pending / completed /
 *   cancelled exist).
 * - Idempotency (`X-KOMOJU-IDEMPOTENCY` on any POST, 1–100 printable ASCII, per account, 24 h): the
 *   request is "the same" when method, path and the JSON body (keys sorted) are equal. A different
 *   request under a used key: 422 `unprocessable_entity`, param `X-KOMOJU-IDEMPOTENCY`; while the first
 *   is in flight: 409 `conflict`. Answers kept: successes and state refusals; requests refused before
 *   they ran (bad parameters, unknown id) keep nothing, so a corrected retry may reuse the key
 *   (Stripe's rule; KOMOJU's is not documented). A key that is not printable ASCII or is longer than
 *   100: 400 `bad_request`.
 * - Payments: ids are 25 lower-case base-36 characters like KOMOJU's; `tax` is 0; `total` = `amount`
 *   + `payment_method_fee`. Fees are sandbox values passed to the customer: konbini and Pay-easy
 *   ¥190, bank transfer and cards ¥0. Refunds are measured against `amount` (the fee is not
 *   refunded); refunds of konbini / bank payments are immediate (KOMOJU's `redirect_url` cash-refund
 *   step and `refund_request` are not simulated).
 * - Konbini: `authorized` right after the store is chosen (current docs; §5), `payment_deadline` =
 *   now + konbiniDeadlineMs (real KOMOJU rounds to 23:59:59 JST), expired by a timer then if still
 *   unpaid (not when the deadline is beyond Node's 24.8-day timer range). `receipt` is a number;
 *   `confirmation_code` is null for Seven-Eleven and Seicomart, 4 digits otherwise (the doc samples
 *   show both). Konbini is refused on the page when the total exceeds ¥300,000 (the konbini limit in
 *   Japan). Bank transfer and Pay-easy behave alike with guessed `payment_details` fields.
 * - Card test numbers: 4111111111111111 and KOMOJU's brand numbers approve; 4000000000000002 and
 *   KOMOJU's 4123111111111xxx numbers decline; 4000000000003220 asks for 3-D Secure; any other
 *   Luhn-valid number approves. A decline (or failed 3-D Secure) creates a payment that stays
 *   `pending` in the API (`failed` is not an API status, §5), sends `payment.failed` with that object,
 *   and leaves the session `pending` with `payment: null` so the customer can try again: a session
 *   embeds only the payment that completed it. Auto capture sends only `payment.captured` (no
 *   `payment.authorized` first).
 * - The hosted page's cancel link goes back to return_url with session_id and changes nothing (the
 *   session stays pending, as when a customer walks away). The return URL gets `session_id` appended
 *   to its query as it is (an existing query is not re-encoded; a #fragment stays last).
 * - Webhooks (retry policy UNCONFIRMED at KOMOJU): sent to every webhook of the account, body
 *   serialised once, signed per webhook secret; `X-Komoju-ID` is a UUID per (event, webhook), the
 *   same on every retry of that delivery (and on a duplicate sent by the `duplicate` fault: a
 *   redelivery of the same delivery); `User-Agent: Komoju-Webhook`. Any non-2xx answer (a redirect
 *   too), a time-out or a refused connection is retried after baseDelayMs, doubling, capped at 60 s,
 *   up to maxAttempts in all. Per payment and webhook the events go out strictly one after the
 *   other in the order they happened (a failing receiver holds the later events of that payment
 *   until the earlier one is delivered or given up); never awaited by the API or the browser. No
 *   `ping` is sent (webhooks are configured, not created through the API).
 * - Faults: `duplicate` sends each delivery twice (same bytes, same headers); `reorder` holds each
 *   payment's event until that payment's next event, then sends both newest first (a flush, or
 *   switching reorder off, sends what is held); `delayMs` waits before the first attempt of each
 *   delivery; `dropWebhooks` records events (GET /events/:id finds them) without sending them;
 *   `noReturn` ends the hosted page on a "done" page without sending the browser back; `apiDelayMs`
 *   (an addition) makes every /api/v1 answer that much slower, inside the idempotency window, to
 *   exercise time-outs and the 409. Fault values are read when an event is created.
 * - `staleCancel` pairs sessions by order key: `metadata.kessai_order` when it is a string (what
 *   kessai sends), otherwise `external_order_num` without its last `-…` segment (kessai's
 *   `<order>-<seq>`, WooCommerce's `<order>-<random>`). When a payment of a later session is paid
 *   (card authorized or captured, wallet captured, konbini paid at the store), every pending or
 *   authorized payment of an earlier session with the same key (a declined card try, an unpaid
 *   konbini slip) really becomes `cancelled` and `payment.cancelled` is sent for it. An earlier
 *   session without a payment has nothing to cancel.
 * - Not simulated: POST /payments, PATCH /payments/:id, /sessions/:id/pay, refund_request, customers,
 *   GET /events (list), the 30-day expiry of card authorizations, non-JPY currencies.
 */

export interface KomojuSandboxAccount {
  secretKey: string;
  webhooks: { url: string; secret: string }[];
}

export interface KomojuSandboxOptions {
  accounts: KomojuSandboxAccount[];
  log: Logger;
  /** konbini deadline after authorization, default 3 days */
  konbiniDeadlineMs?: number;
  /** webhook retry: first delay (default 1000 ms, doubling, capped 60 s), max attempts (default 8), per-attempt timeout (default 10 s) */
  webhookRetry?: { baseDelayMs?: number; maxAttempts?: number; timeoutMs?: number };
}

const PAYMENT_TYPES = ['credit_card', 'konbini', 'bank_transfer', 'pay_easy', 'paypay', 'linepay', 'merpay', 'rakutenpay', 'au_pay'] as const;
type PaymentType = (typeof PAYMENT_TYPES)[number];
const DEFAULT_PAYMENT_TYPES: PaymentType[] = ['credit_card', 'konbini', 'bank_transfer', 'pay_easy'];
type PayLaterType = 'konbini' | 'bank_transfer' | 'pay_easy';
const PAY_LATER = new Set<PaymentType>(['konbini', 'bank_transfer', 'pay_easy']);
const isPayLater = (t: PaymentType): t is PayLaterType => PAY_LATER.has(t);
const FEES: Record<PaymentType, number> = { credit_card: 0, konbini: 190, bank_transfer: 0, pay_easy: 190, paypay: 0, linepay: 0, merpay: 0, rakutenpay: 0, au_pay: 0 };

const TYPE_LABELS: Record<PaymentType, string> = {
  credit_card: 'クレジットカード / Credit card',
  konbini: 'コンビニ払い / Konbini (convenience store)',
  bank_transfer: '銀行振込 / Bank transfer',
  pay_easy: 'ペイジー / Pay-easy',
  paypay: 'PayPay',
  linepay: 'LINE Pay',
  merpay: 'メルペイ / Merpay',
  rakutenpay: '楽天ペイ / Rakuten Pay',
  au_pay: 'au PAY',
};

const KONBINI_STORES: Record<string, { label: string; confirmationCode: boolean }> = {
  'seven-eleven': { label: 'セブン-イレブン / 7-Eleven', confirmationCode: false },
  lawson: { label: 'ローソン / Lawson', confirmationCode: true },
  familymart: { label: 'ファミリーマート / FamilyMart', confirmationCode: true },
  ministop: { label: 'ミニストップ / Ministop', confirmationCode: true },
  'daily-yamazaki': { label: 'デイリーヤマザキ / Daily Yamazaki', confirmationCode: true },
  seicomart: { label: 'セイコーマート / Seicomart', confirmationCode: false },
};
const KONBINI_LIMIT = 300_000;

type CardOutcome = { kind: 'approve' } | { kind: 'challenge' } | { kind: 'decline'; reason: string };
/** Test cards: the number decides what the card network says. Any other Luhn-valid number is approved. */
const TEST_CARDS: Record<string, { label: string; outcome: CardOutcome }> = {
  '4111111111111111': { label: '承認 / approved (Visa)', outcome: { kind: 'approve' } },
  '5555555555554444': { label: '承認 / approved (Mastercard)', outcome: { kind: 'approve' } },
  '3530111333300000': { label: '承認 / approved (JCB)', outcome: { kind: 'approve' } },
  '378282246310005': { label: '承認 / approved (American Express)', outcome: { kind: 'approve' } },
  '30569309025904': { label: '承認 / approved (Diners Club)', outcome: { kind: 'approve' } },
  '4000000000000002': { label: '拒否 / declined', outcome: { kind: 'decline', reason: 'card_declined' } },
  '4123111111111000': { label: '残高不足 / insufficient funds', outcome: { kind: 'decline', reason: 'insufficient_funds' } },
  '4123111111111018': { label: '限度額超過 / exceeds card limit', outcome: { kind: 'decline', reason: 'exceeds_limit' } },
  '4123111111111034': { label: 'セキュリティコード不正 / bad verification value', outcome: { kind: 'decline', reason: 'bad_verification_value' } },
  '4123111111111042': { label: '有効期限切れ / card expired', outcome: { kind: 'decline', reason: 'card_expired' } },
  '4123111111111059': { label: 'カード使用不可 / cannot use card', outcome: { kind: 'decline', reason: 'invalid_card' } },
  '4123111111111067': { label: '無効なカード / invalid card', outcome: { kind: 'decline', reason: 'invalid_card_number' } },
  '4000000000003220': { label: '3-D セキュア認証 / 3-D Secure challenge', outcome: { kind: 'challenge' } },
};

const MAX_AMOUNT = 9_999_999;
const SESSION_LIFETIME_MS = 24 * 3600 * 1000;
const IDEMPOTENCY_LIFETIME_MS = 24 * 3600 * 1000;
const IDEMPOTENCY_KEY = /^[\x20-\x7e]{1,100}$/;
const MAX_RETRY_DELAY_MS = 60_000;
const MAX_TIMER_MS = 2 ** 31 - 1;
const API_BODY_LIMIT = 64 * 1024;
const FORM_LIMIT = 16 * 1024;

// ---- validation ---------------------------------------------------------------------------------

const metadataValue = z.union([z.string().max(1000), z.number(), z.boolean(), z.null()]);

const sessionSchema = z.object({
  amount: z.number().int().positive().max(MAX_AMOUNT),
  currency: z.literal('JPY', { error: 'only JPY is simulated (amounts are whole yen)' }),
  return_url: z.url({ protocol: /^https?$/, error: 'must be an absolute http(s) URL' }),
  mode: z.literal('payment', { error: 'only "payment" mode is simulated' }).optional(),
  default_locale: z.enum(['ja', 'en', 'ko']).optional(),
  email: z.email().optional(),
  payment_types: z.array(z.enum(PAYMENT_TYPES)).min(1).optional(),
  payment_data: z
    .object({
      external_order_num: z.string().regex(/^[\x20-\x7e]{1,255}$/, 'must be 1–255 printable ASCII characters').optional(),
      capture: z.enum(['auto', 'manual']).optional(),
    })
    .loose()
    .optional(),
  line_items: z
    .array(
      z
        .object({
          description: z.string().min(1).max(255),
          quantity: z.number().int().positive(),
          amount: z.number().int().min(0).optional(),
          image: z.url().optional(),
        })
        .loose(),
    )
    .max(100)
    .optional(),
  metadata: z.record(z.string().max(100), metadataValue).optional(),
});

const refundSchema = z.object({
  amount: z.number().int().positive().optional(),
  description: z.string().max(255).nullable().optional(),
});

const listSchema = z.object({
  external_order_num: z.string().optional(),
  status: z.enum(['pending', 'authorized', 'captured', 'refunded', 'cancelled', 'expired']).optional(),
  currency: z.string().optional(),
  page: z.coerce.number().int().min(1).optional(),
  per_page: z.coerce.number().int().min(1).max(100).optional(),
});

const faultsSchema = z
  .object({
    duplicate: z.boolean().optional(),
    reorder: z.boolean().optional(),
    delayMs: z.number().int().min(0).max(600_000).optional(),
    dropWebhooks: z.boolean().optional(),
    noReturn: z.boolean().optional(),
    staleCancel: z.boolean().optional(),
    apiDelayMs: z.number().int().min(0).max(120_000).optional(),
  })
  .strict();

type Faults = Required<z.infer<typeof faultsSchema>>;
const DEFAULT_FAULTS: Faults = { duplicate: false, reorder: false, delayMs: 0, dropWebhooks: false, noReturn: false, staleCancel: false, apiDelayMs: 0 };

// ---- state --------------------------------------------------------------------------------------

interface Webhook {
  url: string;
  secret: string;
}

interface Account {
  index: number;
  secretKey: Buffer;
  webhooks: Webhook[];
  idempotency: Map<string, KeptAnswer>;
  events: Map<string, KomojuEventResource>;
  externalOrderNums: Map<string, string>;
}

interface KeptAnswer {
  fingerprint: string;
  at: number;
  state: 'in_flight' | 'done';
  status: number;
  body: unknown;
}

interface Session {
  id: string;
  account: Account;
  /** Scheme, host and prefix the store reached us at: the page's and the instructions' URLs use it. */
  base: string;
  amount: number;
  returnUrl: string;
  paymentTypes: PaymentType[];
  email: string | null;
  locale: string;
  externalOrderNum: string | null;
  capture: 'auto' | 'manual';
  lineItems: Record<string, unknown>[];
  metadata: Record<string, unknown>;
  paymentData: Record<string, unknown>;
  status: KomojuSessionStatus;
  /** The payment that completed the session. */
  payment: Payment | null;
  /** Every payment made on the session, declined tries included. */
  attempts: Payment[];
  /** A card waits on the 3-D Secure page. */
  challenge: { number: string; month: string; year: string; name: string } | null;
  createdAt: Date;
  expiresAt: Date;
}

type PaymentState = Exclude<KomojuPaymentStatus, 'failed'>;

interface Payment {
  id: string;
  account: Account;
  session: Session;
  type: PaymentType;
  status: PaymentState;
  /** Declined or failed 3-D Secure: shown as `pending` in the API (§5), never completes. */
  failed: string | null;
  amount: number;
  fee: number;
  details: { type: string; [key: string]: unknown };
  deadline: Date | null;
  capturedAt: Date | null;
  refunds: KomojuRefund[];
  createdAt: Date;
  events: EventRecord[];
}

interface Delivery {
  url: string;
  deliveryId: string;
  status: 'scheduled' | 'sending' | 'retrying' | 'delivered' | 'failed';
  attempts: number;
  lastOutcome: string;
  duplicate: boolean;
}

interface EventRecord {
  event: KomojuEventResource;
  /** The exact bytes every webhook receives (and every signature is over). */
  body: Buffer;
  state: 'sent' | 'held' | 'dropped';
  deliveries: Delivery[];
}

/** An API answer: status and JSON body. */
interface Answer {
  status: number;
  body: unknown;
}

/** KOMOJU's error object. `final` answers are kept under an idempotency key; the others are not. */
class KomojuError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly param: string | null = null,
    readonly details: Record<string, unknown> = {},
    readonly final = false,
  ) {
    super(message);
  }
  body(): { error: { code: string; message: string; param: string | null; details: Record<string, unknown> } } {
    return { error: { code: this.code, message: this.message, param: this.param, details: this.details } };
  }
}

const GENERIC_CODES: Record<number, string> = { 400: 'bad_request', 401: 'unauthorized', 403: 'forbidden', 404: 'not_found', 409: 'conflict', 413: 'bad_request', 415: 'bad_request', 422: 'unprocessable_entity' };

const refusal = (message: string, status: string, details: Record<string, unknown> = {}): KomojuError =>
  new KomojuError(422, 'unprocessable_entity', message, null, { status, ...details }, true);

export function komojuSandbox(opts: KomojuSandboxOptions): FastifyPluginAsync {
  if (!Array.isArray(opts.accounts) || opts.accounts.length === 0) throw new TypeError('komojuSandbox: at least one account is required');
  const seen = new Set<string>();
  const accounts: Account[] = opts.accounts.map((a, index) => {
    if (typeof a.secretKey !== 'string' || !a.secretKey) throw new TypeError(`komojuSandbox: account ${index} has no secret key`);
    if (seen.has(a.secretKey)) throw new TypeError(`komojuSandbox: account ${index} repeats another account's secret key`);
    seen.add(a.secretKey);
    for (const w of a.webhooks) {
      if (!/^https?:\/\//.test(w.url)) throw new TypeError(`komojuSandbox: account ${index}: webhook URL ${JSON.stringify(w.url)} is not http(s)`);
      if (!w.secret) throw new TypeError(`komojuSandbox: account ${index}: webhook ${w.url} has no secret`);
    }
    return { index, secretKey: Buffer.from(a.secretKey, 'utf8'), webhooks: a.webhooks.map((w) => ({ ...w })), idempotency: new Map(), events: new Map(), externalOrderNums: new Map() };
  });
  const log = opts.log;
  const konbiniDeadlineMs = opts.konbiniDeadlineMs ?? 3 * 24 * 3600 * 1000;
  const retry = {
    baseDelayMs: opts.webhookRetry?.baseDelayMs ?? 1_000,
    maxAttempts: opts.webhookRetry?.maxAttempts ?? 8,
    timeoutMs: opts.webhookRetry?.timeoutMs ?? 10_000,
  };
  if (!(konbiniDeadlineMs > 0)) throw new TypeError('komojuSandbox: konbiniDeadlineMs must be positive');
  if (!Number.isInteger(retry.maxAttempts) || retry.maxAttempts < 1) throw new TypeError('komojuSandbox: webhookRetry.maxAttempts must be a positive integer');

  return async (app) => {
    const prefix = app.prefix;
    const sessions = new Map<string, Session>();
    const payments = new Map<string, Payment>();
    const faults: Faults = { ...DEFAULT_FAULTS };
    const stop = new AbortController();
    const timers = new Set<NodeJS.Timeout>();
    app.addHook('onClose', async () => {
      stop.abort(); // background deliveries and their waits end with the server
      for (const t of timers) clearTimeout(t);
    });

    // The hosted page posts plain forms; the store's app parses those already, a bare test server does not.
    if (!app.hasContentTypeParser('application/x-www-form-urlencoded')) {
      app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: FORM_LIMIT }, (_req, body, done) => {
        done(null, Object.fromEntries(new URLSearchParams(body as string)));
      });
    }

    const isApi = (url: string): boolean => url.startsWith(`${prefix}/api/`);

    app.setErrorHandler((error: Error & { statusCode?: number; code?: string }, request, reply) => {
      if (error instanceof KomojuError) {
        if (isApi(request.url)) return reply.status(error.status).send(error.body());
        return html(reply, page('KOMOJU sandbox', `<h1>エラー / Error</h1><p>${esc(error.message)}</p>`), error.status);
      }
      const status = error.statusCode && error.statusCode >= 400 && error.statusCode < 500 ? error.statusCode : 500;
      if (status === 500) log.error({ err: error }, 'komoju sandbox error');
      const message = status === 500 ? 'internal error in the KOMOJU sandbox (see its log)' : error.message;
      if (isApi(request.url)) {
        return reply.status(status).send(new KomojuError(status, GENERIC_CODES[status] ?? 'internal_server_error', message).body());
      }
      return html(reply, page('KOMOJU sandbox', `<h1>エラー / Error</h1><p>${esc(message)}</p>`), status);
    });

    app.setNotFoundHandler((request, reply) => {
      const message = `no route ${request.method} ${request.url.split('?')[0]} in the KOMOJU sandbox`;
      if (isApi(request.url)) return reply.status(404).send(new KomojuError(404, 'not_found', message).body());
      return html(reply, page('Not found', `<p>ページが見つかりません / Not found.</p><p class="note">${esc(message)}</p>`), 404);
    });

    // ---- views ------------------------------------------------------------------------------------

    function paymentView(p: Payment): KomojuPayment {
      const amountRefunded = p.refunds.reduce((sum, r) => sum + r.amount, 0);
      return {
        id: p.id,
        resource: 'payment',
        status: p.status,
        amount: p.amount,
        tax: 0,
        customer: null,
        payment_deadline: p.deadline ? iso(p.deadline) : null,
        payment_details: { ...p.details },
        payment_method_fee: p.fee,
        total: p.amount + p.fee,
        currency: 'JPY',
        description: null,
        captured_at: p.capturedAt ? iso(p.capturedAt) : null,
        external_order_num: p.session.externalOrderNum,
        metadata: { ...p.session.metadata },
        session: p.session.id,
        created_at: iso(p.createdAt),
        amount_refunded: amountRefunded,
        locale: p.session.locale,
        refunds: p.refunds.map((r) => ({ ...r })),
        refund_requests: [],
      };
    }

    function sessionView(s: Session): KomojuSession {
      return {
        id: s.id,
        resource: 'session',
        mode: 'payment',
        status: s.status,
        amount: s.amount,
        currency: 'JPY',
        session_url: `${s.base}/sessions/${s.id}`,
        return_url: s.returnUrl,
        default_locale: s.locale,
        email: s.email,
        payment_types: [...s.paymentTypes],
        payment_data: { ...s.paymentData, external_order_num: s.externalOrderNum, capture: s.capture },
        line_items: s.lineItems.map((l) => ({ ...l })),
        metadata: { ...s.metadata },
        payment: s.payment ? paymentView(s.payment) : null,
        created_at: iso(s.createdAt),
        expires_at: iso(s.expiresAt),
      };
    }

    // ---- webhooks ---------------------------------------------------------------------------------

    const chains = new Map<string, Promise<void>>();
    /** Events held by the reorder fault, per payment, oldest first. */
    const held = new Map<string, { payment: Payment; record: EventRecord; delayMs: number; duplicate: boolean }[]>();

    /** Runs tasks of one key strictly one after the other. */
    function enqueue(key: string, task: () => Promise<void>): void {
      const next = (chains.get(key) ?? Promise.resolve()).then(task).catch((err: unknown) => log.error({ err }, 'komoju sandbox: webhook task failed'));
      chains.set(key, next);
      void next.then(() => {
        if (chains.get(key) === next) chains.delete(key);
      });
    }

    async function post(hook: Webhook, record: EventRecord, delivery: Delivery, signature: string): Promise<{ ok: boolean; outcome: string }> {
      const timeout = AbortSignal.timeout(retry.timeoutMs);
      try {
        const res = await fetch(hook.url, {
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            'user-agent': 'Komoju-Webhook',
            'x-komoju-id': delivery.deliveryId,
            'x-komoju-signature': signature,
            'x-komoju-event': record.event.type,
          },
          body: record.body,
          redirect: 'manual',
          signal: AbortSignal.any([timeout, stop.signal]),
        });
        await res.arrayBuffer().catch(() => undefined); // drain so the connection is released
        return { ok: res.status >= 200 && res.status < 300, outcome: `HTTP ${res.status}` };
      } catch (error) {
        if (timeout.aborted) return { ok: false, outcome: `no answer within ${retry.timeoutMs} ms` };
        return { ok: false, outcome: `cannot connect: ${(error as Error).message}` };
      }
    }

    /** One delivery with KOMOJU-style retries (policy UNCONFIRMED; see the top). */
    async function deliver(hook: Webhook, record: EventRecord, delivery: Delivery): Promise<void> {
      const signature = computeKomojuSignature(record.body, hook.secret);
      for (let attempt = 1; attempt <= retry.maxAttempts; attempt++) {
        if (stop.signal.aborted) return;
        delivery.attempts = attempt;
        delivery.status = 'sending';
        const { ok, outcome } = await post(hook, record, delivery, signature);
        delivery.lastOutcome = outcome;
        if (ok) {
          delivery.status = 'delivered';
          return;
        }
        log.warn({ event: record.event.id, type: record.event.type, url: hook.url, attempt, outcome }, 'komoju sandbox: webhook not accepted');
        if (attempt === retry.maxAttempts) {
          delivery.status = 'failed';
          return;
        }
        delivery.status = 'retrying';
        if (!(await pause(Math.min(retry.baseDelayMs * 2 ** (attempt - 1), MAX_RETRY_DELAY_MS)))) return;
      }
    }

    /** Waits unless the server closes first; false when it did. */
    async function pause(ms: number): Promise<boolean> {
      if (ms <= 0) return !stop.signal.aborted;
      try {
        await sleep(ms, undefined, { signal: stop.signal });
        return true;
      } catch {
        return false;
      }
    }

    function dispatch(p: Payment, record: EventRecord, delayMs: number, duplicate: boolean): void {
      record.state = 'sent';
      p.account.webhooks.forEach((hook, i) => {
        const delivery: Delivery = { url: hook.url, deliveryId: randomUUID(), status: 'scheduled', attempts: 0, lastOutcome: '', duplicate: false };
        record.deliveries.push(delivery);
        enqueue(`${p.id}#${i}`, async () => {
          if (!(await pause(delayMs))) return;
          await deliver(hook, record, delivery);
          if (duplicate) {
            const again: Delivery = { ...delivery, status: 'scheduled', attempts: 0, lastOutcome: '', duplicate: true };
            record.deliveries.push(again);
            await deliver(hook, record, again);
          }
        });
      });
    }

    function emit(p: Payment, type: string): void {
      const event: KomojuEventResource = { id: `evt_${komojuId()}`, type, resource: 'event', data: paymentView(p), created_at: iso(new Date()), reason: null };
      const record: EventRecord = { event, body: Buffer.from(JSON.stringify(event), 'utf8'), state: 'sent', deliveries: [] };
      p.account.events.set(event.id, event);
      p.events.push(record);
      log.info({ event: event.id, type, payment: p.id, status: p.status }, 'komoju sandbox: event');
      if (faults.dropWebhooks) {
        record.state = 'dropped';
        return;
      }
      const entry = { payment: p, record, delayMs: faults.delayMs, duplicate: faults.duplicate };
      if (faults.reorder) {
        const waiting = held.get(p.id);
        if (!waiting) {
          record.state = 'held';
          held.set(p.id, [entry]);
          return;
        }
        held.delete(p.id);
        for (const h of [...waiting, entry].reverse()) dispatch(h.payment, h.record, h.delayMs, h.duplicate);
        return;
      }
      dispatch(p, record, entry.delayMs, entry.duplicate);
    }

    function flush(): number {
      let count = 0;
      for (const [id, waiting] of held) {
        held.delete(id);
        for (const h of [...waiting].reverse()) {
          dispatch(h.payment, h.record, h.delayMs, h.duplicate);
          count++;
        }
      }
      return count;
    }

    // ---- what happens to a payment ------------------------------------------------------------

    function newPayment(s: Session, type: PaymentType, details: Payment['details'], status: PaymentState, failed: string | null = null): Payment {
      let id = komojuId();
      while (payments.has(id)) id = komojuId();
      const p: Payment = {
        id,
        account: s.account,
        session: s,
        type,
        status,
        failed,
        amount: s.amount,
        fee: failed ? 0 : FEES[type],
        details,
        deadline: null,
        capturedAt: status === 'captured' ? new Date() : null,
        refunds: [],
        createdAt: new Date(),
        events: [],
      };
      payments.set(p.id, p);
      s.attempts.push(p);
      return p;
    }

    function complete(s: Session, p: Payment): void {
      s.status = 'completed';
      s.payment = p;
      s.challenge = null;
    }

    /** The order a session belongs to, for the staleCancel fault (see the top). */
    function orderKey(s: Session): string | undefined {
      const fromMetadata = s.metadata.kessai_order;
      if (typeof fromMetadata === 'string' && fromMetadata) return `m:${fromMetadata}`;
      if (!s.externalOrderNum) return undefined;
      const dash = s.externalOrderNum.lastIndexOf('-');
      return `e:${dash > 0 ? s.externalOrderNum.slice(0, dash) : s.externalOrderNum}`;
    }

    /** A payment was paid: with staleCancel on, the earlier sessions of the same order get their payments cancelled. */
    function paid(p: Payment): void {
      if (!faults.staleCancel) return;
      const key = orderKey(p.session);
      if (!key) return;
      for (const s of sessions.values()) {
        if (s === p.session || s.account !== p.account || s.createdAt > p.session.createdAt || orderKey(s) !== key) continue;
        for (const earlier of s.attempts) {
          if (earlier.status !== 'pending' && earlier.status !== 'authorized') continue;
          earlier.status = 'cancelled';
          log.info({ payment: earlier.id, session: s.id, paidBy: p.id }, 'komoju sandbox: staleCancel cancels the earlier session');
          emit(earlier, 'payment.cancelled');
        }
      }
    }

    function approveCard(s: Session, card: { number: string; month: string; year: string; name: string }): Payment {
      const status: PaymentState = s.capture === 'manual' ? 'authorized' : 'captured';
      const p = newPayment(s, 'credit_card', cardDetails(card), status);
      complete(s, p);
      emit(p, status === 'captured' ? 'payment.captured' : 'payment.authorized');
      paid(p);
      return p;
    }

    function declineCard(s: Session, card: { number: string; month: string; year: string; name: string }, reason: string): Payment {
      s.challenge = null;
      const p = newPayment(s, 'credit_card', cardDetails(card), 'pending', reason);
      emit(p, 'payment.failed');
      return p;
    }

    function payLater(s: Session, type: PayLaterType, email: string, store: string): Payment {
      const p = newPayment(s, type, { type }, 'authorized');
      p.deadline = new Date(Date.now() + konbiniDeadlineMs);
      const instructionsUrl = `${s.base}/instructions/${p.id}`;
      if (type === 'konbini') {
        p.details = {
          type,
          email,
          store,
          confirmation_code: KONBINI_STORES[store]?.confirmationCode ? String(randomInt(1000, 10000)) : null,
          receipt: `${randomInt(100_000, 1_000_000)}${randomInt(1_000_000, 10_000_000)}`,
          instructions_url: instructionsUrl,
        };
      } else if (type === 'bank_transfer') {
        p.details = {
          type,
          email,
          order_id: String(randomInt(10_000_000, 100_000_000)),
          bank_name: 'サンドボックス銀行 / Sandbox Bank',
          account_branch_name: '本店 / Head office',
          account_type: '普通 / Ordinary',
          account_number: String(randomInt(1_000_000, 10_000_000)),
          account_name: 'カ）コモジュサンドボックス',
          instructions_url: instructionsUrl,
        };
      } else {
        p.details = {
          type,
          email,
          bank_id: '58091',
          customer_id: String(randomInt(10_000_000, 100_000_000)) + String(randomInt(10_000_000, 100_000_000)),
          confirmation_id: String(randomInt(100_000, 1_000_000)),
          instructions_url: instructionsUrl,
        };
      }
      complete(s, p);
      emit(p, 'payment.authorized');
      if (konbiniDeadlineMs <= MAX_TIMER_MS) {
        const timer = setTimeout(() => {
          timers.delete(timer);
          if (p.status === 'authorized') expire(p);
        }, konbiniDeadlineMs);
        timer.unref();
        timers.add(timer);
      }
      return p;
    }

    function wallet(s: Session, type: PaymentType, approve: boolean): Payment {
      if (!approve) {
        const p = newPayment(s, type, { type }, 'pending', 'declined_by_customer');
        emit(p, 'payment.failed');
        return p;
      }
      const p = newPayment(s, type, { type }, 'captured');
      complete(s, p);
      emit(p, 'payment.captured');
      paid(p);
      return p;
    }

    function requireStatus(p: Payment, allowed: PaymentState[], action: string): void {
      if (!allowed.includes(p.status)) {
        throw refusal(`cannot ${action} payment ${p.id}: it is ${p.status} (allowed: ${allowed.join(', ')})`, p.status, { allowed });
      }
    }

    function capture(p: Payment): void {
      if (p.type !== 'credit_card') throw refusal(`cannot capture payment ${p.id}: only credit_card payments are captured by the merchant (this one is ${p.type})`, p.status, { type: p.type });
      if (p.failed) throw refusal(`cannot capture payment ${p.id}: the card was declined (${p.failed})`, p.status);
      requireStatus(p, ['authorized'], 'capture');
      p.status = 'captured';
      p.capturedAt = new Date();
      emit(p, 'payment.captured');
    }

    function refund(p: Payment, amount: number | undefined, description: string | null): void {
      requireStatus(p, ['captured'], 'refund');
      const refunded = p.refunds.reduce((sum, r) => sum + r.amount, 0);
      const remaining = p.amount - refunded;
      const asked = amount ?? remaining;
      if (asked > remaining) {
        throw new KomojuError(422, 'invalid_parameter', `refund of ${asked} exceeds what is left to refund (${remaining} of ${p.amount})`, 'amount', { refundable: remaining }, true);
      }
      p.refunds.push({ id: komojuId(), resource: 'refund', amount: asked, currency: 'JPY', payment: p.id, description, created_at: iso(new Date()), chargeback: false });
      const full = refunded + asked === p.amount;
      if (full) p.status = 'refunded';
      emit(p, 'payment.refund.created');
      if (full) emit(p, 'payment.refunded');
    }

    function cancel(p: Payment): void {
      requireStatus(p, ['pending', 'authorized'], 'cancel');
      p.status = 'cancelled';
      emit(p, 'payment.cancelled');
    }

    function expire(p: Payment): void {
      requireStatus(p, ['pending', 'authorized'], 'expire');
      p.status = 'expired';
      emit(p, 'payment.expired');
    }

    function payAtStore(p: Payment): void {
      if (!isPayLater(p.type)) throw refusal(`payment ${p.id} is ${p.type}: only konbini, bank_transfer and pay_easy are paid by the customer later`, p.status, { type: p.type });
      requireStatus(p, ['authorized'], 'pay');
      p.status = 'captured';
      p.capturedAt = new Date();
      emit(p, 'payment.captured');
      paid(p);
    }

    // ---- API --------------------------------------------------------------------------------------

    await app.register(
      async (api) => {
        const accountOf = new WeakMap<FastifyRequest, Account>();

        api.addHook('onRequest', async (request) => {
          const account = authenticate(request.headers.authorization);
          if (!account) throw new KomojuError(401, 'unauthorized', 'User authorization failed: send HTTP Basic auth with the secret key as the user name and an empty password (-u sk_…:)');
          accountOf.set(request, account);
        });

        api.addHook('preValidation', async (request) => {
          const type = request.headers['content-type'];
          if (request.method === 'POST' && type !== undefined && !/^application\/json\b/i.test(type)) {
            throw new KomojuError(400, 'bad_request', `send the body as JSON (Content-Type: application/json), not ${type}`);
          }
        });

        const account = (request: FastifyRequest): Account => {
          const a = accountOf.get(request);
          if (!a) throw new KomojuError(401, 'unauthorized', 'User authorization failed');
          return a;
        };

        function authenticate(header: string | undefined): Account | undefined {
          const match = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header ?? '');
          if (!match) return undefined;
          const decoded = Buffer.from(match[1]!, 'base64').toString('utf8');
          const colon = decoded.indexOf(':');
          if (colon < 0 || colon !== decoded.length - 1) return undefined; // the password must be empty
          const given = Buffer.from(decoded.slice(0, colon), 'utf8');
          let found: Account | undefined;
          for (const a of accounts) {
            // Every account is compared, so the time taken does not say which one nearly matched.
            if (a.secretKey.length === given.length && timingSafeEqual(a.secretKey, given) && !found) found = a;
          }
          return found;
        }

        /** Runs a POST once per idempotency key (see the top for the rules). */
        const keyed =
          (run: (request: FastifyRequest, a: Account) => Answer) =>
          async (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> => {
            const a = account(request);
            const key = request.headers['x-komoju-idempotency'];
            if (key === undefined) {
              await pause(faults.apiDelayMs);
              const answer = run(request, a);
              return reply.status(answer.status).send(answer.body);
            }
            if (typeof key !== 'string' || !IDEMPOTENCY_KEY.test(key)) {
              throw new KomojuError(400, 'bad_request', 'X-KOMOJU-IDEMPOTENCY must be 1–100 printable ASCII characters, sent once', 'X-KOMOJU-IDEMPOTENCY');
            }
            const now = Date.now();
            for (const [k, kept] of a.idempotency) if (now - kept.at > IDEMPOTENCY_LIFETIME_MS && kept.state === 'done') a.idempotency.delete(k);
            const fingerprint = `${request.method} ${request.url} ${canonicalJson(request.body ?? {})}`;
            const kept = a.idempotency.get(key);
            if (kept) {
              if (kept.fingerprint !== fingerprint) {
                throw new KomojuError(422, 'unprocessable_entity', `X-KOMOJU-IDEMPOTENCY ${key} was already used for a different request; use a new key for a new request`, 'X-KOMOJU-IDEMPOTENCY');
              }
              if (kept.state === 'in_flight') throw new KomojuError(409, 'conflict', `a request with X-KOMOJU-IDEMPOTENCY ${key} is still being processed; retry it later`);
              log.info({ key, url: request.url }, 'komoju sandbox: idempotent replay');
              return reply.status(kept.status).send(kept.body);
            }
            const entry: KeptAnswer = { fingerprint, at: now, state: 'in_flight', status: 0, body: null };
            a.idempotency.set(key, entry);
            try {
              await pause(faults.apiDelayMs);
              const answer = run(request, a);
              Object.assign(entry, { state: 'done', status: answer.status, body: answer.body });
              return reply.status(answer.status).send(answer.body);
            } catch (error) {
              if (error instanceof KomojuError && error.final) Object.assign(entry, { state: 'done', status: error.status, body: error.body() });
              else a.idempotency.delete(key);
              throw error;
            }
          };

        const slow = async (): Promise<void> => {
          await pause(faults.apiDelayMs);
        };

        const findSession = (a: Account, id: string): Session => {
          const s = sessions.get(id);
          if (!s || s.account !== a) throw new KomojuError(404, 'not_found', `no session ${id}`, 'id');
          return s;
        };
        const findPayment = (a: Account, id: string): Payment => {
          const p = payments.get(id);
          if (!p || p.account !== a) throw new KomojuError(404, 'not_found', `no payment ${id}`, 'id');
          return p;
        };

        api.post('/sessions', { bodyLimit: API_BODY_LIMIT }, keyed((request, a) => {
          const input = parse(sessionSchema, request.body);
          const ext = input.payment_data?.external_order_num ?? null;
          if (ext !== null && a.externalOrderNums.has(ext)) {
            throw new KomojuError(
              422,
              'invalid_parameter',
              `external_order_num ${ext} was already used by session ${a.externalOrderNums.get(ext)}: it must be unique per session (a new one for every payment attempt)`,
              'payment_data[external_order_num]',
            );
          }
          const { external_order_num: _ext, capture: _capture, ...paymentData } = input.payment_data ?? {};
          let id = komojuId();
          while (sessions.has(id)) id = komojuId();
          const now = new Date();
          const s: Session = {
            id,
            account: a,
            base: `${request.protocol}://${request.host}${prefix}`,
            amount: input.amount,
            returnUrl: input.return_url,
            paymentTypes: input.payment_types ? [...new Set(input.payment_types)] : [...DEFAULT_PAYMENT_TYPES],
            email: input.email ?? null,
            locale: input.default_locale ?? 'ja',
            externalOrderNum: ext,
            capture: input.payment_data?.capture ?? 'auto',
            lineItems: input.line_items ?? [],
            metadata: input.metadata ?? {},
            paymentData,
            status: 'pending',
            payment: null,
            attempts: [],
            challenge: null,
            createdAt: now,
            expiresAt: new Date(now.getTime() + SESSION_LIFETIME_MS),
          };
          sessions.set(s.id, s);
          if (ext !== null) a.externalOrderNums.set(ext, s.id);
          log.info({ session: s.id, amount: s.amount, externalOrderNum: ext, account: a.index }, 'komoju sandbox: session created');
          return { status: 200, body: sessionView(s) };
        }));

        api.get<{ Params: { id: string } }>('/sessions/:id', async (request) => {
          await slow();
          return sessionView(findSession(account(request), request.params.id));
        });

        api.post<{ Params: { id: string } }>('/sessions/:id/cancel', { bodyLimit: API_BODY_LIMIT }, keyed((request, a) => {
          const s = findSession(a, (request.params as { id: string }).id);
          if (s.status !== 'pending') throw refusal(`cannot cancel session ${s.id}: it is ${s.status} (only pending sessions can be cancelled)`, s.status);
          s.status = 'cancelled';
          s.challenge = null;
          return { status: 200, body: sessionView(s) };
        }));

        api.get('/payments', async (request) => {
          await slow();
          const a = account(request);
          const q = parse(listSchema, request.query);
          const pageNo = q.page ?? 1;
          const perPage = q.per_page ?? 10;
          // Every payment is in yen, so a currency filter other than JPY finds nothing.
          const found =
            q.currency !== undefined && q.currency !== 'JPY'
              ? []
              : [...payments.values()]
                  .filter((p) => p.account === a)
                  .filter((p) => q.external_order_num === undefined || p.session.externalOrderNum === q.external_order_num)
                  .filter((p) => q.status === undefined || p.status === q.status)
                  .reverse(); // newest first
          return {
            resource: 'list',
            total: found.length,
            page: pageNo,
            per_page: perPage,
            last_page: Math.ceil(found.length / perPage),
            data: found.slice((pageNo - 1) * perPage, pageNo * perPage).map(paymentView),
          };
        });

        api.get<{ Params: { id: string } }>('/payments/:id', async (request) => {
          await slow();
          return paymentView(findPayment(account(request), request.params.id));
        });

        const operation = (run: (p: Payment, body: unknown) => void) =>
          keyed((request, a) => {
            const p = findPayment(a, (request.params as { id: string }).id);
            run(p, request.body);
            return { status: 200, body: paymentView(p) };
          });

        api.post('/payments/:id/capture', { bodyLimit: API_BODY_LIMIT }, operation((p) => capture(p)));
        api.post('/payments/:id/refund', { bodyLimit: API_BODY_LIMIT }, operation((p, body) => {
          const input = parse(refundSchema, body);
          refund(p, input.amount, input.description ?? null);
        }));
        api.post('/payments/:id/cancel', { bodyLimit: API_BODY_LIMIT }, operation((p) => cancel(p)));

        api.get<{ Params: { id: string } }>('/events/:id', async (request) => {
          await slow();
          const event = account(request).events.get(request.params.id);
          if (!event) throw new KomojuError(404, 'not_found', `no event ${request.params.id}`, 'id');
          return event;
        });
      },
      { prefix: '/api/v1' },
    );

    // ---- test switches (no credentials) ---------------------------------------------------------

    const switchTarget = (id: string): Payment => {
      const p = payments.get(id);
      if (!p) throw new KomojuError(404, 'not_found', `no payment ${id}`, 'id');
      return p;
    };

    app.get('/api/faults', async () => ({ ...faults }));
    app.post('/api/faults', { bodyLimit: FORM_LIMIT }, async (request) => {
      const input = parse(faultsSchema, request.body);
      Object.assign(faults, input);
      if (input.reorder === false) flush(); // nothing stays held once reordering is off
      log.info({ faults }, 'komoju sandbox: faults set');
      return { ...faults };
    });
    app.post<{ Params: { id: string } }>('/api/payments/:id/pay-at-store', async (request) => {
      const p = switchTarget(request.params.id);
      payAtStore(p);
      return paymentView(p);
    });
    app.post<{ Params: { id: string } }>('/api/payments/:id/expire', async (request) => {
      const p = switchTarget(request.params.id);
      expire(p);
      return paymentView(p);
    });
    app.post('/api/webhooks/flush', async () => ({ flushed: flush() }));
    // What the account sent about one payment, and how each delivery ended (tests and the curious).
    app.get<{ Params: { id: string } }>('/api/payments/:id/webhooks', async (request) => ({
      data: switchTarget(request.params.id).events.map((e) => ({
        id: e.event.id,
        type: e.event.type,
        state: e.state,
        deliveries: e.deliveries.map((d) => ({ deliveryId: d.deliveryId, status: d.status, attempts: d.attempts, duplicate: d.duplicate })),
      })),
    }));

    // ---- hosted page --------------------------------------------------------------------------------

    const sessionOf = (id: string): Session => {
      const s = sessions.get(id);
      if (!s) throw new KomojuError(404, 'not_found', 'このお支払いページはありません / No such checkout session.');
      return s;
    };
    const open = (s: Session): boolean => s.status === 'pending' && s.expiresAt.getTime() > Date.now();

    function closedPage(reply: FastifyReply, s: Session, status = 200): FastifyReply {
      if (s.status === 'completed' && s.payment) return html(reply, donePage(s, s.payment, !faults.noReturn), status);
      const why =
        s.status === 'cancelled'
          ? 'このお支払いはキャンセルされました / This checkout was cancelled by the shop.'
          : s.status === 'pending'
            ? 'このお支払いページの有効期限が切れました / This checkout has expired.'
            : `このお支払いは ${esc(s.status)} です / This checkout is ${esc(s.status)}.`;
      return html(reply, page('KOMOJU sandbox', `<h1>${why}</h1><p><a id="back-to-shop" href="${esc(returnTarget(s))}">ショップに戻る / Back to the shop</a></p>`), status === 200 && s.status === 'pending' ? 410 : status);
    }

    /** After a payment the browser goes back to the shop (303), unless the noReturn fault keeps it here. */
    function sendBack(reply: FastifyReply, s: Session, p: Payment): FastifyReply {
      if (faults.noReturn) return html(reply, donePage(s, p, false));
      return reply.redirect(returnTarget(s), 303);
    }

    app.get<{ Params: { id: string } }>('/sessions/:id', async (request, reply) => {
      const s = sessionOf(request.params.id);
      if (!open(s)) return closedPage(reply, s);
      if (s.challenge) return reply.redirect(`${prefix}/sessions/${s.id}/3ds`, 303);
      return html(reply, checkoutPage(s));
    });

    app.post<{ Params: { id: string; type: string } }>('/sessions/:id/pay/:type', { bodyLimit: FORM_LIMIT }, async (request, reply) => {
      const s = sessionOf(request.params.id);
      const type = PAYMENT_TYPES.find((t) => t === request.params.type);
      if (!type || !s.paymentTypes.includes(type)) throw new KomojuError(404, 'not_found', `${request.params.type} is not offered on this checkout`);
      if (!open(s)) return closedPage(reply, s, 409);
      if (s.challenge) return reply.redirect(`${prefix}/sessions/${s.id}/3ds`, 303);
      const form = formOf(request.body);

      if (type === 'credit_card') {
        const card = { number: form('number').replace(/[\s-]/g, ''), month: form('month').padStart(2, '0'), year: form('year'), name: form('name') };
        const problem = cardProblem(card, form('verification_value'));
        if (problem) return html(reply, checkoutPage(s, problem), 422);
        const outcome = TEST_CARDS[card.number]?.outcome ?? { kind: 'approve' };
        if (outcome.kind === 'challenge') {
          s.challenge = card;
          return reply.redirect(`${prefix}/sessions/${s.id}/3ds`, 303);
        }
        if (outcome.kind === 'decline') {
          declineCard(s, card, outcome.reason);
          return html(reply, checkoutPage(s, `カードが承認されませんでした (${outcome.reason}) / The card was declined (${outcome.reason}). 別のカードをお試しください / Try another card.`));
        }
        return sendBack(reply, s, approveCard(s, card));
      }

      if (isPayLater(type)) {
        const email = s.email ?? form('email');
        if (!z.email().safeParse(email).success) return html(reply, checkoutPage(s, 'メールアドレスを入力してください / Enter a valid e-mail address.'), 422);
        let store = '';
        if (type === 'konbini') {
          store = form('store');
          if (!KONBINI_STORES[store]) return html(reply, checkoutPage(s, 'コンビニを選んでください / Choose a convenience store.'), 422);
          if (s.amount + FEES.konbini > KONBINI_LIMIT) return html(reply, checkoutPage(s, `コンビニ払いは ¥${KONBINI_LIMIT.toLocaleString('ja-JP')} までです / Konbini is limited to ¥${KONBINI_LIMIT.toLocaleString('ja-JP')}.`), 422);
        }
        return sendBack(reply, s, payLater(s, type, email, store));
      }

      const approve = form('outcome') !== 'decline';
      const p = wallet(s, type, approve);
      if (!approve) return html(reply, checkoutPage(s, `${TYPE_LABELS[type]}: お支払いが完了しませんでした / The payment did not go through.`));
      return sendBack(reply, s, p);
    });

    app.get<{ Params: { id: string } }>('/sessions/:id/3ds', async (request, reply) => {
      const s = sessionOf(request.params.id);
      if (!open(s)) return closedPage(reply, s);
      if (!s.challenge) return reply.redirect(`${prefix}/sessions/${s.id}`, 303);
      const action = `${prefix}/sessions/${s.id}/3ds`;
      return html(
        reply,
        page(
          '3-D Secure',
          `<h1>本人認証 / 3-D Secure</h1>
<p>カード発行会社による本人認証です / Your card issuer asks you to confirm this payment.</p>
<p>金額 / Amount: <strong>¥${s.amount.toLocaleString('ja-JP')}</strong> — カード / Card: **** ${esc(s.challenge.number.slice(-4))}</p>
<form id="3ds-approve" method="post" action="${esc(action)}"><input type="hidden" name="result" value="approve"><button type="submit">認証する / Approve</button></form>
<form id="3ds-fail" method="post" action="${esc(action)}"><input type="hidden" name="result" value="fail"><button type="submit">認証に失敗する / Fail authentication</button></form>`,
        ),
      );
    });

    app.post<{ Params: { id: string } }>('/sessions/:id/3ds', { bodyLimit: FORM_LIMIT }, async (request, reply) => {
      const s = sessionOf(request.params.id);
      if (!open(s)) return closedPage(reply, s, 409);
      if (!s.challenge) return reply.redirect(`${prefix}/sessions/${s.id}`, 303);
      const card = s.challenge;
      const result = formOf(request.body)('result');
      if (result === 'approve') return sendBack(reply, s, approveCard(s, card));
      if (result !== 'fail') throw new KomojuError(400, 'bad_request', 'result must be approve or fail');
      declineCard(s, card, 'three_d_secure_failed');
      return html(reply, checkoutPage(s, '本人認証に失敗しました / 3-D Secure authentication failed. 別のカードをお試しください / Try another card.'));
    });

    // ---- instructions (pay later) ---------------------------------------------------------------

    app.get<{ Params: { id: string } }>('/instructions/:id', async (request, reply) => {
      const p = payments.get(request.params.id);
      if (!p || !isPayLater(p.type)) throw new KomojuError(404, 'not_found', 'お支払い方法の案内はありません / No instructions for this payment.');
      return html(reply, page('KOMOJU sandbox: instructions', instructionsBlock(p, true)));
    });
    app.post<{ Params: { id: string; action: string } }>('/instructions/:id/:action', { bodyLimit: FORM_LIMIT }, async (request, reply) => {
      const p = payments.get(request.params.id);
      if (!p || !isPayLater(p.type)) throw new KomojuError(404, 'not_found', 'No instructions for this payment.');
      if (request.params.action === 'pay-at-store') payAtStore(p);
      else if (request.params.action === 'expire') expire(p);
      else throw new KomojuError(404, 'not_found', `no action ${request.params.action}`);
      return reply.redirect(`${prefix}/instructions/${p.id}`, 303);
    });

    // ---- overview -------------------------------------------------------------------------------

    app.get('/', async (_request, reply) => {
      const sessionRows = [...sessions.values()]
        .reverse()
        .slice(0, 50)
        .map((s) => {
          const link = open(s) ? ` <a href="${esc(`${prefix}/sessions/${s.id}`)}">支払画面 / pay</a>` : '';
          return `<tr><td>${esc(iso(s.createdAt))}</td><td>#${s.account.index}</td><td><code>${esc(s.id)}</code></td><td>${esc(s.externalOrderNum ?? '—')}</td><td>¥${s.amount.toLocaleString('ja-JP')}</td><td>${esc(s.paymentTypes.join(', '))}</td><td>${esc(s.status)}${link}</td></tr>`;
        })
        .join('\n');
      const paymentRows = [...payments.values()]
        .reverse()
        .slice(0, 50)
        .map((p) => {
          const status = p.failed ? `pending (failed: ${p.failed})` : p.status;
          const refunded = p.refunds.reduce((sum, r) => sum + r.amount, 0);
          const instructions = isPayLater(p.type) ? ` <a href="${esc(`${prefix}/instructions/${p.id}`)}">案内 / instructions</a>` : '';
          const events = p.events
            .map((e) => {
              const sent = e.deliveries.map((d) => `${d.status}${d.attempts > 1 ? ` ×${d.attempts}` : ''}${d.duplicate ? ' (dup)' : ''}${d.status !== 'delivered' && d.lastOutcome ? ` (${esc(d.lastOutcome)})` : ''}`).join(', ');
              return `${esc(e.event.type)}: ${e.state === 'sent' ? sent || 'no webhooks' : e.state}`;
            })
            .join('<br>');
          return `<tr><td>${esc(iso(p.createdAt))}</td><td><code>${esc(p.id)}</code></td><td>${esc(p.session.externalOrderNum ?? '—')}</td><td>${esc(p.type)}</td><td>¥${(p.amount + p.fee).toLocaleString('ja-JP')}${refunded ? ` (返金 / refunded ¥${refunded.toLocaleString('ja-JP')})` : ''}</td><td>${esc(status)}${instructions}</td><td>${events || '—'}</td></tr>`;
        })
        .join('\n');
      const accountList = accounts
        .map((a) => `<li>#${a.index}: ${a.webhooks.length ? a.webhooks.map((w) => `<code>${esc(w.url)}</code>`).join(', ') : 'webhook なし / no webhooks'}</li>`)
        .join('');
      return html(
        reply,
        page(
          'KOMOJU sandbox',
          `<h1>KOMOJU sandbox</h1>
<p>KOMOJU のセッション・決済 API・Webhook の模擬環境です。/ A simulator of KOMOJU's sessions, payments API and webhooks.</p>
<ul>
<li>API: <code>${esc(prefix)}/api/v1</code> (Basic auth: secret key, empty password)</li>
<li>障害設定 / Faults: <code>${esc(JSON.stringify(faults))}</code> — <code>POST ${esc(prefix)}/api/faults</code></li>
<li>保留中の Webhook / Held webhooks: ${[...held.values()].reduce((n, h) => n + h.length, 0)} — <code>POST ${esc(prefix)}/api/webhooks/flush</code></li>
</ul>
<h2>アカウント / Accounts</h2><ul>${accountList}</ul>
<h2>セッション / Sessions</h2>
<table><tr><th>作成 / At</th><th>Account</th><th>ID</th><th>注文番号 / Order</th><th>金額</th><th>方法 / Types</th><th>状態 / Status</th></tr>
${sessionRows || '<tr><td colspan="7">まだありません / None yet.</td></tr>'}</table>
<h2>決済 / Payments</h2>
<table><tr><th>作成 / At</th><th>ID</th><th>注文番号 / Order</th><th>方法 / Type</th><th>合計 / Total</th><th>状態 / Status</th><th>Webhook</th></tr>
${paymentRows || '<tr><td colspan="7">まだありません / None yet.</td></tr>'}</table>`,
        ),
      );
    });

    // ---- page bodies ----------------------------------------------------------------------------

    function checkoutPage(s: Session, error?: string): string {
      const base = `${prefix}/sessions/${s.id}/pay`;
      const yen = (n: number): string => `¥${n.toLocaleString('ja-JP')}`;
      const emailField = s.email
        ? `<p>メール / E-mail: ${esc(s.email)}</p>`
        : `<p><label>メールアドレス / E-mail <input type="email" name="email" required></label></p>`;
      const sections = s.paymentTypes.map((type) => {
        const title = `<h2>${esc(TYPE_LABELS[type])}</h2>`;
        if (type === 'credit_card') {
          const cards = Object.entries(TEST_CARDS)
            .map(([n, c]) => `<tr><td><code>${n}</code></td><td>${esc(c.label)}</td></tr>`)
            .join('\n');
          return `<section>${title}
<form id="pay-credit_card" method="post" action="${esc(`${base}/credit_card`)}">
<p><label>カード番号 / Card number <input name="number" inputmode="numeric" autocomplete="off" required></label></p>
<p><label>名義 / Name on card <input name="name" autocomplete="off"></label></p>
<p><label>有効期限 月 / Month <input name="month" size="2" placeholder="12" required></label>
<label>年 / Year <input name="year" size="4" placeholder="30" required></label>
<label>セキュリティコード / CVV <input name="verification_value" size="4"></label></p>
<p><button type="submit">${yen(s.amount)} を支払う / Pay ${yen(s.amount)}</button></p>
</form>
<details><summary>テストカード / Test cards</summary><table>${cards}</table><p>その他の有効な番号は承認されます / Any other valid number is approved.</p></details>
</section>`;
        }
        if (isPayLater(type)) {
          const fee = FEES[type];
          const feeNote = fee ? `<p class="note">手数料 / Fee ${yen(fee)} — お支払い合計 / Total ${yen(s.amount + fee)}</p>` : '';
          if (type === 'konbini' && s.amount + fee > KONBINI_LIMIT) {
            return `<section>${title}<p class="note">コンビニ払いは ${yen(KONBINI_LIMIT)} までです / Konbini is limited to ${yen(KONBINI_LIMIT)}.</p></section>`;
          }
          const stores =
            type === 'konbini'
              ? `<p><label>お支払いするコンビニ / Store <select name="store" required>${Object.entries(KONBINI_STORES)
                  .map(([value, st]) => `<option value="${esc(value)}">${esc(st.label)}</option>`)
                  .join('')}</select></label></p>`
              : '';
          return `<section>${title}
<form id="pay-${type}" method="post" action="${esc(`${base}/${type}`)}">
${stores}${emailField}${feeNote}
<p><button type="submit">お支払い番号を発行する / Get payment instructions</button></p>
</form></section>`;
        }
        return `<section>${title}
<form id="pay-${type}" method="post" action="${esc(`${base}/${type}`)}"><input type="hidden" name="outcome" value="approve"><button type="submit">${esc(TYPE_LABELS[type])} で支払う / Pay</button></form>
<form id="decline-${type}" method="post" action="${esc(`${base}/${type}`)}"><input type="hidden" name="outcome" value="decline"><button type="submit">支払いに失敗する / Fail</button></form>
</section>`;
      });
      const lines = s.lineItems.length
        ? `<ul>${s.lineItems.map((l) => `<li>${esc(String(l.description ?? ''))} × ${esc(String(l.quantity ?? ''))}${typeof l.amount === 'number' ? ` (${yen(l.amount)})` : ''}</li>`).join('')}</ul>`
        : '';
      return page(
        'KOMOJU sandbox お支払い',
        `<h1>お支払い / Checkout</h1>
<table>
<tr><th>注文番号 / Order</th><td>${esc(s.externalOrderNum ?? '—')}</td></tr>
<tr><th>金額 / Amount</th><td><strong>${yen(s.amount)}</strong> (${s.amount} JPY)</td></tr>
</table>
${lines}
${error ? `<p class="error" role="alert">${esc(error)}</p>` : ''}
${sections.join('\n')}
<p><a id="back-to-shop" href="${esc(returnTarget(s))}">キャンセルしてショップに戻る / Cancel and return to the shop</a></p>`,
      );
    }

    function donePage(s: Session, p: Payment, withLink: boolean): string {
      const heading = isPayLater(p.type)
        ? 'お支払い番号を発行しました / Your payment instructions'
        : p.status === 'authorized'
          ? 'カードを承認しました / Card authorized'
          : 'お支払いが完了しました / Payment complete';
      const back = withLink
        ? `<p><a id="back-to-shop" href="${esc(returnTarget(s))}">ショップに戻る / Return to the shop</a></p>`
        : '<p class="note">完了しました。ショップへは戻りません (fault noReturn) / Done. The browser is not sent back to the shop (fault noReturn).</p>';
      return page('KOMOJU sandbox', `<h1>${heading}</h1>${isPayLater(p.type) ? instructionsBlock(p, false) : ''}${back}`);
    }

    function instructionsBlock(p: Payment, withButtons: boolean): string {
      const d = p.details;
      const rows: [string, unknown][] =
        p.type === 'konbini'
          ? [
              ['コンビニ / Store', KONBINI_STORES[String(d.store)]?.label ?? d.store],
              ['受付番号 / Receipt', d.receipt],
              ['確認番号 / Confirmation code', d.confirmation_code ?? '—'],
            ]
          : p.type === 'bank_transfer'
            ? [
                ['銀行 / Bank', d.bank_name],
                ['支店 / Branch', d.account_branch_name],
                ['口座 / Account', `${String(d.account_type)} ${String(d.account_number)}`],
                ['名義 / Holder', d.account_name],
              ]
            : [
                ['収納機関番号 / Bank id', d.bank_id],
                ['お客様番号 / Customer id', d.customer_id],
                ['確認番号 / Confirmation id', d.confirmation_id],
              ];
      const buttons =
        withButtons && p.status === 'authorized'
          ? `<form id="pay-at-store" method="post" action="${esc(`${prefix}/instructions/${p.id}/pay-at-store`)}"><button type="submit">お客様が店頭で支払った / Customer paid at the store</button></form>
<form id="expire" method="post" action="${esc(`${prefix}/instructions/${p.id}/expire`)}"><button type="submit">期限切れにする / Let the deadline pass</button></form>`
          : '';
      return `<section class="instructions"><h2>${esc(TYPE_LABELS[p.type])}</h2>
<table>
${rows.map(([k, v]) => `<tr><th>${esc(k)}</th><td><strong>${esc(String(v))}</strong></td></tr>`).join('\n')}
<tr><th>お支払い金額 / Total</th><td>¥${(p.amount + p.fee).toLocaleString('ja-JP')}${p.fee ? ` (手数料 / fee ¥${p.fee.toLocaleString('ja-JP')})` : ''}</td></tr>
<tr><th>支払期限 / Deadline</th><td>${esc(p.deadline ? formatJst(p.deadline) : '—')}</td></tr>
<tr><th>状態 / Status</th><td>${esc(p.status)}</td></tr>
</table>
<p><a href="${esc(String(d.instructions_url ?? ''))}">お支払い方法 / Instructions page</a></p>
${buttons}</section>`;
    }
  };
}

// ---- helpers ------------------------------------------------------------------------------------

/** Validates with a zod schema; the first problem becomes KOMOJU's missing_parameter / invalid_parameter. */
function parse<S extends z.ZodType>(schema: S, body: unknown): z.infer<S> {
  if (body !== undefined && body !== null && (typeof body !== 'object' || Array.isArray(body))) {
    throw new KomojuError(400, 'bad_request', 'the body must be a JSON object');
  }
  const result = schema.safeParse(body ?? {});
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  const path = issue.path.map((p) => (typeof p === 'symbol' ? p.toString() : p));
  const param = path.length ? path.map((p, i) => (i === 0 ? String(p) : `[${String(p)}]`)).join('') : null;
  if (issue.code === 'unrecognized_keys') {
    return raise(new KomojuError(422, 'invalid_parameter', `unknown parameter: ${issue.keys.join(', ')}`, issue.keys[0] ?? null));
  }
  if (param && valueAt(body, path) === undefined) {
    return raise(new KomojuError(422, 'missing_parameter', `A required parameter (${param}) is missing`, param));
  }
  return raise(new KomojuError(422, 'invalid_parameter', `${param ?? 'body'}: ${issue.message}`, param));
}

function raise(error: Error): never {
  throw error;
}

function valueAt(body: unknown, path: (string | number)[]): unknown {
  let v: unknown = body;
  for (const key of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<string | number, unknown>)[key];
  }
  return v;
}

/** JSON with object keys sorted: two bodies that mean the same compare equal. */
function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v) ?? 'null';
}

function formOf(body: unknown): (name: string) => string {
  const fields = body !== null && typeof body === 'object' ? (body as Record<string, unknown>) : {};
  return (name) => {
    const v = fields[name];
    return typeof v === 'string' ? v.trim() : Array.isArray(v) && typeof v[0] === 'string' ? v[0].trim() : '';
  };
}

/** The return URL with `session_id` added to its query as written (see the top). */
function returnTarget(s: { id: string; returnUrl: string }): string {
  const hash = s.returnUrl.indexOf('#');
  const url = hash >= 0 ? s.returnUrl.slice(0, hash) : s.returnUrl;
  const fragment = hash >= 0 ? s.returnUrl.slice(hash) : '';
  const sep = !url.includes('?') ? '?' : url.endsWith('?') || url.endsWith('&') ? '' : '&';
  return `${url}${sep}session_id=${encodeURIComponent(s.id)}${fragment}`;
}

function cardProblem(card: { number: string; month: string; year: string }, cvv: string): string | undefined {
  if (!/^\d{14,16}$/.test(card.number) || (!TEST_CARDS[card.number] && !luhn(card.number))) return 'カード番号が正しくありません / The card number is not valid.';
  const month = Number(card.month);
  if (!/^\d{1,2}$/.test(card.month) || month < 1 || month > 12) return '有効期限の月が正しくありません / The expiry month is not valid.';
  if (!/^(\d{2}|\d{4})$/.test(card.year)) return '有効期限の年が正しくありません / The expiry year is not valid.';
  const year = card.year.length === 2 ? 2000 + Number(card.year) : Number(card.year);
  const now = new Date();
  if (year < now.getUTCFullYear() || (year === now.getUTCFullYear() && month < now.getUTCMonth() + 1)) return 'カードの有効期限が切れています / The card has expired.';
  if (cvv && !/^\d{3,4}$/.test(cvv)) return 'セキュリティコードが正しくありません / The security code is not valid.';
  return undefined;
}

function cardDetails(card: { number: string; month: string; year: string; name: string }): { type: string; [key: string]: unknown } {
  const n = card.number;
  const brand = n.startsWith('4')
    ? 'visa'
    : /^5[1-5]/.test(n)
      ? 'master'
      : n.startsWith('35')
        ? 'jcb'
        : /^3[47]/.test(n)
          ? 'american_express'
          : /^3[068]/.test(n)
            ? 'diners_club'
            : 'unknown';
  return { type: 'credit_card', brand, last_four_digits: n.slice(-4), month: card.month, year: card.year.slice(-2), name: card.name || null };
}

/** 25 lower-case base-36 characters, the shape of KOMOJU's ids. */
function komojuId(): string {
  const alphabet = '0123456789abcdefghijklmnopqrstuvwxyz';
  let out = '';
  for (const b of randomBytes(25)) out += alphabet[b % 36];
  return out;
}

/** ISO 8601 in UTC without milliseconds, as KOMOJU writes times. */
function iso(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function formatJst(d: Date): string {
  const jst = new Date(d.getTime() + 9 * 3600 * 1000);
  return `${jst.toISOString().slice(0, 16).replace('T', ' ')} JST`;
}

function html(reply: FastifyReply, body: string, status = 200): FastifyReply {
  return reply.status(status).type('text/html; charset=utf-8').header('cache-control', 'no-store').send(body);
}

function page(title: string, body: string): string {
  return `<!doctype html>
<html lang="ja"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>${esc(title)}</title>
<style>body{font-family:system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left}section{margin:1.5rem 0}.error{color:#a00}.note{color:#555;font-size:.9em}</style>
</head>
<body>
<p class="note">KOMOJU sandbox — テスト環境 / test environment, no real money</p>
${body}
</body></html>
`;
}
