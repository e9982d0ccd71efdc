import type { Db, Tx } from '../db/index.js';
import { insertRow } from '../db/insert.js';
import { newId, nowIso } from '../ids.js';

/** A side effect to perform after the caller's state change has committed. */
export interface JobRequest {
  kind: string;
  payload: unknown;
  /** Enqueueing the same key twice yields one job: lets a replayed command or several schedulers enqueue safely. */
  dedupeKey?: string;
  /** Not before this instant (default: now). */
  runAt?: Date;
}

/**
 * Records a job in the caller's transaction, so it exists exactly when the state change that
 * caused it committed: no network call happens inside the transaction, and a rollback leaves no
 * orphan job behind (DESIGN.md, payment pipeline rule 4).
 */
export async function enqueue(db: Db | Tx, job: JobRequest): Promise<void> {
  const now = nowIso();
  await insertRow(
    db,
    'jobs',
    {
      id: newId('job'),
      kind: job.kind,
      dedupe_key: job.dedupeKey ?? null,
      payload: JSON.stringify(job.payload ?? null),
      state: 'pending',
      attempts: 0,
      run_at: job.runAt ? nowIso(job.runAt) : now,
      created_at: now,
      updated_at: now,
    },
    { skipDuplicateOf: 'dedupe_key' },
  );
}
