import { sql, type Kysely } from 'kysely';

/*
 * The payment-event inbox (record, answer, apply): a verified notification's facts are recorded as
 * `payment_events` rows with outcome `received` before the gateway gets its answer, and applied
 * right after. `fact` keeps what the applier needs (the GatewayFact without its payload, which
 * `payload` already holds); `applied_at` says when it was applied. The partial index holds only
 * rows still waiting, so the sweep that finds them stays small however long the table grows.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('payment_events').addColumn('fact', 'text').execute();
  await db.schema.alterTable('payment_events').addColumn('applied_at', 'text').execute();
  await db.schema
    .createIndex('payment_events_received')
    .on('payment_events')
    .columns(['received_at', 'id'])
    .where(sql.ref('outcome'), '=', 'received')
    .execute();
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  // Without `fact` a received event can no longer be applied: refuse rather than lose a payment.
  const waiting = await db
    .selectFrom('payment_events')
    .select((eb) => eb.fn.countAll().as('n'))
    .where('outcome', '=', 'received')
    .executeTakeFirstOrThrow();
  if (Number(waiting.n) > 0) {
    throw new Error(`${String(waiting.n)} recorded notification(s) are not applied yet; run \`kessai worker\` until none are left, then migrate down`);
  }
  await db.schema.dropIndex('payment_events_received').execute();
  await db.schema.alterTable('payment_events').dropColumn('applied_at').execute();
  await db.schema.alterTable('payment_events').dropColumn('fact').execute();
}
