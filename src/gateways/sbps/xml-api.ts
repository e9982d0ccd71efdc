import { setTimeout as sleep } from 'node:timers/promises';
import { decodeSjis, encodeSjis } from '../common/sjis.js';
import { sbpsHash } from './hash.js';

/*
 * The SBPS XML API (API型): the money operations on a link-type payment after the customer has paid
 * on SBPS's screen — capture, refund, partial refund, cancel — and the inquiry that reads a payment
 * back. One POST per operation: a flat Shift_JIS XML document `<sps-api-request id="…">`, HTTP Basic
 * auth, and an `sps_hashcode` over the values in document order (Shift_JIS bytes, reference
 * gateways.md §1.3/§1.5). The answer is `<sps-api-response>` with `res_result` OK or NG.
 *
 * FOR THE ADAPTER AUTHOR (src/payments/sbps):
 * - SBPS has no idempotency key. A capture, refund or cancel whose answer was lost may or may not have
 *   happened, and repeating it blindly can refund twice. So only `inquiry` retries by itself (network
 *   errors, time-outs, 5xx); the others throw at once. An `SbpsTransportError` with `outcomeUnknown`
 *   means "read back before repeating": the outbox job runs `inquiry` first and repeats the operation
 *   only when the payment is still in the state the operation starts from (authorized for a capture or
 *   cancel, captured for a refund). An `SbpsApiError` is SBPS's definite NG: nothing happened; it is
 *   final unless `transient` (SBPS-side system errors, types 80/85/86/90/92), which are safe to repeat.
 * - A partial refund with an unknown outcome cannot be settled by the inquiry alone: as far as the
 *   public sources show, the real inquiry reports a payment status, not the refunded amount. Put such
 *   an attempt on hold for an operator rather than refunding again.
 * - The provider interface's idempotency key cannot be passed to SBPS; keep it on the job.
 *
 * Request ids (reference §1.5, cross-checked with public clients):
 * - `commit` sends 売上要求 ST02-00201-101, not ST02-00101-101. Public code uses ST02-00201-101 to
 *   capture a link-type authorisation (with `pay_option_manage/amount` for a smaller amount), and a
 *   captured NG fixture answers 10137999 to it: "自動売上が設定されているため、売上要求は不要です"
 *   (auto capture is on; no capture needed). ST02-00101-101 (確定要求) confirms an API-type
 *   authorisation (ST01-…), a step SBPS's own screen already took for a link payment.
 * - `refund` sends 取消返金要求 ST02-00303-101: it refunds a captured payment in full, and SBPS also
 *   accepts it to void an authorisation. `cancel` sends 与信取消要求 ST02-00305-101 (authorised only).
 * - Those are the card's ids (…-101). A tracking id belongs to one payment method (seed 002: "unique
 *   for each payment method"), and SBPS answers another method's request NG, so every call names the
 *   `payMethod` the customer paid with (the result CGI's res_pay_method) and the id is taken from
 *   `SBPS_XML_API_REQUEST_IDS`. Carrier billing and PayPay have one 取消返金要求 that voids or refunds
 *   in full: no partial refund. Convenience store, Pay-easy and bank transfer have no refund at all.
 *   An operation a method lacks is refused before anything is sent (`SbpsUnsupportedError`).
 * - The inquiry (MG01-00101-101, 決済結果参照) is the credit card's; PayPay's is MG01-00101-311 and
 *   the convenience store's MG01-00101-701. The real answer's fields beyond the common ones
 *   are UNCONFIRMED: public clients read `res_status` and `res_pay_method_info/payment_status`
 *   (1 authorised, 2 captured, 3 cancelled, 4 refunded) and `commit_status`, which SBPS encrypts with
 *   3DES when `encrypted_flg=1`. This client does not send `encrypted_flg` (no 3DES support yet) and
 *   reads those fields as plain text; whether SBPS answers an unencrypted inquiry is UNCONFIRMED. The
 *   kessai sandbox answers payment_status too, and also `res_sandbox_info` (state, method, order_id,
 *   amount, captured_amount, refunded_amount) — the sandbox's own shape, not SBPS's. `SbpsInquiry`
 *   therefore has a `status` always and amounts only when the answer carried them.
 * - Fields of each request, in hash order: merchant_id, service_id, tracking_id, processing_datetime
 *   (not on the inquiry), pay_option_manage/amount (capture with an amount, partial refund),
 *   request_date. Empty fields are left out of the document (as public clients do; an empty value
 *   adds nothing to the hash either way).
 * - Content-Type `application/xml` (as in the public client the reference cites); the XML
 *   declaration names Shift_JIS.
 */

// ---- request ids and error codes ----------------------------------------------------------------

/** The credit card's request ids (method 101). */
export const XML_API_REQUEST_IDS = {
  /** 売上要求: capture an authorisation (optionally a smaller amount). */
  commit: 'ST02-00201-101',
  /** 取消返金要求: full refund of a captured payment (also voids an authorisation). */
  refund: 'ST02-00303-101',
  /** 部分返金要求: refund part of a captured payment. */
  partialRefund: 'ST02-00307-101',
  /** 与信取消要求: void an authorisation that was not captured. */
  cancel: 'ST02-00305-101',
  /** 決済結果参照要求: read a credit payment back. */
  inquiry: 'MG01-00101-101',
} as const;

export type XmlApiOperation = keyof typeof XML_API_REQUEST_IDS;

/** The request ids of one payment method; an operation left out is one SBPS does not offer for it. */
export type MethodRequestIds = Partial<Record<XmlApiOperation, string>>;

/** 取消返金要求 of a method whose one request both voids an authorisation and refunds a sale, in full. */
const voidOrRefund = (id: string) => ({ refund: id, cancel: id });

/**
 * Request ids by `pay_method` (reference gateways.md §1.5 and the public SBPS add-on it cites for
 * §1.6, idx:11219913139, whose table SBPS_REQUEST_ID lists the sales and cancel ids per method):
 * - card (credit, credit3d, credit3d2): the five above.
 * - paypay: sales ST02-00201-311, cancel/refund ST02-00303-311, inquiry MG01-00101-311.
 * - docomo, auone, softbank2: sales ST02-00201-40x, cancel/refund ST02-00303-40x (401, 402, 405).
 *   No source names their inquiry: MG01-00101-<method code> is the pattern of the three that are
 *   known (101, 311, 701), UNCONFIRMED — override with `SbpsXmlApiOptions.requestIds`.
 * - aupay (au PAY): cancel/refund ST02-00303-406 only; inquiry by the same pattern, UNCONFIRMED.
 * - webcvs: inquiry MG01-00101-701 (the add-on and sbpayment.rb); payeasy (703) and banktransfer
 *   (702) by the pattern, UNCONFIRMED. The money is paid at a counter: nothing to capture, cancel
 *   or refund through the API.
 * Any other method (unionpay, linepay, applepay, rakuten …) has no entry: the sources name no ids
 * kessai could send for it, and a card id would only be answered NG.
 */
export const SBPS_XML_API_REQUEST_IDS: Readonly<Record<string, MethodRequestIds>> = {
  credit: XML_API_REQUEST_IDS,
  credit3d: XML_API_REQUEST_IDS,
  credit3d2: XML_API_REQUEST_IDS,
  paypay: { commit: 'ST02-00201-311', ...voidOrRefund('ST02-00303-311'), inquiry: 'MG01-00101-311' },
  docomo: { commit: 'ST02-00201-401', ...voidOrRefund('ST02-00303-401'), inquiry: 'MG01-00101-401' },
  auone: { commit: 'ST02-00201-402', ...voidOrRefund('ST02-00303-402'), inquiry: 'MG01-00101-402' },
  softbank2: { commit: 'ST02-00201-405', ...voidOrRefund('ST02-00303-405'), inquiry: 'MG01-00101-405' },
  aupay: { ...voidOrRefund('ST02-00303-406'), inquiry: 'MG01-00101-406' },
  webcvs: { inquiry: 'MG01-00101-701' },
  banktransfer: { inquiry: 'MG01-00101-702' },
  payeasy: { inquiry: 'MG01-00101-703' },
};

/** Methods whose capture may name a smaller amount (pay_option_manage/amount): the card's only. */
export const SBPS_CAPTURE_AMOUNT_METHODS: ReadonlySet<string> = new Set(['credit', 'credit3d', 'credit3d2']);

const PAID_AT_A_COUNTER: ReadonlySet<string> = new Set(['webcvs', 'payeasy', 'banktransfer']);

const OPERATION_NAMES: Record<XmlApiOperation, string> = { commit: 'capture', refund: 'refund', partialRefund: 'partial refund', cancel: 'cancel', inquiry: 'inquiry' };

/** SBPS offers no such request for the payment's method: nothing was sent. */
export class SbpsUnsupportedError extends Error {
  override name = 'SbpsUnsupportedError';
  constructor(
    readonly payMethod: string,
    readonly operation: XmlApiOperation,
    message: string,
  ) {
    super(message);
  }
}

/**
 * The request id of `operation` for a payment made with `payMethod`, or `SbpsUnsupportedError`
 * saying why there is none. `overrides` are merged over `SBPS_XML_API_REQUEST_IDS` id by id.
 */
export function xmlApiRequestId(payMethod: string, operation: XmlApiOperation, overrides: Readonly<Record<string, MethodRequestIds>> = {}): string {
  const own = (table: Readonly<Record<string, MethodRequestIds>>): MethodRequestIds | undefined => (Object.hasOwn(table, payMethod) ? table[payMethod] : undefined);
  const ids: MethodRequestIds = { ...own(SBPS_XML_API_REQUEST_IDS), ...own(overrides) };
  const id = ids[operation];
  if (id !== undefined) return id;
  const what = `SBPS has no ${OPERATION_NAMES[operation]} request for ${payMethod || '(unknown method)'} payments`;
  let why: string;
  if (!payMethod) why = 'the payment method is not known, and the request id depends on it';
  else if (Object.keys(ids).length === 0) why = `kessai knows no XML API request ids for "${payMethod}" (pass requestIds to sbpsXmlApi once SBPS's manual gives them)`;
  else if (PAID_AT_A_COUNTER.has(payMethod)) why = 'the customer paid at a counter or by bank: pay the money back outside SBPS (e.g. by bank transfer)';
  else if (operation === 'partialRefund') why = `SBPS cancels or refunds a ${payMethod} payment only in full (${ids.refund ?? ids.cancel ?? '?'})`;
  else why = `the public sources name no such request id for ${payMethod}`;
  throw new SbpsUnsupportedError(payMethod, operation, `${what}: ${why}`);
}

/** 確定要求: confirms an API-type authorisation; not used for link-type payments (see above). */
export const XML_API_CONFIRM_REQUEST_ID = 'ST02-00101-101';

const METHOD_NAMES: Record<string, string> = {
  '101': 'credit card',
  '304': 'Yahoo!ウォレット',
  '305': '楽天',
  '306': 'PayPal',
  '307': 'Yahoo!ウォレット(デジコン)',
  '309': 'リクルート',
  '311': 'PayPay',
  '401': 'docomo',
  '402': 'au',
  '405': 'SoftBank まとめて支払い(B)',
  '406': 'au PAY',
  '513': 'prepaid',
  '701': 'Web convenience store',
  '702': 'bank transfer (総合振込)',
  '703': 'Pay-easy',
  '805': '永久不滅ポイント',
  '806': 'T-point',
  '999': 'common',
};

/** Error types shared by every method (sbpayment.rb's table of the SBPS manual). */
const COMMON_TYPES: Record<string, string> = {
  '00': 'XML format error',
  '01': 'payment method not available',
  '02': 'unknown API request id',
  '03': 'required field missing',
  '04': 'attribute error',
  '05': 'length error',
  '06': 'format error',
  '07': 'value not in the defined set',
  '09': 'hash error',
  '10': 'request expired',
  '11': 'unknown SBPS transaction id',
  '12': 'unknown tracking id',
  '13': 'not allowed',
  '14': 'merchant id / service id invalid',
  '80': 'gateway system error',
  '81': 'API request parameter error',
  '83': 'gateway record lookup error',
  '84': 'payment institution response error',
  '85': 'payment institution connection error',
  '86': 'payment institution system error',
  '90': 'API system error',
  '92': 'gateway connection error',
  '93': 'retry limit reached',
  '94': 'payment not complete',
  '95': 'customer information inconsistent',
  '96': 'duplicate request',
};

/** Credit-card (101) specific types that the link-type money operations can meet. */
const CREDIT_TYPES: Record<string, string> = {
  '20': 'card refused by the fraud filter',
  '21': 'card centre error',
  '22': 'card credit limit exceeded',
  '23': 'card cannot be used',
  '24': 'PIN wrong',
  '25': 'card usage count exceeded',
  '26': 'card not accepted',
  '27': 'card number or expiry wrong',
  '28': 'transaction not accepted',
  '36': 'other authorisation error',
  '37': 'auto capture is configured: no capture request needed',
  '39': 'no authorisation to capture',
  '40': 'authorisation already cancelled: capture stopped',
  '41': 'already captured',
  '42': 'capture window over (end of the third month after authorisation)',
  '44': 'no authorisation to refund',
  '45': 'authorisation cancelled: refund stopped',
  '46': 'already refunded',
  '49': 'auto capture: use the refund request',
  '51': 'no authorisation to cancel',
  '52': 'authorisation already cancelled',
  '56': 'refund window over',
  '61': 'security code wrong',
  '79': 'capture amount exceeds the authorised amount',
  K0: 'not captured yet: partial refund stopped',
  K1: 'refunds would exceed the captured amount',
};

/** Web convenience store (701) specific types. */
const CVS_TYPES: Record<string, string> = {
  '20': 'temporary server load',
  '21': 'server maintenance',
  '22': 'convenience-store centre error',
  '23': 'payment deadline invalid',
};

/** Item codes: the field an error is about (sbpayment.rb's table of the SBPS manual). */
export const SBPS_ERROR_ITEMS: Record<string, string> = {
  '000': 'API request id',
  '001': 'merchant_id',
  '002': 'service_id',
  '003': 'cust_code',
  '004': 'order_id',
  '005': 'item_id',
  '006': 'item_name',
  '007': 'tax',
  '008': 'amount',
  '009': 'pagecon_url',
  '010': 'free1',
  '011': 'free2',
  '012': 'free3',
  '013': 'sps_payment_no',
  '014': 'dtl_rowno',
  '015': 'dtl_item_id',
  '016': 'dtl_item_name',
  '017': 'dtl_item_count',
  '018': 'dtl_tax',
  '019': 'dtl_amount',
  '020': 'pay_type',
  '021': 'last_charge_month',
  '022': 'camp_type',
  '023': 'request_date',
  '024': 'limit_second',
  '025': 'sps_hashcode',
  '026': 'sps_transaction_id',
  '027': 'tracking_id',
  '028': 'encrypted_flg',
  '029': 'processing_datetime',
  '030': 'sps_cust_info_return_flg',
  '999': '(no particular field)',
};

const HINTS: Record<string, string> = {
  '09': 'check the hash key, and that the values are hashed as Shift_JIS in document order',
  '10': 'request_date is too old: check the server clock (request_date is Japan time)',
  '12': 'SBPS does not know this tracking id for this merchant and method',
  '14': 'check merchant_id and service_id against the Basic-auth account',
};

/** SBPS-side failures that say nothing about the request itself: repeating it later is safe. */
const TRANSIENT_TYPES = new Set(['80', '85', '86', '90', '92']);

export interface SbpsErrorCodeParts {
  code: string;
  /** MMM: payment method (101 credit, 701 web convenience store, 999 common …). */
  method: string;
  /** TT: error type (03 required, 05 length, 09 hash …); method-specific above 19. */
  type: string;
  /** III: the field (001 merchant_id, 025 sps_hashcode, 027 tracking_id …; 999 none). */
  item: string;
  methodName?: string;
  typeName?: string;
  itemName?: string;
  /** One line a person can act on. */
  description: string;
}

/** Splits an 8-character `res_err_code` (MMMTTIII) and names its parts as far as they are known. */
export function decodeSbpsErrorCode(code: string): SbpsErrorCodeParts {
  if (!/^[0-9A-Za-z]{8}$/.test(code)) {
    return { code, method: '', type: '', item: '', description: code ? `unrecognised error code "${code}"` : 'NG without an error code' };
  }
  const method = code.slice(0, 3);
  const type = code.slice(3, 5);
  const item = code.slice(5);
  const methodName = METHOD_NAMES[method];
  const specific = method === '101' ? CREDIT_TYPES : method === '701' ? CVS_TYPES : {};
  const typeName = specific[type] ?? COMMON_TYPES[type];
  const itemName = SBPS_ERROR_ITEMS[item];
  const hint = HINTS[type];
  const description = [
    `${typeName ?? `error type ${type}`}`,
    itemName && item !== '999' ? ` (field ${itemName})` : item !== '999' ? ` (item ${item})` : '',
    ` [${methodName ?? `method ${method}`}]`,
    hint ? `: ${hint}` : '',
  ].join('');
  return { code, method, type, item, ...(methodName ? { methodName } : {}), ...(typeName ? { typeName } : {}), ...(itemName ? { itemName } : {}), description };
}

/** SBPS answered NG: the operation did not happen. */
export class SbpsApiError extends Error {
  override name = 'SbpsApiError';
  readonly method: string;
  readonly type: string;
  readonly item: string;
  /** SBPS's own trouble (system or connection errors): the same request may succeed later. */
  readonly transient: boolean;
  constructor(
    readonly code: string,
    readonly operation: XmlApiOperation,
    readonly requestId: string,
    readonly response: Record<string, string> = {},
  ) {
    const parts = decodeSbpsErrorCode(code);
    super(`SBPS ${operation} (${requestId}) answered NG ${code || '(no code)'}: ${parts.description}`);
    this.method = parts.method;
    this.type = parts.type;
    this.item = parts.item;
    this.transient = TRANSIENT_TYPES.has(parts.type);
  }
}

export type SbpsTransportErrorKind = 'network' | 'timeout' | 'http' | 'malformed';

/** No usable answer from SBPS: the request may or may not have been applied. */
export class SbpsTransportError extends Error {
  override name = 'SbpsTransportError';
  /**
   * True when SBPS may have applied the request (it was sent and no clear refusal came back): read
   * the payment back with `inquiry` before repeating the operation.
   */
  readonly outcomeUnknown: boolean;
  constructor(
    readonly kind: SbpsTransportErrorKind,
    message: string,
    readonly operation: XmlApiOperation,
    readonly requestId: string,
    readonly status?: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    // A 4xx is the web server refusing the request before SBPS's application saw it.
    this.outcomeUnknown = !(kind === 'http' && status !== undefined && status >= 400 && status < 500);
  }
}

// ---- the document ---------------------------------------------------------------------------------

/** One field: a dotted path for fields inside a group (`pay_option_manage.amount`) and its value. */
export type XmlEntry = readonly [path: string, value: string];

export interface SbpsXmlDocument {
  /** `sps-api-request` or `sps-api-response`. */
  root: string;
  /** The root's `id` attribute: the API request id. */
  id?: string;
  /** Every leaf element in document order; groups appear only in the paths. */
  entries: XmlEntry[];
}

export class SbpsXmlError extends Error {
  override name = 'SbpsXmlError';
  constructor(
    message: string,
    readonly position?: number,
  ) {
    super(position === undefined ? message : `${message} (at character ${position})`);
  }
}

const NAME = /^[A-Za-z_][A-Za-z0-9_-]*$/;
const MAX_DEPTH = 4; // root, group, sub-group, leaf: the deepest SBPS answer (res_pay_method_info_detail)
const MAX_DOCUMENT_BYTES = 64 * 1024;

function escapeXml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' })[c]!);
}

/**
 * Writes an SBPS XML document (as a string; encode it with `encodeSjis`). Entries with a dotted path
 * are nested in their group; consecutive entries of one group share its element. Values of the paths
 * in `multibyte` are written as Base64 of their Shift_JIS bytes, as SBPS wants for M fields (§1.5).
 */
export function buildSbpsXml(root: string, id: string | undefined, entries: readonly XmlEntry[], opts: { multibyte?: ReadonlySet<string> } = {}): string {
  if (!NAME.test(root)) throw new SbpsXmlError(`invalid element name "${root}"`);
  const lines = ['<?xml version="1.0" encoding="Shift_JIS"?>', `<${root}${id === undefined ? '' : ` id="${escapeXml(id)}"`}>`];
  const open: string[] = [];
  const indent = (): string => '  '.repeat(open.length + 1);
  for (const [path, value] of entries) {
    const segments = path.split('.');
    if (segments.length > MAX_DEPTH - 1) throw new SbpsXmlError(`"${path}" is nested deeper than SBPS documents go`);
    for (const s of segments) if (!NAME.test(s)) throw new SbpsXmlError(`invalid element name "${s}" in "${path}"`);
    // eslint-disable-next-line no-control-regex
    if (/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/.test(value)) throw new SbpsXmlError(`${path}: control characters are not allowed`);
    const groups = segments.slice(0, -1);
    let shared = 0;
    while (shared < open.length && shared < groups.length && open[shared] === groups[shared]) shared++;
    while (open.length > shared) {
      const name = open.pop()!;
      lines.push(`${indent()}</${name}>`);
    }
    while (open.length < groups.length) {
      const name = groups[open.length]!;
      lines.push(`${indent()}<${name}>`);
      open.push(name);
    }
    const leaf = segments[segments.length - 1]!;
    const text = opts.multibyte?.has(path) ? encodeSjis(value).toString('base64') : value;
    lines.push(text === '' ? `${indent()}<${leaf}/>` : `${indent()}<${leaf}>${escapeXml(text)}</${leaf}>`);
  }
  while (open.length > 0) {
    const name = open.pop()!;
    lines.push(`${indent()}</${name}>`);
  }
  lines.push(`</${root}>`, '');
  return lines.join('\n');
}

const SJIS_LABELS = new Set(['shift_jis', 'shift-jis', 'sjis', 'x-sjis', 'windows-31j', 'cp932', 'ms_kanji', 'csshiftjis', 'ms932']);

/** Decodes the bytes in the encoding the XML declaration names (UTF-8 when there is none). */
function decodeXmlBytes(body: Buffer): string {
  if (body.length > MAX_DOCUMENT_BYTES) throw new SbpsXmlError(`document of ${body.length} bytes exceeds ${MAX_DOCUMENT_BYTES}`);
  const head = body.subarray(0, 200).toString('latin1');
  const declared = /^(?:\xef\xbb\xbf)?\s*<\?xml\s[^?]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)["']/.exec(head)?.[1]?.toLowerCase();
  if (declared === undefined || declared === 'utf-8' || declared === 'utf8') return body.toString('utf8').replace(/^\uFEFF/, '');
  if (SJIS_LABELS.has(declared)) return decodeSjis(body);
  throw new SbpsXmlError(`unsupported XML encoding "${declared}"`);
}

function unescapeXml(s: string, at: number): string {
  return s.replace(/&(#x[0-9a-fA-F]{1,6}|#[0-9]{1,7}|amp|lt|gt|quot|apos)?;?/g, (match, ref: string | undefined, offset: number) => {
    if (!ref || !match.endsWith(';')) throw new SbpsXmlError('bare "&" or unknown entity', at + offset);
    if (ref.startsWith('#')) {
      const cp = ref[1] === 'x' ? parseInt(ref.slice(2), 16) : parseInt(ref.slice(1), 10);
      if (cp > 0x10ffff || cp === 0) throw new SbpsXmlError(`invalid character reference &${ref};`, at + offset);
      return String.fromCodePoint(cp);
    }
    return { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" }[ref]!;
  });
}

/**
 * Reads an SBPS XML document: the root with at most an `id` attribute, leaf elements with text,
 * groups of leaves a few levels deep. Everything else XML allows and SBPS does not use — a DOCTYPE
 * (no entity expansion, no external fetches), attributes below the root, text mixed with elements,
 * processing instructions — is refused with the position.
 */
export function parseSbpsXml(input: Buffer | string, opts: { multibyte?: ReadonlySet<string> } = {}): SbpsXmlDocument {
  const text = typeof input === 'string' ? input.replace(/^\uFEFF/, '') : decodeXmlBytes(input);
  let i = 0;
  const skipWhitespace = (): void => {
    while (i < text.length && /\s/.test(text[i]!)) i++;
  };
  const skipMisc = (): void => {
    for (;;) {
      skipWhitespace();
      if (text.startsWith('<!--', i)) {
        const end = text.indexOf('-->', i + 4);
        if (end < 0) throw new SbpsXmlError('unterminated comment', i);
        i = end + 3;
      } else return;
    }
  };

  skipWhitespace();
  if (text.startsWith('<?xml', i)) {
    const end = text.indexOf('?>', i);
    if (end < 0) throw new SbpsXmlError('unterminated XML declaration', i);
    i = end + 2;
  }
  skipMisc();
  if (text.startsWith('<!', i)) throw new SbpsXmlError('DOCTYPE and other declarations are not accepted', i);
  if (text.startsWith('<?', i)) throw new SbpsXmlError('processing instructions are not accepted', i);

  const entries: XmlEntry[] = [];
  const startTag = /<([A-Za-z_][A-Za-z0-9_.-]*)((?:\s+[A-Za-z_][A-Za-z0-9_.:-]*\s*=\s*(?:"[^"<]*"|'[^'<]*'))*)\s*(\/?)>/y;
  const attribute = /([A-Za-z_][A-Za-z0-9_.:-]*)\s*=\s*(?:"([^"<]*)"|'([^'<]*)')/g;
  let root = '';
  let id: string | undefined;

  const element = (path: string[]): void => {
    startTag.lastIndex = i;
    const m = startTag.exec(text);
    if (!m) throw new SbpsXmlError('expected an element', i);
    const name = m[1]!;
    const attrs = m[2] ?? '';
    const tagAt = i;
    i = startTag.lastIndex;
    if (path.length === 0) {
      root = name;
      for (const a of attrs.matchAll(attribute)) {
        if (a[1] !== 'id') throw new SbpsXmlError(`attribute "${a[1]}" on <${name}> is not used by SBPS`, tagAt);
        id = unescapeXml(a[2] ?? a[3] ?? '', tagAt);
      }
    } else if (attrs.trim() !== '') {
      throw new SbpsXmlError(`attributes on <${name}> are not used by SBPS`, tagAt);
    }
    const here = path.length === 0 ? [] : [...path.slice(1), name];
    if (path.length + 1 > MAX_DEPTH) throw new SbpsXmlError(`<${name}> is nested deeper than SBPS documents go`, tagAt);
    if (m[3] === '/') {
      if (path.length > 0) entries.push([here.join('.'), '']);
      return;
    }
    let content = '';
    let contentAt = i;
    let children = 0;
    for (;;) {
      const lt = text.indexOf('<', i);
      if (lt < 0) throw new SbpsXmlError(`<${name}> is not closed`, tagAt);
      content += text.slice(i, lt);
      i = lt;
      if (text.startsWith('</', i)) {
        const end = /<\/([A-Za-z_][A-Za-z0-9_.-]*)\s*>/y;
        end.lastIndex = i;
        const e = end.exec(text);
        if (!e || e[1] !== name) throw new SbpsXmlError(`expected </${name}>`, i);
        i = end.lastIndex;
        break;
      }
      if (text.startsWith('<!--', i)) {
        const end = text.indexOf('-->', i + 4);
        if (end < 0) throw new SbpsXmlError('unterminated comment', i);
        i = end + 3;
        continue;
      }
      if (text.startsWith('<![CDATA[', i)) {
        const end = text.indexOf(']]>', i + 9);
        if (end < 0) throw new SbpsXmlError('unterminated CDATA section', i);
        // Escape what CDATA holds so the one unescape below returns it unchanged.
        content += escapeXml(text.slice(i + 9, end));
        i = end + 3;
        continue;
      }
      if (text.startsWith('<!', i) || text.startsWith('<?', i)) throw new SbpsXmlError('declarations and processing instructions are not accepted', i);
      if (content.trim() !== '') throw new SbpsXmlError(`<${name}> mixes text and elements`, contentAt);
      content = '';
      children++;
      element([...path, name]);
      contentAt = i;
    }
    if (children > 0) {
      if (content.trim() !== '') throw new SbpsXmlError(`<${name}> mixes text and elements`, contentAt);
      return;
    }
    if (path.length === 0) return; // an empty root: no fields
    const value = unescapeXml(content, contentAt);
    const key = here.join('.');
    entries.push([key, opts.multibyte?.has(key) && value !== '' ? decodeSjis(Buffer.from(value, 'base64')) : value]);
  };

  element([]);
  skipMisc();
  if (i < text.length) throw new SbpsXmlError('content after the root element', i);
  return { root, ...(id === undefined ? {} : { id }), entries };
}

/** The request as SBPS receives it: Shift_JIS bytes, with `sps_hashcode` over the values in document order. */
export function encodeXmlApiRequest(requestId: string, entries: readonly XmlEntry[], hashKey: string, opts: { multibyte?: ReadonlySet<string> } = {}): Buffer {
  const present = entries.filter(([, value]) => value !== '');
  const hash = sbpsHash('xml', present.map(([, value]) => value), hashKey);
  return encodeSjis(buildSbpsXml('sps-api-request', requestId, [...present, ['sps_hashcode', hash]], opts));
}

/** `YYYYMMDDHHMMSS` in Japan time, as every SBPS date field is written. */
export function jstTimestamp(at: Date = new Date()): string {
  const jst = new Date(at.getTime() + 9 * 3600 * 1000);
  const p = (n: number, w = 2): string => String(n).padStart(w, '0');
  return `${p(jst.getUTCFullYear(), 4)}${p(jst.getUTCMonth() + 1)}${p(jst.getUTCDate())}${p(jst.getUTCHours())}${p(jst.getUTCMinutes())}${p(jst.getUTCSeconds())}`;
}

// ---- the client -----------------------------------------------------------------------------------

export interface SbpsXmlApiOptions {
  /** https://stbfep.sps-system.com/api/xmlapi.do (test), https://api.sps-system.com/api/xmlapi.do (production). */
  url: string;
  basicAuth: { user: string; password: string };
  merchantId: string;
  serviceId: string;
  hashKey: string;
  fetchImpl?: typeof fetch;
  /** For the whole exchange, connection to last byte. Default 30 s. */
  timeoutMs?: number;
  /** Pauses before the inquiry's retries (only the inquiry retries). Default [1000, 3000]: two retries. */
  inquiryRetryDelaysMs?: readonly number[];
  /** The clock for request_date and processing_datetime (tests). */
  now?: () => Date;
  /**
   * Request ids by pay_method, merged over `SBPS_XML_API_REQUEST_IDS` id by id: for the ids the
   * public sources do not confirm (the carriers' inquiries), once the contract's manual names them.
   */
  requestIds?: Readonly<Record<string, MethodRequestIds>>;
}

export interface SbpsApiResult {
  operation: XmlApiOperation;
  requestId: string;
  /** res_sps_transaction_id: SBPS's id of this operation. */
  spsTransactionId?: string;
  /** res_tracking_id: the payment's id (not every answer carries it). */
  trackingId?: string;
  /** res_process_date: when SBPS processed it (JST YYYYMMDDHHMMSS). */
  processDate?: string;
  /** res_date: when SBPS answered. */
  date?: string;
  /** Every field of the answer by dotted path (`res_pay_method_info.payment_status`). */
  fields: Record<string, string>;
}

/** SBPS's payment_status codes as public clients read them (UNCONFIRMED against the manual). */
const PAYMENT_STATUS: Record<string, SbpsInquiryState> = { '1': 'authorized', '2': 'captured', '3': 'cancelled', '4': 'refunded' };

/**
 * A payment's state in the store's words. From real SBPS only authorized / captured / cancelled /
 * refunded can be read (payment_status); the kessai sandbox reports every state, a paid convenience
 * store payment as `captured`. `unknown`: the answer carried no status kessai understands.
 */
export type SbpsInquiryState =
  | 'pending'
  | 'authorized'
  | 'captured'
  | 'partially_refunded'
  | 'refunded'
  | 'cancelled'
  | 'awaiting_payment'
  | 'expired'
  | 'failed'
  | 'unknown';

const STATES: ReadonlySet<string> = new Set<SbpsInquiryState>(['pending', 'authorized', 'captured', 'partially_refunded', 'refunded', 'cancelled', 'awaiting_payment', 'expired', 'failed', 'unknown']);

export interface SbpsInquiry extends SbpsApiResult {
  status: SbpsInquiryState;
  /**
   * Amounts in yen, present only when the answer carries them: the kessai sandbox does
   * (`res_sandbox_info`); whether real SBPS's inquiry reports amounts is UNCONFIRMED, so code that
   * decides money from them must handle their absence.
   */
  amount?: number;
  capturedAmount?: number;
  refundedAmount?: number;
  payMethod?: string;
  /** res_status as sent: '0' normal, '1' error (public clients' reading). */
  resStatus?: string;
  /** res_pay_method_info/payment_status as sent ('1'…'4'). */
  paymentStatus?: string;
  /** res_pay_method_info/commit_status as sent ('0' unprocessed, '1' committed, …). */
  commitStatus?: string;
  /** True when the answer came from the kessai sandbox (it carried res_sandbox_info). */
  fromSandbox: boolean;
}

/** A payment at SBPS: its tracking id, and the method it was paid with, which chooses the request id. */
export interface SbpsPaymentRef {
  /** res_tracking_id of the result CGI. */
  trackingId: string;
  /** The pay_method the customer paid with: the result CGI's res_pay_method (credit, paypay, docomo …). */
  payMethod: string;
}

/**
 * Ids below are the card's; every call sends its method's (`SBPS_XML_API_REQUEST_IDS`) and rejects
 * with `SbpsUnsupportedError`, sending nothing, when the method has no such request.
 */
export interface SbpsXmlApi {
  /** 売上要求 (ST02-00201-101): captures an authorisation, in full or (cards only) `amount` of it. Never retried. */
  commit(input: SbpsPaymentRef & { amount?: number }): Promise<SbpsApiResult>;
  /** 取消返金要求 (ST02-00303-101): refunds a captured payment in full. Never retried. */
  refund(input: SbpsPaymentRef): Promise<SbpsApiResult>;
  /** 部分返金要求 (ST02-00307-101): refunds `amount` of a captured payment. Never retried. */
  partialRefund(input: SbpsPaymentRef & { amount: number }): Promise<SbpsApiResult>;
  /** 与信取消要求 (ST02-00305-101): voids an authorisation. Never retried. */
  cancel(input: SbpsPaymentRef): Promise<SbpsApiResult>;
  /** 決済結果参照要求 (MG01-00101-101): reads the payment back; retried on network errors and 5xx. */
  inquiry(input: SbpsPaymentRef): Promise<SbpsInquiry>;
}

const TRACKING_ID = /^[0-9A-Za-z]{1,32}$/;
const MAX_AMOUNT = 9_999_999;

export function sbpsXmlApi(opts: SbpsXmlApiOptions): SbpsXmlApi {
  const fetchImpl = opts.fetchImpl ?? fetch;
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const retryDelays = opts.inquiryRetryDelaysMs ?? [1_000, 3_000];
  const now = opts.now ?? (() => new Date());
  const authorization = `Basic ${Buffer.from(`${opts.basicAuth.user}:${opts.basicAuth.password}`, 'utf8').toString('base64')}`;
  for (const [name, value] of [['merchantId', opts.merchantId], ['serviceId', opts.serviceId]] as const) {
    if (!/^[0-9]+$/.test(value)) throw new TypeError(`sbpsXmlApi: ${name} must be digits, got "${value}"`);
  }
  if (!opts.hashKey) throw new TypeError('sbpsXmlApi: hashKey is required');

  const checkTrackingId = (trackingId: string): void => {
    if (!TRACKING_ID.test(trackingId)) throw new TypeError(`trackingId must be SBPS's res_tracking_id (letters and digits), got "${trackingId}"`);
  };
  const checkAmount = (amount: number): void => {
    if (!Number.isInteger(amount) || amount < 1 || amount > MAX_AMOUNT) throw new TypeError(`amount must be an integer number of yen from 1 to ${MAX_AMOUNT}, got ${amount}`);
  };

  /** One POST: the document out, the answer's fields back, NG as SbpsApiError. */
  async function send(operation: XmlApiOperation, payMethod: string, entries: XmlEntry[]): Promise<SbpsApiResult> {
    const requestId = xmlApiRequestId(payMethod, operation, opts.requestIds);
    const body = encodeXmlApiRequest(requestId, entries, opts.hashKey);
    const fail = (kind: SbpsTransportErrorKind, message: string, status?: number, cause?: unknown): SbpsTransportError =>
      new SbpsTransportError(kind, `SBPS ${operation} (${requestId}): ${message}`, operation, requestId, status, cause === undefined ? undefined : { cause });

    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), timeoutMs);
    let status: number;
    let raw: Buffer;
    try {
      const res = await fetchImpl(opts.url, {
        method: 'POST',
        headers: { authorization, 'content-type': 'application/xml', accept: 'application/xml, text/xml' },
        body,
        signal: controller.signal,
        redirect: 'error',
      });
      status = res.status;
      raw = Buffer.from(await res.arrayBuffer());
    } catch (error) {
      if (controller.signal.aborted) throw fail('timeout', `no answer within ${timeoutMs} ms`, undefined, error);
      throw fail('network', `request failed: ${(error as Error).message}`, undefined, error);
    } finally {
      clearTimeout(timer);
    }

    if (status === 401 || status === 403) throw fail('http', `HTTP ${status}: Basic auth refused; check the API user and password SBPS issued`, status);
    if (status < 200 || status >= 300) throw fail('http', `HTTP ${status}`, status);
    let doc: SbpsXmlDocument;
    try {
      doc = parseSbpsXml(raw);
    } catch (error) {
      throw fail('malformed', `unreadable answer: ${(error as Error).message}`, status, error);
    }
    if (doc.root !== 'sps-api-response') throw fail('malformed', `answer's root is <${doc.root}>, expected <sps-api-response>`, status);
    // NG answers are seen without an id; an id that names another request is a crossed wire.
    if (doc.id !== undefined && doc.id !== requestId) throw fail('malformed', `answer is for ${doc.id}`, status);
    const fields: Record<string, string> = {};
    for (const [path, value] of doc.entries) fields[path] = value;
    const result = fields.res_result;
    if (result === 'NG') throw new SbpsApiError(fields.res_err_code ?? '', operation, requestId, fields);
    if (result !== 'OK') throw fail('malformed', `res_result is ${result === undefined ? 'missing' : `"${result}"`}`, status);
    const optional = (key: string): string | undefined => (fields[key] ? fields[key] : undefined);
    const out: SbpsApiResult = { operation, requestId, fields };
    const spsTransactionId = optional('res_sps_transaction_id');
    const trackingId = optional('res_tracking_id');
    const processDate = optional('res_process_date');
    const date = optional('res_date');
    if (spsTransactionId) out.spsTransactionId = spsTransactionId;
    if (trackingId) out.trackingId = trackingId;
    if (processDate) out.processDate = processDate;
    if (date) out.date = date;
    return out;
  }

  const head = (trackingId: string): XmlEntry[] => [
    ['merchant_id', opts.merchantId],
    ['service_id', opts.serviceId],
    ['tracking_id', trackingId],
  ];

  return {
    async commit({ trackingId, payMethod, amount }) {
      checkTrackingId(trackingId);
      if (amount !== undefined) checkAmount(amount);
      xmlApiRequestId(payMethod, 'commit', opts.requestIds);
      if (amount !== undefined && !SBPS_CAPTURE_AMOUNT_METHODS.has(payMethod)) {
        // The sources show pay_option_manage/amount on the card's sales request only.
        throw new SbpsUnsupportedError(payMethod, 'commit', `SBPS takes a capture amount for card payments only: capture a ${payMethod} authorisation in full (no amount)`);
      }
      const at = jstTimestamp(now());
      return send('commit', payMethod, [...head(trackingId), ['processing_datetime', at], ...(amount === undefined ? [] : [['pay_option_manage.amount', String(amount)] as const]), ['request_date', at]]);
    },

    async refund({ trackingId, payMethod }) {
      checkTrackingId(trackingId);
      const at = jstTimestamp(now());
      return send('refund', payMethod, [...head(trackingId), ['processing_datetime', at], ['request_date', at]]);
    },

    async partialRefund({ trackingId, payMethod, amount }) {
      checkTrackingId(trackingId);
      checkAmount(amount);
      const at = jstTimestamp(now());
      return send('partialRefund', payMethod, [...head(trackingId), ['processing_datetime', at], ['pay_option_manage.amount', String(amount)], ['request_date', at]]);
    },

    async cancel({ trackingId, payMethod }) {
      checkTrackingId(trackingId);
      const at = jstTimestamp(now());
      return send('cancel', payMethod, [...head(trackingId), ['processing_datetime', at], ['request_date', at]]);
    },

    async inquiry({ trackingId, payMethod }) {
      checkTrackingId(trackingId);
      // Reading is safe to repeat: retry what may be passing (network, time-out, 5xx), never an NG.
      for (let attempt = 0; ; attempt++) {
        try {
          const result = await send('inquiry', payMethod, [...head(trackingId), ['request_date', jstTimestamp(now())]]);
          return inquiryResult(result);
        } catch (error) {
          const passing = error instanceof SbpsTransportError && (error.kind === 'network' || error.kind === 'timeout' || (error.kind === 'http' && (error.status ?? 0) >= 500));
          if (!passing || attempt >= retryDelays.length) throw error;
          await sleep(retryDelays[attempt]!);
        }
      }
    },
  };
}

function inquiryResult(result: SbpsApiResult): SbpsInquiry {
  const f = result.fields;
  const sandboxState = f['res_sandbox_info.state'];
  const paymentStatus = f['res_pay_method_info.payment_status'];
  const status: SbpsInquiryState =
    sandboxState !== undefined ? (STATES.has(sandboxState) ? (sandboxState as SbpsInquiryState) : 'unknown') : (PAYMENT_STATUS[paymentStatus ?? ''] ?? 'unknown');
  const out: SbpsInquiry = { ...result, status, fromSandbox: sandboxState !== undefined };
  const amount = (key: string): number | undefined => {
    const v = f[key];
    return v !== undefined && /^\d{1,9}$/.test(v) ? Number(v) : undefined;
  };
  const set = <K extends keyof SbpsInquiry>(key: K, value: SbpsInquiry[K] | undefined): void => {
    if (value !== undefined && value !== '') out[key] = value;
  };
  set('amount', amount('res_sandbox_info.amount'));
  set('capturedAmount', amount('res_sandbox_info.captured_amount'));
  set('refundedAmount', amount('res_sandbox_info.refunded_amount'));
  set('payMethod', f['res_sandbox_info.pay_method']);
  set('resStatus', f.res_status);
  set('paymentStatus', paymentStatus);
  set('commitStatus', f['res_pay_method_info.commit_status']);
  return out;
}
