import { z } from 'zod';
import type { Context } from '../context.js';
import type { Mail } from '../integrations/mail/index.js';
import { jstTime as jst, MAIL_FOOTER as FOOTER, mailTemplates, type PayloadOf } from '../jobs/mail-template.js';
import { mintToken, TOKEN_TTL_MS, type Purpose } from './tokens.js';

/*
 * Account mails, sent by the outbox's `mail.send` job like every other mail. A mail that carries a
 * link mints the link's token as it is sent: the job's payload names the customer and the purpose,
 * never a token, so no secret waits in the jobs table, and only the token's hash is stored.
 */

const schemas = {
  account_verify: z.object({ customerId: z.string() }),
  account_exists: z.object({ customerId: z.string() }),
  // By address: the reset request does not look the account up (service.ts requestReset).
  account_reset: z.object({ shopId: z.string(), email: z.string() }),
  account_email_change: z.object({ customerId: z.string(), newEmail: z.string() }),
  account_email_changed: z.object({ customerId: z.string(), oldEmail: z.string() }),
  account_password_changed: z.object({ customerId: z.string() }),
};
export type AccountMailPayload = PayloadOf<typeof schemas>;

const hours = (purpose: Purpose) => TOKEN_TTL_MS[purpose] / 3600_000;
const NOT_YOU = 'お心当たりがない場合は、このメールを破棄してください。/ If this was not you, you can ignore this mail.';

/** Some payloads send nothing: an unknown address asking for a reset, an account verified meanwhile. */
async function accountMail(ctx: Context, p: AccountMailPayload, jobId: string): Promise<Mail | null> {
  const base = ctx.config.publicUrl;
  const customer =
    p.template === 'account_reset'
      ? await ctx.db.selectFrom('customers').selectAll().where('shop_id', '=', p.shopId).where('email', '=', p.email).where('password_hash', 'is not', null).executeTakeFirst()
      : await ctx.db.selectFrom('customers').selectAll().where('id', '=', p.customerId).executeTakeFirst();
  if (!customer?.password_hash) return null;
  const shop = await ctx.db.selectFrom('shops').select('name').where('id', '=', customer.shop_id).executeTakeFirstOrThrow();
  const subject = (ja: string, en: string) => `【${shop.name}】${ja} / ${en}`;
  const id = `${p.template}.${customer.id}.${jobId}`;
  const link = async (purpose: Purpose, path: string, newEmail?: string) => {
    const { token, expiresAt } = await mintToken(ctx.db, { customerId: customer.id, purpose, newEmail, jobId });
    return { url: `${base}${path}?token=${token}`, until: jst(expiresAt) };
  };

  switch (p.template) {
    case 'account_verify': {
      if (customer.email_verified_at) return null;
      const l = await link('verify', '/account/verify');
      return {
        to: customer.email,
        id,
        subject: subject('メールアドレスの確認', 'Confirm your email address'),
        text:
          `${customer.name} 様\n\n${shop.name} へのご登録ありがとうございます。次のリンクを開き、メールアドレスを確認してください。\n` +
          `Thank you for registering. Open this link to confirm your email address:\n\n${l.url}\n\n` +
          `有効期限 / Valid until: ${l.until}（${hours('verify')}時間 / ${hours('verify')} hours）\n\n${NOT_YOU}\n${FOOTER}`,
      };
    }
    case 'account_exists':
      return {
        to: customer.email,
        id,
        subject: subject('すでにご登録があります', 'You already have an account'),
        text:
          `このメールアドレスでの会員登録（またはメールアドレス変更）のお申し込みがありましたが、このアドレスはすでに登録されています。\n` +
          `Someone asked to register this address (or to move an account to it), but it already has an account.\n\n` +
          `ログイン / Log in: ${base}/account/login\n` +
          `パスワードをお忘れの場合 / Forgot your password: ${base}/account/password/forgot\n\n${NOT_YOU}\n${FOOTER}`,
      };
    case 'account_reset': {
      const l = await link('reset', '/account/password/reset');
      return {
        to: customer.email,
        id,
        subject: subject('パスワード再設定', 'Reset your password'),
        text:
          `${customer.name} 様\n\nパスワード再設定のお申し込みを受け付けました。次のリンクから新しいパスワードを設定してください。\n` +
          `We received a request to reset your password. Set a new one here:\n\n${l.url}\n\n` +
          `有効期限 / Valid until: ${l.until}（${hours('reset')}時間・1回限り / ${hours('reset')} hour, once）\n` +
          `再設定すると、ログイン中のすべての端末からログアウトします。/ Resetting logs you out everywhere.\n\n${NOT_YOU}\n${FOOTER}`,
      };
    }
    case 'account_email_change': {
      const l = await link('email_change', '/account/verify', p.newEmail);
      return {
        to: p.newEmail,
        id,
        subject: subject('新しいメールアドレスの確認', 'Confirm your new email address'),
        text:
          `${customer.name} 様\n\n${shop.name} のアカウントのメールアドレスをこのアドレスに変更するお申し込みがありました。次のリンクを開くと変更されます。\n` +
          `You asked to move your account to this address. Open this link to confirm it:\n\n${l.url}\n\n` +
          `有効期限 / Valid until: ${l.until}（${hours('email_change')}時間 / ${hours('email_change')} hours）\n\n${NOT_YOU}\n${FOOTER}`,
      };
    }
    case 'account_email_changed':
      return {
        to: p.oldEmail,
        id,
        subject: subject('メールアドレスが変更されました', 'Your email address was changed'),
        text:
          `${customer.name} 様\n\nアカウントのメールアドレスが ${customer.email} に変更されました。\n` +
          `Your account's email address is now ${customer.email}.\n\n` +
          `お心当たりがない場合は、至急ショップにご連絡ください。/ If this was not you, contact the shop at once.\n${FOOTER}`,
      };
    case 'account_password_changed':
      return {
        to: customer.email,
        id,
        subject: subject('パスワードが変更されました', 'Your password was changed'),
        text:
          `${customer.name} 様\n\nパスワードが再設定され、すべての端末からログアウトしました。\n` +
          `Your password was reset and every browser was logged out.\n\n` +
          `お心当たりがない場合は、次のページからパスワードを再設定してください。/ If this was not you, reset it again here:\n${base}/account/password/forgot\n${FOOTER}`,
      };
  }
}

export const ACCOUNT_MAILS = mailTemplates(schemas, accountMail);
