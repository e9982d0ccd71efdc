import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { customerOrders, MY_PAGE_ORDERS } from '../../accounts/orders.js';
import { decoyHash } from '../../accounts/passwords.js';
import {
  checkLink,
  checkResetLink,
  confirmLink,
  login,
  register,
  requestEmailChange,
  requestReset,
  resetPassword,
  type ConfirmOutcome,
} from '../../accounts/service.js';
import { endSession } from '../../accounts/sessions.js';
import { chekichaLinkState, requestChekichaLink } from '../../commerce/chekicha-link.js';
import { DEFAULT_SHOP_ID, getShopSettings } from '../../commerce/shops.js';
import { KessaiError } from '../../errors.js';
import type { Payments } from '../../payments/service.js';
import { cookieSettings, currentCustomer, page, rotateFrontCookies } from '../front.js';
import { ORDER_STATE_LABELS } from '../../commerce/labels.js';

/*
 * The customer's account pages: register, verify, log in and out, reset the password, change the
 * email address, and the my page. The shop front serves the default shop, as the product pages do.
 * Every answer that could tell whether an address has an account is the same for both cases
 * (accounts/service.ts); account pages are never cached.
 */

const formBody = z.record(z.string(), z.unknown());
const tokenQuery = z.object({ token: z.string().max(200).default('') });

type Errors = Record<string, string>;

/** The first reason for each field, to show next to it. */
export function fieldErrors(error: unknown): Errors | null {
  if (!(error instanceof KessaiError) || error.code !== 'invalid_input') return null;
  const errors: Errors = {};
  for (const p of error.problems) errors[p.field] ??= p.reason;
  return errors;
}

const str = (v: unknown) => (typeof v === 'string' ? v : '');

/** Only a path on this site: `//evil.example` and `/\evil.example` are other sites to a browser. */
function safeNext(next: unknown): string {
  const n = str(next);
  return /^\/(?![/\\])[^\s]{0,200}$/.test(n) ? n : '/account';
}

function retryText(retryAt: Date): string {
  const minutes = Math.max(1, Math.ceil((retryAt.getTime() - Date.now()) / 60_000));
  const at = retryAt.toLocaleTimeString('ja-JP', { timeZone: 'Asia/Tokyo', hour: '2-digit', minute: '2-digit' });
  return `試行回数が多すぎます。${at}（日本時間、約${minutes}分後）以降にもう一度お試しください。/ Too many attempts: try again after ${at} JST (in about ${minutes} minute${minutes === 1 ? '' : 's'}).`;
}

export function rateLimited(reply: FastifyReply, retryAt: Date): string {
  reply.header('retry-after', String(Math.max(1, Math.ceil((retryAt.getTime() - Date.now()) / 1000))));
  return retryText(retryAt);
}

interface Message {
  title: string;
  lines: string[];
  links?: [href: string, label: string][];
}

function message(reply: FastifyReply, m: Message, status = 200) {
  return page(reply, 'account/message', { ...m }, status);
}

const INVALID_LINK: Message = {
  title: 'リンクが無効です / This link does not work',
  lines: [
    'このリンクは使用済みか、期限切れか、正しくありません。/ The link was already used, has expired, or is incomplete.',
    'もう一度お手続きください。/ Please start again.',
  ],
  links: [
    ['/account/login', 'ログイン / Log in'],
    ['/account/password/forgot', 'パスワード再設定 / Reset your password'],
  ],
};

const CONFIRMED: Record<Exclude<ConfirmOutcome, 'invalid'>, [Message, number]> = {
  verified: [{ title: 'メールアドレスを確認しました / Email address confirmed', lines: ['ログインしてご利用ください。/ You can log in now.'], links: [['/account/login', 'ログイン / Log in']] }, 200],
  email_changed: [{ title: 'メールアドレスを変更しました / Email address changed', lines: ['次回から新しいメールアドレスでログインしてください。/ Log in with the new address from now on.'], links: [['/account', 'マイページ / My page']] }, 200],
  email_taken: [{ title: '変更できませんでした / Not changed', lines: ['このメールアドレスは別のアカウントで使われています。/ This address belongs to another account now.'], links: [['/account/email', 'メールアドレス変更 / Change email address']] }, 409],
};

export function accountRoutes(p: Payments): FastifyPluginAsync {
  const { ctx } = p;
  const sessionCookie = cookieSettings(ctx.config.publicUrl).session;
  // Ready before the first login, so an unknown address never waits for it to be made.
  void decoyHash();

  /** The logged-in customer, or a redirect to the login page that comes back here. */
  async function loggedIn(request: FastifyRequest, reply: FastifyReply) {
    const me = await currentCustomer(request);
    if (!me) void reply.redirect(`/account/login?next=${encodeURIComponent(request.url.split('?')[0]!)}`, 303);
    return me;
  }

  return async (app) => {
    app.addHook('onRequest', async (_request, reply) => {
      reply.header('cache-control', 'no-store');
    });
    const hide = { schema: { hide: true } };
    // Pages opened from a mailed link: the token is in the URL, so the request is not logged at info level.
    const secretUrl = { ...hide, logLevel: 'warn' as const };

    // ------------------------------------------------------------ register and verify

    const registerPage = (reply: FastifyReply, values: Record<string, string>, errors: Errors = {}, formError?: string, status = 200) =>
      page(reply, 'account/register', { title: '会員登録 / Create an account', values, errors, formError }, status);

    app.get('/account/register', hide, async (_request, reply) => registerPage(reply, {}));

    app.post('/account/register', hide, async (request, reply) => {
      const f = formBody.parse(request.body ?? {});
      const values = { email: str(f.email), name: str(f.name) };
      try {
        const r = await register(ctx, DEFAULT_SHOP_ID, { email: f.email, name: f.name, password: f.password }, request.ip);
        if (r.outcome === 'rate_limited') return registerPage(reply, values, {}, rateLimited(reply, r.retryAt), 429);
        return message(reply, {
          title: '確認メールを送信しました / Check your mail',
          lines: [
            `${values.email.trim()} 宛にメールを送信しました。メール内のリンクを開いて登録を完了してください。`,
            `We sent a mail to ${values.email.trim()}. Open the link in it to finish registering.`,
            'メールが届かない場合は、迷惑メールフォルダもご確認ください。/ If it does not arrive, check your spam folder.',
          ],
        });
      } catch (error) {
        const errors = fieldErrors(error);
        if (errors) return registerPage(reply, values, errors, undefined, 400);
        throw error;
      }
    });

    app.get('/account/verify', secretUrl, async (request, reply) => {
      const { token } = tokenQuery.parse(request.query);
      const link = await checkLink(ctx, token);
      if (!link) return message(reply, INVALID_LINK, 400);
      // A button, not the link itself: mail scanners open links, and must not use them up.
      return page(reply, 'account/verify', { title: 'メールアドレスの確認 / Confirm your email address', token, link });
    });

    app.post('/account/verify', hide, async (request, reply) => {
      const f = formBody.parse(request.body ?? {});
      const outcome = await confirmLink(ctx, str(f.token));
      if (outcome === 'invalid') return message(reply, INVALID_LINK, 400);
      const [m, status] = CONFIRMED[outcome];
      return message(reply, m, status);
    });

    // ------------------------------------------------------------ log in and out

    const loginPage = (reply: FastifyReply, values: Record<string, string>, errors: Errors = {}, formError?: string, status = 200) =>
      page(reply, 'account/login', { title: 'ログイン / Log in', values, errors, formError }, status);

    app.get('/account/login', hide, async (request, reply) => {
      const next = safeNext((request.query as Record<string, unknown>).next);
      if (await currentCustomer(request)) return reply.redirect(next, 303);
      return loginPage(reply, { next });
    });

    app.post('/account/login', hide, async (request, reply) => {
      const f = formBody.parse(request.body ?? {});
      const values = { email: str(f.email), next: safeNext(f.next) };
      try {
        const r = await login(ctx, DEFAULT_SHOP_ID, { email: f.email, password: f.password }, request.ip, request.cookies[sessionCookie]);
        switch (r.outcome) {
          case 'rate_limited':
            return loginPage(reply, values, {}, rateLimited(reply, r.retryAt), 429);
          case 'wrong':
            return loginPage(reply, values, {}, 'メールアドレスまたはパスワードが正しくありません。/ Wrong email address or password.', 401);
          case 'unverified':
            return message(reply, {
              title: 'メールアドレスの確認が必要です / Please confirm your email address',
              lines: [
                'ログインする前に、登録したメールアドレスを確認してください。確認用のリンクをメールでお送りしています（再送は1時間に1回まで）。',
                'Confirm your address before logging in: we have mailed you the link (it is sent again at most once an hour).',
              ],
            }, 403);
          case 'logged_in':
            rotateFrontCookies(request, reply, r);
            return reply.redirect(values.next, 303);
        }
      } catch (error) {
        const errors = fieldErrors(error);
        if (errors) return loginPage(reply, values, errors, undefined, 400);
        throw error;
      }
    });

    app.post('/account/logout', hide, async (request, reply) => {
      await endSession(ctx, request.cookies[sessionCookie]);
      rotateFrontCookies(request, reply, null);
      return reply.redirect('/', 303);
    });

    // ------------------------------------------------------------ password reset

    const forgotPage = (reply: FastifyReply, values: Record<string, string>, errors: Errors = {}, formError?: string, status = 200) =>
      page(reply, 'account/forgot', { title: 'パスワード再設定 / Reset your password', values, errors, formError }, status);

    app.get('/account/password/forgot', hide, async (_request, reply) => forgotPage(reply, {}));

    app.post('/account/password/forgot', hide, async (request, reply) => {
      const f = formBody.parse(request.body ?? {});
      const values = { email: str(f.email) };
      try {
        const r = await requestReset(ctx, DEFAULT_SHOP_ID, { email: f.email }, request.ip);
        if (r.outcome === 'rate_limited') return forgotPage(reply, values, {}, rateLimited(reply, r.retryAt), 429);
        return message(reply, {
          title: 'メールをご確認ください / Check your mail',
          lines: [
            `${values.email.trim()} が登録済みの場合、パスワード再設定用のリンクをお送りしました（1時間有効）。`,
            `If ${values.email.trim()} has an account, we sent it a link to reset the password (valid for 1 hour).`,
          ],
        });
      } catch (error) {
        const errors = fieldErrors(error);
        if (errors) return forgotPage(reply, values, errors, undefined, 400);
        throw error;
      }
    });

    const resetPage = (reply: FastifyReply, token: string, errors: Errors = {}, status = 200) =>
      page(reply, 'account/reset', { title: '新しいパスワード / New password', token, errors }, status);

    app.get('/account/password/reset', secretUrl, async (request, reply) => {
      const { token } = tokenQuery.parse(request.query);
      if (!(await checkResetLink(ctx, token))) return message(reply, INVALID_LINK, 400);
      return resetPage(reply, token);
    });

    app.post('/account/password/reset', hide, async (request, reply) => {
      const f = formBody.parse(request.body ?? {});
      const token = str(f.token);
      try {
        if ((await resetPassword(ctx, { token, password: f.password })) === 'invalid') return message(reply, INVALID_LINK, 400);
      } catch (error) {
        const errors = fieldErrors(error);
        if (errors) return resetPage(reply, token, errors, 400);
        throw error;
      }
      // Every session of the customer has ended, this browser's included.
      rotateFrontCookies(request, reply, null);
      return message(reply, {
        title: 'パスワードを変更しました / Password changed',
        lines: ['すべての端末からログアウトしました。新しいパスワードでログインしてください。/ You were logged out everywhere: log in with the new password.'],
        links: [['/account/login', 'ログイン / Log in']],
      });
    });

    // ------------------------------------------------------------ change the email address

    const emailPage = (reply: FastifyReply, current: string, values: Record<string, string>, errors: Errors = {}, formError?: string, status = 200) =>
      page(reply, 'account/email', { title: 'メールアドレス変更 / Change email address', current, values, errors, formError }, status);

    app.get('/account/email', hide, async (request, reply) => {
      const me = await loggedIn(request, reply);
      if (!me) return reply;
      return emailPage(reply, me.email, {});
    });

    app.post('/account/email', hide, async (request, reply) => {
      const me = await loggedIn(request, reply);
      if (!me) return reply;
      const f = formBody.parse(request.body ?? {});
      const values = { email: str(f.email) };
      try {
        const r = await requestEmailChange(ctx, me.customerId, { email: f.email, password: f.password });
        switch (r.outcome) {
          case 'rate_limited':
            return emailPage(reply, me.email, values, {}, rateLimited(reply, r.retryAt), 429);
          case 'wrong_password':
            return emailPage(reply, me.email, values, { password: 'パスワードが正しくありません / wrong password' }, undefined, 400);
          case 'same_email':
            return emailPage(reply, me.email, values, { email: '現在のメールアドレスと同じです / this is already your address' }, undefined, 400);
          case 'mailed':
            return message(reply, {
              title: '確認メールを送信しました / Check your new mailbox',
              lines: [
                `${r.email} 宛に確認用のリンクをお送りしました。リンクを開くとメールアドレスが変更されます（24時間有効）。`,
                `We sent a link to ${r.email}. Your address changes when you open it (valid for 24 hours).`,
              ],
              links: [['/account', 'マイページ / My page']],
            });
        }
      } catch (error) {
        const errors = fieldErrors(error);
        if (errors) return emailPage(reply, me.email, values, errors, undefined, 400);
        throw error;
      }
    });

    // ------------------------------------------------------------ my page

    app.get('/account', hide, async (request, reply) => {
      const me = await loggedIn(request, reply);
      if (!me) return reply;
      const orders = await customerOrders(ctx, me.customerId);
      const linked = await ctx.db.selectFrom('customer_links').select(['party', 'linked_at']).where('customer_id', '=', me.customerId).execute();
      const chekicha = (await chekichaOn(me.shopId)) ? await chekichaLinkState(ctx, me.customerId) : null;
      return page(reply, 'account/mypage', { title: 'マイページ / My page', orders, limit: MY_PAGE_ORDERS, stateLabels: ORDER_STATE_LABELS, linked: Object.fromEntries(linked.map((l) => [l.party, l.linked_at])), chekicha });
    });

    const chekichaOn = async (shopId: string) => (await getShopSettings(ctx, shopId))['chekicha.enabled'] === true;

    // The link is made by an outbox job: the page comes back at once and says it is in progress.
    app.post('/account/chekicha', hide, async (request, reply) => {
      const me = await loggedIn(request, reply);
      if (!me) return reply;
      if (!(await chekichaOn(me.shopId))) {
        return message(reply, { title: 'ご利用いただけません / Not available', lines: ['このショップでは Chekicha 連携を行っていません。/ This shop does not link Chekicha accounts.'], links: [['/account', 'マイページ / My page']] }, 404);
      }
      await requestChekichaLink(ctx, me.customerId);
      return reply.redirect('/account', 303);
    });
  };
}
