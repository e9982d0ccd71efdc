import { setTimeout as sleep } from 'node:timers/promises';
import { backoff, retryAfterMs } from '../common/retry.js';
import { AtonePaymentError, validateAtonePayment, type AtoneCustomer, type AtoneDestCustomer, type AtoneItem } from './payment.js';
import { ATONE_TOKEN, ATONE_TRANSACTION_ID, atoneTransactionState, type AtoneTransaction, type AtoneTransactionState } from './transaction.js';

/*
 * atone REST client, legacy API (reference gateways.md §2.1): JSON over HTTPS, `Authorization: Basic
 * base64(<shop secret key>)` — the raw secret, with NO ":" after it (the one public implementation does
 * this; whether "secret:" also works is UNCONFIRMED, so kessai sends the evidenced form).
 *
 *   reference  取引参照   GET   /transactions/{id}
 *   settle     売上確定   PATCH /transactions/{id}/settle
 *   refund     課金払戻   PATCH /transactions/{id}/refund      (full only, see below)
 *   register   取引登録   POST  /transactions                  (recurring: token + transaction_options [1])
 *   update     取引更新   POST  /transactions + updated_transactions:[old id] → a NEW transaction id
 *
 * Methods: by default every call goes out as POST with `X-HTTP-Method-Override: GET|PATCH|POST` and a JSON
 * body, the form the CS-Cart add-on uses in production; whether atone also takes real GET / PATCH is
 * UNCONFIRMED (`methodOverride: false` sends them; the kessai sandbox accepts both).
 *
 * Refunds: only full refunds are seen in public code (the CS-Cart body is just `{id}`); a partial refund
 * body is UNCONFIRMED, so `refund` is full only. To charge less, update the transaction (取引更新) with
 * the new items.
 *
 * Retries, and why they are safe where they happen:
 * - reference: a read; repeated after a network error, a time-out, a 5xx, 429 or EATN0399 (atone's
 *   "service unavailable", sent as HTTP 400).
 * - settle and refund: repeated on the same conditions, because repeating them cannot move money twice:
 *   a transaction is settled once (a second settle is refused; the CS-Cart add-on reads EATN1201 as
 *   "already settled") and refunds are full. When a settle or refund is refused with a 4xx, the client
 *   reads the transaction back: if its state is already the goal (settled — and not refunded — for a
 *   settle; refunded for a refund), that transaction is returned. So a job that runs again after a
 *   crash, or a retry whose first attempt did land, converges instead of failing.
 * - register and update: NEVER repeated. atone documents no idempotency key, and `shop_transaction_no`
 *   is not a de-duplication key (取引更新 re-sends the old number and gets a new transaction), so a repeat
 *   could authorize twice. After an AtoneTransportError (maybeApplied) or a 5xx, do not resend blindly:
 *   the 決済Webhook brings the transaction that was created; otherwise reconcile in atone's admin.
 * Backoff is exponential with jitter.
 */

export const ATONE_TEST_API_URL = 'https://ct-api.a-to-ne.jp/v1';
export const ATONE_LIVE_API_URL = 'https://api.atone.be/v1';
export const ATONE_TEST_SCRIPT_URL = 'https://ct-auth.a-to-ne.jp/v1/atone.js';
export const ATONE_LIVE_SCRIPT_URL = 'https://auth.atone.be/v1/atone.js';

export interface AtoneApiOptions {
  /** 店舗秘密鍵. */
  secretKey: string;
  /** Default ATONE_TEST_API_URL (no real charge by mistake); ATONE_LIVE_API_URL in production; the sandbox's `<public>/sandbox/atone/v1`. */
  baseUrl?: string;
  /** Sent as X-NP-Terminal-Id when atone gave the shop one. */
  terminalId?: string;
  /** POST + X-HTTP-Method-Override (default true), or the real methods. */
  methodOverride?: boolean;
  fetchImpl?: typeof fetch;
  /** Per attempt, covering the answer's body too. Default 30 s. */
  timeoutMs?: number;
  /** Repeats after the first attempt (reference, settle, refund only). Default 2. */
  retries?: number;
  /** First backoff delay; doubles each repeat. Default 300 ms. */
  retryBaseDelayMs?: number;
  /** Cap on one backoff delay (also on Retry-After). Default 5 s. */
  retryMaxDelayMs?: number;
  /** Source of jitter, [0, 1). Tests pass a constant. */
  random?: () => number;
}

/** One entry of atone's `errors` array. */
export interface AtoneErrorDetail {
  code: string;
  messages: string[];
  params: string[];
}

/** atone answered with an error: `{ name, message, errors: [{ code, messages, params }] }` (§2.2). */
export class AtoneApiError extends Error {
  override name = 'AtoneApiError';
  readonly status: number;
  /** atone's error type, e.g. InvalidRequest; `http_<status>` when the body had none. */
  readonly type: string;
  /** The EATN codes, in order. */
  readonly codes: string[];
  readonly errors: AtoneErrorDetail[];
  /** 5xx, 429 or EATN0399: atone may take the same request later. */
  readonly retryable: boolean;
  constructor(init: { status: number; type: string; message: string; errors: AtoneErrorDetail[]; method: string; path: string }) {
    const codes = init.errors.map((e) => e.code).filter(Boolean);
    const detail = init.errors.map((e) => `${e.code}${e.params.length ? ` (${e.params.join(', ')})` : ''}${e.messages.length ? ` ${e.messages.join(' ')}` : ''}`).join('; ');
    super(`atone ${init.method} ${init.path}: HTTP ${init.status} ${init.type}: ${init.message}${detail ? ` — ${detail}` : ''}`);
    this.status = init.status;
    this.type = init.type;
    this.errors = init.errors;
    this.codes = codes;
    this.retryable = init.status >= 500 || init.status === 429 || codes.includes('EATN0399');
  }
}

export type AtoneTransportErrorKind = 'network' | 'timeout' | 'malformed';

/** No usable answer. `maybeApplied`: atone may have acted on the request (read back before doing anything else). */
export class AtoneTransportError extends Error {
  override name = 'AtoneTransportError';
  constructor(
    readonly kind: AtoneTransportErrorKind,
    message: string,
    readonly method: string,
    readonly path: string,
    readonly maybeApplied: boolean,
    options?: { cause?: unknown },
  ) {
    super(`atone ${method} ${path}: ${message}`, options);
  }
}

/** 取引登録 / 取引更新 body (CS-Cart's, §2.1), less `updated_transactions`, which `update` adds. */
export interface AtoneRegistration {
  amount: number;
  /** The member's `tk_…` token (from the modal's `authenticated` callback or the 認証Webhook). */
  authentication_token: string;
  shop_transaction_no: string;
  customer: AtoneCustomer;
  dest_customers?: AtoneDestCustomer[];
  items: AtoneItem[];
  /** [1] for a recurring charge (定期登録). */
  transaction_options?: number[];
  sales_settled?: boolean;
  description_trans?: string;
}

export interface AtoneApi {
  /** 取引参照: the only source of truth about a transaction. */
  reference(id: string): Promise<AtoneTransaction>;
  /** 売上確定. Already settled counts as done (read back, see the top). */
  settle(id: string): Promise<AtoneTransaction>;
  /** 課金払戻, the whole transaction. Already refunded counts as done. */
  refund(id: string): Promise<AtoneTransaction>;
  /** 取引登録: a new authorization with the member's token (recurring: transaction_options [1]). Never retried. */
  register(input: AtoneRegistration): Promise<AtoneTransaction>;
  /** 取引更新: replaces `previousId`; the answer's `id` is the transaction to keep from now on. Never retried. */
  update(previousId: string, input: AtoneRegistration): Promise<AtoneTransaction>;
}

type Method = 'GET' | 'PATCH' | 'POST';

function checkId(id: unknown): string {
  if (typeof id !== 'string' || !ATONE_TRANSACTION_ID.test(id)) throw new TypeError(`an atone transaction id looks like tr_XXXXXXXXXXXXXXXX, got ${JSON.stringify(id)}`);
  return id;
}

function errorFromBody(status: number, text: string, method: string, path: string): AtoneApiError {
  let type = `http_${status}`;
  let message = text.trim().slice(0, 200) || `HTTP ${status}`;
  let errors: AtoneErrorDetail[] = [];
  try {
    const parsed: unknown = JSON.parse(text);
    if (typeof parsed === 'object' && parsed !== null) {
      const o = parsed as Record<string, unknown>;
      if (typeof o.name === 'string' && o.name) type = o.name;
      if (typeof o.message === 'string' && o.message) message = o.message;
      if (Array.isArray(o.errors)) {
        errors = o.errors
          .filter((e): e is Record<string, unknown> => typeof e === 'object' && e !== null)
          .map((e) => ({
            code: typeof e.code === 'string' ? e.code : '',
            messages: Array.isArray(e.messages) ? e.messages.map(String) : [],
            params: Array.isArray(e.params) ? e.params.map(String) : [],
          }));
      }
    }
  } catch {
    // Not JSON (a proxy's page): keep the status and the start of the text.
  }
  if (status === 401 && type === 'http_401') message = 'authentication refused: check the shop secret key (店舗秘密鍵) and test / live base URL';
  return new AtoneApiError({ status, type, message, errors, method, path });
}

export function atoneApi(opts: AtoneApiOptions): AtoneApi {
  if (typeof opts.secretKey !== 'string' || !opts.secretKey) throw new TypeError('atoneApi: secretKey (店舗秘密鍵) is required');
  const baseUrl = (opts.baseUrl ?? ATONE_TEST_API_URL).replace(/\/+$/, '');
  const fetchImpl = opts.fetchImpl ?? fetch;
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const retries = opts.retries ?? 2;
  const baseDelay = opts.retryBaseDelayMs ?? 300;
  const maxDelay = opts.retryMaxDelayMs ?? 5_000;
  const random = opts.random ?? Math.random;
  const override = opts.methodOverride ?? true;
  if (!Number.isInteger(retries) || retries < 0) throw new TypeError(`atoneApi: retries must be a non-negative integer, got ${retries}`);
  const authorization = `Basic ${Buffer.from(opts.secretKey, 'utf8').toString('base64')}`;

  const delay = backoff({ baseDelayMs: baseDelay, maxDelayMs: maxDelay, random });

  async function request<T>(method: Method, path: string, body: unknown, retryable: boolean): Promise<T> {
    const headers: Record<string, string> = { authorization, accept: 'application/json', 'content-type': 'application/json' };
    if (opts.terminalId) headers['x-np-terminal-id'] = opts.terminalId;
    let wireMethod: string = method;
    if (override) {
      wireMethod = 'POST';
      headers['x-http-method-override'] = method;
    }
    // A real GET carries no body; everything else sends these exact bytes on every attempt.
    const payload = wireMethod === 'GET' ? undefined : JSON.stringify(body ?? {});
    const url = baseUrl + path;

    for (let attempt = 0; ; attempt++) {
      const canRetry = retryable && attempt < retries;
      const signal = AbortSignal.timeout(timeoutMs);
      let status: number;
      let text: string;
      let retryAfter: string | null;
      try {
        const res = await fetchImpl(url, { method: wireMethod, headers, ...(payload !== undefined ? { body: payload } : {}), signal, redirect: 'error' });
        status = res.status;
        retryAfter = res.headers.get('retry-after');
        text = await res.text();
      } catch (error) {
        if (canRetry) {
          await sleep(delay(attempt));
          continue;
        }
        const maybeApplied = method !== 'GET';
        if (signal.aborted) throw new AtoneTransportError('timeout', `no answer within ${timeoutMs} ms`, method, path, maybeApplied, { cause: error });
        throw new AtoneTransportError('network', `request failed: ${(error as Error).message}`, method, path, maybeApplied, { cause: error });
      }
      if (status >= 200 && status < 300) {
        try {
          return JSON.parse(text) as T;
        } catch (error) {
          throw new AtoneTransportError('malformed', `HTTP ${status} with a body that is not JSON`, method, path, method !== 'GET', { cause: error });
        }
      }
      const error = errorFromBody(status, text, method, path);
      if (error.retryable && canRetry) {
        await sleep(delay(attempt, retryAfterMs(retryAfter)));
        continue;
      }
      throw error;
    }
  }

  const reference = (id: string): Promise<AtoneTransaction> => {
    const tr = checkId(id);
    return request<AtoneTransaction>('GET', `/transactions/${tr}`, { id: tr }, true);
  };

  /** settle / refund: a refusal is checked against the transaction before it is believed (see the top). */
  async function ensure(id: string, action: 'settle' | 'refund', goal: AtoneTransactionState): Promise<AtoneTransaction> {
    const tr = checkId(id);
    try {
      return await request<AtoneTransaction>('PATCH', `/transactions/${tr}/${action}`, { id: tr }, true);
    } catch (error) {
      if (!(error instanceof AtoneApiError) || error.status < 400 || error.status >= 500 || error.status === 401 || error.status === 404) throw error;
      const current = await reference(tr);
      if (atoneTransactionState(current) === goal) return current;
      throw error;
    }
  }

  function registration(input: AtoneRegistration, previousId?: string): Record<string, unknown> {
    const problems = validateAtonePayment(input, { requireChecksum: false });
    const token = (input as { authentication_token?: unknown }).authentication_token;
    if (typeof token !== 'string' || !token) problems.unshift({ path: 'authentication_token', code: 'EATN0301', message: "authentication_token is required: the member's tk_… token" });
    else if (!ATONE_TOKEN.test(token)) problems.unshift({ path: 'authentication_token', code: 'EATN0302', message: 'authentication_token looks like tk_ followed by letters and digits' });
    if (problems.length) throw new AtonePaymentError(problems);
    const { checksum: _checksum, ...body } = input as AtoneRegistration & { checksum?: unknown; updated_transactions?: unknown };
    return previousId === undefined ? body : { ...body, updated_transactions: [previousId] };
  }

  return {
    reference,
    settle: (id) => ensure(id, 'settle', 'settled'),
    refund: (id) => ensure(id, 'refund', 'refunded'),
    register: async (input) => {
      const body = registration(input);
      if ('updated_transactions' in body) throw new TypeError('register: use update(previousId, input) to replace a transaction');
      return request<AtoneTransaction>('POST', '/transactions', body, false);
    },
    update: async (previousId, input) => request<AtoneTransaction>('POST', '/transactions', registration(input, checkId(previousId)), false),
  };
}
