import type { FastifyPluginAsync } from 'fastify';
import { z } from 'zod';
import { basketOf, getProduct, listProducts } from '../../commerce/catalog.js';
import { findOrderByToken, orderInput, orderLinesInput, orderView } from '../../commerce/orders.js';
import { DEFAULT_SHOP_ID, getShopSettings, shopExists } from '../../commerce/shops.js';
import { invalid, KessaiError, notFound, parseInput } from '../../errors.js';
import { lookupPostcode, normalisePostcode } from '../../integrations/postcode/index.js';
import { availableMethods, checkout, retryPayment, type Payments } from '../../payments/service.js';
import { doc } from '../schema.js';

// Built once: a zod schema costs far more to build than to run.
const shopParams = z.object({ shopId: z.string() });
const productParams = shopParams.extend({ code: z.string() });
const tokenParams = z.object({ token: z.string() });
const methodsQuery = z.object({ lines: z.string().min(1, { error: 'must name at least one line, as sku:quantity' }).max(3000).optional() });
const addressQuery = z.object({ postcode: z.string().max(20), shop: z.string().default(DEFAULT_SHOP_ID) });
const paymentInput = z.strictObject({
  provider: z.string().min(1, { error: 'must not be empty' }).max(20),
  method: z.string().min(1).max(30).optional(),
});

// A checkout sent again with the same key (a retry after a lost answer) answers the order it made.
const checkoutHeaders = z.object({
  'idempotency-key': z.string().optional().describe('Send the same checkout again safely: the same key answers the order made the first time, with "replayed": true (1–255 visible ASCII characters)'),
});

export function apiRoutes(p: Payments): FastifyPluginAsync {
  const { ctx } = p;
  const requireShop = async (shopId: string) => {
    if (!(await shopExists(ctx, shopId))) throw notFound('shop', shopId);
  };
  return async (app) => {
    app.get('/shops/:shopId/products', { schema: { tags: ['catalog'], summary: 'Products of a shop with price (tax included) and stock available' } }, async (request) => {
      const { shopId } = parseInput(shopParams, request.params);
      await requireShop(shopId);
      return { products: await listProducts(ctx, shopId) };
    });

    app.get('/shops/:shopId/products/:code', { schema: { tags: ['catalog'], summary: 'One product' } }, async (request) => {
      const { shopId, code } = parseInput(productParams, request.params);
      await requireShop(shopId);
      return { product: await getProduct(ctx, shopId, code) };
    });

    app.get(
      '/shops/:shopId/payment-methods',
      {
        schema: {
          tags: ['checkout'],
          summary: 'Payment providers and methods the shop offers; with `lines`, only those that can pay that basket (its total, product kinds and subscriptions)',
          querystring: doc(methodsQuery),
        },
      },
      async (request) => {
        const { shopId } = parseInput(shopParams, request.params);
        const { lines: raw } = parseInput(methodsQuery, request.query);
        await requireShop(shopId);
        if (raw === undefined) return { providers: await availableMethods(p, shopId) };
        // `sku:quantity,sku:quantity`, checked with the checkout's own rules for lines.
        const lines = parseInput(orderLinesInput(1), raw.split(',').map((pair) => {
          const at = pair.lastIndexOf(':');
          return { sku: at < 0 ? pair : pair.slice(0, at), quantity: at < 0 ? Number.NaN : Number(pair.slice(at + 1)) };
        }), 'lines');
        const basket = await basketOf(ctx, shopId, lines);
        if (basket.unknown.length > 0) throw invalid(basket.unknown.map((i) => ({ field: `lines.${i}.sku`, reason: `no product "${lines[i]!.sku}" in shop "${shopId}"` })));
        return { providers: await availableMethods(p, shopId, basket) };
      },
    );

    app.get('/address', { schema: { tags: ['checkout'], summary: 'The address of a Japanese postcode, to fill the checkout form', querystring: doc(addressQuery) } }, async (request) => {
      const { postcode: raw, shop } = parseInput(addressQuery, request.query);
      const postcode = normalisePostcode(raw);
      if (!postcode) throw invalid([{ field: 'postcode', reason: 'must be 7 digits, e.g. 100-0001' }]);
      await requireShop(shop);
      const settings = await getShopSettings(ctx, shop);
      const google = settings['postcode.provider'] === 'google' && typeof settings['google.mapsApiKey'] === 'string'
        ? { apiKey: settings['google.mapsApiKey'], url: String(settings['google.geocodingUrl']) }
        : undefined;
      const address = await lookupPostcode(postcode, { provider: google ? 'google' : 'japanpost', google }, (message) => request.log.warn({ postcode }, message));
      if (!address) {
        const shown = `${postcode.slice(0, 3)}-${postcode.slice(3)}`;
        // The checkout's address form shows this message as it is.
        throw new KessaiError('not_found', `郵便番号 ${shown} の住所が見つかりません。住所を入力してください。/ No address is known for postcode ${shown}; please enter the address by hand.`, 404);
      }
      return { address };
    });

    app.post(
      '/checkout',
      { schema: { tags: ['checkout'], summary: 'Create an order, reserve its stock and start paying', body: doc(orderInput), headers: doc(checkoutHeaders) } },
      async (request, reply) => {
        const key = request.headers['idempotency-key'];
        const result = await checkout(p, request.body, Array.isArray(key) ? key[0] : key);
        const view = await orderView(ctx, result.order);
        // A repeat answers the first request's order, without a new hand-off: pay through the order's page or /payments.
        return reply.status(result.replayed ? 200 : 201).send({
          ...(result.replayed ? { replayed: true } : {}),
          order: view,
          orderToken: result.token,
          orderUrl: `${ctx.config.publicUrl}/orders/${result.token}`,
          payment: result.action,
          ...(result.error ? { paymentError: result.error } : {}),
        });
      },
    );

    app.get('/orders/:token', { schema: { tags: ['orders'], summary: "The customer's view of an order, by its secret token" } }, async (request) => {
      const { token } = parseInput(tokenParams, request.params);
      return { order: await orderView(ctx, await findOrderByToken(ctx, token)) };
    });

    app.post(
      '/orders/:token/payments',
      { schema: { tags: ['orders'], summary: 'Pay again for an order still waiting for payment', body: doc(paymentInput) } },
      async (request, reply) => {
        const { token } = parseInput(tokenParams, request.params);
        const payment = parseInput(paymentInput, request.body);
        const order = await findOrderByToken(ctx, token);
        const result = await retryPayment(p, order, token, payment);
        return reply.status(201).send({ payment: result.action, ...(result.error ? { paymentError: result.error } : {}) });
      },
    );
  };
}
