/**
 * SBPS link type through the whole store, over real HTTP on loopback: the checkout hands the
 * browser a signed Shift_JIS form, the browser (fetch) posts it to the SBPS simulator, walks its
 * payment screens, and posts the signed return form back to the store; the simulator sends the
 * result CGI to /webhooks/sbps/:shop and answers the XML API the refund and capture jobs call.
 * Where a test needs a notification SBPS would send but the simulator will not (a forged one, a
 * replay, an amount that does not match), it is built with the library's own encoder and the
 * sandbox merchant's derived hash key, exactly as SBPS would put it on the wire.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import Fastify, { type FastifyInstance } from 'fastify';
import { createProduct } from '../../src/commerce/catalog.js';
import { SBPS_SANDBOX_MERCHANT, sandboxSecret, setShopSettings } from '../../src/commerce/shops.js';
import type { Config } from '../../src/config.js';
import { sjisUrlEncode } from '../../src/gateways/common/sjis.js';
import { encodeMessage, orderedEntries, orderedValues, parseMessage, sbpsHash, sbpsXmlApi, verifyMessage } from '../../src/gateways/sbps/index.js';
import { jstTimestamp } from '../../src/gateways/sbps/xml-api.js';
import { sbpsSandbox } from '../../src/sandbox/sbps.js';
import { buyThroughShop, FormClient } from '../helpers/browser.js';
import { forEachEngine } from '../helpers/db.js';
import { eventually } from '../helpers/eventually.js';
import { ADMIN_TOKEN, attempts, notificationsApplied, onlyAttempt, sku, startStore, type TestStore } from '../helpers/store.js';

const ROOT = join(import.meta.dirname, '../..');
const CARD_OK = '4111111111111111';
const CARD_DECLINED = '4000000000000002';
const CARD_3DS = '4000000000003220';

// ---------------------------------------------------------------- the shop's SBPS credentials (sandbox)

const hashKeyOf = (config: Config) => sandboxSecret(config, 'sbps');
const apiPasswordOf = (config: Config) => sandboxSecret(config, 'sbps-api');
const keyOf = (store: TestStore) => hashKeyOf(store.rt.ctx.config);

/** kessai's own XML API client pointed at a simulator with the sandbox merchant's credentials. */
function sbpsApi(config: Config, simulatorBase: string) {
  return sbpsXmlApi({
    url: `${simulatorBase}/api/xmlapi.do`,
    basicAuth: { user: `${SBPS_SANDBOX_MERCHANT.merchantId}${SBPS_SANDBOX_MERCHANT.serviceId}`, password: apiPasswordOf(config) },
    merchantId: SBPS_SANDBOX_MERCHANT.merchantId,
    serviceId: SBPS_SANDBOX_MERCHANT.serviceId,
    hashKey: hashKeyOf(config),
  });
}

// ---------------------------------------------------------------- the customer's browser

interface FormAction {
  type: 'form';
  action: string;
  charset: string;
  fields: [string, string][];
}
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
  form: FormAction;
}

const field = (pairs: readonly [string, string][], name: string): string | undefined => pairs.find(([n]) => n === name)?.[1];
const sjisBody = (pairs: readonly [string, string][]) => Buffer.from(sjisUrlEncode(pairs), 'latin1');

function unescapeHtml(s: string): string {
  const named: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };
  return s.replace(/&(#x[0-9a-f]+|#\d+|[a-z]+);/gi, (m, e: string) => {
    if (e[0] === '#') return String.fromCodePoint(e[1] === 'x' || e[1] === 'X' ? parseInt(e.slice(2), 16) : Number(e.slice(1)));
    return named[e.toLowerCase()] ?? m;
  });
}

/** The hidden inputs of a form, as a browser would submit them. */
function hiddenInputs(formHtml: string): [string, string][] {
  return [...formHtml.matchAll(/<input type="hidden" name="([^"]*)" value="([^"]*)">/g)].map((m): [string, string] => [unescapeHtml(m[1]!), unescapeHtml(m[2]!)]);
}

async function product(store: TestStore, stock: number, price: number): Promise<string> {
  const code = `sbps-${randomBytes(4).toString('hex')}`;
  await createProduct(store.rt.ctx, 'default', { code, name: `ライブ参加券 ${code}`, kind: 'ticket', price, stock });
  return code;
}

async function placeOrder(store: TestStore, sku: string, quantity = 1, payment: Record<string, string> = { provider: 'sbps' }): Promise<Placed> {
  const res = await fetch(`${store.url}/api/checkout`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ shop: 'default', customer: { email: 'taro@example.jp', name: '山田 太郎' }, lines: [{ sku, quantity }], payment }),
  });
  const body = (await res.json()) as { order: OrderView; orderToken: string; payment: FormAction | null; paymentError?: unknown };
  assert.equal(res.status, 201, JSON.stringify(body));
  assert.ok(body.payment, `no payment action: ${JSON.stringify(body.paymentError)}`);
  assert.equal(body.payment.type, 'form');
  const row = await store.rt.ctx.db.selectFrom('orders').select('id').where('number', '=', body.order.number).executeTakeFirstOrThrow();
  return { token: body.orderToken, number: body.order.number, orderId: row.id, total: body.order.total, form: body.payment };
}

/** The customer pays again for an open order (POST /api/orders/:token/payments). */
async function payAgain(store: TestStore, token: string): Promise<FormAction> {
  const res = await fetch(`${store.url}/api/orders/${token}/payments`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ provider: 'sbps' }) });
  const body = (await res.json()) as { payment: FormAction };
  assert.equal(res.status, 201, JSON.stringify(body));
  assert.equal(body.payment.type, 'form');
  return body.payment;
}

/** The auto-submitting hand-off: the fields go to SBPS as urlencoded Shift_JIS; SBPS redirects to its payment screen. */
async function openPaymentScreen(form: FormAction): Promise<{ url: URL; html: string }> {
  assert.equal(form.charset, 'Shift_JIS');
  const res = await fetch(form.action, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: sjisBody(form.fields), redirect: 'manual' });
  const text = await res.text();
  assert.equal(res.status, 303, `SBPS refused the purchase request: ${text.slice(-800)}`);
  const url = new URL(res.headers.get('location')!, form.action);
  assert.match(url.pathname, /\/sandbox\/sbps\/pay\/[0-9a-f]{32}$/);
  const page = await fetch(url);
  assert.equal(page.status, 200);
  return { url, html: await page.text() };
}

/** Presses the button of the form on `html` whose action ends in `/${suffix}`; answers SBPS's redirect. */
async function press(html: string, pageUrl: URL, suffix: string, form: Record<string, string> = {}): Promise<URL> {
  const action = new RegExp(`action="([^"]*/${suffix})"`).exec(html)?.[1];
  assert.ok(action, `no form posting to .../${suffix} on the page`);
  const res = await fetch(new URL(unescapeHtml(action), pageUrl), {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(form).toString(),
    redirect: 'manual',
  });
  const text = await res.text();
  assert.equal(res.status, 303, `pressing ${suffix}: HTTP ${res.status} ${text.slice(-500)}`);
  return new URL(res.headers.get('location')!, pageUrl);
}

type Choice = { card: string; password?: string } | { webcvs: string } | { wallet: string } | { cancel: true };

/** Everything the customer does on SBPS's screens; answers the return page SBPS sends the browser to. */
async function payAtSbps(form: FormAction, choice: Choice): Promise<URL> {
  const screen = await openPaymentScreen(form);
  if ('cancel' in choice) return press(screen.html, screen.url, 'cancel');
  if ('webcvs' in choice) return press(screen.html, screen.url, 'webcvs', { store: choice.webcvs });
  if ('wallet' in choice) return press(screen.html, screen.url, 'wallet', { method: choice.wallet });
  let next = await press(screen.html, screen.url, 'card', { cc_number: choice.card });
  if (next.pathname.endsWith('/3ds')) {
    const challenge = await (await fetch(next)).text();
    next = await press(challenge, next, '3ds', { password: choice.password ?? '' });
  }
  assert.match(next.pathname, /\/return$/);
  return next;
}

/** SBPS's return page: its signed form (accept-charset Shift_JIS), to post back to the store. */
async function returnForm(returnPage: URL): Promise<{ html: string; action: string; pairs: [string, string][] }> {
  const res = await fetch(returnPage);
  const html = await res.text();
  assert.equal(res.status, 200);
  const form = /<form method="post" action="([^"]*)" accept-charset="Shift_JIS" id="sbps-return">([\s\S]*?)<\/form>/.exec(html);
  assert.ok(form, 'no return form on the SBPS page');
  return { html, action: unescapeHtml(form[1]!), pairs: hiddenInputs(form[2]!) };
}

/** The browser posts SBPS's return form to the store, as Shift_JIS; the store answers 303 to the order page. */
async function postReturn(store: TestStore, token: string, action: string, pairs: [string, string][]): Promise<void> {
  assert.ok(action.startsWith(`${store.url}/orders/${token}/return`), `return goes to ${action}`);
  const res = await fetch(action, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: sjisBody(pairs), redirect: 'manual' });
  await res.arrayBuffer();
  assert.equal(res.status, 303);
  // The cancel screen's return says so to the order page (wording only).
  assert.match(res.headers.get('location') ?? '', new RegExp(`^/orders/${token}(\\?cancelled=1)?$`));
}

async function comeBack(store: TestStore, token: string, returnPage: URL): Promise<[string, string][]> {
  const { action, pairs } = await returnForm(returnPage);
  await postReturn(store, token, action, pairs);
  return pairs;
}

async function view(store: TestStore, token: string): Promise<OrderView> {
  const res = await fetch(`${store.url}/api/orders/${token}`);
  assert.equal(res.status, 200);
  return ((await res.json()) as { order: OrderView }).order;
}

async function orderPage(store: TestStore, token: string): Promise<string> {
  const res = await fetch(`${store.url}/orders/${token}`);
  assert.equal(res.status, 200);
  return res.text();
}

async function simulatorFaults(base: string, faults: Record<string, unknown>): Promise<void> {
  const res = await fetch(`${base}/api/faults`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(faults) });
  assert.equal(res.status, 200, await res.text());
}

async function admin(store: TestStore, method: string, path: string, body?: unknown): Promise<Response> {
  return fetch(`${store.url}/api/admin${path}`, {
    method,
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
}

// ---------------------------------------------------------------- SBPS's side of the wire

let trackingSeq = 0;
const freshTrackingId = () => `9${String(randomInt(0, 1e6)).padStart(6, '0')}${String(++trackingSeq).padStart(7, '0')}`;

/**
 * A result CGI body as SBPS sends it for `form` (the purchase request it answers): the request's
 * echoed fields in result order plus the res_* fields, urlencoded Shift_JIS, random field order,
 * uppercase hash over `hashKey`.
 */
function resultBody(form: FormAction, res: Record<string, string>, hashKey: string): Buffer {
  const merged: Record<string, string> = {
    ...Object.fromEntries(form.fields),
    res_pay_method: 'credit',
    res_result: 'OK',
    res_tracking_id: freshTrackingId(),
    res_sps_cust_no: '',
    res_sps_payment_no: '',
    res_payinfo_key: '',
    res_payment_date: jstTimestamp(),
    res_err_code: '',
    res_date: jstTimestamp(),
    ...res,
  };
  const names = orderedEntries('result', { fields: {}, details: [] }).map(([name]) => name);
  const fields = Object.fromEntries(names.map((name) => [name, merged[name] ?? '']));
  return encodeMessage('result', { fields, details: [] }, hashKey, { shuffle: Math.random, uppercaseHash: true });
}

interface Answer {
  status: number;
  contentType: string;
  bytes: Buffer;
  text: string;
}

async function notify(store: TestStore, body: Buffer, opts: { shop?: string; headers?: Record<string, string> } = {}): Promise<Answer> {
  const res = await fetch(`${store.url}/webhooks/sbps/${opts.shop ?? 'default'}`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded; charset=Shift_JIS', 'user-agent': 'SBPS', ...opts.headers },
    body,
  });
  const bytes = Buffer.from(await res.arrayBuffer());
  return { status: res.status, contentType: res.headers.get('content-type') ?? '', bytes, text: bytes.toString('latin1') };
}

/** SBPS's expectations of an answer: HTTP 200, text/plain Shift_JIS, `OK,` or `NG,` plus at most 100 characters. */
function assertAnswer(answer: Answer, head: 'OK' | 'NG'): void {
  assert.equal(answer.status, 200, `HTTP ${answer.status}: ${answer.text}`);
  assert.match(answer.contentType, /^text\/plain;\s*charset=Shift_JIS$/i);
  assert.ok(answer.text.startsWith(`${head},`), `answer ${JSON.stringify(answer.text)}, expected ${head},`);
  assert.ok(answer.bytes.length <= 103, `answer is ${answer.bytes.length} bytes: ${answer.text}`);
  if (head === 'OK') assert.equal(answer.text, 'OK,');
}

// ---------------------------------------------------------------- what the store did


async function mailJobs(store: TestStore, orderId: string, template: string) {
  const jobs = await store.rt.ctx.db.selectFrom('jobs').select('payload').where('kind', '=', 'mail.send').execute();
  return jobs.filter((j) => {
    const p = JSON.parse(j.payload) as { orderId: string; template: string };
    return p.orderId === orderId && p.template === template;
  });
}

async function orderStates(store: TestStore, orderId: string): Promise<string[]> {
  const rows = await store.rt.ctx.db.selectFrom('state_changes').select('to_state').where('entity_id', '=', orderId).execute();
  return rows.map((r) => r.to_state).sort();
}

/**
 * Everything a notification could change, to show that one changed nothing. Jobs and state changes
 * are those of this order (the worker's schedules may add their own at any time); events and
 * alerts are counted over the whole store, so a fact filed under an unknown attempt shows too.
 */
async function snapshot(store: TestStore, order: Placed, code: string) {
  const db = store.rt.ctx.db;
  const o = await db.selectFrom('orders').select(['state', 'hold_reason', 'fulfilled', 'stock_committed', 'stock_released', 'current_attempt_id']).where('id', '=', order.orderId).executeTakeFirstOrThrow();
  const mine = await attempts(store, order.orderId);
  const ids = [order.orderId, ...mine.map((a) => a.id)];
  const count = async (table: 'payment_events' | 'alerts') => Number((await db.selectFrom(table).select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow()).n);
  const jobs = (await db.selectFrom('jobs').select(['kind', 'payload']).execute()).filter((j) => ids.some((id) => j.payload.includes(id)));
  const changes = await db.selectFrom('state_changes').select(['entity_id', 'to_state']).where('entity_id', 'in', ids).execute();
  return {
    order: { ...o, fulfilled: Number(o.fulfilled), stock_committed: Number(o.stock_committed), stock_released: Number(o.stock_released) },
    attempts: mine.map((a) => ({ state: a.state, captured: a.captured_amount, refunded: a.refunded_amount, gatewayRef: a.gateway_ref, details: a.details })),
    sku: await sku(store, code),
    events: await count('payment_events'),
    alerts: await count('alerts'),
    jobs: jobs.map((j) => j.kind).sort(),
    stateChanges: changes.length,
  };
}

// ---------------------------------------------------------------- the tests

forEachEngine('SBPS link type through the store', (engine) => {
  let store: TestStore;
  let sim: string;
  before(async () => {
    store = await startStore(engine);
    sim = `${store.url}/sandbox/sbps`;
    store.startWorker();
  });
  after(async () => {
    await store?.close();
  });
  afterEach(async () => {
    await simulatorFaults(sim, { notification: 'deliver', browserReturn: 'send', delayMs: 1_000 });
    await setShopSettings(store.rt.ctx, 'default', { 'sbps.allowedIps': '' });
  });

  it('checkout API: a signed Shift_JIS form for the sandbox SBPS, one order_id per attempt, the hash key nowhere', async () => {
    const code = await product(store, 10, 1500);
    const res = await fetch(`${store.url}/api/checkout`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ shop: 'default', customer: { email: 'taro@example.jp', name: '山田 太郎' }, lines: [{ sku: code, quantity: 2 }], payment: { provider: 'sbps' } }),
    });
    const raw = await res.text();
    assert.equal(res.status, 201, raw);
    const body = JSON.parse(raw) as { order: OrderView; orderToken: string; payment: FormAction };
    const { payment: form, order, orderToken } = body;
    assert.equal(order.state, 'pending_payment');
    assert.equal(order.total, 3000);
    assert.equal(form.type, 'form');
    assert.equal(form.charset, 'Shift_JIS');
    assert.equal(form.action, `${store.url}/sandbox/sbps/f01/FepBuyInfoReceive.do`);

    const row = await store.rt.ctx.db.selectFrom('orders').select('id').where('number', '=', order.number).executeTakeFirstOrThrow();
    const attempt = await onlyAttempt(store, row.id);
    const f = form.fields;
    assert.ok(Array.isArray(f) && f.every((p) => Array.isArray(p) && p.length === 2 && typeof p[0] === 'string' && typeof p[1] === 'string'), 'fields are [name, value] pairs');
    assert.equal(field(f, 'order_id'), attempt.merchant_ref);
    assert.equal(field(f, 'amount'), '3000');
    assert.equal(field(f, 'merchant_id'), '30132');
    assert.equal(field(f, 'service_id'), '001');
    assert.equal(field(f, 'pagecon_url'), `${store.url}/webhooks/sbps/default`);
    for (const name of ['success_url', 'error_url', 'cancel_url']) {
      assert.ok(field(f, name)?.startsWith(`${store.url}/orders/${orderToken}/return?attempt=${attempt.id}`), `${name} = ${field(f, name)}`);
    }
    assert.match(field(f, 'request_date') ?? '', /^\d{14}$/);
    assert.match(field(f, 'limit_second') ?? '', /^\d+$/);

    const hash = field(f, 'sps_hashcode') ?? '';
    assert.match(hash, /^[0-9a-fA-F]{40}$/);
    assert.equal(f.at(-1)?.[0], 'sps_hashcode', 'the hash comes after the hashed fields');
    const key = keyOf(store);
    const values = f.filter(([name]) => name !== 'sps_hashcode').map(([, value]) => value);
    assert.equal(sbpsHash('request', values, key), hash.toLowerCase(), 'SHA-1 over the values in form order plus the sandbox hash key');
    const verified = verifyMessage('request', sjisBody(f), key);
    assert.ok(verified.valid, `request hash: expected ${verified.expected}, got ${verified.received}`);
    assert.equal(verifyMessage('request', sjisBody(f), `${key}x`).valid, false);

    for (const [name, value] of f) {
      assert.ok(!value.includes(key), `field ${name} carries the hash key`);
      assert.doesNotMatch(name, /hash_?key/i);
    }
    assert.ok(!raw.includes(key), 'the hash key is nowhere in the checkout answer');
    assert.ok(!raw.includes(apiPasswordOf(store.rt.ctx.config)), 'nor the XML API password');

    // SBPS (the strict simulator) accepts the form as the browser posts it.
    const screen = await openPaymentScreen(form);
    assert.match(screen.html, /3,000/);
    assert.doesNotMatch(screen.html, /hash key must never reach the browser/);
  });

  it('HTML checkout: an auto-submitting hand-off form with accept-charset Shift_JIS that SBPS accepts', async () => {
    const code = await product(store, 10, 1200);
    // As a browser does: through the shop's pages (each form carries its CSRF token), then the confirm post.
    const res = await buyThroughShop(new FormClient(store.url), { sku: code, email: 'hanako@example.jp', name: '佐藤 花子', provider: 'sbps' });
    const html = res.body;
    assert.equal(res.status, 200, html.slice(-800));
    assert.match(res.headers.get('content-type') ?? '', /^text\/html/);
    const handoff = /<form method="post" action="([^"]*)" accept-charset="Shift_JIS" id="handoff">([\s\S]*?)<\/form>/.exec(html);
    assert.ok(handoff, `no Shift_JIS hand-off form:\n${html}`);
    assert.equal(unescapeHtml(handoff[1]!), `${store.url}/sandbox/sbps/f01/FepBuyInfoReceive.do`);
    assert.match(html, /<script src="\/assets\/autosubmit\.js"><\/script>/);
    const script = await (await fetch(`${store.url}/assets/autosubmit.js`)).text();
    assert.match(script, /getElementById\('handoff'\)\?\.submit\(\)/);
    assert.ok(!html.includes(keyOf(store)), 'the hash key never reaches the browser');

    const pairs = hiddenInputs(handoff[2]!);
    assert.equal(field(pairs, 'amount'), '1200');
    assert.ok(verifyMessage('request', sjisBody(pairs), keyOf(store)).valid, 'the rendered form still verifies once the browser has decoded it');
    const screen = await openPaymentScreen({ type: 'form', action: unescapeHtml(handoff[1]!), charset: 'Shift_JIS', fields: pairs });
    assert.match(screen.html, /1,200/);
  });

  it('a product name SBPS cannot take (platform characters, half-width kana, emoji) still pays', async () => {
    const code = `sbps-${randomBytes(4).toString('hex')}`;
    await createProduct(store.rt.ctx, 'default', { code, name: 'ﾗｲﾌﾞ①〜東京 髙島屋㈱ 🎫 "特典" <付き> & more, 2026～', kind: 'ticket', price: 5000, stock: 3 });
    const order = await placeOrder(store, code);
    const itemName = field(order.form.fields, 'item_name') ?? '';
    assert.ok(itemName.includes('ライブ'), `half-width katakana made full-width: ${itemName}`);
    assert.ok(verifyMessage('request', sjisBody(order.form.fields), keyOf(store)).valid, 'verifyMessage(\'request\', sjisBody(order.form.fields), keyOf(store)).valid');
    await comeBack(store, order.token, await payAtSbps(order.form, { card: CARD_OK }));
    await eventually(async () => assert.equal((await view(store, order.token)).state, 'paid'));
  });

  it('card: the result CGI marks the order paid and commits the stock once; the signed return lands on the order page', async () => {
    const code = await product(store, 10, 2000);
    const order = await placeOrder(store, code, 2);
    assert.deepEqual(await sku(store, code), { on_hand: 10, reserved: 2 });

    const returnPage = await payAtSbps(order.form, { card: CARD_OK });
    await eventually(async () => assert.equal((await view(store, order.token)).state, 'paid'));
    const attempt = await onlyAttempt(store, order.orderId);
    assert.equal(attempt.state, 'captured');
    assert.equal(attempt.captured_amount, 4000);
    assert.match(attempt.gateway_ref ?? '', /^\d{14}$/, 'the SBPS tracking id is kept');
    const events = await store.rt.ctx.db.selectFrom('payment_events').selectAll().where('attempt_id', '=', attempt.id).execute();
    assert.deepEqual(events.map((e) => [e.source, e.fact_type, e.outcome, e.amount]), [['notification', 'captured', 'applied', 4000]]);
    assert.deepEqual(await sku(store, code), { on_hand: 8, reserved: 0 }, 'stock committed');
    assert.equal((await mailJobs(store, order.orderId, 'order_paid')).length, 1);

    const { action, pairs } = await returnForm(returnPage);
    assert.equal(field(pairs, 'res_result'), 'OK');
    assert.ok(verifyMessage('return', sjisBody(pairs), keyOf(store)).valid, 'SBPS signed the return');
    await postReturn(store, order.token, action, pairs);
    const page = await orderPage(store, order.token);
    assert.ok(page.includes('お支払い完了 / Paid'), 'the order page says paid');
    assert.ok(page.includes(order.number), 'page.includes(order.number)');

    assert.equal((await view(store, order.token)).state, 'paid', 'the return moved nothing');
    assert.deepEqual(await sku(store, code), { on_hand: 8, reserved: 0 });
    assert.equal((await mailJobs(store, order.orderId, 'order_paid')).length, 1);
    assert.deepEqual(await orderStates(store, order.orderId), ['paid', 'pending_payment']);
  });

  it('3-D Secure: the challenge passed with the password, the order is paid', async () => {
    const code = await product(store, 5, 3300);
    const order = await placeOrder(store, code);
    const returnPage = await payAtSbps(order.form, { card: CARD_3DS, password: '1234' });
    await eventually(async () => assert.equal((await view(store, order.token)).state, 'paid'));
    await comeBack(store, order.token, returnPage);
    assert.deepEqual(await sku(store, code), { on_hand: 4, reserved: 0 });
  });

  it('decline: the order stays open with the SBPS error code; paying again with a fresh order_id succeeds', async () => {
    const code = await product(store, 10, 2200);
    const order = await placeOrder(store, code);
    const returnPage = await payAtSbps(order.form, { card: CARD_DECLINED });
    await eventually(async () => assert.equal((await view(store, order.token)).payment?.state, 'failed'));
    const declined = await view(store, order.token);
    assert.equal(declined.state, 'pending_payment');
    assert.equal(declined.payment?.details.error, '10123999', JSON.stringify(declined.payment));
    assert.deepEqual(await sku(store, code), { on_hand: 10, reserved: 1 }, 'the stock stays reserved for the retry');

    const back = await returnForm(returnPage);
    assert.equal(field(back.pairs, 'res_result'), 'NG');
    assert.equal(back.action, field(order.form.fields, 'error_url'));
    await postReturn(store, order.token, back.action, back.pairs);
    assert.equal((await view(store, order.token)).state, 'pending_payment');
    assert.match(await orderPage(store, order.token), /action="\/orders\/[^"]+\/pay"/, 'the order page offers to pay again');

    const second = await payAgain(store, order.token);
    const [first] = await attempts(store, order.orderId);
    assert.notEqual(field(second.fields, 'order_id'), field(order.form.fields, 'order_id'), 'a fresh order_id: SBPS refuses a used one (error 96)');
    await comeBack(store, order.token, await payAtSbps(second, { card: CARD_OK }));
    await eventually(async () => assert.equal((await view(store, order.token)).state, 'paid'));
    const [failed, paid] = await attempts(store, order.orderId);
    assert.equal(failed?.id, first?.id);
    assert.equal(failed?.state, 'failed');
    assert.equal(paid?.state, 'captured');
    assert.equal(paid?.merchant_ref, field(second.fields, 'order_id'));
    assert.deepEqual(await sku(store, code), { on_hand: 9, reserved: 0 });

    // The old NG arriving again after the order was paid changes nothing.
    const [ngEvent] = await store.rt.ctx.db.selectFrom('payment_events').select('payload').where('attempt_id', '=', failed!.id).execute();
    const before = await snapshot(store, order, code);
    const replay = encodeMessage('result', { fields: JSON.parse(ngEvent!.payload) as Record<string, string>, details: [] }, keyOf(store), { shuffle: Math.random, uppercaseHash: true });
    assertAnswer(await notify(store, replay), 'OK');
    await notificationsApplied(store);
    assert.deepEqual(await snapshot(store, order, code), before);
  });

  it('convenience store: OK waits for the deposit, PY pays the order', async () => {
    const code = await product(store, 10, 1800);
    const order = await placeOrder(store, code, 1, { provider: 'sbps', method: 'webcvs' });
    assert.equal(field(order.form.fields, 'pay_method'), 'webcvs');
    const returnPage = await payAtSbps(order.form, { webcvs: 'lawson' });
    await eventually(async () => assert.equal((await view(store, order.token)).state, 'awaiting_payment'));
    const attempt = await onlyAttempt(store, order.orderId);
    assert.equal(attempt.state, 'awaiting_payment');
    // SBPS shows the payment number on its own screen and mails it; the store says where to find it.
    const orderPage = await (await fetch(`${store.url}/orders/${order.token}`)).text();
    assert.ok(orderPage.includes('決済画面と決済サービスからのメールでご案内しています'), 'the order page says where the payment number is');
    assert.deepEqual(await sku(store, code), { on_hand: 10, reserved: 1 }, 'still only reserved');
    assert.equal((await mailJobs(store, order.orderId, 'order_paid')).length, 0);

    const back = await returnForm(returnPage);
    assert.match(back.html, /払込番号 \/ Payment number<\/th><td><strong class="number">\d{4}-\d{4}-\d{4}/);
    await postReturn(store, order.token, back.action, back.pairs);
    assert.equal((await view(store, order.token)).state, 'awaiting_payment');

    const paid = await fetch(`${sim}/api/deposit/${attempt.gateway_ref}`, { method: 'POST' });
    assert.equal(paid.status, 200, await paid.text());
    await eventually(async () => assert.equal((await view(store, order.token)).state, 'paid'));
    const done = await onlyAttempt(store, order.orderId);
    assert.equal(done.state, 'captured');
    assert.equal(done.captured_amount, 1800);
    assert.deepEqual(await sku(store, code), { on_hand: 9, reserved: 0 });
    assert.equal((await mailJobs(store, order.orderId, 'order_paid')).length, 1);
  });

  it('the operator is told at once what SBPS cannot do: refund a convenience-store payment, cancel a payment SBPS has not reported', async () => {
    const code = await product(store, 10, 1500);
    const unreported = await placeOrder(store, code, 1, { provider: 'sbps', method: 'webcvs' });
    const cancel = await admin(store, 'POST', `/orders/${unreported.orderId}/cancel`);
    assert.equal(cancel.status, 409);
    const cancelBody = (await cancel.json()) as { error: { code: string; message: string } };
    assert.equal(cancelBody.error.code, 'not_cancellable');
    assert.match(cancelBody.error.message, /SBPS has not reported payment .* yet .* expires by itself when its reservation ends/);

    const order = await placeOrder(store, code, 1, { provider: 'sbps', method: 'webcvs' });
    await payAtSbps(order.form, { webcvs: 'lawson' });
    await eventually(async () => assert.equal((await view(store, order.token)).state, 'awaiting_payment'));
    const attempt = await onlyAttempt(store, order.orderId);
    assert.equal((await fetch(`${sim}/api/deposit/${attempt.gateway_ref}`, { method: 'POST' })).status, 200);
    await eventually(async () => assert.equal((await view(store, order.token)).state, 'paid'));
    const refund = await admin(store, 'POST', `/orders/${order.orderId}/refund`, { amount: 1500 });
    assert.equal(refund.status, 409);
    const refundBody = (await refund.json()) as { error: { code: string; message: string } };
    assert.equal(refundBody.error.code, 'not_refundable');
    assert.match(refundBody.error.message, /pay the money back outside SBPS/);
    assert.deepEqual(await refundJobs(attempt.id), [], 'nothing queued, no job left to die');
    const cancelJobs = await store.rt.ctx.db.selectFrom('jobs').select('payload').where('kind', '=', 'payment.cancel').execute();
    const unreportedAttempt = await onlyAttempt(store, unreported.orderId);
    assert.ok(!cancelJobs.some((j) => j.payload.includes(unreportedAttempt.id)), 'no cancel job queued either');
  });

  it('convenience store: CN (the slip expired) expires the order and gives the stock back', async () => {
    const code = await product(store, 10, 900);
    const order = await placeOrder(store, code, 3, { provider: 'sbps', method: 'webcvs' });
    await comeBack(store, order.token, await payAtSbps(order.form, { webcvs: 'familymart' }));
    await eventually(async () => assert.equal((await view(store, order.token)).state, 'awaiting_payment'));
    assert.deepEqual(await sku(store, code), { on_hand: 10, reserved: 3 });
    const { gateway_ref: trackingId } = await onlyAttempt(store, order.orderId);

    const expired = await fetch(`${sim}/api/expire/${trackingId}`, { method: 'POST' });
    assert.equal(expired.status, 200, await expired.text());
    await eventually(async () => assert.equal((await view(store, order.token)).state, 'expired'));
    assert.equal((await onlyAttempt(store, order.orderId)).state, 'expired');
    assert.deepEqual(await sku(store, code), { on_hand: 10, reserved: 0 }, 'stock released');
    assert.equal((await mailJobs(store, order.orderId, 'order_paid')).length, 0);
    assert.ok((await orderPage(store, order.token)).includes('期限切れ / Expired'), '(await orderPage(store, order.token)).includes(\'期限切れ / Expired\')');
  });

  it('cancel on the SBPS screen: the signed return to cancel_url changes no money state', async () => {
    const code = await product(store, 10, 700);
    const order = await placeOrder(store, code);
    const returnPage = await payAtSbps(order.form, { cancel: true });
    const back = await returnForm(returnPage);
    assert.equal(back.action, field(order.form.fields, 'cancel_url'));
    assert.equal(field(back.pairs, 'res_result'), 'CR');
    const before = await snapshot(store, order, code);
    await postReturn(store, order.token, back.action, back.pairs);
    assert.deepEqual(await snapshot(store, order, code), before);
    assert.equal((await view(store, order.token)).state, 'pending_payment');
  });

  it('the browser back before the notification: "processing" until the result CGI lands, then paid', async () => {
    const code = await product(store, 10, 1600);
    const order = await placeOrder(store, code);
    await simulatorFaults(sim, { notification: 'drop' });
    const back = await returnForm(await payAtSbps(order.form, { card: CARD_OK }));
    await postReturn(store, order.token, back.action, back.pairs);
    assert.equal((await view(store, order.token)).state, 'pending_payment', 'a return is not a fact');
    assert.match(await orderPage(store, order.token), /Waiting for the payment result/);

    // The notification SBPS sends late carries what the return showed.
    const fields = Object.fromEntries(back.pairs.filter(([name]) => name !== 'TOKEN' && name !== 'sps_hashcode'));
    const late = encodeMessage('result', { fields, details: [] }, keyOf(store), { shuffle: Math.random, uppercaseHash: true });
    assertAnswer(await notify(store, late), 'OK');
    await notificationsApplied(store);
    assert.equal((await view(store, order.token)).state, 'paid');
    assert.ok((await orderPage(store, order.token)).includes('お支払い完了 / Paid'), '(await orderPage(store, order.token)).includes(\'お支払い完了 / Paid\')');
    assert.deepEqual(await sku(store, code), { on_hand: 9, reserved: 0 });
  });

  it('duplicate notifications and a replay: one transition, one fulfilment', async () => {
    const code = await product(store, 10, 2500);
    const order = await placeOrder(store, code);
    await simulatorFaults(sim, { notification: 'duplicate' });
    await comeBack(store, order.token, await payAtSbps(order.form, { card: CARD_OK }));
    await eventually(async () => assert.equal((await view(store, order.token)).state, 'paid'));
    const attempt = await onlyAttempt(store, order.orderId);
    const overview = await (await fetch(`${sim}/`)).text();
    assert.match(overview, new RegExp(`${attempt.merchant_ref}[\\s\\S]*?OK: delivered<br>OK: delivered`), 'SBPS sent it twice and both were answered OK');

    const events = await store.rt.ctx.db.selectFrom('payment_events').selectAll().where('attempt_id', '=', attempt.id).execute();
    assert.deepEqual(events.map((e) => e.outcome), ['applied'], 'one event for one SBPS result');
    assert.deepEqual(await orderStates(store, order.orderId), ['paid', 'pending_payment'], 'the order moved to paid once');
    assert.deepEqual(await sku(store, code), { on_hand: 9, reserved: 0 }, 'on_hand decreased once');
    assert.equal((await mailJobs(store, order.orderId, 'order_paid')).length, 1);

    // A replay of the real notification (its stored fields, signed again as SBPS signs them).
    const before = await snapshot(store, order, code);
    const fields = JSON.parse(events[0]!.payload) as Record<string, string>;
    assert.equal(fields.order_id, attempt.merchant_ref);
    const replay = encodeMessage('result', { fields, details: [] }, keyOf(store), { shuffle: Math.random, uppercaseHash: true });
    assert.ok(verifyMessage('result', replay, keyOf(store)).valid, 'verifyMessage(\'result\', replay, keyOf(store)).valid');
    for (let i = 0; i < 3; i++) assertAnswer(await notify(store, replay), 'OK');
    await notificationsApplied(store);
    assert.deepEqual(await snapshot(store, order, code), before, 'nothing changed');
  });

  it('forged, foreign, malformed and unknown notifications change nothing', async () => {
    const code = await product(store, 10, 3100);
    const order = await placeOrder(store, code);
    const key = keyOf(store);
    const before = await snapshot(store, order, code);

    // The hash of another key (a forger who does not know ours).
    const forged = await notify(store, resultBody(order.form, {}, `${key.slice(0, -1)}0`));
    assertAnswer(forged, 'NG');
    // A genuine body whose amount was changed afterwards.
    const genuine = resultBody(order.form, {}, key);
    const tampered = Buffer.from(genuine.toString('latin1').replace(/(^|&)amount=3100(&|$)/, '$1amount=1$2'), 'latin1');
    assert.notDeepEqual(tampered, genuine);
    assertAnswer(await notify(store, tampered), 'NG');
    // No hash at all.
    assertAnswer(await notify(store, Buffer.from(genuine.toString('latin1').replace(/&?sps_hashcode=[0-9A-F]{40}/, ''), 'latin1')), 'NG');
    // Correctly hashed for another merchant / service.
    assertAnswer(await notify(store, resultBody(order.form, { merchant_id: '99999' }, key)), 'NG');
    assertAnswer(await notify(store, resultBody(order.form, { service_id: '002' }, key)), 'NG');
    // Ambiguous: a field sent twice.
    assertAnswer(await notify(store, Buffer.concat([genuine, Buffer.from('&res_result=OK')])), 'NG');
    assertAnswer(await notify(store, Buffer.alloc(0)), 'NG');
    assert.deepEqual(await snapshot(store, order, code), before, 'nothing changed');

    // An unknown shop.
    const unknownShop = await notify(store, genuine, { shop: 'no-such-shop' });
    assert.equal(unknownShop.status, 404);
    // A verified result kessai does not act on: acknowledged so SBPS stops, nothing applied.
    assertAnswer(await notify(store, resultBody(order.form, { res_result: 'ZZ' }, key)), 'OK');
    await notificationsApplied(store);
    assert.deepEqual(await snapshot(store, order, code), before, 'nothing changed');

    // A forged browser return: the customer still sees the order page, the money state does not move.
    const returnPairs = [...orderedEntries('return', parseMessage(genuine).message)];
    const forgedReturn: [string, string][] = [...returnPairs, ['sps_hashcode', 'F'.repeat(40)]];
    await postReturn(store, order.token, field(order.form.fields, 'success_url')!, forgedReturn);
    assert.deepEqual(await snapshot(store, order, code), before, 'a return never moves money');
    assert.equal((await view(store, order.token)).state, 'pending_payment');
  });

  it('result codes CR, CC and CL cancel the order and CN expires it, giving the stock back', async () => {
    const expected: Record<string, [string, string]> = { CR: ['cancelled', 'cancelled'], CC: ['cancelled', 'cancelled'], CL: ['cancelled', 'cancelled'], CN: ['expired', 'expired'] };
    for (const [result, [orderState, paymentState]] of Object.entries(expected)) {
      const code = await product(store, 10, 1100);
      const order = await placeOrder(store, code, 2);
      assertAnswer(await notify(store, resultBody(order.form, { res_result: result, res_payment_date: '' }, keyOf(store))), 'OK');
      await notificationsApplied(store);
      assert.equal((await view(store, order.token)).state, orderState, result);
      assert.equal((await onlyAttempt(store, order.orderId)).state, paymentState, result);
      assert.deepEqual(await sku(store, code), { on_hand: 10, reserved: 0 }, `${result}: stock released`);
      assert.equal((await mailJobs(store, order.orderId, 'order_paid')).length, 0);
    }
  });

  it('an OK result for another amount puts the order on hold: alert, no fulfilment, stock not committed', async () => {
    const code = await product(store, 10, 2000);
    const order = await placeOrder(store, code);
    const answer = await notify(store, resultBody(order.form, { amount: '1000' }, keyOf(store)));
    assertAnswer(answer, 'OK');
    await notificationsApplied(store);
    assert.equal((await view(store, order.token)).state, 'on_hold');
    const attempt = await onlyAttempt(store, order.orderId);
    const [event] = await store.rt.ctx.db.selectFrom('payment_events').selectAll().where('attempt_id', '=', attempt.id).execute();
    assert.equal(event?.outcome, 'amount_mismatch');
    const alerts = await store.rt.ctx.db.selectFrom('alerts').selectAll().where('ref', '=', order.orderId).execute();
    assert.deepEqual(alerts.map((a) => a.kind), ['order_on_hold']);
    assert.match(alerts[0]!.message, /1000/);
    assert.equal((await mailJobs(store, order.orderId, 'order_paid')).length, 0, 'not fulfilled');
    assert.deepEqual(await sku(store, code), { on_hand: 10, reserved: 1 }, 'stock not committed');
    assert.ok((await orderPage(store, order.token)).includes('確認中 / Being checked by the shop'), '(await orderPage(store, order.token)).includes(\'確認中 / Being checked by the shop\')');
  });

  it('IP allow-list: a valid notification from an address not on the list is refused; on the list it is applied', async () => {
    const code = await product(store, 10, 1400);
    const order = await placeOrder(store, code);
    const body = resultBody(order.form, {}, keyOf(store));
    const before = await snapshot(store, order, code);

    await setShopSettings(store.rt.ctx, 'default', { 'sbps.allowedIps': '61.215.213.20' });
    assertAnswer(await notify(store, body), 'NG');
    // Without a trusted proxy, a forwarded-for header is the caller's word, not SBPS's address.
    assertAnswer(await notify(store, body, { headers: { 'x-forwarded-for': '61.215.213.20' } }), 'NG');
    assert.deepEqual(await snapshot(store, order, code), before, 'nothing changed');

    await setShopSettings(store.rt.ctx, 'default', { 'sbps.allowedIps': '61.215.213.20,127.0.0.1' });
    assertAnswer(await notify(store, body), 'OK');
    await notificationsApplied(store);
    assert.equal((await view(store, order.token)).state, 'paid');
    assert.deepEqual(await sku(store, code), { on_hand: 9, reserved: 0 });
  });

  it('operator refunds through the admin API: a partial refund, then the rest, and SBPS agrees', async () => {
    const order = await placeOrder(store, 'demo-ticket');
    assert.equal(order.total, 6800);
    await comeBack(store, order.token, await payAtSbps(order.form, { card: CARD_OK }));
    await eventually(async () => assert.equal((await view(store, order.token)).state, 'paid'));
    const trackingId = (await onlyAttempt(store, order.orderId)).gateway_ref!;
    const api = sbpsApi(store.rt.ctx.config, sim);
    assert.deepEqual(Object.values(pick(await api.inquiry({ payMethod: 'credit', trackingId }))), ['captured', 6800, 0]);

    const partial = await admin(store, 'POST', `/orders/${order.orderId}/refund`, { amount: 300 });
    assert.equal(partial.status, 202, await partial.text());
    await eventually(async () => assert.equal((await view(store, order.token)).state, 'partially_refunded'), 10_000);
    assert.equal((await onlyAttempt(store, order.orderId)).refunded_amount, 300);
    assert.deepEqual(pick(await api.inquiry({ payMethod: 'credit', trackingId })), { status: 'partially_refunded', capturedAmount: 6800, refundedAmount: 300 });

    const tooMuch = await admin(store, 'POST', `/orders/${order.orderId}/refund`, { amount: 6501 });
    assert.equal(tooMuch.status, 400);

    const rest = await admin(store, 'POST', `/orders/${order.orderId}/refund`, { amount: 6500 });
    assert.equal(rest.status, 202, await rest.text());
    await eventually(async () => assert.equal((await view(store, order.token)).state, 'refunded'), 10_000);
    const attempt = await onlyAttempt(store, order.orderId);
    assert.equal(attempt.state, 'refunded');
    assert.equal(attempt.refunded_amount, 6800, 'each refund counted once');
    assert.deepEqual(pick(await api.inquiry({ payMethod: 'credit', trackingId })), { status: 'refunded', capturedAmount: 6800, refundedAmount: 6800 });
    const jobs = await store.rt.ctx.db.selectFrom('jobs').select(['state', 'payload']).where('kind', '=', 'payment.refund').execute();
    const mine = jobs.filter((j) => (JSON.parse(j.payload) as { attemptId: string }).attemptId === attempt.id);
    assert.deepEqual(mine.map((j) => j.state), ['done', 'done']);
    assert.equal((await mailJobs(store, order.orderId, 'refund')).length, 2, 'the customer hears of each refund');
  });

  it('a full refund in one request uses SBPS\'s refund, not a partial one', async () => {
    const code = await product(store, 10, 4400);
    const order = await placeOrder(store, code);
    await comeBack(store, order.token, await payAtSbps(order.form, { card: CARD_OK }));
    await eventually(async () => assert.equal((await view(store, order.token)).state, 'paid'));
    const res = await admin(store, 'POST', `/orders/${order.number}/refund`, { amount: 4400 });
    assert.equal(res.status, 202, await res.text());
    await eventually(async () => assert.equal((await view(store, order.token)).state, 'refunded'), 10_000);
    const attempt = await onlyAttempt(store, order.orderId);
    assert.deepEqual([attempt.state, attempt.refunded_amount], ['refunded', 4400]);
    const atSbps = await sbpsApi(store.rt.ctx.config, sim).inquiry({ payMethod: 'credit', trackingId: attempt.gateway_ref! });
    assert.deepEqual([atSbps.status, atSbps.paymentStatus, atSbps.refundedAmount], ['refunded', '4', 4400]);
  });

  // Refunds by payment method: each goes out with its method's request ids.
  async function paidBy(method: string, price: number): Promise<Placed> {
    const order = await placeOrder(store, await product(store, 10, price), 1, { provider: 'sbps', method });
    assert.equal(field(order.form.fields, 'pay_method'), method);
    await comeBack(store, order.token, await payAtSbps(order.form, { wallet: method }));
    await eventually(async () => assert.equal((await view(store, order.token)).state, 'paid'));
    return order;
  }

  const refundJobs = async (attemptId: string) =>
    (await store.rt.ctx.db.selectFrom('jobs').select(['state', 'attempts', 'payload', 'last_error']).where('kind', '=', 'payment.refund').execute()).filter(
      (j) => (JSON.parse(j.payload) as { attemptId: string }).attemptId === attemptId,
    );

  it("PayPay: the operator's refund goes out as PayPay's refund, and the order ends refunded", async () => {
    const order = await paidBy('paypay', 3600);
    const attempt = await onlyAttempt(store, order.orderId);
    assert.equal(JSON.parse(attempt.details).method, 'paypay', 'SBPS reported the method the customer paid with');
    const res = await admin(store, 'POST', `/orders/${order.orderId}/refund`, { amount: 3600 });
    assert.equal(res.status, 202, await res.text());
    await eventually(async () => assert.equal((await view(store, order.token)).state, 'refunded'), 10_000);
    const refunded = await onlyAttempt(store, order.orderId);
    assert.deepEqual([refunded.state, refunded.refunded_amount], ['refunded', 3600]);
    assert.deepEqual((await refundJobs(attempt.id)).map((j) => j.state), ['done']);
    const atSbps = await sbpsApi(store.rt.ctx.config, sim).inquiry({ payMethod: 'paypay', trackingId: attempt.gateway_ref! });
    assert.deepEqual([atSbps.status, atSbps.refundedAmount], ['refunded', 3600]);
    assert.equal((await mailJobs(store, order.orderId, 'refund')).length, 1, 'the customer hears of the refund');
  });

  it('docomo: refunded with docomo\'s request; a partial refund, which docomo does not have, is refused before anything is queued', async () => {
    const order = await paidBy('docomo', 2000);
    const attempt = await onlyAttempt(store, order.orderId);
    const partial = await admin(store, 'POST', `/orders/${order.orderId}/refund`, { amount: 500 });
    assert.equal(partial.status, 409);
    const body = (await partial.json()) as { error: { code: string; message: string } };
    assert.equal(body.error.code, 'not_refundable');
    assert.match(body.error.message, /docomo payment only in full/);
    assert.deepEqual(await refundJobs(attempt.id), [], 'nothing queued');
    assert.equal((await view(store, order.token)).state, 'paid', 'nothing was refunded');
    assert.deepEqual(pick(await sbpsApi(store.rt.ctx.config, sim).inquiry({ payMethod: 'docomo', trackingId: attempt.gateway_ref! })), { status: 'captured', capturedAmount: 2000, refundedAmount: 0 });

    const whole = await admin(store, 'POST', `/orders/${order.orderId}/refund`, { amount: 2000 });
    assert.equal(whole.status, 202, await whole.text());
    await eventually(async () => assert.equal((await view(store, order.token)).state, 'refunded'), 10_000);
    assert.deepEqual(pick(await sbpsApi(store.rt.ctx.config, sim).inquiry({ payMethod: 'docomo', trackingId: attempt.gateway_ref! })), { status: 'refunded', capturedAmount: 2000, refundedAmount: 2000 });
  });
});

forEachEngine('SBPS IP allow-list behind a trusted proxy (KESSAI_TRUST_PROXY=loopback)', (engine) => {
  let store: TestStore;
  before(async () => {
    store = await startStore(engine, { KESSAI_TRUST_PROXY: 'loopback' });
    await setShopSettings(store.rt.ctx, 'default', { 'sbps.allowedIps': '61.215.213.20' });
  });
  after(async () => {
    await store?.close();
  });

  // The load balancer on 127.0.0.1 appends the address it saw to X-Forwarded-For.
  it('SBPS through the proxy: the forwarded address is on the list, the notification is applied', async () => {
    const code = await product(store, 5, 1000);
    const order = await placeOrder(store, code);
    assertAnswer(await notify(store, resultBody(order.form, {}, keyOf(store)), { headers: { 'x-forwarded-for': '61.215.213.20' } }), 'OK');
    await notificationsApplied(store);
    assert.equal((await view(store, order.token)).state, 'paid');
  });

  it('a caller who writes an allowed address into X-Forwarded-For himself is still refused', async () => {
    const code = await product(store, 5, 1000);
    const order = await placeOrder(store, code);
    const before = await snapshot(store, order, code);
    // The caller (203.0.113.9) sent "X-Forwarded-For: 61.215.213.20"; the proxy appended what it saw.
    const answer = await notify(store, resultBody(order.form, {}, keyOf(store)), { headers: { 'x-forwarded-for': '61.215.213.20, 203.0.113.9' } });
    assertAnswer(answer, 'NG');
    assert.deepEqual(await snapshot(store, order, code), before, 'nothing changed');
  });
});

const pick = (i: { status: string; capturedAmount?: number; refundedAmount?: number }) => ({ status: i.status, capturedAmount: i.capturedAmount, refundedAmount: i.refundedAmount });

forEachEngine('SBPS manual capture (指定売上)', (engine) => {
  let store: TestStore;
  /** A second SBPS simulator whose merchant (same ids and keys) does not capture automatically. */
  let manualSim: FastifyInstance;
  let manualBase: string;
  before(async () => {
    store = await startStore(engine);
    store.startWorker();
    const config = store.rt.ctx.config;
    manualSim = Fastify();
    await manualSim.register(
      sbpsSandbox({
        merchants: [
          {
            ...SBPS_SANDBOX_MERCHANT,
            hashKey: hashKeyOf(config),
            basicAuth: { user: `${SBPS_SANDBOX_MERCHANT.merchantId}${SBPS_SANDBOX_MERCHANT.serviceId}`, password: apiPasswordOf(config) },
            autoCapture: false,
          },
        ],
        notificationRetryDelaysMs: [50, 100, 200],
        notificationTimeoutMs: 5_000,
      }),
      { prefix: '/sandbox/sbps' },
    );
    await manualSim.listen({ host: '127.0.0.1', port: 0 });
    manualBase = `http://127.0.0.1:${(manualSim.server.address() as AddressInfo).port}/sandbox/sbps`;
  });
  after(async () => {
    await manualSim?.close();
    await store?.close();
  });
  afterEach(async () => {
    await setShopSettings(store.rt.ctx, 'default', { 'sbps.captureMode': '', 'sbps.gatewayUrl': '', 'sbps.apiUrl': '' });
  });

  it('card → authorized; the operator captures the total → paid, and SBPS shows it captured', async () => {
    await setShopSettings(store.rt.ctx, 'default', {
      'sbps.captureMode': 'manual',
      'sbps.gatewayUrl': `${manualBase}/f01/FepBuyInfoReceive.do`,
      'sbps.apiUrl': `${manualBase}/api/xmlapi.do`,
    });
    const code = await product(store, 10, 2400);
    const order = await placeOrder(store, code);
    assert.equal(order.form.action, `${manualBase}/f01/FepBuyInfoReceive.do`, "the shop's configured SBPS URL");
    await comeBack(store, order.token, await payAtSbps(order.form, { card: CARD_OK }));
    await eventually(async () => assert.equal((await view(store, order.token)).state, 'authorized'));
    const attempt = await onlyAttempt(store, order.orderId);
    assert.equal(attempt.state, 'authorized');
    assert.equal(attempt.captured_amount, 0);
    assert.deepEqual(await sku(store, code), { on_hand: 10, reserved: 1 }, 'nothing committed before the capture');
    assert.equal((await mailJobs(store, order.orderId, 'order_paid')).length, 0);
    const api = sbpsApi(store.rt.ctx.config, manualBase);
    assert.deepEqual(pick(await api.inquiry({ payMethod: 'credit', trackingId: attempt.gateway_ref! })), { status: 'authorized', capturedAmount: 0, refundedAmount: 0 });

    const capture = await admin(store, 'POST', `/orders/${order.orderId}/capture`, { amount: order.total });
    assert.equal(capture.status, 202, await capture.text());
    await eventually(async () => assert.equal((await view(store, order.token)).state, 'paid'), 10_000);
    const captured = await onlyAttempt(store, order.orderId);
    assert.equal(captured.state, 'captured');
    assert.equal(captured.captured_amount, 2400);
    assert.deepEqual(pick(await api.inquiry({ payMethod: 'credit', trackingId: attempt.gateway_ref! })), { status: 'captured', capturedAmount: 2400, refundedAmount: 0 });
    assert.deepEqual(await sku(store, code), { on_hand: 9, reserved: 0 });
    assert.equal((await mailJobs(store, order.orderId, 'order_paid')).length, 1);
  });

  it('an authorized payment the operator cancels: voided at SBPS, the order cancelled, the stock back', async () => {
    await setShopSettings(store.rt.ctx, 'default', {
      'sbps.captureMode': 'manual',
      'sbps.gatewayUrl': `${manualBase}/f01/FepBuyInfoReceive.do`,
      'sbps.apiUrl': `${manualBase}/api/xmlapi.do`,
    });
    const code = await product(store, 10, 1900);
    const order = await placeOrder(store, code, 2);
    await comeBack(store, order.token, await payAtSbps(order.form, { card: CARD_OK }));
    await eventually(async () => assert.equal((await view(store, order.token)).state, 'authorized'));
    const { gateway_ref: trackingId } = await onlyAttempt(store, order.orderId);

    const tooMuch = await admin(store, 'POST', `/orders/${order.orderId}/capture`, { amount: order.total + 1 });
    assert.equal(tooMuch.status, 400, 'a capture above the authorisation is refused before anything is queued');
    const cancel = await admin(store, 'POST', `/orders/${order.orderId}/cancel`);
    assert.equal(cancel.status, 202, await cancel.text());
    await eventually(async () => assert.equal((await view(store, order.token)).state, 'cancelled'), 10_000);
    assert.equal((await onlyAttempt(store, order.orderId)).state, 'cancelled');
    assert.equal((await sbpsApi(store.rt.ctx.config, manualBase).inquiry({ payMethod: 'credit', trackingId: trackingId! })).status, 'cancelled');
    assert.deepEqual(await sku(store, code), { on_hand: 10, reserved: 0 }, 'stock released');
    assert.equal((await mailJobs(store, order.orderId, 'order_paid')).length, 0);
  });

  it('manual capture set in kessai while the SBPS contract captures automatically: the capture reads back "captured" and the order is paid once', async () => {
    // The in-process simulator's merchant is auto-capture (runtime.ts mounts it with the default).
    await setShopSettings(store.rt.ctx, 'default', { 'sbps.captureMode': 'manual' });
    const code = await product(store, 10, 1300);
    const order = await placeOrder(store, code);
    assert.equal(order.form.action, `${store.url}/sandbox/sbps/f01/FepBuyInfoReceive.do`);
    await comeBack(store, order.token, await payAtSbps(order.form, { card: CARD_OK }));
    await eventually(async () => assert.equal((await view(store, order.token)).state, 'authorized'));
    const capture = await admin(store, 'POST', `/orders/${order.orderId}/capture`, { amount: order.total });
    assert.equal(capture.status, 202);
    await eventually(async () => assert.equal((await view(store, order.token)).state, 'paid'), 10_000);
    assert.deepEqual(await sku(store, code), { on_hand: 9, reserved: 0 });
    assert.equal((await mailJobs(store, order.orderId, 'order_paid')).length, 1);
  });
});

describe('kessai sbps verify (CLI)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kessai-sbps-verify-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const key = sandboxSecret({ masterKey: Buffer.alloc(32) } as Config, 'sbps');

  const fields: Record<string, string> = {
    pay_method: 'credit3d2',
    merchant_id: '30132',
    service_id: '001',
    cust_code: 'reg_sps0001',
    order_id: 'KS-VERIFY-0001',
    item_id: 'KS-0001',
    item_name: 'デモ シングルCD「決済の歌」',
    amount: '1320',
    pay_type: '0',
    service_type: '0',
    terminal_type: '0',
    request_date: '20260101120000',
    res_pay_method: 'credit3d2',
    res_result: 'OK',
    res_tracking_id: '12345678901234',
    res_payment_date: '20260101120130',
    res_date: '20260101120131',
    limit_second: '600',
  };
  const body = encodeMessage('result', { fields, details: [] }, key, { shuffle: Math.random, uppercaseHash: true });
  const file = join(dir, 'result.body');
  writeFileSync(file, body);

  const verify = (hashKey: string) => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'sbps', 'verify', '--hash-key', hashKey, '--kind', 'result', file], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? '', LOG_LEVEL: 'warn', KESSAI_DATA_DIR: dir, DATABASE_URL: join(dir, 'kessai.db') },
      encoding: 'utf8',
      timeout: 60_000,
    });
    return { code: r.status, out: r.stdout, err: r.stderr };
  };

  it('valid with the right key: exit 0, the key never printed', () => {
    const r = verify(key);
    assert.equal(r.code, 0, r.out + r.err);
    assert.match(r.out, /^valid\n/);
    const expected = sbpsHash('result', orderedValues('result', { fields, details: [] }), key);
    assert.match(r.out, new RegExp(`^expected: ${expected}$`, 'm'));
    assert.ok(!r.out.includes(key) && !r.err.includes(key), 'the hash key is masked');
  });

  it('invalid with a wrong key: non-zero exit, both hashes, the key masked', () => {
    const wrong = `${key.slice(0, 20)}${'0'.repeat(20)}`;
    const r = verify(wrong);
    assert.notEqual(r.code, 0);
    assert.match(r.out, /^invalid\n/);
    const expected = sbpsHash('result', orderedValues('result', { fields, details: [] }), wrong);
    const received = parseMessage(body).hash;
    assert.match(received, /^[0-9A-F]{40}$/);
    assert.match(r.out, new RegExp(`^expected: ${expected}$`, 'm'));
    assert.match(r.out, new RegExp(`^received: ${received}$`, 'm'));
    assert.match(r.out, /^string: .*デモ シングルCD「決済の歌」.*\*{4}/m, 'the hashed string, with the key masked');
    for (const secret of [wrong, key]) assert.ok(!r.out.includes(secret) && !r.err.includes(secret), 'no full key in the output');
  });
});
