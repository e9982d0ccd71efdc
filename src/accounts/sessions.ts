import type { Context } from '../context.js';
import type { Db, Tx } from '../db/index.js';
import { insertRow } from '../db/insert.js';
import { hashToken, newSecret, nowIso } from '../ids.js';

/*
 * Customer sessions. The browser holds a secret (`newSecret`: its time and 256 random bits); the
 * database holds its hash (`hashToken`) as the session id, so neither a database copy nor a log
 * line of ids lets anyone in. A session ends when
 * idle for `sessionIdleMinutes`, at `sessionMaxDays` after login, at logout, and for every browser
 * of a customer when the password is reset.
 */

export interface SessionCustomer {
  sessionId: string;
  customerId: string;
  shopId: string;
  email: string;
  name: string;
  verified: boolean;
}

/** last_seen_at is written at most this often: a page view is not a database write. */
const TOUCH_AFTER_MS = 60_000;

export async function startSession(ctx: Context, customerId: string, previousSecret?: string): Promise<{ secret: string; expiresAt: Date }> {
  const secret = newSecret();
  const now = new Date();
  const expiresAt = new Date(now.getTime() + ctx.config.sessionMaxDays * 86_400_000);
  await ctx.db.transaction().execute(async (tx) => {
    // Rotation: whatever session this browser had (someone else's, or one planted before login) ends here.
    if (previousSecret) await tx.deleteFrom('customer_sessions').where('id', '=', hashToken(previousSecret)).execute();
    await insertRow(tx, 'customer_sessions', { id: hashToken(secret), customer_id: customerId, created_at: nowIso(now), last_seen_at: nowIso(now), expires_at: nowIso(expiresAt) });
  });
  return { secret, expiresAt };
}

/** The customer a cookie's secret belongs to, or null when the session is unknown, idle too long or over. */
export async function findSession(ctx: Context, secret: string | undefined): Promise<SessionCustomer | null> {
  if (!secret || secret.length > 100) return null;
  const id = hashToken(secret);
  const row = await ctx.db
    .selectFrom('customer_sessions')
    .innerJoin('customers', 'customers.id', 'customer_sessions.customer_id')
    .select(['customer_sessions.last_seen_at', 'customer_sessions.expires_at', 'customers.id as customerId', 'customers.shop_id', 'customers.email', 'customers.name', 'customers.email_verified_at'])
    .where('customer_sessions.id', '=', id)
    .executeTakeFirst();
  if (!row) return null;
  const now = Date.now();
  const idleSince = now - ctx.config.sessionIdleMinutes * 60_000;
  if (new Date(row.expires_at).getTime() <= now || new Date(row.last_seen_at).getTime() <= idleSince) {
    await ctx.db.deleteFrom('customer_sessions').where('id', '=', id).execute();
    return null;
  }
  if (now - new Date(row.last_seen_at).getTime() > TOUCH_AFTER_MS) {
    await ctx.db.updateTable('customer_sessions').set({ last_seen_at: nowIso(new Date(now)) }).where('id', '=', id).execute();
  }
  return { sessionId: id, customerId: row.customerId, shopId: row.shop_id, email: row.email, name: row.name, verified: row.email_verified_at !== null };
}

export async function endSession(ctx: Context, secret: string | undefined): Promise<void> {
  if (secret) await ctx.db.deleteFrom('customer_sessions').where('id', '=', hashToken(secret)).execute();
}

export async function endAllSessions(db: Db | Tx, customerId: string): Promise<void> {
  await db.deleteFrom('customer_sessions').where('customer_id', '=', customerId).execute();
}

/** Drops sessions that can no longer be used (the sweep job). */
export async function sweepSessions(ctx: Context): Promise<number> {
  const now = Date.now();
  const r = await ctx.db
    .deleteFrom('customer_sessions')
    .where((eb) =>
      eb.or([eb('expires_at', '<=', nowIso(new Date(now))), eb('last_seen_at', '<=', nowIso(new Date(now - ctx.config.sessionIdleMinutes * 60_000)))]),
    )
    .executeTakeFirst();
  return Number(r.numDeletedRows);
}
