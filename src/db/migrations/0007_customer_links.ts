import { sql, type Kysely } from 'kysely';

/*
 * A member's accounts at outside parties: atone's authentication token (passed back as pre_token so
 * the member need not log in to atone again), later Chekicha's account link. The token is a secret
 * of the member's, sealed with the master key like the shops' secrets; one link per party.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('customer_links')
    .addColumn('customer_id', 'text', (c) => c.notNull().references('customers.id'))
    .addColumn('party', 'text', (c) => c.notNull().check(sql`party in ('atone', 'chekicha')`))
    .addColumn('external_id', 'text')
    .addColumn('secret', 'text')
    .addColumn('linked_at', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('customer_links_pk', ['customer_id', 'party'])
    .execute();
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('customer_links').execute();
}
