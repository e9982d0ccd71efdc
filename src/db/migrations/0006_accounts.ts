import { sql, type Kysely } from 'kysely';

/*
 * Customer accounts (src/accounts/). A registered customer is a `customers` row with a password
 * hash (migration 0001); these tables hold what logging in and proving a mailbox need.
 *
 * - customer_sessions: one row per logged-in browser. The id is the SHA-256 of the cookie's secret,
 *   so a copy of the table logs no one in. Expires when idle (last_seen_at) or at expires_at.
 * - account_tokens: the links mailed to verify an address, reset a password or confirm a new address.
 *   Only the hash is stored; the mail job that sends a link mints it (job_id), so a retried job
 *   replaces its own unsent token. Single use: used_at is set in the transaction that acts on it.
 * - rate_limits: fixed-window counters shared by every server process (login, reset, register),
 *   keyed by rule and a hash of the IP address or email.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('customer_sessions')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('customer_id', 'text', (c) => c.notNull().references('customers.id'))
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('last_seen_at', 'text', (c) => c.notNull())
    .addColumn('expires_at', 'text', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('customer_sessions_customer').on('customer_sessions').column('customer_id').execute();
  await db.schema.createIndex('customer_sessions_expiry').on('customer_sessions').column('expires_at').execute();

  await db.schema
    .createTable('account_tokens')
    .addColumn('hash', 'text', (c) => c.primaryKey())
    .addColumn('customer_id', 'text', (c) => c.notNull().references('customers.id'))
    .addColumn('purpose', 'text', (c) => c.notNull().check(sql`purpose in ('verify', 'reset', 'email_change')`))
    .addColumn('new_email', 'text')
    .addColumn('job_id', 'text')
    .addColumn('expires_at', 'text', (c) => c.notNull())
    .addColumn('used_at', 'text')
    .addColumn('created_at', 'text', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('account_tokens_customer').on('account_tokens').columns(['customer_id', 'purpose']).execute();
  await db.schema.createIndex('account_tokens_job').on('account_tokens').column('job_id').execute();

  await db.schema
    .createTable('rate_limits')
    .addColumn('bucket', 'text', (c) => c.primaryKey())
    .addColumn('window_start', 'text', (c) => c.notNull())
    .addColumn('hits', 'integer', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('rate_limits_window').on('rate_limits').column('window_start').execute();

  // The my page: a customer's orders, and guest orders placed with the account's verified address.
  await db.schema.createIndex('orders_customer').on('orders').columns(['customer_id', 'created_at']).execute();
  await sql`create index orders_shop_email on orders (shop_id, lower(email))`.execute(db);
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex('orders_shop_email').execute();
  await db.schema.dropIndex('orders_customer').execute();
  for (const table of ['rate_limits', 'account_tokens', 'customer_sessions']) await db.schema.dropTable(table).execute();
}
