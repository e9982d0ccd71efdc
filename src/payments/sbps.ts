import type { PaymentFact } from '../commerce/payment-machine.js';
import type { ShopSettings } from '../commerce/shops.js';
import { StopRetrying } from '../errors.js';
import { MIN_SECONDS_TO_PAY } from '../commerce/orders.js';
import { jisX0208Problem, toFullWidthKatakana } from '../gateways/common/sjis.js';
import {
  buildPurchaseRequest,
  normaliseForSbps,
  SBPS_CAPTURE_AMOUNT_METHODS,
  SBPS_EXCEPTION_CHARS,
  SBPS_LIMITS,
  SbpsFieldError,
  SbpsTransportError,
  SbpsUnsupportedError,
  sbpsXmlApi,
  truncateSjis,
  verifyMessage,
  xmlApiRequestId,
  type SbpsApiResult,
  type SbpsInquiry,
  type SbpsXmlApi,
  type XmlApiOperation,
} from '../gateways/sbps/index.js';
import type { PaymentAttempt } from '../db/schema.js';
import type { AttemptContext, GatewayFact, GatewayReply, NotificationResult, PaymentProvider } from './provider.js';

/*
 * SBPS link type (リンク型) as a provider: the customer's browser posts a signed Shift_JIS form to
 * SBPS, SBPS posts the result CGI to /webhooks/sbps/:shop, and later money operations go through
 * the XML API. Only the result CGI (hash verified) and the XML API's answers are facts.
 */

/** Methods paid after the order, at a convenience store or a bank: OK means "slip issued", PY means paid. */
const PAY_LATER = new Set(['webcvs', 'payeasy', 'banktransfer']);
/** Methods SBPS can hold for a later commit (指定売上), from gateways.md §1.6. */
const MANUAL_CAPTURE = new Set(['credit', 'credit3d', 'credit3d2', 'docomo', 'auone', 'softbank2', 'recruitc', 'yahoowallet', 'linepay', 'applepay', 'paypay']);
const DEFAULT_METHODS = ['credit3d2', 'webcvs', 'payeasy', 'paypay', 'docomo', 'auone', 'softbank2'];

function setting(settings: ShopSettings, key: string): string {
  const value = settings[`sbps.${key}`];
  if (typeof value !== 'string' || value === '') throw new Error(`SBPS is not configured for this shop: sbps.${key} is missing (kessai shop set <shop> sbps.${key}=…)`);
  return value;
}

/**
 * The item name SBPS shows the customer, from our product names: what SBPS cannot take (platform
 * characters such as ①, 髙, emoji) becomes 〓, the customary stand-in, and the name is cut to the
 * byte limit. A product name must never make an order unpayable.
 */
export function sbpsItemName(name: string): string {
  const safe = [...normaliseForSbps(toFullWidthKatakana(name))]
    .map((ch) => (jisX0208Problem(ch) !== undefined || SBPS_EXCEPTION_CHARS.has(ch) || ch === '\\' ? '〓' : ch))
    .join('');
  return truncateSjis(safe, SBPS_LIMITS.item_name);
}

/**
 * limit_second of a purchase request: the shop's setting, but never beyond the end of the order's
 * stock reservation. SBPS takes the payment until request_date + limit_second, and an OK after the
 * order expired would charge the customer for stock already given back.
 */
export function sbpsLimitSecond(settings: ShopSettings, expiresAt: string | undefined, now: number = Date.now()): number {
  const configured = Number(settings['sbps.limitSecond'] ?? '600');
  if (expiresAt === undefined) return configured;
  const left = Math.floor((Date.parse(expiresAt) - now) / 1000);
  if (Number.isNaN(left)) throw new Error(`the order's reservation end "${expiresAt}" is not a time`);
  // A new attempt on an order has this much time (openAttempt); a checkout under a shorter
  // reservation setting does not, and SBPS is not sent a page that closes before it opens.
  if (left < MIN_SECONDS_TO_PAY) {
    throw new Error(`the order's reservation ends in ${Math.max(0, left)} seconds, too soon to pay at SBPS (at least ${MIN_SECONDS_TO_PAY} are needed); please order again`);
  }
  return Math.min(configured, left);
}

/** SBPS dates are Japan time, YYYYMMDDHHMMSS. */
export function sbpsDate(at: Date = new Date()): string {
  return new Date(at.getTime() + 9 * 3600_000).toISOString().replace(/[-:T]/g, '').slice(0, 14);
}

const ok = (body: string): GatewayReply => ({ status: 200, contentType: 'text/plain; charset=Shift_JIS', body });
/** The answer body is CSV; SBPS alerts the merchant on messages over 100 characters. */
const ng = (reason: string): GatewayReply => ok(`NG,${reason.replace(/[,\r\n]/g, ' ').slice(0, 100)}`);

/** The address a notification came from matches the shop's allow-list (empty list: any). */
export function ipAllowed(list: string | undefined, address: string): boolean {
  if (!list) return true;
  const normalised = address.replace(/^::ffff:/, '');
  return list.split(',').some((ip) => ip.trim() === normalised);
}

/** What an SBPS result means for the store, by res_result and the method actually used. */
export function resultFact(fields: Record<string, string>, captureMode: string): PaymentFact | undefined {
  const amount = Number.parseInt(fields.amount ?? '', 10);
  const method = fields.res_pay_method || fields.pay_method || '';
  switch (fields.res_result) {
    case 'OK':
      if (PAY_LATER.has(method)) return { type: 'awaiting_payment', amount };
      if (captureMode === 'manual' && MANUAL_CAPTURE.has(method)) return { type: 'authorized', amount };
      return { type: 'captured', amount };
    case 'PY':
      return { type: 'captured', amount };
    case 'NG':
      return { type: 'failed', reason: fields.res_err_code ? `SBPS error ${fields.res_err_code}` : 'declined at SBPS' };
    case 'CR':
    case 'CC':
    case 'CL':
      return { type: 'cancelled' };
    case 'CN':
      return { type: 'expired' };
    default:
      return undefined;
  }
}

/**
 * SBPS's answer to an inquiry as facts. Keys name the state SBPS reported, so the same state seen by
 * a read-back and by an operation's follow-up inquiry is applied once. Whether real SBPS reports
 * amounts in an inquiry is unconfirmed: without them the attempt's own amount is what SBPS confirmed,
 * and a refund is known only when SBPS says the payment is fully refunded. Refunds are a running
 * total at SBPS; the fact is what is new since our own record.
 */
function inquiryFacts(a: AttemptContext, trackingId: string, inquiry: SbpsInquiry): GatewayFact[] {
  const base = { merchantRef: a.attempt.merchant_ref, gatewayRef: trackingId, payload: inquiry.fields };
  const at = (suffix: string) => `inquiry:${trackingId}:${suffix}`;
  const amount = inquiry.amount ?? a.attempt.amount;
  const captured = inquiry.capturedAmount ?? amount;
  switch (inquiry.status) {
    case 'authorized':
      return [{ ...base, eventKey: at('authorized'), fact: { type: 'authorized', amount } }];
    case 'awaiting_payment':
      return [{ ...base, eventKey: at('awaiting'), fact: { type: 'awaiting_payment', amount } }];
    case 'captured':
    case 'refunded':
    case 'partially_refunded': {
      const facts: GatewayFact[] = [{ ...base, eventKey: at(`captured:${captured}`), fact: { type: 'captured', amount: captured } }];
      const refundedTotal = inquiry.refundedAmount ?? (inquiry.status === 'refunded' ? captured : a.attempt.refunded_amount);
      if (refundedTotal > a.attempt.refunded_amount) {
        const refundId = `${trackingId}:refunded-to:${refundedTotal}`;
        facts.push({ ...base, eventKey: at(`refunded-to:${refundedTotal}`), fact: { type: 'refunded', amount: refundedTotal - a.attempt.refunded_amount, refundId } });
      }
      return facts;
    }
    case 'cancelled':
      return [{ ...base, eventKey: at('cancelled'), fact: { type: 'cancelled' } }];
    case 'expired':
      return [{ ...base, eventKey: at('expired'), fact: { type: 'expired' } }];
    case 'failed':
      return [{ ...base, eventKey: at('failed'), fact: { type: 'failed', reason: 'SBPS reports the payment failed' } }];
    default:
      return [];
  }
}

/**
 * The pay_method the attempt was paid with, which chooses every XML API request id: what SBPS
 * reported (res_pay_method, kept in the attempt's details), else the one method the customer
 * chose in the shop, else the card (see below).
 */
export function sbpsPayMethodOf(attempt: Pick<PaymentAttempt, 'details' | 'method'>): string {
  let reported: unknown;
  try {
    reported = (JSON.parse(attempt.details || '{}') as { method?: unknown }).method;
  } catch {
    reported = undefined;
  }
  if (typeof reported === 'string' && reported !== '') return reported;
  const chosen = attempt.method ?? '';
  // SBPS named no method and the customer chose at SBPS: the one result CGI on record that names
  // none (gateways.md §1.3, res_pay_method="") was a card payment, so the card's ids are the default.
  return chosen === '' || chosen.includes(',') ? 'credit' : chosen;
}

/** Without an SBPS request for the operation nothing can be done by retrying: a person must act. */
function refused(error: unknown): unknown {
  return error instanceof SbpsUnsupportedError ? new StopRetrying(error.message) : error;
}

/** `SbpsXmlApi` with the attempt's pay_method filled in. */
interface AttemptApi {
  commit(input: { trackingId: string; amount?: number }): Promise<SbpsApiResult>;
  refund(input: { trackingId: string }): Promise<SbpsApiResult>;
  partialRefund(input: { trackingId: string; amount: number }): Promise<SbpsApiResult>;
  cancel(input: { trackingId: string }): Promise<SbpsApiResult>;
  inquiry(input: { trackingId: string }): Promise<SbpsInquiry>;
}

/**
 * The XML API for one attempt: each call sends the request ids of the attempt's pay_method. With
 * `needs`, an operation SBPS offers no request for is refused (StopRetrying) before anything is
 * read or sent.
 */
/** A refund of the whole capture is SBPS's refund; anything less its partial refund, which not every method has. */
function refundOperation(attempt: PaymentAttempt, amount: number): XmlApiOperation {
  return amount === attempt.captured_amount && attempt.refunded_amount === 0 ? 'refund' : 'partialRefund';
}

function attemptApi(client: SbpsXmlApi, a: AttemptContext, needs?: XmlApiOperation): AttemptApi {
  const payMethod = sbpsPayMethodOf(a.attempt);
  if (needs !== undefined) {
    try {
      xmlApiRequestId(payMethod, needs);
    } catch (error) {
      throw refused(error);
    }
  }
  const run = <R>(call: Promise<R>): Promise<R> =>
    call.catch((error: unknown) => {
      throw refused(error);
    });
  return {
    commit: (input) => run(client.commit({ ...input, payMethod })),
    refund: (input) => run(client.refund({ ...input, payMethod })),
    partialRefund: (input) => run(client.partialRefund({ ...input, payMethod })),
    cancel: (input) => run(client.cancel({ ...input, payMethod })),
    inquiry: (input) => run(client.inquiry({ ...input, payMethod })),
  };
}

/**
 * Runs one XML API money operation. When SBPS's answer is lost (timeout, connection reset) the job
 * normally retries, and the retry's inquiry shows whether it happened. Where the inquiry cannot
 * show it (`uncheckable`), the job stops for a person instead of risking a second refund.
 */
async function guarded<T>(what: string, call: () => Promise<T>, uncheckable = false): Promise<T> {
  try {
    return await call();
  } catch (error) {
    if (uncheckable && error instanceof SbpsTransportError && error.outcomeUnknown) {
      throw new StopRetrying(`SBPS ${what}: the answer was lost and SBPS cannot be asked whether it happened; check the SBPS console before retrying (${error.message})`);
    }
    throw error;
  }
}

export function sbpsProvider(opts: { fetchImpl?: typeof fetch; timeoutMs?: number } = {}): PaymentProvider {
  const api = (settings: ShopSettings) =>
    sbpsXmlApi({
      url: setting(settings, 'apiUrl'),
      basicAuth: { user: setting(settings, 'apiUser'), password: setting(settings, 'apiPassword') },
      merchantId: setting(settings, 'merchantId'),
      serviceId: setting(settings, 'serviceId'),
      hashKey: setting(settings, 'hashKey'),
      fetchImpl: opts.fetchImpl,
      timeoutMs: opts.timeoutMs,
    });
  const clientFor = (a: AttemptContext, needs?: XmlApiOperation) => attemptApi(api(a.settings), a, needs);
  const refundClient = (a: AttemptContext, amount: number) => clientFor(a, refundOperation(a.attempt, amount));

  const trackingIdOf = (a: AttemptContext): string => {
    if (!a.attempt.gateway_ref) throw new Error(`SBPS has not reported a tracking id for ${a.attempt.merchant_ref} yet`);
    return a.attempt.gateway_ref;
  };

  return {
    name: 'sbps',

    methods(settings) {
      if (settings['sbps.enabled'] !== true) return [];
      for (const key of ['merchantId', 'serviceId', 'hashKey', 'gatewayUrl']) if (!settings[`sbps.${key}`]) return [];
      const configured = settings['sbps.payMethods'];
      return typeof configured === 'string' && configured ? configured.split(',') : DEFAULT_METHODS;
    },

    async start(a) {
      const { settings, order, attempt } = a;
      const limitSecond = sbpsLimitSecond(settings, order.expiresAt);
      const first = order.lines[0];
      const itemName = sbpsItemName(first ? (order.lines.length > 1 ? `${first.name} 他${order.lines.length - 1}点` : first.name) : order.number);
      try {
        const fields = buildPurchaseRequest(
          {
            pay_method: attempt.method ?? '',
            merchant_id: setting(settings, 'merchantId'),
            service_id: setting(settings, 'serviceId'),
            // A guest's code starts with reg_sps so SBPS keeps no card details under it (seed 002).
            cust_code: `reg_sps${order.id.replace(/[^a-z0-9]/gi, '').slice(-20)}`,
            order_id: attempt.merchant_ref,
            item_id: order.number,
            item_name: itemName,
            amount: String(attempt.amount),
            pay_type: '0',
            service_type: '0',
            terminal_type: '0',
            success_url: a.urls.returnUrl,
            cancel_url: a.urls.cancelUrl,
            error_url: a.urls.returnUrl,
            pagecon_url: a.urls.notifyUrl,
            request_date: sbpsDate(),
            limit_second: String(limitSecond),
          },
          { hashKey: setting(settings, 'hashKey'), normalise: true },
        );
        return { action: { type: 'form', action: setting(settings, 'gatewayUrl'), charset: 'Shift_JIS', fields } };
      } catch (error) {
        if (error instanceof SbpsFieldError) throw new Error(`the order cannot be sent to SBPS: ${error.message}`);
        throw error;
      }
    },

    async parseNotification({ rawBody, settings, remoteAddress }): Promise<NotificationResult> {
      const allowed = typeof settings['sbps.allowedIps'] === 'string' ? settings['sbps.allowedIps'] : undefined;
      if (!ipAllowed(allowed, remoteAddress)) return { rejected: true, reason: `notification from ${remoteAddress}, not an allowed SBPS address`, reply: ng('source address not allowed') };
      let verified;
      try {
        verified = verifyMessage('result', rawBody, setting(settings, 'hashKey'));
      } catch (error) {
        return { rejected: true, reason: `unreadable notification: ${error instanceof Error ? error.message : String(error)}`, reply: ng('malformed request') };
      }
      if (!verified.valid) return { rejected: true, reason: `sps_hashcode mismatch (received ${verified.received})`, reply: ng('sps_hashcode mismatch') };
      const f = verified.message.fields;
      if (f.merchant_id !== settings['sbps.merchantId'] || f.service_id !== settings['sbps.serviceId']) {
        return { rejected: true, reason: `notification for merchant ${f.merchant_id}/${f.service_id}, not this shop`, reply: ng('merchant_id or service_id does not belong to this shop') };
      }
      const fact = resultFact(f, String(settings['sbps.captureMode'] ?? 'auto'));
      // A verified result we do not know is still acknowledged (NG would make SBPS alert and retry)
      // and applies nothing; the store logs why, for a person to look at.
      if (!fact) {
        const reason = `verified result with res_result "${f.res_result ?? ''}" that kessai does not act on (order_id ${f.order_id ?? ''}, tracking id ${f.res_tracking_id ?? ''}): answered OK, nothing applied`;
        return { verified: true, facts: [], reply: ok('OK,'), ignored: reason };
      }
      const details: Record<string, unknown> = {};
      if (f.res_pay_method) details.method = f.res_pay_method;
      if (f.res_payinfo_key) details.payinfo = f.res_payinfo_key;
      if (f.res_err_code) details.error = f.res_err_code;
      return {
        verified: true,
        facts: [
          {
            // SBPS can send OK, then PY, then CN for one order: the result and tracking id tell them apart.
            eventKey: `${f.order_id}:${f.res_result}:${f.res_tracking_id}`,
            merchantRef: f.order_id ?? '',
            gatewayRef: f.res_tracking_id || undefined,
            fact,
            details: Object.keys(details).length ? details : undefined,
            payload: f,
          },
        ],
        reply: ok('OK,'),
      };
    },

    refusal(attempt, op, amount) {
      if (!attempt.gateway_ref) {
        return `SBPS has not reported payment ${attempt.merchant_ref} yet (no result notification, so no tracking id): there is nothing to ${op} at SBPS. An order that is never paid expires by itself when its reservation ends`;
      }
      try {
        xmlApiRequestId(sbpsPayMethodOf(attempt), op === 'capture' ? 'commit' : op === 'cancel' ? 'cancel' : refundOperation(attempt, amount));
        return undefined;
      } catch (error) {
        if (error instanceof SbpsUnsupportedError) return error.message;
        throw error;
      }
    },

    verifyReturn({ rawBody, settings }) {
      try {
        const result = verifyMessage('return', rawBody, setting(settings, 'hashKey'));
        return result.valid ? { valid: true } : { valid: false, reason: `sps_hashcode mismatch (received ${result.received})` };
      } catch (error) {
        return { valid: false, reason: error instanceof Error ? error.message : String(error) };
      }
    },

    async readBack(a) {
      // Without a tracking id (no result notification yet) SBPS cannot be asked; the reservation's expiry decides.
      if (!a.attempt.gateway_ref) return [];
      const inquiry = await clientFor(a).inquiry({ trackingId: a.attempt.gateway_ref });
      return inquiryFacts(a, a.attempt.gateway_ref, inquiry);
    },

    // The XML API has no idempotency key: a retried job first asks SBPS whether the operation
    // already happened, and acts only if it did not. A successful answer is itself the fact, keyed
    // like the inquiry would report it, so both paths apply it once.
    async capture(a, amount) {
      const trackingId = trackingIdOf(a);
      const client = clientFor(a, 'commit');
      // Only a card's capture names an amount; other methods capture the whole authorisation or nothing.
      const named = SBPS_CAPTURE_AMOUNT_METHODS.has(sbpsPayMethodOf(a.attempt));
      if (!named && amount !== a.attempt.amount) {
        throw new StopRetrying(`SBPS captures a ${sbpsPayMethodOf(a.attempt)} payment only in full (${a.attempt.amount} yen), not ${amount} yen: capture the whole authorisation or cancel it`);
      }
      const before = await client.inquiry({ trackingId });
      if (before.status === 'unknown') throw new Error(`SBPS inquiry for ${trackingId} gave a status kessai does not understand; not capturing`);
      if (before.status !== 'authorized') return inquiryFacts(a, trackingId, before);
      await guarded('capture', () => client.commit(named ? { trackingId, amount } : { trackingId }));
      return [{ merchantRef: a.attempt.merchant_ref, gatewayRef: trackingId, eventKey: `inquiry:${trackingId}:captured:${amount}`, fact: { type: 'captured', amount }, payload: { operation: 'commit', amount } }];
    },

    async refund(a, amount, _idempotencyKey, run) {
      const trackingId = trackingIdOf(a);
      const client = refundClient(a, amount);
      const before = await client.inquiry({ trackingId });
      if (before.status === 'unknown') throw new Error(`SBPS inquiry for ${trackingId} gave a status kessai does not understand; not refunding`);
      const refundedBefore = before.refundedAmount ?? (before.status === 'refunded' ? a.attempt.captured_amount : a.attempt.refunded_amount);
      // SBPS and our record disagree about what was refunded already: read, do not refund again.
      if (refundedBefore !== a.attempt.refunded_amount || before.status === 'refunded') return inquiryFacts(a, trackingId, before);
      if (amount === a.attempt.captured_amount && refundedBefore === 0) await guarded('refund', () => client.refund({ trackingId }));
      else {
        // Real SBPS does not report refunded amounts: a partial refund whose outcome is unknown (its
        // answer lost, or an earlier run of this job that never recorded it) must not be sent again.
        const uncheckable = before.refundedAmount === undefined;
        if (uncheckable) await run.sending();
        try {
          await guarded('partial refund', () => client.partialRefund({ trackingId, amount }), uncheckable);
        } catch (error) {
          // Anything but a lost answer (StopRetrying) is SBPS saying no, or the call never leaving:
          // nothing was refunded, and a later run may send it again.
          if (uncheckable && !(error instanceof StopRetrying)) await run.notSent();
          throw error;
        }
      }
      const total = refundedBefore + amount;
      return [{ merchantRef: a.attempt.merchant_ref, gatewayRef: trackingId, eventKey: `inquiry:${trackingId}:refunded-to:${total}`, fact: { type: 'refunded', amount, refundId: `${trackingId}:refunded-to:${total}` }, payload: { operation: 'refund', amount } }];
    },

    async cancel(a) {
      const trackingId = trackingIdOf(a);
      const client = clientFor(a);
      const before = await client.inquiry({ trackingId });
      if (before.status === 'awaiting_payment') {
        throw new StopRetrying(`a ${before.payMethod ?? 'convenience store'} payment waiting at SBPS cannot be cancelled through the API; it ends when its deadline passes`);
      }
      if (before.status !== 'authorized') return inquiryFacts(a, trackingId, before);
      await guarded('cancel', () => client.cancel({ trackingId }));
      return [{ merchantRef: a.attempt.merchant_ref, gatewayRef: trackingId, eventKey: `inquiry:${trackingId}:cancelled`, fact: { type: 'cancelled' }, payload: { operation: 'cancel' } }];
    },
  };
}
