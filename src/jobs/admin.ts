import type { Selectable } from 'kysely';
import type { Db } from '../db/index.js';
import type { AlertTable, Job, JobTable } from '../db/schema.js';
import { nowIso } from '../ids.js';
import { checkRefundRetry } from '../payments/operations.js';
import type { Context } from '../context.js';

export type Alert = Selectable<AlertTable>;

export interface JobFilter {
  state?: JobTable['state'];
  kind?: string;
  /** Default 100, at most 1000. */
  limit?: number;
}

/** Newest first. */
export async function listJobs(db: Db, filter: JobFilter = {}): Promise<Job[]> {
  let query = db.selectFrom('jobs').selectAll();
  if (filter.state) query = query.where('state', '=', filter.state);
  if (filter.kind) query = query.where('kind', '=', filter.kind);
  return query
    .orderBy('created_at', 'desc')
    .orderBy('id', 'desc')
    .limit(Math.min(Math.max(filter.limit ?? 100, 1), 1000))
    .execute();
}

/**
 * Runs a dead (or waiting) job again now. Its attempts are kept, so a revived job that fails once
 * more is dead-lettered again at once, with a new alert, rather than starting another retry series.
 * A refund is checked against what is still refundable first (payments/operations.ts). Returns
 * false when there is no such job, or it is running or already done.
 */
export async function retryJob(ctx: Context, id: string): Promise<boolean> {
  const at = nowIso();
  return ctx.db.transaction().execute(async (tx) => {
    const job = await tx.selectFrom('jobs').select(['id', 'kind', 'payload']).where('id', '=', id).where('state', 'in', ['dead', 'pending']).executeTakeFirst();
    if (!job) return false;
    if (job.kind === 'payment.refund') await checkRefundRetry(ctx, tx, job);
    const result = await tx
      .updateTable('jobs')
      .set({ state: 'pending', run_at: at, updated_at: at, finished_at: null, locked_by: null, locked_until: null })
      .where('id', '=', id)
      .where('state', 'in', ['dead', 'pending'])
      .executeTakeFirst();
    // Running it again is the answer to its dead-letter alert; dying again raises a new one.
    await tx.updateTable('alerts').set({ resolved_at: at }).where('kind', '=', 'job_dead').where('ref', '=', id).where('resolved_at', 'is', null).execute();
    return result.numUpdatedRows > 0n;
  });
}

/** Newest first; `open: true` only unresolved ones, `open: false` only resolved ones. */
export async function listAlerts(db: Db, filter: { open?: boolean } = {}): Promise<Alert[]> {
  let query = db.selectFrom('alerts').selectAll();
  if (filter.open === true) query = query.where('resolved_at', 'is', null);
  if (filter.open === false) query = query.where('resolved_at', 'is not', null);
  return query.orderBy('created_at', 'desc').orderBy('id', 'desc').limit(1000).execute();
}

/** Marks an open alert resolved; false when there is no such open alert. */
export async function resolveAlert(db: Db, id: string): Promise<boolean> {
  const result = await db
    .updateTable('alerts')
    .set({ resolved_at: nowIso() })
    .where('id', '=', id)
    .where('resolved_at', 'is', null)
    .executeTakeFirst();
  return result.numUpdatedRows > 0n;
}

/** For the `kessai_alerts_open` gauge. */
export async function countOpenAlerts(db: Db): Promise<number> {
  const row = await db
    .selectFrom('alerts')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('resolved_at', 'is', null)
    .executeTakeFirstOrThrow();
  return Number(row.n);
}
