import { sql, type Kysely } from 'kysely';

/*
 * Transactional mail and the inquiry form.
 *
 * - mail_log: one row per attempt to hand a mail to the SMTP server (or, in development, to the
 *   mail folder): which job, which template, to whom, the Message-ID, and what the server answered.
 *   A retried mail has one row per attempt. Rows older than the retention are swept daily.
 * - inquiries: what a customer sent through the inquiry form, stored before any mail is queued, so
 *   a mail outage never loses one. `reference` is the number shown to the customer.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('mail_log')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('job_id', 'text', (c) => c.notNull())
    .addColumn('template', 'text', (c) => c.notNull())
    .addColumn('recipient', 'text', (c) => c.notNull())
    .addColumn('subject', 'text', (c) => c.notNull())
    .addColumn('message_id', 'text', (c) => c.notNull())
    .addColumn('outcome', 'text', (c) => c.notNull().check(sql`outcome in ('sent', 'failed')`))
    .addColumn('response', 'text')
    .addColumn('attempt', 'integer', (c) => c.notNull())
    .addColumn('created_at', 'text', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('mail_log_created').on('mail_log').column('created_at').execute();
  await db.schema.createIndex('mail_log_recipient').on('mail_log').columns(['recipient', 'created_at']).execute();
  await db.schema.createIndex('mail_log_job').on('mail_log').column('job_id').execute();

  await db.schema
    .createTable('inquiries')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('shop_id', 'text', (c) => c.notNull().references('shops.id'))
    .addColumn('reference', 'text', (c) => c.notNull().unique())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('email', 'text', (c) => c.notNull())
    .addColumn('category', 'text', (c) => c.notNull())
    .addColumn('order_number', 'text')
    .addColumn('body', 'text', (c) => c.notNull())
    .addColumn('created_at', 'text', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('inquiries_shop_created').on('inquiries').columns(['shop_id', 'created_at']).execute();
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  for (const table of ['inquiries', 'mail_log']) await db.schema.dropTable(table).execute();
}
