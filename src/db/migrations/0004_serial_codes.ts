import { sql, type Kysely } from 'kysely';

/*
 * Chekicha serial codes. A product sells codes from kessai's pool once it has a spec (the artist,
 * group and code type every imported row must name). An import run is a batch; its codes are written
 * as they stream in but count only once the batch is `imported` (allocation joins on it), so a file
 * with one bad row imports nothing and the switch is one row, whatever the file's size. A code is
 * unique per product (the primary key, which is also what catches a code imported twice); it is
 * `available` until a paid order takes it (`assigned`, with the order line). Validity dates are
 * JST calendar dates, `YYYY-MM-DD`, inclusive at both ends.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('serial_code_specs')
    .addColumn('product_id', 'text', (c) => c.primaryKey().references('products.id'))
    .addColumn('artist_name', 'text', (c) => c.notNull())
    .addColumn('group_name', 'text', (c) => c.notNull())
    .addColumn('code_type', 'text', (c) => c.notNull())
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .execute();

  await db.schema
    .createTable('serial_code_batches')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('shop_id', 'text', (c) => c.notNull().references('shops.id'))
    .addColumn('product_id', 'text', (c) => c.notNull().references('products.id'))
    .addColumn('file_name', 'text', (c) => c.notNull())
    .addColumn('checksum', 'text', (c) => c.notNull())
    .addColumn('files', 'text', (c) => c.notNull().defaultTo('[]'))
    .addColumn('state', 'text', (c) => c.notNull().check(sql`state in ('importing', 'imported', 'rejected', 'abandoned')`))
    .addColumn('rows_read', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('rows_imported', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('rows_rejected', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('error', 'text')
    .addColumn('imported_by', 'text', (c) => c.notNull())
    .addColumn('started_at', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .addColumn('finished_at', 'text')
    .execute();
  await db.schema.createIndex('serial_code_batches_product').on('serial_code_batches').columns(['product_id', 'state']).execute();

  await db.schema
    .createTable('serial_codes')
    .addColumn('product_id', 'text', (c) => c.notNull().references('products.id'))
    .addColumn('code', 'text', (c) => c.notNull())
    .addColumn('shop_id', 'text', (c) => c.notNull().references('shops.id'))
    .addColumn('sku_id', 'text', (c) => c.notNull().references('skus.id'))
    .addColumn('batch_id', 'text', (c) => c.notNull().references('serial_code_batches.id'))
    .addColumn('artist_name', 'text', (c) => c.notNull())
    .addColumn('group_name', 'text', (c) => c.notNull())
    .addColumn('code_type', 'text', (c) => c.notNull())
    .addColumn('valid_from', 'text', (c) => c.notNull())
    .addColumn('valid_until', 'text', (c) => c.notNull())
    .addColumn('state', 'text', (c) => c.notNull().check(sql`state in ('available', 'assigned')`))
    .addColumn('order_id', 'text', (c) => c.references('orders.id'))
    .addColumn('order_line_id', 'text', (c) => c.references('order_lines.id'))
    .addColumn('assigned_at', 'text')
    // Where the code came from: the batch's n-th file (0-based, as listed in the batch) and its line.
    .addColumn('source_file', 'integer', (c) => c.notNull())
    .addColumn('source_line', 'integer', (c) => c.notNull())
    .addPrimaryKeyConstraint('serial_codes_pk', ['product_id', 'code'])
    .execute();
  // The allocation pick: a SKU's available codes, soonest to expire first.
  await db.schema.createIndex('serial_codes_pick').on('serial_codes').columns(['sku_id', 'state', 'valid_until']).execute();
  await db.schema.createIndex('serial_codes_order').on('serial_codes').column('order_id').where(sql.ref('order_id'), 'is not', null).execute();
  // Removing a rejected or abandoned batch's rows.
  await db.schema.createIndex('serial_codes_batch').on('serial_codes').columns(['batch_id', 'source_file', 'source_line']).execute();
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('serial_codes').execute();
  await db.schema.dropTable('serial_code_batches').execute();
  await db.schema.dropTable('serial_code_specs').execute();
}
