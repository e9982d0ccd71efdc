import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import cookie from '@fastify/cookie';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { Eta } from 'eta';
import { findSession, type SessionCustomer } from '../accounts/sessions.js';
import type { Context } from '../context.js';
import { newSecret } from '../ids.js';

/*
 * What every page of the shop front shares: rendering with the layout, the logged-in customer, and
 * CSRF protection.
 *
 * CSRF: signed double-submit. The browser holds a random CSRF cookie (HttpOnly, SameSite=Lax); every
 * form carries HMAC(key, cookie value + session id). A post is accepted only when the two match, so
 * another site can neither read the token nor make one: it knows neither the cookie nor the key, and
 * a cookie planted from a sibling domain (on plain http) is useless without the token bound to the
 * victim's session. Routes a gateway posts the browser back to say `config: { csrf: false }`.
 */

declare module 'fastify' {
  interface FastifyContextConfig {
    /** false: posted cross-site by design (a gateway's browser return), so no CSRF token is asked. */
    csrf?: false;
  }
}

export const CSRF_FIELD = '_csrf';

const eta = new Eta({ views: fileURLToPath(new URL('./views', import.meta.url)), cache: true });

/** Cookie names and flags: `__Host-` and Secure whenever customers reach the shop over https. */
export function cookieSettings(publicUrl: string) {
  const secure = publicUrl.startsWith('https://');
  const prefix = secure ? '__Host-' : '';
  return {
    session: `${prefix}kessai_session`,
    csrf: `${prefix}kessai_csrf`,
    cart: `${prefix}kessai_cart`,
    checkout: `${prefix}kessai_checkout`,
    // __Host- demands Secure, Path=/ and no Domain: the cookie belongs to this exact host.
    options: { path: '/', httpOnly: true, sameSite: 'lax' as const, secure },
  };
}

interface FrontState {
  ctx: Context;
  csrfKey: Buffer;
  session?: Promise<SessionCustomer | null>;
  csrfSecret?: string;
}

/** Per request, set by the shop front's onRequest hook: several stores may share a process (tests). */
const states = new WeakMap<FastifyRequest, FrontState>();

function state(request: FastifyRequest): FrontState {
  const s = states.get(request);
  if (!s) throw new Error(`${request.url} is not a shop front route: it has no session or CSRF token`);
  return s;
}

/** The logged-in customer of this request (looked up once per request), or null. */
export function currentCustomer(request: FastifyRequest): Promise<SessionCustomer | null> {
  const s = state(request);
  s.session ??= findSession(s.ctx, request.cookies[cookieSettings(s.ctx.config.publicUrl).session]);
  return s.session;
}

function tokenFor(key: Buffer, secret: string, sessionId: string | undefined): string {
  return createHmac('sha256', key).update(`${secret}\0${sessionId ?? ''}`).digest('base64url');
}

/** The token this request's forms carry; sets the CSRF cookie when the browser has none yet. */
export async function csrfToken(request: FastifyRequest, reply: FastifyReply): Promise<string> {
  const s = state(request);
  const { csrf, options } = cookieSettings(s.ctx.config.publicUrl);
  let secret = s.csrfSecret ?? request.cookies[csrf];
  if (!secret || secret.length > 100) {
    secret = newSecret();
    reply.setCookie(csrf, secret, options);
  }
  s.csrfSecret = secret;
  return tokenFor(s.csrfKey, secret, (await currentCustomer(request))?.sessionId);
}

/**
 * After login and logout: a new CSRF secret (forms rendered before no longer post) and the
 * session this response sets, or none.
 */
export function rotateFrontCookies(request: FastifyRequest, reply: FastifyReply, session: { secret: string; expiresAt: Date } | null): void {
  const s = state(request);
  const { session: name, csrf, options } = cookieSettings(s.ctx.config.publicUrl);
  if (session) reply.setCookie(name, session.secret, { ...options, maxAge: Math.floor((session.expiresAt.getTime() - Date.now()) / 1000) });
  else reply.clearCookie(name, options);
  const secret = newSecret();
  reply.setCookie(csrf, secret, options);
  // Pages rendered by this response already belong to the new state.
  s.csrfSecret = secret;
  s.session = Promise.resolve(null);
}

async function csrfValid(request: FastifyRequest): Promise<boolean> {
  const s = state(request);
  const sent = (request.body as Record<string, unknown> | undefined)?.[CSRF_FIELD];
  const secret = request.cookies[cookieSettings(s.ctx.config.publicUrl).csrf];
  if (typeof sent !== 'string' || !secret) return false;
  const expected = Buffer.from(tokenFor(s.csrfKey, secret, (await currentCustomer(request))?.sessionId));
  const actual = Buffer.from(sent);
  return actual.length === expected.length && timingSafeEqual(actual, expected);
}

/** Renders a view inside the layout, with the customer and the CSRF token every form needs. */
export async function page(reply: FastifyReply, view: string, data: Record<string, unknown>, status = 200) {
  const request = reply.request;
  const [me, csrf] = await Promise.all([currentCustomer(request), csrfToken(request, reply)]);
  const all = { me, csrf, ...data };
  const body = eta.render(view, all);
  return reply.status(status).type('text/html; charset=utf-8').send(eta.render('layout', { ...all, body }));
}

/**
 * A person's browser asking for a page (not the API, a gateway or a script): errors are answered
 * as a page of the shop rather than JSON.
 */
export function wantsPage(request: FastifyRequest): boolean {
  const path = request.url.split('?')[0] ?? '';
  return (request.method === 'GET' || request.method === 'HEAD') && /\btext\/html\b/.test(request.headers.accept ?? '') && !/^\/(api|webhooks|sandbox|docs)(\/|$)/.test(path);
}

/** An error as a page: what went wrong, in the shop's two languages, and the way back to the shop. */
export function errorPage(reply: FastifyReply, status: number, message: string) {
  const heading = status === 404 ? 'ページが見つかりません / Page not found' : 'エラーが発生しました / Something went wrong';
  const body = eta.render('error', { heading, message });
  return reply.status(status).type('text/html; charset=utf-8').send(eta.render('layout', { title: heading, body }));
}

/**
 * Mounts the cookie parser and the CSRF check on the shop front's context: every post of a form
 * there needs its token, except the routes that opt out.
 */
export async function shopFront(app: FastifyInstance, ctx: Context): Promise<void> {
  const csrfKey = Buffer.from(hkdfSync('sha256', ctx.config.masterKey, Buffer.alloc(0), 'kessai shop front csrf', 32));
  await app.register(cookie);
  app.addHook('onRequest', async (request) => {
    states.set(request, { ctx, csrfKey });
  });
  app.addHook('preHandler', async (request, reply) => {
    if (request.method === 'GET' || request.method === 'HEAD' || request.method === 'OPTIONS') return;
    if (request.routeOptions.config.csrf === false) return;
    if (await csrfValid(request)) return;
    request.log.warn({ url: request.routeOptions.url }, 'form refused: CSRF token missing or wrong');
    await page(reply, 'forbidden', { title: '送信できませんでした / Form refused' }, 403);
    return reply;
  });
}
