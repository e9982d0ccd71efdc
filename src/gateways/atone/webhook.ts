/*
 * atone webhooks (reference gateways.md §2.4): the 決済Webhook (authorization OK / NG) and the 認証Webhook
 * (a member authenticated in the modal). Their body shape and the `Np-Confirmation-Checksum` header are
 * UNCONFIRMED: no public source describes how the header is built (NP's sister product AFTEE sends an
 * `Aftee-Confirmation-Checksum`, algorithm unknown, §5). So:
 *
 * 1. The header is checked only when the shop configured it, with a NAMED construction (`scheme`):
 *    - 'sorted-values' (default): Base64(SHA-256(secret + "," + the values of the JSON body, keys sorted at
 *      every level)) — the payment checksum's algorithm (VERIFIED, §2.3) applied to the body, the guess the
 *      reference calls most plausible. Nothing is left out by default (`excludedKeys`).
 *    - 'raw-body': Base64(SHA-256(secret + "," + the raw body bytes)).
 *    - 'hmac-raw-body': Base64(HMAC-SHA256(secret, raw body)) — what seed 000 calls it.
 *    Comparison is constant-time; a missing or malformed header is simply "not verified".
 * 2. Whatever the header says, the facts come from 取引参照: `readBackAtoneTransaction` takes the
 *    notification only for its transaction id and answers with what atone's API says. NP's own guidance
 *    (§2.4) is to check the 決済成功 webhook against the shop's order and refund on mismatch:
 *    `atoneConsistencyProblems` lists the differences.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { atoneChecksumValues } from './checksum.js';
import type { AtoneApi } from './client.js';
import { ATONE_TOKEN, ATONE_TRANSACTION_ID, type AtoneTransaction } from './transaction.js';
import { atoneInteger, type AtoneItem } from './payment.js';
import { rawBytes } from '../common/raw-body.js';

const WHY = 'two of the checksum constructions are over the original bytes.';

export const ATONE_WEBHOOK_CHECKSUM_HEADER = 'np-confirmation-checksum';

export type AtoneWebhookChecksumScheme = 'sorted-values' | 'raw-body' | 'hmac-raw-body';
export const DEFAULT_ATONE_WEBHOOK_CHECKSUM_SCHEME: AtoneWebhookChecksumScheme = 'sorted-values';

export interface AtoneWebhookChecksumOptions {
  /** Default 'sorted-values' (see the top: the construction is UNCONFIRMED). */
  scheme?: AtoneWebhookChecksumScheme;
  /** 'sorted-values' only: top-level keys of the body left out. Default none. */
  excludedKeys?: readonly string[];
}

export class AtoneWebhookParseError extends Error {
  override name = 'AtoneWebhookParseError';
}

function parseObject(bytes: Buffer): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(bytes.toString('utf8'));
  } catch (error) {
    throw new AtoneWebhookParseError(`atone webhook body is not valid JSON (${(error as Error).message}); ${bytes.length} bytes received`, { cause: error });
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new AtoneWebhookParseError(`atone webhook body must be a JSON object, got ${Array.isArray(parsed) ? 'an array' : parsed === null ? 'null' : typeof parsed}`);
  }
  return parsed as Record<string, unknown>;
}

function digest(bytes: Buffer, secretKey: string, opts: AtoneWebhookChecksumOptions): Buffer {
  const scheme = opts.scheme ?? DEFAULT_ATONE_WEBHOOK_CHECKSUM_SCHEME;
  switch (scheme) {
    case 'sorted-values': {
      const values = atoneChecksumValues(parseObject(bytes), new Set(opts.excludedKeys ?? []));
      return createHash('sha256').update(`${secretKey},${values}`, 'utf8').digest();
    }
    case 'raw-body':
      return createHash('sha256').update(`${secretKey},`, 'utf8').update(bytes).digest();
    case 'hmac-raw-body':
      return createHmac('sha256', secretKey).update(bytes).digest();
    default:
      throw new TypeError(`unknown atone webhook checksum scheme ${JSON.stringify(scheme)}: use 'sorted-values', 'raw-body' or 'hmac-raw-body'`);
  }
}

function checkSecret(fn: string, secretKey: unknown): asserts secretKey is string {
  if (typeof secretKey !== 'string' || !secretKey) throw new TypeError(`${fn}: the shop secret key (店舗秘密鍵) must be a non-empty string; check the configuration`);
}

/** The `Np-Confirmation-Checksum` value for a body under the chosen construction (what the sandbox sends). */
export function computeAtoneWebhookChecksum(rawBody: Buffer | Uint8Array | string, secretKey: string, opts: AtoneWebhookChecksumOptions = {}): string {
  checkSecret('computeAtoneWebhookChecksum', secretKey);
  return digest(rawBytes('computeAtoneWebhookChecksum', rawBody, WHY), secretKey, opts).toString('base64');
}

/**
 * True when `header` (the `Np-Confirmation-Checksum` value) matches the raw body under `opts.scheme`.
 * A missing, repeated or malformed header — or a body the scheme cannot read — is false, never an
 * exception: that is what a forged request looks like. Even true is only "sent by someone who knows the
 * secret": act on the transaction read back with readBackAtoneTransaction.
 *
 * Throws TypeError for programming mistakes only: parsed JSON instead of the raw body, no secret.
 */
export function verifyAtoneWebhook(rawBody: Buffer | Uint8Array | string, header: string | readonly string[] | undefined, secretKey: string, opts: AtoneWebhookChecksumOptions = {}): boolean {
  const bytes = rawBytes('verifyAtoneWebhook', rawBody, WHY);
  checkSecret('verifyAtoneWebhook', secretKey);
  if (typeof header !== 'string') return false;
  const trimmed = header.trim();
  if (!/^[A-Za-z0-9+/]{43}=$/.test(trimmed)) return false;
  let expected: Buffer;
  try {
    expected = digest(bytes, secretKey, opts);
  } catch (error) {
    if (error instanceof AtoneWebhookParseError) return false;
    throw error;
  }
  return timingSafeEqual(expected, Buffer.from(trimmed, 'base64'));
}

/** What a webhook says it is about. Untrusted: use it to know what to read back, nothing more. */
export interface AtoneWebhookClaim {
  /** `tr_…` when the body names a transaction (the 決済Webhook). */
  transactionId: string | null;
  /** `tk_…` when the body carries a member's token (both kinds may). */
  authenticationToken: string | null;
  userNo: string | null;
  shopTransactionNo: string | null;
  body: Record<string, unknown>;
}

/** Reads a webhook body leniently (its shape is UNCONFIRMED): the ids it names, and the whole object. */
export function parseAtoneWebhook(rawBody: Buffer | Uint8Array | string): AtoneWebhookClaim {
  const body = parseObject(rawBytes('parseAtoneWebhook', rawBody, WHY));
  const str = (v: unknown): string | null => (typeof v === 'string' && v ? v : typeof v === 'number' ? String(v) : null);
  const id = str(body.id);
  const token = str(body.authentication_token);
  return {
    transactionId: id !== null && ATONE_TRANSACTION_ID.test(id) ? id : null,
    authenticationToken: token !== null && ATONE_TOKEN.test(token) ? token : null,
    userNo: str(body.user_no),
    shopTransactionNo: str(body.shop_transaction_no),
    body,
  };
}

/**
 * THE rule for every atone notification and browser callback: read the transaction back through
 * 取引参照 and trust only that answer. `notification` is the raw webhook body, its parsed claim, the
 * `succeeded` callback's `{id}` or a bare `tr_…` id; only the id is taken from it. Throws
 * AtoneWebhookParseError when it names no transaction, and the client's errors when atone cannot answer
 * (then answer the webhook with a 5xx so that it is sent again).
 */
export async function readBackAtoneTransaction(api: Pick<AtoneApi, 'reference'>, notification: Buffer | Uint8Array | string | AtoneWebhookClaim | { id?: unknown }): Promise<AtoneTransaction> {
  let id: string | null;
  if (typeof notification === 'string' && ATONE_TRANSACTION_ID.test(notification)) id = notification;
  else if (typeof notification === 'string' || notification instanceof Uint8Array) id = parseAtoneWebhook(notification).transactionId;
  else if ('transactionId' in notification) id = notification.transactionId;
  else id = typeof notification.id === 'string' && ATONE_TRANSACTION_ID.test(notification.id) ? notification.id : null;
  if (!id) throw new AtoneWebhookParseError('the atone notification names no transaction (no "id" like tr_…): nothing to read back');
  const transaction = await api.reference(id);
  if (transaction.id !== id) throw new AtoneWebhookParseError(`atone answered transaction ${String(transaction.id)} when ${id} was asked for`);
  return transaction;
}

/** What the shop's attempt says the transaction must be. */
export interface AtoneExpectation {
  amount: number;
  shop_transaction_no: string;
  /** Compared as a multiset of (shop_item_id, item_price, item_count) when given. */
  items?: readonly Pick<AtoneItem, 'shop_item_id' | 'item_price' | 'item_count'>[];
}

/**
 * Differences between a transaction read back from atone and the shop's attempt; empty when they agree.
 * A declined transaction is not a mismatch (check atoneTransactionState for that).
 */
export function atoneConsistencyProblems(t: AtoneTransaction, expected: AtoneExpectation): string[] {
  const problems: string[] = [];
  if (atoneInteger(t.amount) !== expected.amount) problems.push(`amount is ${String(t.amount)} at atone, ${expected.amount} in the shop`);
  if (String(t.shop_transaction_no) !== expected.shop_transaction_no) problems.push(`shop_transaction_no is ${String(t.shop_transaction_no)} at atone, ${expected.shop_transaction_no} in the shop`);
  if (expected.items) {
    const key = (i: { shop_item_id: unknown; item_price: unknown; item_count: unknown }): string => `${String(i.shop_item_id)} × ${String(atoneInteger(i.item_count))} @ ${String(atoneInteger(i.item_price))}`;
    const theirs = Array.isArray(t.items) ? t.items.map(key).sort() : [];
    const ours = expected.items.map(key).sort();
    if (theirs.join('\n') !== ours.join('\n')) problems.push(`items differ: atone has [${theirs.join('; ')}], the shop [${ours.join('; ')}]`);
  }
  return problems;
}
