import type { PaymentState } from './payment-machine.js';

/*
 * What a customer reads in place of the store's and the gateways' codes, on pages and in mails alike:
 * one "日本語 / English" string per code, so a page and the mail about the same order say the same
 * thing. A code without a label is shown as it is: a new gateway value must not break a page.
 */

export const ORDER_STATE_LABELS: Record<string, string> = {
  pending_payment: 'お支払い待ち / Waiting for payment',
  awaiting_payment: 'お支払い待ち（コンビニ等）/ Waiting for your payment at the store',
  authorized: '与信済み / Authorized',
  paid: 'お支払い完了 / Paid',
  shipped: '発送済み / Shipped',
  completed: '完了 / Completed',
  cancelled: 'キャンセル / Cancelled',
  expired: '期限切れ / Expired',
  refunded: '返金済み / Refunded',
  partially_refunded: '一部返金 / Partially refunded',
  on_hold: '確認中 / Being checked by the shop',
};

/** One payment attempt's state, as the customer meets it next to the order's. */
export const PAYMENT_STATE_LABELS: Record<PaymentState, string> = {
  pending: '手続き中 / In progress',
  awaiting_payment: 'お支払い待ち / Waiting for your payment',
  authorized: '与信済み / Authorized',
  captured: 'お支払い済み / Paid',
  partially_refunded: '一部返金済み / Partially refunded',
  refunded: '返金済み / Refunded',
  failed: '承認されませんでした / Declined',
  cancelled: 'キャンセル / Cancelled',
  expired: '期限切れ / Expired',
};

/** The payment services by the name the customer chose them under at checkout. */
export const PROVIDER_LABELS: Record<string, string> = {
  testpay: 'テスト決済 / Test payment (sandbox)',
  sbps: 'クレジットカード・コンビニ等（SBペイメント）/ Card, konbini and more (SBPS)',
  komoju: 'クレジットカード・コンビニ等（KOMOJU）/ Card, konbini and more (KOMOJU)',
  atone: 'atone 翌月後払い / atone (pay next month)',
};

/** Convenience-store chains by the codes KOMOJU and SBPS use for them (KOMOJU's `payment_details.store`). */
export const KONBINI_STORE_LABELS: Record<string, string> = {
  'seven-eleven': 'セブン-イレブン / 7-Eleven',
  lawson: 'ローソン / Lawson',
  familymart: 'ファミリーマート / FamilyMart',
  ministop: 'ミニストップ / Ministop',
  'daily-yamazaki': 'デイリーヤマザキ / Daily Yamazaki',
  seicomart: 'セイコーマート / Seicomart',
};

const labelIn = (labels: Record<string, string>) => (code: string): string => labels[code] ?? code;

export const orderStateLabel = labelIn(ORDER_STATE_LABELS);
export const paymentStateLabel = labelIn(PAYMENT_STATE_LABELS);
export const providerLabel = labelIn(PROVIDER_LABELS);
export const konbiniStoreLabel = labelIn(KONBINI_STORE_LABELS);

/** A yen amount as Japanese shops write it: 1,510円. */
export const yen = (n: number): string => `${n.toLocaleString('ja-JP')}円`;

/** A stored instant (UTC ISO) in Japan time, which every customer-facing date is. */
export const japanTime = (iso: string): string => new Date(iso).toLocaleString('ja-JP', { timeZone: 'Asia/Tokyo' });
