import Fastify, { type FastifyBaseLogger, type FastifyError, type FastifyInstance } from 'fastify';
import formbody from '@fastify/formbody';
import helmet from '@fastify/helmet';
import swagger from '@fastify/swagger';
import { KessaiError } from '../errors.js';
import { newId } from '../ids.js';
import type { Payments } from '../payments/service.js';
import { errorPage, shopFront, wantsPage } from './front.js';
import { accountRoutes } from './routes/account.js';
import { atoneRoutes } from './routes/atone.js';
import { apiRoutes } from './routes/api.js';
import { adminRoutes } from './routes/admin.js';
import { healthRoutes } from './routes/health.js';
import { inquiryRoutes } from './routes/inquiry.js';
import { docsRoutes } from './routes/docs.js';
import { pageRoutes } from './routes/pages.js';
import { shopRoutes } from './routes/shop.js';
import { webhookRoutes } from './routes/webhooks.js';

export interface AppOptions {
  payments: Payments;
  /** Extra plugins mounted on the same server (the sandbox's simulated gateways). */
  plugins?: ((app: FastifyInstance) => Promise<void>)[];
}

/** JSON bodies above this are refused with 413 before they are parsed. */
export const BODY_LIMIT = 64 * 1024;

export async function buildApp(opts: AppOptions): Promise<FastifyInstance> {
  const { ctx } = opts.payments;
  const app = Fastify({
    loggerInstance: ctx.log as FastifyBaseLogger,
    bodyLimit: BODY_LIMIT,
    // Only the named proxies' X-Forwarded-For counts: trusting every hop would let a client choose its own address.
    trustProxy: ctx.config.trustProxy.length > 0 ? ctx.config.trustProxy : false,
    requestIdHeader: 'x-request-id',
    genReqId: () => newId('req'),
    // Input is checked by the zod schemas in each handler, which name every bad field; the route
    // schemas are the same zod schemas rendered for the OpenAPI document.
    schemaErrorFormatter: (errors) => new Error(errors.map((e) => e.message).join('; ')),
  });
  app.setValidatorCompiler(() => () => true);

  app.addHook('onResponse', async (request, reply) => {
    ctx.metrics.httpDuration.observe(
      { method: request.method, route: request.routeOptions.url ?? 'unmatched', status: String(reply.statusCode) },
      reply.elapsedTime / 1000,
    );
  });

  app.setErrorHandler((error: FastifyError | KessaiError, request, reply) => {
    if (error instanceof KessaiError) {
      if (error.status >= 500) request.log.error({ err: error }, error.message);
      // A wrong order link opened in a browser: a page that says so, not JSON.
      if (error.status === 404 && wantsPage(request)) return errorPage(reply, 404, error.message);
      return reply.status(error.status).send({ error: { code: error.code, message: error.message, problems: error.problems } });
    }
    const status = error.statusCode ?? 500;
    if (status < 500) {
      // Fastify's own client errors (bad JSON, body too large, wrong content type): pass them on plainly.
      return reply.status(status).send({ error: { code: error.code ?? 'bad_request', message: error.message, problems: [] } });
    }
    request.log.error({ err: error }, 'unhandled error');
    return reply.status(500).send({ error: { code: 'internal_error', message: `internal error; quote request id ${request.id}`, problems: [] } });
  });
  app.setNotFoundHandler((request, reply) =>
    wantsPage(request)
      ? errorPage(reply, 404, 'お探しのページはありません。アドレスをご確認ください。/ There is no page at this address; please check it.')
      : reply.status(404).send({ error: { code: 'not_found', message: `no route ${request.method} ${request.url.split('?')[0]}`, problems: [] } }),
  );

  await app.register(helmet, {
    contentSecurityPolicy: {
      directives: {
        // Payment hand-off forms post to the gateway's origin.
        'form-action': null,
        'upgrade-insecure-requests': null,
      },
    },
  });
  await app.register(formbody, { bodyLimit: BODY_LIMIT });
  await app.register(swagger, {
    // The sandbox's simulated gateways are not kessai's API: only tagged routes are documented.
    hideUntagged: true,
    openapi: {
      openapi: '3.0.3',
      info: { title: 'kessai', version: '0.1.0', description: 'Commerce backend for Japanese web shops' },
      components: { securitySchemes: { admin: { type: 'http', scheme: 'bearer' } } },
    },
  });

  await app.register(healthRoutes(opts.payments));
  await app.register(docsRoutes);
  await app.register(apiRoutes(opts.payments), { prefix: '/api' });
  await app.register(adminRoutes(opts.payments), { prefix: '/api/admin' });
  await app.register(webhookRoutes(opts.payments), { prefix: '/webhooks' });
  await app.register(atoneRoutes(opts.payments));
  // The shop front: its pages share the session cookie and the CSRF check on every form post.
  await app.register(async (front) => {
    await shopFront(front, ctx);
    await front.register(shopRoutes(opts.payments));
    await front.register(pageRoutes(opts.payments));
    await front.register(accountRoutes(opts.payments));
    await front.register(inquiryRoutes(opts.payments));
  });
  for (const plugin of opts.plugins ?? []) await plugin(app);
  return app;
}
