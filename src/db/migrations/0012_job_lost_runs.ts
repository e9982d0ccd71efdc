import type { Kysely } from 'kysely';

/*
 * A run that records no outcome (its worker died or hung) leaves its job `running` until the lock
 * expires, and the next claim takes it again. `lost_runs` counts such runs in a row: a job that
 * kills its worker every time is dead-lettered with an alert once it has used its attempts, instead
 * of taking down one worker after another for ever. A run that records an outcome, or a job that
 * is claimed from `pending` (a retry, or an operator's "run again"), starts the count again.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('jobs').addColumn('lost_runs', 'integer', (c) => c.notNull().defaultTo(0)).execute();
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('jobs').dropColumn('lost_runs').execute();
}
