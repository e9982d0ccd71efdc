import { sql, type Kysely } from 'kysely';

/*
 * Money operations at a gateway (capture, refund, cancel), one row per outbox job that performs one.
 * The row makes two things hold that the job alone could not: one operation at a time per payment
 * (a second refund waits until the first is done, so each sees what the other did), and a run that
 * repeats a job knows what an earlier run of it already did — carried out (`done`), or sent a call
 * whose outcome the gateway cannot be asked about afterwards (`sent`: SBPS's partial refund).
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('payment_operations')
    .addColumn('job_id', 'text', (c) => c.primaryKey().references('jobs.id'))
    .addColumn('attempt_id', 'text', (c) => c.notNull().references('payment_attempts.id'))
    .addColumn('kind', 'text', (c) => c.notNull().check(sql`kind in ('capture', 'refund', 'cancel')`))
    .addColumn('amount', 'integer', (c) => c.notNull())
    .addColumn('state', 'text', (c) => c.notNull().check(sql`state in ('started', 'sent', 'done')`))
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('payment_operations_attempt').on('payment_operations').columns(['attempt_id', 'state']).execute();
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('payment_operations').execute();
}
