/**
 * KOMOJU through the whole store, over real HTTP on loopback: the checkout creates a session at the
 * KOMOJU simulator and redirects; the "browser" (fetch) pays on the simulator's hosted page and comes
 * back with ?session_id=; the simulator posts signed webhooks to /webhooks/komoju/default; refunds,
 * captures and cancels go through the operator API, the outbox and KOMOJU's payments API. Webhooks
 * the simulator would not send (forged, re-serialised, a wrong amount) are signed here with the
 * sandbox account's derived secret, exactly as KOMOJU would put them on the wire.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, afterEach, before, it } from 'node:test';
import { createProduct } from '../../src/commerce/catalog.js';
import { komojuSandboxKeys, setShopSettings } from '../../src/commerce/shops.js';
import { computeKomojuSignature, komojuApi, type KomojuPayment, type KomojuSession } from '../../src/gateways/komoju/index.js';
import { readBack } from '../../src/payments/service.js';
import { forEachEngine } from '../helpers/db.js';
import { eventually } from '../helpers/eventually.js';
import { readMails } from '../helpers/mail.js';
import { ADMIN_TOKEN, attempts, notificationsApplied, onlyAttempt, sku, startStore, type TestStore } from '../helpers/store.js';

const CARD_OK = '4111111111111111';
const CARD_DECLINED = '4000000000000002';
const CARD_3DS = '4000000000003220';

interface OrderView {
  number: string;
  state: string;
  total: number;
  payment: { provider: string; method: string | null; state: string; details: Record<string, unknown> } | null;
}
interface Placed {
  token: string;
  number: string;
  orderId: string;
  total: number;
  sessionUrl: string;
}

const sim = (store: TestStore) => `${store.url}/sandbox/komoju`;
const api = (store: TestStore) => komojuApi({ secretKey: komojuSandboxKeys(store.rt.ctx.config).secretKey, baseUrl: `${sim(store)}/api/v1`, retries: 0 });

async function product(store: TestStore, stock: number, price: number): Promise<string> {
  const code = `komoju-${randomBytes(4).toString('hex')}`;
  await createProduct(store.rt.ctx, 'default', { code, name: `ライブ参加券 ${code}`, kind: 'ticket', price, stock });
  return code;
}

async function placeOrder(store: TestStore, code: string, quantity = 1, payment: Record<string, string> = { provider: 'komoju' }): Promise<Placed> {
  const res = await fetch(`${store.url}/api/checkout`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ shop: 'default', customer: { email: 'hanako@example.jp', name: '山田 花子' }, lines: [{ sku: code, quantity }], payment }),
  });
  const body = (await res.json()) as { order: OrderView; orderToken: string; payment: { type: string; url: string } | null };
  assert.equal(res.status, 201, JSON.stringify(body));
  assert.equal(body.payment?.type, 'redirect', JSON.stringify(body));
  assert.ok(body.payment.url.startsWith(`${sim(store)}/sessions/`), body.payment.url);
  const row = await store.rt.ctx.db.selectFrom('orders').select('id').where('number', '=', body.order.number).executeTakeFirstOrThrow();
  return { token: body.orderToken, number: body.order.number, orderId: row.id, total: body.order.total, sessionUrl: body.payment.url };
}

async function payAgain(store: TestStore, token: string, method?: string): Promise<string> {
  const res = await fetch(`${store.url}/api/orders/${token}/payments`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ provider: 'komoju', ...(method ? { method } : {}) }) });
  const body = (await res.json()) as { payment: { type: string; url: string } };
  assert.equal(res.status, 201, JSON.stringify(body));
  return body.payment.url;
}

/** Posts one of the hosted page's forms as a browser would; answers the raw response (redirects not followed). */
function submit(url: string, fields: Record<string, string>): Promise<Response> {
  return fetch(url, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(fields).toString(), redirect: 'manual' });
}

const card = (number: string) => ({ number, name: 'HANAKO YAMADA', month: '12', year: '2030', verification_value: '123' });

/** Pays on the hosted page; answers where KOMOJU sends the browser back (the store's return URL with session_id). */
async function payByCard(sessionUrl: string, number = CARD_OK): Promise<URL> {
  const res = await submit(`${sessionUrl}/pay/credit_card`, card(number));
  assert.equal(res.status, 303, await res.text());
  return new URL(res.headers.get('location')!, sessionUrl);
}

async function payAtKonbini(sessionUrl: string, store = 'lawson'): Promise<URL> {
  const res = await submit(`${sessionUrl}/pay/konbini`, { store });
  assert.equal(res.status, 303, await res.text());
  return new URL(res.headers.get('location')!, sessionUrl);
}

/** The browser arrives back at the store: the store reads the session back and redirects to the order page. */
async function comeBack(store: TestStore, back: URL, token: string): Promise<void> {
  assert.ok(back.searchParams.get('session_id'), `session_id on the return: ${back.href}`);
  assert.equal(back.pathname, `/orders/${token}/return`);
  const res = await fetch(back, { redirect: 'manual' });
  assert.equal(res.status, 303);
  assert.equal(res.headers.get('location'), `/orders/${token}`);
}

async function view(store: TestStore, token: string): Promise<OrderView> {
  const res = await fetch(`${store.url}/api/orders/${token}`);
  assert.equal(res.status, 200);
  return ((await res.json()) as { order: OrderView }).order;
}

async function faults(store: TestStore, set: Record<string, unknown>): Promise<void> {
  const res = await fetch(`${sim(store)}/api/faults`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(set) });
  assert.equal(res.status, 200, await res.text());
}

async function admin(store: TestStore, method: string, path: string, body?: unknown): Promise<Response> {
  return fetch(`${store.url}/api/admin${path}`, {
    method,
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
}

/** The KOMOJU session and payment behind an order's only (or given) attempt. */
async function atKomoju(store: TestStore, orderId: string, index = 0): Promise<{ session: KomojuSession; payment: KomojuPayment | undefined }> {
  const attempt = (await attempts(store, orderId))[index]!;
  const session = await api(store).sessions.get(attempt.gateway_ref!);
  const list = await api(store).request<{ data: KomojuPayment[] }>('GET', `/payments?external_order_num=${encodeURIComponent(attempt.merchant_ref)}`);
  return { session, payment: list.data[0] };
}

/** Waits until KOMOJU has delivered every webhook about the order's payment (answered 2xx by the store). */
async function webhooksDelivered(store: TestStore, orderId: string, index = 0): Promise<string[]> {
  return eventually(async () => {
    const { payment } = await atKomoju(store, orderId, index);
    assert.ok(payment, 'KOMOJU has a payment');
    return deliveredFor(store, payment.id);
  }, 10_000);
}

/** The types of the events KOMOJU sent about one payment, once every one was delivered. */
async function deliveredFor(store: TestStore, paymentId: string): Promise<string[]> {
  return eventually(async () => {
    const res = await fetch(`${sim(store)}/api/payments/${paymentId}/webhooks`);
    const { data } = (await res.json()) as { data: { type: string; deliveries: { status: string }[] }[] };
    assert.ok(data.length > 0, 'an event was sent');
    for (const e of data) assert.ok(e.deliveries.length > 0 && e.deliveries.every((d) => d.status === 'delivered'), `${e.type}: ${JSON.stringify(e.deliveries)}`);
    return data.map((e) => e.type);
  }, 10_000);
}

/**
 * Waits until every read-back of the attempt that notifications asked for has run. A notification
 * queues its read-back before it is answered, so after deliveredFor() nothing more is coming.
 */
async function readBacksDone(store: TestStore, attemptId: string): Promise<void> {
  await eventually(async () => {
    const jobs = await store.rt.ctx.db.selectFrom('jobs').select(['state', 'payload']).where('kind', '=', 'payment.readback').execute();
    const mine = jobs.filter((j) => (JSON.parse(j.payload) as { attemptId?: string }).attemptId === attemptId);
    assert.ok(mine.every((j) => j.state === 'done'), `read-backs of ${attemptId}: ${mine.map((j) => j.state).join(', ')}`);
  }, 10_000);
}

/** The order's reservation runs out now: its expiry job (queued at checkout for that moment) comes due and runs. */
async function reservationRunsOut(store: TestStore, orderId: string): Promise<void> {
  const past = new Date(Date.now() - 1000).toISOString();
  await store.rt.ctx.db.updateTable('orders').set({ expires_at: past }).where('id', '=', orderId).execute();
  const moved = await store.rt.ctx.db.updateTable('jobs').set({ run_at: past }).where('dedupe_key', '=', `order.expire:${orderId}`).where('state', '=', 'pending').executeTakeFirst();
  assert.equal(Number(moved.numUpdatedRows), 1, 'the expiry job was waiting');
  await eventually(async () => {
    const job = await store.rt.ctx.db.selectFrom('jobs').select(['state', 'last_error']).where('dedupe_key', '=', `order.expire:${orderId}`).executeTakeFirstOrThrow();
    assert.equal(job.state, 'done', job.last_error ?? '');
  }, 10_000);
}

async function alertsOf(store: TestStore, orderId: string) {
  return store.rt.ctx.db.selectFrom('alerts').select(['kind', 'message']).where('ref', '=', orderId).execute();
}

async function ticketStates(store: TestStore, orderId: string): Promise<string[]> {
  const rows = await store.rt.ctx.db.selectFrom('tickets').select('state').where('order_id', '=', orderId).orderBy('serial').execute();
  return rows.map((r) => r.state);
}

async function events(store: TestStore, orderId: string) {
  const ids = (await attempts(store, orderId)).map((a) => a.id);
  return store.rt.ctx.db.selectFrom('payment_events').selectAll().where('attempt_id', 'in', ids).orderBy('received_at').execute();
}

/** A webhook as KOMOJU sends it: JSON bytes signed with the account's webhook secret. */
async function postWebhook(store: TestStore, event: unknown, opts: { sign?: Buffer | string; secret?: string; signature?: string | null } = {}): Promise<Response> {
  const body = Buffer.from(JSON.stringify(event));
  const secret = opts.secret ?? komojuSandboxKeys(store.rt.ctx.config).webhookSecret;
  const signature = opts.signature === null ? undefined : (opts.signature ?? computeKomojuSignature(opts.sign ?? body, secret));
  return fetch(`${store.url}/webhooks/komoju/default`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-komoju-event': (event as { type: string }).type, 'x-komoju-id': randomBytes(8).toString('hex'), ...(signature !== undefined ? { 'x-komoju-signature': signature } : {}) },
    body,
  });
}

forEachEngine('KOMOJU through the store', (engine) => {
  let store: TestStore;
  before(async () => {
    store = await startStore(engine);
    store.startWorker();
  });
  afterEach(async () => {
    await faults(store, { duplicate: false, reorder: false, delayMs: 0, dropWebhooks: false, noReturn: false, staleCancel: false });
    await setShopSettings(store.rt.ctx, 'default', { 'komoju.captureMode': '' });
  });
  after(async () => {
    await store?.close();
  });

  it('card: session with the order, hosted page, back with session_id → paid once, stock committed, mail queued', async () => {
    const code = await product(store, 5, 4800);
    const order = await placeOrder(store, code, 2);
    const attempt = await onlyAttempt(store, order.orderId);
    const { session } = await atKomoju(store, order.orderId);
    assert.equal(session.id, attempt.gateway_ref, 'the session id is kept on the attempt');
    assert.deepEqual([session.amount, session.currency, session.status], [9600, 'JPY', 'pending']);
    assert.ok(String(session.return_url).startsWith(`${store.url}/orders/${order.token}/return`), String(session.return_url));

    await comeBack(store, await payByCard(order.sessionUrl), order.token);
    const paid = await view(store, order.token);
    assert.equal(paid.state, 'paid', 'the return alone makes the order paid (read-back)');
    assert.equal(paid.payment?.state, 'captured');
    assert.deepEqual(await webhooksDelivered(store, order.orderId), ['payment.captured'], 'the webhook arrived too');
    await notificationsApplied(store);
    assert.equal((await events(store, order.orderId)).filter((e) => e.outcome === 'applied').length, 1, 'applied once, whichever came first');
    assert.deepEqual(await sku(store, code), { on_hand: 3, reserved: 0 });
    const mails = await store.rt.ctx.db.selectFrom('jobs').select('payload').where('kind', '=', 'mail.send').execute();
    assert.equal(mails.filter((m) => m.payload.includes(order.orderId) && m.payload.includes('order_paid')).length, 1);
  });

  it('a declined card leaves the order open; another card in the same session pays it', async () => {
    const order = await placeOrder(store, await product(store, 5, 3000));
    const declined = await submit(`${order.sessionUrl}/pay/credit_card`, card(CARD_DECLINED));
    assert.equal(declined.status, 200);
    assert.match(await declined.text(), /declined/);
    await notificationsApplied(store);
    assert.equal((await view(store, order.token)).state, 'pending_payment');
    assert.equal((await onlyAttempt(store, order.orderId)).state, 'pending', 'payment.failed does not end the attempt');
    await comeBack(store, await payByCard(order.sessionUrl, CARD_OK), order.token);
    assert.equal((await view(store, order.token)).state, 'paid');
  });

  it("KOMOJU's cancel link: back on the order page, the customer is told the payment was not completed and the page does not poll", async () => {
    const order = await placeOrder(store, await product(store, 5, 1500));
    const hosted = await (await fetch(order.sessionUrl)).text();
    const cancelLink = /id="back-to-shop" href="([^"]+)"/.exec(hosted)?.[1]?.replace(/&amp;/g, '&');
    assert.ok(cancelLink, 'the hosted page has its cancel link');
    const back = await fetch(cancelLink, { redirect: 'manual' });
    assert.equal(back.status, 303);
    // KOMOJU sends a cancel back like a payment (return_url with session_id): the read-back tells them apart.
    assert.equal(back.headers.get('location'), `/orders/${order.token}?cancelled=1`);
    const page = await (await fetch(new URL(back.headers.get('location')!, store.url))).text();
    assert.ok(page.includes('お支払いは完了していません'), 'the page says the payment was not completed');
    assert.ok(!page.includes('http-equiv="refresh"'), 'and does not poll for a result that is not coming');
    assert.equal((await view(store, order.token)).state, 'pending_payment', 'nothing changed: the customer may pay again');
  });

  it('3-D Secure approved on the challenge page pays; failed leaves it open', async () => {
    const order = await placeOrder(store, await product(store, 5, 2000));
    const challenge = await submit(`${order.sessionUrl}/pay/credit_card`, card(CARD_3DS));
    assert.equal(challenge.status, 303);
    const page = new URL(challenge.headers.get('location')!, order.sessionUrl);
    const failed = await submit(page.href, { result: 'fail' });
    assert.notEqual(failed.status, 303);
    assert.equal((await view(store, order.token)).state, 'pending_payment');
    const again = await submit(`${order.sessionUrl}/pay/credit_card`, card(CARD_3DS));
    const approved = await submit(new URL(again.headers.get('location')!, order.sessionUrl).href, { result: 'approve' });
    assert.equal(approved.status, 303);
    await comeBack(store, new URL(approved.headers.get('location')!, order.sessionUrl), order.token);
    assert.equal((await view(store, order.token)).state, 'paid');
  });

  it('konbini: authorized → awaiting payment with the code and deadline, mail queued; paid at the store → paid by webhook', async () => {
    const code = await product(store, 3, 5000);
    const order = await placeOrder(store, code, 1, { provider: 'komoju', method: 'konbini' });
    const { session } = await atKomoju(store, order.orderId);
    assert.deepEqual(session.payment_types, ['konbini'], 'only the chosen method is offered on KOMOJU');
    await comeBack(store, await payAtKonbini(order.sessionUrl, 'familymart'), order.token);
    const waiting = await view(store, order.token);
    assert.equal(waiting.state, 'awaiting_payment');
    const instructions = waiting.payment?.details.instructions as Record<string, unknown>;
    assert.equal(instructions.store, 'familymart');
    assert.ok(instructions.deadline, 'the deadline is shown');
    assert.ok(String(instructions.url).startsWith(`${sim(store)}/instructions/`), 'the instructions link is shown');
    assert.equal(instructions.fee, 190);
    assert.deepEqual(await sku(store, code), { on_hand: 3, reserved: 1 }, 'still reserved while the customer goes to the store');
    // The customer is mailed what to pay where and by when (the worker sends it).
    const mail = await eventually(async () => {
      const found = readMails(store.dataDir).filter((m) => m.text.includes(order.number) && m.text.includes('お支払い期限'));
      assert.equal(found.length, 1, 'one payment-instructions mail');
      return found[0]!;
    }, 10_000);
    assert.match(mail.text, /お支払い先 \/ Pay at: ファミリーマート \/ FamilyMart/);
    assert.ok(mail.text.includes(String(instructions.url)), 'the instructions link is in the mail');
    assert.match(mail.text, /手数料 \/ Fee: 190円/);
    assert.match(mail.text, new RegExp(`お支払い金額 / Amount to pay: ${(5000 + 190).toLocaleString('ja-JP')}円`));

    const { payment } = await atKomoju(store, order.orderId);
    const paid = await fetch(`${sim(store)}/api/payments/${payment!.id}/pay-at-store`, { method: 'POST' });
    assert.equal(paid.status, 200);
    // Only the webhook tells the store: no browser comes back after paying at the store.
    await eventually(async () => assert.equal((await view(store, order.token)).state, 'paid'));
    assert.equal((await onlyAttempt(store, order.orderId)).captured_amount, 5000, 'the konbini fee is not the order\'s money');
    assert.deepEqual(await sku(store, code), { on_hand: 2, reserved: 0 });
  });

  it('konbini past its deadline → expired, stock back; a late read-back agrees', async () => {
    const code = await product(store, 3, 1200);
    const order = await placeOrder(store, code, 2, { provider: 'komoju', method: 'konbini' });
    await comeBack(store, await payAtKonbini(order.sessionUrl), order.token);
    assert.equal((await view(store, order.token)).state, 'awaiting_payment');
    const { payment } = await atKomoju(store, order.orderId);
    assert.equal((await fetch(`${sim(store)}/api/payments/${payment!.id}/expire`, { method: 'POST' })).status, 200);
    // The webhook asks for a read-back; the session's own payment is the one that expired.
    assert.deepEqual(await deliveredFor(store, payment!.id), ['payment.authorized', 'payment.expired']);
    await readBacksDone(store, (await onlyAttempt(store, order.orderId)).id);
    await notificationsApplied(store);
    assert.equal((await view(store, order.token)).state, 'expired');
    assert.deepEqual(await sku(store, code), { on_hand: 3, reserved: 0 });
    assert.deepEqual(await alertsOf(store, order.orderId), []);
  });

  it('duplicated and reordered webhooks change the order once', async () => {
    await faults(store, { duplicate: true, reorder: true });
    const order = await placeOrder(store, await product(store, 3, 2500), 1, { provider: 'komoju', method: 'konbini' });
    // No browser return: only webhooks decide. authorized is held back until captured comes, then both arrive newest first, twice.
    await payAtKonbini(order.sessionUrl);
    const { payment } = await atKomoju(store, order.orderId);
    await fetch(`${sim(store)}/api/payments/${payment!.id}/pay-at-store`, { method: 'POST' });
    await eventually(async () => assert.equal((await view(store, order.token)).state, 'paid'));
    assert.deepEqual((await webhooksDelivered(store, order.orderId)).sort(), ['payment.authorized', 'payment.captured']);
    await notificationsApplied(store);
    const all = await events(store, order.orderId);
    assert.equal(all.filter((e) => e.outcome === 'applied').length, 1, `one state change: ${all.map((e) => `${e.event_key}=${e.outcome}`).join(', ')}`);
    const changes = await store.rt.ctx.db.selectFrom('state_changes').select(['to_state']).where('entity_id', '=', order.orderId).execute();
    assert.equal(changes.filter((c) => c.to_state === 'paid').length, 1);
  });

  it('forged, unsigned and re-serialised webhooks are refused with 401 and change nothing', async () => {
    const order = await placeOrder(store, await product(store, 3, 3300));
    const attempt = await onlyAttempt(store, order.orderId);
    const event = {
      id: 'evt_forged',
      type: 'payment.captured',
      resource: 'event',
      data: { id: 'pay_forged', resource: 'payment', status: 'captured', amount: 3300, total: 3300, payment_method_fee: 0, currency: 'JPY', external_order_num: attempt.merchant_ref, payment_details: { type: 'credit_card' } },
      created_at: '2026-11-23T00:00:00Z',
    };
    assert.equal((await postWebhook(store, event, { secret: 'not-the-webhook-secret' })).status, 401);
    assert.equal((await postWebhook(store, event, { signature: null })).status, 401);
    assert.equal((await postWebhook(store, event, { signature: '' })).status, 401);
    // Signed over the compact bytes, sent pretty-printed: the same JSON, other bytes.
    const compact = Buffer.from(JSON.stringify(event));
    const pretty = JSON.parse(JSON.stringify(event)) as unknown;
    const res = await fetch(`${store.url}/webhooks/komoju/default`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-komoju-signature': computeKomojuSignature(compact, komojuSandboxKeys(store.rt.ctx.config).webhookSecret) },
      body: JSON.stringify(pretty, null, 2),
    });
    assert.equal(res.status, 401);
    await notificationsApplied(store);
    assert.equal((await view(store, order.token)).state, 'pending_payment');
    assert.deepEqual(await events(store, order.orderId), []);
  });

  it('a captured amount that is not the order total (fee taken off) puts the order on hold with an alert', async () => {
    const order = await placeOrder(store, await product(store, 3, 4000));
    const attempt = await onlyAttempt(store, order.orderId);
    const res = await postWebhook(store, {
      id: `evt_${randomBytes(4).toString('hex')}`,
      type: 'payment.captured',
      resource: 'event',
      data: { id: 'pay_short', resource: 'payment', status: 'captured', amount: 3000, total: 3190, payment_method_fee: 190, currency: 'JPY', external_order_num: attempt.merchant_ref, payment_details: { type: 'konbini' } },
      created_at: '2026-11-23T00:00:00Z',
    });
    assert.equal(res.status, 200);
    await notificationsApplied(store);
    assert.equal((await view(store, order.token)).state, 'on_hold');
    const alerts = await store.rt.ctx.db.selectFrom('alerts').select(['kind', 'message']).where('ref', '=', order.orderId).execute();
    assert.ok(alerts.some((a) => a.kind === 'order_on_hold'), JSON.stringify(alerts));
  });

  it('ping and unknown events are answered 200 and change nothing', async () => {
    assert.equal((await postWebhook(store, { id: 'evt_ping', type: 'ping', resource: 'event', data: {} })).status, 200);
    assert.equal((await postWebhook(store, { id: 'evt_sub', type: 'subscription.created', resource: 'event', data: { id: 'sub_1' } })).status, 200);
  });

  it('return before the webhook and webhook before the return converge', async () => {
    // Return first: webhooks delayed.
    await faults(store, { delayMs: 500 });
    const first = await placeOrder(store, await product(store, 3, 1500));
    await comeBack(store, await payByCard(first.sessionUrl), first.token);
    assert.equal((await view(store, first.token)).state, 'paid', 'paid from the read-back before any webhook');
    await webhooksDelivered(store, first.orderId);
    await notificationsApplied(store);
    assert.equal((await events(store, first.orderId)).filter((e) => e.outcome === 'applied').length, 1);

    // Webhook first: no browser return at all, then the customer opens the return link later.
    await faults(store, { delayMs: 0, noReturn: true });
    const second = await placeOrder(store, await product(store, 3, 1500));
    const page = await submit(`${second.sessionUrl}/pay/credit_card`, card(CARD_OK));
    assert.equal(page.status, 200, 'no redirect back to the shop');
    await eventually(async () => assert.equal((await view(store, second.token)).state, 'paid'));
    const attempt = await onlyAttempt(store, second.orderId);
    const late = await fetch(`${store.url}/orders/${second.token}/return?attempt=${attempt.id}&session_id=${attempt.gateway_ref}`, { redirect: 'manual' });
    assert.equal(late.status, 303);
    assert.equal((await view(store, second.token)).state, 'paid');
    assert.equal((await events(store, second.orderId)).filter((e) => e.outcome === 'applied').length, 1);
  });

  it('paying again closes the earlier KOMOJU page: the old tab cannot take a second payment', async () => {
    const code = await product(store, 3, 2400);
    const order = await placeOrder(store, code);
    const secondUrl = await payAgain(store, order.token);
    // The worker closes the first session at KOMOJU, the customer's old tab with it.
    await eventually(async () => assert.equal((await atKomoju(store, order.orderId, 0)).session.status, 'cancelled'), 10_000);
    const oldTab = await submit(`${order.sessionUrl}/pay/credit_card`, card(CARD_OK));
    assert.notEqual(oldTab.status, 303, 'the old page takes no card');
    assert.match(await oldTab.text(), /cancelled by the shop/);
    assert.equal((await atKomoju(store, order.orderId, 0)).payment, undefined, 'no payment in the first session');
    await comeBack(store, await payByCard(secondUrl), order.token);
    assert.equal((await view(store, order.token)).state, 'paid');
    const [first, second] = await attempts(store, order.orderId);
    assert.equal(first?.state, 'expired', 'the first attempt ended');
    assert.equal(second?.state, 'captured');
    assert.deepEqual(await alertsOf(store, order.orderId), []);
  });

  it('a cancel of an earlier session never cancels the order paid through a later one', async () => {
    await faults(store, { staleCancel: true });
    const code = await product(store, 3, 2200);
    const order = await placeOrder(store, code);
    // First try: declined (its payment stays pending at KOMOJU); the customer comes back and pays anew.
    assert.equal((await submit(`${order.sessionUrl}/pay/credit_card`, card(CARD_DECLINED))).status, 200);
    const secondUrl = await payAgain(store, order.token);
    await comeBack(store, await payByCard(secondUrl), order.token);
    assert.equal((await view(store, order.token)).state, 'paid');
    const { payment: stale } = await atKomoju(store, order.orderId, 0);
    await eventually(async () => assert.equal((await atKomoju(store, order.orderId, 0)).payment?.status, 'cancelled'));
    assert.ok(stale, 'the first session has its declined payment');
    assert.deepEqual(await deliveredFor(store, stale.id), ['payment.failed', 'payment.cancelled'], 'the stale cancel arrived');
    // It is not applied as it stands: the first attempt is read back, and its session is still open.
    await readBacksDone(store, (await attempts(store, order.orderId))[0]!.id);
    await notificationsApplied(store);
    assert.equal((await view(store, order.token)).state, 'paid');
    assert.deepEqual(await sku(store, code), { on_hand: 2, reserved: 0 });
    assert.deepEqual(await alertsOf(store, order.orderId), []);
  });

  it('a declined try of the session that KOMOJU later expires or cancels leaves the order paid by the next card', async () => {
    const code = await product(store, 4, 2600);
    const order = await placeOrder(store, code, 2);
    // Two declined cards (each stays a pending payment at KOMOJU), then a good one in the same session.
    for (let i = 0; i < 2; i++) assert.equal((await submit(`${order.sessionUrl}/pay/credit_card`, card(CARD_DECLINED))).status, 200);
    await comeBack(store, await payByCard(order.sessionUrl), order.token);
    assert.equal((await view(store, order.token)).state, 'paid');
    assert.deepEqual(await ticketStates(store, order.orderId), ['issued', 'issued']);

    const attempt = await onlyAttempt(store, order.orderId);
    const all = await api(store).request<{ data: KomojuPayment[] }>('GET', `/payments?external_order_num=${encodeURIComponent(attempt.merchant_ref)}`);
    const declined = all.data.filter((p) => p.status === 'pending');
    assert.equal(declined.length, 2, 'both declined tries are still pending, under the attempt\'s external_order_num');
    // Long after, KOMOJU lets one of them expire and cancels the other (each sends its webhook).
    assert.equal((await fetch(`${sim(store)}/api/payments/${declined[0]!.id}/expire`, { method: 'POST' })).status, 200);
    assert.equal((await api(store).payments.cancel(declined[1]!.id, { idempotencyKey: `test-cancel-${declined[1]!.id}` })).status, 'cancelled');
    assert.deepEqual(await deliveredFor(store, declined[0]!.id), ['payment.failed', 'payment.expired']);
    assert.deepEqual(await deliveredFor(store, declined[1]!.id), ['payment.failed', 'payment.cancelled']);
    await readBacksDone(store, attempt.id);
    await notificationsApplied(store);

    assert.equal((await view(store, order.token)).state, 'paid');
    assert.equal((await onlyAttempt(store, order.orderId)).state, 'captured');
    assert.deepEqual(await alertsOf(store, order.orderId), [], 'no order_on_hold alert');
    assert.deepEqual(await ticketStates(store, order.orderId), ['issued', 'issued'], 'the tickets still admit');
    assert.deepEqual(await sku(store, code), { on_hand: 2, reserved: 0 });
    assert.deepEqual((await events(store, order.orderId)).filter((e) => e.fact_type === 'expired' || e.fact_type === 'cancelled'), [], 'no ending of the paid attempt was recorded');
  });

  it('an order whose reservation runs out ends its KOMOJU session: the customer can no longer pay; stock back', async () => {
    const code = await product(store, 3, 1800);
    const order = await placeOrder(store, code, 2);
    assert.deepEqual(await sku(store, code), { on_hand: 3, reserved: 2 });
    await reservationRunsOut(store, order.orderId);

    assert.equal((await view(store, order.token)).state, 'expired');
    assert.deepEqual(await sku(store, code), { on_hand: 3, reserved: 0 });
    const attempt = await onlyAttempt(store, order.orderId);
    assert.equal(attempt.state, 'expired');
    assert.equal((await atKomoju(store, order.orderId)).session.status, 'cancelled', 'the session is ended at KOMOJU');
    // The hosted page the customer still has open takes neither a card nor a konbini slip.
    assert.equal((await submit(`${order.sessionUrl}/pay/credit_card`, card(CARD_OK))).status, 409);
    assert.equal((await submit(`${order.sessionUrl}/pay/konbini`, { store: 'lawson' })).status, 409);
    assert.equal((await atKomoju(store, order.orderId)).payment, undefined, 'no payment was made');

    // Reconciliation reads the attempt back later: the cancelled session is old news, not a conflict.
    const later = await readBack(store.rt.payments, attempt.id);
    assert.deepEqual(later.map((r) => r.outcome), ['duplicate']);
    assert.equal((await view(store, order.token)).state, 'expired');
    assert.deepEqual(await alertsOf(store, order.orderId), []);
    const cancelMails = await store.rt.ctx.db.selectFrom('jobs').select('payload').where('kind', '=', 'mail.send').execute();
    assert.equal(cancelMails.filter((m) => m.payload.includes(order.orderId) && m.payload.includes('order_cancelled')).length, 0, 'expired, not cancelled');
  });

  it('a session paid just before the reservation runs out (its webhook and return lost) ends paid, not expired', async () => {
    const code = await product(store, 3, 2100);
    const order = await placeOrder(store, code);
    await faults(store, { dropWebhooks: true, noReturn: true });
    assert.equal((await submit(`${order.sessionUrl}/pay/credit_card`, card(CARD_OK))).status, 200);
    assert.equal((await view(store, order.token)).state, 'pending_payment', 'the store has not heard of the payment');
    await reservationRunsOut(store, order.orderId);

    assert.equal((await view(store, order.token)).state, 'paid');
    assert.equal((await atKomoju(store, order.orderId)).session.status, 'completed', 'a paid session is not cancelled');
    assert.deepEqual(await sku(store, code), { on_hand: 2, reserved: 0 });
    assert.deepEqual(await ticketStates(store, order.orderId), ['issued']);
    const states = await store.rt.ctx.db.selectFrom('state_changes').select('to_state').where('entity_id', '=', order.orderId).execute();
    assert.ok(!states.some((c) => c.to_state === 'expired'), 'never expired on the way');
  });

  it('operator refunds: partial keeps the payment captured at KOMOJU, the rest makes it refunded; each counted once', async () => {
    const order = await placeOrder(store, await product(store, 3, 6000));
    await comeBack(store, await payByCard(order.sessionUrl), order.token);
    assert.equal((await view(store, order.token)).state, 'paid');

    const partial = await admin(store, 'POST', `/orders/${order.number}/refund`, { amount: 1000 });
    assert.equal(partial.status, 202, await partial.text());
    await eventually(async () => assert.equal((await view(store, order.token)).state, 'partially_refunded'), 10_000);
    let { payment } = await atKomoju(store, order.orderId);
    assert.deepEqual([payment?.status, payment?.amount_refunded], ['captured', 1000]);

    const rest = await admin(store, 'POST', `/orders/${order.number}/refund`, { amount: 5000 });
    assert.equal(rest.status, 202, await rest.text());
    await eventually(async () => assert.equal((await view(store, order.token)).state, 'refunded'), 10_000);
    ({ payment } = await atKomoju(store, order.orderId));
    assert.deepEqual([payment?.status, payment?.amount_refunded], ['refunded', 6000]);
    await notificationsApplied(store);
    const attempt = await onlyAttempt(store, order.orderId);
    assert.deepEqual([attempt.state, attempt.refunded_amount], ['refunded', 6000], 'the refund webhooks did not count the refunds again');
    const refundEvents = (await events(store, order.orderId)).filter((e) => e.fact_type === 'refunded' && e.outcome === 'applied');
    assert.equal(refundEvents.length, 2);
  });

  it('manual capture: card authorized, the operator captures → paid; another authorized order is cancelled → stock back', async () => {
    await setShopSettings(store.rt.ctx, 'default', { 'komoju.captureMode': 'manual' });
    const code = await product(store, 4, 3500);
    const order = await placeOrder(store, code);
    await comeBack(store, await payByCard(order.sessionUrl), order.token);
    assert.equal((await view(store, order.token)).state, 'authorized');
    const partial = await admin(store, 'POST', `/orders/${order.number}/capture`, { amount: 3500 });
    assert.equal(partial.status, 202, await partial.text());
    await eventually(async () => assert.equal((await view(store, order.token)).state, 'paid'), 10_000);
    assert.equal((await atKomoju(store, order.orderId)).payment?.status, 'captured');

    const other = await placeOrder(store, code, 2);
    await comeBack(store, await payByCard(other.sessionUrl), other.token);
    assert.equal((await view(store, other.token)).state, 'authorized');
    const cancel = await admin(store, 'POST', `/orders/${other.number}/cancel`);
    assert.equal(cancel.status, 202, await cancel.text());
    await eventually(async () => assert.equal((await view(store, other.token)).state, 'cancelled'), 10_000);
    assert.equal((await atKomoju(store, other.orderId)).payment?.status, 'cancelled');
    assert.deepEqual(await sku(store, code), { on_hand: 3, reserved: 0 });
  });

  it('a session left unpaid is cancelled at KOMOJU by the operator; the order is cancelled and its stock freed', async () => {
    const code = await product(store, 2, 800);
    const order = await placeOrder(store, code, 2);
    const cancel = await admin(store, 'POST', `/orders/${order.number}/cancel`);
    assert.equal(cancel.status, 202, await cancel.text());
    await eventually(async () => assert.equal((await view(store, order.token)).state, 'cancelled'), 10_000);
    assert.equal((await atKomoju(store, order.orderId)).session.status, 'cancelled');
    assert.deepEqual(await sku(store, code), { on_hand: 2, reserved: 0 });
  });
});
