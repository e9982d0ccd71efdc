/**
 * SBPS link-type messages as both sides see them: the merchant builds the purchase request and
 * verifies the result CGI and the return screen; the sandbox does the opposite with the same code.
 * Values travel as urlencoded Shift_JIS in any field order; the hash is over them in definition order.
 */
import { parseSjisUrlEncoded, SjisError, sjisUrlEncode, toFullWidthKatakana } from '../common/sjis.js';
import {
  checkField,
  DETAIL_FIELDS,
  DETAILS,
  fieldsFor,
  normaliseForSbps,
  REQUEST_FIELDS,
  RESULT_FIELDS,
  SbpsFieldError,
  type DetailOptions,
  type FieldDef,
  type MessageKind,
  type RequestFieldName,
  type SbpsLimits,
} from './fields.js';
import { buildFreeCsv, checkFreeCsv, type FreeCsvEncoding, type FreeCsvInput } from './free-csv.js';
import { concatForHash, hashesMatch, sbpsHash, sbpsHashOfText, trimForHash } from './hash.js';

export { SbpsFieldError };

export interface DetailRow {
  dtl_rowno: string;
  dtl_item_id: string;
  dtl_item_name: string;
  dtl_item_count: string;
  dtl_tax: string;
  dtl_amount: string;
  dtl_free1: string;
  dtl_free2: string;
  dtl_free3: string;
}

export type DetailKey = keyof DetailRow;
export const DETAIL_KEYS: readonly DetailKey[] = DETAIL_FIELDS.map((d) => d.name as DetailKey);

/** A message without its hash: named single fields, and the detail rows in posted order. */
export interface SbpsMessage {
  fields: Record<string, string>;
  details: DetailRow[];
}

export type PurchaseRequestInput = { [K in RequestFieldName]?: string } & {
  /** Rows without `dtl_rowno` are numbered 1, 2, … in the order given. */
  details?: Partial<DetailRow>[];
  /** Built into `free_csv`; give this or `free_csv`, not both. */
  freeCsv?: FreeCsvInput;
};

export interface PurchaseRequestOptions {
  hashKey: string;
  /** Rewrite common offenders in M fields instead of refusing them (see `normaliseForSbps`). */
  normalise?: boolean;
  /** Overrides of the UNCONFIRMED maxima in `SBPS_LIMITS`. */
  limits?: Partial<SbpsLimits>;
  freeCsvBase64Of?: FreeCsvEncoding;
}

const REQUEST_DEFS: readonly FieldDef[] = REQUEST_FIELDS.filter((slot): slot is FieldDef => slot !== DETAILS);
const DETAIL_KEY_SET: ReadonlySet<string> = new Set(DETAIL_KEYS);

/** Every single field SBPS defines, in definition order: parsed fields are laid out in this order. */
const FIELD_ORDER: readonly string[] = [...new Set([...REQUEST_FIELDS, ...RESULT_FIELDS].filter((slot): slot is FieldDef => slot !== DETAILS).map((d) => d.name))];

/**
 * The purchase request as it will be sent, before hashing: every value trimmed, half-width katakana
 * in M fields made full width (SBPS does the same on its side, and the hash must be over what it
 * hashes), optionally normalised, then validated. Throws the first `SbpsFieldError` in field order.
 */
export function preparePurchaseRequest(input: PurchaseRequestInput, opts: Omit<PurchaseRequestOptions, 'hashKey'> = {}): SbpsMessage {
  const known = new Set(REQUEST_DEFS.map((d) => d.name));
  for (const key of Object.keys(input)) {
    if (key === 'details' || key === 'freeCsv' || known.has(key)) continue;
    const hint = /hash_?key/i.test(key) ? ' (the hash key is never sent to SBPS)' : '';
    throw new SbpsFieldError(key, `is not a purchase request field${hint}`);
  }
  if (input.freeCsv !== undefined && (input.free_csv ?? '') !== '') {
    throw new SbpsFieldError('free_csv', 'given twice: pass either free_csv or freeCsv');
  }
  const normalise = opts.normalise === true;
  const fields: Record<string, string> = {};
  for (const def of REQUEST_DEFS) {
    const raw =
      def.name === 'free_csv' && input.freeCsv !== undefined
        ? buildFreeCsv(input.freeCsv, opts.freeCsvBase64Of === undefined ? {} : { base64Of: opts.freeCsvBase64Of })
        : input[def.name as RequestFieldName];
    fields[def.name] = prepareValue(def, raw, def.name, normalise);
  }
  const details = (input.details ?? []).map((row, i) => {
    for (const key of Object.keys(row)) {
      if (!DETAIL_KEY_SET.has(key)) throw new SbpsFieldError(`${key}[${i + 1}]`, 'is not a detail row field');
    }
    const out = {} as DetailRow;
    for (const def of DETAIL_FIELDS) {
      const key = def.name as DetailKey;
      const given = row[key];
      const raw = key === 'dtl_rowno' && (given ?? '') === '' ? String(i + 1) : given;
      out[key] = prepareValue(def, raw, `${key}[${i + 1}]`, normalise);
    }
    return out;
  });
  const message = { fields, details };
  const [first] = validateMessage('request', message, { ...(opts.limits === undefined ? {} : { limits: opts.limits }), ...(opts.freeCsvBase64Of === undefined ? {} : { freeCsvBase64Of: opts.freeCsvBase64Of }) });
  if (first !== undefined) throw first;
  return message;
}

function prepareValue(def: FieldDef, raw: unknown, label: string, normalise: boolean): string {
  if (raw === undefined || raw === null) return '';
  if (typeof raw !== 'string') throw new SbpsFieldError(label, `must be a string, got ${typeof raw}`);
  let value = trimForHash(raw);
  if (def.type === 'M') {
    value = toFullWidthKatakana(value);
    if (normalise) value = normaliseForSbps(value);
  }
  return value;
}

/**
 * Every problem SBPS would report for `msg` as a `kind` message, in field order (the sandbox's check).
 * A defined field missing from `msg.fields` altogether is a problem of its own: the seed says tag
 * elements must not be removed even when unset (only detail rows may be). A free_csv is decoded and
 * its items checked (`checkFreeCsv`, over `freeCsvBase64Of`, default `FREE_CSV_BASE64_OF`).
 */
export function validateMessage(
  kind: MessageKind,
  msg: SbpsMessage,
  opts: DetailOptions & { limits?: Partial<SbpsLimits>; freeCsvBase64Of?: FreeCsvEncoding } = {},
): SbpsFieldError[] {
  const errors: SbpsFieldError[] = [];
  const add = (error: SbpsFieldError | undefined): void => {
    if (error !== undefined) errors.push(error);
  };
  for (const slot of fieldsFor(kind, opts)) {
    if (slot === DETAILS) {
      msg.details.forEach((row, i) => {
        for (const def of DETAIL_FIELDS) add(checkField(def, row[def.name as DetailKey] ?? '', opts.limits, `${def.name}[${i + 1}]`));
      });
    } else if (!Object.hasOwn(msg.fields, slot.name)) {
      add(new SbpsFieldError(slot.name, 'the element is missing: every field is sent, blank when unset (only detail rows may be left out)', { code: 'required' }));
    } else {
      const value = msg.fields[slot.name] ?? '';
      const problem = checkField(slot, value, opts.limits);
      add(problem ?? (slot.name === 'free_csv' && value !== '' ? checkFreeCsv(value, opts.freeCsvBase64Of === undefined ? {} : { base64Of: opts.freeCsvBase64Of }) : undefined));
    }
  }
  return errors;
}

/**
 * The purchase request form: every field in definition order (unset ones blank: the seed requires
 * every tag element), the detail rows where they belong, then `sps_hashcode`. Never the hash key.
 */
export function buildPurchaseRequest(input: PurchaseRequestInput, opts: PurchaseRequestOptions): [string, string][] {
  const { hashKey, ...rest } = opts;
  const message = preparePurchaseRequest(input, rest);
  const entries = orderedEntries('request', message);
  return [...entries, ['sps_hashcode', sbpsHash('request', entries.map(([, v]) => v), hashKey)]];
}

/** Name and value pairs in hash order, detail rows expanded row by row. */
export function orderedEntries(kind: MessageKind, msg: SbpsMessage, opts: DetailOptions = {}): [string, string][] {
  const out: [string, string][] = [];
  for (const slot of fieldsFor(kind, opts)) {
    if (slot === DETAILS) {
      for (const row of msg.details) for (const key of DETAIL_KEYS) out.push([key, row[key] ?? '']);
    } else {
      out.push([slot.name, msg.fields[slot.name] ?? '']);
    }
  }
  return out;
}

/** Values in hash order: what both the sender and the receiver feed to `sbpsHash`. */
export function orderedValues(kind: MessageKind, msg: SbpsMessage, opts: DetailOptions = {}): string[] {
  return orderedEntries(kind, msg, opts).map(([, value]) => value);
}

/**
 * Decodes a body as SBPS or a browser posts it: urlencoded Shift_JIS, fields in any order.
 * Detail rows: the n-th occurrence of each dtl_* name belongs to row n, so rows keep the order in
 * which they were posted. They are not re-sorted by dtl_rowno: the sender hashed them in posted order,
 * and a sort would break the hash whenever the two differ. A dtl_* name that is missing altogether is
 * blank in every row (the seed's own example leaves out dtl_free1–3).
 * Throws `SbpsFieldError` (code 'format') when the body is ambiguous: a single field sent twice, or
 * dtl_* names repeated unequal numbers of times. Those are refused rather than guessed at, because a
 * verifier that reads the first copy and an application that reads the last could disagree.
 */
export function parseMessage(body: Buffer): { message: SbpsMessage; hash: string } {
  const single = new Map<string, string>();
  const repeated = new Map<DetailKey, string[]>();
  let hash: string | undefined;
  for (const [name, value] of parseSjisUrlEncoded(body)) {
    if (DETAIL_KEY_SET.has(name)) {
      const key = name as DetailKey;
      const list = repeated.get(key) ?? [];
      list.push(value);
      repeated.set(key, list);
    } else if (name === 'sps_hashcode') {
      if (hash !== undefined) throw new SbpsFieldError(name, 'sent more than once', { code: 'format' });
      hash = value;
    } else {
      if (single.has(name)) throw new SbpsFieldError(name, 'sent more than once', { code: 'format' });
      single.set(name, value);
    }
  }
  const counts = [...repeated.entries()].map(([key, list]) => [key, list.length] as const);
  const rows = Math.max(0, ...counts.map(([, n]) => n));
  const uneven = counts.filter(([, n]) => n !== rows);
  if (uneven.length > 0) {
    const detail = counts.map(([key, n]) => `${key} ×${n}`).join(', ');
    throw new SbpsFieldError(uneven[0]?.[0] ?? 'dtl_rowno', `detail rows do not line up (${detail})`, { code: 'format' });
  }
  const details: DetailRow[] = [];
  for (let i = 0; i < rows; i++) {
    const row = {} as DetailRow;
    for (const key of DETAIL_KEYS) row[key] = repeated.get(key)?.[i] ?? '';
    details.push(row);
  }
  return { message: { fields: inFieldOrder(single), details }, hash: hash ?? '' };
}

/**
 * The fields as an object whose keys are in definition order, whatever order they came in. SBPS
 * sends them in any order, and V8 gives an object built in a new key order a new shape: building it
 * in arrival order took most of the time of verifying a result notification (docs/benchmarks.md §3).
 * Names SBPS does not define (TOKEN on the return screen) follow in arrival order.
 */
function inFieldOrder(single: ReadonlyMap<string, string>): Record<string, string> {
  const fields: Record<string, string> = {};
  let placed = 0;
  for (const name of FIELD_ORDER) {
    const value = single.get(name);
    if (value === undefined) continue;
    fields[name] = value;
    placed += 1;
  }
  if (placed < single.size) {
    for (const [name, value] of single) {
      // defineProperty, not assignment: a field named __proto__ must stay a field.
      if (!Object.hasOwn(fields, name)) Object.defineProperty(fields, name, { value, enumerable: true, writable: true, configurable: true });
    }
  }
  return fields;
}

export interface VerifyResult {
  valid: boolean;
  /** Lowercase hex computed here; empty when the values cannot be put in the required bytes. */
  expected: string;
  /** As received, case untouched; empty when the body has no sps_hashcode. */
  received: string;
  /** The hashed text: trimmed values in order with the hash key appended. Secret: mask before showing. */
  concatenated: string;
  message: SbpsMessage;
  /** Hash order, as used. */
  fields: [string, string][];
  /** Names present in the body that took no part in the hash (TOKEN on the return screen, …). */
  unhashed: string[];
  /** Why no hash could be computed, when `expected` is empty. */
  problem?: string;
}

/**
 * Checks the hash of a raw body. Pass the bytes exactly as received: re-encoding parsed values can
 * change them (the wave dash that is ～ on one table and 〜 on another). Throws `SbpsFieldError` for a
 * malformed body (see `parseMessage`); answers `valid: false` for anything merely wrong.
 */
export function verifyMessage(kind: MessageKind, body: Buffer, hashKey: string, opts: DetailOptions = {}): VerifyResult {
  if (!Buffer.isBuffer(body)) {
    throw new TypeError('verifyMessage needs the raw request body as a Buffer (urlencoded Shift_JIS), not parsed fields');
  }
  const { message, hash } = parseMessage(body);
  const fields = orderedEntries(kind, message, opts);
  const values = fields.map(([, v]) => v);
  const hashed = new Set(fields.map(([name]) => name));
  const unhashed = Object.keys(message.fields).filter((name) => !hashed.has(name));
  if (message.details.length > 0 && !hashed.has('dtl_rowno')) unhashed.push(...DETAIL_KEYS);
  const concatenated = concatForHash(values) + hashKey;
  const base = { received: hash, concatenated, message, fields, unhashed };
  try {
    const expected = sbpsHashOfText(kind, concatenated);
    return { ...base, valid: hash !== '' && hashesMatch(expected, hash), expected };
  } catch (error) {
    if (!(error instanceof SjisError)) throw error;
    return { ...base, valid: false, expected: '', problem: error.message };
  }
}

export interface EncodeOptions extends DetailOptions {
  /** A source of numbers in [0, 1) such as Math.random: fields go out in random order, as SBPS sends them. */
  shuffle?: () => number;
  /** SBPS sends its hash in uppercase hex. */
  uppercaseHash?: boolean;
}

/**
 * A body as SBPS itself sends it (the sandbox's side): urlencoded Shift_JIS with the hash. Fields of
 * `msg.fields` outside the definition (the return screen's TOKEN) are sent unhashed after the others.
 */
export function encodeMessage(kind: MessageKind, msg: SbpsMessage, hashKey: string, opts: EncodeOptions = {}): Buffer {
  const entries = orderedEntries(kind, msg, opts);
  const hashed = new Set(entries.map(([name]) => name));
  const extra = Object.entries(msg.fields).filter(([name]) => !hashed.has(name) && name !== 'sps_hashcode');
  const hash = sbpsHash(kind, entries.map(([, v]) => v), hashKey);
  let pairs: [string, string][] = [...entries, ...extra, ['sps_hashcode', opts.uppercaseHash === true ? hash.toUpperCase() : hash]];
  if (opts.shuffle !== undefined) pairs = shuffled(pairs, opts.shuffle);
  return Buffer.from(sjisUrlEncode(pairs), 'latin1');
}

/**
 * Fisher–Yates over the pairs, then each repeated dtl_* name gets its values back in their original
 * order: names arrive in any order, but the n-th dtl_item_name must still belong to row n.
 */
function shuffled(pairs: [string, string][], random: () => number): [string, string][] {
  const out = pairs.slice();
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    const a = out[i];
    const b = out[j];
    if (a === undefined || b === undefined) continue;
    out[i] = b;
    out[j] = a;
  }
  const queues = new Map<string, string[]>();
  for (const [name, value] of pairs) {
    if (!DETAIL_KEY_SET.has(name)) continue;
    queues.set(name, [...(queues.get(name) ?? []), value]);
  }
  return out.map(([name, value]) => [name, queues.get(name)?.shift() ?? value]);
}
