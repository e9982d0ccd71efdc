import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Db } from '../../src/db/index.js';
import { enqueue } from '../../src/jobs/outbox.js';
import { forEachEngine, useTestDatabase } from '../helpers/db.js';

// Not imported from the fixture: importing it would start a worker in this process.
const CRASH_JOB_KIND = 'test.slow_effect';
const FIXTURE = fileURLToPath(new URL('../fixtures/crash-worker.ts', import.meta.url));
const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** A real worker process; stderr is kept to explain a failure. */
function startWorker(url: string): { child: ChildProcess; output: () => string } {
  const child = spawn(process.execPath, ['--import', 'tsx', FIXTURE, url], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  return { child, output: () => output };
}

async function stopWorker(child: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill(signal);
  await exited;
}

async function waitFor(what: string, check: () => Promise<boolean>, output: () => string, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting until ${what}; worker output:\n${output()}`);
    await sleep(25);
  }
}

async function job(db: Db) {
  return db.selectFrom('jobs').selectAll().where('kind', '=', CRASH_JOB_KIND).executeTakeFirstOrThrow();
}

async function effects(db: Db) {
  return db.selectFrom('alerts').selectAll().where('kind', '=', 'test_effect').execute();
}

forEachEngine('worker crash', (engine) => {
  const t = useTestDatabase(engine);

  it('a worker killed mid-job loses nothing: another process takes the job over once its lock expires', async () => {
    const db = t.db;
    await enqueue(db, { kind: CRASH_JOB_KIND, payload: { order: 'ord_crash' } });

    const first = startWorker(t.url);
    const second: { current?: ReturnType<typeof startWorker> } = {};
    try {
      await waitFor('the first worker runs the job', async () => (await job(db)).state === 'running', first.output);
      await stopWorker(first.child, 'SIGKILL');

      const orphan = await job(db);
      assert.equal(orphan.state, 'running', 'the dead worker still holds the job');
      assert.equal(orphan.attempts, 1);
      assert.equal((await effects(db)).length, 0, 'killed before its effect');

      second.current = startWorker(t.url);
      await waitFor('the second worker finishes the job', async () => (await job(db)).state === 'done', second.current.output);

      const done = await job(db);
      assert.equal(done.attempts, 2);
      const made = await effects(db);
      assert.equal(made.length, 1, 'the effect happened exactly once');
      assert.equal(made[0]!.id, `effect_${done.id}`);
      assert.match(made[0]!.message, /^attempt 2 /);

      const runs = await db.selectFrom('job_runs').selectAll().where('job_id', '=', done.id).orderBy('attempt').execute();
      assert.equal(runs.length, 2);
      assert.equal(runs[0]!.worker, `crash-worker-${first.child.pid}`);
      assert.equal(runs[0]!.outcome, 'running', 'the killed run never finished');
      assert.equal(runs[0]!.finished_at, null);
      assert.equal(runs[1]!.worker, `crash-worker-${second.current.child.pid}`);
      assert.equal(runs[1]!.outcome, 'succeeded');
    } finally {
      await stopWorker(first.child, 'SIGKILL');
      if (second.current) await stopWorker(second.current.child, 'SIGTERM');
    }
  });
});
