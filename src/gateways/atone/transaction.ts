/*
 * A transaction as atone reports it (取引参照, the 決済Webhook), and the state that follows from its fields:
 * atone has no status field (reference gateways.md §2.5).
 */
import { atoneInteger, type AtoneItem } from './payment.js';

/** `tr_` and letters/digits (e.g. tr_u773kIcfHY8bQ76p). */
export const ATONE_TRANSACTION_ID = /^tr_[A-Za-z0-9]{1,64}$/;
/** `tk_` and letters/digits. */
export const ATONE_TOKEN = /^tk_[A-Za-z0-9]{1,128}$/;

export interface AtoneRefund {
  amount_refund?: number;
  refund_datetime?: string;
  refund_reason?: string | null;
  description_refund?: string | null;
  [key: string]: unknown;
}

/**
 * A transaction as 取引参照 answers (fields seen in §2.1 and AFTEE's notification, §2.4; atone may send
 * more, kept by the index signature). There is no status field: see atoneTransactionState.
 */
export interface AtoneTransaction {
  id: string;
  object?: string;
  livemode?: boolean;
  authentication_token?: string | null;
  user_no?: string | null;
  shop_transaction_no: string;
  amount: number;
  /** 1 OK, 2 NG. */
  authorization_result: number;
  /** 1 amount too high (金額超過), 9 other; with authorization_result 2. */
  authorization_result_ng_reason?: number | null;
  amount_refund_total?: number;
  /** "2020/07/06 15:07" */
  registration_datetime?: string;
  sales_settled?: boolean;
  sales_settled_datetime?: string | null;
  transaction_options?: number[] | null;
  related_transaction?: string | null;
  updated_transactions?: string[] | null;
  description_trans?: string | null;
  customer?: Record<string, unknown>;
  dest_customers?: Record<string, unknown>[];
  items?: AtoneItem[];
  refunds?: AtoneRefund | AtoneRefund[] | null;
  [key: string]: unknown;
}

export type AtoneTransactionState = 'authorized' | 'declined' | 'settled' | 'refunded' | 'unknown';

/**
 * atone has no status field (§2.5); the state follows from the fields. 'unknown' for an
 * authorization_result other than 1 or 2 (a pending value is UNCONFIRMED): neither paid nor declined.
 */
export function atoneTransactionState(t: AtoneTransaction): AtoneTransactionState {
  const result = atoneInteger(t.authorization_result);
  if (result === 2) return 'declined';
  if (result !== 1) return 'unknown';
  const refunds = t.refunds;
  if ((Array.isArray(refunds) ? refunds.length > 0 : refunds !== undefined && refunds !== null) || (typeof t.amount_refund_total === 'number' && t.amount_refund_total > 0)) return 'refunded';
  if (t.sales_settled === true || (typeof t.sales_settled_datetime === 'string' && t.sales_settled_datetime !== '')) return 'settled';
  return 'authorized';
}

