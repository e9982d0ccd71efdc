import type { FastifyPluginAsync } from 'fastify';
import { sql } from 'kysely';
import { pendingMigrations } from '../../db/index.js';
import { countOpenAlerts } from '../../jobs/admin.js';
import type { Payments } from '../../payments/service.js';

export function healthRoutes(p: Payments): FastifyPluginAsync {
  const { ctx } = p;
  return async (app) => {
    app.get('/healthz', { schema: { tags: ['operations'], summary: 'The process is up' } }, async () => ({ status: 'ok' }));

    app.get('/readyz', { schema: { tags: ['operations'], summary: 'The database answers and its schema is current' } }, async (_request, reply) => {
      try {
        await sql`select 1`.execute(ctx.db);
        const pending = await pendingMigrations(ctx.db);
        if (pending.length > 0) {
          return reply.status(503).send({ status: 'not_ready', reason: `migrations not applied: ${pending.join(', ')} (run kessai migrate)` });
        }
        return { status: 'ready', engine: ctx.engine };
      } catch (error) {
        return reply.status(503).send({ status: 'not_ready', reason: `database unreachable: ${error instanceof Error ? error.message : String(error)}` });
      }
    });

    app.get('/metrics', { schema: { tags: ['operations'], summary: 'Prometheus metrics' } }, async (_request, reply) => {
      // Read at scrape time: alerts are resolved by other processes too.
      ctx.metrics.alertsOpen.set(await countOpenAlerts(ctx.db));
      return reply.type(ctx.metrics.registry.contentType).send(await ctx.metrics.registry.metrics());
    });
  };
}
