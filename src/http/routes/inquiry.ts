import type { FastifyPluginAsync, FastifyReply } from 'fastify';
import { z } from 'zod';
import { createInquiry, INQUIRY_CATEGORIES, type InquiryCategory } from '../../commerce/inquiries.js';
import { DEFAULT_SHOP_ID } from '../../commerce/shops.js';
import type { Payments } from '../../payments/service.js';
import { currentCustomer, page } from '../front.js';
import { fieldErrors, rateLimited } from './account.js';

/*
 * The inquiry form (お問い合わせ) of the shop front. The answer comes from the stored inquiry, never
 * from a mail: the acknowledgement and the staff's copy leave through the outbox afterwards.
 */

const formBody = z.record(z.string(), z.unknown());
const str = (v: unknown) => (typeof v === 'string' ? v : '');
const categories = Object.entries(INQUIRY_CATEGORIES);

export function inquiryRoutes(p: Payments): FastifyPluginAsync {
  const { ctx } = p;
  return async (app) => {
    app.addHook('onRequest', async (_request, reply) => {
      reply.header('cache-control', 'no-store');
    });
    const hide = { schema: { hide: true } };
    const form = (reply: FastifyReply, values: Record<string, string>, errors: Record<string, string> = {}, formError?: string, status = 200) =>
      page(reply, 'inquiry', { title: 'お問い合わせ / Contact us', values, errors, formError, categories }, status);

    app.get('/inquiry', hide, async (request, reply) => {
      const me = await currentCustomer(request);
      const order = z.object({ order: z.string().max(40).optional() }).safeParse(request.query);
      return form(reply, { name: me?.name ?? '', email: me?.email ?? '', orderNumber: (order.success && order.data.order) || '' });
    });

    app.post('/inquiry', hide, async (request, reply) => {
      const f = formBody.parse(request.body ?? {});
      const values = { name: str(f.name), email: str(f.email), category: str(f.category), orderNumber: str(f.orderNumber), body: str(f.body) };
      try {
        const r = await createInquiry(ctx, DEFAULT_SHOP_ID, values, request.ip);
        if (r.outcome === 'rate_limited') return form(reply, values, {}, rateLimited(reply, r.retryAt), 429);
        return page(reply, 'inquiry-thanks', {
          title: 'お問い合わせを受け付けました / We received your inquiry',
          inquiry: r.inquiry,
          category: INQUIRY_CATEGORIES[r.inquiry.category as InquiryCategory],
        });
      } catch (error) {
        const errors = fieldErrors(error);
        if (errors) return form(reply, values, errors, undefined, 400);
        throw error;
      }
    });
  };
}
