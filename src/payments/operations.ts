import type { Context } from '../context.js';
import { forUpdate, type Db, type Tx } from '../db/index.js';
import type { PaymentAttempt, PaymentOperationTable } from '../db/schema.js';
import { invalid, KessaiError, RetryLater, StopRetrying } from '../errors.js';
import { nowIso } from '../ids.js';

/*
 * Money operations (capture, refund, cancel) are outbox jobs, and a job may run more than once: after
 * a crash, a timeout (the first run may still be finishing), or a failure to record its success.
 * Gateways with idempotency keys make a repeated call harmless; SBPS's XML API has none, and its
 * inquiry cannot show what was refunded. So each job's operation is a `payment_operations` row:
 * - one operation at a time per payment: another job for the same payment waits (its run fails
 *   with a retryable error and the dispatcher tries again later), so a second refund sees the first
 *   one's result instead of racing it;
 * - a repeated run of a job whose operation was carried out and applied (`done`) does nothing;
 * - a call that cannot be checked afterwards is marked `sent` just before it goes out, and a later
 *   run of the same job stops instead of sending it again (StopRetrying: a person looks).
 */

export type OperationKind = PaymentOperationTable['kind'];

/** Given to a provider's money operation. */
export interface OperationRun {
  /**
   * Call right before a gateway call whose outcome could not be read back afterwards. Throws
   * StopRetrying when an earlier run of the same job already got this far: the call may have
   * happened, and only a person can find out.
   */
  sending(): Promise<void>;
  /** The call marked by `sending` was refused outright (the gateway answered no): a later run may send it. */
  notSent(): Promise<void>;
}

/** Another operation on the same payment is under way: this job runs again a little later, at no cost in attempts. */
export class PaymentBusy extends RetryLater {
  override name = 'PaymentBusy';
}

/**
 * Starts (or resumes) the job's operation on an attempt. Answers undefined when an earlier run of
 * this job already carried it out and applied the result.
 */
export async function beginOperation(ctx: Context, jobId: string, attemptId: string, kind: OperationKind, amount: number): Promise<OperationRun | undefined> {
  const started = await ctx.db.transaction().execute(async (tx) => {
    // The attempt's row serialises the begins of concurrent jobs on PostgreSQL (SQLite has one writer).
    await forUpdate(ctx.engine, tx.selectFrom('payment_attempts').select('id').where('id', '=', attemptId)).executeTakeFirstOrThrow();
    const mine = await tx.selectFrom('payment_operations').select(['state', 'created_at']).where('job_id', '=', jobId).executeTakeFirst();
    if (mine?.state === 'done') return false;
    let others = tx
      .selectFrom('payment_operations')
      .innerJoin('jobs', 'jobs.id', 'payment_operations.job_id')
      .select(['payment_operations.job_id', 'payment_operations.kind'])
      .where('payment_operations.attempt_id', '=', attemptId)
      .where('payment_operations.state', '!=', 'done')
      .where('payment_operations.job_id', '!=', jobId)
      // A dead job's operation is over (a person was alerted); a waiting or running one is not.
      .where('jobs.state', 'in', ['pending', 'running']);
    // Of two operations both under way (jobs an operator ran again), the older goes first.
    if (mine) {
      const { created_at: since } = mine;
      others = others.where((eb) => eb.or([eb('payment_operations.created_at', '<', since), eb.and([eb('payment_operations.created_at', '=', since), eb('payment_operations.job_id', '<', jobId)])]));
    }
    const other = await others.executeTakeFirst();
    if (other) throw new PaymentBusy(`payment ${attemptId} is busy with a ${other.kind} (job ${other.job_id}); this ${kind} runs after it`);
    if (!mine) {
      const at = nowIso();
      await tx.insertInto('payment_operations').values({ job_id: jobId, attempt_id: attemptId, kind, amount, state: 'started', created_at: at, updated_at: at }).execute();
    }
    return true;
  });
  if (!started) return undefined;
  return {
    async sending() {
      const marked = await ctx.db
        .updateTable('payment_operations')
        .set({ state: 'sent', updated_at: nowIso() })
        .where('job_id', '=', jobId)
        .where('state', '=', 'started')
        .executeTakeFirst();
      if (marked.numUpdatedRows === 0n) {
        throw new StopRetrying(`an earlier run of job ${jobId} already sent this ${kind} of ${amount} yen and its outcome was never recorded; check the gateway's console before doing anything again`);
      }
    },
    async notSent() {
      await ctx.db.updateTable('payment_operations').set({ state: 'started', updated_at: nowIso() }).where('job_id', '=', jobId).where('state', '=', 'sent').execute();
    },
  };
}

/** The job's operation was carried out and its result applied: a later run of the job does nothing. */
export async function finishOperation(ctx: Context, jobId: string): Promise<void> {
  await ctx.db.updateTable('payment_operations').set({ state: 'done', updated_at: nowIso() }).where('job_id', '=', jobId).execute();
}

/**
 * What may still be refunded of an attempt: captured, less refunded, less the refunds waiting in the
 * outbox (`except`: a job not to count, the one being retried). Every way to ask for a refund checks
 * this: the operator's request, an order edit that lowers the total, a dead refund job run again.
 */
export async function refundableAmount(db: Db | Tx, attempt: Pick<PaymentAttempt, 'id' | 'captured_amount' | 'refunded_amount'>, except?: string): Promise<{ refundable: number; queued: number; detail: string }> {
  let waiting = db.selectFrom('jobs').select(['id', 'payload']).where('kind', '=', 'payment.refund').where('state', 'in', ['pending', 'running']);
  if (except) waiting = waiting.where('id', '!=', except);
  const queued = (await waiting.execute())
    .map((j) => JSON.parse(j.payload) as { attemptId: string; amount: number })
    .filter((j) => j.attemptId === attempt.id)
    .reduce((sum, j) => sum + j.amount, 0);
  const refundable = attempt.captured_amount - attempt.refunded_amount - queued;
  return { refundable, queued, detail: `captured ${attempt.captured_amount}, refunded ${attempt.refunded_amount}, queued ${queued}` };
}

/** Refuses a refund of `amount` that would exceed what is refundable (the field named is `amount`). */
export async function checkRefundable(db: Db | Tx, attempt: Pick<PaymentAttempt, 'id' | 'captured_amount' | 'refunded_amount'>, amount: number, except?: string): Promise<void> {
  const { refundable, detail } = await refundableAmount(db, attempt, except);
  if (amount > refundable) throw invalid([{ field: 'amount', reason: `exceeds the refundable ${refundable} yen (${detail})` }]);
}

/**
 * A dead refund job run again must still fit: since it died, the operator may have asked for
 * another refund of the same money. Checked under the order's lock, as a new refund request is.
 */
export async function checkRefundRetry(ctx: Context, tx: Tx, job: { id: string; payload: string }): Promise<void> {
  const { attemptId, amount } = JSON.parse(job.payload) as { attemptId: string; amount: number };
  const { order_id: orderId } = await tx.selectFrom('payment_attempts').select('order_id').where('id', '=', attemptId).executeTakeFirstOrThrow();
  await forUpdate(ctx.engine, tx.selectFrom('orders').select('id').where('id', '=', orderId)).executeTakeFirst();
  const attempt = await tx.selectFrom('payment_attempts').selectAll().where('id', '=', attemptId).executeTakeFirstOrThrow();
  const { refundable, detail } = await refundableAmount(tx, attempt, job.id);
  if (amount > refundable) {
    throw new KessaiError('not_refundable', `job ${job.id} would refund ${amount} yen, more than the refundable ${refundable} yen (${detail}); it stays dead`, 409);
  }
}
