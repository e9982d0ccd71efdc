/*
 * The atone payment object (reference gateways.md §2.2): what the shop hands to `Atone.config({ payment })`
 * for the modal, and — without the checksum, with an authentication token — what 取引登録 / 取引更新 send.
 *
 * The validator applies atone's published rules (the EATN table of the SDK README, §2.2) before anything
 * leaves the shop, and reports EVERY problem with the field's path (`items[2].item_price`) and the EATN
 * code atone itself would answer, so a developer fixes a payment in one round instead of one error per try.
 *
 * Readings of the table where it is terse (each one a choice, kept here so it can be revisited):
 * - Numbers may arrive as JSON numbers or as strings of digits (PHP clients send "1099"); both are read.
 *   `sales_settled` likewise accepts "true" / "false". null counts as absent (kessai never sends null:
 *   how atone would checksum a null is UNCONFIRMED, §2.3).
 * - 全角 (full-width) for names means: no half-width ASCII (U+0020–U+007E) and no half-width katakana
 *   (U+FF61–U+FF9F). The builder converts both, so only hand-built objects meet this rule.
 * - `item_price` may be negative (a discount line: the CS-Cart add-on sends one, §2.7); |price| ≤ 6 digits.
 *   `item_count` is 1–99,999.
 * - Required, from the SDK builders: amount, shop_transaction_no, customer.customer_name, items (each with
 *   shop_item_id, item_name, item_price, item_count), checksum for the modal; dest_customer_name,
 *   dest_zip_code and dest_address in each destination. A missing field gets the field's own code.
 * - Σ(item_price × item_count) = amount has no code of its own in the reference (UNCONFIRMED that atone
 *   checks it at all, §2.7): it is reported as EATN0398 (atone's generic "bad request") on `amount`.
 * - Lengths count characters (code points), not bytes.
 */

export interface AtoneCustomer {
  /** 全角, ≤100. Required. */
  customer_name: string;
  customer_family_name?: string;
  customer_given_name?: string;
  customer_name_kana?: string;
  customer_family_name_kana?: string;
  customer_given_name_kana?: string;
  /** Mobile: 070 / 080 / 090. */
  phone_number?: string;
  /** YYYY-MM-DD */
  birthday?: string;
  /** 1 male, 2 female */
  sex_division?: 1 | 2 | '1' | '2';
  company_name?: string;
  department?: string;
  /** 1234567 or 123-4567 */
  zip_code?: string;
  address?: string;
  tel?: string;
  email?: string;
  total_purchase_count?: number;
  total_purchase_amount?: number;
}

export interface AtoneDestCustomer {
  dest_customer_name: string;
  dest_customer_name_kana?: string;
  dest_company_name?: string;
  dest_department?: string;
  dest_zip_code: string;
  dest_address: string;
  dest_tel?: string;
}

export interface AtoneItem {
  shop_item_id: string;
  item_name: string;
  /** Yen, may be negative for a discount line. */
  item_price: number;
  item_count: number;
  item_url?: string;
}

/** `transaction_options` values known from NP's guide (§2.5): 1 定期登録 (recurring), 2 アカウント連携. */
export const ATONE_OPTION_RECURRING = 1;
export const ATONE_OPTION_ACCOUNT_LINK = 2;

/** The payment object as the modal receives it. */
export interface AtonePayment {
  amount: number;
  /** The shop's reference, unique per payment attempt. */
  shop_transaction_no: string;
  /** true: 売上確定 at once, with the authorization. */
  sales_settled?: boolean;
  description_trans?: string;
  checksum: string;
  user_no?: string;
  transaction_options?: number[];
  subtract_point?: number;
  track_token?: string;
  customer: AtoneCustomer;
  dest_customers?: AtoneDestCustomer[];
  items: AtoneItem[];
}

export type AtonePaymentWithoutChecksum = Omit<AtonePayment, 'checksum'>;

/** One rule broken: where, atone's code for it, and what to do. */
export interface AtoneProblem {
  /** `amount`, `customer.tel`, `items[3].item_price`, `dest_customers[0].dest_zip_code` … */
  path: string;
  /** EATN code atone answers for this field. */
  code: string;
  message: string;
}

/** The payment object breaks atone's rules; nothing was sent. */
export class AtonePaymentError extends Error {
  override name = 'AtonePaymentError';
  constructor(readonly problems: readonly AtoneProblem[]) {
    super(`the atone payment object breaks ${problems.length} rule(s): ${problems.map((p) => `${p.path || '(payment)'} ${p.code}: ${p.message}`).join('; ')}`);
  }
}

/**
 * atone's codes (§2.2) with a short Japanese description written for kessai (shown to shop staff and
 * in the sandbox's answers; not atone's wording).
 */
export const ATONE_ERROR_CODES: Readonly<Record<string, string>> = {
  EATN0301: '決済認証トークンがありません',
  EATN0302: '決済認証トークンの形式が正しくありません',
  EATN0303: '決済認証トークンが有効ではありません',
  EATN0304: '店舗公開可能鍵が見つかりません',
  EATN0306: '認証できませんでした',
  EATN0331: '課金額は 1 以上、7 桁以内の整数です',
  EATN0332: '加盟店取引 ID は 100 文字以内の半角英数字・記号です',
  EATN0333: '売上確定は true か false です',
  EATN0334: '加盟店取引備考は 255 文字以内で、改行以外の制御文字は使えません',
  EATN0335: '加盟店商品 ID は 100 文字以内の半角英数字・記号です',
  EATN0336: '商品明細がありません',
  EATN0337: '商品明細は 9999 件までです',
  EATN0338: '商品名は 100 文字以内です',
  EATN0339: '商品単価は 6 桁以内の整数です',
  EATN0340: '個数は 5 桁以内の整数です',
  EATN0341: '商品 URL は 1000 文字以内です',
  EATN0342: '氏名は 100 文字以内の全角です',
  EATN0343: 'ふりがな氏名は 128 文字以内の全角です',
  EATN0344: '会社名は 100 文字以内です',
  EATN0345: '部署名は 30 文字以内です',
  EATN0346: '郵便番号は 7 桁の数字か 123-4567 の形です',
  EATN0347: '住所は 255 文字以内です',
  EATN0348: '電話番号は 0 で始まる 10〜11 桁か、ハイフン区切りです',
  EATN0349: 'メールアドレスは 255 文字以内の正しい形式です',
  EATN0350: '利用ポイント数は 7 桁以内の整数です',
  EATN0351: 'チェックサムが正しくありません',
  EATN0352: 'Content-Type は application/json です',
  EATN0353: 'サービス提供先は 9 件までです',
  EATN0354: '姓は 50 文字以内の全角です',
  EATN0355: '名は 50 文字以内の全角です',
  EATN0356: 'ふりがな姓は 64 文字以内の全角です',
  EATN0357: 'ふりがな名は 64 文字以内の全角です',
  EATN0358: '携帯電話番号は 070・080・090 で始まる番号です',
  EATN0359: '生年月日は YYYY-MM-DD の日付です',
  EATN0360: '性別は 1 (男性) か 2 (女性) です',
  EATN0361: '累計購入回数は 0 以上、7 桁以内の整数です',
  EATN0362: '累計購入金額は 0 以上、8 桁以内の整数です',
  EATN0397: 'JSON の形式が正しくありません',
  EATN0398: '不正なリクエストです',
  EATN0399: 'ただいまサービスを利用できません。時間をおいてお試しください',
  EATN1201: '売上確定済みです (推定)',
};

const HALF_WIDTH = /[\x20-\x7e\uff61-\uff9f]/;
const ASCII_ID = /^[\x21-\x7e]+$/;
// eslint-disable-next-line no-control-regex
const CONTROL_EXCEPT_NEWLINE = /[\x00-\x09\x0b\x0c\x0e-\x1f\x7f]/;
const ZIP = /^(?:\d{7}|\d{3}-\d{4})$/;
const TEL = /^(?:0\d{9,10}|0\d{1,2}-\d{4}-\d{4})$/;
const MOBILE = /^(?:0[789]0\d{7,8}|0[789]0-\d{4}-\d{4})$/;
const EMAIL = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;
const BIRTHDAY = /^(\d{4})-(\d{2})-(\d{2})$/;

const chars = (s: string): number => [...s].length;
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const present = (v: unknown): boolean => v !== undefined && v !== null;

/** A JSON number or a string of digits as an integer; undefined when it is neither. */
export function atoneInteger(v: unknown): number | undefined {
  if (typeof v === 'number') return Number.isSafeInteger(v) ? v : undefined;
  if (typeof v === 'string' && /^-?\d{1,15}$/.test(v)) return Number(v);
  return undefined;
}

class Problems {
  readonly list: AtoneProblem[] = [];
  add(path: string, code: string, message: string): void {
    this.list.push({ path, code, message });
  }

  /** An optional (or required) text field with a length limit and an optional shape. */
  text(obj: Record<string, unknown>, key: string, base: string, code: string, rule: { max: number; required?: boolean; fullWidth?: boolean; pattern?: RegExp; what: string }): void {
    const path = `${base}${key}`;
    const v = obj[key];
    if (!present(v)) {
      if (rule.required) this.add(path, code, `${rule.what} is required`);
      return;
    }
    if (typeof v !== 'string') return this.add(path, code, `${rule.what} must be a string`);
    if (rule.required && v.length === 0) return this.add(path, code, `${rule.what} is required`);
    if (chars(v) > rule.max) return this.add(path, code, `${rule.what} is at most ${rule.max} characters (got ${chars(v)})`);
    if (rule.fullWidth && HALF_WIDTH.test(v)) return this.add(path, code, `${rule.what} must be full-width (全角): no half-width letters, digits, spaces or katakana`);
    if (rule.pattern && v.length > 0 && !rule.pattern.test(v)) return this.add(path, code, `${rule.what} has the wrong form`);
  }

  int(obj: Record<string, unknown>, key: string, base: string, code: string, rule: { min: number; max: number; required?: boolean; what: string }): number | undefined {
    const path = `${base}${key}`;
    const v = obj[key];
    if (!present(v)) {
      if (rule.required) this.add(path, code, `${rule.what} is required`);
      return undefined;
    }
    const n = atoneInteger(v);
    if (n === undefined) {
      this.add(path, code, `${rule.what} must be an integer`);
      return undefined;
    }
    if (n < rule.min || n > rule.max) {
      this.add(path, code, `${rule.what} must be from ${rule.min.toLocaleString('en')} to ${rule.max.toLocaleString('en')} (got ${n})`);
      return undefined;
    }
    return n;
  }
}

export interface AtoneValidationOptions {
  /** The modal's payment object carries a checksum (EATN0351 without one); 取引登録 over REST does not. Default true. */
  requireChecksum?: boolean;
}

/**
 * Every way `payment` breaks atone's rules; empty when atone should accept it. Takes `unknown` so the
 * sandbox can check what a browser sent; kessai's own objects come from `buildAtonePayment`.
 */
export function validateAtonePayment(payment: unknown, opts: AtoneValidationOptions = {}): AtoneProblem[] {
  const p = new Problems();
  if (!isObject(payment)) {
    p.add('', 'EATN0398', 'the payment must be a JSON object');
    return p.list;
  }

  const amount = p.int(payment, 'amount', '', 'EATN0331', { min: 1, max: 9_999_999, required: true, what: 'amount' });
  p.text(payment, 'shop_transaction_no', '', 'EATN0332', { max: 100, required: true, pattern: ASCII_ID, what: 'shop_transaction_no (half-width letters, digits and symbols)' });

  const settled = payment.sales_settled;
  if (present(settled) && typeof settled !== 'boolean' && settled !== 'true' && settled !== 'false') {
    p.add('sales_settled', 'EATN0333', 'sales_settled must be true or false');
  }
  const description = payment.description_trans;
  if (present(description)) {
    if (typeof description !== 'string') p.add('description_trans', 'EATN0334', 'description_trans must be a string');
    else if (chars(description) > 255) p.add('description_trans', 'EATN0334', `description_trans is at most 255 characters (got ${chars(description)})`);
    else if (CONTROL_EXCEPT_NEWLINE.test(description)) p.add('description_trans', 'EATN0334', 'description_trans may contain no control characters other than line breaks');
  }
  if (opts.requireChecksum ?? true) {
    if (typeof payment.checksum !== 'string' || payment.checksum.length === 0) p.add('checksum', 'EATN0351', 'checksum is required: Base64 SHA-256 of the secret key and the sorted values (atoneChecksum)');
  }
  p.int(payment, 'subtract_point', '', 'EATN0350', { min: 0, max: 9_999_999, what: 'subtract_point' });

  const options = payment.transaction_options;
  if (present(options) && (!Array.isArray(options) || options.some((o) => atoneInteger(o) === undefined))) {
    p.add('transaction_options', 'EATN0398', 'transaction_options must be an array of integers (1 recurring, 2 account link)');
  }

  // ---- items: the sum is checked only when every number in it could be read
  const items = payment.items;
  let sum: number | undefined = 0;
  if (!Array.isArray(items) || items.length === 0) {
    p.add('items', 'EATN0336', 'items is required: at least one line');
    sum = undefined;
  } else if (items.length > 9999) {
    p.add('items', 'EATN0337', `items has at most 9999 lines (got ${items.length})`);
    sum = undefined;
  } else {
    items.forEach((item, i) => {
      const base = `items[${i}].`;
      if (!isObject(item)) {
        p.add(`items[${i}]`, 'EATN0336', 'each item must be an object');
        sum = undefined;
        return;
      }
      const id = item.shop_item_id;
      if (typeof id === 'number' && Number.isSafeInteger(id) && id >= 0) {
        // An integer id is its digits (CS-Cart sends product ids as numbers).
      } else {
        p.text(item, 'shop_item_id', base, 'EATN0335', { max: 100, required: true, pattern: ASCII_ID, what: 'shop_item_id (half-width letters, digits and symbols)' });
      }
      p.text(item, 'item_name', base, 'EATN0338', { max: 100, required: true, what: 'item_name' });
      const price = p.int(item, 'item_price', base, 'EATN0339', { min: -999_999, max: 999_999, required: true, what: 'item_price (yen, up to 6 digits)' });
      const count = p.int(item, 'item_count', base, 'EATN0340', { min: 1, max: 99_999, required: true, what: 'item_count (up to 5 digits)' });
      p.text(item, 'item_url', base, 'EATN0341', { max: 1000, what: 'item_url' });
      if (price === undefined || count === undefined || sum === undefined) sum = undefined;
      else sum += price * count;
    });
  }
  if (amount !== undefined && sum !== undefined && sum !== amount) {
    p.add('amount', 'EATN0398', `amount (${amount}) must equal the sum of item_price × item_count (${sum}); add tax, shipping, fees and discounts as items`);
  }

  // ---- customer
  const customer = payment.customer;
  if (!isObject(customer)) {
    p.add('customer.customer_name', 'EATN0342', 'customer with customer_name is required');
  } else {
    const base = 'customer.';
    p.text(customer, 'customer_name', base, 'EATN0342', { max: 100, required: true, fullWidth: true, what: 'customer_name' });
    p.text(customer, 'customer_name_kana', base, 'EATN0343', { max: 128, fullWidth: true, what: 'customer_name_kana' });
    p.text(customer, 'customer_family_name', base, 'EATN0354', { max: 50, fullWidth: true, what: 'customer_family_name' });
    p.text(customer, 'customer_given_name', base, 'EATN0355', { max: 50, fullWidth: true, what: 'customer_given_name' });
    p.text(customer, 'customer_family_name_kana', base, 'EATN0356', { max: 64, fullWidth: true, what: 'customer_family_name_kana' });
    p.text(customer, 'customer_given_name_kana', base, 'EATN0357', { max: 64, fullWidth: true, what: 'customer_given_name_kana' });
    p.text(customer, 'phone_number', base, 'EATN0358', { max: 13, pattern: MOBILE, what: 'phone_number (a mobile number: 070, 080 or 090)' });
    const birthday = customer.birthday;
    if (present(birthday) && !(typeof birthday === 'string' && validDate(birthday))) p.add(`${base}birthday`, 'EATN0359', 'birthday must be a real date as YYYY-MM-DD');
    const sex = customer.sex_division;
    if (present(sex) && atoneInteger(sex) !== 1 && atoneInteger(sex) !== 2) p.add(`${base}sex_division`, 'EATN0360', 'sex_division must be 1 (male) or 2 (female)');
    p.text(customer, 'company_name', base, 'EATN0344', { max: 100, what: 'company_name' });
    p.text(customer, 'department', base, 'EATN0345', { max: 30, what: 'department' });
    p.text(customer, 'zip_code', base, 'EATN0346', { max: 8, pattern: ZIP, what: 'zip_code (1234567 or 123-4567)' });
    p.text(customer, 'address', base, 'EATN0347', { max: 255, what: 'address' });
    p.text(customer, 'tel', base, 'EATN0348', { max: 13, pattern: TEL, what: 'tel (0 then 9–10 digits, or hyphenated)' });
    p.text(customer, 'email', base, 'EATN0349', { max: 255, pattern: EMAIL, what: 'email' });
    p.int(customer, 'total_purchase_count', base, 'EATN0361', { min: 0, max: 9_999_999, what: 'total_purchase_count' });
    p.int(customer, 'total_purchase_amount', base, 'EATN0362', { min: 0, max: 99_999_999, what: 'total_purchase_amount' });
  }

  // ---- destinations (サービス提供先)
  const dests = payment.dest_customers;
  if (present(dests)) {
    if (!Array.isArray(dests)) p.add('dest_customers', 'EATN0353', 'dest_customers must be an array');
    else if (dests.length > 9) p.add('dest_customers', 'EATN0353', `dest_customers has at most 9 entries (got ${dests.length})`);
    else {
      dests.forEach((d, i) => {
        const base = `dest_customers[${i}].`;
        if (!isObject(d)) return p.add(`dest_customers[${i}]`, 'EATN0353', 'each destination must be an object');
        p.text(d, 'dest_customer_name', base, 'EATN0342', { max: 100, required: true, fullWidth: true, what: 'dest_customer_name' });
        p.text(d, 'dest_customer_name_kana', base, 'EATN0343', { max: 128, fullWidth: true, what: 'dest_customer_name_kana' });
        p.text(d, 'dest_company_name', base, 'EATN0344', { max: 100, what: 'dest_company_name' });
        p.text(d, 'dest_department', base, 'EATN0345', { max: 30, what: 'dest_department' });
        p.text(d, 'dest_zip_code', base, 'EATN0346', { max: 8, required: true, pattern: ZIP, what: 'dest_zip_code (1234567 or 123-4567)' });
        p.text(d, 'dest_address', base, 'EATN0347', { max: 255, required: true, what: 'dest_address' });
        p.text(d, 'dest_tel', base, 'EATN0348', { max: 13, pattern: TEL, what: 'dest_tel (0 then 9–10 digits, or hyphenated)' });
      });
    }
  }
  return p.list;
}

function validDate(s: string): boolean {
  const m = BIRTHDAY.exec(s);
  if (!m) return false;
  const [y, mo, d] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const date = new Date(Date.UTC(y, mo - 1, d));
  return date.getUTCFullYear() === y && date.getUTCMonth() === mo - 1 && date.getUTCDate() === d;
}
