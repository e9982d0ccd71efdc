import { randomBytes, randomInt, timingSafeEqual } from 'node:crypto';
import type { FastifyPluginAsync, FastifyReply } from 'fastify';
import type { Logger } from 'pino';
import { z } from 'zod';
import { decodeSjis, encodeSjis, parseSjisUrlEncoded } from '../gateways/common/sjis.js';
import {
  encodeMessage,
  hashesMatch,
  orderedEntries,
  parseMessage,
  SBPS_ERROR_TYPE,
  SbpsFieldError,
  sbpsHash,
  validateMessage,
  verifyMessage,
  type SbpsMessage,
} from '../gateways/sbps/index.js';
import {
  buildSbpsXml,
  jstTimestamp,
  parseSbpsXml,
  SBPS_ERROR_ITEMS,
  SBPS_CAPTURE_AMOUNT_METHODS,
  SBPS_XML_API_REQUEST_IDS,
  SbpsXmlError,
  XML_API_CONFIRM_REQUEST_ID,
  type XmlApiOperation,
  type XmlEntry,
} from '../gateways/sbps/xml-api.js';
import { escapeHtml as esc } from '../html.js';
import { luhn } from './cards.js';

/*
 * The SBPS simulator: link type (購入要求) and the XML API, as strict as SBPS where the reference
 * knows SBPS's behaviour, and documented where it guesses. Mounted at /sandbox/sbps by the app.
 *
 *   POST /f01/FepBuyInfoReceive.do   the purchase request (browser form, urlencoded Shift_JIS)
 *   GET  /pay/:token                 payment page: card (test cards), carriers and PayPay, convenience store, cancel
 *   POST /pay/:token/{card,wallet,webcvs,cancel}, GET|POST /pay/:token/3ds, GET /pay/:token/return
 *   POST /api/xmlapi.do              XML API: capture, refund, partial refund, cancel, inquiry
 *   GET  /  and  GET /pending        what happened; convenience-store payments waiting for money
 *   POST /api/faults, /api/deposit/:trackingId, /api/expire/:trackingId   switches for tests
 *
 * Its state is in memory and invisible to the store: the store learns what happened only from the
 * result notifications, the browser returns and the XML API, as with the real SBPS.
 *
 * Choices where the reference is silent or UNCONFIRMED (each one a guess at SBPS's behaviour):
 * - Error codes: MMMTTIII with the item codes of sbpayment.rb's table of the SBPS manual (001
 *   merchant_id, 004 order_id, 008 amount, 023 request_date, 025 sps_hashcode, 027 tracking_id …,
 *   999 when no item fits): bad hash 99909025, unknown merchant 99914001, required 99903iii, length
 *   99905iii, characters 99904iii, format 99906iii, duplicate order_id 99996004, request expired
 *   99910023. Error pages answer HTTP 200, as SBPS's screens do.
 * - The purchase request must carry every defined field, blank when unset; only detail rows may be
 *   left out (seed 002). A missing element is refused as a required item, 99903iii (99903999 for
 *   fields without an item code, such as sps_cust_no).
 * - free_csv is decoded as the library builds it (Base64 of Shift_JIS, `FREE_CSV_BASE64_OF`) and
 *   checked as the builder checks it: Base64 whose length is not a multiple of 4 or an item that is
 *   not KEY=VALUE is 99906999, a forbidden character (, ' " % | & < >, half-width kana, outside JIS
 *   X 0208; MAIL: A-Z a-z 0-9 @ . _ -) 99904999.
 * - Declines: 10123999 (card cannot be used), 10122999 (credit limit), 10136999 (3-D Secure failed:
 *   "other authorisation error"). The real screen may let the customer try another card; the sandbox
 *   ends the attempt with NG so the store's failure path is exercised.
 * - A customer who cancels on the payment screen gets no result notification (the reference does not
 *   say SBPS sends one); the browser goes to cancel_url with a signed return whose res_result is CR.
 * - The browser return (A03-1) is a POST form (sbpayment.rb's captured return is a POST body), fields
 *   in random order, `TOKEN` added unhashed (seed 002), hash over Shift_JIS, uppercase like the
 *   result CGI's. It submits itself with a same-origin script; without JavaScript it is one button.
 * - Result notifications (A02-1) do not echo dtl_* rows (the library's default, UNCONFIRMED).
 *   Convenience store: OK carries res_pay_method=webcvs and an empty res_payinfo_key; the payment
 *   number is shown on the sandbox's screen only. PY carries res_payinfo_key `P,<deposit>,<total>,`
 *   (two public implementations read a type code P 速報 / D 確報 first; one reads deposit, cumulative
 *   amount and e-mail after it). CN is the expiry.
 * - Retry policy after a non-`OK,` answer (UNCONFIRMED at SBPS): 5 retries, 200 ms doubling, 10 s
 *   time-out per attempt. The first attempt is made before the browser is sent back, as SBPS's flow
 *   diagram orders them (notify, answer, return the browser).
 * - XML API operations are synchronous and send no result notification. Capture is 売上要求
 *   ST02-00201-101 (see xml-api.ts); ST02-00101-101 (確定要求) is refused with 10113000 because a
 *   link payment has nothing left to confirm. Every request id is checked against the payment's
 *   method (`SBPS_XML_API_REQUEST_IDS`, including its UNCONFIRMED carrier inquiry ids): SBPS's
 *   tracking ids are per method, so another method's request is answered MMM12027 (MMM from the
 *   request id). Carriers and PayPay have one 取消返金要求 that voids or refunds in full, and their
 *   capture takes no amount (MMM13008). The inquiry adds `res_sandbox_info`, which SBPS does not send.
 * - Carrier billing (docomo, auone, softbank2) and PayPay are one button each: the customer agrees
 *   and the payment is approved.
 * - Capture mode per merchant: `autoCapture` (default true) makes a card, carrier or PayPay OK
 *   `captured`; false leaves it `authorized` until the XML API captures it (a capture under auto
 *   capture: 10137999, as SBPS).
 * - The fault switches and test APIs need no credentials: the sandbox is off in production.
 */

export interface SbpsSandboxMerchant {
  merchantId: string;
  serviceId: string;
  hashKey: string;
  basicAuth: { user: string; password: string };
  /** Card payments captured at once (SBPS 自動売上); false: authorized until the XML API captures. Default true. */
  autoCapture?: boolean;
}

export interface SbpsSandboxOptions {
  merchants: SbpsSandboxMerchant[];
  log?: Logger;
  fetchImpl?: typeof fetch;
  /** Pauses before re-sending a notification that was not answered `OK,`. Default 200, 400, 800, 1600, 3200 ms. */
  notificationRetryDelaysMs?: readonly number[];
  /** Per notification attempt. Default 10 s. */
  notificationTimeoutMs?: number;
}

type TxnState =
  | 'pending' // on the payment page
  | 'challenge' // 3-D Secure password page
  | 'authorized'
  | 'captured'
  | 'partially_refunded'
  | 'refunded'
  | 'cancelled' // authorisation voided through the XML API
  | 'customer_cancelled' // the customer pressed cancel on the payment page
  | 'failed'
  | 'awaiting_payment' // convenience store: number issued, money not yet paid
  | 'paid'
  | 'expired';

type ResultCode = 'OK' | 'NG' | 'PY' | 'CN' | 'CR';

interface NotificationRecord {
  result: ResultCode;
  status: 'sending' | 'delivered' | 'failed' | 'dropped' | 'scheduled';
  attempts: number;
  lastOutcome: string;
  at: string;
}

interface Txn {
  token: string;
  trackingId: string;
  merchant: SbpsSandboxMerchant;
  request: SbpsMessage;
  orderId: string;
  amount: number;
  state: TxnState;
  payMethods: PayChoice[];
  /** The pay_method SBPS reports back (res_pay_method). */
  resPayMethod: string;
  capturedAmount: number;
  refundedAmount: number;
  cvs?: { store: string; paymentNumber: string; deadline: string };
  /** The outcome the browser is sent back with, once there is one. */
  outcome?: { result: ResultCode; errCode: string; paymentDate: string; target: 'success_url' | 'error_url' | 'cancel_url' };
  returnPairs?: [string, string][];
  returnServed: boolean;
  /** Notifications held until the browser return was served (fault after_return). */
  heldForReturn: (() => void)[];
  notifications: NotificationRecord[];
  warnings: string[];
  createdAt: Date;
  requestDeadline?: Date;
}

type WalletMethod = 'paypay' | 'docomo' | 'auone' | 'softbank2';
type PayChoice = 'credit' | 'webcvs' | WalletMethod;

/** Carrier billing and PayPay: the customer agrees on the provider's page; nothing to type. */
const WALLETS: Record<WalletMethod, string> = {
  paypay: 'PayPay',
  docomo: 'ドコモ払い / docomo',
  auone: 'au かんたん決済 / au',
  softbank2: 'ソフトバンクまとめて支払い / SoftBank',
};
const isWallet = (method: string): method is WalletMethod => Object.hasOwn(WALLETS, method);

interface Faults {
  notification: 'deliver' | 'drop' | 'duplicate' | 'after_return' | 'delay';
  delayMs: number;
  browserReturn: 'send' | 'omit';
}

const faultsSchema = z
  .object({
    notification: z.enum(['deliver', 'drop', 'duplicate', 'after_return', 'delay']).optional(),
    delayMs: z.number().int().min(0).max(60_000).optional(),
    browserReturn: z.enum(['send', 'omit']).optional(),
  })
  .strict();

const DEFAULT_FAULTS: Faults = { notification: 'deliver', delayMs: 1_000, browserReturn: 'send' };
const RETRY_DELAYS_MS = [200, 400, 800, 1_600, 3_200];
const NOTIFICATION_TIMEOUT_MS = 10_000;
const FORM_LIMIT = 64 * 1024;
const CVS_DAYS = 3;

/** Test cards: the number decides what the card network says. Any other Luhn-valid number is approved. */
const TEST_CARDS: Record<string, { label: string; outcome: 'approve' | 'challenge' | { errCode: string } }> = {
  '4111111111111111': { label: '承認 / approved', outcome: 'approve' },
  '4000000000000002': { label: '拒否: カード使用不可 / declined: card cannot be used (10123999)', outcome: { errCode: '10123999' } },
  '4000000000009995': { label: '拒否: 限度額超過 / declined: credit limit exceeded (10122999)', outcome: { errCode: '10122999' } },
  '4000000000003220': { label: '3-D セキュア認証 / 3-D Secure challenge (password 1234)', outcome: 'challenge' },
};
const CHALLENGE_PASSWORD = '1234';
const THREE_DS_FAILED = '10136999';

const CVS_STORES: Record<string, string> = {
  'seven-eleven': 'セブン-イレブン / 7-Eleven',
  lawson: 'ローソン / Lawson',
  familymart: 'ファミリーマート / FamilyMart',
  ministop: 'ミニストップ / Ministop',
  seicomart: 'セイコーマート / Seicomart',
};

const CREDIT_METHODS = new Set(['credit', 'credit3d', 'credit3d2']);

/** Item codes by field name (the inverse of SBPS_ERROR_ITEMS); fields without one are 999. */
const ITEM_OF: Record<string, string> = Object.fromEntries(Object.entries(SBPS_ERROR_ITEMS).map(([code, name]) => [name, code]));
const itemOf = (field: string): string => ITEM_OF[field.replace(/\[\d+\]$/, '')] ?? '999';

/** What the SBPS error screen says, and the code it shows. */
class SbpsScreenError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** An NG answer of the XML API. */
class XmlApiNg extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export function sbpsSandbox(opts: SbpsSandboxOptions): FastifyPluginAsync {
  const fetchImpl = opts.fetchImpl ?? fetch;
  const retryDelays = opts.notificationRetryDelaysMs ?? RETRY_DELAYS_MS;
  const notificationTimeoutMs = opts.notificationTimeoutMs ?? NOTIFICATION_TIMEOUT_MS;
  for (const m of opts.merchants) {
    if (!/^\d+$/.test(m.merchantId) || !/^\d+$/.test(m.serviceId)) throw new TypeError(`sbpsSandbox: merchant ${m.merchantId}/${m.serviceId}: ids must be digits`);
    if (!m.hashKey) throw new TypeError(`sbpsSandbox: merchant ${m.merchantId}/${m.serviceId} has no hash key`);
  }

  return async (app) => {
    const log = opts.log ?? app.log;
    const prefix = app.prefix;
    const byToken = new Map<string, Txn>();
    const byTrackingId = new Map<string, Txn>();
    const orderIds = new Set<string>();
    const faults: Faults = { ...DEFAULT_FAULTS };
    let closed = false;
    app.addHook('onClose', async () => {
      closed = true; // background notification retries stop with the server
    });

    // SBPS's forms arrive as urlencoded Shift_JIS: the bytes must reach the hash check untouched, so
    // this plugin replaces whatever form parser the app registered (@fastify/formbody decodes UTF-8).
    if (app.hasContentTypeParser('application/x-www-form-urlencoded')) app.removeContentTypeParser('application/x-www-form-urlencoded');
    app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'buffer', bodyLimit: FORM_LIMIT }, (_req, body, done) => done(null, body));
    app.addContentTypeParser(['text/xml', 'application/xml'], { parseAs: 'buffer', bodyLimit: FORM_LIMIT }, (_req, body, done) => done(null, body));

    app.setErrorHandler((error: Error & { statusCode?: number; code?: string }, request, reply) => {
      const status = error.statusCode && error.statusCode < 500 ? error.statusCode : 500;
      if (status === 500) log.error({ err: error }, 'sbps sandbox error');
      if (request.url.startsWith(`${prefix}/api/`)) return reply.status(status).send({ error: { code: error.code ?? 'sandbox_error', message: error.message } });
      return reply.status(status).type('text/html; charset=utf-8').send(page('Error', `<h1>エラー / Error</h1><p>${esc(error.message)}</p>`));
    });

    const formOf = (body: unknown): URLSearchParams => new URLSearchParams(Buffer.isBuffer(body) ? body.toString('utf8') : '');
    const html = (reply: FastifyReply, body: string, status = 200): FastifyReply => reply.status(status).type('text/html; charset=utf-8').header('cache-control', 'no-store').send(body);

    function newTrackingId(): string {
      for (;;) {
        const id = `${randomInt(1, 10)}${String(randomInt(0, 1e6)).padStart(6, '0')}${String(randomInt(0, 1e7)).padStart(7, '0')}`;
        if (!byTrackingId.has(id)) return id;
      }
    }

    // ---- result notifications (A02-1) ----------------------------------------------------------

    /** The A02-1 / A03-1 field set: the request's echoed fields and the res_* of this outcome. */
    function resultMessage(txn: Txn, res: Record<string, string>): SbpsMessage {
      const merged = { ...txn.request.fields, ...res };
      const names = orderedEntries('result', { fields: {}, details: [] }).map(([name]) => name);
      return { fields: Object.fromEntries(names.map((name) => [name, merged[name] ?? ''])), details: txn.request.details };
    }

    function resFields(txn: Txn, result: ResultCode, extra: { errCode?: string; paymentDate?: string; payinfoKey?: string } = {}): Record<string, string> {
      const now = jstTimestamp();
      return {
        res_pay_method: txn.resPayMethod,
        res_result: result,
        res_tracking_id: txn.trackingId,
        res_sps_cust_no: '',
        res_sps_payment_no: '',
        res_payinfo_key: extra.payinfoKey ?? '',
        res_payment_date: extra.paymentDate ?? '',
        res_err_code: extra.errCode ?? '',
        res_date: now,
      };
    }

    /** Posts one notification body; true when the merchant answered `OK,`. */
    async function deliverOnce(url: string, body: Buffer): Promise<{ ok: boolean; outcome: string }> {
      try {
        const res = await fetchImpl(url, {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded; charset=Shift_JIS', 'user-agent': 'kessai-sbps-sandbox' },
          body,
          signal: AbortSignal.timeout(notificationTimeoutMs),
          redirect: 'manual',
        });
        const answer = decodeSjis(Buffer.from(await res.arrayBuffer())).trim();
        if (res.status !== 200) return { ok: false, outcome: `HTTP ${res.status} (SBPS alert 1301)` };
        const head = answer.split(',')[0]?.trim();
        if (head === 'OK') return { ok: true, outcome: 'OK,' };
        if (head === 'NG') return { ok: false, outcome: `answered ${JSON.stringify(answer.slice(0, 120))}` };
        return { ok: false, outcome: `answered neither OK nor NG: ${JSON.stringify(answer.slice(0, 120))} (SBPS alert 1101)` };
      } catch (error) {
        const timedOut = (error as Error).name === 'TimeoutError';
        return { ok: false, outcome: timedOut ? `no answer within ${notificationTimeoutMs} ms (SBPS alert 1401)` : `cannot connect: ${(error as Error).message} (SBPS alert 1301)` };
      }
    }

    /** One delivery with SBPS's retries; resolves after the first attempt, retries continue in the background. */
    async function deliver(txn: Txn, record: NotificationRecord, body: Buffer): Promise<void> {
      const url = txn.request.fields.pagecon_url ?? '';
      const attempt = async (): Promise<boolean> => {
        record.attempts++;
        record.status = 'sending';
        const { ok, outcome } = await deliverOnce(url, body);
        record.lastOutcome = outcome;
        record.status = ok ? 'delivered' : 'failed';
        if (!ok) log.warn({ trackingId: txn.trackingId, orderId: txn.orderId, result: record.result, attempt: record.attempts, outcome }, 'sbps sandbox: result notification not accepted');
        return ok;
      };
      const retry = (n: number): void => {
        if (closed || n >= retryDelays.length) return;
        setTimeout(() => {
          if (closed) return;
          void attempt().then((ok) => {
            if (!ok) retry(n + 1);
          });
        }, retryDelays[n]).unref();
      };
      if (!(await attempt())) retry(0);
    }

    /**
     * Sends a result notification the way the fault switch says. Resolves when the browser may move
     * on: after the first attempt normally, at once when the notification is held back.
     */
    async function notify(txn: Txn, res: Record<string, string>): Promise<void> {
      const body = encodeMessage('result', resultMessage(txn, res), txn.merchant.hashKey, { shuffle: Math.random, uppercaseHash: true });
      const record: NotificationRecord = { result: res.res_result as ResultCode, status: 'scheduled', attempts: 0, lastOutcome: '', at: new Date().toISOString() };
      txn.notifications.push(record);
      const later = (ms: number): void => {
        setTimeout(() => {
          if (!closed) void deliver(txn, record, body);
        }, ms).unref();
      };
      switch (faults.notification) {
        case 'drop':
          record.status = 'dropped';
          record.lastOutcome = 'dropped by the fault switch';
          return;
        case 'duplicate': {
          await deliver(txn, record, body);
          const again: NotificationRecord = { ...record, status: 'scheduled', attempts: 0, lastOutcome: '', at: new Date().toISOString() };
          txn.notifications.push(again);
          await deliver(txn, again, body);
          return;
        }
        case 'delay':
          later(faults.delayMs);
          return;
        case 'after_return':
          // Only a notification tied to the browser (not a later deposit or expiry) can wait for it.
          if (txn.returnServed || faults.browserReturn === 'omit' || txn.outcome === undefined || res.res_result === 'PY' || res.res_result === 'CN') later(faults.delayMs);
          else txn.heldForReturn.push(() => later(faults.delayMs));
          return;
        case 'deliver':
          await deliver(txn, record, body);
          return;
      }
    }

    // ---- the purchase request -----------------------------------------------------------------

    function screenError(field: SbpsFieldError): SbpsScreenError {
      const type = SBPS_ERROR_TYPE[field.code];
      return new SbpsScreenError(`999${type}${itemOf(field.field)}`, field.message);
    }

    function acceptPurchaseRequest(body: Buffer): Txn {
      let parsed: ReturnType<typeof parseMessage>;
      try {
        parsed = parseMessage(body);
      } catch (error) {
        if (error instanceof SbpsFieldError) throw screenError(error);
        throw new SbpsScreenError('99906999', `the form could not be read: ${(error as Error).message}`);
      }
      const { message } = parsed;
      const merchantId = message.fields.merchant_id ?? '';
      const serviceId = message.fields.service_id ?? '';
      if (!merchantId) throw new SbpsScreenError('99903001', 'merchant_id is required');
      if (!serviceId) throw new SbpsScreenError('99903002', 'service_id is required');
      const merchant = opts.merchants.find((m) => m.merchantId === merchantId && m.serviceId === serviceId);
      if (!merchant) throw new SbpsScreenError('99914001', `merchant ${merchantId} / service ${serviceId} is not known to this sandbox`);

      const verified = verifyMessage('request', body, merchant.hashKey);
      if (!verified.valid) {
        const why = verified.received === '' ? 'sps_hashcode is missing' : verified.problem ?? 'sps_hashcode does not match the values and the hash key';
        throw new SbpsScreenError(verified.received === '' ? '99903025' : '99909025', why);
      }
      const [problem] = validateMessage('request', message);
      if (problem) throw screenError(problem);

      const fields = message.fields;
      const payMethods = allowedMethods(fields.pay_method ?? '');
      if (payMethods.length === 0) throw new SbpsScreenError('99901999', `pay_method "${fields.pay_method}" offers nothing this sandbox simulates (credit, credit3d, credit3d2, webcvs, ${Object.keys(WALLETS).join(', ')})`);
      const amount = Number(fields.amount);
      if (!Number.isSafeInteger(amount) || amount < 1) throw new SbpsScreenError('99906008', 'amount must be a positive number of yen');

      const requestDate = parseJst(fields.request_date ?? '');
      if (!requestDate) throw new SbpsScreenError('99906023', 'request_date is not a valid date and time');
      let requestDeadline: Date | undefined;
      if (fields.limit_second) {
        requestDeadline = new Date(requestDate.getTime() + Number(fields.limit_second) * 1000);
        if (requestDeadline.getTime() < Date.now()) {
          throw new SbpsScreenError('99910023', `the request expired: request_date ${fields.request_date} + limit_second ${fields.limit_second} is in the past (request_date is Japan time)`);
        }
      }

      const orderKey = `${merchantId}:${serviceId}:${fields.order_id}`;
      if (orderIds.has(orderKey)) throw new SbpsScreenError('99996004', `order_id ${fields.order_id} was already used: every attempt needs a fresh order_id`);
      orderIds.add(orderKey);

      const warnings: string[] = [];
      const known = new Set(orderedEntries('request', { fields: {}, details: [] }).map(([name]) => name));
      for (const name of Object.keys(fields)) {
        if (known.has(name)) continue;
        if (/hash_?key/i.test(name)) warnings.push(`The form posted a field "${name}": the hash key must never reach the browser. Rotate it.`);
        else warnings.push(`Unknown field "${name}" was ignored.`);
      }
      const credit = (fields.pay_method ?? '').split(',').map((s) => s.trim()).find((m) => CREDIT_METHODS.has(m));
      const txn: Txn = {
        token: randomBytes(16).toString('hex'),
        trackingId: newTrackingId(),
        merchant,
        request: message,
        orderId: fields.order_id ?? '',
        amount,
        state: 'pending',
        payMethods,
        resPayMethod: credit ?? 'credit',
        capturedAmount: 0,
        refundedAmount: 0,
        returnServed: false,
        heldForReturn: [],
        notifications: [],
        warnings,
        createdAt: new Date(),
        ...(requestDeadline ? { requestDeadline } : {}),
      };
      byToken.set(txn.token, txn);
      byTrackingId.set(txn.trackingId, txn);
      return txn;
    }

    app.post('/f01/FepBuyInfoReceive.do', { bodyLimit: FORM_LIMIT }, async (request, reply) => {
      if (!Buffer.isBuffer(request.body)) {
        return html(reply, errorPage('99906999', 'the purchase request must be a form post (application/x-www-form-urlencoded, Shift_JIS)'));
      }
      try {
        const txn = acceptPurchaseRequest(request.body);
        log.info({ trackingId: txn.trackingId, orderId: txn.orderId, merchantId: txn.merchant.merchantId }, 'sbps sandbox: purchase request accepted');
        return reply.redirect(`${prefix}/pay/${txn.token}`, 303);
      } catch (error) {
        if (!(error instanceof SbpsScreenError)) throw error;
        log.info({ code: error.code, reason: error.message }, 'sbps sandbox: purchase request refused');
        return html(reply, errorPage(error.code, error.message));
      }
    });

    // ---- the payment screen -------------------------------------------------------------------

    const txnOf = (token: string): Txn | undefined => byToken.get(token);
    const notFound = (reply: FastifyReply): FastifyReply => html(reply, page('Not found', '<p>この取引はありません / No such transaction.</p>'), 404);
    const conflict = (reply: FastifyReply, txn: Txn): FastifyReply =>
      html(reply, page('SBPS sandbox', `<p>この取引は既に ${esc(txn.state)} です / This transaction is already ${esc(txn.state)}.</p>${txn.outcome ? `<p><a href="${esc(`${prefix}/pay/${txn.token}/return`)}">ショップに戻る / Back to the shop</a></p>` : ''}`), 409);

    /** limit_second passed while the customer was on our screen: SBPS shows its error, nothing is sent. */
    const expiredOnScreen = (txn: Txn): boolean => txn.requestDeadline !== undefined && txn.requestDeadline.getTime() < Date.now();

    app.get<{ Params: { token: string } }>('/pay/:token', async (request, reply) => {
      const txn = txnOf(request.params.token);
      if (!txn) return notFound(reply);
      if (txn.state === 'challenge') return reply.redirect(`${prefix}/pay/${txn.token}/3ds`, 303);
      if (txn.state !== 'pending') return conflict(reply, txn);
      return html(reply, paymentPage(txn));
    });

    function paymentPage(txn: Txn, cardError?: string): string {
      const f = txn.request.fields;
      const base = `${prefix}/pay/${txn.token}`;
      const warnings = txn.warnings.map((w) => `<p class="warn">⚠ ${esc(w)}</p>`).join('\n');
      const cards = Object.entries(TEST_CARDS)
        .map(([n, c]) => `<tr><td><code>${n}</code></td><td>${esc(c.label)}</td></tr>`)
        .join('\n');
      const credit = txn.payMethods.includes('credit')
        ? `<section><h2>クレジットカード / Credit card</h2>
${cardError ? `<p class="error">${esc(cardError)}</p>` : ''}
<form method="post" action="${esc(`${base}/card`)}" accept-charset="UTF-8">
<p><label>カード番号 / Card number <input name="cc_number" inputmode="numeric" autocomplete="off" required></label></p>
<p><label>有効期限 / Expiry (MM/YY) <input name="cc_expiration" placeholder="12/30" size="6"></label>
<label>セキュリティコード / CVV <input name="security_code" size="4"></label></p>
<p><button type="submit">支払う / Pay ¥${txn.amount.toLocaleString('ja-JP')}</button></p>
</form>
<details><summary>テストカード / Test cards</summary><table>${cards}</table><p>その他の有効な番号は承認されます / Any other valid number is approved.</p></details>
</section>`
        : '';
      const stores = Object.entries(CVS_STORES)
        .map(([value, label]) => `<option value="${esc(value)}">${esc(label)}</option>`)
        .join('');
      const wallets = txn.payMethods
        .filter(isWallet)
        .map(
          (method) => `<form method="post" action="${esc(`${base}/wallet`)}" accept-charset="UTF-8"><input type="hidden" name="method" value="${esc(method)}">
<p><button type="submit">${esc(WALLETS[method])} で支払う / Pay with ${esc(WALLETS[method])}</button></p></form>`,
        )
        .join('\n');
      const wallet = wallets ? `<section><h2>キャリア決済・PayPay / Carrier billing and PayPay</h2>\n${wallets}\n</section>` : '';
      const webcvs = txn.payMethods.includes('webcvs')
        ? `<section><h2>コンビニ決済 / Convenience store</h2>
<form method="post" action="${esc(`${base}/webcvs`)}" accept-charset="UTF-8">
<p><label>お支払い先 / Store <select name="store">${stores}</select></label></p>
<p><button type="submit">払込番号を発行する / Get a payment number</button></p>
</form></section>`
        : '';
      return page(
        'SBPS sandbox',
        `<h1>SBPS sandbox お支払い / Payment</h1>
${warnings}
<table>
<tr><th>加盟店 / Merchant</th><td>${esc(f.merchant_id ?? '')}-${esc(f.service_id ?? '')}</td></tr>
<tr><th>購入ID / Order</th><td>${esc(txn.orderId)}</td></tr>
<tr><th>商品 / Item</th><td>${esc(f.item_name ?? '')}</td></tr>
<tr><th>金額 / Amount</th><td><strong>¥${txn.amount.toLocaleString('ja-JP')}</strong> (${txn.amount} JPY)</td></tr>
</table>
${credit}
${wallet}
${webcvs}
<section><form method="post" action="${esc(`${base}/cancel`)}"><button type="submit">キャンセルしてショップに戻る / Cancel and return to the shop</button></form></section>`,
      );
    }

    /** After the choice: notify, then send the browser to its return page. */
    async function finish(txn: Txn, reply: FastifyReply, res: Record<string, string> | undefined): Promise<FastifyReply> {
      if (res) await notify(txn, res);
      return reply.redirect(`${prefix}/pay/${txn.token}/return`, 303);
    }

    /** The card (or carrier, or PayPay) says yes: captured, or authorized under manual capture. */
    async function approve(txn: Txn, reply: FastifyReply): Promise<FastifyReply> {
      const auto = txn.merchant.autoCapture !== false;
      txn.state = auto ? 'captured' : 'authorized';
      txn.capturedAmount = auto ? txn.amount : 0;
      txn.outcome = { result: 'OK', errCode: '', paymentDate: jstTimestamp(), target: 'success_url' };
      return finish(txn, reply, resFields(txn, 'OK', { paymentDate: txn.outcome.paymentDate }));
    }

    async function declineCard(txn: Txn, reply: FastifyReply, errCode: string): Promise<FastifyReply> {
      txn.state = 'failed';
      txn.outcome = { result: 'NG', errCode, paymentDate: '', target: 'error_url' };
      return finish(txn, reply, resFields(txn, 'NG', { errCode }));
    }

    app.post<{ Params: { token: string } }>('/pay/:token/card', { bodyLimit: FORM_LIMIT }, async (request, reply) => {
      const txn = txnOf(request.params.token);
      if (!txn) return notFound(reply);
      if (txn.state !== 'pending' || !txn.payMethods.includes('credit')) return conflict(reply, txn);
      if (expiredOnScreen(txn)) return html(reply, errorPage('99910023', 'the time allowed by limit_second is over'));
      const number = (formOf(request.body).get('cc_number') ?? '').replace(/[\s-]/g, '');
      if (!/^\d{14,16}$/.test(number) || !luhn(number)) return html(reply, paymentPage(txn, 'カード番号が正しくありません / The card number is not valid.'));
      const card = TEST_CARDS[number];
      if (card?.outcome === 'challenge') {
        txn.state = 'challenge';
        return reply.redirect(`${prefix}/pay/${txn.token}/3ds`, 303);
      }
      if (card && typeof card.outcome === 'object') return declineCard(txn, reply, card.outcome.errCode);
      return approve(txn, reply);
    });

    app.get<{ Params: { token: string } }>('/pay/:token/3ds', async (request, reply) => {
      const txn = txnOf(request.params.token);
      if (!txn) return notFound(reply);
      if (txn.state !== 'challenge') return conflict(reply, txn);
      return html(
        reply,
        page(
          '3-D Secure',
          `<h1>本人認証 / 3-D Secure</h1>
<p>カード発行会社のパスワードを入力してください / Enter the password your card issuer gave you.</p>
<p class="note">テスト用パスワード / Test password: <code>${CHALLENGE_PASSWORD}</code>; 他の値は認証失敗 / anything else fails.</p>
<form method="post" action="${esc(`${prefix}/pay/${txn.token}/3ds`)}" accept-charset="UTF-8">
<p><label>パスワード / Password <input type="password" name="password" autocomplete="off"></label></p>
<p><button type="submit">認証する / Authenticate</button></p>
</form>`,
        ),
      );
    });

    app.post<{ Params: { token: string } }>('/pay/:token/3ds', { bodyLimit: FORM_LIMIT }, async (request, reply) => {
      const txn = txnOf(request.params.token);
      if (!txn) return notFound(reply);
      if (txn.state !== 'challenge') return conflict(reply, txn);
      if (formOf(request.body).get('password') === CHALLENGE_PASSWORD) return approve(txn, reply);
      return declineCard(txn, reply, THREE_DS_FAILED);
    });

    app.post<{ Params: { token: string } }>('/pay/:token/wallet', { bodyLimit: FORM_LIMIT }, async (request, reply) => {
      const txn = txnOf(request.params.token);
      if (!txn) return notFound(reply);
      const method = formOf(request.body).get('method') ?? '';
      if (txn.state !== 'pending' || !isWallet(method) || !txn.payMethods.includes(method)) return conflict(reply, txn);
      if (expiredOnScreen(txn)) return html(reply, errorPage('99910023', 'the time allowed by limit_second is over'));
      txn.resPayMethod = method;
      return approve(txn, reply);
    });

    app.post<{ Params: { token: string } }>('/pay/:token/webcvs', { bodyLimit: FORM_LIMIT }, async (request, reply) => {
      const txn = txnOf(request.params.token);
      if (!txn) return notFound(reply);
      if (txn.state !== 'pending' || !txn.payMethods.includes('webcvs')) return conflict(reply, txn);
      if (expiredOnScreen(txn)) return html(reply, errorPage('99910023', 'the time allowed by limit_second is over'));
      const store = formOf(request.body).get('store') ?? '';
      if (!CVS_STORES[store]) return html(reply, paymentPage(txn), 400);
      const deadline = new Date(Date.now() + CVS_DAYS * 24 * 3600 * 1000);
      txn.state = 'awaiting_payment';
      txn.resPayMethod = 'webcvs';
      txn.cvs = { store, paymentNumber: `${randomInt(1000, 10000)}-${randomInt(1000, 10000)}-${randomInt(1000, 10000)}`, deadline: jstTimestamp(deadline) };
      txn.outcome = { result: 'OK', errCode: '', paymentDate: jstTimestamp(), target: 'success_url' };
      return finish(txn, reply, resFields(txn, 'OK', { paymentDate: txn.outcome.paymentDate }));
    });

    app.post<{ Params: { token: string } }>('/pay/:token/cancel', { bodyLimit: FORM_LIMIT }, async (request, reply) => {
      const txn = txnOf(request.params.token);
      if (!txn) return notFound(reply);
      if (txn.state !== 'pending' && txn.state !== 'challenge') return conflict(reply, txn);
      txn.state = 'customer_cancelled';
      txn.outcome = { result: 'CR', errCode: '', paymentDate: '', target: 'cancel_url' };
      return finish(txn, reply, undefined); // no result notification for a cancel on the screen (see top)
    });

    // ---- the browser return (A03-1) -----------------------------------------------------------

    app.get('/assets/autosubmit.js', async (_request, reply) =>
      reply.type('application/javascript; charset=utf-8').header('cache-control', 'no-cache').send("document.getElementById('sbps-return')?.submit();\n"),
    );

    app.get<{ Params: { token: string } }>('/pay/:token/return', async (request, reply) => {
      const txn = txnOf(request.params.token);
      if (!txn) return notFound(reply);
      const outcome = txn.outcome;
      if (!outcome) return reply.redirect(`${prefix}/pay/${txn.token}`, 303);
      if (!txn.returnServed) {
        txn.returnServed = true;
        for (const release of txn.heldForReturn.splice(0)) release();
      }
      const f = txn.request.fields;
      const cvs = txn.cvs
        ? `<section class="cvs"><h2>コンビニでのお支払い / Pay at the store</h2>
<table>
<tr><th>お支払い先 / Store</th><td>${esc(CVS_STORES[txn.cvs.store] ?? txn.cvs.store)}</td></tr>
<tr><th>払込番号 / Payment number</th><td><strong class="number">${esc(txn.cvs.paymentNumber)}</strong></td></tr>
<tr><th>支払期限 / Deadline</th><td>${esc(formatJst(txn.cvs.deadline))}</td></tr>
<tr><th>金額 / Amount</th><td>¥${txn.amount.toLocaleString('ja-JP')}</td></tr>
</table>
<p class="note">入金はサンドボックスの <a href="${esc(`${prefix}/pending`)}">入金待ち一覧 / pending payments</a> から / Pay it from the sandbox's pending list.</p></section>`
        : '';
      const heading =
        outcome.result === 'OK'
          ? 'お手続きが完了しました / Payment accepted'
          : outcome.result === 'CR'
            ? 'キャンセルしました / Cancelled'
            : `お支払いできませんでした / Payment failed (${esc(outcome.errCode)})`;
      if (faults.browserReturn === 'omit') {
        return html(reply, page('SBPS sandbox', `<h1>${heading}</h1>${cvs}<p class="warn">ブラウザはショップに戻りません (fault browserReturn=omit) / The browser does not return to the shop.</p>`));
      }
      if (!txn.returnPairs) {
        const message = resultMessage(txn, resFields(txn, outcome.result, { errCode: outcome.errCode, paymentDate: outcome.paymentDate }));
        message.fields.TOKEN = randomBytes(16).toString('hex');
        txn.returnPairs = parseSjisUrlEncoded(encodeMessage('return', message, txn.merchant.hashKey, { shuffle: Math.random, uppercaseHash: true }));
      }
      const action = f[outcome.target] ?? '';
      const inputs = txn.returnPairs.map(([name, value]) => `<input type="hidden" name="${esc(name)}" value="${esc(value)}">`).join('\n');
      // A convenience-store customer must read the number first: no automatic submit there.
      const auto = txn.cvs ? '' : `<script src="${esc(`${prefix}/assets/autosubmit.js`)}"></script>`;
      return html(
        reply,
        page(
          'SBPS sandbox',
          `<h1>${heading}</h1>
${cvs}
<form method="post" action="${esc(action)}" accept-charset="Shift_JIS" id="sbps-return">
${inputs}
<button type="submit">ショップに戻る / Return to the shop</button>
</form>
${auto}`,
        ),
      );
    });

    // ---- later events: deposit and expiry of a convenience-store payment ------------------------

    async function deposit(txn: Txn): Promise<void> {
      txn.state = 'paid';
      txn.capturedAmount = txn.amount;
      await notify(txn, resFields(txn, 'PY', { paymentDate: jstTimestamp(), payinfoKey: `P,${txn.amount},${txn.amount},` }));
    }

    async function expire(txn: Txn): Promise<void> {
      txn.state = 'expired';
      await notify(txn, resFields(txn, 'CN'));
    }

    const laterEvent = (run: (txn: Txn) => Promise<void>, verb: string) =>
      async (trackingId: string): Promise<{ status: number; body: Record<string, unknown> }> => {
        const txn = byTrackingId.get(trackingId);
        if (!txn) return { status: 404, body: { error: { code: 'not_found', message: `no transaction with tracking id ${trackingId}` } } };
        if (txn.state !== 'awaiting_payment') {
          return { status: 409, body: { error: { code: 'invalid_state', message: `cannot ${verb} a transaction that is ${txn.state} (only awaiting_payment)` } } };
        }
        await run(txn);
        return { status: 200, body: { trackingId, orderId: txn.orderId, state: txn.state, notifications: txn.notifications } };
      };
    const depositOf = laterEvent(deposit, 'deposit');
    const expiryOf = laterEvent(expire, 'expire');

    app.post<{ Params: { trackingId: string } }>('/api/deposit/:trackingId', async (request, reply) => {
      const { status, body } = await depositOf(request.params.trackingId);
      return reply.status(status).send(body);
    });
    app.post<{ Params: { trackingId: string } }>('/api/expire/:trackingId', async (request, reply) => {
      const { status, body } = await expiryOf(request.params.trackingId);
      return reply.status(status).send(body);
    });
    app.post<{ Params: { trackingId: string; action: string } }>('/pending/:trackingId/:action', { bodyLimit: FORM_LIMIT }, async (request, reply) => {
      const run = request.params.action === 'deposit' ? depositOf : request.params.action === 'expire' ? expiryOf : undefined;
      if (!run) return notFound(reply);
      await run(request.params.trackingId);
      return reply.redirect(`${prefix}/pending`, 303);
    });

    // ---- fault switches ----------------------------------------------------------------------

    app.get('/api/faults', async () => ({ ...faults }));
    app.post('/api/faults', async (request, reply) => {
      const parsed = faultsSchema.safeParse(request.body ?? {});
      if (!parsed.success) {
        const issue = parsed.error.issues[0];
        return reply.status(400).send({ error: { code: 'invalid_request', message: `${issue?.path.join('.') || '(body)'}: ${issue?.message ?? 'invalid'}` } });
      }
      Object.assign(faults, parsed.data);
      return { ...faults };
    });

    // ---- XML API ------------------------------------------------------------------------------

    const KNOWN_REQUEST_IDS: ReadonlySet<string> = new Set(Object.values(SBPS_XML_API_REQUEST_IDS).flatMap((ids) => Object.values(ids)));

    /**
     * What `requestId` does to a payment of `payMethod`, when it is one of that method's requests. One
     * id for both refund and cancel (carriers, PayPay) is the 取消返金要求: it voids an authorisation
     * and refunds a sale, which is what `refund` does here.
     */
    function operationOf(payMethod: string, requestId: string): XmlApiOperation | undefined {
      const ids = SBPS_XML_API_REQUEST_IDS[payMethod] ?? {};
      const ops = (Object.keys(ids) as XmlApiOperation[]).filter((op) => ids[op] === requestId);
      return ops.includes('refund') ? 'refund' : ops[0];
    }

    const describeIds = (payMethod: string): string =>
      Object.entries(SBPS_XML_API_REQUEST_IDS[payMethod] ?? {})
        .map(([op, id]) => `${op} ${id}`)
        .join(', ') || 'none';

    function authenticate(header: string | undefined): SbpsSandboxMerchant | undefined {
      const match = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header ?? '');
      if (!match) return undefined;
      const given = Buffer.from(match[1]!, 'base64');
      let found: SbpsSandboxMerchant | undefined;
      for (const m of opts.merchants) {
        const expected = Buffer.from(`${m.basicAuth.user}:${m.basicAuth.password}`, 'utf8');
        // Every merchant is compared, so the time taken does not say which one nearly matched.
        if (expected.length === given.length && timingSafeEqual(expected, given) && !found) found = m;
      }
      return found;
    }

    function xmlAnswer(reply: FastifyReply, requestId: string | undefined, entries: XmlEntry[]): FastifyReply {
      return reply
        .status(200)
        .type('text/xml; charset=Shift_JIS')
        .send(encodeSjis(buildSbpsXml('sps-api-response', requestId, [...entries, ['res_date', jstTimestamp()]])));
    }

    app.post('/api/xmlapi.do', { bodyLimit: FORM_LIMIT }, async (request, reply) => {
      const merchant = authenticate(request.headers.authorization);
      if (!merchant) {
        return reply.status(401).header('www-authenticate', 'Basic realm="SBPS API"').type('text/plain; charset=utf-8').send('401 Unauthorized: Basic auth user or password wrong');
      }
      let requestId: string | undefined;
      try {
        if (!Buffer.isBuffer(request.body)) throw new XmlApiNg('99900999', 'the body must be XML (Content-Type application/xml or text/xml)');
        let doc;
        try {
          doc = parseSbpsXml(request.body);
        } catch (error) {
          if (error instanceof SbpsXmlError) throw new XmlApiNg('99900999', error.message);
          throw error;
        }
        if (doc.root !== 'sps-api-request') throw new XmlApiNg('99900999', `root element is <${doc.root}>, expected <sps-api-request>`);
        requestId = doc.id;
        if (!requestId) throw new XmlApiNg('99903000', 'the id attribute (API request id) is missing');
        const m = /-(\d{3})$/.exec(requestId)?.[1] ?? '999';
        if (requestId === XML_API_CONFIRM_REQUEST_ID) {
          throw new XmlApiNg(`${m}13000`, 'ST02-00101-101 (確定要求) confirms an API-type authorisation; capture a link-type payment with ST02-00201-101 (売上要求)');
        }
        if (!KNOWN_REQUEST_IDS.has(requestId)) throw new XmlApiNg('99902000', `API request id ${requestId} is not simulated`);

        const values = new Map<string, string>();
        for (const [path, value] of doc.entries) {
          if (values.has(path)) throw new XmlApiNg(`${m}00999`, `<${path}> appears twice`);
          values.set(path, value);
        }
        const get = (path: string): string => values.get(path) ?? '';
        if (!get('merchant_id')) throw new XmlApiNg(`${m}03001`, 'merchant_id is required');
        if (!get('service_id')) throw new XmlApiNg(`${m}03002`, 'service_id is required');
        if (get('merchant_id') !== merchant.merchantId || get('service_id') !== merchant.serviceId) {
          throw new XmlApiNg(`${m}14001`, `merchant ${get('merchant_id')}/${get('service_id')} does not belong to this Basic-auth account`);
        }
        const hash = get('sps_hashcode');
        if (!hash) throw new XmlApiNg(`${m}03025`, 'sps_hashcode is required');
        const hashed = doc.entries.filter(([path]) => path !== 'sps_hashcode').map(([, value]) => value);
        let expected = '';
        try {
          expected = sbpsHash('xml', hashed, merchant.hashKey);
        } catch {
          // A value with no Shift_JIS form cannot have been hashed as SBPS does.
        }
        if (!expected || !hashesMatch(expected, hash)) throw new XmlApiNg(`${m}09025`, 'sps_hashcode does not match (Shift_JIS, values in document order, hash key appended)');
        if (!get('request_date')) throw new XmlApiNg(`${m}03023`, 'request_date is required');
        if (!/^\d{14}$/.test(get('request_date'))) throw new XmlApiNg(`${m}06023`, 'request_date must be YYYYMMDDHHMMSS');
        if (get('processing_datetime') && !/^\d{14}$/.test(get('processing_datetime'))) throw new XmlApiNg(`${m}06029`, 'processing_datetime must be YYYYMMDDHHMMSS');
        const trackingId = get('tracking_id');
        if (!trackingId) throw new XmlApiNg(`${m}03027`, 'tracking_id is required');
        const txn = byTrackingId.get(trackingId);
        if (!txn || txn.merchant !== merchant || txn.state === 'pending' || txn.state === 'challenge' || txn.state === 'customer_cancelled') {
          throw new XmlApiNg(`${m}12027`, `tracking id ${trackingId} is not a payment of this merchant`);
        }
        // A tracking id is unique per payment method (seed 002): another method's request does not find it.
        const operation = operationOf(txn.resPayMethod, requestId);
        if (!operation) {
          throw new XmlApiNg(`${m}12027`, `tracking id ${trackingId} is a ${txn.resPayMethod} payment: ${requestId} is another method's request (${describeIds(txn.resPayMethod)})`);
        }
        const amountField = get('pay_option_manage.amount');
        if (amountField && !/^\d{1,8}$/.test(amountField)) throw new XmlApiNg(`${m}06008`, 'pay_option_manage/amount must be digits');
        const amount = amountField ? Number(amountField) : undefined;

        const extra = runOperation(operation, txn, amount, m);
        log.info({ requestId, trackingId, state: txn.state }, 'sbps sandbox: XML API OK');
        return xmlAnswer(reply, requestId, [
          ['res_result', 'OK'],
          ['res_sps_transaction_id', spsTransactionId()],
          ['res_tracking_id', txn.trackingId],
          ...extra,
          ['res_process_date', jstTimestamp()],
          ['res_err_code', ''],
        ]);
      } catch (error) {
        if (!(error instanceof XmlApiNg)) throw error;
        log.info({ requestId, code: error.code, reason: error.message }, 'sbps sandbox: XML API NG');
        return xmlAnswer(reply, requestId, [
          ['res_result', 'NG'],
          ['res_err_code', error.code],
        ]);
      }
    });

    /** Applies one XML API operation to the payment; returns fields to add to the OK answer. */
    function runOperation(operation: XmlApiOperation, txn: Txn, amount: number | undefined, m: string): XmlEntry[] {
      if (operation === 'inquiry') return inquiryFields(txn);
      const remaining = txn.capturedAmount - txn.refundedAmount;
      switch (operation) {
        case 'commit':
          if (amount !== undefined && !SBPS_CAPTURE_AMOUNT_METHODS.has(txn.resPayMethod)) {
            throw new XmlApiNg(`${m}13008`, `pay_option_manage/amount is taken on a card's capture only: a ${txn.resPayMethod} authorisation is captured in full`);
          }
          if (txn.state === 'authorized') {
            if (amount !== undefined && amount > txn.amount) throw new XmlApiNg(`${m}79008`, `capture of ${amount} exceeds the authorised ${txn.amount}`);
            txn.capturedAmount = amount ?? txn.amount;
            txn.state = 'captured';
            return [];
          }
          if (txn.state === 'cancelled') throw new XmlApiNg(`${m}40999`, 'authorisation already cancelled');
          if (txn.merchant.autoCapture !== false) throw new XmlApiNg(`${m}37999`, 'auto capture is configured: no capture request needed');
          if (txn.state === 'failed') throw new XmlApiNg(`${m}39999`, 'no authorisation to capture');
          throw new XmlApiNg(`${m}41999`, 'already captured');
        case 'refund':
          if (txn.state === 'authorized') {
            txn.state = 'cancelled'; // 取消返金要求 voids an authorisation that was not captured
            return [];
          }
          if (txn.state === 'captured' || txn.state === 'partially_refunded') {
            txn.refundedAmount = txn.capturedAmount;
            txn.state = 'refunded';
            return [];
          }
          throw refundRefusal(txn, m);
        case 'partialRefund':
          if (amount === undefined) throw new XmlApiNg(`${m}03008`, 'pay_option_manage/amount is required');
          if (amount < 1) throw new XmlApiNg(`${m}06008`, 'amount must be at least 1');
          if (txn.state === 'authorized') throw new XmlApiNg(`${m}K0999`, 'not captured yet: partial refund stopped');
          if (txn.state === 'captured' || txn.state === 'partially_refunded') {
            if (amount > remaining) throw new XmlApiNg(`${m}K1008`, `refunds would exceed the captured amount (${remaining} left)`);
            txn.refundedAmount += amount;
            txn.state = txn.refundedAmount === txn.capturedAmount ? 'refunded' : 'partially_refunded';
            return [];
          }
          throw refundRefusal(txn, m);
        case 'cancel':
          if (txn.state === 'authorized') {
            txn.state = 'cancelled';
            return [];
          }
          if (txn.state === 'cancelled') throw new XmlApiNg(`${m}52999`, 'authorisation already cancelled');
          if (txn.state === 'failed') throw new XmlApiNg(`${m}51999`, 'no authorisation to cancel');
          throw new XmlApiNg(`${m}49999`, 'already captured: use the refund request');
      }
    }

    function refundRefusal(txn: Txn, m: string): XmlApiNg {
      if (txn.state === 'refunded') return new XmlApiNg(`${m}46999`, 'already refunded');
      if (txn.state === 'cancelled') return new XmlApiNg(`${m}45999`, 'authorisation cancelled: refund stopped');
      return new XmlApiNg(`${m}44999`, 'no authorisation to refund');
    }

    /** The sandbox's inquiry answer: SBPS's status fields as public clients read them, plus its own block. */
    function inquiryFields(txn: Txn): XmlEntry[] {
      const paymentStatus: Partial<Record<TxnState, string>> = { authorized: '1', captured: '2', partially_refunded: '2', cancelled: '3', refunded: '4' };
      const code = txn.resPayMethod === 'webcvs' ? undefined : paymentStatus[txn.state];
      return [
        ['res_status', '0'],
        ...(code ? [['res_pay_method_info.payment_status', code] as const] : []),
        ['res_sandbox_info.state', inquiryState(txn.state)],
        ['res_sandbox_info.pay_method', txn.resPayMethod],
        ['res_sandbox_info.order_id', txn.orderId],
        ['res_sandbox_info.amount', String(txn.amount)],
        ['res_sandbox_info.captured_amount', String(txn.capturedAmount)],
        ['res_sandbox_info.refunded_amount', String(txn.refundedAmount)],
      ];
    }

    // ---- pages for people ---------------------------------------------------------------------

    app.get('/', async (_request, reply) => {
      const rows = [...byToken.values()]
        .reverse()
        .slice(0, 50)
        .map((t) => {
          const sent = t.notifications.map((n) => `${n.result}: ${n.status}${n.attempts > 1 ? ` ×${n.attempts}` : ''}${n.lastOutcome && n.status !== 'delivered' ? ` (${n.lastOutcome})` : ''}`).join('<br>') || '—';
          const link = t.state === 'pending' || t.state === 'challenge' ? ` <a href="${esc(`${prefix}/pay/${t.token}`)}">支払画面 / pay</a>` : '';
          return `<tr><td>${esc(t.createdAt.toISOString())}</td><td>${esc(t.merchant.merchantId)}-${esc(t.merchant.serviceId)}</td><td>${esc(t.orderId)}</td><td>${esc(t.trackingId)}</td><td>¥${t.amount.toLocaleString('ja-JP')}</td><td>${esc(t.resPayMethod)}</td><td>${esc(t.state)}${link}</td><td>${sent}</td></tr>`;
        })
        .join('\n');
      const merchants = opts.merchants.map((m) => `<li>${esc(m.merchantId)} / ${esc(m.serviceId)}: ${m.autoCapture === false ? '指定売上 / manual capture' : '自動売上 / auto capture'}</li>`).join('');
      return html(
        reply,
        page(
          'SBPS sandbox',
          `<h1>SBPS sandbox</h1>
<p>SoftBank Payment Service のリンク型と XML API の模擬環境です。/ A simulator of SBPS link type and its XML API.</p>
<ul>
<li>購入要求 / Purchase request: <code>POST ${esc(prefix)}/f01/FepBuyInfoReceive.do</code> (Shift_JIS form)</li>
<li>XML API: <code>POST ${esc(prefix)}/api/xmlapi.do</code> (Basic auth)</li>
<li><a href="${esc(`${prefix}/pending`)}">入金待ち / Pending convenience-store payments</a></li>
</ul>
<h2>加盟店 / Merchants</h2><ul>${merchants}</ul>
<h2>障害設定 / Faults</h2><p><code>${esc(JSON.stringify(faults))}</code> — <code>POST ${esc(prefix)}/api/faults</code></p>
<h2>最近の取引 / Recent transactions</h2>
<table><tr><th>受付 / At</th><th>加盟店</th><th>購入ID / Order</th><th>トラッキングID</th><th>金額</th><th>方法 / Method</th><th>状態 / State</th><th>結果通知 / Notifications</th></tr>
${rows || '<tr><td colspan="8">まだありません / None yet.</td></tr>'}</table>`,
        ),
      );
    });

    app.get('/pending', async (_request, reply) => {
      const rows = [...byToken.values()]
        .filter((t) => t.state === 'awaiting_payment')
        .map(
          (t) => `<tr><td>${esc(t.orderId)}</td><td>${esc(t.trackingId)}</td><td>¥${t.amount.toLocaleString('ja-JP')}</td><td>${esc(t.cvs?.paymentNumber ?? '')}</td><td>${esc(formatJst(t.cvs?.deadline ?? ''))}</td>
<td><form method="post" action="${esc(`${prefix}/pending/${t.trackingId}/deposit`)}"><button type="submit">入金する / Pay (PY)</button></form></td>
<td><form method="post" action="${esc(`${prefix}/pending/${t.trackingId}/expire`)}"><button type="submit">期限切れにする / Expire (CN)</button></form></td></tr>`,
        )
        .join('\n');
      return html(
        reply,
        page(
          'SBPS sandbox: pending',
          `<h1>入金待ち / Awaiting payment</h1>
<p><a href="${esc(`${prefix}/`)}">← 一覧 / All transactions</a></p>
<table><tr><th>購入ID / Order</th><th>トラッキングID</th><th>金額</th><th>払込番号 / Number</th><th>期限 / Deadline</th><th></th><th></th></tr>
${rows || '<tr><td colspan="7">入金待ちはありません / Nothing is waiting.</td></tr>'}</table>`,
        ),
      );
    });
  };
}

// ---- helpers ------------------------------------------------------------------------------------

/** The pay_method list narrowed to what the sandbox simulates; empty means every method. */
function allowedMethods(payMethod: string): PayChoice[] {
  const asked = payMethod.split(',').map((s) => s.trim()).filter(Boolean);
  if (asked.length === 0) return ['credit', 'webcvs', ...(Object.keys(WALLETS) as WalletMethod[])];
  const out: PayChoice[] = [];
  if (asked.some((m) => CREDIT_METHODS.has(m))) out.push('credit');
  if (asked.includes('webcvs')) out.push('webcvs');
  for (const m of asked) if (isWallet(m) && !out.includes(m)) out.push(m);
  return out;
}

function inquiryState(state: TxnState): string {
  switch (state) {
    case 'paid':
      return 'captured';
    case 'challenge':
    case 'customer_cancelled':
      return 'pending';
    default:
      return state;
  }
}

/** A JST `YYYYMMDDHHMMSS` as an instant, or undefined when it is not a real date. */
function parseJst(s: string): Date | undefined {
  const m = /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})$/.exec(s);
  if (!m) return undefined;
  const [y, mo, d, h, mi, se] = m.slice(1).map(Number) as [number, number, number, number, number, number];
  const at = new Date(Date.UTC(y, mo - 1, d, h - 9, mi, se));
  return jstTimestamp(at) === s ? at : undefined;
}

function formatJst(s: string): string {
  const m = /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})$/.exec(s);
  return m ? `${m[1]}-${m[2]}-${m[3]} ${m[4]}:${m[5]} JST` : s;
}

function spsTransactionId(): string {
  const alphabet = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ';
  let out = '';
  for (const b of randomBytes(32)) out += alphabet[b % alphabet.length];
  return out;
}

function errorPage(code: string, reason: string): string {
  return page(
    'SBPS sandbox: error',
    `<h1>エラーが発生しました / An error occurred</h1>
<p>エラーコード / Error code: <strong class="code">${esc(code)}</strong></p>
<p>${esc(reason)}</p>
<p class="note">コードは 決済手段(3桁)・種別(2桁)・項目(3桁) / The code is method (3), type (2), item (3): 03 required, 04 characters, 05 length, 06 format, 09 hash, 10 expired, 14 merchant, 96 duplicate.</p>`,
  );
}

function page(title: string, body: string): string {
  return `<!doctype html>
<html lang="ja"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>${esc(title)}</title>
<style>body{font-family:system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left}.warn,.error{color:#a00}.note{color:#555;font-size:.9em}.number,.code{font-size:1.3em}</style>
</head>
<body>
<p class="note">SBPS sandbox — テスト環境 / test environment, no real money</p>
${body}
</body></html>
`;
}

