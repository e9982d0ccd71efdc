/**
 * What an operator and a developer integrating kessai see: health and readiness probes, metrics,
 * the OpenAPI document, the admin API (orders, operator events, money requests, dead jobs) — and that no secret
 * ever comes back in a response.
 */
import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { after, before, it } from 'node:test';
import { sandboxSecret } from '../../src/commerce/shops.js';
import { StopRetrying } from '../../src/errors.js';
import { enqueue } from '../../src/jobs/outbox.js';
import { beginOperation, finishOperation, PaymentBusy } from '../../src/payments/operations.js';
import { forEachEngine } from '../helpers/db.js';
import { eventually } from '../helpers/eventually.js';
import { ADMIN_TOKEN, notificationsApplied, onlyAttempt, startStore, type TestStore } from '../helpers/store.js';

interface ErrorBody {
  error: { code: string; message: string; problems: { field: string; reason: string }[] };
}
interface Placed {
  token: string;
  number: string;
  orderId: string;
  payUrl: string;
  text: string;
}

const ADDRESS = { name: '山田 花子', postcode: '150-0001', prefecture: '東京都', city: '渋谷区', line1: '神宮前1-1-1', phone: '090-1234-5678' };

async function placeOrder(store: TestStore, lines: { sku: string; quantity: number }[], withAddress = false): Promise<Placed> {
  const res = await fetch(`${store.url}/api/checkout`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      shop: 'default',
      customer: { email: 'hanako@example.jp', name: '山田 花子' },
      ...(withAddress ? { shippingAddress: ADDRESS } : {}),
      lines,
      payment: { provider: 'testpay' },
    }),
  });
  const text = await res.text();
  assert.equal(res.status, 201, text);
  const body = JSON.parse(text) as { order: { number: string }; orderToken: string; payment: { url: string } };
  const row = await store.rt.ctx.db.selectFrom('orders').select('id').where('number', '=', body.order.number).executeTakeFirstOrThrow();
  return { token: body.orderToken, number: body.order.number, orderId: row.id, payUrl: body.payment.url, text };
}

/** Pays on the gateway's hosted page by card; its signed webhook reaches the store before the redirect. */
async function payByCard(store: TestStore, order: Placed): Promise<void> {
  const res = await fetch(`${order.payUrl}/card`, { method: 'POST', redirect: 'manual' });
  await res.arrayBuffer();
  assert.equal(res.status, 303);
  await notificationsApplied(store);
  const view = (await (await fetch(`${store.url}/api/orders/${order.token}`)).json()) as { order: { state: string } };
  assert.equal(view.order.state, 'paid');
}

async function admin(store: TestStore, method: string, path: string, body?: unknown, token: string | null = ADMIN_TOKEN, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${store.url}/api/admin${path}`, {
    method,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body ? { 'content-type': 'application/json' } : {}), ...headers },
    body: body ? JSON.stringify(body) : undefined,
  });
}

/** An operator's POST, its answer read as JSON. */
async function post(store: TestStore, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; json: unknown; text: string }> {
  const res = await admin(store, 'POST', path, body, ADMIN_TOKEN, headers);
  const text = await res.text();
  return { status: res.status, json: JSON.parse(text) as unknown, text };
}

async function adminJson<T>(store: TestStore, method: string, path: string, body?: unknown): Promise<{ status: number; body: T; text: string }> {
  const res = await admin(store, method, path, body);
  const text = await res.text();
  return { status: res.status, body: JSON.parse(text) as T, text };
}

const refundJobs = (store: TestStore) => store.rt.ctx.db.selectFrom('jobs').select(['id', 'state', 'payload', 'dedupe_key']).where('kind', '=', 'payment.refund').execute();

forEachEngine('operations and admin API', (engine) => {
  let store: TestStore;
  before(async () => {
    store = await startStore(engine);
  });
  after(async () => {
    await store?.close();
  });

  it('answers the health and readiness probes', async () => {
    const health = await fetch(`${store.url}/healthz`);
    assert.equal(health.status, 200);
    assert.deepEqual(await health.json(), { status: 'ok' });
    const ready = await fetch(`${store.url}/readyz`);
    assert.equal(ready.status, 200);
    assert.deepEqual(await ready.json(), { status: 'ready', engine });
  });

  it('exposes request durations and applied payment facts as Prometheus metrics', async () => {
    const order = await placeOrder(store, [{ sku: 'demo-serial', quantity: 1 }]);
    await payByCard(store, order);
    const res = await fetch(`${store.url}/metrics`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain/);
    const text = await res.text();
    assert.match(text, /^# TYPE kessai_http_request_duration_seconds histogram$/m);
    assert.match(text, /^kessai_http_request_duration_seconds_count\{[^}]*route="\/api\/checkout"[^}]*status="201"[^}]*\} [1-9]\d*$/m);
    assert.match(text, /^kessai_payment_facts_total\{provider="testpay",fact="captured",outcome="applied"\} [1-9]\d*$/m);
  });

  it('counts refused checkouts by outcome, as the checkout metric promises', async () => {
    const res = await fetch(`${store.url}/api/checkout`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ shop: 'default', customer: { email: 'hanako@example.jp', name: '山田 花子' }, lines: [{ sku: 'demo-ticket', quantity: 99 }, { sku: 'demo-ticket', quantity: 99 }, { sku: 'demo-ticket', quantity: 99 }], payment: { provider: 'testpay' } }),
    });
    assert.equal(res.status, 409, 'more tickets than seats');
    const text = await (await fetch(`${store.url}/metrics`)).text();
    const help = /^# HELP kessai_checkouts_total (.*)$/m.exec(text)?.[1] ?? '';
    assert.match(help, /out_of_stock/, 'the metric says it counts checkouts refused for stock');
    const counted = text.split('\n').filter((l) => l.startsWith('kessai_checkouts_total'));
    assert.ok(
      counted.some((l) => /^kessai_checkouts_total\{outcome="out_of_stock"\} [1-9]\d*$/.test(l)),
      `a checkout refused for stock is counted; /metrics has: ${counted.join(' | ') || 'no kessai_checkouts_total sample'}`,
    );
  });

  it('reports open alerts in /metrics as soon as an order needs a person', async () => {
    // A signed notification whose amount disagrees with the order: the order goes on hold with an alert.
    const order = await placeOrder(store, [{ sku: 'demo-serial', quantity: 1 }]);
    const secret = sandboxSecret(store.rt.ctx.config, 'testpay');
    const attempt = await store.rt.ctx.db.selectFrom('payment_attempts').select('merchant_ref').where('order_id', '=', order.orderId).executeTakeFirstOrThrow();
    const atGateway = await fetch(`${store.url}/sandbox/testpay/api/payments?merchant_ref=${attempt.merchant_ref}`, { headers: { authorization: `Bearer ${secret}` } });
    const data = { ...((await atGateway.json()) as Record<string, unknown>), status: 'captured', captured_amount: 1 };
    const body = JSON.stringify({ id: `evt_${randomBytes(8).toString('hex')}`, type: 'payment.captured', data });
    const hook = await fetch(`${store.url}/webhooks/testpay/default`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-testpay-signature': createHmac('sha256', secret).update(body).digest('hex') },
      body,
    });
    assert.equal(hook.status, 200);
    await notificationsApplied(store);
    const alerts = (await adminJson<{ alerts: { kind: string; ref: string }[] }>(store, 'GET', '/alerts')).body.alerts;
    assert.ok(alerts.some((a) => a.kind === 'order_on_hold' && a.ref === order.orderId), 'the operator has an alert');

    // What Prometheus scrapes, without anyone having asked /readyz in between.
    const text = await (await fetch(`${store.url}/metrics`)).text();
    const open = Number(/^kessai_alerts_open (\d+)$/m.exec(text)?.[1]);
    assert.equal(open, alerts.length, `kessai_alerts_open is ${open} while ${alerts.length} alert(s) are open`);
  });

  it('publishes an OpenAPI 3 document with the checkout body schema, and a page listing every operation', async () => {
    const res = await fetch(`${store.url}/docs/openapi.json`);
    assert.equal(res.status, 200);
    const spec = (await res.json()) as {
      openapi: string;
      paths: Record<string, Record<string, { requestBody?: { content?: Record<string, { schema?: { type?: string; properties?: Record<string, unknown>; required?: string[] } }> }; security?: unknown[] }>>;
    };
    assert.match(spec.openapi, /^3\./);
    const checkout = spec.paths['/api/checkout']?.post;
    assert.ok(checkout, 'POST /api/checkout is documented');
    const schema = checkout.requestBody?.content?.['application/json']?.schema;
    assert.ok(schema?.properties, 'with a JSON request body schema');
    for (const field of ['shop', 'customer', 'lines', 'payment', 'shippingAddress']) assert.ok(field in schema.properties, `the body schema has ${field}`);
    assert.deepEqual([...(schema.required ?? [])].sort(), ['customer', 'lines', 'payment', 'shop']);
    assert.ok(spec.paths['/api/admin/orders']?.get?.security, 'admin operations say they need the operator token');
    assert.ok(spec.paths['/api/orders/{token}']?.get, 'the customer order view is documented');

    const docs = await fetch(`${store.url}/docs`);
    assert.equal(docs.status, 200);
    assert.match(docs.headers.get('content-type') ?? '', /^text\/html/);
    const html = await docs.text();
    for (const op of ['POST /api/checkout', 'GET /api/orders/{token}', 'GET /api/admin/orders', 'POST /api/admin/orders/{id}/refund', 'GET /healthz']) {
      assert.ok(html.includes(op), `/docs lists ${op}`);
    }
  });

  it('lists orders for the operator, filtered by state, and refuses an unknown state naming the field', async () => {
    const paid = await placeOrder(store, [{ sku: 'demo-ticket', quantity: 1 }]);
    await payByCard(store, paid);
    const waiting = await placeOrder(store, [{ sku: 'demo-ticket', quantity: 1 }]);

    const anonymous = await admin(store, 'GET', '/orders', undefined, null);
    assert.equal(anonymous.status, 401);
    assert.equal(((await anonymous.json()) as ErrorBody).error.code, 'unauthorized');
    assert.equal((await admin(store, 'GET', '/orders', undefined, 'wrong-token')).status, 401);

    type Listed = { orders: { id: string; number: string; state: string; total: number }[] };
    const paidList = await adminJson<Listed>(store, 'GET', '/orders?state=paid');
    assert.equal(paidList.status, 200);
    assert.ok(paidList.body.orders.length > 0, 'paidList.body.orders.length > 0');
    assert.ok(paidList.body.orders.every((o) => o.state === 'paid'), 'only paid orders');
    const listed = paidList.body.orders.find((o) => o.id === paid.orderId);
    assert.deepEqual(listed && { number: listed.number, total: listed.total }, { number: paid.number, total: 6800 });
    assert.ok(!paidList.body.orders.some((o) => o.id === waiting.orderId), '!paidList.body.orders.some((o) => o.id === waiting.orderId)');

    const pendingList = await adminJson<Listed>(store, 'GET', '/orders?state=pending_payment');
    assert.ok(pendingList.body.orders.some((o) => o.id === waiting.orderId), 'pendingList.body.orders.some((o) => o.id === waiting.orderId)');
    assert.ok(!pendingList.body.orders.some((o) => o.id === paid.orderId), '!pendingList.body.orders.some((o) => o.id === paid.orderId)');

    const bad = await adminJson<ErrorBody>(store, 'GET', '/orders?state=sent');
    assert.equal(bad.status, 400);
    assert.ok(bad.body.error.problems.some((p) => p.field === 'state' && p.reason.includes('paid')), bad.text);
  });

  it('ships a paid physical order once; shipping it again is refused', async () => {
    const order = await placeOrder(store, [{ sku: 'demo-cd', quantity: 1 }], true);
    const early = await adminJson<ErrorBody>(store, 'POST', `/orders/${order.orderId}/events`, { event: 'ship' });
    assert.equal(early.status, 409, 'an unpaid order cannot be shipped');
    await payByCard(store, order);

    const shipped = await adminJson<{ id: string; number: string; state: string }>(store, 'POST', `/orders/${order.orderId}/events`, { event: 'ship' });
    assert.equal(shipped.status, 200);
    assert.deepEqual(shipped.body, { id: order.orderId, number: order.number, state: 'shipped' });
    const view = (await (await fetch(`${store.url}/api/orders/${order.token}`)).json()) as { order: { state: string } };
    assert.equal(view.order.state, 'shipped', 'the customer sees it shipped');

    const again = await adminJson<ErrorBody>(store, 'POST', `/orders/${order.number}/events`, { event: 'ship' });
    assert.equal(again.status, 409);
    assert.equal(again.body.error.code, 'invalid_transition');

    const unknown = await adminJson<ErrorBody>(store, 'POST', `/orders/${order.orderId}/events`, { event: 'teleport' });
    assert.equal(unknown.status, 400);
    assert.ok(unknown.body.error.problems.some((p) => p.field === 'event'), unknown.text);
    const missing = await adminJson<ErrorBody>(store, 'POST', '/orders/ord_nope/events', { event: 'ship' });
    assert.equal(missing.status, 404);
  });

  it('shows dead jobs and runs one again on request', async () => {
    const key = `test-dead:${randomBytes(4).toString('hex')}`;
    await enqueue(store.rt.ctx.db, { kind: 'mail.send', payload: { template: 'order_paid', orderId: 'ord_gone' }, dedupeKey: key });
    await store.rt.ctx.db.updateTable('jobs').set({ state: 'dead', attempts: 8, last_error: 'smtp: connection refused' }).where('dedupe_key', '=', key).execute();
    const { id } = await store.rt.ctx.db.selectFrom('jobs').select('id').where('dedupe_key', '=', key).executeTakeFirstOrThrow();

    type Jobs = { jobs: { id: string; kind: string; state: string; last_error: string | null }[] };
    const dead = await adminJson<Jobs>(store, 'GET', '/jobs?state=dead');
    assert.equal(dead.status, 200);
    const listed = dead.body.jobs.find((j) => j.id === id);
    assert.deepEqual(listed && [listed.kind, listed.state, listed.last_error], ['mail.send', 'dead', 'smtp: connection refused']);
    assert.ok(dead.body.jobs.every((j) => j.state === 'dead'), 'dead.body.jobs.every((j) => j.state === \'dead\')');

    const badFilter = await adminJson<ErrorBody>(store, 'GET', '/jobs?state=buried');
    assert.equal(badFilter.status, 400);
    assert.ok(badFilter.body.error.problems.some((p) => p.field === 'state'), badFilter.text);

    assert.equal((await admin(store, 'POST', `/jobs/${id}/retry`, undefined, null)).status, 401);
    const retried = await adminJson<{ id: string; state: string }>(store, 'POST', `/jobs/${id}/retry`);
    assert.equal(retried.status, 200);
    assert.deepEqual(retried.body, { id, state: 'pending' });
    const row = await store.rt.ctx.db.selectFrom('jobs').select(['state', 'run_at']).where('id', '=', id).executeTakeFirstOrThrow();
    assert.equal(row.state, 'pending');
    assert.ok(row.run_at <= new Date().toISOString(), 'due now');
    assert.ok(!(await adminJson<Jobs>(store, 'GET', '/jobs?state=dead')).body.jobs.some((j) => j.id === id), 'no longer listed as dead');

    // A finished job is not run again.
    await store.rt.ctx.db.updateTable('jobs').set({ state: 'done' }).where('id', '=', id).execute();
    assert.equal((await admin(store, 'POST', `/jobs/${id}/retry`)).status, 409);
    assert.equal((await admin(store, 'POST', '/jobs/job_nope/retry')).status, 409);
  });

  it('never returns a secret: not the gateway secret, the operator token or the master key', async () => {
    const config = store.rt.ctx.config;
    const secrets = [sandboxSecret(config, 'testpay'), ADMIN_TOKEN, config.masterKey.toString('hex')].filter((s) => s.length >= 16);
    assert.equal(secrets.length, 3);

    const order = await placeOrder(store, [{ sku: 'demo-serial', quantity: 1 }]);
    await payByCard(store, order);
    const seen: [string, string][] = [['POST /api/checkout', order.text]];
    for (const path of [`/api/orders/${order.token}`, '/api/shops/default/products', '/api/shops/default/payment-methods', '/docs/openapi.json', '/metrics', '/readyz']) {
      seen.push([`GET ${path}`, await (await fetch(`${store.url}${path}`)).text()]);
    }
    for (const path of [`/orders/${order.orderId}`, `/orders/${order.number}`, '/orders', '/jobs', '/alerts']) {
      const res = await admin(store, 'GET', path);
      assert.equal(res.status, 200, path);
      seen.push([`GET /api/admin${path}`, await res.text()]);
    }
    // The order's history carries the gateway's own notification: it must not carry the key that signed it.
    const detail = JSON.parse(seen.find(([what]) => what === `GET /api/admin/orders/${order.orderId}`)![1]) as { events: unknown[]; attempts: unknown[] };
    assert.ok(detail.events.length > 0 && detail.attempts.length > 0, 'the admin view of the order has its payment history');
    for (const [what, text] of seen) {
      for (const secret of secrets) assert.ok(!text.includes(secret), `${what} does not contain a secret (${secret.slice(0, 4)}…)`);
    }
  });

  // An operator's money requests (capture, refund, cancel) and the jobs that carry them out: a request
  // sent twice queues one job, no path queues more refund than was captured, and the jobs of one
  // payment run one at a time without repeating what an earlier run of theirs already did.
  it('a refund sent again with the same Idempotency-Key queues one job; the key with another amount is refused', async () => {
    const order = await placeOrder(store, [{ sku: 'demo-serial', quantity: 1 }]);
    await payByCard(store, order);
    const key = { 'idempotency-key': `refund-${order.number}` };
    const first = await post(store, `/orders/${order.number}/refund`, { amount: 300 }, key);
    assert.equal(first.status, 202, first.text);
    const again = await post(store, `/orders/${order.number}/refund`, { amount: 300 }, key);
    assert.equal(again.status, 202, again.text);
    assert.deepEqual(again.json, { ...(first.json as object), replayed: true });
    assert.equal((first.json as { replayed: boolean }).replayed, false);

    const other = await post(store, `/orders/${order.number}/refund`, { amount: 200 }, key);
    assert.equal(other.status, 409, other.text);
    assert.equal((other.json as ErrorBody).error.code, 'idempotency_key_reused');
    assert.match((other.json as ErrorBody).error.message, /300 yen/);

    const bad = await post(store, `/orders/${order.number}/refund`, { amount: 300 }, { 'idempotency-key': 'two words' });
    assert.equal(bad.status, 400, bad.text);
    assert.deepEqual((bad.json as ErrorBody).error.problems.map((p) => p.field), ['Idempotency-Key']);

    const mine = (await refundJobs(store)).filter((j) => j.dedupe_key?.includes(order.orderId));
    assert.equal(mine.length, 1, 'one refund queued for the two requests');

    store.startWorker();
    await eventually(async () => assert.equal((await onlyAttempt(store, order.orderId)).refunded_amount, 300), 10_000);
    // Sent again once the job is done, the request still answers that job and refunds nothing more.
    const late = await post(store, `/orders/${order.number}/refund`, { amount: 300 }, key);
    assert.equal(late.status, 202, late.text);
    assert.equal((late.json as { replayed: boolean }).replayed, true);
    assert.equal((await onlyAttempt(store, order.orderId)).refunded_amount, 300);
  });

  it('a dead refund job run again must still fit what is refundable', async () => {
    const order = await placeOrder(store, [{ sku: 'demo-serial', quantity: 1 }]);
    await payByCard(store, order);
    const attempt = await onlyAttempt(store, order.orderId);
    const db = store.rt.ctx.db;
    // A refund of 1,000 yen that died; the operator then asked for another 1,000 yen instead.
    await enqueue(db, { kind: 'payment.refund', payload: { attemptId: attempt.id, amount: 1000 }, dedupeKey: `dead-refund-${order.number}` });
    const dead = await db.selectFrom('jobs').select('id').where('dedupe_key', '=', `dead-refund-${order.number}`).executeTakeFirstOrThrow();
    // run_at far ahead: the worker (started by an earlier test) leaves it alone until it is dead.
    await db.updateTable('jobs').set({ state: 'dead', run_at: '2999-01-01T00:00:00.000Z' }).where('id', '=', dead.id).execute();
    const instead = await post(store, `/orders/${order.number}/refund`, { amount: 1000 });
    assert.equal(instead.status, 202, instead.text);

    const retried = await post(store, `/jobs/${dead.id}/retry`);
    assert.equal(retried.status, 409, retried.text);
    assert.equal((retried.json as ErrorBody).error.code, 'not_refundable');
    assert.match((retried.json as ErrorBody).error.message, new RegExp(`would refund 1000 yen, more than the refundable ${attempt.captured_amount - 1000} yen`));
    assert.equal((await db.selectFrom('jobs').select('state').where('id', '=', dead.id).executeTakeFirstOrThrow()).state, 'dead');
    await eventually(async () => assert.equal((await onlyAttempt(store, order.orderId)).refunded_amount, 1000), 10_000);
  });

  it('an order edit does not queue a refund beyond what is refundable', async () => {
    const order = await placeOrder(store, [{ sku: 'demo-cd', quantity: 2 }], true);
    await payByCard(store, order);
    const attempt = await onlyAttempt(store, order.orderId);
    // Everything but 100 yen is already on its way back (queued, not yet run).
    await enqueue(store.rt.ctx.db, { kind: 'payment.refund', payload: { attemptId: attempt.id, amount: attempt.captured_amount - 100 }, runAt: new Date('2999-01-01T00:00:00Z') });
    const edit = await post(store, `/orders/${order.number}/edit`, { lines: [{ sku: 'demo-cd', quantity: 1 }] });
    assert.equal(edit.status, 409, edit.text);
    assert.equal((edit.json as ErrorBody).error.code, 'not_refundable');
    assert.match((edit.json as ErrorBody).error.message, /lowers the total by \d+ yen, more than the refundable 100 yen/);
    const lines = await store.rt.ctx.db.selectFrom('order_lines').select('quantity').where('order_id', '=', order.orderId).execute();
    assert.deepEqual(lines.map((l) => l.quantity), [2], 'the edit changed nothing');
  });

  it('one operation at a time per payment; a repeated run does nothing done and never resends an unverifiable call', async () => {
    const order = await placeOrder(store, [{ sku: 'demo-serial', quantity: 1 }]);
    await payByCard(store, order);
    const attempt = await onlyAttempt(store, order.orderId);
    const { ctx } = store.rt;
    const job = async (key: string) => {
      await enqueue(ctx.db, { kind: 'payment.refund', payload: { attemptId: attempt.id, amount: 0 }, dedupeKey: key, runAt: new Date('2999-01-01T00:00:00Z') });
      return (await ctx.db.selectFrom('jobs').select('id').where('dedupe_key', '=', key).executeTakeFirstOrThrow()).id;
    };
    const first = await job(`op-a-${order.number}`);
    const second = await job(`op-b-${order.number}`);

    const run = await beginOperation(ctx, first, attempt.id, 'refund', 100);
    assert.ok(run, 'run');
    await assert.rejects(beginOperation(ctx, second, attempt.id, 'refund', 100), (e: unknown) => e instanceof PaymentBusy && e.message.includes(first));

    // The first job's run sends a call SBPS could not be asked about, then its worker dies.
    await run.sending();
    const rerun = await beginOperation(ctx, first, attempt.id, 'refund', 100);
    assert.ok(rerun, 'a rerun of the same job may go on (a checkable step may still be needed)');
    await assert.rejects(rerun.sending(), (e: unknown) => e instanceof StopRetrying && /already sent this refund of 100 yen/.test(e.message));

    // Once the first job is dead (a person was alerted), the payment is free for the next one.
    await ctx.db.updateTable('jobs').set({ state: 'dead' }).where('id', '=', first).execute();
    const next = await beginOperation(ctx, second, attempt.id, 'refund', 100);
    assert.ok(next, 'next');
    await finishOperation(ctx, second);
    assert.equal(await beginOperation(ctx, second, attempt.id, 'refund', 100), undefined, 'a job whose operation is done does nothing again');
  });
});
