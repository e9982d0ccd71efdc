import { randomBytes, randomInt, timingSafeEqual } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { z } from 'zod';
import { escapeHtml as esc } from '../html.js';
import { SandboxApiError, sandboxApiErrorHandler } from './api-error.js';

/*
 * A stand-in for Chekicha's account-link API, mounted at /sandbox/chekicha. Chekicha's protocol is
 * not public: this simulates the one kessai assumes (integrations/chekicha/connect.ts,
 * docs/decisions.md, UNCONFIRMED), as strictly as a careful API would be.
 *
 *   POST /v1/account-links        Authorization: Bearer <key>, JSON {partner_id, member_ref, email,
 *                                 order_number?, product_codes?}, Idempotency-Key optional
 *                                 → 201 {link_id, account_id, status: "linked", created_at} for a new
 *                                   member_ref, 200 with the same link for one linked before
 *   GET  /api/links               every link (tests; a person trying the demo)
 *   GET|POST /api/faults          {down?, delayMs?, failNext?, rejectStatus?} (no credentials: the
 *                                 sandbox is off in production)
 *   GET  /                        overview: links and faults
 *
 * Errors are `{"error":{"code","message","field"?}}`: 400 bad_request (not JSON, not an object, a bad
 * Idempotency-Key), 401 unauthorized (no or wrong key), 403 partner_mismatch (partner_id is not the
 * key's), 422 invalid_parameter (a field, named), 422 idempotency_key_reused (the key came with a
 * different body), 409 request_in_progress (the key's first request is still running).
 *
 * Idempotency: per partner, an answered request is kept under its key (24 h) and the same key with
 * the same body gets that answer again; requests refused before they ran keep nothing. Independent
 * of keys, a member_ref is linked once: a new request for it answers the existing link.
 *
 * Faults, checked in this order before anything else: `down` answers 503; `failNext` answers 500
 * to that many requests, counting down; then, for a request that passed its checks, `rejectStatus`
 * (a 4xx, 0 off) refuses it with that status and code `rejected`; `delayMs` holds a request that
 * runs, inside its idempotency window, to exercise time-outs (the link is still made: a server does
 * not know that its client gave up).
 */

export interface ChekichaSandboxPartner {
  partnerId: string;
  apiKey: string;
}

export interface ChekichaSandboxOptions {
  partners: ChekichaSandboxPartner[];
  log: Logger;
}

const BODY_LIMIT = 16 * 1024;
const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,255}$/;
const IDEMPOTENCY_LIFETIME_MS = 24 * 3600 * 1000;

const linkSchema = z.object({
  partner_id: z.string({ error: 'must be a string' }).min(1, { error: 'must not be empty' }).max(64, { error: 'must be at most 64 characters' }),
  member_ref: z.string({ error: 'must be a string' }).min(1, { error: 'must not be empty' }).max(128, { error: 'must be at most 128 characters' }),
  email: z.email({ error: 'must be an email address' }).max(254, { error: 'must be at most 254 characters' }),
  order_number: z.string({ error: 'must be a string' }).min(1).max(64, { error: 'must be at most 64 characters' }).optional(),
  product_codes: z.array(z.string().min(1).max(64), { error: 'must be an array of product codes' }).max(50, { error: 'must list at most 50 codes' }).optional(),
});

const faultsSchema = z.strictObject({
  down: z.boolean().optional(),
  delayMs: z.number().int().min(0).max(120_000).optional(),
  failNext: z.number().int().min(0).max(1000).optional(),
  rejectStatus: z.union([z.literal(0), z.number().int().min(400).max(499)], { error: 'must be 0 (off) or an HTTP status 400–499' }).optional(),
});
type Faults = Required<z.infer<typeof faultsSchema>>;
const DEFAULT_FAULTS: Faults = { down: false, delayMs: 0, failNext: 0, rejectStatus: 0 };

interface Link {
  linkId: string;
  accountId: string;
  partnerId: string;
  memberRef: string;
  email: string;
  orders: string[];
  productCodes: string[];
  createdAt: Date;
  /** Requests answered with this link (repeats and replays included). */
  requests: number;
}

interface Partner {
  partnerId: string;
  apiKey: Buffer;
  idempotency: Map<string, { body: string; at: number; answer?: { status: number; body: unknown } }>;
}

export function chekichaSandbox(opts: ChekichaSandboxOptions): FastifyPluginAsync {
  if (opts.partners.length === 0) throw new TypeError('chekichaSandbox: at least one partner is required');
  const partners: Partner[] = opts.partners.map((p) => ({ partnerId: p.partnerId, apiKey: Buffer.from(p.apiKey, 'utf8'), idempotency: new Map() }));
  const log = opts.log;

  return async (app) => {
    const prefix = app.prefix;
    const links = new Map<string, Link>();
    const faults: Faults = { ...DEFAULT_FAULTS };
    const stop = new AbortController();
    app.addHook('onClose', async () => stop.abort());

    app.setErrorHandler(sandboxApiErrorHandler('Chekicha', log));

    function authenticate(header: string | undefined): Partner {
      const match = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
      if (!match) throw new SandboxApiError(401, 'unauthorized', 'send the API key as Authorization: Bearer <key>');
      const given = Buffer.from(match[1]!, 'utf8');
      let found: Partner | undefined;
      // Every key is compared, so the time taken does not say which one nearly matched.
      for (const p of partners) if (p.apiKey.length === given.length && timingSafeEqual(p.apiKey, given) && !found) found = p;
      if (!found) throw new SandboxApiError(401, 'unauthorized', 'the API key is not valid');
      return found;
    }

    function parseLink(partner: Partner, body: unknown): z.infer<typeof linkSchema> {
      if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new SandboxApiError(400, 'bad_request', 'the body must be a JSON object');
      const result = linkSchema.safeParse(body);
      if (!result.success) {
        const issue = result.error.issues[0]!;
        const field = issue.path.map(String).join('.') || undefined;
        throw new SandboxApiError(422, 'invalid_parameter', `${field ?? 'body'}: ${issue.message}`, field);
      }
      if (result.data.partner_id !== partner.partnerId) {
        throw new SandboxApiError(403, 'partner_mismatch', `partner_id "${result.data.partner_id}" is not the partner of this API key`, 'partner_id');
      }
      return result.data;
    }

    function link(partner: Partner, input: z.infer<typeof linkSchema>): { status: number; body: unknown } {
      const at = `${partner.partnerId}\0${input.member_ref}`;
      let found = links.get(at);
      const created = !found;
      if (!found) {
        found = {
          linkId: `lnk_${randomBytes(8).toString('hex')}`,
          accountId: `ckc_${randomInt(10_000_000, 99_999_999)}`,
          partnerId: partner.partnerId,
          memberRef: input.member_ref,
          email: input.email,
          orders: [],
          productCodes: [],
          createdAt: new Date(),
          requests: 0,
        };
        links.set(at, found);
      }
      found.requests += 1;
      if (input.order_number && !found.orders.includes(input.order_number)) found.orders.push(input.order_number);
      for (const code of input.product_codes ?? []) if (!found.productCodes.includes(code)) found.productCodes.push(code);
      return { status: created ? 201 : 200, body: view(found) };
    }

    const view = (l: Link) => ({ link_id: l.linkId, account_id: l.accountId, status: 'linked', created_at: l.createdAt.toISOString() });

    app.post('/v1/account-links', { bodyLimit: BODY_LIMIT }, async (request: FastifyRequest, reply: FastifyReply) => {
      if (faults.down) return reply.status(503).send({ error: { code: 'service_unavailable', message: 'Chekicha is down (sandbox fault "down")' } });
      if (faults.failNext > 0) {
        faults.failNext -= 1;
        return reply.status(500).send({ error: { code: 'internal_error', message: `sandbox fault "failNext" (${faults.failNext} more)` } });
      }
      const partner = authenticate(request.headers.authorization);
      const type = request.headers['content-type'];
      if (!type || !/^application\/json\b/i.test(type)) throw new SandboxApiError(400, 'bad_request', `send the body as JSON (Content-Type: application/json), not ${type ?? 'nothing'}`);
      const input = parseLink(partner, request.body);
      if (faults.rejectStatus) throw new SandboxApiError(faults.rejectStatus, 'rejected', `Chekicha refuses this link (sandbox fault "rejectStatus" ${faults.rejectStatus})`);

      const key = request.headers['idempotency-key'];
      if (key === undefined) {
        await pause(faults.delayMs);
        const answer = link(partner, input);
        return reply.status(answer.status).send(answer.body);
      }
      if (typeof key !== 'string' || !IDEMPOTENCY_KEY.test(key)) throw new SandboxApiError(400, 'bad_request', 'Idempotency-Key must be 1–255 printable ASCII characters, sent once', 'Idempotency-Key');
      const now = Date.now();
      for (const [k, kept] of partner.idempotency) if (kept.answer && now - kept.at > IDEMPOTENCY_LIFETIME_MS) partner.idempotency.delete(k);
      const body = JSON.stringify(request.body);
      const kept = partner.idempotency.get(key);
      if (kept) {
        if (kept.body !== body) throw new SandboxApiError(422, 'idempotency_key_reused', `Idempotency-Key ${key} was used for a different request; use a new key for a new request`, 'Idempotency-Key');
        if (!kept.answer) throw new SandboxApiError(409, 'request_in_progress', `the request with Idempotency-Key ${key} is still being processed; retry it later`);
        log.info({ key }, 'chekicha sandbox: idempotent replay');
        return reply.status(kept.answer.status).send(kept.answer.body);
      }
      const entry: { body: string; at: number; answer?: { status: number; body: unknown } } = { body, at: now };
      partner.idempotency.set(key, entry);
      try {
        await pause(faults.delayMs);
        entry.answer = link(partner, input);
      } catch (error) {
        partner.idempotency.delete(key);
        throw error;
      }
      return reply.status(entry.answer.status).send(entry.answer.body);
    });

    async function pause(ms: number): Promise<void> {
      if (ms > 0) await sleep(ms, undefined, { signal: stop.signal }).catch(() => undefined);
    }

    app.get('/api/links', async () => ({
      links: [...links.values()].map((l) => ({ ...view(l), partner_id: l.partnerId, member_ref: l.memberRef, email: l.email, orders: l.orders, product_codes: l.productCodes, requests: l.requests })),
    }));

    app.get('/api/faults', async () => ({ ...faults }));
    app.post('/api/faults', { bodyLimit: BODY_LIMIT }, async (request) => {
      const result = faultsSchema.safeParse(request.body ?? {});
      if (!result.success) {
        const issue = result.error.issues[0]!;
        const field = issue.path.map(String).join('.') || undefined;
        throw new SandboxApiError(422, 'invalid_parameter', `${field ?? 'body'}: ${issue.message}`, field);
      }
      Object.assign(faults, result.data);
      log.info({ faults }, 'chekicha sandbox: faults set');
      return { ...faults };
    });

    app.get('/', async (_request, reply) => {
      const rows = [...links.values()]
        .reverse()
        .slice(0, 100)
        .map((l) => `<tr><td>${esc(l.createdAt.toISOString())}</td><td><code>${esc(l.accountId)}</code></td><td><code>${esc(l.memberRef)}</code></td><td>${esc(l.email)}</td><td>${esc(l.orders.join(', ') || '—')}</td><td>${l.requests}</td></tr>`)
        .join('\n');
      return reply
        .type('text/html; charset=utf-8')
        .header('cache-control', 'no-store')
        .send(`<!doctype html>
<html lang="ja"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>Chekicha sandbox</title>
<style>body{font-family:system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left}.note{color:#555;font-size:.9em}</style>
</head>
<body>
<p class="note">Chekicha sandbox — テスト環境 / test environment</p>
<h1>Chekicha sandbox</h1>
<p>Chekicha のアカウント連携 API の模擬環境です。/ A simulator of Chekicha's account-link API.</p>
<ul>
<li>API: <code>POST ${esc(prefix)}/v1/account-links</code> (Authorization: Bearer &lt;chekicha.apiKey&gt;)</li>
<li>障害設定 / Faults: <code>${esc(JSON.stringify(faults))}</code> — <code>POST ${esc(prefix)}/api/faults</code></li>
</ul>
<h2>連携 / Links</h2>
<table><tr><th>作成 / At</th><th>Chekicha account</th><th>member_ref</th><th>Email</th><th>注文 / Orders</th><th>Requests</th></tr>
${rows || '<tr><td colspan="6">まだありません / None yet.</td></tr>'}</table>
</body></html>
`);
    });
  };
}
