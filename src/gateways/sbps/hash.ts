/**
 * `sps_hashcode`: SHA-1 over the trimmed field values in definition order with the hash key appended.
 * The algorithm is the same everywhere; only the bytes the text is turned into differ per message.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { encodeSjis } from '../common/sjis.js';

export type HashKind = 'request' | 'result' | 'return' | 'xml';

/**
 * The one place the hash byte encoding is decided (reference/gateways.md §1.3):
 * - request: UTF-8. The SBPS specification (seed 002: "convert the result to UTF-8 and use the SHA-1
 *   algorithm"), sbpayment.rb `PurchaseRequest#generate_sps_hashcode(encoding: 'UTF-8')` and SBPS's own
 *   JS sample agree.
 * - result (result CGI to pagecon_url): UTF-8, although the body travels as Shift_JIS. VERIFIED against
 *   a captured SBPS notification (sbpayment.rb purchase_report_spec): UTF-8 gives the posted hash,
 *   Shift_JIS does not.
 * - return (browser back to success/cancel/error URL): Shift_JIS. The seed says so ("the checksum for
 *   the purchase result (return screen) … is created using Shift_JIS"), as do sbpayment.rb
 *   `PurchaseResult` and the CakePHP implementation; no captured sample, so partly UNCONFIRMED.
 * - xml (XML API requests): Shift_JIS, per sbpayment.rb and the CakePHP implementation.
 */
export const HASH_ENCODING = { request: 'utf8', result: 'utf8', return: 'sjis', xml: 'sjis' } as const;

// Ruby's String#strip (what sbpayment.rb uses): ASCII whitespace and NUL at either end. A full-width
// space U+3000 is content, not padding.
const PADDING = /^[\0\t\n\v\f\r ]+|[\0\t\n\v\f\r ]+$/g;

/** The characters of PADDING, by code: NUL, TAB to CR, space. */
const isPadding = (code: number): boolean => code === 0x20 || code === 0 || (code >= 0x09 && code <= 0x0d);

/** A value as SBPS hashes it. Most values have no padding; they are checked without a regular expression. */
export function trimForHash(value: string): string {
  if (value.length === 0 || (!isPadding(value.charCodeAt(0)) && !isPadding(value.charCodeAt(value.length - 1)))) return value;
  return value.replace(PADDING, '');
}

/** The hashed text without the key: trimmed values joined with nothing between them. */
export function concatForHash(values: readonly string[]): string {
  return values.map(trimForHash).join('');
}

/** Lowercase hex SHA-1 of `concat(values) + hashKey` in the bytes `kind` requires. */
export function sbpsHash(kind: HashKind, values: readonly string[], hashKey: string): string {
  return sbpsHashOfText(kind, concatForHash(values) + hashKey);
}

/** The same hash of a text already concatenated with the key (`concatForHash(values) + hashKey`). */
export function sbpsHashOfText(kind: HashKind, text: string): string {
  const hash = createHash('sha1');
  return (HASH_ENCODING[kind] === 'sjis' ? hash.update(encodeSjis(text)) : hash.update(text, 'utf8')).digest('hex');
}

/**
 * Case-insensitive (SBPS sends uppercase hex, merchants compute lowercase) and constant-time. A hash
 * of another length is refused after the same amount of work, so the timing says nothing about it.
 */
export function hashesMatch(a: string, b: string): boolean {
  const left = Buffer.from(a.trim().toLowerCase(), 'utf8');
  const right = Buffer.from(b.trim().toLowerCase(), 'utf8');
  if (left.length !== right.length) {
    timingSafeEqual(left, left);
    return false;
  }
  return timingSafeEqual(left, right);
}
