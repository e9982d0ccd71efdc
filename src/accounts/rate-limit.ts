import { createHash } from 'node:crypto';
import { sql } from 'kysely';
import type { Db } from '../db/index.js';
import { nowIso } from '../ids.js';

/*
 * Rate limits kept in the database, so they hold across every `kessai serve` process behind a load
 * balancer (an in-memory limit would allow N× the attempts with N processes). One fixed window per
 * bucket, counted by a single upsert: no read-then-write, so concurrent requests on any number of
 * processes cannot both see the old count.
 */

export interface Rule {
  /** Names the bucket, e.g. `login.email`. */
  name: string;
  limit: number;
  windowMs: number;
}

const MINUTE = 60_000;

/** Every limit the accounts apply (docs/operations.md lists them). */
export const RULES = {
  loginIp: { name: 'login.ip', limit: 50, windowMs: 15 * MINUTE },
  loginEmail: { name: 'login.email', limit: 10, windowMs: 15 * MINUTE },
  resetIp: { name: 'reset.ip', limit: 20, windowMs: 60 * MINUTE },
  resetEmail: { name: 'reset.email', limit: 5, windowMs: 60 * MINUTE },
  registerIp: { name: 'register.ip', limit: 20, windowMs: 60 * MINUTE },
  // Registering sends the address a mail: this keeps anyone from flooding a stranger's inbox.
  registerEmail: { name: 'register.email', limit: 5, windowMs: 60 * MINUTE },
  emailChange: { name: 'email_change.customer', limit: 5, windowMs: 60 * MINUTE },
  // The inquiry form mails the address typed into it: per IP, and per address so no one's inbox is flooded.
  inquiryIp: { name: 'inquiry.ip', limit: 10, windowMs: 60 * MINUTE },
  inquiryEmail: { name: 'inquiry.email', limit: 5, windowMs: 60 * MINUTE },
} satisfies Record<string, Rule>;

/** Bucket keys carry a hash, not the address or email itself: the table holds no personal data. */
function bucket(rule: Rule, value: string): string {
  return `${rule.name}:${createHash('sha256').update(`${rule.name}\0${value}`).digest('hex').slice(0, 32)}`;
}

/** Counts one attempt; `retryAt` is set when this attempt is over the limit (it is refused). */
export async function hit(db: Db, rule: Rule, value: string, now = new Date()): Promise<{ retryAt: Date | null }> {
  const at = nowIso(now);
  const expired = nowIso(new Date(now.getTime() - rule.windowMs));
  // Both SET expressions read the row as it was: a window that has ended starts again at 1.
  const row = await db
    .insertInto('rate_limits')
    .values({ bucket: bucket(rule, value), window_start: at, hits: 1 })
    .onConflict((oc) =>
      oc.column('bucket').doUpdateSet({
        hits: sql<number>`case when rate_limits.window_start <= ${expired} then 1 else rate_limits.hits + 1 end`,
        window_start: sql<string>`case when rate_limits.window_start <= ${expired} then ${at} else rate_limits.window_start end`,
      }),
    )
    .returning(['hits', 'window_start'])
    .executeTakeFirstOrThrow();
  if (Number(row.hits) <= rule.limit) return { retryAt: null };
  return { retryAt: new Date(new Date(row.window_start).getTime() + rule.windowMs) };
}

/** Counts the attempt in every bucket; refused when any is over, until the latest of their windows ends. */
export async function hitAll(db: Db, checks: [Rule, string][], now = new Date()): Promise<{ retryAt: Date | null }> {
  let retryAt: Date | null = null;
  for (const [rule, value] of checks) {
    const r = await hit(db, rule, value, now);
    if (r.retryAt && (!retryAt || r.retryAt > retryAt)) retryAt = r.retryAt;
  }
  return { retryAt };
}

/** A success (the right password) forgets the failures counted for that email. */
export async function clear(db: Db, rule: Rule, value: string): Promise<void> {
  await db.deleteFrom('rate_limits').where('bucket', '=', bucket(rule, value)).execute();
}

/** Drops windows that ended long ago (the sweep job). */
export async function sweepRateLimits(db: Db, olderThanMs: number): Promise<number> {
  const r = await db.deleteFrom('rate_limits').where('window_start', '<', nowIso(new Date(Date.now() - olderThanMs))).executeTakeFirst();
  return Number(r.numDeletedRows);
}
