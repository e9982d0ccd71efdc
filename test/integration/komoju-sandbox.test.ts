import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { IncomingHttpHeaders } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import Fastify, { type FastifyInstance } from 'fastify';
import { pino } from 'pino';
import {
  komojuApi,
  KomojuApiError,
  parseKomojuEvent,
  verifyKomojuWebhook,
  type KomojuApi,
  type KomojuEvent,
  type KomojuSession,
  type KomojuSessionCreate,
} from '../../src/gateways/komoju/index.js';
import { komojuSandbox, type KomojuSandboxAccount } from '../../src/sandbox/komoju.js';
import { eventually } from '../helpers/eventually.js';
import { freePort } from '../helpers/net.js';

/*
 * The KOMOJU simulator over real HTTP on loopback, driven the way a shop and a customer drive
 * KOMOJU: the API through kessai's own client, the hosted page walked with fetch (forms found on the
 * page, redirects followed by hand), and a Fastify "shop" receiving webhooks as raw bytes, checked
 * with kessai's own signature verification.
 */

interface Hit {
  hook: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
  event: KomojuEvent;
  status: number;
}

let gateway: FastifyInstance;
let receiver: FastifyInstance;
let origin: string;
let base: string;
let shortBase: string;
let shop: string;
let A: KomojuSandboxAccount;
let B: KomojuSandboxAccount;
let apiA: KomojuApi;
let apiB: KomojuApi;
const hits: Hit[] = [];
/** `<hook>:<session id>` → how many more deliveries the shop answers 500. */
const failures = new Map<string, number>();

before(async () => {
  receiver = Fastify();
  receiver.addContentTypeParser('application/json', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
  receiver.post<{ Params: { hook: string } }>('/hooks/:hook', async (request, reply) => {
    const body = request.body as Buffer;
    const event = parseKomojuEvent(body);
    const key = `${request.params.hook}:${String(event.data.session)}`;
    const left = failures.get(key) ?? 0;
    if (left > 0) failures.set(key, left - 1);
    const status = left > 0 ? 500 : 200;
    hits.push({ hook: request.params.hook, headers: request.headers, body, event, status });
    return reply.status(status).send(status === 200 ? 'ok' : 'not now');
  });
  const receiverPort = await freePort();
  await receiver.listen({ host: '127.0.0.1', port: receiverPort });
  shop = `http://127.0.0.1:${receiverPort}`;

  A = {
    secretKey: 'sk_test_sandbox_account_a',
    webhooks: [
      { url: `${shop}/hooks/a1`, secret: 'whsec_a1' },
      { url: `${shop}/hooks/a2`, secret: 'whsec_a2' },
    ],
  };
  B = { secretKey: 'sk_test_sandbox_account_b', webhooks: [{ url: `${shop}/hooks/b`, secret: 'whsec_b' }] };

  const log = pino({ level: 'silent' });
  gateway = Fastify();
  await gateway.register(komojuSandbox({ accounts: [A, B], log, webhookRetry: { baseDelayMs: 10, maxAttempts: 4, timeoutMs: 2_000 } }), { prefix: '/sandbox/komoju' });
  await gateway.register(komojuSandbox({ accounts: [A], log, konbiniDeadlineMs: 100, webhookRetry: { baseDelayMs: 10 } }), { prefix: '/sandbox/komoju-short' });
  const port = await freePort();
  await gateway.listen({ host: '127.0.0.1', port });
  origin = `http://127.0.0.1:${port}`;
  base = `${origin}/sandbox/komoju`;
  shortBase = `${origin}/sandbox/komoju-short`;
  apiA = komojuApi({ secretKey: A.secretKey, baseUrl: `${base}/api/v1`, retries: 0 });
  apiB = komojuApi({ secretKey: B.secretKey, baseUrl: `${base}/api/v1`, retries: 0 });
});

after(async () => {
  await gateway.close();
  await receiver.close();
});

beforeEach(async () => {
  await setFaults({ duplicate: false, reorder: false, delayMs: 0, dropWebhooks: false, noReturn: false, staleCancel: false, apiDelayMs: 0 });
});

async function setFaults(faults: Record<string, unknown>, at = base): Promise<void> {
  const res = await fetch(`${at}/api/faults`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(faults) });
  assert.equal(res.status, 200, await res.text());
}

let seq = 0;
const orderNum = (): string => `K${process.pid}T${Date.now()}N${++seq}`;
const newKey = (): string => `key-${orderNum()}`;
const expiryYear = String((new Date().getUTCFullYear() + 5) % 100).padStart(2, '0');

function sessionInput(overrides: Partial<KomojuSessionCreate> = {}): KomojuSessionCreate {
  return {
    amount: 1000,
    currency: 'JPY',
    return_url: `${shop}/return?order=42`,
    email: 'taro@example.jp',
    payment_types: ['credit_card', 'konbini'],
    payment_data: { external_order_num: orderNum() },
    metadata: { note: 'test' },
    ...overrides,
  };
}

async function createSession(overrides: Partial<KomojuSessionCreate> = {}, client = apiA): Promise<KomojuSession> {
  return client.sessions.create(sessionInput(overrides), { idempotencyKey: newKey() });
}

/** A JSON API call without the client, to see status and body exactly. */
async function api(method: string, path: string, opts: { key?: string | null; body?: unknown; headers?: Record<string, string>; at?: string } = {}): Promise<{ status: number; json: Record<string, unknown> }> {
  const key = opts.key === undefined ? A.secretKey : opts.key;
  const headers: Record<string, string> = { ...(opts.headers ?? {}) };
  if (key !== null) headers.authorization = `Basic ${Buffer.from(`${key}:`).toString('base64')}`;
  if (opts.body !== undefined && !headers['content-type']) headers['content-type'] = 'application/json';
  const res = await fetch(`${opts.at ?? base}/api/v1${path}`, {
    method,
    headers,
    ...(opts.body !== undefined ? { body: typeof opts.body === 'string' ? opts.body : JSON.stringify(opts.body) } : {}),
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

const errorOf = (json: Record<string, unknown>) => json.error as { code: string; message: string; param: string | null; details: Record<string, unknown> };

async function page(url: string): Promise<string> {
  const res = await fetch(url, { redirect: 'manual' });
  assert.equal(res.status, 200, `GET ${url}`);
  assert.match(res.headers.get('content-type') ?? '', /text\/html/);
  return res.text();
}

const unescape = (s: string): string => s.replace(/&#(\d+);/g, (_m, code: string) => String.fromCharCode(Number(code)));

/** The action of the form with this id on the page, as an absolute URL. */
function formAction(html: string, id: string): string {
  const m = new RegExp(`<form id="${id}" method="post" action="([^"]+)"`).exec(html);
  assert.ok(m, `the page has a form #${id}`);
  return origin + unescape(m[1]!);
}

async function submit(url: string, fields: Record<string, string>): Promise<Response> {
  return fetch(url, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(fields).toString(), redirect: 'manual' });
}

async function payByCard(session: KomojuSession, number: string): Promise<Response> {
  const html = await page(session.session_url);
  return submit(formAction(html, 'pay-credit_card'), { number, month: '12', year: expiryYear, verification_value: '123', name: 'TARO YAMADA' });
}

async function payAtKonbini(session: KomojuSession, fields: Record<string, string> = { store: 'lawson' }): Promise<Response> {
  const html = await page(session.session_url);
  return submit(formAction(html, 'pay-konbini'), fields);
}

/** Where the browser is sent back: the return URL with session_id appended to its query. */
function assertReturn(res: Response, session: KomojuSession): void {
  assert.equal(res.status, 303);
  assert.equal(res.headers.get('location'), `${shop}/return?order=42&session_id=${session.id}`);
}

/** Webhooks the shop accepted for a session, in arrival order. */
const accepted = (sessionId: string, hook = 'a1'): Hit[] => hits.filter((h) => h.hook === hook && h.event.data.session === sessionId && h.status === 200);

async function webhooks(sessionId: string, count: number, hook = 'a1'): Promise<Hit[]> {
  return eventually(async () => {
    const got = accepted(sessionId, hook);
    assert.ok(got.length >= count, `${got.length} of ${count} webhooks for session ${sessionId} on ${hook}: ${got.map((h) => h.event.type).join(', ')}`);
    return got;
  }, 5_000);
}

const types = (list: Hit[]): string[] => list.map((h) => h.event.type);

async function refusedWith(promise: Promise<unknown>, status: number, code: string, param?: string): Promise<KomojuApiError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof KomojuApiError, String(error));
    assert.equal(error.status, status, error.message);
    assert.equal(error.code, code, error.message);
    if (param !== undefined) assert.equal(error.param, param, error.message);
    return error;
  }
  assert.fail(`expected HTTP ${status} ${code}`);
}

describe('auth', () => {
  test('a missing or wrong key, or a password, gets 401 with KOMOJU’s error body', async () => {
    for (const res of [
      await api('GET', '/sessions/abc', { key: null }),
      await api('GET', '/sessions/abc', { key: 'sk_test_wrong' }),
      await api('GET', '/sessions/abc', { key: null, headers: { authorization: `Basic ${Buffer.from(`${A.secretKey}:password`).toString('base64')}` } }),
      await api('POST', '/sessions', { key: 'sk_test_wrong', body: sessionInput() }),
    ]) {
      assert.equal(res.status, 401);
      const error = errorOf(res.json);
      assert.equal(error.code, 'unauthorized');
      assert.match(error.message, /secret key/);
      assert.equal(error.param, null);
      assert.deepEqual(error.details, {});
    }
    const wrong = komojuApi({ secretKey: 'sk_test_wrong', baseUrl: `${base}/api/v1`, retries: 0 });
    await refusedWith(wrong.sessions.get('abc'), 401, 'unauthorized');
  });

  test('one account cannot see another account’s session', async () => {
    const session = await createSession();
    await refusedWith(apiB.sessions.get(session.id), 404, 'not_found');
    assert.equal((await apiA.sessions.get(session.id)).id, session.id);
  });
});

describe('sessions', () => {
  test('create, read back, cancel; a cancelled session takes no payment', async () => {
    const ext = orderNum();
    const session = await createSession({ payment_data: { external_order_num: ext }, metadata: { kessai_attempt: 'att_1' } });
    assert.equal(session.resource, 'session');
    assert.equal(session.mode, 'payment');
    assert.equal(session.status, 'pending');
    assert.equal(session.amount, 1000);
    assert.equal(session.currency, 'JPY');
    assert.equal(session.payment, null);
    assert.deepEqual(session.metadata, { kessai_attempt: 'att_1' });
    assert.deepEqual(session.payment_types, ['credit_card', 'konbini']);
    assert.equal(session.return_url, `${shop}/return?order=42`);
    assert.ok(session.session_url.startsWith(`${base}/sessions/`), session.session_url);
    assert.match(String(session.created_at), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    assert.ok(Date.parse(String(session.expires_at)) > Date.now(), 'Date.parse(String(session.expires_at)) > Date.now()');
    assert.deepEqual(await apiA.sessions.get(session.id), session);

    const html = await page(session.session_url);
    assert.match(html, /お支払い/);
    assert.match(html, /Checkout/);
    assert.match(html, new RegExp(ext));

    const cancelled = await apiA.sessions.cancel(session.id, { idempotencyKey: newKey() });
    assert.equal(cancelled.status, 'cancelled');
    await refusedWith(apiA.sessions.cancel(session.id, { idempotencyKey: newKey() }), 422, 'unprocessable_entity');
    const res = await submit(`${base}/sessions/${session.id}/pay/credit_card`, { number: '4111111111111111', month: '12', year: expiryYear });
    assert.equal(res.status, 409);
    assert.equal((await apiA.sessions.get(session.id)).payment, null);
  });

  test('bad parameters are refused with the parameter named', async () => {
    const cases: [Record<string, unknown>, string, string][] = [
      [{ amount: 0 }, 'invalid_parameter', 'amount'],
      [{ amount: 10.5 }, 'invalid_parameter', 'amount'],
      [{ amount: undefined }, 'missing_parameter', 'amount'],
      [{ currency: 'USD' }, 'invalid_parameter', 'currency'],
      [{ return_url: '/return' }, 'invalid_parameter', 'return_url'],
      [{ return_url: 'javascript:alert(1)' }, 'invalid_parameter', 'return_url'],
      [{ payment_types: ['credit_card', 'bitcoin'] }, 'invalid_parameter', 'payment_types[1]'],
      [{ payment_data: { external_order_num: orderNum(), capture: 'later' } }, 'invalid_parameter', 'payment_data[capture]'],
      [{ email: 'not-an-address' }, 'invalid_parameter', 'email'],
      [{ line_items: [{ description: 'CD', quantity: 0 }] }, 'invalid_parameter', 'line_items[0][quantity]'],
      [{ mode: 'customer' }, 'invalid_parameter', 'mode'],
    ];
    for (const [change, code, param] of cases) {
      const res = await api('POST', '/sessions', { body: { ...sessionInput(), ...change } });
      assert.equal(res.status, 422, JSON.stringify(change));
      assert.deepEqual([errorOf(res.json).code, errorOf(res.json).param], [code, param], JSON.stringify(res.json));
    }
    const notJson = await api('POST', '/sessions', { body: '{"amount":', headers: { 'content-type': 'application/json' } });
    assert.equal(notJson.status, 400);
    assert.equal(errorOf(notJson.json).code, 'bad_request');
    const form = await api('POST', '/sessions', { body: 'amount=1000&currency=JPY', headers: { 'content-type': 'application/x-www-form-urlencoded' } });
    assert.equal(form.status, 400);
    assert.match(errorOf(form.json).message, /JSON/);
  });

  test('an external_order_num is used by one session only', async () => {
    const ext = orderNum();
    const first = await createSession({ payment_data: { external_order_num: ext } });
    const error = await refusedWith(createSession({ payment_data: { external_order_num: ext } }), 422, 'invalid_parameter', 'payment_data[external_order_num]');
    assert.match(error.message, new RegExp(first.id));
  });
});

describe('idempotency', () => {
  test('the same key and body replays the answer; another body under the key is refused', async () => {
    const key = newKey();
    const input = sessionInput();
    const first = await apiA.sessions.create(input, { idempotencyKey: key });
    const again = await apiA.sessions.create(input, { idempotencyKey: key });
    assert.deepEqual(again, first); // the same session: a second one would have been refused for its external_order_num
    await refusedWith(apiA.sessions.create({ ...input, amount: 2000 }, { idempotencyKey: key }), 422, 'unprocessable_entity', 'X-KOMOJU-IDEMPOTENCY');
    // Keys belong to an account: B may use the same key for its own request.
    const other = await apiB.sessions.create(sessionInput(), { idempotencyKey: key });
    assert.notEqual(other.id, first.id);
  });

  test('a request refused for bad parameters keeps nothing: the corrected request may reuse the key', async () => {
    const key = newKey();
    const bad = await api('POST', '/sessions', { body: { ...sessionInput(), amount: -1 }, headers: { 'x-komoju-idempotency': key } });
    assert.equal(bad.status, 422);
    const good = await apiA.sessions.create(sessionInput(), { idempotencyKey: key });
    assert.equal(good.status, 'pending');
  });

  test('a repeat while the first is in flight gets 409, and the answer afterwards', async () => {
    await setFaults({ apiDelayMs: 300 });
    const key = newKey();
    const body = sessionInput();
    const post = () => api('POST', '/sessions', { body, headers: { 'x-komoju-idempotency': key } });
    const [first, second] = await Promise.all([post(), sleep(50).then(post)]);
    assert.equal(first.status, 200);
    assert.equal(second.status, 409);
    assert.equal(errorOf(second.json).code, 'conflict');
    const replay = await post();
    assert.equal(replay.status, 200);
    assert.equal(replay.json.id, first.json.id);
  });

  test('a money operation repeated with its key is not applied twice', async () => {
    const session = await createSession({ payment_data: { external_order_num: orderNum(), capture: 'manual' } });
    assertReturn(await payByCard(session, '4111111111111111'), session);
    const paymentId = (await apiA.sessions.get(session.id)).payment!.id;
    const key = newKey();
    const captured = await apiA.payments.capture(paymentId, { idempotencyKey: key });
    assert.equal(captured.status, 'captured');
    assert.deepEqual(await apiA.payments.capture(paymentId, { idempotencyKey: key }), captured);
    await refusedWith(apiA.payments.capture(paymentId, { idempotencyKey: newKey() }), 422, 'unprocessable_entity');
    const hooks = await webhooks(session.id, 2);
    assert.deepEqual(types(hooks), ['payment.authorized', 'payment.captured']);
  });

  test('a malformed key is refused', async () => {
    const res = await api('POST', '/sessions', { body: sessionInput(), headers: { 'x-komoju-idempotency': 'x'.repeat(101) } });
    assert.equal(res.status, 400);
    assert.equal(errorOf(res.json).param, 'X-KOMOJU-IDEMPOTENCY');
  });
});

describe('hosted page: cards', () => {
  test('a good card: captured, the browser goes back with session_id, every webhook gets a signed payment.captured', async () => {
    const session = await createSession();
    const html = await page(session.session_url);
    assert.match(html, /クレジットカード/);
    assert.match(html, /Credit card/);
    assert.match(html, /<a id="back-to-shop" href="[^"]*session_id=/);
    assertReturn(await payByCard(session, '4111 1111 1111 1111'), session);

    const read = await apiA.sessions.get(session.id);
    assert.equal(read.status, 'completed');
    const payment = read.payment!;
    assert.equal(payment.resource, 'payment');
    assert.equal(payment.status, 'captured');
    assert.equal(payment.amount, 1000);
    assert.equal(payment.total, 1000);
    assert.equal(payment.payment_method_fee, 0);
    assert.equal(payment.currency, 'JPY');
    assert.equal(payment.session, session.id);
    assert.equal(payment.external_order_num, (session.payment_data as { external_order_num: string }).external_order_num);
    assert.deepEqual(payment.metadata, { note: 'test' });
    assert.ok(payment.captured_at, 'payment.captured_at');
    assert.equal(payment.amount_refunded, 0);
    assert.deepEqual(payment.refunds, []);
    assert.equal(payment.payment_details?.type, 'credit_card');
    assert.equal(payment.payment_details?.last_four_digits, '1111');
    assert.deepEqual(await apiA.payments.get(payment.id), payment);

    for (const [hook, secret, other] of [['a1', 'whsec_a1', 'whsec_a2'], ['a2', 'whsec_a2', 'whsec_a1']] as const) {
      const [hit] = await webhooks(session.id, 1, hook);
      assert.equal(hit!.event.type, 'payment.captured');
      assert.equal(hit!.headers['x-komoju-event'], 'payment.captured');
      assert.equal(hit!.headers['user-agent'], 'Komoju-Webhook');
      assert.match(String(hit!.headers['content-type']), /^application\/json/);
      assert.ok(hit!.headers['x-komoju-id'], 'hit!.headers[\'x-komoju-id\']');
      assert.equal(verifyKomojuWebhook(hit!.body, hit!.headers['x-komoju-signature'], [secret]), true);
      assert.equal(verifyKomojuWebhook(hit!.body, hit!.headers['x-komoju-signature'], [other]), false);
      const tampered = Buffer.from(hit!.body);
      tampered.writeUInt8(tampered.readUInt8(tampered.length - 2) ^ 1, tampered.length - 2);
      assert.equal(verifyKomojuWebhook(tampered, hit!.headers['x-komoju-signature'], [secret]), false);
      const envelope = JSON.parse(hit!.body.toString('utf8')) as Record<string, unknown>;
      assert.equal(envelope.resource, 'event');
      assert.equal(envelope.reason, null);
      assert.match(String(envelope.id), /^evt_/);
      assert.deepEqual(envelope.data, payment);
      assert.deepEqual(await apiA.events.get(String(envelope.id)), envelope);
    }
    // Only this account's webhooks hear of it.
    assert.equal(hits.filter((h) => h.hook === 'b' && h.event.data.session === session.id).length, 0);

    const list = await apiA.request<{ data: { id: string }[] }>('GET', `/payments?external_order_num=${encodeURIComponent(String(payment.external_order_num))}`);
    assert.deepEqual(list.data.map((p) => p.id), [payment.id]);

    const again = await submit(`${base}/sessions/${session.id}/pay/credit_card`, { number: '4111111111111111', month: '12', year: expiryYear });
    assert.equal(again.status, 409, 'a second payment on a completed session is refused');
  });

  test('a declined card: payment.failed, the API still says pending, the session stays open for another card', async () => {
    const session = await createSession();
    const res = await payByCard(session, '4000000000000002');
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('location'), null);
    assert.match(await res.text(), /declined/);

    const [failed] = await webhooks(session.id, 1);
    assert.equal(failed!.event.type, 'payment.failed');
    assert.equal(failed!.event.data.status, 'pending');
    const read = await apiA.sessions.get(session.id);
    assert.equal(read.status, 'pending');
    assert.equal(read.payment, null);
    assert.equal((await apiA.payments.get(String(failed!.event.data.id))).status, 'pending');

    assertReturn(await payByCard(session, '4111111111111111'), session);
    const paid = await apiA.sessions.get(session.id);
    assert.equal(paid.status, 'completed');
    assert.notEqual(paid.payment!.id, failed!.event.data.id);
    const list = await apiA.request<{ data: { id: string }[] }>('GET', `/payments?external_order_num=${encodeURIComponent(String(paid.payment!.external_order_num))}`);
    assert.deepEqual(list.data.map((p) => p.id), [paid.payment!.id, failed!.event.data.id], 'newest first');
    assert.deepEqual(types(await webhooks(session.id, 2)), ['payment.failed', 'payment.captured']);
  });

  test('3-D Secure: a failed challenge is a decline, an approved one pays', async () => {
    const session = await createSession({ payment_data: { external_order_num: orderNum(), capture: 'manual' } });
    const challenge = await payByCard(session, '4000000000003220');
    assert.equal(challenge.status, 303);
    assert.equal(challenge.headers.get('location'), `/sandbox/komoju/sessions/${session.id}/3ds`);
    const html = await page(origin + challenge.headers.get('location')!);
    assert.match(html, /3-D Secure/);
    assert.match(html, /本人認証/);

    const fail = await submit(formAction(html, '3ds-fail'), { result: 'fail' });
    assert.equal(fail.status, 200);
    assert.match(await fail.text(), /3-D Secure authentication failed/);
    assert.equal((await apiA.sessions.get(session.id)).status, 'pending');

    const again = await payByCard(session, '4000000000003220');
    const approvePage = await page(origin + again.headers.get('location')!);
    assertReturn(await submit(formAction(approvePage, '3ds-approve'), { result: 'approve' }), session);
    const read = await apiA.sessions.get(session.id);
    assert.equal(read.status, 'completed');
    assert.equal(read.payment!.status, 'authorized', 'manual capture leaves the card authorized');
    assert.equal(read.payment!.captured_at, null);
    assert.deepEqual(types(await webhooks(session.id, 2)), ['payment.failed', 'payment.authorized']);
  });

  test('an invalid card number is sent back to the form, nothing happens', async () => {
    const session = await createSession();
    const res = await payByCard(session, '4111111111111112');
    assert.equal(res.status, 422);
    assert.match(await res.text(), /not valid/);
    assert.equal((await apiA.sessions.get(session.id)).status, 'pending');
  });

  test('the cancel link goes back to the shop and changes nothing', async () => {
    const session = await createSession({ return_url: `${shop}/return#top` });
    const html = await page(session.session_url);
    const m = /<a id="back-to-shop" href="([^"]+)"/.exec(html);
    assert.equal(unescape(m![1]!), `${shop}/return?session_id=${session.id}#top`);
    assert.equal((await apiA.sessions.get(session.id)).status, 'pending');
  });
});

describe('capture, refund, cancel', () => {
  async function cardPayment(capture: 'auto' | 'manual'): Promise<{ session: KomojuSession; id: string }> {
    const session = await createSession({ payment_data: { external_order_num: orderNum(), capture } });
    assertReturn(await payByCard(session, '4111111111111111'), session);
    return { session, id: (await apiA.sessions.get(session.id)).payment!.id };
  }

  test('capture: an authorized card only', async () => {
    const auto = await cardPayment('auto');
    await refusedWith(apiA.payments.capture(auto.id, { idempotencyKey: newKey() }), 422, 'unprocessable_entity');
    const manual = await cardPayment('manual');
    await refusedWith(apiA.payments.refund(manual.id, { idempotencyKey: newKey(), amount: 100 }), 422, 'unprocessable_entity');
    const captured = await apiA.payments.capture(manual.id, { idempotencyKey: newKey() });
    assert.equal(captured.status, 'captured');
    assert.ok(captured.captured_at, 'captured.captured_at');
    await refusedWith(apiA.payments.capture('no-such-payment', { idempotencyKey: newKey() }), 404, 'not_found');
    assert.deepEqual(types(await webhooks(manual.session.id, 2)), ['payment.authorized', 'payment.captured']);
  });

  test('a partial refund keeps captured, the last one makes it refunded; more is refused', async () => {
    const { session, id } = await cardPayment('auto');
    const partial = await apiA.payments.refund(id, { idempotencyKey: newKey(), amount: 300, description: 'one item' });
    assert.equal(partial.status, 'captured');
    assert.equal(partial.amount_refunded, 300);
    assert.equal(partial.refunds!.length, 1);
    assert.equal(partial.refunds![0]!.amount, 300);
    assert.equal(partial.refunds![0]!.description, 'one item');
    assert.equal(partial.refunds![0]!.payment, id);
    await refusedWith(apiA.payments.refund(id, { idempotencyKey: newKey(), amount: 800 }), 422, 'invalid_parameter', 'amount');
    const full = await apiA.payments.refund(id, { idempotencyKey: newKey(), amount: 700 });
    assert.equal(full.status, 'refunded');
    assert.equal(full.amount_refunded, 1000);
    await refusedWith(apiA.payments.refund(id, { idempotencyKey: newKey(), amount: 1 }), 422, 'unprocessable_entity');
    const hooks = await webhooks(session.id, 4);
    assert.deepEqual(types(hooks), ['payment.captured', 'payment.refund.created', 'payment.refund.created', 'payment.refunded']);
    assert.equal(hooks[1]!.event.data.amount_refunded, 300);
    assert.equal(hooks[3]!.event.data.status, 'refunded');
  });

  test('a refund without an amount refunds the rest', async () => {
    const { id } = await cardPayment('auto');
    const res = await api('POST', `/payments/${id}/refund`, { body: {} });
    assert.equal(res.status, 200);
    assert.equal(res.json.status, 'refunded');
    assert.equal(res.json.amount_refunded, 1000);
  });

  test('cancel: pending or authorized only', async () => {
    const manual = await cardPayment('manual');
    const cancelled = await apiA.payments.cancel(manual.id, { idempotencyKey: newKey() });
    assert.equal(cancelled.status, 'cancelled');
    await refusedWith(apiA.payments.cancel(manual.id, { idempotencyKey: newKey() }), 422, 'unprocessable_entity');
    await refusedWith(apiA.payments.capture(manual.id, { idempotencyKey: newKey() }), 422, 'unprocessable_entity');
    assert.deepEqual(types(await webhooks(manual.session.id, 2)), ['payment.authorized', 'payment.cancelled']);

    const auto = await cardPayment('auto');
    const error = await refusedWith(apiA.payments.cancel(auto.id, { idempotencyKey: newKey() }), 422, 'unprocessable_entity');
    assert.deepEqual(error.details, { status: 'captured', allowed: ['pending', 'authorized'] });
    await refusedWith(apiA.sessions.cancel(auto.session.id, { idempotencyKey: newKey() }), 422, 'unprocessable_entity');
  });
});

describe('konbini', () => {
  test('authorized with a slip, paid at the store → captured', async () => {
    const session = await createSession({ payment_types: ['konbini'] });
    const html = await page(session.session_url);
    assert.match(html, /コンビニ/);
    assert.doesNotMatch(html, /pay-credit_card/);
    for (const store of ['lawson', 'familymart', 'seven-eleven', 'ministop', 'daily-yamazaki', 'seicomart']) assert.match(html, new RegExp(`value="${store}"`));
    assertReturn(await payAtKonbini(session, { store: 'lawson' }), session);

    const read = await apiA.sessions.get(session.id);
    assert.equal(read.status, 'completed');
    const payment = read.payment!;
    assert.equal(payment.status, 'authorized');
    assert.equal(payment.amount, 1000);
    assert.equal(payment.payment_method_fee, 190);
    assert.equal(payment.total, 1190);
    assert.ok(Date.parse(String(payment.payment_deadline)) > Date.now(), 'Date.parse(String(payment.payment_deadline)) > Date.now()');
    const details = payment.payment_details as Record<string, unknown>;
    assert.equal(details.type, 'konbini');
    assert.equal(details.store, 'lawson');
    assert.equal(details.email, 'taro@example.jp');
    assert.match(String(details.receipt), /^\d+$/);
    assert.match(String(details.confirmation_code), /^\d{4}$/);
    assert.equal(details.instructions_url, `${base}/instructions/${payment.id}`);

    const instructions = await page(String(details.instructions_url));
    assert.match(instructions, new RegExp(String(details.receipt)));
    assert.match(instructions, /Customer paid at the store/);
    formAction(instructions, 'pay-at-store');

    await refusedWith(apiA.payments.capture(payment.id, { idempotencyKey: newKey() }), 422, 'unprocessable_entity');
    const paid = await fetch(`${base}/api/payments/${payment.id}/pay-at-store`, { method: 'POST' });
    assert.equal(paid.status, 200);
    const after = (await paid.json()) as { status: string; captured_at: string | null };
    assert.equal(after.status, 'captured');
    assert.ok(after.captured_at, 'after.captured_at');
    const again = await fetch(`${base}/api/payments/${payment.id}/pay-at-store`, { method: 'POST' });
    assert.equal(again.status, 422);
    assert.equal(errorOf((await again.json()) as Record<string, unknown>).code, 'unprocessable_entity');
    assert.deepEqual(types(await webhooks(session.id, 2)), ['payment.authorized', 'payment.captured']);
  });

  test('the page asks for an e-mail when the session has none; expiry ends the slip', async () => {
    const session = await createSession({ email: undefined, payment_types: ['konbini'] });
    const html = await page(session.session_url);
    assert.match(html, /name="email"/);
    const noEmail = await submit(formAction(html, 'pay-konbini'), { store: 'seven-eleven' });
    assert.equal(noEmail.status, 422);
    assertReturn(await payAtKonbini(session, { store: 'seven-eleven', email: 'hanako@example.jp' }), session);
    const payment = (await apiA.sessions.get(session.id)).payment!;
    assert.equal(payment.payment_details?.email, 'hanako@example.jp');
    assert.equal(payment.payment_details?.confirmation_code, null);

    const expired = await fetch(`${base}/api/payments/${payment.id}/expire`, { method: 'POST' });
    assert.equal(expired.status, 200);
    assert.equal((await apiA.payments.get(payment.id)).status, 'expired');
    await refusedWith(apiA.payments.cancel(payment.id, { idempotencyKey: newKey() }), 422, 'unprocessable_entity');
    assert.deepEqual(types(await webhooks(session.id, 2)), ['payment.authorized', 'payment.expired']);
  });

  test('an unpaid slip expires by itself at its deadline', async () => {
    const short = komojuApi({ secretKey: A.secretKey, baseUrl: `${shortBase}/api/v1`, retries: 0 });
    const session = await createSession({ payment_types: ['konbini'] }, short);
    assert.ok(session.session_url.startsWith(`${shortBase}/sessions/`), 'session.session_url.startsWith(`${shortBase}/sessions/`)');
    const html = await page(session.session_url);
    const res = await submit(formAction(html, 'pay-konbini'), { store: 'familymart' });
    assert.equal(res.status, 303);
    const hooks = await webhooks(session.id, 2);
    assert.deepEqual(types(hooks), ['payment.authorized', 'payment.expired']);
    assert.equal((await short.payments.get(String(hooks[0]!.event.data.id))).status, 'expired');
  });
});

describe('webhook delivery', () => {
  test('retried until the shop answers 2xx, with the same id, bytes and a valid signature', async () => {
    const session = await createSession();
    failures.set(`a1:${session.id}`, 2);
    assertReturn(await payByCard(session, '4111111111111111'), session);
    await webhooks(session.id, 1);
    const tries = hits.filter((h) => h.hook === 'a1' && h.event.data.session === session.id);
    assert.deepEqual(tries.map((h) => h.status), [500, 500, 200]);
    assert.equal(new Set(tries.map((h) => h.headers['x-komoju-id'])).size, 1);
    assert.equal(new Set(tries.map((h) => h.body.toString('base64'))).size, 1);
    for (const t of tries) assert.equal(verifyKomojuWebhook(t.body, t.headers['x-komoju-signature'], ['whsec_a1']), true);
    // The other webhook of the account is not held up by this one's failures.
    const [other] = await webhooks(session.id, 1, 'a2');
    assert.deepEqual(hits.filter((h) => h.hook === 'a2' && h.event.data.session === session.id).map((h) => h.status), [200]);
    assert.equal(other!.event.id, tries[0]!.event.id);
    assert.notEqual(other!.headers['x-komoju-id'], tries[0]!.headers['x-komoju-id'], 'one delivery id per webhook');
  });

  test('given up after maxAttempts; the overview page says so', async () => {
    const session = await createSession();
    failures.set(`a1:${session.id}`, 100);
    assertReturn(await payByCard(session, '4111111111111111'), session);
    const paymentId = (await apiA.sessions.get(session.id)).payment!.id;
    await eventually(async () => {
      const html = await page(`${base}/`);
      const row = html.split('\n').find((line) => line.includes(paymentId)) ?? '';
      assert.match(row, /failed ×4 \(HTTP 500\)/);
    });
    assert.equal(hits.filter((h) => h.hook === 'a1' && h.event.data.session === session.id).length, 4);
  });

  test('duplicate fault: each delivery arrives twice, byte for byte', async () => {
    await setFaults({ duplicate: true });
    const session = await createSession();
    assertReturn(await payByCard(session, '4111111111111111'), session);
    const [first, second] = await webhooks(session.id, 2);
    assert.equal(first!.event.id, second!.event.id);
    assert.equal(first!.headers['x-komoju-id'], second!.headers['x-komoju-id']);
    assert.deepEqual(first!.body, second!.body);
  });

  test('reorder fault: a payment’s events arrive newest first', async () => {
    await setFaults({ reorder: true });
    const session = await createSession({ payment_data: { external_order_num: orderNum(), capture: 'manual' } });
    assertReturn(await payByCard(session, '4111111111111111'), session);
    const paymentId = (await apiA.sessions.get(session.id)).payment!.id;
    await apiA.payments.capture(paymentId, { idempotencyKey: newKey() });
    assert.deepEqual(types(await webhooks(session.id, 2)), ['payment.captured', 'payment.authorized']);
  });

  test('reorder fault: a held event goes out on a flush', async () => {
    await setFaults({ reorder: true });
    const session = await createSession({ payment_types: ['konbini'] });
    assertReturn(await payAtKonbini(session), session);
    const flushed = await fetch(`${base}/api/webhooks/flush`, { method: 'POST' });
    assert.deepEqual(await flushed.json(), { flushed: 1 });
    assert.deepEqual(types(await webhooks(session.id, 1)), ['payment.authorized']);
  });

  test('dropWebhooks fault: the event exists but is never sent', async () => {
    await setFaults({ dropWebhooks: true });
    const dropped = await createSession();
    assertReturn(await payByCard(dropped, '4111111111111111'), dropped);
    await setFaults({ dropWebhooks: false });
    const sent = await createSession();
    assertReturn(await payByCard(sent, '4111111111111111'), sent);
    await webhooks(sent.id, 1);
    assert.equal(hits.filter((h) => h.event.data.session === dropped.id).length, 0);
    assert.equal((await apiA.sessions.get(dropped.id)).payment!.status, 'captured');
  });

  test('noReturn fault: the page says done and the browser stays', async () => {
    await setFaults({ noReturn: true });
    const session = await createSession();
    const res = await payByCard(session, '4111111111111111');
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('location'), null);
    const html = await res.text();
    assert.match(html, /noReturn/);
    assert.doesNotMatch(html, /session_id=/);
    assert.equal((await apiA.sessions.get(session.id)).status, 'completed');
  });

  test('staleCancel fault: paying a later session cancels the earlier session’s payment', async () => {
    await setFaults({ staleCancel: true });
    const order = orderNum();
    const earlier = await createSession({ payment_types: ['konbini'], payment_data: { external_order_num: `${order}-1` } });
    assertReturn(await payAtKonbini(earlier), earlier);
    const later = await createSession({ payment_data: { external_order_num: `${order}-2` } });
    assertReturn(await payByCard(later, '4111111111111111'), later);

    const stale = await webhooks(earlier.id, 2);
    assert.deepEqual(types(stale), ['payment.authorized', 'payment.cancelled']);
    assert.equal(stale[1]!.event.data.session, earlier.id);
    assert.equal(stale[1]!.event.data.external_order_num, `${order}-1`);
    assert.equal((await apiA.sessions.get(earlier.id)).payment!.status, 'cancelled');
    assert.deepEqual(types(await webhooks(later.id, 1)), ['payment.captured']);
    assert.equal((await apiA.sessions.get(later.id)).payment!.status, 'captured');
  });

  test('the fault switches are validated and readable', async () => {
    const bad = await fetch(`${base}/api/faults`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ duplicates: true }) });
    assert.equal(bad.status, 422);
    await setFaults({ delayMs: 5 });
    const now = (await (await fetch(`${base}/api/faults`)).json()) as Record<string, unknown>;
    assert.equal(now.delayMs, 5);
    assert.equal(now.duplicate, false);
  });
});

test('the overview page lists sessions and payments', async () => {
  const session = await createSession();
  assertReturn(await payByCard(session, '4111111111111111'), session);
  const html = await page(`${base}/`);
  assert.match(html, /KOMOJU sandbox/);
  assert.match(html, new RegExp(session.id));
  assert.match(html, new RegExp((await apiA.sessions.get(session.id)).payment!.id));
  assert.doesNotMatch(html, new RegExp(A.secretKey), 'no credentials on the page');
  assert.doesNotMatch(html, /whsec_/);
});
