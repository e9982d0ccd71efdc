/**
 * What an operator and a developer integrating kessai see: health and readiness probes, metrics,
 * the OpenAPI document, the admin API (orders, operator events, dead jobs) — and that no secret
 * ever comes back in a response.
 */
import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { after, before, it } from 'node:test';
import { sandboxSecret } from '../../src/commerce/shops.js';
import { enqueue } from '../../src/jobs/outbox.js';
import { forEachEngine } from '../helpers/db.js';
import { ADMIN_TOKEN, notificationsApplied, startStore, type TestStore } from '../helpers/store.js';

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

async function admin(store: TestStore, method: string, path: string, body?: unknown, token: string | null = ADMIN_TOKEN): Promise<Response> {
  return fetch(`${store.url}/api/admin${path}`, {
    method,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
}

async function adminJson<T>(store: TestStore, method: string, path: string, body?: unknown): Promise<{ status: number; body: T; text: string }> {
  const res = await admin(store, method, path, body);
  const text = await res.text();
  return { status: res.status, body: JSON.parse(text) as T, text };
}

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
    assert.ok(paidList.body.orders.length > 0);
    assert.ok(paidList.body.orders.every((o) => o.state === 'paid'), 'only paid orders');
    const listed = paidList.body.orders.find((o) => o.id === paid.orderId);
    assert.deepEqual(listed && { number: listed.number, total: listed.total }, { number: paid.number, total: 6800 });
    assert.ok(!paidList.body.orders.some((o) => o.id === waiting.orderId));

    const pendingList = await adminJson<Listed>(store, 'GET', '/orders?state=pending_payment');
    assert.ok(pendingList.body.orders.some((o) => o.id === waiting.orderId));
    assert.ok(!pendingList.body.orders.some((o) => o.id === paid.orderId));

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
    assert.ok(dead.body.jobs.every((j) => j.state === 'dead'));

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
});
