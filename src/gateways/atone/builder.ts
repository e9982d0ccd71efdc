/*
 * Builds the modal's payment object from a shop's order: amount = Σ lines, with consumption tax charged on
 * top, shipping, a payment fee and a discount as lines of their own (atone wants Σ(item_price × item_count)
 * = amount, §2.7), names made full-width where atone demands 全角, the checksum added, and every rule
 * checked before the object leaves the server.
 */
import { atoneChecksum, type AtoneChecksumOptions } from './checksum.js';
import {
  AtonePaymentError,
  validateAtonePayment,
  type AtoneCustomer,
  type AtoneDestCustomer,
  type AtoneItem,
  type AtonePayment,
  type AtonePaymentWithoutChecksum,
} from './payment.js';

export interface AtoneOrderLine {
  /** The shop's product or SKU id: half-width letters, digits and symbols, ≤100. */
  id: string | number;
  name: string;
  /** Yen, tax as the shop shows it (inclusive prices need no tax line). */
  unitPrice: number;
  quantity: number;
  url?: string;
}

export interface AtonePaymentInput {
  shopTransactionNo: string;
  lines: readonly AtoneOrderLine[];
  /** Consumption tax charged on top of the lines (外税), as one line. Leave out when prices include tax. */
  tax?: number;
  shipping?: number;
  /** A payment fee (決済手数料) charged to the customer. */
  fee?: number;
  /** A positive number of yen off; sent as one line with a negative price. */
  discount?: number;
  customer: AtoneCustomer;
  destinations?: readonly AtoneDestCustomer[];
  /** 売上確定 together with the authorization. Default false (settle later, e.g. on shipment). */
  salesSettled?: boolean;
  description?: string;
  /** e.g. [ATONE_OPTION_RECURRING] when later charges of a subscription are registered with the member's token. */
  transactionOptions?: readonly number[];
  userNo?: string;
  /** Names of the adjustment lines. Defaults: 消費税, 送料, 決済手数料, 値引き. */
  labels?: { tax?: string; shipping?: string; fee?: string; discount?: string };
}

const FULL_WIDTH_FIELDS = [
  'customer_name',
  'customer_name_kana',
  'customer_family_name',
  'customer_given_name',
  'customer_family_name_kana',
  'customer_given_name_kana',
] as const;
const FULL_WIDTH_DEST_FIELDS = ['dest_customer_name', 'dest_customer_name_kana'] as const;

/**
 * Half-width ASCII and half-width katakana to their full-width forms (Ｔａｒｏ\u3000Ｙａｍａｄａ, ｶﾞ → ガ); everything
 * else as it is. NFKC alone would go the other way for ASCII, so only the katakana runs are normalised.
 */
export function toFullWidth(s: string): string {
  return s
    .replace(/[\uff61-\uff9f]+/g, (run) => run.normalize('NFKC'))
    .replace(/[\x21-\x7e]/g, (c) => String.fromCharCode(c.charCodeAt(0) + 0xfee0))
    .replace(/ /g, '\u3000');
}

function omitEmpty<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined && v !== null && v !== '')) as T;
}

/** The payment object without its checksum (for 取引登録 / 取引更新, which carry none). Throws AtonePaymentError. */
export function buildAtonePaymentFields(input: AtonePaymentInput): AtonePaymentWithoutChecksum {
  const labels = { tax: '消費税', shipping: '送料', fee: '決済手数料', discount: '値引き', ...input.labels };
  const items: AtoneItem[] = input.lines.map((l) =>
    omitEmpty({ shop_item_id: String(l.id), item_name: l.name, item_price: l.unitPrice, item_count: l.quantity, item_url: l.url }),
  );
  const adjust = (id: string, name: string, price: number | undefined): void => {
    if (price !== undefined && price !== 0) items.push({ shop_item_id: id, item_name: name, item_price: price, item_count: 1 });
  };
  adjust('tax', labels.tax, input.tax);
  adjust('shipping', labels.shipping, input.shipping);
  adjust('fee', labels.fee, input.fee);
  if (input.discount !== undefined && input.discount < 0) {
    throw new AtonePaymentError([{ path: 'items', code: 'EATN0339', message: `discount is the positive number of yen off (got ${input.discount})` }]);
  }
  adjust('discount', labels.discount, input.discount === undefined ? undefined : -input.discount);

  const customer: Record<string, unknown> = omitEmpty({ ...input.customer });
  for (const key of FULL_WIDTH_FIELDS) if (typeof customer[key] === 'string') customer[key] = toFullWidth(customer[key]);
  const destinations = (input.destinations ?? []).map((d) => {
    const dest: Record<string, unknown> = omitEmpty({ ...d });
    for (const key of FULL_WIDTH_DEST_FIELDS) if (typeof dest[key] === 'string') dest[key] = toFullWidth(dest[key]);
    return dest as unknown as AtoneDestCustomer;
  });

  const fields: AtonePaymentWithoutChecksum = omitEmpty({
    amount: items.reduce((sum, i) => sum + i.item_price * i.item_count, 0),
    shop_transaction_no: input.shopTransactionNo,
    sales_settled: input.salesSettled ?? false,
    description_trans: input.description,
    user_no: input.userNo,
    transaction_options: input.transactionOptions?.length ? [...input.transactionOptions] : undefined,
    customer: customer as unknown as AtoneCustomer,
    dest_customers: destinations.length ? destinations : undefined,
    items,
  });
  const problems = validateAtonePayment(fields, { requireChecksum: false });
  if (problems.length) throw new AtonePaymentError(problems);
  return fields;
}

/** The modal's payment object, checksum included. Throws AtonePaymentError listing every broken rule. */
export function buildAtonePayment(input: AtonePaymentInput, opts: { secretKey: string } & AtoneChecksumOptions): AtonePayment {
  const fields = buildAtonePaymentFields(input);
  return { ...fields, checksum: atoneChecksum(fields, opts.secretKey, opts) };
}
