import type { Insertable, Selectable, Updateable } from 'kysely';

/*
 * One schema for SQLite and PostgreSQL. Timestamps are ISO-8601 UTC text (`Date#toISOString`), which
 * sorts and compares the same on both engines; booleans are 0/1 integers; amounts are integer yen.
 */

export interface ShopTable {
  id: string;
  name: string;
  /** JSON object of non-secret settings, keyed as in commerce/shop-settings. */
  settings: string;
  /** AES-256-GCM sealed JSON object of secret settings, or null when none are set. */
  secrets: string | null;
  created_at: string;
  updated_at: string;
}

export interface ProductTable {
  id: string;
  shop_id: string;
  code: string;
  name: string;
  kind: 'physical' | 'serial_code' | 'ticket';
  description: string;
  jan_code: string | null;
  chart_eligible: number;
  tax_rate: number;
  active: number;
  created_at: string;
}

export interface SkuTable {
  id: string;
  shop_id: string;
  product_id: string;
  code: string;
  name: string;
  price: number;
  on_hand: number;
  reserved: number;
  created_at: string;
}

export interface CustomerTable {
  id: string;
  shop_id: string;
  email: string;
  name: string;
  name_kana: string | null;
  phone: string | null;
  password_hash: string | null;
  email_verified_at: string | null;
  created_at: string;
}

export interface OrderTable {
  id: string;
  shop_id: string;
  number: string;
  token_hash: string;
  customer_id: string;
  email: string;
  state: string;
  subtotal: number;
  shipping_fee: number;
  total: number;
  tax_10: number;
  tax_8: number;
  current_attempt_id: string | null;
  fulfilled: number;
  stock_committed: number;
  stock_released: number;
  hold_reason: string | null;
  expires_at: string;
  created_at: string;
  updated_at: string;
}

export interface OrderLineTable {
  id: string;
  order_id: string;
  sku_id: string;
  /** Where the line stood in the customer's cart: lines are always listed in this order. */
  position: number;
  product_kind: string;
  name: string;
  jan_code: string | null;
  unit_price: number;
  quantity: number;
  tax_rate: number;
  amount: number;
}

export interface OrderAddressTable {
  order_id: string;
  kind: 'shipping' | 'billing';
  name: string;
  postcode: string;
  prefecture: string;
  city: string;
  line1: string;
  line2: string | null;
  phone: string;
}

export interface ReservationTable {
  id: string;
  order_id: string;
  sku_id: string;
  quantity: number;
  state: 'held' | 'committed' | 'released';
  expires_at: string;
  created_at: string;
  updated_at: string;
}

export interface PaymentAttemptTable {
  id: string;
  order_id: string;
  shop_id: string;
  provider: string;
  method: string | null;
  merchant_ref: string;
  state: string;
  amount: number;
  captured_amount: number;
  refunded_amount: number;
  gateway_ref: string | null;
  /** JSON: what the gateway told us that the customer needs (konbini receipt number, deadline). */
  details: string;
  created_at: string;
  updated_at: string;
}

export interface PaymentEventTable {
  id: string;
  shop_id: string;
  provider: string;
  event_key: string;
  attempt_id: string | null;
  fact_type: string;
  amount: number | null;
  source: string;
  outcome: string;
  note: string;
  payload: string;
  received_at: string;
}

export interface StateChangeTable {
  id: string;
  entity: 'order' | 'payment';
  entity_id: string;
  from_state: string | null;
  to_state: string;
  cause: string;
  at: string;
}

export interface JobTable {
  id: string;
  kind: string;
  dedupe_key: string | null;
  payload: string;
  state: 'pending' | 'running' | 'done' | 'dead';
  attempts: number;
  run_at: string;
  locked_by: string | null;
  locked_until: string | null;
  last_error: string | null;
  created_at: string;
  updated_at: string;
  finished_at: string | null;
}

export interface JobRunTable {
  id: string;
  job_id: string;
  attempt: number;
  worker: string;
  started_at: string;
  finished_at: string | null;
  outcome: 'running' | 'succeeded' | 'failed' | 'dead';
  error: string | null;
}

export interface AlertTable {
  id: string;
  kind: string;
  message: string;
  ref: string | null;
  created_at: string;
  resolved_at: string | null;
}

export interface TicketTable {
  id: string;
  shop_id: string;
  order_id: string;
  order_line_id: string;
  sku_id: string;
  /** 1…n within the order, in the order of its lines. */
  serial: number;
  /** The admission secret the QR carries, as printed: `XXXX-XXXX-…` (commerce/tickets.ts). */
  code: string;
  state: 'issued' | 'void';
  issued_at: string;
  voided_at: string | null;
}

export interface Database {
  shops: ShopTable;
  products: ProductTable;
  skus: SkuTable;
  customers: CustomerTable;
  orders: OrderTable;
  order_lines: OrderLineTable;
  order_addresses: OrderAddressTable;
  reservations: ReservationTable;
  payment_attempts: PaymentAttemptTable;
  payment_events: PaymentEventTable;
  state_changes: StateChangeTable;
  jobs: JobTable;
  job_runs: JobRunTable;
  alerts: AlertTable;
  tickets: TicketTable;
}

export type Shop = Selectable<ShopTable>;
export type Product = Selectable<ProductTable>;
export type Sku = Selectable<SkuTable>;
export type Order = Selectable<OrderTable>;
export type OrderLine = Selectable<OrderLineTable>;
export type PaymentAttempt = Selectable<PaymentAttemptTable>;
export type PaymentEvent = Selectable<PaymentEventTable>;
export type Ticket = Selectable<TicketTable>;
export type Job = Selectable<JobTable>;
export type NewJob = Insertable<JobTable>;
export type JobUpdate = Updateable<JobTable>;
