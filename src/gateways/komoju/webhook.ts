/**
 * KOMOJU webhooks (reference gateways.md §3.4): `X-Komoju-Signature` is the lowercase hex
 * HMAC-SHA256 of the raw request body, keyed with the webhook's secret token. The HMAC is over the
 * bytes as they arrived: JSON parsed and serialised again (key order, spacing, `\u` escapes) gives
 * other bytes and a signature that does not match, so verification must run before any JSON parser.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { rawBytes } from '../common/raw-body.js';

const WHY = 'the signature is over the original bytes, and serialising the object again does not give them back.';

/** Old and new secret while a webhook's secret is being rotated; more is a configuration mistake. */
export const MAX_WEBHOOK_SECRETS = 2;

const SIGNATURE = /^[0-9a-fA-F]{64}$/;

/** Lowercase hex HMAC-SHA256 of the raw body: the value KOMOJU sends in `X-Komoju-Signature`. */
export function computeKomojuSignature(rawBody: Buffer | Uint8Array | string, secret: string): string {
  if (typeof secret !== 'string' || !secret) throw new TypeError('computeKomojuSignature: the webhook secret must be a non-empty string');
  return createHmac('sha256', secret).update(rawBytes('computeKomojuSignature', rawBody, WHY)).digest('hex');
}

/**
 * True when `signature` (the `X-Komoju-Signature` header) is the HMAC of `rawBody` under one of
 * `secrets` (one, or two during rotation). A missing, repeated (array) or malformed header is false,
 * never an exception: it is what a forged request looks like. Comparison is constant-time, and every
 * secret is tried so that the time taken does not say which one matched.
 *
 * Throws TypeError for programming mistakes only: a parsed body, or no usable secret.
 */
export function verifyKomojuWebhook(rawBody: Buffer | Uint8Array | string, signature: string | readonly string[] | undefined, secrets: readonly string[]): boolean {
  const bytes = rawBytes('verifyKomojuWebhook', rawBody, WHY);
  if (!Array.isArray(secrets) || secrets.length === 0 || secrets.length > MAX_WEBHOOK_SECRETS) {
    throw new TypeError(`verifyKomojuWebhook: pass 1 or ${MAX_WEBHOOK_SECRETS} webhook secrets (the current one, and the previous one during rotation), got ${Array.isArray(secrets) ? secrets.length : typeof secrets}`);
  }
  for (const s of secrets) {
    // An empty key would make the "secret" known to everyone.
    if (typeof s !== 'string' || !s) throw new TypeError('verifyKomojuWebhook: a webhook secret is empty; check the configuration');
  }
  if (typeof signature !== 'string') return false;
  const trimmed = signature.trim();
  if (!SIGNATURE.test(trimmed)) return false;
  const given = Buffer.from(trimmed, 'hex');
  let ok = false;
  for (const secret of secrets) {
    const expected = createHmac('sha256', secret).update(bytes).digest();
    if (timingSafeEqual(expected, given)) ok = true;
  }
  return ok;
}

/** Event types named in KOMOJU's documentation (§3.4); others may arrive and must be accepted. */
export const KOMOJU_EVENT_TYPES = [
  'ping',
  'payment.authorized',
  'payment.captured',
  'payment.updated',
  'payment.expired',
  'payment.cancelled',
  'payment.refund.created',
  'payment.refunded',
  'payment.failed',
  'customer.created',
  'customer.updated',
  'customer.deleted',
  'subscription.created',
  'subscription.captured',
  'subscription.failed',
  'subscription.suspended',
  'subscription.deleted',
  'settlement.created',
  'payout.created',
  'submerchant.approved',
] as const;

export type KomojuEventType = (typeof KOMOJU_EVENT_TYPES)[number];

/** The webhook envelope. `data` is the resource (a payment object for `payment.*`). */
export interface KomojuEvent<D extends Record<string, unknown> = Record<string, unknown>> {
  id: string;
  /** A known type, or any other string KOMOJU may add later (answer those 2xx and ignore them). */
  type: KomojuEventType | (string & {});
  resource: string;
  data: D;
  /** ISO 8601; null when the delivery did not carry it. */
  created_at: string | null;
  reason?: string | null;
}

export class KomojuEventParseError extends Error {
  override name = 'KomojuEventParseError';
}

/**
 * Parses a webhook body (verify it first). Strict about what kessai acts on — `id` and `type` are
 * non-empty strings, `data` an object — and lenient about the rest: `data` defaults to `{}` (a
 * `ping` need not carry one), `resource` to "event".
 */
export function parseKomojuEvent(rawBody: Buffer | Uint8Array | string): KomojuEvent {
  const text = rawBytes('parseKomojuEvent', rawBody, WHY).toString('utf8');
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new KomojuEventParseError(`KOMOJU webhook body is not valid JSON (${(error as Error).message}); ${text.length} characters received`, { cause: error });
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new KomojuEventParseError(`KOMOJU webhook body must be a JSON object, got ${Array.isArray(parsed) ? 'an array' : parsed === null ? 'null' : typeof parsed}`);
  }
  const o = parsed as Record<string, unknown>;
  if (typeof o.id !== 'string' || !o.id) throw new KomojuEventParseError('KOMOJU webhook event has no "id" string');
  if (typeof o.type !== 'string' || !o.type) throw new KomojuEventParseError(`KOMOJU webhook event ${o.id} has no "type" string`);
  if (o.data !== undefined && o.data !== null && (typeof o.data !== 'object' || Array.isArray(o.data))) {
    throw new KomojuEventParseError(`KOMOJU webhook event ${o.id} (${o.type}): "data" must be an object`);
  }
  if (o.resource !== undefined && typeof o.resource !== 'string') throw new KomojuEventParseError(`KOMOJU webhook event ${o.id}: "resource" must be a string`);
  if (o.created_at !== undefined && o.created_at !== null && typeof o.created_at !== 'string') {
    throw new KomojuEventParseError(`KOMOJU webhook event ${o.id}: "created_at" must be a string`);
  }
  const event: KomojuEvent = {
    id: o.id,
    type: o.type,
    resource: typeof o.resource === 'string' ? o.resource : 'event',
    data: (o.data ?? {}) as Record<string, unknown>,
    created_at: typeof o.created_at === 'string' ? o.created_at : null,
  };
  if (o.reason === null || typeof o.reason === 'string') event.reason = o.reason;
  return event;
}
