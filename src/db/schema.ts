import type { Insertable, Selectable, Updateable } from 'kysely';
import type { ColumnType } from 'kysely';

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
  /** Sold as a subscription renewed every this many months; null for a one-off product (migration 0009). */
  recurring_interval_months: ColumnType<number | null, number | null | undefined, number | null>;
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
  /**
   * The fact as the gateway stated it, JSON (GatewayFact without its payload: merchantRef,
   * gatewayRef, details, fact): what the applier applies to a `received` event (migration 0003).
   */
  fact: ColumnType<string | null, string | null | undefined, string | null>;
  /** When the event was applied; null while its outcome is `received` (migration 0003). */
  applied_at: ColumnType<string | null, string | null | undefined, string | null>;
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
  /** Runs in a row that recorded no outcome (migration 0012). */
  lost_runs: ColumnType<number, number | undefined, number>;
  run_at: string;
  locked_by: string | null;
  locked_until: string | null;
  last_error: string | null;
  created_at: string;
  updated_at: string;
  finished_at: string | null;
}

/** A money operation at a gateway, one per outbox job performing it (migration 0011). */
export interface PaymentOperationTable {
  job_id: string;
  attempt_id: string;
  kind: 'capture' | 'refund' | 'cancel';
  amount: number;
  /** started: under way; sent: a call the gateway cannot be asked about afterwards went out; done: carried out and applied. */
  state: 'started' | 'sent' | 'done';
  created_at: string;
  updated_at: string;
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

/** What every imported row of a serial-code product must name (Chekicha's own columns). Migration 0004. */
export interface SerialCodeSpecTable {
  product_id: string;
  artist_name: string;
  group_name: string;
  code_type: string;
  created_at: string;
  updated_at: string;
}

/** One import run (one ZIP): its codes count only once it is `imported`. Migration 0004. */
export interface SerialCodeBatchTable {
  id: string;
  shop_id: string;
  product_id: string;
  file_name: string;
  /** SHA-256 of the uploaded ZIP, hex. */
  checksum: string;
  /** JSON: [{ name, encoding, rows }] for each CSV read, in the order of `serial_codes.source_file`. */
  files: string;
  state: 'importing' | 'imported' | 'rejected' | 'abandoned';
  rows_read: number;
  rows_imported: number;
  rows_rejected: number;
  error: string | null;
  imported_by: string;
  started_at: string;
  updated_at: string;
  finished_at: string | null;
}

/** A serial code, unique per product; `assigned` to exactly one order line once paid. Migration 0004. */
export interface SerialCodeTable {
  product_id: string;
  code: string;
  shop_id: string;
  sku_id: string;
  batch_id: string;
  artist_name: string;
  group_name: string;
  code_type: string;
  /** JST calendar dates, YYYY-MM-DD, both inclusive. */
  valid_from: string;
  valid_until: string;
  state: 'available' | 'assigned';
  order_id: ColumnType<string | null, string | null | undefined, string | null>;
  order_line_id: ColumnType<string | null, string | null | undefined, string | null>;
  assigned_at: ColumnType<string | null, string | null | undefined, string | null>;
  source_file: number;
  source_line: number;
}

/** One chart report: a shop's file for one agency and one reporting date, and how sending it went. Migration 0005. */
export interface ChartRunTable {
  id: string;
  shop_id: string;
  target: 'oricon' | 'billboard';
  /** The reporting date, JST, YYYY-MM-DD. */
  report_date: string;
  /** running: an attempt holds it; sent; failed: the last attempt failed (a retry may follow); dead: retries exhausted, alerted. */
  outcome: 'running' | 'sent' | 'failed' | 'dead';
  file_name: string | null;
  /** SHA-256 of the file's bytes, hex. */
  checksum: string | null;
  row_count: number | null;
  byte_count: number | null;
  attempts: number;
  /** Successful uploads: more than 1 only after `kessai charts send --force`. */
  sends: number;
  error: string | null;
  locked_until: string | null;
  created_at: string;
  updated_at: string;
  sent_at: string | null;
}

/** A logged-in browser (migration 0006). The id is the cookie secret's hash (`hashToken`), never the secret. */
export interface CustomerSessionTable {
  id: string;
  customer_id: string;
  created_at: string;
  /** Touched at most once a minute; the session ends when it is older than the idle limit. */
  last_seen_at: string;
  /** The absolute end, whatever the activity. */
  expires_at: string;
}

/** A mailed account link (migration 0006): only its hash (`hashToken`) is stored; single use. */
export interface AccountTokenTable {
  hash: string;
  customer_id: string;
  purpose: 'verify' | 'reset' | 'email_change';
  /** The address an `email_change` token moves the account to. */
  new_email: string | null;
  /** The mail job that minted it: a retried job replaces its own unsent token. */
  job_id: string | null;
  expires_at: string;
  used_at: string | null;
  created_at: string;
}

/** A fixed-window counter of one rate-limit rule for one IP or email hash (migration 0006). */
export interface RateLimitTable {
  bucket: string;
  window_start: string;
  hits: number;
}

export interface CustomerLinkTable {
  customer_id: string;
  party: 'atone' | 'chekicha';
  /** The party's own id for the member (atone's user_no). */
  external_id: string | null;
  /** Sealed with the master key (commerce/secrets.ts): atone's authentication token. */
  secret: string | null;
  linked_at: string;
  updated_at: string;
}

/** One attempt to hand a mail over (migration 0008); a retried mail has a row per attempt. */
export interface MailLogTable {
  id: string;
  job_id: string;
  template: string;
  recipient: string;
  subject: string;
  /** The Message-ID header, the same on every attempt of one mail. */
  message_id: string;
  outcome: 'sent' | 'failed';
  /** The SMTP server's answer (or the error, or the file written in development). */
  response: string | null;
  attempt: number;
  created_at: string;
}

/** A message sent through the inquiry form (migration 0008), stored before any mail about it. */
export interface InquiryTable {
  id: string;
  shop_id: string;
  /** The number shown to the customer, e.g. Q260123-7F3K9QAB. */
  reference: string;
  name: string;
  email: string;
  category: string;
  order_number: string | null;
  body: string;
  created_at: string;
}

/** A checkout request's key and the order it made (migration 0013). `request`: a digest of what was asked. */
export interface CheckoutKeyTable {
  shop_id: string;
  key: string;
  order_id: string;
  request: string;
  created_at: string;
}

export interface Database {
  checkout_keys: CheckoutKeyTable;
  customer_links: CustomerLinkTable;
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
  payment_operations: PaymentOperationTable;
  alerts: AlertTable;
  tickets: TicketTable;
  serial_code_specs: SerialCodeSpecTable;
  serial_code_batches: SerialCodeBatchTable;
  serial_codes: SerialCodeTable;
  chart_runs: ChartRunTable;
  customer_sessions: CustomerSessionTable;
  account_tokens: AccountTokenTable;
  rate_limits: RateLimitTable;
  subscriptions: SubscriptionTable;
  subscription_orders: SubscriptionOrderTable;
  mail_log: MailLogTable;
  inquiries: InquiryTable;
}

export type Shop = Selectable<ShopTable>;
export type Product = Selectable<ProductTable>;
export type Sku = Selectable<SkuTable>;
export type Order = Selectable<OrderTable>;
export type OrderLine = Selectable<OrderLineTable>;
export type PaymentAttempt = Selectable<PaymentAttemptTable>;
export type PaymentEvent = Selectable<PaymentEventTable>;
export type NewPaymentEvent = Insertable<PaymentEventTable>;
export type Ticket = Selectable<TicketTable>;
export type SerialCodeBatch = Selectable<SerialCodeBatchTable>;
export type Job = Selectable<JobTable>;
export type NewJob = Insertable<JobTable>;
export type JobUpdate = Updateable<JobTable>;
export type ChartRun = Selectable<ChartRunTable>;

/** A member's recurring purchase of one SKU (migration 0009). */
export interface SubscriptionTable {
  id: string;
  shop_id: string;
  customer_id: string;
  sku_id: string;
  quantity: number;
  interval_months: number;
  /** The gateway that charges the renewals with the member's token (atone). */
  provider: string;
  /** The paid order that started it. */
  source_order_id: string;
  /** JST calendar date (YYYY-MM-DD) of the next renewal order. */
  next_date: string;
  state: 'active' | 'cancelled';
  created_at: string;
  updated_at: string;
  cancelled_at: string | null;
}

/** A renewal order of a subscription; one per due date (migration 0009). */
export interface SubscriptionOrderTable {
  subscription_id: string;
  due_date: string;
  order_id: string;
  created_at: string;
}

export type Subscription = Selectable<SubscriptionTable>;
export type MailLogEntry = Selectable<MailLogTable>;
export type Inquiry = Selectable<InquiryTable>;
