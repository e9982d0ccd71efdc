import { z } from 'zod';
import type { Context } from '../context.js';
import { KessaiError, parseInput } from '../errors.js';
import { newId, nowIso } from '../ids.js';
import { enqueue } from '../jobs/outbox.js';
import type { AccountMailPayload } from './mail.js';
import { decoyHash, hashPassword, verifyPassword } from './passwords.js';
import { clear, hitAll, RULES } from './rate-limit.js';
import { endAllSessions, startSession } from './sessions.js';
import { peekToken, retireTokens, useToken, type LiveToken } from './tokens.js';

/*
 * Customer accounts: register, verify, log in, reset a password, change the email address. No
 * Fastify here: the shop front (http/routes/account.ts) turns these outcomes into pages.
 *
 * No answer tells whether an address has an account. Registering, logging in and asking for a reset
 * take the same path, and cost the same (one scrypt), whether the address is known or not; what
 * differs happens in a mail, which only the address's owner reads.
 */

// ---------------------------------------------------------------- input

/**
 * Addresses are compared in one form: Unicode NFKC (a full-width ＠ typed with an IME becomes @),
 * trimmed, lower case. The local part is case-sensitive in theory; no Japanese mail provider treats it so.
 */
export function normalizeEmail(email: string): string {
  return email.normalize('NFKC').trim().toLowerCase();
}

export const email = z
  .string()
  .transform(normalizeEmail)
  .pipe(z.string().min(1, { error: '入力してください / required' }).max(254, { error: '254文字以内で入力してください / must be at most 254 characters' }))
  .pipe(z.email({ error: 'メールアドレスの形式ではありません / must be an email address such as taro@example.jp' }));
const newPassword = z
  .string()
  .min(10, { error: '10文字以上にしてください / must be at least 10 characters' })
  .max(200, { error: '200文字以内にしてください / must be at most 200 characters' });
// A login never says more about a password than "wrong": only its presence and a sane length are checked.
const anyPassword = z.string().min(1, { error: '入力してください / required' }).max(200, { error: '200文字以内にしてください / must be at most 200 characters' });
const name = z
  .string()
  .trim()
  .min(1, { error: '入力してください / required' })
  .max(100, { error: '100文字以内で入力してください / must be at most 100 characters' });

export const registerInput = z.object({ email, name, password: newPassword });
export const loginInput = z.object({ email, password: anyPassword });
export const resetRequestInput = z.object({ email });
export const resetInput = z.object({ token: z.string().max(200), password: newPassword });
export const emailChangeInput = z.object({ email, password: anyPassword });

export type RateLimited = { outcome: 'rate_limited'; retryAt: Date };

const hour = () => nowIso().slice(0, 13);

function mail(payload: AccountMailPayload, dedupeKey?: string) {
  return { kind: 'mail.send', payload, dedupeKey };
}

// ---------------------------------------------------------------- register and verify

/**
 * A new account, unverified until its address is confirmed; an address that already has one gets a
 * "you already have an account" mail instead, and the page says the same either way.
 */
export async function register(ctx: Context, shopId: string, input: unknown, ip: string): Promise<{ outcome: 'mailed' } | RateLimited> {
  const r = parseInput(registerInput, input);
  const limited = await hitAll(ctx.db, [[RULES.registerIp, ip], [RULES.registerEmail, `${shopId}\0${r.email}`]]);
  if (limited.retryAt) return { outcome: 'rate_limited', retryAt: limited.retryAt };
  // Hashed on both paths: the known-address path must not answer faster.
  const passwordHash = await hashPassword(r.password);
  await ctx.db.transaction().execute(async (tx) => {
    const created = await tx
      .insertInto('customers')
      .values({ id: newId('cus'), shop_id: shopId, email: r.email, name: r.name, name_kana: null, phone: null, password_hash: passwordHash, email_verified_at: null, created_at: nowIso() })
      .onConflict((oc) => oc.columns(['shop_id', 'email']).where('password_hash', 'is not', null).doNothing())
      .returning('id')
      .executeTakeFirst();
    if (created) {
      await enqueue(tx, mail({ template: 'account_verify', customerId: created.id }, `account_verify:${created.id}:${hour()}`));
      return;
    }
    const existing = await tx.selectFrom('customers').select('id').where('shop_id', '=', shopId).where('email', '=', r.email).where('password_hash', 'is not', null).executeTakeFirstOrThrow();
    // Once an hour at most: registering someone's address again and again must not flood their inbox.
    await enqueue(tx, mail({ template: 'account_exists', customerId: existing.id }, `account_exists:${existing.id}:${hour()}`));
  });
  return { outcome: 'mailed' };
}

export type LinkCheck = (LiveToken & { email: string }) | null;

/** What a verification or email-change link would do, without doing it (the page with the button). */
export async function checkLink(ctx: Context, token: string): Promise<LinkCheck> {
  const live = await peekToken(ctx.db, token, ['verify', 'email_change']);
  if (!live) return null;
  const customer = await ctx.db.selectFrom('customers').select('email').where('id', '=', live.customerId).executeTakeFirstOrThrow();
  return { ...live, email: live.newEmail ?? customer.email };
}

export type ConfirmOutcome = 'verified' | 'email_changed' | 'invalid' | 'email_taken';

/** The customer pressed the button of a verification or email-change link. */
export async function confirmLink(ctx: Context, token: string): Promise<ConfirmOutcome> {
  try {
    return await ctx.db.transaction().execute(async (tx): Promise<ConfirmOutcome> => {
      const live = await useToken(tx, token, ['verify', 'email_change']);
      if (!live) return 'invalid';
      const customer = await tx.selectFrom('customers').select(['id', 'shop_id', 'email', 'email_verified_at']).where('id', '=', live.customerId).executeTakeFirstOrThrow();
      const at = nowIso();
      if (live.purpose === 'verify') {
        await tx.updateTable('customers').set({ email_verified_at: customer.email_verified_at ?? at }).where('id', '=', customer.id).execute();
        await retireTokens(tx, customer.id, 'verify');
        return 'verified';
      }
      const newEmail = live.newEmail!;
      const taken = await tx.selectFrom('customers').select('id').where('shop_id', '=', customer.shop_id).where('email', '=', newEmail).where('password_hash', 'is not', null).where('id', '!=', customer.id).executeTakeFirst();
      if (taken) throw new EmailTaken();
      await tx.updateTable('customers').set({ email: newEmail, email_verified_at: at }).where('id', '=', customer.id).execute();
      await retireTokens(tx, customer.id, 'email_change');
      // The old address hears of it: if this was not its owner, they know at once.
      await enqueue(tx, mail({ template: 'account_email_changed', customerId: customer.id, oldEmail: customer.email }));
      return 'email_changed';
    });
  } catch (error) {
    // Taken by another account since the link was sent (or at this very moment: the unique index).
    if (error instanceof EmailTaken || isUniqueViolation(error)) return 'email_taken';
    throw error;
  }
}

class EmailTaken extends Error {}

function isUniqueViolation(error: unknown): boolean {
  const e = error as { code?: string } | undefined;
  return e?.code === '23505' || e?.code === 'SQLITE_CONSTRAINT_UNIQUE';
}

// ---------------------------------------------------------------- log in

export type LoginResult =
  | { outcome: 'logged_in'; secret: string; expiresAt: Date; customerId: string }
  | { outcome: 'wrong' }
  /** The right password, but the address is not confirmed yet: a new link was mailed. */
  | { outcome: 'unverified' }
  | RateLimited;

export async function login(ctx: Context, shopId: string, input: unknown, ip: string, previousSecret?: string): Promise<LoginResult> {
  const l = parseInput(loginInput, input);
  const emailKey = `${shopId}\0${l.email}`;
  // Counted before the password is looked at, so the limit holds for right guesses too.
  const limited = await hitAll(ctx.db, [[RULES.loginIp, ip], [RULES.loginEmail, emailKey]]);
  if (limited.retryAt) return { outcome: 'rate_limited', retryAt: limited.retryAt };
  const customer = await ctx.db
    .selectFrom('customers')
    .select(['id', 'password_hash', 'email_verified_at'])
    .where('shop_id', '=', shopId)
    .where('email', '=', l.email)
    .where('password_hash', 'is not', null)
    .executeTakeFirst();
  // An unknown address costs one scrypt too (the decoy), so the answer's timing says nothing.
  const check = await verifyPassword(l.password, customer?.password_hash ?? (await decoyHash()));
  if (!customer || !check.ok) return { outcome: 'wrong' };
  await clear(ctx.db, RULES.loginEmail, emailKey);
  if (check.outdated) await ctx.db.updateTable('customers').set({ password_hash: await hashPassword(l.password) }).where('id', '=', customer.id).execute();
  if (!customer.email_verified_at) {
    await enqueue(ctx.db, mail({ template: 'account_verify', customerId: customer.id }, `account_verify:${customer.id}:${hour()}`));
    return { outcome: 'unverified' };
  }
  const session = await startSession(ctx, customer.id, previousSecret);
  return { outcome: 'logged_in', customerId: customer.id, ...session };
}

// ---------------------------------------------------------------- password reset

/**
 * Asks for a reset link. The request does not look the address up at all: the mail job does, and
 * sends nothing for an unknown one. So known and unknown addresses take exactly the same path here.
 */
export async function requestReset(ctx: Context, shopId: string, input: unknown, ip: string): Promise<{ outcome: 'mailed' } | RateLimited> {
  const r = parseInput(resetRequestInput, input);
  const limited = await hitAll(ctx.db, [[RULES.resetIp, ip], [RULES.resetEmail, `${shopId}\0${r.email}`]]);
  if (limited.retryAt) return { outcome: 'rate_limited', retryAt: limited.retryAt };
  await enqueue(ctx.db, mail({ template: 'account_reset', shopId, email: r.email }));
  return { outcome: 'mailed' };
}

export async function checkResetLink(ctx: Context, token: string): Promise<boolean> {
  return (await peekToken(ctx.db, token, ['reset'])) !== null;
}

/**
 * Sets the new password from a reset link: the link and every other reset link of the customer
 * stop working, every session of the customer ends (whoever knew the old password is logged out),
 * and the address counts as confirmed (the link reached it).
 */
export async function resetPassword(ctx: Context, input: unknown): Promise<'reset' | 'invalid'> {
  const r = parseInput(resetInput, input);
  const passwordHash = await hashPassword(r.password);
  return ctx.db.transaction().execute(async (tx) => {
    const live = await useToken(tx, r.token, ['reset']);
    if (!live) return 'invalid';
    const at = nowIso();
    const customer = await tx.selectFrom('customers').select(['email_verified_at']).where('id', '=', live.customerId).executeTakeFirstOrThrow();
    await tx.updateTable('customers').set({ password_hash: passwordHash, email_verified_at: customer.email_verified_at ?? at }).where('id', '=', live.customerId).execute();
    await retireTokens(tx, live.customerId, 'reset');
    await endAllSessions(tx, live.customerId);
    await enqueue(tx, mail({ template: 'account_password_changed', customerId: live.customerId }));
    return 'reset' as const;
  });
}

// ---------------------------------------------------------------- change the email address

export type EmailChangeResult = { outcome: 'mailed'; email: string } | { outcome: 'wrong_password' } | { outcome: 'same_email' } | RateLimited;

/**
 * Asks to move the account to another address: the current password proves it is the customer,
 * a link to the new address proves it is theirs. The address changes only when that link is used.
 */
export async function requestEmailChange(ctx: Context, customerId: string, input: unknown): Promise<EmailChangeResult> {
  const c = parseInput(emailChangeInput, input);
  const limited = await hitAll(ctx.db, [[RULES.emailChange, customerId]]);
  if (limited.retryAt) return { outcome: 'rate_limited', retryAt: limited.retryAt };
  const customer = await ctx.db.selectFrom('customers').select(['id', 'shop_id', 'email', 'password_hash']).where('id', '=', customerId).executeTakeFirst();
  if (!customer?.password_hash) throw new KessaiError('not_found', 'no such account', 404);
  if (!(await verifyPassword(c.password, customer.password_hash)).ok) return { outcome: 'wrong_password' };
  if (c.email === customer.email) return { outcome: 'same_email' };
  const owner = await ctx.db.selectFrom('customers').select('id').where('shop_id', '=', customer.shop_id).where('email', '=', c.email).where('password_hash', 'is not', null).executeTakeFirst();
  // An address with an account of its own: its owner is told, and this customer learns nothing.
  const payload: AccountMailPayload = owner ? { template: 'account_exists', customerId: owner.id } : { template: 'account_email_change', customerId, newEmail: c.email };
  await enqueue(ctx.db, mail(payload, owner ? `account_exists:${owner.id}:${hour()}` : undefined));
  return { outcome: 'mailed', email: c.email };
}
