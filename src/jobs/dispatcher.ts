import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { ExpressionBuilder } from 'kysely';
import type { Context } from '../context.js';
import { RetryLater, StopRetrying } from '../errors.js';
import { insertRow, insertRows } from '../db/insert.js';
import type { Database, Job } from '../db/schema.js';
import { newId, nowIso } from '../ids.js';
import type { JobKind, JobRegistry } from './registry.js';

export interface DispatcherOptions {
  /** Written to `jobs.locked_by` and `job_runs.worker`; unique per dispatcher by default. */
  workerId?: string;
  /** Jobs run at the same time by this dispatcher (default 4). */
  concurrency?: number;
  /** Pause between claims when nothing was due (default 500 ms). */
  pollMs?: number;
  /** Most jobs taken in one claim (default: concurrency). */
  batch?: number;
  /** Retry delay ceiling for the first retry, doubled per attempt (default 5 s). */
  backoffBaseMs?: number;
  /** Largest retry delay ceiling (default 1 h). */
  backoffCapMs?: number;
  /**
   * Added to a run's timeout to get its lock: a worker that is alive records the outcome within
   * timeout + grace, so a lock older than that belongs to a dead worker (default 30 s).
   */
  lockGraceMs?: number;
}

/** A claimed job and the `job_runs` row recording this attempt. */
interface Claim {
  job: Job;
  runId: string;
}

const MAX_ERROR_LENGTH = 2000;
/** A run that must wait (RetryLater) comes again after 2.5 to 7.5 seconds. */
const WAIT_MS = 5_000;

export class JobTimeoutError extends Error {
  override name = 'JobTimeoutError';
  constructor(readonly timeoutMs: number) {
    super(`job run timed out after ${timeoutMs / 1000} s`);
  }
}

/**
 * "Full jitter" exponential backoff: uniformly random below a ceiling that doubles per attempt.
 * Spreading retries randomly keeps a recovering gateway from being hit by every failed job at once.
 */
export function retryDelayMs(attempt: number, baseMs: number, capMs: number, random: () => number = Math.random): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.max(0, attempt - 1));
  return Math.floor(random() * ceiling);
}

/**
 * Claims due jobs from the outbox and runs them. Any number of dispatchers (in any number of
 * processes) may share one database: a claim is atomic, and a job whose worker died is taken over
 * once its lock expires. A run's outcome is written only while this dispatcher still holds the
 * lock for that attempt, so a worker that was overtaken cannot overwrite the newer run's result.
 */
export class Dispatcher {
  readonly workerId: string;
  private readonly concurrency: number;
  private readonly pollMs: number;
  private readonly batch: number;
  private readonly backoffBaseMs: number;
  private readonly backoffCapMs: number;
  private readonly lockGraceMs: number;

  private readonly inFlight = new Set<Promise<void>>();
  private loop: Promise<void> | undefined;
  private stopping = false;
  /** The last claim suggested more due jobs than we could take: claim again when a slot frees. */
  private backlog = false;
  private wake: (() => void) | undefined;

  constructor(
    private readonly ctx: Context,
    private readonly registry: JobRegistry,
    opts: DispatcherOptions = {},
  ) {
    this.workerId = opts.workerId ?? `${hostname()}/${process.pid}/${randomBytes(3).toString('hex')}`;
    this.concurrency = Math.max(1, opts.concurrency ?? 4);
    this.pollMs = opts.pollMs ?? 500;
    this.batch = Math.max(1, Math.min(opts.batch ?? this.concurrency, this.concurrency));
    this.backoffBaseMs = opts.backoffBaseMs ?? 5_000;
    this.backoffCapMs = opts.backoffCapMs ?? 3_600_000;
    this.lockGraceMs = opts.lockGraceMs ?? 30_000;
  }

  start(): void {
    if (this.loop) return;
    this.stopping = false;
    this.loop = this.pollLoop();
  }

  /** Stops claiming and resolves once every job already claimed has finished and been recorded. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.wake?.();
    await this.loop;
    this.loop = undefined;
    await Promise.all([...this.inFlight]);
  }

  /** Claims one batch, runs it to the end and returns how many jobs it ran. */
  async runOnce(): Promise<number> {
    const claims = await this.claim(this.batch);
    await Promise.all(claims.map((c) => this.track(c)));
    return claims.length;
  }

  private async pollLoop(): Promise<void> {
    while (!this.stopping) {
      const free = Math.min(this.batch, this.concurrency - this.inFlight.size);
      let claimed = 0;
      if (free > 0) {
        try {
          const claims = await this.claim(free);
          for (const c of claims) void this.track(c);
          claimed = claims.length;
        } catch (err) {
          this.ctx.log.error({ err }, 'claiming jobs failed; trying again after the poll interval');
        }
      }
      // A full claim means more jobs are probably due: go again as soon as a slot is free.
      this.backlog = free === 0 || claimed === free;
      if (this.backlog && this.inFlight.size < this.concurrency && !this.stopping) continue;
      await this.pause();
    }
  }

  private pause(): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.wake = undefined;
        resolve();
      };
      const timer = setTimeout(done, this.pollMs);
      this.wake = done;
    });
  }

  private track(claim: Claim): Promise<void> {
    const run: Promise<void> = this.execute(claim).finally(() => {
      this.inFlight.delete(run);
      if (this.backlog) this.wake?.();
    });
    this.inFlight.add(run);
    return run;
  }

  /**
   * Takes up to `limit` due jobs: pending ones whose time has come, and running ones whose lock
   * expired (their worker died or hung). Each claim bumps `attempts`, so the attempt number also
   * identifies this run's lock.
   */
  private async claim(limit: number): Promise<Claim[]> {
    const now = new Date();
    const at = nowIso(now);
    const due = (eb: ExpressionBuilder<Database, 'jobs'>) =>
      eb.or([
        eb.and([eb('state', '=', 'pending'), eb('run_at', '<=', at)]),
        eb.and([eb('state', '=', 'running'), eb('locked_until', '<', at)]),
      ]);
    const lock = (eb: ExpressionBuilder<Database, 'jobs'>) => ({
      state: 'running' as const,
      locked_by: this.workerId,
      locked_until: this.lockUntil(eb, now),
      attempts: eb('attempts', '+', 1),
      // Taken again while still `running`: the last run recorded no outcome (see migration 0012).
      lost_runs: eb.case().when('state', '=', 'running').then(eb('lost_runs', '+', 1)).else(0).end(),
      updated_at: at,
    });

    return this.ctx.db.transaction().execute(async (tx) => {
      let jobs: Job[];
      if (this.ctx.engine === 'postgres') {
        // One statement; SKIP LOCKED lets concurrent workers pass over each other's rows instead
        // of waiting for them or taking them twice. The pick is a materialized CTE, run exactly once:
        // as an IN (subquery) PostgreSQL may run it again, and with SKIP LOCKED a second run finds
        // other rows, so more than `limit` jobs could be claimed (as serial-codes.ts saw).
        jobs = await tx
          .with(
            (cte) => cte('picked').materialized(),
            (db) => db.selectFrom('jobs').select('id').where(due).orderBy('run_at').limit(limit).forUpdate().skipLocked(),
          )
          .updateTable('jobs')
          .set(lock)
          .where('id', 'in', (eb) => eb.selectFrom('picked').select('picked.id'))
          .returningAll()
          .execute();
      } else {
        // BEGIN IMMEDIATE holds SQLite's single write lock for the whole transaction.
        const ids = await tx.selectFrom('jobs').select('id').where(due).orderBy('run_at').limit(limit).execute();
        if (ids.length === 0) return [];
        jobs = await tx
          .updateTable('jobs')
          .set(lock)
          .where('id', 'in', ids.map((r) => r.id))
          .returningAll()
          .execute();
      }
      if (jobs.length === 0) return [];
      const claims = jobs.map((job) => ({ job, runId: newId('run') }));
      await insertRows(
        tx,
        'job_runs',
        claims.map(({ job, runId }) => ({
          id: runId,
          job_id: job.id,
          attempt: job.attempts,
          worker: this.workerId,
          started_at: at,
          finished_at: null,
          outcome: 'running' as const,
          error: null,
        })),
      );
      return claims;
    });
  }

  /** now + the kind's timeout + grace, chosen in SQL because the claimed rows' kinds are not known yet. */
  private lockUntil(eb: ExpressionBuilder<Database, 'jobs'>, now: Date) {
    const until = (kind?: JobKind) => nowIso(new Date(now.getTime() + this.timeoutMs(kind) + this.lockGraceMs));
    const custom = this.registry
      .kinds()
      .map((name) => this.registry.get(name)!)
      .filter((kind) => kind.timeoutSeconds !== undefined);
    if (custom.length === 0) return eb.val(until());
    let expr = eb.case().when('kind', '=', custom[0]!.kind).then(until(custom[0]));
    for (const kind of custom.slice(1)) expr = expr.when('kind', '=', kind.kind).then(until(kind));
    return expr.else(until()).end();
  }

  private timeoutMs(kind: JobKind | undefined): number {
    return (kind?.timeoutSeconds ?? this.ctx.config.jobTimeoutSeconds) * 1000;
  }

  private async execute({ job, runId }: Claim): Promise<void> {
    const kind = this.registry.get(job.kind);
    const attempt = job.attempts;
    const log = this.ctx.log.child({ job: job.id, kind: job.kind, attempt });
    let failure: { error: unknown } | undefined;
    const maxAttempts = kind?.maxAttempts ?? this.ctx.config.jobMaxAttempts;
    try {
      // Claimed again after a run that recorded no outcome: a job that kills or hangs its worker
      // every time would otherwise take down one worker after another, for ever, with no alert.
      if (job.lost_runs > 0 && attempt > maxAttempts) {
        throw new Error(`run ${attempt - 1} of ${maxAttempts} ended without an outcome (its worker died or hung); not run again`);
      }
      if (!kind) {
        throw new Error(
          `no handler for job kind "${job.kind}" is registered in this worker ` +
            `(known: ${this.registry.kinds().join(', ') || 'none'}); it will retry and then dead-letter`,
        );
      }
      const payload: unknown = JSON.parse(job.payload);
      await runWithTimeout(
        (signal) => kind.run(payload, { ctx: this.ctx, jobId: job.id, attempt, signal, log }),
        this.timeoutMs(kind),
      );
    } catch (error) {
      failure = { error };
    }
    try {
      if (failure) await this.recordFailure(job, runId, kind, failure.error, log);
      else await this.recordSuccess(job, runId, log);
    } catch (err) {
      // The lock stays; once it expires another run takes the job, so nothing is lost.
      log.error({ err }, 'could not record the job outcome; it will run again after its lock expires');
    }
  }

  /** Matches the job only while this dispatcher still holds it for this very attempt. */
  private held(job: Job) {
    return (eb: ExpressionBuilder<Database, 'jobs'>) =>
      eb.and([
        eb('id', '=', job.id),
        eb('state', '=', 'running'),
        eb('locked_by', '=', this.workerId),
        eb('attempts', '=', job.attempts),
      ]);
  }

  private async recordSuccess(job: Job, runId: string, log: Context['log']): Promise<void> {
    const at = nowIso();
    const held = await this.ctx.db.transaction().execute(async (tx) => {
      const result = await tx
        .updateTable('jobs')
        .set({ state: 'done', finished_at: at, updated_at: at, locked_by: null, locked_until: null })
        .where(this.held(job))
        .executeTakeFirst();
      await tx.updateTable('job_runs').set({ outcome: 'succeeded', finished_at: at }).where('id', '=', runId).execute();
      return result.numUpdatedRows > 0n;
    });
    this.ctx.metrics.jobsProcessed.inc({ kind: job.kind, outcome: 'succeeded' });
    if (held) log.debug('job done');
    else log.warn('job succeeded after its lock expired; the newer run owns the job');
  }

  private async recordFailure(
    job: Job,
    runId: string,
    kind: JobKind | undefined,
    error: unknown,
    log: Context['log'],
  ): Promise<void> {
    const message = describe(error);
    const now = new Date();
    const at = nowIso(now);
    // A handler that knows a retry could do harm (an outcome it cannot check) stops at once.
    // A run that had to wait did nothing: it gives its attempt back and comes again soon.
    const waiting = error instanceof RetryLater;
    const exhausted = !waiting && (error instanceof StopRetrying || job.attempts >= (kind?.maxAttempts ?? this.ctx.config.jobMaxAttempts));
    const retryAt = nowIso(new Date(now.getTime() + (waiting ? WAIT_MS / 2 + retryDelayMs(1, WAIT_MS, WAIT_MS) : retryDelayMs(job.attempts, this.backoffBaseMs, this.backoffCapMs))));

    const held = await this.ctx.db.transaction().execute(async (tx) => {
      const result = await tx
        .updateTable('jobs')
        .set(
          exhausted
            ? { state: 'dead', last_error: message, finished_at: at, updated_at: at, locked_by: null, locked_until: null }
            : { state: 'pending', last_error: message, run_at: retryAt, updated_at: at, locked_by: null, locked_until: null, ...(waiting ? { attempts: job.attempts - 1 } : {}) },
        )
        .where(this.held(job))
        .executeTakeFirst();
      const held = result.numUpdatedRows > 0n;
      if (held && exhausted) {
        await insertRow(tx, 'alerts', {
          id: newId('alr'),
          kind: 'job_dead',
          message: `job ${job.kind} ${job.id} failed ${job.attempts} time(s) and was dead-lettered; last error: ${message}`,
          ref: job.id,
          created_at: at,
          resolved_at: null,
        });
      }
      await tx
        .updateTable('job_runs')
        .set({ outcome: held && exhausted ? 'dead' : 'failed', finished_at: at, error: message })
        .where('id', '=', runId)
        .execute();
      return held;
    });

    if (!held) {
      this.ctx.metrics.jobsProcessed.inc({ kind: job.kind, outcome: 'failed' });
      log.warn({ error: message }, 'job failed after its lock expired; the newer run owns the job');
    } else if (exhausted) {
      this.ctx.metrics.jobsProcessed.inc({ kind: job.kind, outcome: 'dead' });
      this.ctx.metrics.jobsDead.inc({ kind: job.kind });
      log.error({ error: message }, 'job dead-lettered: it needs an operator (alert raised)');
    } else if (waiting) {
      log.info({ reason: message, retryAt }, 'job waits; it runs again soon');
    } else {
      this.ctx.metrics.jobsProcessed.inc({ kind: job.kind, outcome: 'failed' });
      log.warn({ error: message, retryAt }, 'job failed; will retry');
    }
  }
}

/**
 * Races the handler against its timeout. The signal asks a cooperative handler to stop; one that
 * ignores it keeps running in the background while the job is retried, which at-least-once
 * handlers must tolerate anyway.
 */
async function runWithTimeout(run: (signal: AbortSignal) => Promise<void>, timeoutMs: number): Promise<void> {
  const controller = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const error = new JobTimeoutError(timeoutMs);
      controller.abort(error);
      reject(error);
    }, timeoutMs);
  });
  try {
    await Promise.race([Promise.resolve().then(() => run(controller.signal)), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function describe(error: unknown): string {
  const text = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  return text.length > MAX_ERROR_LENGTH ? `${text.slice(0, MAX_ERROR_LENGTH)}…` : text;
}
