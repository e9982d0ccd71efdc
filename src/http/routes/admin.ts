import { timingSafeEqual, createHash } from 'node:crypto';
import type { FastifyPluginAsync } from 'fastify';
import { z } from 'zod';
import { findOrder, listOrders, OPERATOR_EVENTS, operatorEvent, orderHistory, orderView } from '../../commerce/orders.js';
import { ORDER_STATES } from '../../commerce/order-machine.js';
import { orderEditInput } from '../../commerce/order-edit.js';
import { cancelSubscription, listSubscriptions } from '../../commerce/subscriptions.js';
import { editOrder } from '../../payments/edits.js';
import { KessaiError, parseInput } from '../../errors.js';
import { listAlerts, listJobs, resolveAlert, retryJob } from '../../jobs/admin.js';
import { listMailLog } from '../../jobs/mail.js';
import { requestOperation, type Payments } from '../../payments/service.js';
import { doc } from '../schema.js';

/** Compares digests so the comparison takes the same time whatever the lengths. */
function sameSecret(a: string, b: string): boolean {
  return timingSafeEqual(createHash('sha256').update(a).digest(), createHash('sha256').update(b).digest());
}

// Built once: a zod schema costs far more to build than to run.
const orderQuery = z.strictObject({
  shop: z.string().optional(),
  state: z.enum(ORDER_STATES, { error: `must be one of ${ORDER_STATES.join(', ')}` }).optional(),
  limit: z.coerce.number().int().min(1).max(500).optional(),
});
const alertQuery = z.strictObject({ open: z.enum(['true', 'false']).optional() });

// Which of the order's payments, when not its current one (a duplicate payment to refund).
const paymentChoice = z.string({ error: 'must be a payment id or merchant reference' }).min(1).max(64).optional().describe("One of the order's payments (attempt id or merchant reference); the current one when left out");
const amountBody = z.strictObject({
  amount: z.number({ error: 'must be a number of yen' }).int({ error: 'must be whole yen' }).positive({ error: 'must be greater than zero' }),
  payment: paymentChoice,
});
const cancelBody = z.strictObject({ payment: paymentChoice }).optional();

export function adminRoutes(p: Payments): FastifyPluginAsync {
  const { ctx } = p;
  return async (app) => {
    app.addHook('onRequest', async (request) => {
      const header = request.headers.authorization ?? '';
      const token = header.startsWith('Bearer ') ? header.slice(7) : '';
      if (!token || !sameSecret(token, ctx.config.adminToken)) {
        throw new KessaiError('unauthorized', 'send the operator token as "Authorization: Bearer <KESSAI_ADMIN_TOKEN>"', 401);
      }
    });
    const security = [{ admin: [] }];
    const idParams = z.object({ id: z.string() });
    // A money request sent again with the same key (a retry after a lost answer, a double click) answers the first one's job.
    const operationHeaders = z.object({ 'idempotency-key': z.string().optional().describe('Repeat a request safely: the same key answers the job queued the first time (1–255 visible ASCII characters)') });
    const idempotencyKey = (headers: Record<string, string | string[] | undefined>) => {
      const key = headers['idempotency-key'];
      return Array.isArray(key) ? key[0] : key;
    };

    app.get('/orders', { schema: { tags: ['admin'], security, summary: 'Orders, newest first', querystring: doc(orderQuery) } }, async (request) => {
      const q = parseInput(orderQuery, request.query);
      const orders = await listOrders(ctx, q);
      return { orders: orders.map((o) => ({ id: o.id, number: o.number, shop: o.shop_id, state: o.state, total: o.total, email: o.email, holdReason: o.hold_reason, createdAt: o.created_at })) };
    });

    app.get('/orders/:id', { schema: { tags: ['admin'], security, summary: 'An order with its payment attempts, gateway events and state history' } }, async (request) => {
      const { id } = parseInput(idParams, request.params);
      const order = await findOrder(ctx, id);
      return { id: order.id, shop: order.shop_id, holdReason: order.hold_reason, ...(await orderView(ctx, order)), ...(await orderHistory(ctx, order.id)) };
    });

    for (const kind of ['capture', 'refund'] as const) {
      app.post(`/orders/:id/${kind}`, { schema: { tags: ['admin'], security, summary: `Queue a ${kind} of an explicit amount at the gateway`, body: doc(amountBody), headers: doc(operationHeaders) } }, async (request, reply) => {
        const { id } = parseInput(idParams, request.params);
        const { amount, payment } = parseInput(amountBody, request.body);
        return reply.status(202).send(await requestOperation(p, id, { kind, amount, payment }, idempotencyKey(request.headers)));
      });
    }
    app.post('/orders/:id/cancel', { schema: { tags: ['admin'], security, summary: 'Queue a cancel of an unpaid or authorized payment at the gateway', body: doc(cancelBody), headers: doc(operationHeaders) } }, async (request, reply) => {
      const { id } = parseInput(idParams, request.params);
      const payment = parseInput(cancelBody, request.body)?.payment;
      return reply.status(202).send(await requestOperation(p, id, { kind: 'cancel', payment }, idempotencyKey(request.headers)));
    });
    const eventBody = z.strictObject({ event: z.enum(OPERATOR_EVENTS, { error: `must be one of ${OPERATOR_EVENTS.join(', ')}` }) });
    app.post('/orders/:id/events', { schema: { tags: ['admin'], security, summary: 'Ship, complete, or release a held order', body: doc(eventBody) } }, async (request) => {
      const { id } = parseInput(idParams, request.params);
      const { event } = parseInput(eventBody, request.body);
      const order = await operatorEvent(ctx, id, event, 'operator');
      return { id: order.id, number: order.number, state: order.state };
    });

    app.post('/orders/:id/edit', { schema: { tags: ['admin'], security, summary: 'Make a paid, unshipped order smaller (lower quantities, 0 removes a line); the payment is updated (atone) or the difference refunded', body: doc(orderEditInput) } }, async (request) => {
      const { id } = parseInput(idParams, request.params);
      const { order, changed, difference } = await editOrder(p, id, request.body, 'operator');
      return { id: order.id, number: order.number, state: order.state, total: order.total, changed, difference };
    });

    app.get('/subscriptions', { schema: { tags: ['admin'], security, summary: 'Subscriptions (recurring purchases) with their renewal orders' } }, async (request) => {
      return { subscriptions: await listSubscriptions(ctx, request.query) };
    });
    app.post('/subscriptions/:id/cancel', { schema: { tags: ['admin'], security, summary: 'End a subscription: no further renewal orders' } }, async (request) => {
      const { id } = parseInput(idParams, request.params);
      const sub = await cancelSubscription(ctx, id, 'operator');
      return { id: sub.id, state: sub.state, cancelledAt: sub.cancelled_at };
    });

    const jobQuery = z.strictObject({ state: z.enum(['pending', 'running', 'done', 'dead']).optional(), kind: z.string().optional(), limit: z.coerce.number().int().min(1).max(500).optional() });
    app.get('/jobs', { schema: { tags: ['admin'], security, summary: 'Outbox jobs (dead ones need an operator)', querystring: doc(jobQuery) } }, async (request) => {
      return { jobs: await listJobs(ctx.db, parseInput(jobQuery, request.query)) };
    });
    app.post('/jobs/:id/retry', { schema: { tags: ['admin'], security, summary: 'Run a dead job again' } }, async (request) => {
      const { id } = parseInput(idParams, request.params);
      if (!(await retryJob(ctx, id))) throw new KessaiError('not_retryable', `job ${id} does not exist or is running or done`, 409);
      return { id, state: 'pending' };
    });
    const mailLogQuery = z.strictObject({
      to: z.string().max(320).optional(),
      template: z.string().max(64).optional(),
      outcome: z.enum(['sent', 'failed'], { error: 'must be sent or failed' }).optional(),
      before: z.string().max(64).optional(),
      limit: z.coerce.number().int().min(1).max(500).optional(),
    });
    app.get('/mail-log', { schema: { tags: ['admin'], security, summary: 'Mail send attempts, newest first; page with `before` = the previous page\'s `next`', querystring: doc(mailLogQuery) } }, async (request) => {
      const { entries, next } = await listMailLog(ctx.db, parseInput(mailLogQuery, request.query));
      return {
        entries: entries.map((e) => ({ id: e.id, at: e.created_at, template: e.template, to: e.recipient, subject: e.subject, messageId: e.message_id, outcome: e.outcome, response: e.response, attempt: e.attempt, jobId: e.job_id })),
        next,
      };
    });
    app.get('/alerts', { schema: { tags: ['admin'], security, summary: 'Alerts for the operator' } }, async (request) => {
      const q = parseInput(alertQuery, request.query);
      return { alerts: await listAlerts(ctx.db, { open: q.open !== 'false' }) };
    });
    app.post('/alerts/:id/resolve', { schema: { tags: ['admin'], security, summary: 'Mark an alert as handled' } }, async (request) => {
      const { id } = parseInput(idParams, request.params);
      if (!(await resolveAlert(ctx.db, id))) throw new KessaiError('not_found', `alert ${id} does not exist or is resolved`, 404);
      return { id, resolved: true };
    });
  };
}
