/**
 * SBPS link-type fields in hash order, their types and their maximum lengths in Shift_JIS bytes, and
 * the check of one value against its definition. What SBPS refuses with error types 03/04/05/06 is
 * refused here first, so a merchant hears about a bad product name from kessai, not from error 09.
 */
import { jisX0208Problem, normaliseCommonOffenders, sjisByteLength } from '../common/sjis.js';

/**
 * N, X and M are the specification's own notations (seed 002). The specification types no URL, no
 * Base64 and no comma list, yet SBPS takes them (`https://…`, free_csv, `pay_method=docomo,auone`):
 * 'ascii' (printable single-byte ASCII including space) is kessai's name for those, UNCONFIRMED.
 * - N: digits 0–9.
 * - A: letters and digits (codes such as res_result).
 * - X: letters, digits, space and `* - _ @ .`; nothing else, not even full-width equivalents.
 * - M: JIS X 0208 (hiragana, katakana, full-width alphanumerics and symbols, kanji levels 1 and 2)
 *   plus the single-byte X characters; minus the eight exception characters below and every
 *   platform-dependent character.
 */
export type FieldType = 'N' | 'A' | 'X' | 'M' | 'ascii';

export interface FieldDef {
  readonly name: string;
  readonly type: FieldType;
  /** Maximum in Shift_JIS bytes (a full-width character counts 2), from `SBPS_LIMITS`. */
  readonly max: number;
  readonly required: boolean;
}

/**
 * Maximum lengths in Shift_JIS bytes. Only request_date (14), limit_second (4, a merchant DB schema)
 * and sps_hashcode (40) come from a source; the seed states that lengths are bytes but lists none, and
 * the interface specification that does is behind SBPS's merchant login. Every other number is
 * UNCONFIRMED: a conservative default, small enough that SBPS should not refuse what passes here.
 * Override per call with `limits: { item_name: 64 }` once a contract's specification says otherwise.
 */
export const SBPS_LIMITS = {
  pay_method: 1000,
  merchant_id: 5,
  service_id: 3,
  cust_code: 64,
  sps_cust_no: 12,
  sps_payment_no: 3,
  order_id: 38,
  item_id: 32,
  pay_item_id: 32,
  item_name: 40,
  tax: 8,
  amount: 8,
  pay_type: 1,
  auto_charge_type: 1,
  service_type: 1,
  div_settele: 1,
  last_charge_month: 6,
  camp_type: 1,
  tracking_id: 14,
  terminal_type: 1,
  success_url: 500,
  cancel_url: 500,
  error_url: 500,
  pagecon_url: 500,
  free1: 20,
  free2: 20,
  free3: 20,
  free_csv: 2000,
  dtl_rowno: 3,
  dtl_item_id: 32,
  dtl_item_name: 40,
  dtl_item_count: 6,
  dtl_tax: 8,
  dtl_amount: 8,
  dtl_free1: 20,
  dtl_free2: 20,
  dtl_free3: 20,
  request_date: 14,
  limit_second: 4,
  res_pay_method: 20,
  res_result: 2,
  res_tracking_id: 14,
  res_sps_cust_no: 12,
  res_sps_payment_no: 3,
  res_payinfo_key: 200,
  res_payment_date: 14,
  res_err_code: 8,
  res_date: 14,
  sps_hashcode: 40,
} as const;

export type SbpsLimitName = keyof typeof SBPS_LIMITS;
export type SbpsLimits = { readonly [K in SbpsLimitName]: number };

const def = (name: SbpsLimitName, type: FieldType, required = false): FieldDef => ({
  name,
  type,
  max: SBPS_LIMITS[name],
  required,
});

/** One detail row (`dtl_*`), repeated per row; rows may be left out entirely (seed 002). */
export const DETAIL_FIELDS: readonly FieldDef[] = [
  def('dtl_rowno', 'N', true),
  def('dtl_item_id', 'X', true),
  def('dtl_item_name', 'M'),
  def('dtl_item_count', 'N', true),
  def('dtl_tax', 'N'),
  def('dtl_amount', 'N', true),
  def('dtl_free1', 'M'),
  def('dtl_free2', 'M'),
  def('dtl_free3', 'M'),
];

/** Where the detail rows go in a definition list. */
export const DETAILS = 'details' as const;
export type FieldSlot = FieldDef | typeof DETAILS;

const HEAD: readonly FieldDef[] = [
  def('pay_method', 'ascii'), // empty: the customer picks on SBPS's screen
  def('merchant_id', 'N', true),
  def('service_id', 'N', true),
  def('cust_code', 'X', true),
  def('sps_cust_no', 'N'),
  def('sps_payment_no', 'N'),
  def('order_id', 'X', true),
  def('item_id', 'X', true),
  def('pay_item_id', 'X'),
  def('item_name', 'M', true), // required: UNCONFIRMED; every sample sets it
  def('tax', 'N'),
  def('amount', 'N', true),
  def('pay_type', 'N', true),
  def('auto_charge_type', 'N'),
  def('service_type', 'N', true),
  def('div_settele', 'N'),
  def('last_charge_month', 'N'),
  def('camp_type', 'N'),
  def('tracking_id', 'N'),
  def('terminal_type', 'N'),
];

/** Purchase request (A01-1): sbpayment.rb's key order, detail rows placed as in SBPS's JS sample. */
export const REQUEST_FIELDS: readonly FieldSlot[] = [
  ...HEAD,
  def('success_url', 'ascii', true),
  def('cancel_url', 'ascii', true),
  def('error_url', 'ascii', true),
  def('pagecon_url', 'ascii', true),
  def('free1', 'M'),
  def('free2', 'M'),
  def('free3', 'M'),
  def('free_csv', 'ascii'),
  DETAILS,
  def('request_date', 'N', true),
  def('limit_second', 'N'),
];

/**
 * Result CGI (A02-1), order VERIFIED against a captured notification. URLs and free_csv are not
 * echoed. Whether the detail rows are is UNCONFIRMED: the CakePHP implementation hashes them between
 * free3 and request_date, sbpayment.rb (verified) has none; `resultEchoesDetails` decides, default off.
 */
export const RESULT_FIELDS: readonly FieldSlot[] = [
  ...HEAD,
  def('free1', 'M'),
  def('free2', 'M'),
  def('free3', 'M'),
  DETAILS,
  def('request_date', 'N', true),
  def('res_pay_method', 'A'),
  def('res_result', 'A', true),
  def('res_tracking_id', 'N'),
  def('res_sps_cust_no', 'N'),
  def('res_sps_payment_no', 'N'),
  def('res_payinfo_key', 'ascii'),
  def('res_payment_date', 'N'),
  def('res_err_code', 'N'),
  def('res_date', 'N', true),
  def('limit_second', 'N'),
];

/** Return screen (A03-1): the same list; its `TOKEN` element is sent but not hashed. */
export const RETURN_FIELDS: readonly FieldSlot[] = RESULT_FIELDS;

export type MessageKind = 'request' | 'result' | 'return';

export interface DetailOptions {
  /** UNCONFIRMED whether SBPS echoes and hashes dtl_* in the result and return; default false. */
  resultEchoesDetails?: boolean;
}

/** The definition list for `kind`, with the detail slot only where it is hashed. */
export function fieldsFor(kind: MessageKind, opts: DetailOptions = {}): readonly FieldSlot[] {
  if (kind === 'request') return REQUEST_FIELDS;
  const list = kind === 'result' ? RESULT_FIELDS : RETURN_FIELDS;
  return opts.resultEchoesDetails === true ? list : list.filter((slot) => slot !== DETAILS);
}

/** Names of the request's own fields, as accepted by `buildPurchaseRequest`. */
export type RequestFieldName =
  | 'pay_method' | 'merchant_id' | 'service_id' | 'cust_code' | 'sps_cust_no' | 'sps_payment_no'
  | 'order_id' | 'item_id' | 'pay_item_id' | 'item_name' | 'tax' | 'amount' | 'pay_type'
  | 'auto_charge_type' | 'service_type' | 'div_settele' | 'last_charge_month' | 'camp_type'
  | 'tracking_id' | 'terminal_type' | 'success_url' | 'cancel_url' | 'error_url' | 'pagecon_url'
  | 'free1' | 'free2' | 'free3' | 'free_csv' | 'request_date' | 'limit_second';

/** SBPS's error type (the middle two digits of `res_err_code`) for each problem. */
export const SBPS_ERROR_TYPE = { required: '03', attribute: '04', length: '05', format: '06' } as const;
export type FieldProblem = keyof typeof SBPS_ERROR_TYPE;

/**
 * A value SBPS would refuse, named the way a merchant can fix it:
 * `item_name: "①" at position 3 is not allowed (platform-dependent character: NEC special character)`.
 * `position` counts code points from 1; `code` maps to SBPS's error type via `SBPS_ERROR_TYPE`.
 */
export class SbpsFieldError extends Error {
  override name = 'SbpsFieldError';
  readonly field: string;
  readonly reason: string;
  readonly code: FieldProblem;
  readonly char?: string;
  readonly position?: number;

  constructor(field: string, reason: string, detail: { code?: FieldProblem; char?: string; position?: number } = {}) {
    super(
      detail.char === undefined
        ? `${field}: ${reason}`
        : `${field}: ${JSON.stringify(detail.char)} at position ${detail.position ?? '?'} is not allowed (${reason})`,
    );
    this.field = field;
    this.reason = reason;
    this.code = detail.code ?? 'attribute';
    if (detail.char !== undefined) this.char = detail.char;
    if (detail.position !== undefined) this.position = detail.position;
  }
}

/**
 * The specification's eight exception characters in M fields, by JIS X 0208 row-cell. They are exactly
 * the cells whose Unicode mapping differs between the JIS and the CP932 tables, so whichever form is
 * written, the bytes are refused: ～ (CP932's U+FF5E) as well as 〜 (JIS's U+301C, not even in CP932).
 */
export const SBPS_EXCEPTION_CHARS: ReadonlyMap<string, string> = new Map([
  ['\u2015', 'JIS X 0208 1-29 dash'],
  ['\uFF3C', 'JIS X 0208 1-32 reverse solidus'],
  ['\uFF5E', 'JIS X 0208 1-33 wave dash'],
  ['\u2225', 'JIS X 0208 1-34 double vertical line'],
  ['\uFF0D', 'JIS X 0208 1-61 minus sign'],
  ['\uFFE0', 'JIS X 0208 1-81 cent sign'],
  ['\uFFE1', 'JIS X 0208 1-82 pound sign'],
  ['\uFFE2', 'JIS X 0208 2-44 not sign'],
]);

const X_CHAR = /[A-Za-z0-9*\-_@. ]/;
const X_CHARS = 'single-byte letters, digits, space and * - _ @ . only';

type CharRule = (ch: string) => string | undefined;

const CHAR_RULES: Record<FieldType, CharRule> = {
  N: (ch) => (/[0-9]/.test(ch) ? undefined : 'digits only'),
  A: (ch) => (/[A-Za-z0-9]/.test(ch) ? undefined : 'single-byte letters and digits only'),
  X: (ch) => (X_CHAR.test(ch) ? undefined : X_CHARS),
  ascii: (ch) => (/[\x20-\x7e]/.test(ch) ? undefined : 'printable single-byte ASCII only'),
  M: (ch) => {
    const problem = jisX0208Problem(ch);
    if (problem !== undefined) return problem;
    const exception = SBPS_EXCEPTION_CHARS.get(ch);
    if (exception !== undefined) return `SBPS exception character: ${exception}`;
    if (ch < '\x7f' && !X_CHAR.test(ch)) return `single-byte symbol; multi-byte fields take the ${X_CHARS}`;
    return undefined;
  },
};

/** Fixed-format fields, checked after their characters. */
const FORMATS: Readonly<Record<string, { pattern: RegExp; reason: string }>> = {
  request_date: { pattern: /^\d{14}$/, reason: 'must be YYYYMMDDHHMMSS (14 digits)' },
  last_charge_month: { pattern: /^\d{6}$/, reason: 'must be YYYYMM (6 digits)' },
  free_csv: { pattern: /^[A-Za-z0-9+/]*={0,2}$/, reason: 'must be Base64 (build it from freeCsv)' },
};

/** The first reason SBPS would refuse `value` for `field`, or undefined. */
export function checkField(field: FieldDef, value: string, limits: Partial<SbpsLimits> = {}, label = field.name): SbpsFieldError | undefined {
  if (value === '') return field.required ? new SbpsFieldError(label, 'is required', { code: 'required' }) : undefined;
  const rule = CHAR_RULES[field.type];
  let position = 0;
  for (const ch of value) {
    position++;
    const reason = rule(ch);
    if (reason !== undefined) return new SbpsFieldError(label, reason, { code: 'attribute', char: ch, position });
  }
  const format = FORMATS[field.name];
  if (format !== undefined && !format.pattern.test(value)) return new SbpsFieldError(label, format.reason, { code: 'format' });
  const max = limits[field.name as SbpsLimitName] ?? field.max;
  const bytes = sjisByteLength(value);
  if (bytes > max) {
    return new SbpsFieldError(label, `${bytes} bytes in Shift_JIS, at most ${max} allowed`, { code: 'length' });
  }
  return undefined;
}

/**
 * Where an exception character or a single-byte symbol has an honest JIS X 0208 stand-in. Dashes and
 * the minus become ‐ (1-30 HYPHEN), the wave dash becomes ー (1-28, the nearest allowed glyph). ＼ ∥ ￠ ￡ ￢
 * have no faithful stand-in and stay refused. ' and " widen to ’ ”, because ＇ ＂ are IBM extensions.
 */
const SBPS_STAND_INS: ReadonlyMap<string, string> = new Map([
  ['\u2015', '\u2010'],
  ['\uFF0D', '\u2010'],
  ['\uFF5E', '\u30FC'],
  ["'", '\u2019'],
  ['"', '\u201D'],
]);

/**
 * Opt-in rewrite of an M value into what SBPS accepts: `normaliseCommonOffenders` (〜 − ‖ ¢ £ ¬ — – ¥
 * to their CP932 forms), then single-byte symbols outside the X set to their full-width forms
 * (`(` → `（`; a full-width character takes 2 bytes), then the stand-ins above. Changes what the
 * customer sees, which is why it is opt-in.
 */
export function normaliseForSbps(value: string): string {
  let out = '';
  for (const ch of normaliseCommonOffenders(value)) {
    let next = ch;
    if (ch > ' ' && ch < '\x7f' && !X_CHAR.test(ch) && ch !== '\\') {
      next = SBPS_STAND_INS.get(ch) ?? String.fromCharCode(ch.charCodeAt(0) + 0xfee0);
    }
    out += SBPS_STAND_INS.get(next) ?? next;
  }
  return out;
}
