import type { FastifyPluginAsync } from 'fastify';
import { z } from 'zod';
import { parseInput } from '../../errors.js';
import { handleNotification, type Payments } from '../../payments/service.js';

/** Gateways sign the exact bytes they send: no parser may touch a notification body. */
export const WEBHOOK_BODY_LIMIT = 256 * 1024;

const webhookParams = z.object({ provider: z.string(), shopId: z.string() });

export function webhookRoutes(p: Payments): FastifyPluginAsync {
  return async (app) => {
    app.removeAllContentTypeParsers();
    app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: WEBHOOK_BODY_LIMIT }, (_request, body, done) => done(null, body));

    app.post(
      '/:provider/:shopId',
      {
        schema: { tags: ['gateways'], summary: 'Payment notification from a gateway (raw body, verified by the provider)' },
        // Helmet's headers instruct browsers (framing, CSP, HSTS …); a gateway's server reads only the
        // status and the body, and at notification rates the dozen extra headers cost real time
        // (docs/benchmarks.md §3).
        helmet: false,
        // No access-log lines per delivery ("incoming request", "request completed"): at gateway rates
        // they were two JSON lines per notification. Every delivery is counted in the request metrics,
        // every verified one is a payment_events row, a refused one logs its own warning, and errors
        // are still logged (docs/decisions.md).
        logLevel: 'warn',
      },
      async (request, reply) => {
        const { provider, shopId } = parseInput(webhookParams, request.params);
        const rawBody = Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0);
        // A failure here (database down) answers 500, so the gateway delivers the notification again.
        const answer = await handleNotification(p, provider, shopId, { rawBody, headers: request.headers, remoteAddress: request.ip });
        return reply.status(answer.status).type(answer.contentType).send(answer.body);
      },
    );
  };
}
