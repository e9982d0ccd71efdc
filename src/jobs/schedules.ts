import { Cron } from 'croner';
import type { Context } from '../context.js';
import type { Db } from '../db/index.js';
import { enqueue } from './outbox.js';

/** A job enqueued on a cron pattern read in Japan time (e.g. `0 22 * * *` = 22:00 JST daily). */
export interface Schedule {
  name: string;
  /** 5 fields, or 6 with seconds first. */
  cron: string;
  kind: string;
  payload?: unknown;
}

const TIMEZONE = 'Asia/Tokyo';

function cronOf(schedule: Schedule): Cron {
  try {
    return new Cron(schedule.cron, { timezone: TIMEZONE, paused: true });
  } catch (err) {
    throw new Error(`schedule "${schedule.name}": invalid cron pattern "${schedule.cron}": ${(err as Error).message}`);
  }
}

/** The next `n` instants the schedule fires (for `kessai` to show). */
export function nextRuns(schedule: Schedule, n: number, from?: Date): Date[] {
  const cron = cronOf(schedule);
  const runs = cron.nextRuns(n, from);
  cron.stop();
  return runs;
}

/**
 * Enqueues one tick's job. The dedupe key names the scheduled instant (whole seconds, which for a
 * 5-field pattern is a whole minute), not the moment the timer fired, so every process running the
 * scheduler produces the same key and the tick becomes one job.
 */
export async function enqueueTick(db: Db, schedule: Schedule, scheduledAt: Date): Promise<void> {
  const instant = new Date(Math.floor(scheduledAt.getTime() / 1000) * 1000).toISOString().replace('.000Z', 'Z');
  await enqueue(db, {
    kind: schedule.kind,
    payload: schedule.payload ?? {},
    dedupeKey: `schedule:${schedule.name}:${instant}`,
  });
}

/**
 * Turns schedules into outbox jobs. It only enqueues: the job's row and its `job_runs` rows are the
 * record of each run and its outcome, with the same retries and alerts as any other job. Run it in
 * as many processes as you like; ticks missed while no process was up are not made up.
 */
export class Scheduler {
  private readonly crons: Cron[] = [];

  constructor(
    private readonly ctx: Context,
    private readonly schedules: Schedule[],
  ) {
    const names = new Set<string>();
    for (const s of schedules) {
      if (names.has(s.name)) throw new Error(`schedule "${s.name}" is defined twice`);
      names.add(s.name);
      cronOf(s).stop(); // fail at construction, not at the first tick
    }
  }

  start(): void {
    if (this.crons.length > 0) return;
    for (const schedule of this.schedules) {
      const cron = new Cron(schedule.cron, { timezone: TIMEZONE, unref: true }, async (self: Cron) => {
        // croner reports when the timer fired; the pattern gives the instant it was meant for.
        const fired = self.currentRun() ?? new Date();
        const scheduledAt = self.previousRuns(1, fired)[0] ?? fired;
        try {
          await enqueueTick(this.ctx.db, schedule, scheduledAt);
        } catch (err) {
          this.ctx.log.error({ err, schedule: schedule.name }, 'could not enqueue the scheduled job');
        }
      });
      this.crons.push(cron);
    }
  }

  stop(): void {
    for (const cron of this.crons.splice(0)) cron.stop();
  }
}
