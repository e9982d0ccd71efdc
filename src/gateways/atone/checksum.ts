/*
 * The checksum of the modal's payment object (reference gateways.md §2.3, VERIFIED against NP's documented
 * example): Base64 of the raw SHA-256 digest of
 *
 *     <shop secret key> + "," + <the values of the object, keys sorted at every level, concatenated>
 *
 * over UTF-8. It is a plain hash with the secret as a prefix, not an HMAC (seed 000 calls it one; every
 * implementation and NP's worked example say otherwise). Values only, no separators; booleans as
 * true/false, numbers in decimal; arrays flattened element by element. Characters are hashed exactly as
 * given: NP's example contains U+2F42 (⽂), and normalising it away breaks the match.
 *
 * Which top-level keys take part is UNCONFIRMED (§2.3, §5): two of three implementations leave out
 * `shop_transaction_no` and `transaction_options` (and `return_url`), NP's example has no
 * shop_transaction_no at all. That set is the default and an option; `checksum` itself is always left out.
 * null and undefined values are skipped (the reference recommends not sending them).
 */
import { createHash, timingSafeEqual } from 'node:crypto';

export const DEFAULT_ATONE_CHECKSUM_EXCLUDED_KEYS: readonly string[] = Object.freeze(['shop_transaction_no', 'transaction_options', 'return_url']);

export interface AtoneChecksumOptions {
  /** Top-level keys left out of the checksum (besides `checksum`). Default DEFAULT_ATONE_CHECKSUM_EXCLUDED_KEYS. */
  excludedKeys?: readonly string[];
}

/** The values of `value` in checksum order: keys sorted (UTF-16 order, as JS sort and PHP ksort give for ASCII keys). */
export function atoneChecksumValues(value: unknown, excludedTopLevel: ReadonlySet<string> = new Set()): string {
  let out = '';
  const walk = (v: unknown, top: boolean): void => {
    if (v === null || v === undefined) return;
    if (typeof v === 'string') {
      out += v;
    } else if (typeof v === 'number') {
      if (!Number.isFinite(v)) throw new TypeError(`atone checksum: ${v} is not a number atone can take`);
      out += String(v);
    } else if (typeof v === 'boolean') {
      out += v ? 'true' : 'false';
    } else if (Array.isArray(v)) {
      for (const e of v) walk(e, false);
    } else if (typeof v === 'object') {
      const o = v as Record<string, unknown>;
      for (const key of Object.keys(o).sort()) {
        if (top && excludedTopLevel.has(key)) continue;
        walk(o[key], false);
      }
    } else {
      throw new TypeError(`atone checksum: a ${typeof v} cannot be part of a payment object`);
    }
  };
  walk(value, true);
  return out;
}

function excluded(opts: AtoneChecksumOptions): Set<string> {
  const keys = new Set(opts.excludedKeys ?? DEFAULT_ATONE_CHECKSUM_EXCLUDED_KEYS);
  keys.add('checksum');
  return keys;
}

function checkSecret(fn: string, secretKey: unknown): asserts secretKey is string {
  if (typeof secretKey !== 'string' || !secretKey) throw new TypeError(`${fn}: the shop secret key (店舗秘密鍵) must be a non-empty string`);
}

/** The string that is hashed: secret, comma, values. For debugging a mismatch with atone's answer. */
export function atoneChecksumPreimage(payment: object, secretKey: string, opts: AtoneChecksumOptions = {}): string {
  checkSecret('atoneChecksumPreimage', secretKey);
  if (typeof payment !== 'object' || payment === null || Array.isArray(payment)) throw new TypeError('atoneChecksumPreimage: the payment must be an object');
  return `${secretKey},${atoneChecksumValues(payment, excluded(opts))}`;
}

/** The `checksum` field for `payment` (any `checksum` already in it is ignored). */
export function atoneChecksum(payment: object, secretKey: string, opts: AtoneChecksumOptions = {}): string {
  return createHash('sha256').update(atoneChecksumPreimage(payment, secretKey, opts), 'utf8').digest('base64');
}

/**
 * True when `payment.checksum` is the checksum of the rest of `payment` (constant-time). A missing or
 * malformed checksum is false, never an exception.
 */
export function verifyAtoneChecksum(payment: unknown, secretKey: string, opts: AtoneChecksumOptions = {}): boolean {
  checkSecret('verifyAtoneChecksum', secretKey);
  if (typeof payment !== 'object' || payment === null || Array.isArray(payment)) return false;
  const given = (payment as { checksum?: unknown }).checksum;
  if (typeof given !== 'string' || !/^[A-Za-z0-9+/]{43}=$/.test(given)) return false;
  let expected: Buffer;
  try {
    expected = createHash('sha256').update(atoneChecksumPreimage(payment, secretKey, opts), 'utf8').digest();
  } catch {
    return false; // a value no checksum can be built over (a function, NaN …)
  }
  return timingSafeEqual(expected, Buffer.from(given, 'base64'));
}
