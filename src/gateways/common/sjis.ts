/**
 * Shift_JIS as Japanese gateways and Windows actually speak it: the CP932 (Windows-31J) table.
 *
 * iconv-lite never fails on an unmappable character; it writes `?` (0x3F) and carries on. A `?` in
 * a product name is a wrong hash at the gateway and a support ticket, so every encode here checks the
 * round trip and throws a `SjisError` naming the character instead.
 */
import iconv from 'iconv-lite';

const TABLE = 'cp932';

/** A character that has no faithful Shift_JIS form; `position` counts code points from 1. */
export class SjisError extends Error {
  override name = 'SjisError';
  constructor(
    readonly char: string,
    readonly position: number,
    readonly reason: string,
    readonly field?: string,
  ) {
    super(`${field === undefined ? '' : `${field}: `}${JSON.stringify(char)} at position ${position} cannot be written in Shift_JIS (${reason})`);
  }
}

/**
 * Characters whose JIS (and Mac) Unicode mapping differs from CP932's for the same Shift_JIS bytes,
 * plus two that iconv-lite "best-fits" to a different character. Text pasted from a Mac or a JIS-table
 * system carries the left-hand forms; CP932 only knows the right-hand ones.
 */
const COMMON_OFFENDERS: ReadonlyMap<string, string> = new Map([
  ['\u301C', '\uFF5E'], // 〜 WAVE DASH → ～ (0x8160)
  ['\u2212', '\uFF0D'], // − MINUS SIGN → － (0x817C)
  ['\u2016', '\u2225'], // ‖ DOUBLE VERTICAL LINE → ∥ (0x8161)
  ['\u00A2', '\uFFE0'], // ¢ → ￠ (0x8191)
  ['\u00A3', '\uFFE1'], // £ → ￡ (0x8192)
  ['\u00AC', '\uFFE2'], // ¬ → ￢ (0x81CA)
  // JIS X 0208 1-29 is EM DASH in JIS's own table and HORIZONTAL BAR in CP932: same glyph, same bytes
  // (0x815C). An en dash has no JIS code at all; the nearest dash glyph is the same one. Not ー: that is
  // a kana length mark and changes how a word reads.
  ['\u2014', '\u2015'], // — EM DASH → ― (0x815C)
  ['\u2013', '\u2015'], // – EN DASH → ― (0x815C)
  // iconv-lite writes ¥ as 0x5C, which reads back as a backslash.
  ['\u00A5', '\uFFE5'], // ¥ → ￥ (0x818F)
]);

/**
 * Opt-in: rewrites the characters above to their CP932 forms so the text can be encoded. It changes
 * what the customer typed (visually the same glyph), which is why callers must ask for it.
 */
export function normaliseCommonOffenders(s: string): string {
  let out = '';
  for (const ch of s) out += COMMON_OFFENDERS.get(ch) ?? ch;
  return out;
}

/** Encodes with CP932 and throws `SjisError` on anything that would not decode back unchanged. */
export function encodeSjis(s: string, field?: string): Buffer {
  const bytes = iconv.encode(s, TABLE);
  if (iconv.decode(bytes, TABLE) === s) return bytes;
  let position = 0;
  for (const ch of s) {
    position++;
    if (!roundTrips(ch)) throw new SjisError(ch, position, unmappableReason(ch), field);
  }
  // Unreachable for a stateless table; kept so a surprise never becomes a silent `?`.
  throw new SjisError(s, 1, 'does not survive the round trip', field);
}

export function decodeSjis(buf: Buffer): string {
  return iconv.decode(buf, TABLE);
}

/** Bytes `s` takes in Shift_JIS; throws like `encodeSjis` when it has no Shift_JIS form. */
export function sjisByteLength(s: string): number {
  return encodeSjis(s).length;
}

/** The longest prefix of `s` that fits in `maxBytes` Shift_JIS bytes, never cutting a character. */
export function truncateSjis(s: string, maxBytes: number): string {
  let out = '';
  let used = 0;
  for (const ch of s) {
    const n = encodeSjis(ch).length;
    if (used + n > maxBytes) break;
    out += ch;
    used += n;
  }
  return out;
}

export type JisCheck = { ok: true } | { ok: false; char: string; position: number; reason: string };

/**
 * Accepts printable ASCII and the JIS X 0208 double-byte set (rows 1–8, 16–84 of Shift_JIS), which is
 * what Japanese gateways mean by "JIS level 1 and 2". Refuses control characters, half-width katakana
 * (JIS X 0201), NEC and IBM extensions (①, ㈱, Ⅰ, 髙: they exist on Windows only and garble elsewhere),
 * user-defined characters, and anything CP932 cannot hold (〜 U+301C, 𠮷 …).
 */
export function checkJisX0208(s: string): JisCheck {
  let position = 0;
  for (const ch of s) {
    position++;
    const reason = jisX0208Problem(ch);
    if (reason !== undefined) return { ok: false, char: ch, position, reason };
  }
  return { ok: true };
}

/** Why one character (one code point) is outside printable ASCII + JIS X 0208, or undefined. */
export function jisX0208Problem(ch: string): string | undefined {
  const cp = ch.codePointAt(0) ?? 0;
  if (cp < 0x20 || (cp >= 0x7f && cp < 0xa0)) return 'control character';
  if (cp < 0x7f) return undefined;
  if (cp > 0xffff) return 'outside the Basic Multilingual Plane; Shift_JIS has no code for it';
  if (cp >= 0xff61 && cp <= 0xff9f) return 'half-width katakana (JIS X 0201), not JIS X 0208';
  if (!roundTrips(ch)) return unmappableReason(ch);
  const bytes = iconv.encode(ch, TABLE);
  const lead = bytes[0] ?? 0;
  if (bytes.length !== 2) return 'not a JIS X 0208 character';
  if (lead === 0x87) return 'platform-dependent character: NEC special character';
  if (lead === 0xed || lead === 0xee || (lead >= 0xfa && lead <= 0xfc)) {
    return 'platform-dependent character: IBM extension';
  }
  if (lead >= 0xf0 && lead <= 0xf9) return 'platform-dependent character: user-defined';
  const jisRow1to8 = lead >= 0x81 && lead <= 0x84;
  const jisRow16to84 = (lead >= 0x88 && lead <= 0x9f) || (lead >= 0xe0 && lead <= 0xea);
  return jisRow1to8 || jisRow16to84 ? undefined : 'not a JIS X 0208 character';
}

function roundTrips(ch: string): boolean {
  return iconv.decode(iconv.encode(ch, TABLE), TABLE) === ch;
}

function unmappableReason(ch: string): string {
  const cp932Form = COMMON_OFFENDERS.get(ch);
  if (cp932Form !== undefined) {
    const hex = (cp932Form.codePointAt(0) ?? 0).toString(16).toUpperCase();
    return `not in the CP932 table; its CP932 form is U+${hex} ${cp932Form} (normaliseCommonOffenders)`;
  }
  if ((ch.codePointAt(0) ?? 0) > 0xffff) return 'outside the Basic Multilingual Plane; Shift_JIS has no code for it';
  return 'not in the CP932 table';
}

const VOICED_BASES = 'カキクケコサシスセソタチツテトハヒフヘホ';
const SEMI_VOICED_BASES = 'ハヒフヘホ';

/**
 * Half-width katakana to full width, combining a following ﾞ or ﾟ into one character (ｶﾞ → ガ,
 * ﾊﾟ → パ, ｳﾞ → ヴ) as SBPS does on its side. Only combinations that exist in JIS X 0208 are formed:
 * ﾜﾞ becomes ワ゛, not ヷ, because ヷ has no Shift_JIS code.
 */
export function toFullWidthKatakana(s: string): string {
  return s.replace(/([\uFF61-\uFF9D])([\uFF9E\uFF9F])?|[\uFF9E\uFF9F]/g, (match, base?: string, mark?: string) => {
    if (base === undefined) return match === '\uFF9E' ? '\u309B' : '\u309C';
    // NFKC maps each half-width kana to its full-width twin (ｰ → ー, ･ → ・, ｡ → 。).
    const full = base.normalize('NFKC');
    if (mark === undefined) return full;
    if (mark === '\uFF9E') {
      if (full === 'ウ') return 'ヴ';
      if (VOICED_BASES.includes(full)) return String.fromCharCode(full.charCodeAt(0) + 1);
      return `${full}\u309B`;
    }
    if (SEMI_VOICED_BASES.includes(full)) return String.fromCharCode(full.charCodeAt(0) + 2);
    return `${full}\u309C`;
  });
}

// What browsers leave bare in application/x-www-form-urlencoded; everything else is %XX of the bytes.
const UNRESERVED = /^[A-Za-z0-9*\-._]$/;

function percentEncode(bytes: Buffer): string {
  let out = '';
  for (const b of bytes) {
    if (b === 0x20) out += '+';
    else if (b < 0x80 && UNRESERVED.test(String.fromCharCode(b))) out += String.fromCharCode(b);
    else out += `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/** A form body as a Shift_JIS browser would post it; throws `SjisError` naming the field. */
export function sjisUrlEncode(pairs: readonly (readonly [string, string])[]): string {
  return pairs.map(([name, value]) => `${percentEncode(encodeSjis(name, name))}=${percentEncode(encodeSjis(value, name))}`).join('&');
}

/**
 * Decodes an urlencoded Shift_JIS body, keeping repeated names and their order as received.
 * `+` and %XX are undone on the bytes first and only then is the whole value decoded as CP932: a
 * two-byte character may arrive half percent-encoded and half literal (`%8Cp`). Splitting on `&`, `=`
 * and `+` in raw bytes is safe because no Shift_JIS trail byte is below 0x40.
 */
export function parseSjisUrlEncoded(body: Buffer): [string, string][] {
  // Byte offsets and latin1 character offsets are the same, so the body is split as one string and
  // only the parts that need it go back to the bytes.
  const text = body.toString('latin1');
  const pairs: [string, string][] = [];
  let start = 0;
  while (start <= text.length) {
    let end = text.indexOf('&', start);
    if (end === -1) end = text.length;
    if (end > start) {
      const eq = text.indexOf('=', start);
      const nameEnd = eq !== -1 && eq < end ? eq : end;
      pairs.push([formField(body, text, start, nameEnd), nameEnd < end ? formField(body, text, nameEnd + 1, end) : '']);
    }
    start = end + 1;
  }
  return pairs;
}

/** Escapes, `+` or bytes above ASCII: the part needs decoding on its bytes. */
const NEEDS_DECODING = /[%+\x80-\xff]/;

/** Most names and values are plain ASCII, where CP932 agrees with latin1: they are taken as they are. */
function formField(body: Buffer, text: string, from: number, to: number): string {
  const part = text.slice(from, to);
  return NEEDS_DECODING.test(part) ? decodeField(percentDecode(body.subarray(from, to))) : part;
}

function decodeField(bytes: Buffer): string {
  for (const b of bytes) if (b >= 0x80) return decodeSjis(bytes);
  return bytes.toString('latin1');
}

function percentDecode(raw: Buffer): Buffer {
  if (raw.indexOf(0x25) === -1 && raw.indexOf(0x2b) === -1) return raw;
  const out = Buffer.alloc(raw.length);
  let n = 0;
  for (let i = 0; i < raw.length; i++) {
    const b = raw[i] ?? 0;
    if (b === 0x2b) {
      out[n++] = 0x20;
    } else if (b === 0x25 && i + 2 < raw.length && isHex(raw[i + 1]) && isHex(raw[i + 2])) {
      out[n++] = hexValue(raw[i + 1]!) * 16 + hexValue(raw[i + 2]!);
      i += 2;
    } else {
      // A stray `%` stays literal, as browsers and most servers treat it.
      out[n++] = b;
    }
  }
  return out.subarray(0, n);
}

function hexValue(b: number): number {
  return b <= 0x39 ? b - 0x30 : (b | 0x20) - 0x57;
}

function isHex(b: number | undefined): boolean {
  return b !== undefined && ((b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66));
}
