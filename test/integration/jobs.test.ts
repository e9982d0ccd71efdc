import assert from 'node:assert/strict';
import { tmpdir } from 'node:os';
import { it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadConfig } from '../../src/config.js';
import type { Context } from '../../src/context.js';
import { RetryLater } from '../../src/errors.js';
import { openDatabase, type DatabaseHandle, type Db } from '../../src/db/index.js';
import type { Job } from '../../src/db/schema.js';
import { listAlerts, listJobs, resolveAlert, retryJob } from '../../src/jobs/admin.js';
import { Dispatcher, retryDelayMs } from '../../src/jobs/dispatcher.js';
import { enqueue } from '../../src/jobs/outbox.js';
import { JobRegistry, type JobKind } from '../../src/jobs/registry.js';
import { enqueueTick, nextRuns, Scheduler, type Schedule } from '../../src/jobs/schedules.js';
import { createLogger, Metrics } from '../../src/observability.js';
import { forEachEngine, testDatabase, type Engine, type TestDatabase } from '../helpers/db.js';

function contextFor(handle: DatabaseHandle, url: string, env: Record<string, string> = {}): Context {
  const config = loadConfig({
    DATABASE_URL: url,
    KESSAI_DATA_DIR: tmpdir(),
    KESSAI_MASTER_KEY: '0'.repeat(64),
    KESSAI_ADMIN_TOKEN: 'test-admin-token-0123456789',
    KESSAI_JOB_MAX_ATTEMPTS: '3',
    KESSAI_JOB_TIMEOUT_SECONDS: '5',
    ...env,
  });
  return { config, db: handle.db, engine: handle.engine, log: createLogger('silent'), metrics: new Metrics() };
}

/** A fresh database per test, so counts of jobs mean this test's jobs. */
async function withDatabase(engine: Engine, fn: (t: TestDatabase, ctx: Context) => Promise<void>): Promise<void> {
  const t = await testDatabase(engine);
  try {
    await fn(t, contextFor(t.handle, t.url));
  } finally {
    await t.drop();
  }
}

async function jobs(db: Db): Promise<Job[]> {
  return db.selectFrom('jobs').selectAll().orderBy('created_at').orderBy('id').execute();
}

async function onlyJob(db: Db): Promise<Job> {
  const all = await jobs(db);
  assert.equal(all.length, 1, `expected one job, found ${all.length}`);
  return all[0]!;
}

async function runsOf(db: Db, jobId: string) {
  return db.selectFrom('job_runs').selectAll().where('job_id', '=', jobId).orderBy('attempt').execute();
}

async function counter(metric: Metrics['jobsProcessed'] | Metrics['jobsDead'], labels: Record<string, string>) {
  const { values } = await metric.get();
  const match = values.find((v) => Object.entries(labels).every(([k, val]) => (v.labels as Record<string, unknown>)[k] === val));
  return match?.value ?? 0;
}

/** Waits until a job may be claimed again (its backoff has passed). */
async function untilDue(job: Job): Promise<void> {
  const wait = Date.parse(job.run_at) - Date.now();
  if (wait > 0) await sleep(wait + 5);
}

async function eventually(what: string, check: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting until ${what}`);
    await sleep(25);
  }
}

it('retry delays: random below a ceiling that doubles per attempt up to the cap', () => {
  const nearTop = () => 0.999999;
  const ceilings = [1, 2, 3, 4, 5, 12, 13, 30].map((a) => retryDelayMs(a, 5_000, 3_600_000, nearTop));
  assert.deepEqual(ceilings, [4999, 9999, 19999, 39999, 79999, 3599996, 3599996, 3599996]);
  assert.equal(retryDelayMs(3, 5_000, 3_600_000, () => 0), 0, 'full jitter reaches down to zero');
  for (let i = 0; i < 1000; i++) {
    const d = retryDelayMs(4, 5_000, 3_600_000);
    assert.ok(d >= 0 && d < 40_000, 'd >= 0 && d < 40_000');
  }
});

forEachEngine('jobs', (engine) => {
  it('enqueue commits and rolls back with the caller transaction; a dedupe key enqueues once', () =>
    withDatabase(engine, async ({ handle: { db } }) => {
      await assert.rejects(
        db.transaction().execute(async (tx) => {
          await enqueue(tx, { kind: 'mail.send', payload: { to: 'a@example.jp' } });
          throw new Error('the state change failed');
        }),
        /state change failed/,
      );
      assert.equal((await jobs(db)).length, 0, 'a rolled-back transaction leaves no job');

      const later = new Date(Date.now() + 60_000);
      await db.transaction().execute(async (tx) => {
        await enqueue(tx, { kind: 'mail.send', payload: { to: '注文者@example.jp' }, runAt: later });
      });
      const job = await onlyJob(db);
      assert.equal(job.state, 'pending');
      assert.equal(job.attempts, 0);
      assert.equal(job.run_at, later.toISOString());
      assert.deepEqual(JSON.parse(job.payload), { to: '注文者@example.jp' });

      await enqueue(db, { kind: 'chekicha.link', payload: { order: 1 }, dedupeKey: 'chekicha:ord_1' });
      await db.transaction().execute((tx) =>
        enqueue(tx, { kind: 'chekicha.link', payload: { order: 1 }, dedupeKey: 'chekicha:ord_1' }),
      );
      assert.equal((await listJobs(db, { kind: 'chekicha.link' })).length, 1);
    }));

  it('a failing job retries with backoff, dead-letters with an alert and a metric, and retryJob revives it', () =>
    withDatabase(engine, async ({ handle: { db } }, ctx) => {
      let healthy = false;
      const attemptsSeen: number[] = [];
      const registry = new JobRegistry().register({
        kind: 'oricon.upload',
        maxAttempts: 3,
        async run(_payload, job) {
          attemptsSeen.push(job.attempt);
          if (!healthy) throw new Error('SFTP connection refused');
        },
      });
      const base = 400;
      const dispatcher = new Dispatcher(ctx, registry, { backoffBaseMs: base, backoffCapMs: 1_000 });
      await enqueue(db, { kind: 'oricon.upload', payload: { week: '2026-W47' } });

      for (const attempt of [1, 2]) {
        assert.equal(await dispatcher.runOnce(), 1);
        const job = await onlyJob(db);
        assert.equal(job.state, 'pending', `attempt ${attempt} failed and waits for a retry`);
        assert.equal(job.attempts, attempt);
        assert.equal(job.last_error, 'Error: SFTP connection refused');
        assert.equal(job.locked_by, null);
        const delay = Date.parse(job.run_at) - Date.parse(job.updated_at);
        assert.ok(delay >= 0 && delay < base * 2 ** (attempt - 1), `delay ${delay} ms within the attempt-${attempt} ceiling`);
        if (Date.parse(job.run_at) - Date.now() > 100) assert.equal(await dispatcher.runOnce(), 0, 'not due before its backoff');
        await untilDue(job);
      }
      assert.equal(await dispatcher.runOnce(), 1);
      const dead = await onlyJob(db);
      assert.equal(dead.state, 'dead');
      assert.equal(dead.attempts, 3);
      assert.ok(dead.finished_at, 'dead.finished_at');
      assert.deepEqual(attemptsSeen, [1, 2, 3]);
      assert.equal(await dispatcher.runOnce(), 0, 'a dead job is never claimed');

      const runs = await runsOf(db, dead.id);
      assert.deepEqual(runs.map((r) => [r.attempt, r.outcome]), [[1, 'failed'], [2, 'failed'], [3, 'dead']]);
      assert.ok(runs.every((r) => r.finished_at && r.error === 'Error: SFTP connection refused'), 'runs.every((r) => r.finished_at && r.error === \'Error: SFTP connection refused\')');

      const alerts = await listAlerts(db, { open: true });
      assert.equal(alerts.length, 1);
      assert.equal(alerts[0]!.kind, 'job_dead');
      assert.equal(alerts[0]!.ref, dead.id);
      assert.match(alerts[0]!.message, /oricon\.upload/);
      assert.ok(alerts[0]!.message.includes(dead.id), 'alerts[0]!.message.includes(dead.id)');
      assert.match(alerts[0]!.message, /SFTP connection refused/);
      assert.equal(await counter(ctx.metrics.jobsDead, { kind: 'oricon.upload' }), 1);
      assert.equal(await counter(ctx.metrics.jobsProcessed, { kind: 'oricon.upload', outcome: 'failed' }), 2);
      assert.equal(await counter(ctx.metrics.jobsProcessed, { kind: 'oricon.upload', outcome: 'dead' }), 1);
      assert.deepEqual((await listJobs(db, { state: 'dead' })).map((j) => j.id), [dead.id]);

      // The operator fixes the cause and retries.
      healthy = true;
      assert.equal(await retryJob(ctx, dead.id), true);
      assert.deepEqual(await listAlerts(db, { open: true }), [], 'running it again answers its alert: it does not stay open beside a new one');
      const revived = await onlyJob(db);
      assert.equal(revived.state, 'pending');
      assert.equal(revived.attempts, 3, 'attempts are kept');
      assert.equal(await dispatcher.runOnce(), 1);
      const done = await onlyJob(db);
      assert.equal(done.state, 'done');
      assert.equal(done.attempts, 4);
      assert.equal(await retryJob(ctx, dead.id), false, 'a done job is not retried');
      assert.equal(await retryJob(ctx, 'job_missing'), false);

      assert.equal(await resolveAlert(db, alerts[0]!.id), false, 'resolved when the job was run again');
      assert.equal((await listAlerts(db, { open: true })).length, 0);
      // An alert nothing answers stays open until the operator resolves it, once.
      await db.insertInto('alerts').values({ id: 'alr_test_open', kind: 'order_on_hold', message: 'held', ref: 'ord_x', created_at: new Date().toISOString(), resolved_at: null }).execute();
      assert.equal(await resolveAlert(db, 'alr_test_open'), true);
      assert.equal(await resolveAlert(db, 'alr_test_open'), false, 'already resolved');
      assert.equal((await listAlerts(db, { open: false })).length, 2, "the dead job's alert and this one");
    }));

  it('a job of an unknown kind fails loudly and dead-letters instead of being dropped', () =>
    withDatabase(engine, async ({ handle: { db } }, ctx) => {
      const dispatcher = new Dispatcher(ctx, new JobRegistry(), { backoffBaseMs: 1, backoffCapMs: 1 });
      await enqueue(db, { kind: 'billboard.upload', payload: {} });
      for (let i = 0; i < ctx.config.jobMaxAttempts; i++) {
        await untilDue(await onlyJob(db));
        assert.equal(await dispatcher.runOnce(), 1);
      }
      const job = await onlyJob(db);
      assert.equal(job.state, 'dead');
      assert.match(job.last_error ?? '', /no handler for job kind "billboard\.upload"/);
      assert.equal((await listAlerts(db, { open: true })).length, 1);
    }));

  it('a job whose runs keep ending without an outcome (the worker dies) is dead-lettered with an alert, not run for ever', () =>
    withDatabase(engine, async ({ handle: { db } }, ctx) => {
      let runs = 0;
      const registry = new JobRegistry().register({
        kind: 'oricon.upload',
        async run() {
          runs += 1;
        },
      });
      const dispatcher = new Dispatcher(ctx, registry, { backoffBaseMs: 1, backoffCapMs: 1 });
      await enqueue(db, { kind: 'oricon.upload', payload: {} });
      // Each of its runs so far was claimed and lost with its worker: still `running`, the lock expired.
      await db.updateTable('jobs').set({ state: 'running', attempts: ctx.config.jobMaxAttempts, locked_by: 'a-dead-worker', locked_until: '2000-01-01T00:00:00.000Z' }).execute();
      assert.equal(await dispatcher.runOnce(), 1, 'claimed once more after the last lost run');
      assert.equal(runs, 0, 'the handler is not run again');
      const job = await onlyJob(db);
      assert.equal(job.state, 'dead');
      assert.match(job.last_error ?? '', /ended without an outcome \(its worker died or hung\)/);
      const alerts = await listAlerts(db, { open: true });
      assert.deepEqual(alerts.map((a) => [a.kind, a.ref]), [['job_dead', job.id]]);

      // The operator runs it again: a claim from `pending` starts the count again, and it runs.
      assert.equal(await retryJob(ctx, job.id), true);
      assert.equal(await dispatcher.runOnce(), 1);
      assert.equal(runs, 1);
      assert.equal((await onlyJob(db)).state, 'done');
    }));

  it('a run that must wait (RetryLater) comes again soon and costs no attempt, even a job on its last one', () =>
    withDatabase(engine, async ({ handle: { db } }, ctx) => {
      let busy = true;
      const registry = new JobRegistry().register({
        kind: 'payment.refund',
        async run() {
          if (busy) throw new RetryLater('payment pay_1 is busy with a capture');
        },
      });
      const dispatcher = new Dispatcher(ctx, registry, { backoffBaseMs: 1, backoffCapMs: 1 });
      await enqueue(db, { kind: 'payment.refund', payload: {} });
      // Run again by an operator after it died: its attempts are used up.
      await db.updateTable('jobs').set({ attempts: ctx.config.jobMaxAttempts }).execute();
      const before = Date.now();
      assert.equal(await dispatcher.runOnce(), 1);
      const waiting = await onlyJob(db);
      assert.deepEqual([waiting.state, waiting.attempts], ['pending', ctx.config.jobMaxAttempts], 'not dead, and the attempt given back');
      const wait = Date.parse(waiting.run_at) - before;
      assert.ok(wait >= 2_000 && wait <= 8_000, `runs again in a few seconds (${wait} ms)`);
      assert.deepEqual(await listAlerts(db, { open: true }), []);

      busy = false;
      await db.updateTable('jobs').set({ run_at: '2000-01-01T00:00:00.000Z' }).execute();
      assert.equal(await dispatcher.runOnce(), 1);
      assert.equal((await onlyJob(db)).state, 'done');
    }));

  it('a run that exceeds its timeout is aborted, failed and retried', () =>
    withDatabase(engine, async ({ handle: { db } }, ctx) => {
      let abortedWith: unknown;
      const registry = new JobRegistry().register({
        kind: 'atone.settle',
        timeoutSeconds: 0.2,
        async run(_payload, job) {
          if (job.attempt > 1) return;
          // A gateway that never answers: only the abort signal ends the wait.
          await new Promise<void>((_, reject) =>
            job.signal.addEventListener('abort', () => {
              abortedWith = job.signal.reason;
              reject(job.signal.reason);
            }),
          );
        },
      });
      const dispatcher = new Dispatcher(ctx, registry, { backoffBaseMs: 1, backoffCapMs: 1 });
      await enqueue(db, { kind: 'atone.settle', payload: {} });

      const started = Date.now();
      assert.equal(await dispatcher.runOnce(), 1);
      assert.ok(Date.now() - started < 3_000, 'the run was cut off');
      const failed = await onlyJob(db);
      assert.equal(failed.state, 'pending');
      assert.match(failed.last_error ?? '', /timed out after 0\.2 s/);
      assert.ok(abortedWith instanceof Error, 'the handler saw the abort signal');

      await untilDue(failed);
      assert.equal(await dispatcher.runOnce(), 1);
      assert.equal((await onlyJob(db)).state, 'done');
      assert.deepEqual((await runsOf(db, failed.id)).map((r) => r.outcome), ['failed', 'succeeded']);
    }));

  it('three dispatchers draining 200 jobs run each exactly once', () =>
    withDatabase(engine, async (t) => {
      const executions = new Map<string, number>();
      const kind: JobKind = {
        kind: 'mail.send',
        async run(_payload, job) {
          executions.set(job.jobId, (executions.get(job.jobId) ?? 0) + 1);
          await sleep(Math.random() * 5);
        },
      };
      for (let i = 0; i < 200; i++) await enqueue(t.handle.db, { kind: 'mail.send', payload: { i } });

      // PostgreSQL: separate pools, as separate worker processes would have. SQLite: one connection
      // shared by the three (better-sqlite3 waits for a busy file synchronously, so a second
      // connection in the same process would stall the event loop; separate processes are covered
      // by worker-crash.test.ts).
      const handles: DatabaseHandle[] =
        engine === 'postgres'
          ? [0, 1, 2].map(() => openDatabase(t.url, { poolSize: 4 }))
          : [0, 1, 2].map(() => ({ ...t.handle, close: async () => {} }));
      const dispatchers = handles.map(
        (h, i) =>
          new Dispatcher(contextFor(h, t.url), new JobRegistry().register(kind), {
            workerId: `worker-${i}`,
            concurrency: 8,
            pollMs: 20,
          }),
      );
      try {
        for (const d of dispatchers) d.start();
        await eventually('all 200 jobs are done', async () => {
          const row = await t.handle.db
            .selectFrom('jobs')
            .select((eb) => eb.fn.countAll<number>().as('n'))
            .where('state', '=', 'done')
            .executeTakeFirstOrThrow();
          return Number(row.n) === 200;
        });
      } finally {
        await Promise.all(dispatchers.map((d) => d.stop()));
        await Promise.all(handles.map((h) => h.close()));
      }
      assert.equal(executions.size, 200);
      assert.deepEqual([...new Set(executions.values())], [1], 'no job ran twice');
      const runs = await t.handle.db.selectFrom('job_runs').select(['worker', 'outcome']).execute();
      assert.equal(runs.length, 200);
      assert.ok(runs.every((r) => r.outcome === 'succeeded'), 'runs.every((r) => r.outcome === \'succeeded\')');
      assert.ok(new Set(runs.map((r) => r.worker)).size >= 2, 'the work was shared');
    }));

  it('stop() stops claiming and waits for the jobs already running', () =>
    withDatabase(engine, async ({ handle: { db } }, ctx) => {
      let started = false;
      const registry = new JobRegistry().register({
        kind: 'mail.send',
        async run() {
          started = true;
          await sleep(300);
        },
      });
      const dispatcher = new Dispatcher(ctx, registry, { pollMs: 10 });
      await enqueue(db, { kind: 'mail.send', payload: {} });
      dispatcher.start();
      await eventually('the job runs', async () => started);
      await dispatcher.stop();
      assert.equal((await onlyJob(db)).state, 'done', 'stop waited for the run to finish');
      await enqueue(db, { kind: 'mail.send', payload: { second: true } });
      await sleep(50);
      assert.equal((await listJobs(db, { state: 'pending' })).length, 1, 'a stopped dispatcher claims nothing');
    }));

  it('an expired lock is taken over, and the overtaken worker cannot overwrite the newer result', () =>
    withDatabase(engine, async ({ handle: { db } }, ctx) => {
      let releaseFirst!: () => void;
      const firstMayFinish = new Promise<void>((resolve) => (releaseFirst = resolve));
      let firstStarted = false;
      const registry = new JobRegistry().register({
        kind: 'chekicha.link',
        async run(_payload, job) {
          if (job.attempt > 1) return;
          firstStarted = true;
          await firstMayFinish;
          throw new Error('late failure from a stalled worker');
        },
      });
      const stalled = new Dispatcher(ctx, registry, { workerId: 'stalled' });
      const rescuer = new Dispatcher(ctx, registry, { workerId: 'rescuer' });
      await enqueue(db, { kind: 'chekicha.link', payload: {} });

      const stalledRun = stalled.runOnce();
      await eventually('the first run started', async () => firstStarted);
      assert.equal(await rescuer.runOnce(), 0, 'a live lock is respected');

      // The stalled worker's lock runs out (as if it hung far past timeout + grace).
      await db.updateTable('jobs').set({ locked_until: new Date(Date.now() - 1_000).toISOString() }).execute();
      assert.equal(await rescuer.runOnce(), 1);
      const rescued = await onlyJob(db);
      assert.equal(rescued.state, 'done');
      assert.equal(rescued.attempts, 2);

      releaseFirst();
      await stalledRun;
      const final = await onlyJob(db);
      assert.equal(final.state, 'done', 'the late failure did not overwrite the newer success');
      assert.equal(final.attempts, 2);
      assert.equal(final.last_error, null);
      const runs = await runsOf(db, final.id);
      assert.deepEqual(
        runs.map((r) => [r.attempt, r.worker, r.outcome]),
        [
          [1, 'stalled', 'failed'],
          [2, 'rescuer', 'succeeded'],
        ],
      );
      assert.equal((await listAlerts(db)).length, 0);
    }));

  it('a job left running by a vanished worker is reclaimed and completed', () =>
    withDatabase(engine, async ({ handle: { db } }, ctx) => {
      const past = new Date(Date.now() - 60_000).toISOString();
      await db
        .insertInto('jobs')
        .values({
          id: 'job_orphan', kind: 'mail.send', dedupe_key: null, payload: '{}', state: 'running', attempts: 1,
          run_at: past, locked_by: 'gone', locked_until: past, last_error: null, created_at: past,
          updated_at: past, finished_at: null,
        })
        .execute();
      const ran: number[] = [];
      const registry = new JobRegistry().register({ kind: 'mail.send', run: async (_p, job) => void ran.push(job.attempt) });
      assert.equal(await new Dispatcher(ctx, registry).runOnce(), 1);
      assert.deepEqual(ran, [2]);
      assert.equal((await onlyJob(db)).state, 'done');
    }));

  it('schedule ticks become one job per scheduled instant, however many schedulers run', () =>
    withDatabase(engine, async ({ handle: { db } }, ctx) => {
      const daily: Schedule = { name: 'oricon-daily', cron: '0 22 * * *', kind: 'oricon.upload' };
      assert.deepEqual(
        nextRuns(daily, 2, new Date('2026-11-23T00:00:00Z')).map((d) => d.toISOString()),
        ['2026-11-23T13:00:00.000Z', '2026-11-24T13:00:00.000Z'],
        '22:00 in Tokyo',
      );
      assert.throws(() => new Scheduler(ctx, [{ name: 'bad', cron: '61 * * * *', kind: 'x' }]), /schedule "bad"/);

      // Two processes firing a few milliseconds apart for the same instant.
      await enqueueTick(db, daily, new Date('2026-11-23T13:00:00.004Z'));
      await enqueueTick(db, daily, new Date('2026-11-23T13:00:00.921Z'));
      const tick = await onlyJob(db);
      assert.equal(tick.dedupe_key, 'schedule:oricon-daily:2026-11-23T13:00:00Z');
      await db.deleteFrom('jobs').execute();

      const everySecond: Schedule = { name: 'heartbeat', cron: '* * * * * *', kind: 'noop', payload: { ping: 1 } };
      const schedulers = [new Scheduler(ctx, [everySecond]), new Scheduler(ctx, [everySecond])];
      for (const s of schedulers) s.start();
      await sleep(2_500);
      for (const s of schedulers) s.stop();
      await sleep(100); // a tick that fired just before stop finishes its insert
      const ticks = await jobs(db);
      assert.ok(ticks.length >= 2 && ticks.length <= 3, `one job per second, got ${ticks.length}`);
      for (const job of ticks) {
        assert.match(job.dedupe_key ?? '', /^schedule:heartbeat:\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
        assert.equal(job.kind, 'noop');
        assert.deepEqual(JSON.parse(job.payload), { ping: 1 });
      }
    }));
});
