import { setImmediate as nextTurn, setTimeout as sleep } from 'node:timers/promises';
import { sql } from 'kysely';
import type { Context } from '../context.js';
import { prepared, type Value } from '../db/prepared.js';
import { nowIso } from '../ids.js';
import { applyRecorded, applyRecordedBatch, eventRow, RECEIVED } from './apply-fact.js';
import type { GatewayFact } from './provider.js';

/*
 * Record, answer, apply (docs/decisions.md, "Record, answer, apply"). A verified notification's
 * facts are stored as `received` payment events before the gateway gets its answer; they are
 * applied right after, in the background, through the same code as every other fact
 * (apply-fact.ts). The gateway's answer therefore costs one row in a shared insert, not the whole
 * state change, and a crash between the answer and the application loses nothing: the rows are
 * there, and the sweep (the `payments.apply-received` job) applies them.
 */

/**
 * Most rows in one insert; more waiting requests go into the next one. The insert's SQL is built
 * once per number of rows, so this also bounds how many are kept (decision 69).
 */
const BATCH_ROWS = 64;
/** The sweep reads this many waiting events at a time. */
const SWEEP_PAGE = 200;
/** Events applied together (on SQLite in one transaction, see applyRecordedBatch). */
const APPLY_BATCH = 16;
/** While notifications keep arriving, applying takes at most this share of the time. */
const APPLY_SHARE_UNDER_LOAD = 0.1;
/** A burst is on while the last notification arrived less than this long ago. */
const BURST_GAP_MS = 20;
/** Events applied together during a burst: fewer, so that no answer waits long behind them. */
const BURST_APPLY_BATCH = 4;

/** A payment_events row's columns, in the order the inbox's insert names them. */
const EVENT_COLUMNS = ['id', 'shop_id', 'provider', 'event_key', 'attempt_id', 'fact_type', 'amount', 'source', 'outcome', 'note', 'payload', 'fact', 'received_at', 'applied_at'] as const;
type EventColumn = (typeof EVENT_COLUMNS)[number];
type EventColumns = Record<EventColumn, readonly Value[]>;
/** Fails to compile when eventRow() gains a column the list above does not name (it would be dropped), or the list names one it lacks. */
const everyColumnNamed: [Exclude<keyof ReturnType<typeof eventRow>, EventColumn>, Exclude<EventColumn, keyof ReturnType<typeof eventRow>>] extends [never, never] ? true : never = true;
void everyColumnNamed;

/** The inbox's insert, its SQL built once per number of rows (each column's values are a list). */
const insertReceived = prepared('inbox.insert-received', (db, p: EventColumns) =>
  db
    .insertInto('payment_events')
    .values(p.id.map((_, i) => Object.fromEntries(EVENT_COLUMNS.map((c) => [c, p[c][i]]))) as never)
    .onConflict((oc) => oc.columns(['shop_id', 'provider', 'event_key']).doNothing())
    .returning('id'),
);

interface Waiting {
  shopId: string;
  provider: string;
  facts: GatewayFact[];
  resolve(): void;
  reject(error: unknown): void;
}

export class NotificationInbox {
  private waiting: Waiting[] = [];
  /** A write is scheduled or running: new requests wait for the next one (group commit). */
  private writing = false;
  private writeDone: Promise<void> = Promise.resolve();
  /** When the last notification arrived (performance.now()): while they keep arriving, a burst is on. */
  private lastArrivalAt = Number.NEGATIVE_INFINITY;
  private toApply: string[] = [];
  private applying: Promise<void> | undefined;
  private closed = false;
  /** Milliseconds spent applying since the process started (also `kessai_payment_inbox_applying_seconds_total`). */
  applyingMs = 0;

  constructor(private readonly ctx: Context) {}

  /**
   * Stores the facts as `received` events; resolves once they are durable, so the caller may then
   * acknowledge the notification. Requests that arrive while a write is running are written
   * together in the next one (one insert, one commit); a failed write rejects every request in it,
   * and each answers 500, so the gateway delivers again. A key already stored is ignored: the
   * unique (shop, provider, event key) makes a redelivery a no-op, with no read first.
   */
  record(shopId: string, provider: string, facts: GatewayFact[]): Promise<void> {
    if (facts.length === 0) return Promise.resolve();
    if (this.closed) return Promise.reject(new Error('the notification inbox is closed (shutting down)'));
    this.lastArrivalAt = performance.now();
    return new Promise((resolve, reject) => {
      this.waiting.push({ shopId, provider, facts, resolve, reject });
      this.schedule();
    });
  }

  /** Resolves when nothing is being recorded or applied (for shutdown, benchmarks and tests). */
  async settled(): Promise<void> {
    while (this.writing || this.applying) {
      await this.writeDone;
      await this.applying;
    }
  }

  /**
   * Stops taking notifications (they are answered 500, and the gateway delivers them to another
   * process or later); the write in flight finishes, and what was recorded is applied before this
   * resolves. A process killed instead leaves its recorded events to the sweep.
   */
  async close(): Promise<void> {
    this.closed = true;
    await this.settled();
  }

  private schedule(): void {
    if (this.writing || this.waiting.length === 0) return;
    this.writing = true;
    // After this turn's I/O, so that every notification read in it joins the same insert.
    this.writeDone = nextTurn().then(() => this.write());
  }

  private async write(): Promise<void> {
    const batch: Waiting[] = [];
    let count = 0;
    while (this.waiting.length > 0 && (batch.length === 0 || count + this.waiting[0]!.facts.length <= BATCH_ROWS)) {
      const next = this.waiting.shift()!;
      batch.push(next);
      count += next.facts.length;
    }
    try {
      const at = nowIso();
      const keys = new Set<string>();
      const rows = batch
        .flatMap((w) => w.facts.map((f) => eventRow(w.shopId, w.provider, f, 'notification', at)))
        .filter((row) => {
          const key = `${row.shop_id}\n${row.provider}\n${row.event_key}`;
          return keys.has(key) ? false : (keys.add(key), true);
        });
      const columns = Object.fromEntries(EVENT_COLUMNS.map((c) => [c, rows.map((row) => row[c] ?? null)])) as unknown as EventColumns;
      const { rows: inserted } = await insertReceived(this.ctx.db, columns);
      for (const w of batch) w.resolve();
      const fresh = new Set(inserted.map((r) => r.id));
      this.apply(rows.filter((r) => fresh.has(r.id)).map((r) => r.id));
    } catch (error) {
      this.ctx.log.error({ err: error, notifications: batch.length }, 'recording notifications failed; they are answered 500 and the gateway delivers them again');
      for (const w of batch) w.reject(error);
    } finally {
      this.writing = false;
      this.schedule();
    }
  }

  /** Kicked after each write: the new events, in the order they arrived. */
  private apply(ids: string[]): void {
    this.toApply.push(...ids);
    if (this.applying || this.toApply.length === 0) return;
    this.applying = this.applyAll().finally(() => {
      this.applying = undefined;
      // Events pushed after applyAll's last look but before this callback ran found `applying`
      // still set and started nothing: without another kick they would wait for the sweep.
      this.apply([]);
    });
  }

  private async applyAll(): Promise<void> {
    let restUntil = 0;
    while (this.toApply.length > 0) {
      await nextTurn();
      // The answers gateways wait for come first: while notifications keep arriving, applying takes
      // at most its share of the time, so a burst is answered quickly and applied right behind it;
      // once they stop, it runs at full speed.
      const now = performance.now();
      const burst = this.writing || this.waiting.length > 0 || now - this.lastArrivalAt < BURST_GAP_MS;
      if (burst && now < restUntil) {
        // In short naps, each followed by another look: once the burst is over the applier goes
        // on at once, however long its last batch took (a slow batch on a loaded machine would
        // otherwise leave recorded notifications waiting nine times as long after the burst).
        await sleep(Math.min(restUntil - now, BURST_GAP_MS));
        continue;
      }
      const started = performance.now();
      // Small batches while a burst is on: each holds the thread (SQLite) for its whole length.
      const batch = this.toApply.splice(0, burst ? BURST_APPLY_BATCH : APPLY_BATCH);
      try {
        const { failed } = await applyRecordedBatch(this.ctx, batch);
        for (const { id, error } of failed) {
          this.ctx.log.error({ err: error, event: id }, 'applying a recorded notification failed; it stays received and the inbox sweep tries again');
        }
      } catch (err) {
        this.ctx.log.error({ err, events: batch.length }, 'applying recorded notifications failed; they stay received and the inbox sweep tries again');
      }
      const took = performance.now() - started;
      this.applyingMs += took;
      this.ctx.metrics.paymentInboxApplying.inc(took / 1000);
      restUntil = performance.now() + (took * (1 - APPLY_SHARE_UNDER_LOAD)) / APPLY_SHARE_UNDER_LOAD;
    }
  }
}

/**
 * Applies the events still `received` whose facts are about the given merchant references of a
 * shop, in the order they were recorded: what a decision about those attempts must see first.
 */
export async function applyWaiting(ctx: Context, shopId: string, merchantRefs: readonly string[]): Promise<void> {
  const refs = new Set(merchantRefs);
  const waiting = await ctx.db
    .selectFrom('payment_events')
    .select(['id', 'fact'])
    // A literal, not a parameter: the partial index on the waiting rows is then certain to be used.
    .where('outcome', '=', sql.lit(RECEIVED))
    .where('shop_id', '=', shopId)
    .orderBy('received_at')
    .orderBy('id')
    .execute();
  const mine = waiting.filter((e) => refs.has((JSON.parse(e.fact ?? '{}') as { merchantRef?: string }).merchantRef ?? '')).map((e) => e.id);
  // One after another, each waiting for a process applying it meanwhile; an event that cannot be
  // applied throws, so the caller decides nothing on a picture that misses it (and tries again).
  for (const id of mine) await applyRecorded(ctx, id, 'wait');
}

/**
 * Applies events left `received` for longer than `olderThanMs`: recorded by a process that died
 * before applying them, or whose application failed. Each event is applied on its own, so one that
 * fails again does not hold up the rest; several processes may sweep at once (on PostgreSQL each
 * event is taken with FOR UPDATE SKIP LOCKED, so none is applied twice; on SQLite the single writer
 * serialises them).
 */
export async function sweepInbox(ctx: Context, olderThanMs: number): Promise<{ applied: number; failed: { id: string; error: string }[] }> {
  const cutoff = nowIso(new Date(Date.now() - olderThanMs));
  const failed: { id: string; error: string }[] = [];
  let applied = 0;
  let after: { at: string; id: string } | undefined;
  for (;;) {
    let query = ctx.db
      .selectFrom('payment_events')
      .select(['id', 'received_at'])
      // A literal, not a parameter: the partial index on the waiting rows is then certain to be used.
      .where('outcome', '=', sql.lit(RECEIVED))
      .where('received_at', '<=', cutoff);
    if (after) {
      const { at, id } = after;
      query = query.where((eb) => eb.or([eb('received_at', '>', at), eb.and([eb('received_at', '=', at), eb('id', '>', id)])]));
    }
    const page = await query.orderBy('received_at').orderBy('id').limit(SWEEP_PAGE).execute();
    for (let i = 0; i < page.length; i += APPLY_BATCH) {
      const done = await applyRecordedBatch(ctx, page.slice(i, i + APPLY_BATCH).map((e) => e.id));
      applied += done.applied;
      for (const f of done.failed) failed.push({ id: f.id, error: f.error instanceof Error ? f.error.message : String(f.error) });
    }
    if (page.length < SWEEP_PAGE) return { applied, failed };
    const last = page.at(-1)!;
    after = { at: last.received_at, id: last.id };
  }
}
