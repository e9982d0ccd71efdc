/**
 * `free_csv`: customer details for methods that need them (convenience store, Pay-easy, bank
 * transfer), sent as Base64 of `KEY=VALUE,KEY=VALUE`. No quoting exists, which is why SBPS forbids the
 * characters that would break the list.
 */
import { decodeSjis, encodeSjis, jisX0208Problem } from '../common/sjis.js';
import { SbpsFieldError } from './fields.js';

/** The keys the public samples send, in their order. */
export const FREE_CSV_KEYS = [
  'LAST_NAME',
  'FIRST_NAME',
  'LAST_NAME_KANA',
  'FIRST_NAME_KANA',
  'FIRST_ZIP',
  'SECOND_ZIP',
  'ADD1',
  'ADD2',
  'ADD3',
  'TEL',
  'MAIL',
  'ITEM_NAME',
] as const;

export type FreeCsvKey = (typeof FREE_CSV_KEYS)[number];
export type FreeCsvInput = { [K in FreeCsvKey]?: string };
export type FreeCsvEncoding = 'sjis' | 'utf8';

/**
 * Which bytes the Base64 is taken over: UNCONFIRMED, the public samples disagree (one encodes
 * UTF-8 via `encodeURIComponent`, SBPS's own uses an opaque `Base64.encode(str, 1)`). Default
 * Shift_JIS: the seed states the whole link system speaks Shift_JIS, sbpayment.rb types free_csv as
 * an M field, and its M fields are Base64 over Shift_JIS bytes wherever it Base64-encodes them.
 */
export const FREE_CSV_BASE64_OF: FreeCsvEncoding = 'sjis';

export interface FreeCsvOptions {
  base64Of?: FreeCsvEncoding;
}

// By Shift_JIS character, as sbpayment.rb's validator checks them (reference/gateways.md §1.2).
const FORBIDDEN = new Set([',', "'", '"', '%', '|', '&', '<', '>']);
const MAIL_CHAR = /[A-Za-z0-9@._-]/;
// UNCONFIRMED formats: a postcode split 3 + 4 as the key names say, a telephone number as digits.
const DIGIT_FORMATS: Partial<Record<FreeCsvKey, { pattern: RegExp; reason: string }>> = {
  FIRST_ZIP: { pattern: /^\d{3}$/, reason: 'must be the first 3 digits of the postcode' },
  SECOND_ZIP: { pattern: /^\d{4}$/, reason: 'must be the last 4 digits of the postcode' },
  TEL: { pattern: /^\d+$/, reason: 'must be digits only, without hyphens' },
};

/** Builds the free_csv value; throws `SbpsFieldError` naming `free_csv.<KEY>`, the character and its position. */
export function buildFreeCsv(input: FreeCsvInput, opts: FreeCsvOptions = {}): string {
  const known = new Set<string>(FREE_CSV_KEYS);
  for (const key of Object.keys(input)) {
    if (!known.has(key)) throw new SbpsFieldError(`free_csv.${key}`, `is not a free_csv key (${FREE_CSV_KEYS.join(', ')})`);
  }
  const items: string[] = [];
  for (const key of FREE_CSV_KEYS) {
    const value = input[key];
    if (value === undefined) continue;
    checkValue(key, value);
    items.push(`${key}=${value}`);
  }
  if (items.length === 0) return '';
  const text = items.join(',');
  const bytes = (opts.base64Of ?? FREE_CSV_BASE64_OF) === 'sjis' ? encodeSjis(text) : Buffer.from(text, 'utf8');
  return bytes.toString('base64');
}

function checkValue(key: string, value: string): void {
  const label = `free_csv.${key}`;
  let position = 0;
  for (const ch of value) {
    position++;
    const reason = charProblem(key, ch);
    if (reason !== undefined) throw new SbpsFieldError(label, reason, { code: 'attribute', char: ch, position });
  }
  const format = DIGIT_FORMATS[key as FreeCsvKey];
  if (value !== '' && format !== undefined && !format.pattern.test(value)) {
    throw new SbpsFieldError(label, format.reason, { code: 'format' });
  }
}

function charProblem(key: string, ch: string): string | undefined {
  if (key === 'MAIL') return MAIL_CHAR.test(ch) ? undefined : 'MAIL takes A-Z a-z 0-9 @ . _ - only';
  if (FORBIDDEN.has(ch)) return "free_csv values cannot contain , ' \" % | & < >";
  const cp = ch.codePointAt(0) ?? 0;
  if (cp >= 0xff61 && cp <= 0xff9f) return 'half-width katakana is not allowed in free_csv';
  // Names and addresses reach convenience-store and bank systems that know JIS X 0208 only (UNCONFIRMED
  // for SBPS itself; conservative). A customer named 髙橋 must be written 高橋 here.
  return jisX0208Problem(ch);
}

/**
 * The first problem SBPS would find in a free_csv value as received (the simulator's side): Base64
 * that is malformed (a length that is not a multiple of 4 too), an item that is not KEY=VALUE, or a
 * value with a character `buildFreeCsv` refuses. Keys outside the samples' list are not refused,
 * only their values checked: the list is what the samples send, not a definition.
 */
export function checkFreeCsv(value: string, opts: FreeCsvOptions = {}): SbpsFieldError | undefined {
  try {
    for (const [key, item] of Object.entries(parseFreeCsv(value, opts))) checkValue(key, item);
    return undefined;
  } catch (error) {
    if (error instanceof SbpsFieldError) return error;
    throw error;
  }
}

/** Reads a free_csv value back (the simulator's side). Unknown keys are kept; a later repeat wins. */
export function parseFreeCsv(value: string, opts: FreeCsvOptions = {}): Record<string, string> {
  if (value === '') return {};
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(value) || value.length % 4 !== 0) {
    throw new SbpsFieldError('free_csv', 'is not Base64', { code: 'format' });
  }
  const bytes = Buffer.from(value, 'base64');
  const text = (opts.base64Of ?? FREE_CSV_BASE64_OF) === 'sjis' ? decodeSjis(bytes) : bytes.toString('utf8');
  const out: Record<string, string> = {};
  for (const item of text.split(',')) {
    if (item === '') continue;
    const eq = item.indexOf('=');
    if (eq <= 0) throw new SbpsFieldError('free_csv', `item ${JSON.stringify(item)} is not KEY=VALUE`, { code: 'format' });
    Object.defineProperty(out, item.slice(0, eq), { value: item.slice(eq + 1), enumerable: true, writable: true, configurable: true });
  }
  return out;
}
