import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { FastifyPluginAsync, FastifyReply } from 'fastify';
import { z } from 'zod';
import * as labels from '../../commerce/labels.js';
import { PAY_LATER_NOTE } from '../../commerce/order-mail.js';
import { findOrderByToken, orderView } from '../../commerce/orders.js';
import { getShopSettings } from '../../commerce/shops.js';
import { checkTicket, ticketQrSvg, ticketUrl } from '../../commerce/tickets.js';
import { KessaiError, parseInput } from '../../errors.js';
import { availableMethods, orderBasket, pageAgain, readBack, retryPayment, type Payments } from '../../payments/service.js';
import { forBrowser } from '../../payments/claims.js';
import type { PaymentAction } from '../../payments/provider.js';
import { page } from '../front.js';

/*
 * The pages after the order is placed: gateway hand-off, the customer's return from the gateway,
 * the order page (paying again from it), tickets; and the shop front's static assets. The catalog,
 * cart and checkout steps are in shop.ts.
 */

const ASSETS: Record<string, { type: string; body: Buffer }> = Object.fromEntries(
  [
    ['site.css', 'text/css; charset=utf-8'],
    ['autosubmit.js', 'text/javascript; charset=utf-8'],
    ['postcode.js', 'text/javascript; charset=utf-8'],
    ['atone-checkout.js', 'text/javascript; charset=utf-8'],
  ].map(([name, type]) => [name, { type: type!, body: readFileSync(fileURLToPath(new URL(`../assets/${name}`, import.meta.url))) }]),
);

// Built once: a zod schema costs far more to build than to run.
const tokenParams = z.object({ token: z.string() });
// Gateways add their own parameters to the return URL (KOMOJU's session_id): kept, not refused.
const attemptQuery = z.object({ attempt: z.string().optional(), cancelled: z.string().optional() }).passthrough();
const orderQuery = z.object({ cancelled: z.string().optional() });
const providerBody = z.object({ provider: z.string() });

/** Sends the customer to the gateway: a redirect, an auto-submitting form, or the atone modal in the page. */
export function handoff(reply: FastifyReply, action: PaymentAction, token: string) {
  if (action.type === 'redirect') return reply.redirect(action.url, 303);
  if (action.type === 'form') return page(reply, 'handoff', { title: 'payment', action });
  // Shown after a redirect, so that reloading it shows it again instead of posting the checkout twice.
  if (reply.request.method !== 'GET') return reply.redirect(`/orders/${token}/atone`, 303);
  // atone's modal runs in this page: its script's origin is allowed for this response only.
  const config = action.config as { scriptUrl: string };
  const origin = new URL(config.scriptUrl).origin;
  reply.header('content-security-policy', `default-src 'self'; script-src 'self' ${origin}; frame-src ${origin}; connect-src 'self' ${origin}; img-src 'self' data: ${origin}; style-src 'self' 'unsafe-inline'; base-uri 'self'; form-action 'self'; frame-ancestors 'self'; object-src 'none'`);
  // The way back to the order, to choose another method if the customer closes atone's window.
  return page(reply, 'atone', { title: 'atone', scriptUrl: config.scriptUrl, config: JSON.stringify(action.config).replace(/</g, '\\u003c'), orderPath: `/orders/${token}` });
}

export function pageRoutes(p: Payments): FastifyPluginAsync {
  const { ctx } = p;
  return async (app) => {
    app.get('/assets/:name', { schema: { hide: true } }, async (request, reply) => {
      const asset = ASSETS[(request.params as { name: string }).name];
      if (!asset) return reply.status(404).send();
      return reply.type(asset.type).header('cache-control', 'public, max-age=3600').send(asset.body);
    });

    /**
     * `cancelled`: the customer came back through the gateway's cancel link. Anyone can type it, so
     * it only changes what the page says and whether it refreshes; the attempt's state is still
     * decided by the gateway's facts and the reservation's expiry.
     */
    const orderPage = async (reply: FastifyReply, token: string, shown: { payError?: string; cancelled?: boolean } = {}) => {
      const { payError, cancelled } = shown;
      const found = await findOrderByToken(ctx, token);
      const order = await orderView(ctx, found);
      // Also while an attempt is pending: a customer who left the gateway's page must be able to choose again.
      const canRetry = order.state === 'pending_payment';
      const attemptState = canRetry ? order.payment?.state : undefined;
      const outcome = attemptState === 'failed' ? 'declined' : attemptState === 'pending' ? (cancelled ? 'not_completed' : 'processing') : undefined;
      const methods = canRetry ? await availableMethods(p, found.shop_id, await orderBasket(p, found)) : [];
      // A refresh would wipe the error shown next to the pay-again form, and a customer who left the
      // gateway's page has nothing to wait for: only a result still to come is polled for.
      const refresh = outcome === 'processing' && !payError ? 3 : undefined;
      return page(reply, 'order', { title: order.number, order, token, outcome, canRetry, methods, labels, payLaterNote: PAY_LATER_NOTE, payError, refresh }, payError ? 400 : 200);
    };

    app.get('/orders/:token', { schema: { hide: true } }, async (request, reply) =>
      orderPage(reply, parseInput(tokenParams, request.params).token, { cancelled: parseInput(orderQuery, request.query).cancelled === '1' }),
    );

    /** Where a return from the gateway lands: the order page, told when it was the gateway's cancel link. */
    const backToOrder = (reply: FastifyReply, token: string, cancelled: boolean) => reply.redirect(`/orders/${token}${cancelled ? '?cancelled=1' : ''}`, 303);

    // The customer is back from the gateway: ask the gateway (never trust the query string), then show the order.
    app.get('/orders/:token/return', { schema: { hide: true } }, async (request, reply) => {
      const { token } = parseInput(tokenParams, request.params);
      const { attempt, cancelled } = parseInput(attemptQuery, request.query);
      const order = await findOrderByToken(ctx, token);
      const own = attempt
        ? await ctx.db.selectFrom('payment_attempts').select(['id', 'state']).where('id', '=', attempt).where('order_id', '=', order.id).executeTakeFirst()
        : undefined;
      let left = cancelled === '1';
      if (own && ['pending', 'awaiting_payment', 'authorized'].includes(own.state)) {
        try {
          await readBack(p, own.id, 'return');
          // The gateway was just asked and knows no payment: the customer left its page without
          // paying (KOMOJU sends its cancel link back here, the same way as a payment).
          const now = await ctx.db.selectFrom('payment_attempts').select('state').where('id', '=', own.id).executeTakeFirst();
          left ||= now?.state === 'pending';
        } catch (error) {
          // The webhook or the reconciliation will bring the fact; the page keeps polling.
          request.log.warn({ err: error, attempt: own.id }, 'read-back on return failed');
        }
      }
      return backToOrder(reply, token, left);
    });

    // Gateways that post the customer back (SBPS's return screen) sign the post: it is checked and
    // logged, then the customer sees the order's real state. It never moves money.
    await app.register(async (raw) => {
      raw.removeAllContentTypeParsers();
      raw.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: 64 * 1024 }, (_request, body, done) => done(null, body));
      // Cross-site by nature (the gateway's page posts it): no CSRF token can be asked.
      raw.post('/orders/:token/return', { schema: { hide: true }, config: { csrf: false } }, async (request, reply) => {
        const { token } = parseInput(tokenParams, request.params);
        const { attempt, cancelled } = parseInput(attemptQuery, request.query);
        const order = await findOrderByToken(ctx, token);
        const own = attempt
          ? await ctx.db.selectFrom('payment_attempts').select(['id', 'provider', 'shop_id']).where('id', '=', attempt).where('order_id', '=', order.id).executeTakeFirst()
          : undefined;
        const provider = own ? p.providers.get(own.provider) : undefined;
        if (own && provider?.verifyReturn) {
          const check = provider.verifyReturn({ rawBody: Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0), settings: await getShopSettings(ctx, own.shop_id) });
          if (!check.valid) request.log.warn({ attempt: own.id, reason: check.reason }, 'browser return failed verification');
        }
        return backToOrder(reply, token, cancelled === '1');
      });
    });

    // The page of a payment the store shows itself (atone's modal), where the checkout lands: a
    // reload shows it again; once the order no longer waits for that payment, the order page.
    app.get('/orders/:token/atone', { schema: { hide: true } }, async (request, reply) => {
      const { token } = parseInput(tokenParams, request.params);
      const action = await pageAgain(p, await findOrderByToken(ctx, token), token);
      if (!action) return reply.redirect(`/orders/${token}`, 303);
      return handoff(reply, await forBrowser(p, token, action), token);
    });

    app.post('/orders/:token/pay', { schema: { hide: true } }, async (request, reply) => {
      const { token } = parseInput(tokenParams, request.params);
      const { provider } = parseInput(providerBody, request.body);
      const order = await findOrderByToken(ctx, token);
      let result;
      try {
        result = await retryPayment(p, order, token, { provider });
      } catch (error) {
        // A choice the order cannot take, or an order that can no longer be paid: the order page says why.
        if (error instanceof KessaiError && error.code === 'invalid_input') return orderPage(reply, token, { payError: error.problems[0]?.reason ?? error.message });
        if (error instanceof KessaiError && error.status === 409) return orderPage(reply, token, { payError: error.message });
        throw error;
      }
      // The gateway could not be reached: the order stands, and its page says so next to the choice.
      if (!result.action) return orderPage(reply, token, { payError: result.error?.message ?? 'お支払いを開始できませんでした。もう一度お試しください。/ The payment could not be started; please try again.' });
      return handoff(reply, await forBrowser(p, token, result.action), token);
    });

    // Tickets: the page a ticket's QR opens, for the holder and for the door. The code is the
    // secret, so these pages are never cached by a proxy or indexed, and an unknown code says only that.
    const ticketParams = z.object({ code: z.string().max(64) });
    app.get('/tickets/:code', { schema: { hide: true } }, async (request, reply) => {
      const { code } = parseInput(ticketParams, request.params);
      const check = await checkTicket(ctx, code);
      reply.header('cache-control', 'no-store').header('x-robots-tag', 'noindex');
      return page(reply, 'ticket', { title: 'チケット確認 / Ticket check', check, labels }, check.status === 'unknown' ? 404 : 200);
    });

    app.get('/tickets/:code/qr.svg', { schema: { hide: true } }, async (request, reply) => {
      const { code } = parseInput(ticketParams, request.params);
      const check = await checkTicket(ctx, code);
      if (check.status === 'unknown') return reply.status(404).send();
      // A code's QR never changes; whether it admits anyone is asked on the page it opens.
      const svg = await ticketQrSvg(ticketUrl(ctx.config.publicUrl, check.code));
      return reply.type('image/svg+xml').header('cache-control', 'private, max-age=86400').header('x-robots-tag', 'noindex').send(svg);
    });
  };
}
