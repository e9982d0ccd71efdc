import type { FastifyPluginAsync } from 'fastify';
import { z } from 'zod';
import { getProduct, listProducts } from '../../commerce/catalog.js';
import { findOrderByToken, orderInput, orderView } from '../../commerce/orders.js';
import { shopExists } from '../../commerce/shops.js';
import { notFound, parseInput } from '../../errors.js';
import { availableMethods, checkout, retryPayment, type Payments } from '../../payments/service.js';
import { doc } from '../schema.js';

// Built once: a zod schema costs far more to build than to run.
const shopParams = z.object({ shopId: z.string() });
const productParams = shopParams.extend({ code: z.string() });
const tokenParams = z.object({ token: z.string() });
const paymentInput = z.strictObject({
  provider: z.string().min(1, { error: 'must not be empty' }).max(20),
  method: z.string().min(1).max(30).optional(),
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

    app.get('/shops/:shopId/payment-methods', { schema: { tags: ['checkout'], summary: 'Payment providers and methods the shop offers' } }, async (request) => {
      const { shopId } = parseInput(shopParams, request.params);
      await requireShop(shopId);
      return { providers: await availableMethods(p, shopId) };
    });

    app.post(
      '/checkout',
      { schema: { tags: ['checkout'], summary: 'Create an order, reserve its stock and start paying', body: doc(orderInput) } },
      async (request, reply) => {
        const result = await checkout(p, request.body);
        const view = await orderView(ctx, result.order);
        return reply.status(201).send({
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
