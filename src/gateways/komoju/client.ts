import { setTimeout as sleep } from 'node:timers/promises';
import { backoff, retryAfterMs } from '../common/retry.js';

/*
 * KOMOJU REST client (reference gateways.md §3.1–§3.3): sessions, payments and events over JSON,
 * HTTP Basic auth with the secret key as the user name and an empty password (`-u sk_…:`).
 *
 * Retries, and why they are safe where they happen:
 * - KOMOJU honours `X-KOMOJU-IDEMPOTENCY` on POSTs (§3.3): the same key with the same body returns the
 *   original response, and a repeat while the first is still in flight answers 409. So a POST that
 *   carries a key is repeated — with the SAME key and the SAME body bytes — after a network error, a
 *   time-out, a 5xx or a 409. A POST without a key (only reachable through `request`) is never
 *   repeated: it could charge or refund twice.
 * - GETs are reads and are repeated on the same conditions.
 * - Anything else (4xx other than 409) is KOMOJU's definite answer: thrown at once as KomojuApiError.
 * Backoff is exponential with jitter, so many workers retrying together do not move in lockstep.
 *
 * Keys are the caller's (an outbox job id, an order attempt id…): keep the key with the job so that a
 * job that runs again after a crash sends the same key, within KOMOJU's 24-hour key lifetime.
 */

export const KOMOJU_DEFAULT_BASE_URL = 'https://komoju.com/api/v1';

/** KOMOJU's limit on an idempotency key: globally unique, at most 100 ASCII characters (§3.3). */
const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,100}$/;

export interface KomojuApiOptions {
  /** `sk_…` (`sk_test_…` in test mode). */
  secretKey: string;
  /** Default `https://komoju.com/api/v1`; the kessai sandbox's URL in development. */
  baseUrl?: string;
  fetchImpl?: typeof fetch;
  /** Per attempt, covering the answer's body too. Default 30 s. */
  timeoutMs?: number;
  /** Repeats after the first attempt (for retryable requests only). Default 2. */
  retries?: number;
  /** First backoff delay; doubles each repeat. Default 300 ms. */
  retryBaseDelayMs?: number;
  /** Cap on one backoff delay (also on a server's Retry-After). Default 5 s. */
  retryMaxDelayMs?: number;
  /** Source of jitter, [0, 1). Tests pass a constant. */
  random?: () => number;
  /** Extra headers on every request (e.g. `komoju-via`). Authorization, idempotency, content-type and accept are the client's. */
  headers?: Record<string, string>;
}

/** KOMOJU answered with an HTTP error: `{"error":{"code","message","param","details"}}` (§3.3). */
export class KomojuApiError extends Error {
  override name = 'KomojuApiError';
  readonly status: number;
  /** KOMOJU's error code (`invalid_parameter`, `not_found` …); `http_<status>` when the body had none. */
  readonly code: string;
  readonly param?: string;
  readonly details?: unknown;
  /**
   * True for 5xx and 409 (thrown only once the retries ran out): KOMOJU may yet apply, or may already
   * have applied, the request; repeat it with the same idempotency key or read the object back.
   */
  readonly retryable: boolean;
  constructor(init: { status: number; code: string; message: string; param?: string; details?: unknown; method: string; path: string }) {
    super(`KOMOJU ${init.method} ${init.path}: HTTP ${init.status} ${init.code}: ${init.message}${init.param ? ` (param ${init.param})` : ''}`);
    this.status = init.status;
    this.code = init.code;
    if (init.param !== undefined) this.param = init.param;
    if (init.details !== undefined) this.details = init.details;
    this.retryable = init.status >= 500 || init.status === 409;
  }
}

export type KomojuTransportErrorKind = 'network' | 'timeout' | 'malformed';

/** No usable answer: the request may or may not have been applied (read back, or repeat with the same key). */
export class KomojuTransportError extends Error {
  override name = 'KomojuTransportError';
  constructor(
    readonly kind: KomojuTransportErrorKind,
    message: string,
    readonly method: string,
    readonly path: string,
    options?: { cause?: unknown },
  ) {
    super(`KOMOJU ${method} ${path}: ${message}`, options);
  }
}

// ---- resource shapes (the fields kessai reads; KOMOJU sends more, kept by the index signature) ----

export type KomojuPaymentStatus = 'pending' | 'authorized' | 'captured' | 'refunded' | 'cancelled' | 'expired' | 'failed';
export type KomojuSessionStatus = 'pending' | 'completed' | 'cancelled';

export interface KomojuRefund {
  id: string;
  resource: 'refund';
  amount: number;
  currency: string;
  payment: string;
  description?: string | null;
  created_at: string;
  chargeback?: boolean;
  [key: string]: unknown;
}

export interface KomojuPayment {
  id: string;
  resource: 'payment';
  status: KomojuPaymentStatus;
  amount: number;
  tax?: number;
  total?: number;
  currency: string;
  payment_method_fee?: number;
  payment_deadline?: string | null;
  payment_details?: { type: string; [key: string]: unknown } | null;
  external_order_num?: string | null;
  metadata?: Record<string, unknown> | null;
  session?: string | null;
  captured_at?: string | null;
  amount_refunded?: number;
  refunds?: KomojuRefund[];
  created_at?: string;
  [key: string]: unknown;
}

export interface KomojuSession {
  id: string;
  resource: 'session';
  mode?: string;
  status: KomojuSessionStatus;
  amount: number;
  currency: string;
  session_url: string;
  return_url?: string;
  payment?: KomojuPayment | null;
  metadata?: Record<string, unknown> | null;
  [key: string]: unknown;
}

export interface KomojuEventResource {
  id: string;
  type: string;
  resource: 'event';
  data: Record<string, unknown>;
  created_at: string;
  reason?: string | null;
  [key: string]: unknown;
}

export interface KomojuAddress {
  zipcode?: string;
  street_address1?: string;
  street_address2?: string;
  country?: string;
  state?: string;
  city?: string;
}

/** `POST /sessions` body (§3.2). `amount` is plain yen for JPY (a zero-decimal currency). */
export interface KomojuSessionCreate {
  amount: number;
  currency: string;
  return_url: string;
  default_locale?: string;
  email?: string;
  /** Omit for every method enabled on the account. */
  payment_types?: string[];
  payment_data?: {
    /** Unique per payment attempt (§3.2). */
    external_order_num?: string;
    name?: string;
    billing_address?: KomojuAddress;
    shipping_address?: KomojuAddress;
    [key: string]: unknown;
  };
  line_items?: { description: string; quantity: number; amount?: number; image?: string }[];
  metadata?: Record<string, string>;
  [key: string]: unknown;
}

export interface KomojuPostOptions {
  /** Sent as `X-KOMOJU-IDEMPOTENCY`; reuse it when repeating the same operation. */
  idempotencyKey: string;
}

export interface KomojuRequestOptions {
  body?: unknown;
  /** POST only. Without it a POST is never retried. */
  idempotencyKey?: string;
}

export interface KomojuApi {
  sessions: {
    create(input: KomojuSessionCreate, opts: KomojuPostOptions): Promise<KomojuSession>;
    get(id: string): Promise<KomojuSession>;
    cancel(id: string, opts: KomojuPostOptions): Promise<KomojuSession>;
  };
  payments: {
    get(id: string): Promise<KomojuPayment>;
    /** Credit cards with manual capture only (KOMOJU refuses the others). */
    capture(id: string, opts: KomojuPostOptions): Promise<KomojuPayment>;
    /**
     * `amount` is required: KOMOJU refunds the WHOLE payment when it is left out (§3.3), so a missing
     * value must never turn a partial refund into a full one. Pass the full amount for a full refund.
     */
    refund(id: string, opts: KomojuPostOptions & { amount: number; description?: string }): Promise<KomojuPayment>;
    /** Only while the payment is `pending` or `authorized`. */
    cancel(id: string, opts: KomojuPostOptions): Promise<KomojuPayment>;
  };
  events: {
    get(id: string): Promise<KomojuEventResource>;
  };
  /** Any other endpoint, with the same auth, time-out, retry and error rules. `path` is under the base URL. */
  request<T>(method: 'GET' | 'POST' | 'PATCH' | 'DELETE', path: string, opts?: KomojuRequestOptions): Promise<T>;
}

function checkId(what: string, id: string): string {
  if (typeof id !== 'string' || id.length === 0 || id.length > 200) throw new TypeError(`${what} id must be a non-empty string, got ${JSON.stringify(id)}`);
  return encodeURIComponent(id);
}

function checkIdempotencyKey(key: unknown): string {
  if (typeof key !== 'string' || !IDEMPOTENCY_KEY.test(key)) {
    throw new TypeError(`idempotencyKey must be 1–100 printable ASCII characters (KOMOJU's limit), got ${JSON.stringify(key)}`);
  }
  return key;
}

function errorFromBody(status: number, text: string, method: string, path: string): KomojuApiError {
  let code = `http_${status}`;
  let message = text.trim().slice(0, 200) || `HTTP ${status}`;
  let param: string | undefined;
  let details: unknown;
  try {
    const parsed: unknown = JSON.parse(text);
    const error = typeof parsed === 'object' && parsed !== null ? (parsed as { error?: unknown }).error : undefined;
    if (typeof error === 'object' && error !== null) {
      const e = error as Record<string, unknown>;
      if (typeof e.code === 'string' && e.code) code = e.code;
      if (typeof e.message === 'string' && e.message) message = e.message;
      if (typeof e.param === 'string' && e.param) param = e.param;
      if (e.details !== undefined) details = e.details;
    }
  } catch {
    // Not JSON (a proxy's HTML page): keep the status-based code and the start of the text.
  }
  if (status === 401 && code === 'http_401') message = 'authentication refused: check the secret key (sk_…) and test/live mode';
  return new KomojuApiError({ status, code, message, method, path, ...(param !== undefined ? { param } : {}), ...(details !== undefined ? { details } : {}) });
}

export function komojuApi(opts: KomojuApiOptions): KomojuApi {
  if (typeof opts.secretKey !== 'string' || !opts.secretKey) throw new TypeError('komojuApi: secretKey is required (sk_…)');
  const baseUrl = (opts.baseUrl ?? KOMOJU_DEFAULT_BASE_URL).replace(/\/+$/, '');
  const fetchImpl = opts.fetchImpl ?? fetch;
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const retries = opts.retries ?? 2;
  const baseDelay = opts.retryBaseDelayMs ?? 300;
  const maxDelay = opts.retryMaxDelayMs ?? 5_000;
  const random = opts.random ?? Math.random;
  if (!Number.isInteger(retries) || retries < 0) throw new TypeError(`komojuApi: retries must be a non-negative integer, got ${retries}`);
  const authorization = `Basic ${Buffer.from(`${opts.secretKey}:`, 'utf8').toString('base64')}`;
  // Case-insensitively, so an `Authorization` here cannot end up merged with ours.
  const reserved = new Set(['authorization', 'x-komoju-idempotency', 'content-type', 'accept']);
  const extraHeaders = Object.fromEntries(Object.entries(opts.headers ?? {}).filter(([name]) => !reserved.has(name.toLowerCase())));

  const delay = backoff({ baseDelayMs: baseDelay, maxDelayMs: maxDelay, random });

  async function request<T>(method: 'GET' | 'POST' | 'PATCH' | 'DELETE', path: string, ropts: KomojuRequestOptions = {}): Promise<T> {
    if (!path.startsWith('/')) throw new TypeError(`path must start with "/", got "${path}"`);
    const key = ropts.idempotencyKey === undefined ? undefined : checkIdempotencyKey(ropts.idempotencyKey);
    if (key !== undefined && method !== 'POST') throw new TypeError('KOMOJU honours idempotency keys on POST requests only');
    // Serialised once: a retry sends exactly these bytes with exactly this key.
    const body = ropts.body === undefined ? undefined : JSON.stringify(ropts.body);
    const headers: Record<string, string> = {
      ...extraHeaders,
      authorization,
      accept: 'application/json',
      ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      ...(key !== undefined ? { 'x-komoju-idempotency': key } : {}),
    };
    const retryable = method === 'GET' || (method === 'POST' && key !== undefined);
    const url = baseUrl + path;

    for (let attempt = 0; ; attempt++) {
      const canRetry = retryable && attempt < retries;
      const signal = AbortSignal.timeout(timeoutMs);
      let status: number;
      let text: string;
      let retryAfter: string | null;
      try {
        const res = await fetchImpl(url, { method, headers, ...(body !== undefined ? { body } : {}), signal, redirect: 'error' });
        status = res.status;
        retryAfter = res.headers.get('retry-after');
        text = await res.text();
      } catch (error) {
        const timedOut = signal.aborted;
        if (canRetry) {
          await sleep(delay(attempt));
          continue;
        }
        if (timedOut) throw new KomojuTransportError('timeout', `no answer within ${timeoutMs} ms`, method, path, { cause: error });
        throw new KomojuTransportError('network', `request failed: ${(error as Error).message}`, method, path, { cause: error });
      }

      if (status >= 200 && status < 300) {
        try {
          return (text ? JSON.parse(text) : {}) as T;
        } catch (error) {
          throw new KomojuTransportError('malformed', `HTTP ${status} with a body that is not JSON`, method, path, { cause: error });
        }
      }
      if ((status >= 500 || status === 409) && canRetry) {
        await sleep(delay(attempt, retryAfterMs(retryAfter)));
        continue;
      }
      throw errorFromBody(status, text, method, path);
    }
  }

  const post = <T>(path: string, body: unknown, o: KomojuPostOptions): Promise<T> => {
    if (typeof o !== 'object' || o === null) throw new TypeError(`POST ${path} needs { idempotencyKey }`);
    return request<T>('POST', path, { body, idempotencyKey: checkIdempotencyKey(o.idempotencyKey) });
  };

  return {
    sessions: {
      create: (input, o) => post<KomojuSession>('/sessions', input, o),
      get: (id) => request<KomojuSession>('GET', `/sessions/${checkId('session', id)}`),
      cancel: (id, o) => post<KomojuSession>(`/sessions/${checkId('session', id)}/cancel`, {}, o),
    },
    payments: {
      get: (id) => request<KomojuPayment>('GET', `/payments/${checkId('payment', id)}`),
      capture: (id, o) => post<KomojuPayment>(`/payments/${checkId('payment', id)}/capture`, {}, o),
      refund: (id, o) => {
        const amount = (o as { amount?: unknown } | undefined)?.amount;
        if (typeof amount !== 'number' || !Number.isSafeInteger(amount) || amount < 1) {
          throw new TypeError(`refund amount must be a positive integer (yen for JPY) and is required, got ${JSON.stringify(amount)}`);
        }
        return post<KomojuPayment>(`/payments/${checkId('payment', id)}/refund`, { amount, ...(o.description !== undefined ? { description: o.description } : {}) }, o);
      },
      cancel: (id, o) => post<KomojuPayment>(`/payments/${checkId('payment', id)}/cancel`, {}, o),
    },
    events: {
      get: (id) => request<KomojuEventResource>('GET', `/events/${checkId('event', id)}`),
    },
    request,
  };
}
