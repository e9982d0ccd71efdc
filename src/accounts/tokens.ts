import type { Db, Tx } from '../db/index.js';
import { insertRow } from '../db/insert.js';
import type { AccountTokenTable } from '../db/schema.js';
import { hashToken, newSecret, nowIso } from '../ids.js';

/*
 * The one-time links mailed to customers. The raw token exists only in the mail (and for the
 * moment the mail job builds it); the database keeps its hash (`hashToken`). A token is used at
 * most once: the UPDATE that marks it used is the check, so two clicks racing each other cannot
 * both act.
 */

export type Purpose = AccountTokenTable['purpose'];

/** How long each kind of link works. */
export const TOKEN_TTL_MS: Record<Purpose, number> = {
  verify: 24 * 3600_000,
  reset: 3600_000,
  email_change: 24 * 3600_000,
};

/**
 * A new token for a mail job. An earlier run of the same job may have stored a token whose mail
 * never left: it is replaced, so each mail job leaves at most one live token behind.
 */
export async function mintToken(db: Db, t: { customerId: string; purpose: Purpose; newEmail?: string; jobId: string }): Promise<{ token: string; expiresAt: Date }> {
  const token = newSecret();
  const now = new Date();
  const expiresAt = new Date(now.getTime() + TOKEN_TTL_MS[t.purpose]);
  await db.transaction().execute(async (tx) => {
    await tx.deleteFrom('account_tokens').where('job_id', '=', t.jobId).where('used_at', 'is', null).execute();
    await insertRow(tx, 'account_tokens', { hash: hashToken(token), customer_id: t.customerId, purpose: t.purpose, new_email: t.newEmail ?? null, job_id: t.jobId, expires_at: nowIso(expiresAt), used_at: null, created_at: nowIso(now) });
  });
  return { token, expiresAt };
}

export interface LiveToken {
  customerId: string;
  purpose: Purpose;
  newEmail: string | null;
}

const TOKEN_SHAPE = /^[\w.-]{20,100}$/;

/** A token that is unused and unexpired, without using it (the page a link opens, before its button is pressed). */
export async function peekToken(db: Db, token: string, purposes: Purpose[]): Promise<LiveToken | null> {
  if (!TOKEN_SHAPE.test(token)) return null;
  const row = await db
    .selectFrom('account_tokens')
    .select(['customer_id', 'purpose', 'new_email'])
    .where('hash', '=', hashToken(token))
    .where('purpose', 'in', purposes)
    .where('used_at', 'is', null)
    .where('expires_at', '>', nowIso())
    .executeTakeFirst();
  return row ? { customerId: row.customer_id, purpose: row.purpose, newEmail: row.new_email } : null;
}

/** Uses a token inside the caller's transaction; null when it is unknown, used or expired. */
export async function useToken(tx: Tx, token: string, purposes: Purpose[]): Promise<LiveToken | null> {
  if (!TOKEN_SHAPE.test(token)) return null;
  const now = nowIso();
  const row = await tx
    .updateTable('account_tokens')
    .set({ used_at: now })
    .where('hash', '=', hashToken(token))
    .where('purpose', 'in', purposes)
    .where('used_at', 'is', null)
    .where('expires_at', '>', now)
    .returning(['customer_id', 'purpose', 'new_email'])
    .executeTakeFirst();
  return row ? { customerId: row.customer_id, purpose: row.purpose, newEmail: row.new_email } : null;
}

/** Every other live link of that kind stops working too (a reset ends all outstanding reset links). */
export async function retireTokens(tx: Tx, customerId: string, purpose: Purpose): Promise<void> {
  await tx.updateTable('account_tokens').set({ used_at: nowIso() }).where('customer_id', '=', customerId).where('purpose', '=', purpose).where('used_at', 'is', null).execute();
}

/** Drops tokens expired more than a week ago (the sweep job); used ones stay that long as a record. */
export async function sweepTokens(db: Db): Promise<number> {
  const r = await db.deleteFrom('account_tokens').where('expires_at', '<', nowIso(new Date(Date.now() - 7 * 86_400_000))).executeTakeFirst();
  return Number(r.numDeletedRows);
}
