import type { FastifyPluginAsync } from 'fastify';

const escape = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** The OpenAPI document and a plain page listing every operation, generated from the same routes. */
export const docsRoutes: FastifyPluginAsync = async (app) => {
  app.get('/docs/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  app.get('/docs', { schema: { hide: true } }, async (_request, reply) => {
    const spec = app.swagger() as { paths?: Record<string, Record<string, { summary?: string; tags?: string[]; security?: unknown[] }>> };
    const rows = Object.entries(spec.paths ?? {}).flatMap(([path, ops]) =>
      Object.entries(ops).map(
        ([method, op]) =>
          `<tr><td>${escape(op.tags?.[0] ?? '')}</td><td><code>${method.toUpperCase()} ${escape(path)}</code></td><td>${escape(op.summary ?? '')}${op.security ? ' <em>(operator token)</em>' : ''}</td></tr>`,
      ),
    );
    return reply
      .type('text/html; charset=utf-8')
      .send(
        `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>kessai API</title><link rel="stylesheet" href="/assets/site.css"></head><body><h1>kessai API</h1><p>Machine-readable: <a href="/docs/openapi.json">/docs/openapi.json</a>. Errors are <code>{"error":{"code","message","problems":[{"field","reason"}]}}</code>.</p><table><thead><tr><th>area</th><th>operation</th><th>what it does</th></tr></thead><tbody>${rows.join('')}</tbody></table></body></html>`,
      );
  });
};
