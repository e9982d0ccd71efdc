import { sql, type Kysely } from 'kysely';

/*
 * Chart reports (Oricon, Billboard Japan). One row per shop, target and reporting date: the record
 * of that day's file — its checksum and row count, every attempt, the last error, when it was sent.
 * The unique key is what makes a second send of the same date a deliberate act (`--force`), and
 * `locked_until` keeps the scheduled job and an operator's `kessai charts send` from uploading the
 * same day at once.
 *
 * The index on state_changes serves the sales query, which selects orders by the moment they
 * entered `shipped`; without it every daily run reads the whole history.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('chart_runs')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('shop_id', 'text', (c) => c.notNull().references('shops.id'))
    .addColumn('target', 'text', (c) => c.notNull().check(sql`target in ('oricon', 'billboard')`))
    .addColumn('report_date', 'text', (c) => c.notNull())
    .addColumn('outcome', 'text', (c) => c.notNull().check(sql`outcome in ('running', 'sent', 'failed', 'dead')`))
    .addColumn('file_name', 'text')
    .addColumn('checksum', 'text')
    .addColumn('row_count', 'integer')
    .addColumn('byte_count', 'integer')
    .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('sends', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('error', 'text')
    .addColumn('locked_until', 'text')
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .addColumn('sent_at', 'text')
    .addUniqueConstraint('chart_runs_day', ['shop_id', 'target', 'report_date'])
    .execute();

  await db.schema.createIndex('state_changes_to_state').on('state_changes').columns(['entity', 'to_state', 'at']).execute();
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex('state_changes_to_state').execute();
  await db.schema.dropTable('chart_runs').execute();
}
