import { sql, type Kysely } from 'kysely';

/*
 * Recurring purchases. A product may be sold as a subscription (`recurring_interval_months`, null for
 * a one-off product). A paid order of a member makes one subscription per recurring line; each
 * renewal is an ordinary order, linked through `subscription_orders`, whose key (subscription, due
 * date) makes a renewal that runs twice create one order.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('products').addColumn('recurring_interval_months', 'integer').execute();
  await db.schema
    .createTable('subscriptions')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('shop_id', 'text', (c) => c.notNull().references('shops.id'))
    .addColumn('customer_id', 'text', (c) => c.notNull().references('customers.id'))
    .addColumn('sku_id', 'text', (c) => c.notNull().references('skus.id'))
    .addColumn('quantity', 'integer', (c) => c.notNull().check(sql`quantity > 0`))
    .addColumn('interval_months', 'integer', (c) => c.notNull().check(sql`interval_months between 1 and 12`))
    .addColumn('provider', 'text', (c) => c.notNull())
    .addColumn('source_order_id', 'text', (c) => c.notNull().references('orders.id'))
    .addColumn('next_date', 'text', (c) => c.notNull())
    .addColumn('state', 'text', (c) => c.notNull().check(sql`state in ('active', 'cancelled')`))
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .addColumn('cancelled_at', 'text')
    .addUniqueConstraint('subscriptions_source_sku', ['source_order_id', 'sku_id'])
    .execute();
  await db.schema.createIndex('subscriptions_due').on('subscriptions').columns(['state', 'next_date']).execute();
  await db.schema
    .createTable('subscription_orders')
    .addColumn('subscription_id', 'text', (c) => c.notNull().references('subscriptions.id'))
    .addColumn('due_date', 'text', (c) => c.notNull())
    .addColumn('order_id', 'text', (c) => c.notNull().unique().references('orders.id'))
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('subscription_orders_pk', ['subscription_id', 'due_date'])
    .execute();
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('subscription_orders').execute();
  await db.schema.dropTable('subscriptions').execute();
  await db.schema.alterTable('products').dropColumn('recurring_interval_months').execute();
}
