import { createHmac, randomBytes, randomInt, timingSafeEqual } from 'node:crypto';
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { z } from 'zod';
import { escapeHtml as esc } from '../html.js';
import { SandboxApiError, sandboxApiErrorHandler } from './api-error.js';

/*
 * testpay: the sandbox's own minimal gateway. It is shaped like KOMOJU (hosted page, HMAC-signed
 * webhook, read-back API, capture / refund / cancel with idempotency keys) so that the payment core
 * is exercised through exactly the seams a real gateway uses, with nothing real behind them.
 *
 * Its state is an in-memory map the store cannot see into: the store learns what happened only from
 * webhooks and API answers, as it would with a remote party. The fault switches let tests take those
 * channels away (dropped webhooks, 500s, slow answers) and check the store still converges.
 */

export type TestpayStatus =
  | 'pending'
  | 'awaiting_payment'
  | 'authorized'
  | 'captured'
  | 'partially_refunded'
  | 'refunded'
  | 'failed'
  | 'cancelled'
  | 'expired';

/** The payment as the API and the webhooks show it. */
export interface TestpayPaymentView {
  id: string;
  merchant_ref: string;
  status: TestpayStatus;
  amount: number;
  captured_amount: number;
  refunded_amount: number;
  refunds: { id: string; amount: number }[];
  konbini?: { receipt: string; deadline: string };
  failure_reason?: string;
}

type EventType = 'payment.awaiting' | 'payment.authorized' | 'payment.captured' | 'payment.failed' | 'payment.cancelled' | 'payment.expired' | 'payment.refunded';

const createSchema = z.object({
  merchant_ref: z.string().min(1).max(64),
  amount: z.number().int().positive().max(9_999_999),
  currency: z.literal('JPY'),
  return_url: z.url({ protocol: /^https?$/ }),
  cancel_url: z.url({ protocol: /^https?$/ }),
  notify_url: z.url({ protocol: /^https?$/ }),
  email: z.email(),
  capture: z.enum(['auto', 'manual']),
  methods: z.array(z.enum(['card', 'konbini'])).min(1).optional(),
});
type CreateRequest = z.infer<typeof createSchema>;

const amountSchema = z.object({ amount: z.number().int().positive() });

const faultsSchema = z.object({
  webhooks: z.enum(['deliver', 'drop']).optional(),
  api: z.enum(['ok', 'error500', 'slow']).optional(),
  slowMs: z.number().int().min(0).max(60_000).optional(),
});

interface Payment extends TestpayPaymentView, Omit<CreateRequest, 'merchant_ref' | 'amount'> {}

/** An answer kept under its Idempotency-Key, with what was asked, so a replay gets the same answer. */
interface KeptAnswer {
  request: string;
  status: number;
  body: unknown;
}

const WEBHOOK_RETRIES = 3;
const WEBHOOK_BACKOFF_MS = 200;
const WEBHOOK_TIMEOUT_MS = 5_000;
const BODY_LIMIT = 16 * 1024;

export function testpaySandbox(opts: { secret: string; log?: Logger; fetchImpl?: typeof fetch }): FastifyPluginAsync {
  const fetchImpl = opts.fetchImpl ?? fetch;

  return async (app) => {
    const log = opts.log ?? app.log;
    const payments = new Map<string, Payment>();
    const byMerchantRef = new Map<string, string>();
    const answers = new Map<string, KeptAnswer>();
    const faults: { webhooks: 'deliver' | 'drop'; api: 'ok' | 'error500' | 'slow'; slowMs: number } = { webhooks: 'deliver', api: 'ok', slowMs: 2_000 };
    const prefix = app.prefix; // where the app mounted us: the hosted page's URL is built from it
    let closed = false;
    app.addHook('onClose', async () => {
      closed = true; // background webhook retries stop with the server
    });

    // The hosted page's buttons post empty forms; the store's app parses those already, a bare test server does not.
    if (!app.hasContentTypeParser('application/x-www-form-urlencoded')) {
      app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string' }, (_req, body, done) => {
        done(null, Object.fromEntries(new URLSearchParams(body as string)));
      });
    }

    app.setErrorHandler(sandboxApiErrorHandler('testpay', log));

    function view(p: Payment): TestpayPaymentView {
      const { id, merchant_ref, status, amount, captured_amount, refunded_amount, refunds, konbini, failure_reason } = p;
      return { id, merchant_ref, status, amount, captured_amount, refunded_amount, refunds: refunds.map((r) => ({ ...r })), ...(konbini ? { konbini } : {}), ...(failure_reason ? { failure_reason } : {}) };
    }

    function find(id: string): Payment {
      const p = payments.get(id);
      if (!p) throw new SandboxApiError(404, 'not_found', `no payment ${id}`);
      return p;
    }

    function parse<S extends z.ZodType>(schema: S, body: unknown): z.infer<S> {
      const result = schema.safeParse(body ?? {});
      if (result.success) return result.data;
      const issue = result.error.issues[0]!;
      const field = issue.path.map(String).join('.') || '(body)';
      throw new SandboxApiError(400, 'invalid_request', `${field}: ${issue.message}`, field);
    }

    // ---- webhooks ---------------------------------------------------------------------------

    /**
     * Signs and posts one event. The first try is awaited (so the store usually knows before the
     * browser comes back); if the store is down we keep trying in the background like a real gateway.
     */
    async function notify(p: Payment, type: EventType, refund?: { id: string; amount: number }): Promise<void> {
      if (faults.webhooks === 'drop') return;
      const body = JSON.stringify({ id: `evt_${randomBytes(12).toString('hex')}`, type, data: view(p), ...(refund ? { refund } : {}) });
      const signature = createHmac('sha256', opts.secret).update(body).digest('hex');
      const deliver = async (): Promise<void> => {
        const res = await fetchImpl(p.notify_url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'x-testpay-signature': signature },
          body,
          signal: AbortSignal.timeout(WEBHOOK_TIMEOUT_MS),
        });
        await res.arrayBuffer(); // drain so the connection is released
        if (!res.ok) throw new Error(`store answered ${res.status}`);
      };
      const retry = (attempt: number): void => {
        if (closed || attempt > WEBHOOK_RETRIES) return;
        setTimeout(() => {
          deliver().catch((err: unknown) => {
            log.warn({ err, payment: p.id, type, attempt }, 'testpay webhook retry failed');
            retry(attempt + 1);
          });
        }, WEBHOOK_BACKOFF_MS * attempt).unref();
      };
      try {
        await deliver();
      } catch (err) {
        log.warn({ err, payment: p.id, type, notifyUrl: p.notify_url }, 'testpay webhook failed; retrying in the background');
        retry(1);
      }
    }

    // ---- what happens to a payment ----------------------------------------------------------

    function capture(p: Payment, amount: number): void {
      p.status = 'captured';
      p.captured_amount = amount;
    }

    /** The hosted page's buttons: who may press them, and what they do. */
    const choices: Record<string, { from: TestpayStatus[]; method?: 'card' | 'konbini'; label: string; run: (p: Payment) => EventType }> = {
      card: {
        from: ['pending'],
        method: 'card',
        label: 'カードで支払う / Pay by card',
        run: (p) => {
          if (p.capture === 'auto') {
            capture(p, p.amount);
            return 'payment.captured';
          }
          p.status = 'authorized';
          return 'payment.authorized';
        },
      },
      konbini: {
        from: ['pending'],
        method: 'konbini',
        label: 'コンビニで支払う / Konbini',
        run: (p) => {
          p.status = 'awaiting_payment';
          const deadline = new Date(Date.now() + 3 * 24 * 3600 * 1000).toISOString();
          p.konbini = { receipt: String(randomInt(10_000_000, 99_999_999)) + String(randomInt(1_000, 9_999)), deadline };
          return 'payment.awaiting';
        },
      },
      decline: {
        from: ['pending'],
        method: 'card',
        label: 'カードが拒否される / Decline',
        run: (p) => {
          p.status = 'failed';
          p.failure_reason = 'card_declined';
          return 'payment.failed';
        },
      },
      cancel: {
        from: ['pending'],
        label: 'キャンセル / Cancel',
        run: (p) => {
          p.status = 'cancelled';
          return 'payment.cancelled';
        },
      },
      // Later, at the store counter: the konbini payment completes or its deadline passes.
      'konbini-paid': {
        from: ['awaiting_payment'],
        label: 'コンビニで支払った / Paid at the store',
        run: (p) => {
          capture(p, p.amount);
          return 'payment.captured';
        },
      },
      'konbini-expire': {
        from: ['awaiting_payment'],
        label: '期限切れにする / Let it expire',
        run: (p) => {
          p.status = 'expired';
          return 'payment.expired';
        },
      },
    };

    const offered = (p: Payment, name: string): boolean => {
      const c = choices[name];
      return !!c && c.from.includes(p.status) && (!c.method || !p.methods || p.methods.includes(c.method));
    };

    // ---- hosted payment page ----------------------------------------------------------------

    app.get<{ Params: { id: string } }>('/pay/:id', async (request, reply) => {
      const p = payments.get(request.params.id);
      if (!p) return reply.status(404).type('text/html; charset=utf-8').send(page('Not found', '<p>この支払いはありません / No such payment.</p>'));
      const buttons = Object.entries(choices)
        .filter(([name]) => offered(p, name))
        .map(([name, c]) => `<form method="post" action="${esc(`${prefix}/pay/${p.id}/${name}`)}"><button type="submit">${esc(c.label)}</button></form>`)
        .join('\n');
      const konbini = p.konbini
        ? `<p>受付番号 / Receipt: <strong>${esc(p.konbini.receipt)}</strong><br>支払期限 / Deadline: ${esc(p.konbini.deadline)}</p>`
        : '';
      return reply.type('text/html; charset=utf-8').send(
        page(
          'testpay',
          `<h1>testpay お支払い / Payment</h1>
<p>ご注文 / Order: ${esc(p.merchant_ref)}</p>
<p>金額 / Amount: <strong>¥${p.amount.toLocaleString('ja-JP')}</strong> (${p.amount} JPY)</p>
<p>状態 / Status: ${esc(p.status)}</p>
${konbini}
${buttons || '<p>操作はありません / Nothing to do here.</p>'}`,
        ),
      );
    });

    app.post<{ Params: { id: string; choice: string } }>('/pay/:id/:choice', { bodyLimit: BODY_LIMIT }, async (request, reply) => {
      const p = payments.get(request.params.id);
      const choice = choices[request.params.choice];
      if (!p || !choice) return reply.status(404).type('text/html; charset=utf-8').send(page('Not found', '<p>Not found.</p>'));
      if (!offered(p, request.params.choice)) {
        // A double click or a stale tab: say so instead of changing a payment that has moved on.
        return reply
          .status(409)
          .type('text/html; charset=utf-8')
          .send(page('Conflict', `<p>この支払いは既に ${esc(p.status)} です / This payment is already ${esc(p.status)}.</p><p><a href="${esc(p.return_url)}">ショップに戻る / Back to the shop</a></p>`));
      }
      await notify(p, choice.run(p));
      const target = new URL(p.status === 'cancelled' ? p.cancel_url : p.return_url);
      target.searchParams.set('payment_id', p.id);
      return reply.redirect(target.toString(), 303);
    });

    // ---- API --------------------------------------------------------------------------------

    await app.register(async (api) => {
      const expected = Buffer.from(`Bearer ${opts.secret}`);
      api.addHook('onRequest', async (request) => {
        const given = Buffer.from(request.headers.authorization ?? '');
        if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
          throw new SandboxApiError(401, 'unauthorized', 'Authorization: Bearer <secret> is missing or wrong');
        }
        if (request.url.startsWith(`${prefix}/api/faults`)) return;
        if (faults.api === 'error500') throw new SandboxApiError(500, 'gateway_error', 'simulated gateway failure (fault api=error500)');
        if (faults.api === 'slow') await new Promise((resolve) => setTimeout(resolve, faults.slowMs));
      });

      api.post('/faults', { bodyLimit: BODY_LIMIT }, async (request) => {
        Object.assign(faults, parse(faultsSchema, request.body));
        return { ...faults };
      });

      api.post('/payments', { bodyLimit: BODY_LIMIT }, async (request, reply) => {
        const input = parse(createSchema, request.body);
        if (byMerchantRef.has(input.merchant_ref)) {
          throw new SandboxApiError(409, 'duplicate_merchant_ref', `merchant_ref ${input.merchant_ref} was used for another payment`);
        }
        const p: Payment = { ...input, id: `tp_${randomBytes(12).toString('hex')}`, status: 'pending', captured_amount: 0, refunded_amount: 0, refunds: [] };
        payments.set(p.id, p);
        byMerchantRef.set(p.merchant_ref, p.id);
        const payUrl = `${request.protocol}://${request.host}${prefix}/pay/${p.id}`;
        return reply.status(201).send({ id: p.id, status: p.status, amount: p.amount, merchant_ref: p.merchant_ref, pay_url: payUrl });
      });

      api.get<{ Querystring: { merchant_ref?: string } }>('/payments', async (request) => {
        const ref = request.query.merchant_ref;
        if (!ref) throw new SandboxApiError(400, 'invalid_request', 'merchant_ref: required', 'merchant_ref');
        const id = byMerchantRef.get(ref);
        if (!id) throw new SandboxApiError(404, 'not_found', `no payment with merchant_ref ${ref}`);
        return view(find(id));
      });

      api.get<{ Params: { id: string } }>('/payments/:id', async (request) => view(find(request.params.id)));

      /**
       * Runs a money operation once per Idempotency-Key. The answer is kept with what was asked:
       * the same request again gets the same answer (nothing runs twice), a different request
       * under the same key is refused. Rule violations (422) are kept too; bad input is not.
       */
      const operation = (run: (p: Payment, body: unknown) => { type: EventType; refund?: { id: string; amount: number } }) =>
        async (request: FastifyRequest<{ Params: { id: string } }>, reply: FastifyReply) => {
          const key = request.headers['idempotency-key'];
          if (typeof key !== 'string' || key === '') throw new SandboxApiError(400, 'idempotency_key_required', 'the Idempotency-Key header is required', 'Idempotency-Key');
          const asked = `${request.method} ${request.url} ${JSON.stringify(request.body ?? {})}`;
          const kept = answers.get(key);
          if (kept) {
            if (kept.request !== asked) throw new SandboxApiError(422, 'idempotency_key_reused', `Idempotency-Key ${key} was used for a different request`);
            return reply.status(kept.status).send(kept.body);
          }
          const p = find(request.params.id);
          let event: ReturnType<typeof run>;
          try {
            event = run(p, request.body);
          } catch (error) {
            if (error instanceof SandboxApiError && error.status === 422) {
              answers.set(key, { request: asked, status: 422, body: { error: { code: error.code, message: error.message } } });
            }
            throw error;
          }
          const body = view(p);
          answers.set(key, { request: asked, status: 200, body });
          void notify(p, event.type, event.refund); // the API answers at once; the webhook follows
          return reply.send(body);
        };

      const requireStatus = (p: Payment, allowed: TestpayStatus[], action: string): void => {
        if (!allowed.includes(p.status)) throw new SandboxApiError(422, 'invalid_status', `cannot ${action} a payment that is ${p.status} (allowed: ${allowed.join(', ')})`);
      };

      api.post('/payments/:id/capture', { bodyLimit: BODY_LIMIT }, operation((p, body) => {
        const { amount } = parse(amountSchema, body);
        requireStatus(p, ['authorized'], 'capture');
        if (amount > p.amount) throw new SandboxApiError(422, 'amount_exceeds_authorized', `capture of ${amount} exceeds the authorized ${p.amount}`);
        capture(p, amount);
        return { type: 'payment.captured' };
      }));

      api.post('/payments/:id/refund', { bodyLimit: BODY_LIMIT }, operation((p, body) => {
        const { amount } = parse(amountSchema, body);
        requireStatus(p, ['captured', 'partially_refunded'], 'refund');
        const refundable = p.captured_amount - p.refunded_amount;
        if (amount > refundable) throw new SandboxApiError(422, 'amount_exceeds_refundable', `refund of ${amount} exceeds the refundable ${refundable}`);
        const refund = { id: `rf_${randomBytes(12).toString('hex')}`, amount };
        p.refunds.push(refund);
        p.refunded_amount += amount;
        p.status = p.refunded_amount === p.captured_amount ? 'refunded' : 'partially_refunded';
        return { type: 'payment.refunded', refund };
      }));

      api.post('/payments/:id/cancel', { bodyLimit: BODY_LIMIT }, operation((p) => {
        requireStatus(p, ['pending', 'authorized', 'awaiting_payment'], 'cancel');
        p.status = 'cancelled';
        return { type: 'payment.cancelled' };
      }));
    }, { prefix: '/api' });
  };
}

function page(title: string, body: string): string {
  return `<!doctype html>
<html lang="ja"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>${esc(title)}</title></head>
<body>
${body}
</body></html>
`;
}
