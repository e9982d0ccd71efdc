/**
 * KOMOJU's legacy hosted page (before Sessions), still used by existing merchants: a signed URL
 * `https://komoju.com/<locale>/api/<merchant uuid>/transactions/<payment method>/new?<query>&hmac=…`,
 * and a signed redirect back to the shop (reference gateways.md §3.5, from the official PHP client
 * `KomojuHostedPage.php`).
 *
 * Signing: each parameter becomes `urlencode(key)=urlencode(value)` with PHP's `urlencode` (space →
 * `+`, everything but `A-Za-z0-9-_.` percent-encoded, upper-case hex), the pairs are sorted bytewise
 * and joined with `&`, and the HMAC-SHA256 (hex) is taken with the SECRET KEY over the path plus `?`
 * plus that query. The return is checked the same way over the request URI as received: its path, `?`,
 * and its raw `k=v` pairs (not decoded) without the `hmac` pair, sorted and joined.
 *
 * UNCONFIRMED (named options, defaults as the evidence goes):
 * - `requiredParams`: which parameters KOMOJU appends on the return is not documented anywhere
 *   reachable. Default: none required; only the generic `hmac` check, as the official plugin does.
 * - `maxTimestampSkewSeconds`: whether the return carries `timestamp` and what skew KOMOJU allows are
 *   unknown; the official plugin checks no timestamp. Default: not checked (null). When set, a return
 *   without a numeric `timestamp` fails.
 * - `locale` of the signed path: the official client always signs `/en/…`. Default `en`.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

export const KOMOJU_LEGACY_ENDPOINT = 'https://komoju.com';

/** PHP `urlencode`: RFC 1738 style, space as `+`, `~` and `!*'()` encoded too. */
export function phpUrlencode(value: string): string {
  let encoded: string;
  try {
    encoded = encodeURIComponent(value);
  } catch (error) {
    throw new TypeError(`cannot URL-encode ${JSON.stringify(value)}: not well-formed Unicode`, { cause: error });
  }
  return encoded.replace(/[!'()*~]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`).replace(/%20/g, '+');
}

/** Bytewise order of ASCII strings (what PHP's sort does with these non-numeric `k=v` strings). */
function byteSort(pairs: string[]): string[] {
  return [...pairs].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

function hmacHex(secretKey: string, text: string): string {
  return createHmac('sha256', secretKey).update(text, 'utf8').digest('hex');
}

export interface LegacyHostedPageInput {
  /** The merchant's UUID from the KOMOJU dashboard. */
  merchantUuid: string;
  /** `credit_card`, `konbini`, `bank_transfer`, `pay_easy` … */
  paymentMethod: string;
  secretKey: string;
  /**
   * Flat parameters with their final names, e.g. `transaction[amount]`, `transaction[currency]`,
   * `transaction[external_order_num]`, `transaction[return_url]`, `transaction[cancel_url]`.
   */
  params: Readonly<Record<string, string | number>>;
  /** Unix seconds; used when `params` has no `timestamp`. Default: now. */
  now?: () => number;
  /** Path locale. Default `en` (what the official client signs). */
  locale?: string;
  /** Default `https://komoju.com`; the sandbox's origin in development. */
  endpoint?: string;
}

export interface LegacyHostedPageUrl {
  url: string;
  /** Path and query that were signed (for logs and tests; contains no secret). */
  signedString: string;
  hmac: string;
}

const SEGMENT = /^[A-Za-z0-9_-]+$/;

export function signLegacyHostedPageUrl(input: LegacyHostedPageInput): LegacyHostedPageUrl {
  if (!input.secretKey) throw new TypeError('signLegacyHostedPageUrl: secretKey is required');
  const locale = input.locale ?? 'en';
  for (const [name, value] of [['merchantUuid', input.merchantUuid], ['paymentMethod', input.paymentMethod], ['locale', locale]] as const) {
    if (typeof value !== 'string' || !SEGMENT.test(value)) throw new TypeError(`signLegacyHostedPageUrl: ${name} must be letters, digits, "-" or "_", got ${JSON.stringify(value)}`);
  }
  const params: Record<string, string | number> = { ...input.params };
  if (params.timestamp === undefined) params.timestamp = Math.floor(input.now ? input.now() : Date.now() / 1000);
  if ('hmac' in params) throw new TypeError('signLegacyHostedPageUrl: "hmac" is added by the signer, not a parameter');
  const pairs = Object.entries(params).map(([k, v]) => {
    if (typeof v === 'number' && !Number.isFinite(v)) throw new TypeError(`signLegacyHostedPageUrl: ${k} is not a finite number`);
    return `${phpUrlencode(k)}=${phpUrlencode(String(v))}`;
  });
  const query = byteSort(pairs).join('&');
  const path = `/${locale}/api/${input.merchantUuid}/transactions/${input.paymentMethod}/new`;
  const signedString = `${path}?${query}`;
  const hmac = hmacHex(input.secretKey, signedString);
  const endpoint = (input.endpoint ?? KOMOJU_LEGACY_ENDPOINT).replace(/\/+$/, '');
  return { url: `${endpoint}${signedString}&hmac=${hmac}`, signedString, hmac };
}

export interface LegacyReturnOptions {
  /** Parameters the return must carry besides `hmac` (UNCONFIRMED which; default none). */
  requiredParams?: readonly string[];
  /** Largest |now − timestamp| accepted, in seconds; null = not checked (default; UNCONFIRMED). */
  maxTimestampSkewSeconds?: number | null;
  /** Unix seconds. Default: now. */
  now?: () => number;
}

export type LegacyReturnFailure = 'no_query' | 'missing_hmac' | 'bad_hmac' | 'missing_param' | 'timestamp_skew';

export interface LegacyReturnResult {
  valid: boolean;
  reason?: LegacyReturnFailure;
  /** The query decoded (form rules: `+` is a space), `hmac` left out; the first value wins on repeats. */
  params: Record<string, string>;
}

function decodeComponent(s: string): string {
  try {
    return decodeURIComponent(s.replace(/\+/g, ' '));
  } catch {
    return s;
  }
}

/**
 * Checks KOMOJU's redirect back. `requestUri` is the path and query exactly as the request line
 * carried them (Node's `req.url`, Fastify's `request.raw.url`), not a URL rebuilt from parsed
 * parameters: the HMAC is over the raw `k=v` text. Behind a proxy that rewrites the path, pass the
 * public path. A full URL is accepted too (its origin is ignored).
 */
export function validateLegacyReturn(requestUri: string, secretKey: string, opts: LegacyReturnOptions = {}): LegacyReturnResult {
  if (!secretKey) throw new TypeError('validateLegacyReturn: secretKey is required');
  let uri = requestUri;
  const origin = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*/i.exec(uri);
  if (origin) uri = uri.slice(origin[0].length) || '/';
  const hash = uri.indexOf('#');
  if (hash >= 0) uri = uri.slice(0, hash);
  const q = uri.indexOf('?');
  if (q < 0) return { valid: false, reason: 'no_query', params: {} };
  const path = uri.slice(0, q);
  const pairs = uri.slice(q + 1).split('&');

  // As the official client: the first `hmac` pair is the signature, every other pair is signed.
  const at = pairs.findIndex((p) => p.split('=')[0] === 'hmac');
  const incoming = at >= 0 ? (pairs[at] ?? '').slice('hmac='.length) : '';
  if (at >= 0) pairs.splice(at, 1);
  const params: Record<string, string> = {};
  for (const pair of pairs) {
    if (!pair) continue;
    const eq = pair.indexOf('=');
    const key = decodeComponent(eq < 0 ? pair : pair.slice(0, eq));
    if (!(key in params)) params[key] = decodeComponent(eq < 0 ? '' : pair.slice(eq + 1));
  }
  if (at < 0 || !/^[0-9a-fA-F]{64}$/.test(incoming)) return { valid: false, reason: 'missing_hmac', params };

  const expected = Buffer.from(hmacHex(secretKey, `${path}?${byteSort(pairs).join('&')}`), 'hex');
  if (!timingSafeEqual(expected, Buffer.from(incoming, 'hex'))) return { valid: false, reason: 'bad_hmac', params };

  for (const name of opts.requiredParams ?? []) {
    if (!(name in params)) return { valid: false, reason: 'missing_param', params };
  }
  const skew = opts.maxTimestampSkewSeconds ?? null;
  if (skew !== null) {
    const ts = params.timestamp;
    const now = opts.now ? opts.now() : Date.now() / 1000;
    if (ts === undefined || !/^\d{1,12}$/.test(ts) || Math.abs(now - Number(ts)) > skew) return { valid: false, reason: 'timestamp_skew', params };
  }
  return { valid: true, params };
}
