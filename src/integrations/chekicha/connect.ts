import { createHash } from 'node:crypto';

/*
 * Chekicha account linking (CkcConnect): tells the Chekicha fan platform that a shop member exists,
 * so the member's Chekicha account is linked to the shop's. No database, no Fastify: the outbox job
 * (commerce/chekicha-link.ts) decides when to call and records the answer.
 *
 * Chekicha's protocol is not public. What follows is kessai's assumption (docs/decisions.md,
 * UNCONFIRMED), kept in this one file so a merchant can adapt it to what Chekicha tells them:
 *
 *   POST {chekicha.apiUrl}/v1/account-links
 *   Authorization: Bearer {chekicha.apiKey}
 *   Idempotency-Key: kessai-<member_ref>-<digest of the body>
 *   {"partner_id", "member_ref", "email", "order_number"?, "product_codes"?}
 *   → 201 (new) or 200 (this member was linked before): {"link_id", "account_id", "status"}
 *   → 4xx / 5xx: {"error": {"code", "message", "field"?}}
 *
 * One call, no retries here: the outbox job is retried with backoff by the dispatcher, and retrying
 * inside the call as well would only multiply the requests an outage receives. An error says whether
 * a retry can help (`retryable`): 5xx, 408, 429, 409 (the same request is still being processed)
 * and no answer at all (network, time-out) can; any other 4xx, or an answer that is not Chekicha's,
 * is definite and needs a person.
 */

export const CHEKICHA_DEFAULT_API_URL = 'https://api.ckc.utaten.com';
export const CHEKICHA_LINK_PATH = '/v1/account-links';

export interface ChekichaClientOptions {
  /** `https://api.ckc.utaten.com` in production; the sandbox's URL in development. */
  baseUrl: string;
  apiKey: string;
  /** Covers the answer's body too. Default 10 s. */
  timeoutMs?: number;
  /** The caller's own deadline (an outbox job's time-out): the request stops when it aborts. */
  signal?: AbortSignal;
  fetchImpl?: typeof fetch;
}

export interface ChekichaLinkRequest {
  partnerId: string;
  /** The shop's id for the member (kessai's customer id): Chekicha links one account per member_ref. */
  memberRef: string;
  email: string;
  /** The purchase that brought the link about, if any (a link asked for on the my page has none). */
  orderNumber?: string;
  productCodes?: string[];
}

export interface ChekichaLink {
  linkId: string;
  accountId: string;
  status: string;
  /** 201: Chekicha made the link now; 200: it existed (an earlier request, or a repeat). */
  created: boolean;
}

export type ChekichaErrorKind = 'http' | 'network' | 'timeout' | 'malformed';

export class ChekichaError extends Error {
  override name = 'ChekichaError';
  readonly kind: ChekichaErrorKind;
  /** The HTTP status, when Chekicha answered. */
  readonly status?: number;
  /** Chekicha's error code (`unauthorized`, `invalid_parameter` …), or `http_<status>` when it gave none. */
  readonly code?: string;
  /** The request field Chekicha blamed, if it named one. */
  readonly field?: string;
  /** True when running the same request again later may succeed. */
  readonly retryable: boolean;
  constructor(init: { kind: ChekichaErrorKind; message: string; status?: number; code?: string; field?: string; cause?: unknown }) {
    super(`Chekicha POST ${CHEKICHA_LINK_PATH}: ${init.message}`, init.cause === undefined ? undefined : { cause: init.cause });
    this.kind = init.kind;
    if (init.status !== undefined) this.status = init.status;
    if (init.code !== undefined) this.code = init.code;
    if (init.field !== undefined) this.field = init.field;
    this.retryable = init.kind === 'network' || init.kind === 'timeout' || (init.kind === 'http' && isRetryableStatus(init.status ?? 0));
  }
}

/** 5xx, 408 (timeout), 429 (too many requests) and 409 (the same request is still in progress). */
export function isRetryableStatus(status: number): boolean {
  return status >= 500 || status === 408 || status === 409 || status === 429;
}

/** The JSON body, in a fixed key order so the same request always has the same bytes. */
export function linkBody(req: ChekichaLinkRequest): string {
  return JSON.stringify({
    partner_id: req.partnerId,
    member_ref: req.memberRef,
    email: req.email,
    ...(req.orderNumber !== undefined ? { order_number: req.orderNumber } : {}),
    ...(req.productCodes !== undefined ? { product_codes: req.productCodes } : {}),
  });
}

/**
 * The same request (a retry after a time-out, a job run again after a crash) carries the same key,
 * so Chekicha answers it once. A different request for the same member (another order, a changed
 * address) carries another key: reusing a key with a different body is refused by an idempotent
 * API, and Chekicha links per member_ref anyway.
 */
export function idempotencyKey(req: ChekichaLinkRequest): string {
  const digest = createHash('sha256').update(linkBody(req)).digest('base64url').slice(0, 22);
  return `kessai-${req.memberRef}-${digest}`;
}

export async function linkAccount(opts: ChekichaClientOptions, req: ChekichaLinkRequest): Promise<ChekichaLink> {
  const url = `${opts.baseUrl.replace(/\/+$/, '')}${CHEKICHA_LINK_PATH}`;
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const timeout = AbortSignal.timeout(timeoutMs);
  const signal = opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout;
  let status: number;
  let text: string;
  try {
    const res = await (opts.fetchImpl ?? fetch)(url, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${opts.apiKey}`,
        'content-type': 'application/json',
        accept: 'application/json',
        'idempotency-key': idempotencyKey(req),
      },
      body: linkBody(req),
      signal,
      // A redirect is answered as it is (a 3xx: definite, needs a person), never followed with the key.
      redirect: 'manual',
    });
    status = res.status;
    text = await res.text();
  } catch (error) {
    if (timeout.aborted) throw new ChekichaError({ kind: 'timeout', message: `no answer within ${timeoutMs / 1000} s`, cause: error });
    if (opts.signal?.aborted) throw new ChekichaError({ kind: 'timeout', message: `stopped by the caller (${describe(opts.signal.reason)})`, cause: error });
    throw new ChekichaError({ kind: 'network', message: `could not reach ${new URL(url).origin}: ${describe(error)}`, cause: error });
  }

  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  if (status >= 200 && status < 300) {
    const b = body as Record<string, unknown> | undefined;
    if (typeof b?.link_id !== 'string' || typeof b.account_id !== 'string' || typeof b.status !== 'string' || !b.account_id) {
      throw new ChekichaError({ kind: 'malformed', message: `HTTP ${status} without {link_id, account_id, status}: is chekicha.apiUrl Chekicha's API? (got ${snippet(text)})` });
    }
    return { linkId: b.link_id, accountId: b.account_id, status: b.status, created: status === 201 };
  }
  const e = (body as { error?: { code?: unknown; message?: unknown; field?: unknown } } | undefined)?.error;
  const code = typeof e?.code === 'string' ? e.code : `http_${status}`;
  const message = typeof e?.message === 'string' ? e.message : snippet(text);
  const field = typeof e?.field === 'string' ? e.field : undefined;
  throw new ChekichaError({ kind: 'http', status, code, field, message: `HTTP ${status} ${code}: ${message}${field ? ` (field ${field})` : ''}` });
}

function describe(error: unknown): string {
  if (error instanceof Error) {
    const cause = error.cause instanceof Error ? `: ${error.cause.message}` : '';
    return `${error.message}${cause}`;
  }
  return String(error);
}

function snippet(text: string): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat ? JSON.stringify(flat.length > 200 ? `${flat.slice(0, 200)}…` : flat) : 'an empty body';
}
