import { sql, type Kysely } from 'kysely';

/*
 * Event tickets: one row per admission, issued when a ticket order is paid. The code is the
 * ticket's only secret (it is what the QR carries), so it is unique across every shop; the serial
 * numbers an order's tickets 1…n and is unique per order, which also makes a second issue of the
 * same order fail instead of doubling its tickets.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('tickets')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('shop_id', 'text', (c) => c.notNull().references('shops.id'))
    .addColumn('order_id', 'text', (c) => c.notNull().references('orders.id'))
    .addColumn('order_line_id', 'text', (c) => c.notNull().references('order_lines.id'))
    .addColumn('sku_id', 'text', (c) => c.notNull().references('skus.id'))
    .addColumn('serial', 'integer', (c) => c.notNull().check(sql`serial > 0`))
    .addColumn('code', 'text', (c) => c.notNull().unique())
    .addColumn('state', 'text', (c) => c.notNull().check(sql`state in ('issued', 'void')`))
    .addColumn('issued_at', 'text', (c) => c.notNull())
    .addColumn('voided_at', 'text')
    .addUniqueConstraint('tickets_order_serial', ['order_id', 'serial'])
    .execute();
  // The door list of one event (SKU).
  await db.schema.createIndex('tickets_sku').on('tickets').columns(['sku_id', 'state']).execute();
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('tickets').execute();
}
