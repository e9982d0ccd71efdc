import type { Kysely } from 'kysely';

/*
 * One order per checkout request, however often it is sent: a double click on the confirm button,
 * or an API client retrying after a lost answer (its Idempotency-Key). The key is taken in the
 * order's transaction before any stock moves; a second request with it finds the first one's order.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('checkout_keys')
    .addColumn('shop_id', 'text', (c) => c.notNull().references('shops.id'))
    .addColumn('key', 'text', (c) => c.notNull())
    .addColumn('order_id', 'text', (c) => c.notNull())
    .addColumn('request', 'text', (c) => c.notNull())
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('checkout_keys_pk', ['shop_id', 'key'])
    .execute();
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('checkout_keys').execute();
}
