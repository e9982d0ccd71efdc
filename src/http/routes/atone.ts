import type { FastifyPluginAsync } from 'fastify';
import { z } from 'zod';
import { findOrderByToken } from '../../commerce/orders.js';
import { findShopSettings } from '../../commerce/shops.js';
import { parseInput } from '../../errors.js';
import { ATONE_TOKEN, ATONE_TRANSACTION_ID, parseAtoneWebhook, verifyAtoneWebhook, type AtoneWebhookChecksumScheme } from '../../gateways/atone/index.js';
import { attemptByRef, claimPayment, linkMemberToken } from '../../payments/claims.js';
import type { Payments } from '../../payments/service.js';
import { WEBHOOK_BODY_LIMIT } from './webhooks.js';

/*
 * atone's two ways of telling the store something, neither of them trusted for money:
 * - the modal's callbacks, posted by the shop page's script to POST /orders/:token/atone
 *   (authenticated → keep the member's token; succeeded / failed → read the named transaction back);
 * - atone's webhooks, POST /webhooks/atone/:shopId/order (決済Webhook) and …/member (認証Webhook),
 *   checked with Np-Confirmation-Checksum when the shop configured it, then read back the same way.
 * Whichever comes first applies the fact; the other finds it done.
 */

const tokenParams = z.object({ token: z.string() });
const shopParams = z.object({ shopId: z.string() });
const callbackBody = z.discriminatedUnion('event', [
  z.object({ event: z.literal('authenticated'), authenticationToken: z.string().regex(ATONE_TOKEN, { error: 'must be an atone token (tk_…)' }), userNo: z.string().max(64).nullish() }),
  z.object({ event: z.enum(['succeeded', 'failed']), transactionId: z.string().regex(ATONE_TRANSACTION_ID, { error: 'must be an atone transaction id (tr_…)' }) }),
]);

export function atoneRoutes(p: Payments): FastifyPluginAsync {
  const { ctx } = p;
  return async (app) => {
    // Bearer: the order's secret token. Exempt from the shop front's CSRF check (a JSON call from the
    // atone page's script); what it can do is read atone back or keep a member's own token.
    app.post('/orders/:token/atone', { schema: { hide: true }, config: { csrf: false } }, async (request) => {
      const { token } = parseInput(tokenParams, request.params);
      const body = parseInput(callbackBody, request.body);
      const order = await findOrderByToken(ctx, token);
      const attempt = order.current_attempt_id
        ? await ctx.db.selectFrom('payment_attempts').select(['id', 'provider']).where('id', '=', order.current_attempt_id).executeTakeFirst()
        : undefined;
      if (!attempt || attempt.provider !== 'atone') return { state: order.state, linked: false };
      if (body.event === 'authenticated') {
        return { state: order.state, linked: await linkMemberToken(p, order.id, 'atone', body.authenticationToken, body.userNo ?? null) };
      }
      const results = await claimPayment(p, attempt.id, body.transactionId, 'return');
      const state = results.at(-1)?.orderState ?? order.state;
      return { state, orderUrl: `/orders/${token}` };
    });

    await app.register(async (raw) => {
      raw.removeAllContentTypeParsers();
      raw.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: WEBHOOK_BODY_LIMIT }, (_request, body, done) => done(null, body));

      /** The shop's settings and the webhook's claim, or the answer that refuses it. */
      const read = async (shopId: string, rawBody: Buffer, header: string | string[] | undefined) => {
        const settings = await findShopSettings(ctx, shopId);
        if (!settings) return { refused: { status: 404, body: `unknown shop ${shopId}` } };
        const scheme = settings['atone.webhookChecksum'];
        const secret = settings['atone.secretKey'];
        if (typeof scheme === 'string' && scheme !== 'off' && (typeof secret !== 'string' || !verifyAtoneWebhook(rawBody, header, secret, { scheme: scheme as AtoneWebhookChecksumScheme }))) {
          return { refused: { status: 401, body: 'invalid Np-Confirmation-Checksum' } };
        }
        try {
          return { claim: parseAtoneWebhook(rawBody), checked: typeof scheme === 'string' && scheme !== 'off' };
        } catch (error) {
          return { refused: { status: 400, body: error instanceof Error ? error.message : 'malformed' } };
        }
      };

      raw.post('/webhooks/atone/:shopId/order', { schema: { tags: ['gateways'], summary: 'atone 決済Webhook: the named transaction is read back and checked against the order' }, helmet: false }, async (request, reply) => {
        const { shopId } = parseInput(shopParams, request.params);
        const rawBody = Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0);
        const { claim, refused } = await read(shopId, rawBody, request.headers['np-confirmation-checksum']);
        if (refused) {
          request.log.warn({ shopId, reason: refused.body }, 'atone webhook refused');
          return reply.status(refused.status).type('text/plain').send(refused.body);
        }
        const attemptId = claim.shopTransactionNo ? await attemptByRef(p, shopId, 'atone', claim.shopTransactionNo) : undefined;
        if (!attemptId || !claim.transactionId) {
          request.log.warn({ shopId, shopTransactionNo: claim.shopTransactionNo }, 'atone webhook for no attempt of ours');
          return reply.type('text/plain').send('ok');
        }
        // A read-back that fails (atone unreachable) answers 500, so atone sends the webhook again.
        await claimPayment(p, attemptId, claim.transactionId, 'notification');
        return reply.type('text/plain').send('ok');
      });

      raw.post('/webhooks/atone/:shopId/member', { schema: { tags: ['gateways'], summary: "atone 認証Webhook: keeps the member's authentication token" }, helmet: false }, async (request, reply) => {
        const { shopId } = parseInput(shopParams, request.params);
        const rawBody = Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0);
        const { claim, refused, checked } = await read(shopId, rawBody, request.headers['np-confirmation-checksum']);
        if (refused) return reply.status(refused.status).type('text/plain').send(refused.body);
        // A member's token decides whom later charges go to. Unsigned, this webhook could be sent by
        // anyone who knows an order's reference, and there is nothing to read back: the token is kept
        // only from a checked webhook, or from the order's own page (its callback carries the order's
        // secret token).
        if (!checked) {
          request.log.warn({ shopId, shopTransactionNo: claim.shopTransactionNo }, 'atone 認証Webhook not checked (atone.webhookChecksum is off): the token is not kept from it');
          return reply.type('text/plain').send('ok');
        }
        const attemptId = claim.shopTransactionNo ? await attemptByRef(p, shopId, 'atone', claim.shopTransactionNo) : undefined;
        if (attemptId && claim.authenticationToken) {
          const attempt = await ctx.db.selectFrom('payment_attempts').select('order_id').where('id', '=', attemptId).executeTakeFirstOrThrow();
          await linkMemberToken(p, attempt.order_id, 'atone', claim.authenticationToken, claim.userNo);
        }
        return reply.type('text/plain').send('ok');
      });
    });
  };
}
