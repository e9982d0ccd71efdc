import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { FastifyPluginAsync, FastifyReply } from 'fastify';
import { z } from 'zod';
import { attachOrder } from '../../accounts/orders.js';
import { listProducts } from '../../commerce/catalog.js';
import { findOrderByToken, orderView } from '../../commerce/orders.js';
import { DEFAULT_SHOP_ID, getShopSettings } from '../../commerce/shops.js';
import { checkTicket, ticketQrSvg, ticketUrl } from '../../commerce/tickets.js';
import { KessaiError, parseInput } from '../../errors.js';
import { availableMethods, checkout, readBack, retryPayment, type Payments } from '../../payments/service.js';
import { forBrowser } from '../../payments/claims.js';
import type { PaymentAction } from '../../payments/provider.js';
import { currentCustomer, page } from '../front.js';

/*
 * A small server-rendered shop front for the demo and for trying a gateway end to end in a
 * browser: product list, one-step order form, gateway hand-off, order status page.
 */

const ASSETS: Record<string, { type: string; body: Buffer }> = Object.fromEntries(
  [
    ['site.css', 'text/css; charset=utf-8'],
    ['autosubmit.js', 'text/javascript; charset=utf-8'],
    ['postcode.js', 'text/javascript; charset=utf-8'],
    ['atone-checkout.js', 'text/javascript; charset=utf-8'],
  ].map(([name, type]) => [name, { type: type!, body: readFileSync(fileURLToPath(new URL(`../assets/${name}`, import.meta.url))) }]),
);

export const STATE_LABELS: Record<string, string> = {
  pending_payment: 'お支払い待ち / Waiting for payment',
  awaiting_payment: 'お支払い待ち（コンビニ等）/ Waiting for your payment at the store',
  authorized: '与信済み / Authorized',
  paid: 'お支払い完了 / Paid',
  shipped: '発送済み / Shipped',
  completed: '完了 / Completed',
  cancelled: 'キャンセル / Cancelled',
  expired: '期限切れ / Expired',
  refunded: '返金済み / Refunded',
  partially_refunded: '一部返金 / Partially refunded',
  on_hold: '確認中 / Being checked by the shop',
};

// Built once: a zod schema costs far more to build than to run.
const formBody = z.record(z.string(), z.string());
const tokenParams = z.object({ token: z.string() });
const attemptQuery = z.object({ attempt: z.string().optional() }).passthrough();
const providerBody = z.object({ provider: z.string() });

function handoff(reply: FastifyReply, action: PaymentAction | null) {
  if (!action) throw new KessaiError('payment_start_failed', 'the payment could not be started; please try again', 502);
  if (action.type === 'redirect') return reply.redirect(action.url, 303);
  if (action.type === 'form') return page(reply, 'handoff', { title: 'payment', action });
  // atone's modal runs in this page: its script's origin is allowed for this response only.
  const config = action.config as { scriptUrl: string };
  const origin = new URL(config.scriptUrl).origin;
  reply.header('content-security-policy', `default-src 'self'; script-src 'self' ${origin}; frame-src ${origin}; connect-src 'self' ${origin}; img-src 'self' data: ${origin}; style-src 'self' 'unsafe-inline'; base-uri 'self'; form-action 'self'; frame-ancestors 'self'; object-src 'none'`);
  return page(reply, 'atone', { title: 'atone', scriptUrl: config.scriptUrl, config: JSON.stringify(action.config).replace(/</g, '\\u003c') });
}

export function pageRoutes(p: Payments): FastifyPluginAsync {
  const { ctx } = p;
  const shopPage = async (reply: FastifyReply, error?: string) => {
    const shop = await ctx.db.selectFrom('shops').select(['id', 'name']).where('id', '=', DEFAULT_SHOP_ID).executeTakeFirst();
    if (!shop) return reply.status(404).type('text/plain; charset=utf-8').send('No shop yet: run `kessai seed-demo` or `kessai shop create`.');
    const [products, methods] = await Promise.all([listProducts(ctx, shop.id), availableMethods(p, shop.id)]);
    return page(reply, 'index', { title: shop.name, shop, products, methods, error }, error ? 400 : 200);
  };

  return async (app) => {
    app.get('/assets/:name', { schema: { hide: true } }, async (request, reply) => {
      const asset = ASSETS[(request.params as { name: string }).name];
      if (!asset) return reply.status(404).send();
      return reply.type(asset.type).header('cache-control', 'public, max-age=3600').send(asset.body);
    });

    app.get('/', { schema: { hide: true } }, async (_request, reply) => shopPage(reply));

    app.post('/checkout', { schema: { hide: true } }, async (request, reply) => {
      const f = parseInput(formBody, request.body ?? {});
      const address = f.postcode ? { name: f.name ?? '', postcode: f.postcode, prefecture: f.prefecture ?? '', city: f.city ?? '', line1: f.line1 ?? '', phone: f.phone ?? '' } : undefined;
      try {
        const result = await checkout(p, {
          shop: DEFAULT_SHOP_ID,
          customer: { email: f.email ?? '', name: f.name ?? '' },
          shippingAddress: address,
          lines: [{ sku: f.sku ?? '', quantity: Number(f.quantity) }],
          payment: { provider: f.provider ?? '' },
        });
        const me = await currentCustomer(request);
        if (me) await attachOrder(ctx, result.order.id, me.customerId);
        if (!result.action) return reply.redirect(`/orders/${result.token}`, 303);
        return handoff(reply, await forBrowser(p, result.token, result.action));
      } catch (error) {
        if (error instanceof KessaiError && error.status < 500) return shopPage(reply, error.message);
        throw error;
      }
    });

    app.get('/orders/:token', { schema: { hide: true } }, async (request, reply) => {
      const { token } = parseInput(tokenParams, request.params);
      const found = await findOrderByToken(ctx, token);
      const order = await orderView(ctx, found);
      const processing = order.state === 'pending_payment' && order.payment?.state === 'pending';
      // Also while an attempt is pending: a customer who left the gateway's page must be able to choose again.
      const canRetry = order.state === 'pending_payment';
      const methods = canRetry ? await availableMethods(p, found.shop_id) : [];
      return page(reply, 'order', { title: order.number, order, token, processing, canRetry, methods, stateLabel: STATE_LABELS[order.state] ?? order.state, refresh: processing ? 3 : undefined });
    });

    // The customer is back from the gateway: ask the gateway (never trust the query string), then show the order.
    app.get('/orders/:token/return', { schema: { hide: true } }, async (request, reply) => {
      const { token } = parseInput(tokenParams, request.params);
      const { attempt } = parseInput(attemptQuery, request.query);
      const order = await findOrderByToken(ctx, token);
      const own = attempt
        ? await ctx.db.selectFrom('payment_attempts').select(['id', 'state']).where('id', '=', attempt).where('order_id', '=', order.id).executeTakeFirst()
        : undefined;
      if (own && ['pending', 'awaiting_payment', 'authorized'].includes(own.state)) {
        try {
          await readBack(p, own.id, 'return');
        } catch (error) {
          // The webhook or the reconciliation will bring the fact; the page keeps polling.
          request.log.warn({ err: error, attempt: own.id }, 'read-back on return failed');
        }
      }
      return reply.redirect(`/orders/${token}`, 303);
    });

    // Gateways that post the customer back (SBPS's return screen) sign the post: it is checked and
    // logged, then the customer sees the order's real state. It never moves money.
    await app.register(async (raw) => {
      raw.removeAllContentTypeParsers();
      raw.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: 64 * 1024 }, (_request, body, done) => done(null, body));
      // Cross-site by nature (the gateway's page posts it): no CSRF token can be asked.
      raw.post('/orders/:token/return', { schema: { hide: true }, config: { csrf: false } }, async (request, reply) => {
        const { token } = parseInput(tokenParams, request.params);
        const { attempt } = parseInput(attemptQuery, request.query);
        const order = await findOrderByToken(ctx, token);
        const own = attempt
          ? await ctx.db.selectFrom('payment_attempts').select(['id', 'provider', 'shop_id']).where('id', '=', attempt).where('order_id', '=', order.id).executeTakeFirst()
          : undefined;
        const provider = own ? p.providers.get(own.provider) : undefined;
        if (own && provider?.verifyReturn) {
          const check = provider.verifyReturn({ rawBody: Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0), settings: await getShopSettings(ctx, own.shop_id) });
          if (!check.valid) request.log.warn({ attempt: own.id, reason: check.reason }, 'browser return failed verification');
        }
        return reply.redirect(`/orders/${token}`, 303);
      });
    });

    app.post('/orders/:token/pay', { schema: { hide: true } }, async (request, reply) => {
      const { token } = parseInput(tokenParams, request.params);
      const { provider } = parseInput(providerBody, request.body);
      const order = await findOrderByToken(ctx, token);
      const result = await retryPayment(p, order, token, { provider });
      return handoff(reply, await forBrowser(p, token, result.action));
    });

    // Tickets: the page a ticket's QR opens, for the holder and for the door. The code is the
    // secret, so these pages are never cached by a proxy or indexed, and an unknown code says only that.
    const ticketParams = z.object({ code: z.string().max(64) });
    app.get('/tickets/:code', { schema: { hide: true } }, async (request, reply) => {
      const { code } = parseInput(ticketParams, request.params);
      const check = await checkTicket(ctx, code);
      reply.header('cache-control', 'no-store').header('x-robots-tag', 'noindex');
      return page(reply, 'ticket', { title: 'チケット確認 / Ticket check', check }, check.status === 'unknown' ? 404 : 200);
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
