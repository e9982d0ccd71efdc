/**
 * The payment pipeline end to end, as a customer, the gateway and an operator drive it: real HTTP
 * to the store and to its sandbox gateway (testpay), real database, real outbox worker. The
 * gateway's hosted page is "clicked" with POSTs and its redirects followed by hand, so each hop
 * (webhook, browser return, read-back) can be taken away or replayed.
 */
import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { after, afterEach, before, describe, it } from 'node:test';
import { createProduct } from '../../src/commerce/catalog.js';
import { orderPageUrl } from '../../src/commerce/orders.js';
import { hashToken, newSecret } from '../../src/ids.js';
import { eventRow } from '../../src/payments/apply-fact.js';
import { sandboxSecret, setShopSettings } from '../../src/commerce/shops.js';
import { eventually } from '../helpers/eventually.js';
import { forEachEngine } from '../helpers/db.js';
import { FormClient, unescapeHtml } from '../helpers/browser.js';
import { readMails } from '../helpers/mail.js';
import { ADMIN_TOKEN, attempts, notificationsApplied, onlyAttempt, sku, startStore, type TestStore } from '../helpers/store.js';

// ---------------------------------------------------------------- the customer, the gateway, the operator

interface OrderView {
  number: string;
  state: string;
  total: number;
  payment: { provider: string; method: string | null; state: string; details: Record<string, unknown> } | null;
}
interface ErrorBody {
  error: { code: string; message: string; problems: { field: string; reason: string }[] };
}
/** A payment as testpay's API and webhooks show it. */
interface GatewayPayment {
  id: string;
  merchant_ref: string;
  status: string;
  amount: number;
  captured_amount: number;
  refunded_amount: number;
  refunds: { id: string; amount: number }[];
  konbini?: { receipt: string; deadline: string };
}
interface Placed {
  token: string;
  number: string;
  orderId: string;
  total: number;
  payUrl: string;
}

const secretOf = (store: TestStore) => sandboxSecret(store.rt.ctx.config, 'testpay');

async function product(store: TestStore, stock: number, price: number): Promise<string> {
  const code = `goods-${randomBytes(4).toString('hex')}`;
  await createProduct(store.rt.ctx, 'default', { code, name: `グッズ ${code}`, kind: 'ticket', price, stock });
  return code;
}

async function placeOrder(store: TestStore, lines: { sku: string; quantity: number }[], payment: Record<string, string> = { provider: 'testpay' }): Promise<Placed> {
  const res = await fetch(`${store.url}/api/checkout`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ shop: 'default', customer: { email: 'taro@example.jp', name: '山田 太郎' }, lines, payment }),
  });
  const body = (await res.json()) as { order: OrderView; orderToken: string; payment: { type: string; url: string } };
  assert.equal(res.status, 201, JSON.stringify(body));
  assert.equal(body.payment.type, 'redirect');
  const row = await store.rt.ctx.db.selectFrom('orders').select('id').where('number', '=', body.order.number).executeTakeFirstOrThrow();
  return { token: body.orderToken, number: body.order.number, orderId: row.id, total: body.order.total, payUrl: body.payment.url };
}

/** The customer pays again with testpay (another tab, or after a decline); answers the new payment page. */
async function payAgain(store: TestStore, token: string): Promise<string> {
  const res = await fetch(`${store.url}/api/orders/${token}/payments`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ provider: 'testpay' }) });
  const body = (await res.json()) as { payment: { url: string } };
  assert.equal(res.status, 201, JSON.stringify(body));
  return body.payment.url;
}

/** Presses a button on the gateway's hosted page; answers where the gateway sends the browser. */
async function press(payUrl: string, choice: string): Promise<URL> {
  const res = await fetch(`${payUrl}/${choice}`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: '', redirect: 'manual' });
  await res.arrayBuffer();
  assert.equal(res.status, 303, `gateway button ${choice}`);
  return new URL(res.headers.get('location')!);
}

/** The browser arrives back at the store from the gateway. */
async function comeBack(store: TestStore, location: URL): Promise<void> {
  assert.equal(location.origin, store.url);
  const res = await fetch(location, { redirect: 'manual' });
  await res.arrayBuffer();
  assert.equal(res.status, 303);
  assert.match(res.headers.get('location') ?? '', /^\/orders\/[\w.-]+$/);
}

async function view(store: TestStore, token: string): Promise<OrderView> {
  const res = await fetch(`${store.url}/api/orders/${token}`);
  assert.equal(res.status, 200);
  return ((await res.json()) as { order: OrderView }).order;
}

async function stateOf(store: TestStore, token: string): Promise<string> {
  return (await view(store, token)).state;
}

async function gateway(store: TestStore, method: string, path: string, body?: unknown): Promise<Response> {
  return fetch(`${store.url}/sandbox/testpay/api${path}`, {
    method,
    headers: { authorization: `Bearer ${secretOf(store)}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
}

async function faults(store: TestStore, f: { webhooks?: 'deliver' | 'drop'; api?: 'ok' | 'error500' | 'slow' }): Promise<void> {
  const res = await gateway(store, 'POST', '/faults', f);
  assert.equal(res.status, 200);
  await res.arrayBuffer();
}

async function gatewayPayment(store: TestStore, merchantRef: string): Promise<GatewayPayment> {
  const res = await gateway(store, 'GET', `/payments?merchant_ref=${encodeURIComponent(merchantRef)}`);
  assert.equal(res.status, 200);
  return (await res.json()) as GatewayPayment;
}

/** A webhook body exactly as testpay builds one. */
function event(type: string, data: GatewayPayment, id = `evt_${randomBytes(12).toString('hex')}`): { id: string; body: string } {
  return { id, body: JSON.stringify({ id, type, data }) };
}

const sign = (secret: string, body: string) => createHmac('sha256', secret).update(body).digest('hex');

async function deliver(store: TestStore, body: string, signature: string | undefined, shop = 'default'): Promise<Response> {
  return fetch(`${store.url}/webhooks/testpay/${shop}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(signature === undefined ? {} : { 'x-testpay-signature': signature }) },
    body,
  });
}

async function admin(store: TestStore, method: string, path: string, body?: unknown, token: string | null = ADMIN_TOKEN): Promise<Response> {
  return fetch(`${store.url}/api/admin${path}`, {
    method,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
}

// ---------------------------------------------------------------- what the store did


async function events(store: TestStore, attemptId: string) {
  return store.rt.ctx.db.selectFrom('payment_events').selectAll().where('attempt_id', '=', attemptId).orderBy('received_at').execute();
}

/** The order's outbox mail jobs, by template. */
async function mailJobs(store: TestStore, orderId: string, template?: string) {
  const jobs = await store.rt.ctx.db.selectFrom('jobs').selectAll().where('kind', '=', 'mail.send').execute();
  return jobs.filter((j) => {
    const p = JSON.parse(j.payload) as { orderId: string; template: string };
    return p.orderId === orderId && (template === undefined || p.template === template);
  });
}

async function jobsOfKind(store: TestStore, kind: string) {
  return store.rt.ctx.db.selectFrom('jobs').selectAll().where('kind', '=', kind).execute();
}

/** Mail files the development mailer wrote: the headers and the text part. */
function mailFiles(store: TestStore): { name: string; text: string }[] {
  return readMails(store.dataDir).map((m) => ({ name: m.name, text: `${m.head}\n\n${m.text}` }));
}

/** The order page's HTML, as the customer's browser gets it. */
async function orderPage(store: TestStore, token: string, query = ''): Promise<string> {
  const res = await fetch(`${store.url}/orders/${token}${query}`);
  assert.equal(res.status, 200);
  return res.text();
}

/** An instant as ja-JP writes Japan time (2026/11/25 0:51:37), worked out by hand: Japan keeps UTC+9 all year. */
function japanTime(iso: string): string {
  const t = new Date(Date.parse(iso) + 9 * 3600_000);
  const two = (n: number) => String(n).padStart(2, '0');
  return `${t.getUTCFullYear()}/${t.getUTCMonth() + 1}/${t.getUTCDate()} ${t.getUTCHours()}:${two(t.getUTCMinutes())}:${two(t.getUTCSeconds())}`;
}

// ---------------------------------------------------------------- the tests

forEachEngine('payment flow through the gateway', (engine) => {
  let store: TestStore;
  before(async () => {
    store = await startStore(engine);
  });
  after(async () => {
    await store?.close();
  });
  afterEach(async () => {
    // Tests that take a channel away give it back, whatever happened.
    await faults(store, { webhooks: 'deliver', api: 'ok' });
  });

  it('card: the signed webhook marks the order paid, commits the stock and sends the order mail', async () => {
    const code = await product(store, 10, 2000);
    const order = await placeOrder(store, [{ sku: code, quantity: 2 }]);
    assert.deepEqual(await sku(store, code), { on_hand: 10, reserved: 2 });

    const page = await fetch(order.payUrl);
    assert.equal(page.status, 200);
    const html = await page.text();
    assert.ok(html.includes('4000 JPY') && html.includes('Pay by card'), 'the hosted page asks for the total and offers a card');

    const back = await press(order.payUrl, 'card');
    await notificationsApplied(store);
    assert.equal(back.pathname, `/orders/${order.token}/return`);
    // The gateway delivered its webhook before sending the browser back; nothing else told the store.
    assert.equal(await stateOf(store, order.token), 'paid');
    const attempt = await onlyAttempt(store, order.orderId);
    assert.equal(attempt.state, 'captured');
    assert.equal(attempt.captured_amount, 4000);
    const facts = await events(store, attempt.id);
    assert.deepEqual(facts.map((e) => [e.source, e.fact_type, e.outcome, e.amount]), [['notification', 'captured', 'applied', 4000]]);
    assert.deepEqual(await sku(store, code), { on_hand: 8, reserved: 0 }, 'stock committed: two units left the shelf, none held');

    const paidMails = await mailJobs(store, order.orderId, 'order_paid');
    assert.equal(paidMails.length, 1);
    store.startWorker();
    await eventually(async () => {
      const [job] = await mailJobs(store, order.orderId, 'order_paid');
      assert.equal(job?.state, 'done', `mail job is ${job?.state}: ${job?.last_error ?? ''}`);
    });
    const mails = mailFiles(store).filter((m) => m.text.includes(order.number));
    assert.equal(mails.length, 1, 'one mail mentions the order number');
    assert.match(mails[0]!.text, /^To: taro@example\.jp$/m);
    assert.ok(mails[0]!.text.includes('お支払いを確認しました'), 'it is the payment confirmation');
    // The mail leads back to the order: the same link the checkout answered, and it opens the order.
    const link = /^ご注文の確認 \/ Your order: (\S+)$/m.exec(mails[0]!.text)?.[1];
    assert.equal(link, `${store.url}/orders/${order.token}`, mails[0]!.text);
    const opened = await fetch(link);
    assert.equal(opened.status, 200);
    assert.ok((await opened.text()).includes(order.number), 'the linked page is the order');
    // An order whose link was drawn at random (before links were derived) gets no link rather than a wrong one.
    assert.equal(orderPageUrl(store.rt.ctx, { id: order.orderId, token_hash: hashToken(newSecret()) }), undefined);

    await comeBack(store, back);
    assert.equal(await stateOf(store, order.token), 'paid');
    assert.equal((await mailJobs(store, order.orderId)).length, 1, 'the browser return added no second mail');
    assert.deepEqual(await sku(store, code), { on_hand: 8, reserved: 0 });
  });

  it('browser return before the webhook: the store reads back and is paid; the late webhook is a duplicate', async () => {
    const code = await product(store, 10, 1200);
    const order = await placeOrder(store, [{ sku: code, quantity: 1 }]);
    await faults(store, { webhooks: 'drop' });
    const back = await press(order.payUrl, 'card');
    await notificationsApplied(store);
    assert.equal(await stateOf(store, order.token), 'pending_payment', 'no webhook came');

    await comeBack(store, back);
    assert.equal(await stateOf(store, order.token), 'paid', 'the return read the payment back from the gateway');
    const attempt = await onlyAttempt(store, order.orderId);
    assert.deepEqual((await events(store, attempt.id)).map((e) => [e.source, e.outcome]), [['return', 'applied']]);
    assert.deepEqual(await sku(store, code), { on_hand: 9, reserved: 0 });

    // The gateway's webhook arrives after all, signed as testpay signs it.
    const late = event('payment.captured', await gatewayPayment(store, attempt.merchant_ref));
    const res = await deliver(store, late.body, sign(secretOf(store), late.body));
    await notificationsApplied(store);
    assert.equal(res.status, 200);
    const recorded = await store.rt.ctx.db.selectFrom('payment_events').selectAll().where('event_key', '=', late.id).execute();
    assert.deepEqual(recorded.map((e) => [e.source, e.outcome]), [['notification', 'duplicate']]);
    assert.equal(await stateOf(store, order.token), 'paid');
    assert.equal((await mailJobs(store, order.orderId, 'order_paid')).length, 1, 'fulfilled once');
    assert.deepEqual(await sku(store, code), { on_hand: 9, reserved: 0 }, 'stock left the shelf once');
  });

  it('the same webhook delivered five times at once is applied once', async () => {
    const code = await product(store, 10, 3000);
    const order = await placeOrder(store, [{ sku: code, quantity: 1 }]);
    await faults(store, { webhooks: 'drop' });
    await press(order.payUrl, 'card');
    await notificationsApplied(store);
    const attempt = await onlyAttempt(store, order.orderId);
    const captured = event('payment.captured', await gatewayPayment(store, attempt.merchant_ref));
    const signature = sign(secretOf(store), captured.body);

    const answers = await Promise.all(Array.from({ length: 5 }, () => deliver(store, captured.body, signature)));
    await notificationsApplied(store);
    assert.deepEqual(answers.map((r) => r.status), [200, 200, 200, 200, 200], 'every delivery is acknowledged, so the gateway stops retrying');
    await Promise.all(answers.map((r) => r.arrayBuffer()));

    const recorded = await store.rt.ctx.db.selectFrom('payment_events').selectAll().where('event_key', '=', captured.id).execute();
    assert.deepEqual(recorded.map((e) => e.outcome), ['applied'], 'one event row for the event key, applied');
    assert.equal(await stateOf(store, order.token), 'paid');
    assert.equal((await mailJobs(store, order.orderId, 'order_paid')).length, 1);
    assert.deepEqual(await sku(store, code), { on_hand: 9, reserved: 0 });
    const changes = await store.rt.ctx.db.selectFrom('state_changes').select('to_state').where('entity_id', '=', order.orderId).execute();
    assert.deepEqual(changes.map((c) => c.to_state).sort(), ['paid', 'pending_payment'], 'the order moved to paid once');
  });

  it('refuses a forged webhook with 401 and changes nothing; a webhook for an unknown shop gets 404', async () => {
    const code = await product(store, 10, 2500);
    const order = await placeOrder(store, [{ sku: code, quantity: 1 }]);
    const attempt = await onlyAttempt(store, order.orderId);
    const real = await gatewayPayment(store, attempt.merchant_ref);
    const forged = event('payment.captured', { ...real, status: 'captured', captured_amount: real.amount });

    const wrongSecret = await deliver(store, forged.body, sign('not-the-shop-secret', forged.body));
    assert.equal(wrongSecret.status, 401);
    const unsigned = await deliver(store, forged.body, undefined);
    assert.equal(unsigned.status, 401);
    const garbage = await deliver(store, forged.body, 'zz');
    assert.equal(garbage.status, 401);
    // A genuine signature over other bytes: the body was altered on the way.
    const genuine = event('payment.failed', { ...real, status: 'failed' });
    const altered = await deliver(store, forged.body, sign(secretOf(store), genuine.body));
    assert.equal(altered.status, 401);

    assert.equal(await stateOf(store, order.token), 'pending_payment');
    assert.equal((await onlyAttempt(store, order.orderId)).state, 'pending');
    assert.equal((await events(store, attempt.id)).length, 0, 'nothing recorded as a gateway fact');
    assert.deepEqual(await sku(store, code), { on_hand: 10, reserved: 1 });
    assert.equal((await mailJobs(store, order.orderId)).length, 0);

    const elsewhere = await deliver(store, forged.body, sign(secretOf(store), forged.body), 'no-such-shop');
    assert.equal(elsewhere.status, 404);
    assert.equal(await stateOf(store, order.token), 'pending_payment');
  });

  it('keeps a signed notification for a payment it does not know, alerts the operator and changes no order', async () => {
    const code = await product(store, 10, 2500);
    const order = await placeOrder(store, [{ sku: code, quantity: 1 }]);
    const attempt = await onlyAttempt(store, order.orderId);
    const real = await gatewayPayment(store, attempt.merchant_ref);
    const stranger = event('payment.captured', { ...real, id: 'tp_someone_else', merchant_ref: 'K000000-ZZZZZZ-1', status: 'captured', captured_amount: real.amount });
    const res = await deliver(store, stranger.body, sign(secretOf(store), stranger.body));
    await notificationsApplied(store);
    assert.equal(res.status, 200, 'acknowledged, so the gateway does not retry forever');
    const [kept] = await store.rt.ctx.db.selectFrom('payment_events').selectAll().where('event_key', '=', stranger.id).execute();
    assert.equal(kept?.outcome, 'unknown_attempt');
    const alerts = await store.rt.ctx.db.selectFrom('alerts').selectAll().where('ref', '=', kept!.id).execute();
    assert.deepEqual(alerts.map((a) => a.kind), ['unknown_payment']);
    assert.equal(await stateOf(store, order.token), 'pending_payment');
    assert.deepEqual(await sku(store, code), { on_hand: 10, reserved: 1 });
  });

  it('konbini: the order waits for the customer with the receipt number, then is paid at the counter', async () => {
    const code = await product(store, 10, 1800);
    const order = await placeOrder(store, [{ sku: code, quantity: 1 }], { provider: 'testpay', method: 'konbini' });
    const page = await (await fetch(order.payUrl)).text();
    assert.ok(!page.includes('Pay by card'), 'a konbini attempt offers no card');
    await press(order.payUrl, 'konbini');
    await notificationsApplied(store);

    const waiting = await view(store, order.token);
    assert.equal(waiting.state, 'awaiting_payment');
    const attempt = await onlyAttempt(store, order.orderId);
    const atGateway = await gatewayPayment(store, attempt.merchant_ref);
    assert.ok(atGateway.konbini?.receipt, 'atGateway.konbini?.receipt');
    assert.deepEqual(waiting.payment?.details.konbini, atGateway.konbini, 'the customer sees the receipt number and deadline');
    assert.equal((await mailJobs(store, order.orderId, 'payment_instructions')).length, 1);
    assert.equal((await mailJobs(store, order.orderId, 'order_paid')).length, 0);
    assert.deepEqual(await sku(store, code), { on_hand: 10, reserved: 1 }, 'still held for the customer');

    await press(order.payUrl, 'konbini-paid');
    await notificationsApplied(store);
    assert.equal(await stateOf(store, order.token), 'paid');
    assert.equal((await mailJobs(store, order.orderId, 'order_paid')).length, 1);
    assert.deepEqual(await sku(store, code), { on_hand: 9, reserved: 0 });
  });

  it('konbini: a slip that expires unpaid expires the order, gives the stock back and tells the customer', async () => {
    const code = await product(store, 10, 1800);
    const order = await placeOrder(store, [{ sku: code, quantity: 2 }], { provider: 'testpay', method: 'konbini' });
    await press(order.payUrl, 'konbini');
    await notificationsApplied(store);
    assert.equal(await stateOf(store, order.token), 'awaiting_payment');
    await press(order.payUrl, 'konbini-expire');
    await notificationsApplied(store);
    assert.equal(await stateOf(store, order.token), 'expired');
    assert.deepEqual(await sku(store, code), { on_hand: 10, reserved: 0 });
    assert.equal((await mailJobs(store, order.orderId, 'order_cancelled')).length, 1, 'the slip they hold is void: they are told');
  });

  it('a checkout while the gateway is down keeps the order and its stock; the customer pays once it is back', async () => {
    const code = await product(store, 10, 1600);
    await faults(store, { api: 'error500' });
    const res = await fetch(`${store.url}/api/checkout`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ shop: 'default', customer: { email: 'taro@example.jp', name: '山田 太郎' }, lines: [{ sku: code, quantity: 1 }], payment: { provider: 'testpay' } }),
    });
    assert.equal(res.status, 201, 'the order is taken even though the gateway failed');
    const body = (await res.json()) as { order: OrderView; orderToken: string; payment: null; paymentError?: { code: string; message: string } };
    assert.equal(body.payment, null);
    assert.equal(body.paymentError?.code, 'payment_start_failed');
    assert.equal(body.order.state, 'pending_payment');
    assert.deepEqual(await sku(store, code), { on_hand: 10, reserved: 1 }, 'the stock is held while the customer retries');

    await faults(store, { api: 'ok' });
    const retry = await fetch(`${store.url}/api/orders/${body.orderToken}/payments`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ provider: 'testpay' }),
    });
    assert.equal(retry.status, 201);
    const { payment } = (await retry.json()) as { payment: { type: string; url: string } };
    await press(payment.url, 'card');
    await notificationsApplied(store);
    assert.equal(await stateOf(store, body.orderToken), 'paid');
    assert.deepEqual(await sku(store, code), { on_hand: 9, reserved: 0 });
  });

  it('a declined card leaves the order open; paying again with a new attempt succeeds', async () => {
    const code = await product(store, 10, 2200);
    const order = await placeOrder(store, [{ sku: code, quantity: 1 }]);
    const back = await press(order.payUrl, 'decline');
    await notificationsApplied(store);
    await comeBack(store, back);
    const declined = await view(store, order.token);
    assert.equal(declined.state, 'pending_payment');
    assert.equal(declined.payment?.state, 'failed');
    assert.deepEqual(await sku(store, code), { on_hand: 10, reserved: 1 }, 'the stock stays reserved for the retry');

    const retry = await fetch(`${store.url}/api/orders/${order.token}/payments`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ provider: 'testpay' }),
    });
    assert.equal(retry.status, 201);
    const { payment } = (await retry.json()) as { payment: { type: string; url: string } };
    assert.equal(payment.type, 'redirect');
    assert.notEqual(payment.url, order.payUrl, 'a new payment at the gateway');
    assert.equal((await view(store, order.token)).payment?.state, 'pending', 'the order now shows the new attempt');

    await press(payment.url, 'card');
    await notificationsApplied(store);
    assert.equal(await stateOf(store, order.token), 'paid');
    const [first, second] = await attempts(store, order.orderId);
    assert.equal(first?.state, 'failed');
    assert.equal(second?.state, 'captured');
    assert.notEqual(first?.merchant_ref, second?.merchant_ref, 'each attempt has its own merchant reference');
    assert.deepEqual(await sku(store, code), { on_hand: 9, reserved: 0 });

    const again = await fetch(`${store.url}/api/orders/${order.token}/payments`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ provider: 'testpay' }),
    });
    assert.equal(again.status, 409, 'a paid order takes no further payment');
  });

  it('refuses a new payment with a provider the shop does not offer, naming the field that was sent', async () => {
    const order = await placeOrder(store, [{ sku: 'demo-serial', quantity: 1 }]);
    await press(order.payUrl, 'decline');
    await notificationsApplied(store);
    await setShopSettings(store.rt.ctx, 'default', { 'atone.enabled': 'false' });
    const res = await fetch(`${store.url}/api/orders/${order.token}/payments`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ provider: 'atone' }),
    });
    await setShopSettings(store.rt.ctx, 'default', { 'atone.enabled': 'true' });
    assert.equal(res.status, 400);
    const body = (await res.json()) as ErrorBody;
    // The request body is {provider, method}: the field at fault is "provider".
    assert.deepEqual(body.error.problems.map((p) => p.field), ['provider'], JSON.stringify(body));
    assert.equal((await attempts(store, order.orderId)).length, 1, 'no attempt opened');
  });

  it('refuses to open a payment in the last minute of the reservation, by the API and on the order page, and opens none', async () => {
    const order = await placeOrder(store, [{ sku: 'demo-serial', quantity: 1 }]);
    await press(order.payUrl, 'decline');
    await notificationsApplied(store);
    const soon = new Date(Date.now() + 45_000).toISOString();
    await store.rt.ctx.db.updateTable('orders').set({ expires_at: soon }).where('id', '=', order.orderId).execute();

    const res = await fetch(`${store.url}/api/orders/${order.token}/payments`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ provider: 'testpay' }),
    });
    assert.equal(res.status, 409);
    const body = (await res.json()) as ErrorBody;
    assert.equal(body.error.code, 'reservation_ending', JSON.stringify(body));
    assert.match(body.error.message, /reservation ends in 4\d seconds, too soon to pay/);

    const b = new FormClient(store.url);
    const page = await b.submit(`/orders/${order.token}`, `/orders/${order.token}/pay`, { provider: 'testpay' });
    assert.equal(page.status, 400, 'the order page again, with the reason');
    assert.match(unescapeHtml(page.body), /role="alert">order K[\w-]+'s reservation ends in 4\d seconds, too soon to pay/);
    assert.equal((await attempts(store, order.orderId)).length, 1, 'no attempt opened');
    assert.equal(await stateOf(store, order.token), 'pending_payment');
  });

  it('paying again while the gateway is down: the order page says so, in the browser, and the order stays payable', async () => {
    const order = await placeOrder(store, [{ sku: 'demo-serial', quantity: 1 }]);
    await press(order.payUrl, 'decline');
    await notificationsApplied(store);
    await faults(store, { api: 'error500' });
    const b = new FormClient(store.url);
    const res = await b.submit(`/orders/${order.token}`, `/orders/${order.token}/pay`, { provider: 'testpay' });
    await faults(store, { api: 'ok' });
    assert.equal(res.status, 400);
    assert.match(res.headers.get('content-type') ?? '', /^text\/html/);
    assert.match(unescapeHtml(res.body), /role="alert">testpay could not start the payment/);
    assert.equal(await stateOf(store, order.token), 'pending_payment');
  });

  it('a cancel at the gateway cancels the order and gives the stock back', async () => {
    const code = await product(store, 10, 900);
    const order = await placeOrder(store, [{ sku: code, quantity: 3 }]);
    assert.deepEqual(await sku(store, code), { on_hand: 10, reserved: 3 });
    const back = await press(order.payUrl, 'cancel');
    await notificationsApplied(store);
    // The gateway sends the customer to the cancel URL: the order's return page, which asks the gateway.
    assert.equal(back.pathname, `/orders/${order.token}/return`);
    assert.equal(back.searchParams.get('cancelled'), '1');
    assert.equal(await stateOf(store, order.token), 'cancelled');
    assert.deepEqual(await sku(store, code), { on_hand: 10, reserved: 0 });
    assert.equal((await mailJobs(store, order.orderId, 'order_cancelled')).length, 1);
    assert.equal((await mailJobs(store, order.orderId, 'order_paid')).length, 0);
  });

  it('a cancel for an old attempt after the order was paid with a new one leaves the order paid', async () => {
    const code = await product(store, 10, 1100);
    const order = await placeOrder(store, [{ sku: code, quantity: 1 }]);
    // The customer opens a second payment (another tab) while the first is still open at the gateway.
    const second = await payAgain(store, order.token);
    await press(second, 'card');
    await notificationsApplied(store);
    assert.equal(await stateOf(store, order.token), 'paid');

    await press(order.payUrl, 'cancel');
    await notificationsApplied(store);
    assert.equal(await stateOf(store, order.token), 'paid');
    const [old] = await attempts(store, order.orderId);
    assert.equal(old?.state, 'cancelled', 'the old attempt is recorded as cancelled');
    assert.deepEqual((await events(store, old!.id)).map((e) => e.outcome), ['stale_attempt']);
    assert.deepEqual(await sku(store, code), { on_hand: 9, reserved: 0 }, 'no stock given back for a paid order');
    assert.equal((await mailJobs(store, order.orderId, 'order_cancelled')).length, 0, 'the customer is not told the order was cancelled');
  });

  it('the customer pays twice through two tabs: the order is held, and the operator refunds the duplicate by naming it', async () => {
    store.startWorker();
    const code = await product(store, 10, 1300);
    const order = await placeOrder(store, [{ sku: code, quantity: 1 }]);
    const second = await payAgain(store, order.token);
    await press(second, 'card');
    await notificationsApplied(store);
    await press(order.payUrl, 'card'); // the old tab pays as well
    await notificationsApplied(store);
    assert.equal(await stateOf(store, order.token), 'on_hold');
    const [first, current] = await attempts(store, order.orderId);
    assert.equal(first?.state, 'captured');
    assert.equal(current?.state, 'captured');

    const unknown = await admin(store, 'POST', `/orders/${order.number}/refund`, { amount: 1300, payment: 'K000000-XXXXXXXX-9' });
    assert.equal(unknown.status, 400);
    const unknownBody = (await unknown.json()) as ErrorBody;
    assert.deepEqual(unknownBody.error.problems.map((p) => p.field), ['payment']);
    assert.ok(unknownBody.error.problems[0]!.reason.includes(first!.merchant_ref), `the reason lists the order's payments: ${unknownBody.error.problems[0]!.reason}`);

    const refund = await admin(store, 'POST', `/orders/${order.number}/refund`, { amount: 1300, payment: first!.merchant_ref });
    assert.equal(refund.status, 202, await refund.clone().text());
    await eventually(async () => assert.equal((await gatewayPayment(store, first!.merchant_ref)).refunded_amount, 1300, 'the duplicate is refunded at the gateway'));
    assert.equal((await gatewayPayment(store, current!.merchant_ref)).refunded_amount, 0, 'the payment that pays for the order is not');
    await eventually(async () => assert.equal((await attempts(store, order.orderId))[0]?.state, 'refunded'));
    // The customer hears of the money coming back, like any refund.
    await eventually(async () => {
      const refundMails = mailFiles(store).filter((m) => m.name.startsWith(`refund.${order.number}.`));
      assert.equal(refundMails.length, 1, mailFiles(store).map((m) => m.name).join(', '));
      assert.match(refundMails[0]!.text, /返金額累計 \/ Refunded so far: 1,300円/);
    });

    const released = await admin(store, 'POST', `/orders/${order.number}/events`, { event: 'release_to_paid' });
    assert.equal(released.status, 200, await released.clone().text());
    assert.equal(await stateOf(store, order.token), 'paid');
    assert.equal((await attempts(store, order.orderId))[1]?.state, 'captured');
  });

  it('a konbini slip of an old attempt expiring after the order was paid by card leaves the order paid', async () => {
    const code = await product(store, 10, 1700);
    const order = await placeOrder(store, [{ sku: code, quantity: 1 }]);
    const second = await payAgain(store, order.token);

    // The old tab picks konbini: a superseded attempt must not steer the order.
    await press(order.payUrl, 'konbini');
    await notificationsApplied(store);
    assert.equal(await stateOf(store, order.token), 'pending_payment');
    await press(second, 'card');
    await notificationsApplied(store);
    assert.equal(await stateOf(store, order.token), 'paid');
    await press(order.payUrl, 'konbini-expire');
    await notificationsApplied(store);
    assert.equal(await stateOf(store, order.token), 'paid');
    assert.deepEqual(await sku(store, code), { on_hand: 9, reserved: 0 });
    assert.equal((await mailJobs(store, order.orderId, 'order_cancelled')).length, 0);
    assert.equal((await mailJobs(store, order.orderId, 'order_paid')).length, 1);
  });

  it('operator refunds through the admin API: partly, never more than is left, then the rest', async () => {
    store.startWorker();
    const order = await placeOrder(store, [{ sku: 'demo-ticket', quantity: 1 }]);
    await press(order.payUrl, 'card');
    await notificationsApplied(store);
    assert.equal(await stateOf(store, order.token), 'paid');

    const anonymous = await admin(store, 'POST', `/orders/${order.number}/refund`, { amount: 300 }, null);
    assert.equal(anonymous.status, 401);
    const wrongToken = await admin(store, 'POST', `/orders/${order.number}/refund`, { amount: 300 }, `${ADMIN_TOKEN}x`);
    assert.equal(wrongToken.status, 401);
    const refundsBefore = (await jobsOfKind(store, 'payment.refund')).length;

    const partial = await admin(store, 'POST', `/orders/${order.orderId}/refund`, { amount: 300 });
    assert.equal(partial.status, 202);
    await eventually(async () => assert.equal(await stateOf(store, order.token), 'partially_refunded'));
    const attempt = await onlyAttempt(store, order.orderId);
    assert.equal(attempt.refunded_amount, 300);
    const atGateway = await gatewayPayment(store, attempt.merchant_ref);
    assert.equal(atGateway.refunded_amount, 300, 'the gateway refunded 300 yen');
    assert.equal(atGateway.refunds.length, 1);

    const tooMuch = await admin(store, 'POST', `/orders/${order.orderId}/refund`, { amount: 6800 - 300 + 1 });
    assert.equal(tooMuch.status, 400);
    const tooMuchBody = (await tooMuch.json()) as ErrorBody;
    assert.ok(tooMuchBody.error.problems.some((p) => p.field === 'amount'), JSON.stringify(tooMuchBody));
    assert.equal((await jobsOfKind(store, 'payment.refund')).length, refundsBefore + 1, 'nothing queued for the refused refund');

    const rest = await admin(store, 'POST', `/orders/${order.orderId}/refund`, { amount: 6500 });
    assert.equal(rest.status, 202);
    await eventually(async () => assert.equal(await stateOf(store, order.token), 'refunded'));
    const final = await gatewayPayment(store, attempt.merchant_ref);
    assert.equal(final.refunded_amount, 6800);
    assert.equal(final.status, 'refunded');
    assert.equal((await onlyAttempt(store, order.orderId)).refunded_amount, 6800, 'each refund counted once');
    assert.equal((await mailJobs(store, order.orderId, 'refund')).length, 2, 'the customer hears of each refund');
  });

  it('concurrent refunds together never exceed what was captured', async () => {
    store.startWorker();
    const order = await placeOrder(store, [{ sku: 'demo-ticket', quantity: 1 }]);
    await press(order.payUrl, 'card');
    await notificationsApplied(store);
    assert.equal(await stateOf(store, order.token), 'paid');
    const answers = await Promise.all(Array.from({ length: 5 }, () => admin(store, 'POST', `/orders/${order.orderId}/refund`, { amount: 5000 })));
    const statuses = answers.map((r) => r.status).sort();
    await Promise.all(answers.map((r) => r.arrayBuffer()));
    assert.deepEqual(statuses, [202, 400, 400, 400, 400], 'one refund of 5000 fits in 6800, a second does not');
    await eventually(async () => assert.equal(await stateOf(store, order.token), 'partially_refunded'));
    const attempt = await onlyAttempt(store, order.orderId);
    await eventually(async () => assert.equal((await gatewayPayment(store, attempt.merchant_ref)).refunded_amount, 5000));
    assert.equal((await onlyAttempt(store, order.orderId)).refunded_amount, 5000);
  });

  it('a capture whose amount differs from the order puts it on hold: no fulfilment, stock not committed', async () => {
    const code = await product(store, 10, 2000);
    const order = await placeOrder(store, [{ sku: code, quantity: 1 }]);
    const attempt = await onlyAttempt(store, order.orderId);
    const real = await gatewayPayment(store, attempt.merchant_ref);
    // A genuine, signed notification (as the gateway would send after a partial capture) of 1000 yen for a 2000 yen order.
    const short = event('payment.captured', { ...real, status: 'captured', captured_amount: 1000 });
    const res = await deliver(store, short.body, sign(secretOf(store), short.body));
    await notificationsApplied(store);
    assert.equal(res.status, 200);

    assert.equal(await stateOf(store, order.token), 'on_hold');
    const [recorded] = await store.rt.ctx.db.selectFrom('payment_events').selectAll().where('event_key', '=', short.id).execute();
    assert.equal(recorded?.outcome, 'amount_mismatch');
    const alerts = await store.rt.ctx.db.selectFrom('alerts').selectAll().where('ref', '=', order.orderId).execute();
    assert.deepEqual(alerts.map((a) => a.kind), ['order_on_hold']);
    assert.match(alerts[0]!.message, /1000/);
    assert.equal((await mailJobs(store, order.orderId, 'order_paid')).length, 0, 'not fulfilled');
    assert.deepEqual(await sku(store, code), { on_hand: 10, reserved: 1 }, 'stock not committed');
    const held = (await (await admin(store, 'GET', `/orders/${order.orderId}`)).json()) as { state: string; holdReason: string };
    assert.equal(held.state, 'on_hold');
    assert.match(held.holdReason, /1000 yen differs from the order total 2000 yen/);
  });

  it('back through the gateway\'s cancel link: the order page stops polling, says the payment was not completed and offers another method', async () => {
    const order = await placeOrder(store, [{ sku: await product(store, 5, 1000), quantity: 1 }]);
    const attempt = await onlyAttempt(store, order.orderId);
    const atGateway = await orderPage(store, order.token);
    assert.match(atGateway, /<meta http-equiv="refresh"/, 'while the customer is at the gateway, the page waits for its result');
    assert.match(atGateway, /Waiting for the payment result/);

    // SBPS's screen posts the customer back to the cancel URL, a redirecting gateway sends them there
    // with a GET; as after SBPS's cancel, nothing at the gateway ended the attempt.
    const cancelUrl = `${store.url}/orders/${order.token}/return?attempt=${attempt.id}&cancelled=1`;
    for (const init of [{ method: 'GET' }, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: '' }]) {
      const res = await fetch(cancelUrl, { ...init, redirect: 'manual' });
      await res.arrayBuffer();
      assert.equal(res.status, 303, init.method);
      assert.equal(res.headers.get('location'), `/orders/${order.token}?cancelled=1`, init.method);
    }
    assert.equal((await onlyAttempt(store, order.orderId)).state, 'pending', 'the cancel link moves no money state');

    const back = unescapeHtml(await orderPage(store, order.token, '?cancelled=1'));
    assert.doesNotMatch(back, /http-equiv="refresh"/, 'nothing to wait for: the pay-again choice is not reset under the customer');
    assert.doesNotMatch(back, /Waiting for the payment result/);
    assert.match(back, /<p class="notice">お支払いは完了していません。下のフォームから別のお支払い方法を選べます。\/ The payment was not completed\. You can choose another payment method below\.<\/p>/);
    assert.match(back, new RegExp(`<form method="post" action="/orders/${order.token}/pay">`));

    // A pay-again choice the order cannot take, while the old attempt is still pending: the reason stays on screen.
    const refused = await new FormClient(store.url).submit(`/orders/${order.token}`, `/orders/${order.token}/pay`, { provider: 'no-such-provider' });
    assert.equal(refused.status, 400);
    assert.match(refused.body, /<p id="f-provider-error" class="field-error" role="alert">/);
    assert.doesNotMatch(refused.body, /http-equiv="refresh"/);
  });

  it('a declined payment: the order page says so in words and offers paying again', async () => {
    const order = await placeOrder(store, [{ sku: await product(store, 5, 1000), quantity: 1 }]);
    const back = await press(order.payUrl, 'decline');
    await notificationsApplied(store);
    await comeBack(store, back);
    const html = unescapeHtml(await orderPage(store, order.token));
    assert.match(html, /<p class="notice">お支払いが承認されませんでした。下のフォームから、もう一度または別の方法でお支払いいただけます。\/ The payment was declined\. You can pay again below, with the same or another method\.<\/p>/);
    assert.match(html, /お支払い \/ Payment: テスト決済 \/ Test payment \(sandbox\) — 承認されませんでした \/ Declined<\/p>/);
    assert.doesNotMatch(html, /testpay — failed/);
    assert.doesNotMatch(html, /http-equiv="refresh"/);
    assert.match(html, new RegExp(`<form method="post" action="/orders/${order.token}/pay">`));
  });

  it('a konbini slip on the order page: the payment in words, its deadline in Japan time', async () => {
    const order = await placeOrder(store, [{ sku: await product(store, 5, 1000), quantity: 1 }], { provider: 'testpay', method: 'konbini' });
    await press(order.payUrl, 'konbini');
    await notificationsApplied(store);
    const { konbini } = await gatewayPayment(store, (await onlyAttempt(store, order.orderId)).merchant_ref);
    assert.ok(konbini, 'testpay issued a slip');
    const html = unescapeHtml(await orderPage(store, order.token));
    assert.match(html, /お支払い \/ Payment: テスト決済 \/ Test payment \(sandbox\) — お支払い待ち \/ Waiting for your payment<\/p>/);
    assert.ok(html.includes(`コンビニ払込番号 / Receipt: ${konbini.receipt}, 期限 / deadline ${japanTime(konbini.deadline)}</p>`), html);
    assert.doesNotMatch(html, /\d{4}-\d\d-\d\dT\d\d:\d\d/, 'no UTC timestamp is shown');
  });

  it('a KOMOJU konbini slip: the store by its name, the fee and the amount to pay there', async () => {
    const order = await placeOrder(store, [{ sku: await product(store, 5, 1320), quantity: 1 }], { provider: 'komoju', method: 'konbini' });
    const slip = await fetch(`${order.payUrl}/pay/konbini`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'store=seicomart', redirect: 'manual' });
    await slip.arrayBuffer();
    assert.equal(slip.status, 303);
    await comeBack(store, new URL(slip.headers.get('location')!, order.payUrl));
    assert.equal(await stateOf(store, order.token), 'awaiting_payment');
    const html = unescapeHtml(await orderPage(store, order.token));
    assert.match(html, /お支払い \/ Payment: クレジットカード・コンビニ等（KOMOJU）\/ Card, konbini and more \(KOMOJU\) — お支払い待ち \/ Waiting for your payment<\/p>/);
    assert.match(html, /<dt>お支払い先 \/ Pay at<\/dt><dd>セイコーマート \/ Seicomart<\/dd>/);
    assert.match(html, /<dt>手数料 \/ Fee<\/dt><dd>190円<\/dd>/);
    assert.match(html, /<dt>お支払い金額 \/ Amount to pay<\/dt><dd><strong>1,510円<\/strong>（ご注文 \/ order 1,320円 \+ 手数料 \/ fee 190円）<\/dd>/);
    assert.doesNotMatch(html, /<dd>seicomart|komoju —|— awaiting_payment/, 'no code is shown in place of words');
  });

  it('refunds: the order page shows how much went back, partly and in full; the ticket page its issue time in Japan time', async () => {
    store.startWorker();
    const order = await placeOrder(store, [{ sku: await product(store, 5, 2000), quantity: 1 }]);
    await press(order.payUrl, 'card');
    await notificationsApplied(store);
    const paid = unescapeHtml(await orderPage(store, order.token));
    assert.match(paid, /お支払い \/ Payment: テスト決済 \/ Test payment \(sandbox\) — お支払い済み \/ Paid<\/p>/);
    assert.doesNotMatch(paid, /返金額/, 'nothing refunded, nothing said');

    const ticket = await store.rt.ctx.db.selectFrom('tickets').select(['code', 'issued_at']).where('order_id', '=', order.orderId).executeTakeFirstOrThrow();
    const ticketPage = unescapeHtml(await (await fetch(`${store.url}/tickets/${ticket.code}`)).text());
    assert.ok(ticketPage.includes(`<dt>発券 / Issued</dt><dd>${japanTime(ticket.issued_at)}</dd>`), ticketPage);

    assert.equal((await admin(store, 'POST', `/orders/${order.orderId}/refund`, { amount: 300 })).status, 202);
    await eventually(async () => assert.equal(await stateOf(store, order.token), 'partially_refunded'));
    const partly = unescapeHtml(await orderPage(store, order.token));
    assert.match(partly, /— 一部返金済み \/ Partially refunded<\/p>/);
    assert.match(partly, /<p class="refund">返金額 \/ Refunded: 300円（お支払い額 \/ Paid 2,000円）<\/p>/);

    assert.equal((await admin(store, 'POST', `/orders/${order.orderId}/refund`, { amount: 1700 })).status, 202);
    await eventually(async () => assert.equal(await stateOf(store, order.token), 'refunded'));
    assert.match(unescapeHtml(await orderPage(store, order.token)), /<p class="refund">返金額 \/ Refunded: 2,000円（お支払い額 \/ Paid 2,000円）<\/p>/);
  });
});

forEachEngine('reservation expiry', (engine) => {
  describe('an order nobody pays', () => {
    let store: TestStore;
    before(async () => {
      store = await startStore(engine, { KESSAI_RESERVATION_TTL_SECONDS: '1' });
    });
    after(async () => {
      await store?.close();
    });

    it('expires and gives its stock back', async () => {
      const code = await product(store, 5, 1000);
      const order = await placeOrder(store, [{ sku: code, quantity: 2 }]);
      assert.deepEqual(await sku(store, code), { on_hand: 5, reserved: 2 });
      store.startWorker();
      await eventually(async () => assert.equal(await stateOf(store, order.token), 'expired'), 8000);
      assert.deepEqual(await sku(store, code), { on_hand: 5, reserved: 0 });
      assert.equal((await mailJobs(store, order.orderId, 'order_paid')).length, 0);

      // Later the customer pays on the gateway page they still had open: the money is noticed, not lost.
      await press(order.payUrl, 'card');
      await notificationsApplied(store);
      assert.equal(await stateOf(store, order.token), 'expired', 'the stock was given back; the order does not come back to life');
      assert.deepEqual(await sku(store, code), { on_hand: 5, reserved: 0 });
      assert.equal((await mailJobs(store, order.orderId, 'order_paid')).length, 0);
      const alerts = await store.rt.ctx.db.selectFrom('alerts').selectAll().where('ref', '=', order.orderId).execute();
      assert.equal(alerts.length, 1, 'the operator is alerted to money taken for an expired order');
      assert.match(alerts[0]!.message, /expired/);
    });
  });

  describe('an order paid at the gateway just before it expires, its webhook lost', () => {
    let store: TestStore;
    before(async () => {
      store = await startStore(engine, { KESSAI_RESERVATION_TTL_SECONDS: '1' });
    });
    after(async () => {
      await store?.close();
    });

    it('is found paid by the expiry read-back and never expires', async () => {
      const code = await product(store, 5, 1000);
      const order = await placeOrder(store, [{ sku: code, quantity: 2 }]);
      await faults(store, { webhooks: 'drop' });
      await press(order.payUrl, 'card');
      await notificationsApplied(store);
      assert.equal(await stateOf(store, order.token), 'pending_payment', 'the store has not heard of the payment');

      store.startWorker(); // the expiry job is due in about a second
      await eventually(async () => {
        const [job] = await jobsOfKind(store, 'order.expire');
        assert.equal(job?.state, 'done');
      }, 8000);
      assert.equal(await stateOf(store, order.token), 'paid');
      assert.deepEqual(await sku(store, code), { on_hand: 3, reserved: 0 });
      const states = await store.rt.ctx.db.selectFrom('state_changes').select('to_state').where('entity_id', '=', order.orderId).execute();
      assert.ok(!states.some((s) => s.to_state === 'expired'), 'never expired on the way');
      assert.equal((await mailJobs(store, order.orderId, 'order_paid')).length, 1);
    });

    it('a payment notification answered but not applied yet when it expires pays it first: never expired', async () => {
      const code = await product(store, 5, 1000);
      const order = await placeOrder(store, [{ sku: code, quantity: 2 }]);
      const attempt = await onlyAttempt(store, order.orderId);
      // The gateway's notification was verified, recorded and answered; the inbox has not applied it
      // (behind a burst, or its first try failed and it waits for the sweep).
      const fact = { merchantRef: attempt.merchant_ref, eventKey: `${attempt.merchant_ref}:captured`, fact: { type: 'captured' as const, amount: attempt.amount }, payload: {} };
      await store.rt.ctx.db.insertInto('payment_events').values(eventRow('default', 'testpay', fact, 'notification')).execute();

      store.startWorker();
      await eventually(async () => {
        const jobs = await jobsOfKind(store, 'order.expire');
        assert.equal(jobs.find((j) => (JSON.parse(j.payload) as { orderId: string }).orderId === order.orderId)?.state, 'done');
      }, 8000);
      assert.equal(await stateOf(store, order.token), 'paid');
      assert.deepEqual(await sku(store, code), { on_hand: 3, reserved: 0 });
      const states = await store.rt.ctx.db.selectFrom('state_changes').select('to_state').where('entity_id', '=', order.orderId).execute();
      assert.ok(!states.some((s) => s.to_state === 'expired'), 'never expired on the way');
    });
  });
});
