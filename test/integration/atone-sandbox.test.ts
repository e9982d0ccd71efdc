import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { IncomingHttpHeaders } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { runInNewContext } from 'node:vm';
import formbody from '@fastify/formbody';
import helmet from '@fastify/helmet';
import Fastify, { type FastifyInstance } from 'fastify';
import { pino } from 'pino';
import {
  ATONE_OPTION_RECURRING,
  atoneApi,
  AtoneApiError,
  atoneConsistencyProblems,
  atoneTransactionState,
  buildAtonePayment,
  buildAtonePaymentFields,
  parseAtoneWebhook,
  readBackAtoneTransaction,
  verifyAtoneWebhook,
  type AtoneApi,
  type AtonePayment,
  type AtonePaymentInput,
  type AtoneRegistration,
  type AtoneWebhookClaim,
} from '../../src/gateways/atone/index.js';
import { atoneSandbox, type AtoneSandboxShop } from '../../src/sandbox/atone.js';
import { eventually } from '../helpers/eventually.js';
import { freePort } from '../helpers/net.js';

/*
 * The atone simulator over real HTTP on loopback, driven the way a shop and a customer drive atone: the
 * SDK script run against the sandbox (in a VM with a stand-in DOM; the real browser is the storefront's
 * browser test), the modal's pages walked with fetch, the REST API through kessai's own client, and a
 * Fastify "shop" receiving the webhooks as raw bytes, checked with kessai's own verification. The
 * sandbox is mounted the way the store mounts it: beside helmet and a form parser.
 */

interface Hit {
  shop: string;
  kind: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
  claim: AtoneWebhookClaim;
  status: number;
}

let gateway: FastifyInstance;
let receiver: FastifyInstance;
let origin: string;
let base: string;
let shopOrigin: string;
let A: AtoneSandboxShop;
let B: AtoneSandboxShop;
let apiA: AtoneApi;
let apiB: AtoneApi;
const hits: Hit[] = [];
/** `<kind>:<shop_transaction_no or token>` → how many more deliveries the shop answers 500. */
const failures = new Map<string, number>();
const CREDIT_LIMIT = 50_000;

before(async () => {
  receiver = Fastify();
  receiver.addContentTypeParser('application/json', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
  receiver.post<{ Params: { shop: string; kind: string } }>('/webhooks/atone/:shop/:kind', async (request, reply) => {
    const body = request.body as Buffer;
    const claim = parseAtoneWebhook(body);
    const key = `${request.params.kind}:${request.params.kind === 'order' ? claim.shopTransactionNo : claim.authenticationToken}`;
    const left = failures.get(key) ?? 0;
    if (left > 0) failures.set(key, left - 1);
    const status = left > 0 ? 500 : 200;
    hits.push({ shop: request.params.shop, kind: request.params.kind, headers: request.headers, body, claim, status });
    return reply.status(status).send(status === 200 ? 'ok' : 'not now');
  });
  const receiverPort = await freePort();
  await receiver.listen({ host: '127.0.0.1', port: receiverPort });
  shopOrigin = `http://127.0.0.1:${receiverPort}`;

  A = {
    publicKey: 'pk_test_shop_a_0001',
    secretKey: 'sk_test_shop_a_secret',
    name: 'ショップA',
    webhookUrls: { member: `${shopOrigin}/webhooks/atone/a/member`, order: `${shopOrigin}/webhooks/atone/a/order` },
  };
  B = { publicKey: 'pk_test_shop_b_0002', secretKey: 'sk_test_shop_b_secret', webhookUrls: { order: `${shopOrigin}/webhooks/atone/b/order` } };

  gateway = Fastify();
  await gateway.register(helmet, { contentSecurityPolicy: { directives: { 'form-action': null, 'upgrade-insecure-requests': null } } });
  await gateway.register(formbody);
  // A route of the host app: its JSON parsing must not change because the sandbox replaces its own.
  gateway.post('/echo', async (request) => ({ got: request.body }));
  await gateway.register(atoneSandbox({ shops: [A, B], log: pino({ level: 'silent' }), creditLimit: CREDIT_LIMIT, webhookRetry: { baseDelayMs: 10, maxAttempts: 4, timeoutMs: 2_000 } }), {
    prefix: '/sandbox/atone',
  });
  const port = await freePort();
  await gateway.listen({ host: '127.0.0.1', port });
  origin = `http://127.0.0.1:${port}`;
  base = `${origin}/sandbox/atone`;
  apiA = atoneApi({ secretKey: A.secretKey, baseUrl: `${base}/v1`, retries: 0 });
  apiB = atoneApi({ secretKey: B.secretKey, baseUrl: `${base}/v1`, retries: 0 });
});

after(async () => {
  await gateway.close();
  await receiver.close();
});

beforeEach(async () => {
  await setFaults({ dropBrowser: false, webhookFirst: false, duplicateWebhooks: false, decline: false, dropWebhooks: false, webhookDelayMs: 0 });
});

async function setFaults(faults: Record<string, unknown>): Promise<void> {
  const res = await fetch(`${base}/api/faults`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(faults) });
  assert.equal(res.status, 200, await res.text());
}

let seq = 0;
const orderNo = (): string => `A${process.pid}T${Date.now()}N${++seq}`;

function orderInput(overrides: Partial<AtonePaymentInput> = {}): AtonePaymentInput {
  return {
    shopTransactionNo: orderNo(),
    lines: [
      { id: 'CD-001', name: 'アルバム CD', unitPrice: 3000, quantity: 1 },
      { id: 'SER-1', name: 'シリアルコード付き', unitPrice: 1500, quantity: 2 },
    ],
    tax: 600,
    shipping: 500,
    customer: { customer_name: '試験 太郎', email: 'taro@example.jp', zip_code: '1500001', address: '東京都渋谷区神宮前1-1-1', tel: '0312345678' },
    ...overrides,
  };
}

const paymentFor = (shop: AtoneSandboxShop, overrides: Partial<AtonePaymentInput> = {}): AtonePayment => buildAtonePayment(orderInput(overrides), { secretKey: shop.secretKey });

interface Reply {
  status: number;
  headers: Headers;
  json: Record<string, unknown>;
}

async function start(payment: unknown, opts: { pubKey?: string; preToken?: string; raw?: string; contentType?: string } = {}): Promise<Reply> {
  const res = await fetch(`${base}/js/start`, {
    method: 'POST',
    headers: { 'content-type': opts.contentType ?? 'application/json', origin: shopOrigin },
    body: opts.raw ?? JSON.stringify({ pub_key: opts.pubKey ?? A.publicKey, payment, pre_token: opts.preToken ?? '' }),
  });
  return { status: res.status, headers: res.headers, json: (await res.json()) as Record<string, unknown> };
}

async function session(payment: unknown, opts: { pubKey?: string; preToken?: string } = {}): Promise<string> {
  const r = await start(payment, opts);
  assert.equal(r.status, 200, JSON.stringify(r.json));
  return String(r.json.session);
}

const codes = (r: Reply): string[] => (r.json.errors as { code: string; params: string[] }[]).map((e) => `${e.params[0] ?? '-'} ${e.code}`).sort();

interface Page {
  html: string;
  headers: Headers;
  messages: Record<string, unknown>[];
  origin: string;
}

async function modal(sid: string): Promise<Page> {
  const res = await fetch(`${base}/modal/${sid}`, { redirect: 'manual' });
  assert.equal(res.status, 200, `GET modal ${sid}`);
  const html = await res.text();
  const m = /<script type="application\/json" id="atone-messages">([^<]*)<\/script>/.exec(html);
  assert.ok(m, 'the modal page carries its messages');
  const data = JSON.parse(m[1]!) as { origin: string; messages: Record<string, unknown>[] };
  assert.match(html, new RegExp(`<script src="/sandbox/atone/modal.js"></script>`));
  return { html, headers: res.headers, messages: data.messages, origin: data.origin };
}

const unescape = (s: string): string => s.replace(/&#(\d+);/g, (_m, code: string) => String.fromCharCode(Number(code)));

/** Posts the modal's form #id and follows the 303 back to the modal. */
async function submit(pageHtml: string, id: string, fields: Record<string, string> = {}): Promise<{ response: Response; page: Page }> {
  const m = new RegExp(`<form id="${id}" method="post" action="([^"]+)"`).exec(pageHtml);
  assert.ok(m, `the page has a form #${id}`);
  const response = await fetch(origin + unescape(m[1]!), { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(fields).toString(), redirect: 'manual' });
  assert.equal(response.status, 303);
  const sid = /\/modal\/([A-Za-z0-9]+)/.exec(response.headers.get('location') ?? '')![1]!;
  return { response, page: await modal(sid) };
}

async function login(sid: string, email = 'taro@example.jp', password = 'password'): Promise<Page> {
  return (await submit((await modal(sid)).html, 'atone-login', { email, password })).page;
}

/** Log in, authorize: the messages the shop page receives, in order. */
async function purchase(payment: AtonePayment, opts: { email?: string; preToken?: string; shop?: AtoneSandboxShop } = {}): Promise<{ sid: string; authenticated: Record<string, unknown>; result: Record<string, unknown> | undefined; done: Page }> {
  const sid = await session(payment, { pubKey: (opts.shop ?? A).publicKey, ...(opts.preToken ? { preToken: opts.preToken } : {}) });
  const confirm = opts.preToken ? await modal(sid) : await login(sid, opts.email);
  assert.match(confirm.html, /id="atone-authorize"/, 'the confirmation step');
  const authenticated = confirm.messages.find((m) => m.event === 'authenticated');
  assert.ok(authenticated, 'authenticated is sent to the shop page');
  const { page: done } = await submit(confirm.html, 'atone-authorize');
  return { sid, authenticated, result: done.messages.find((m) => m.event === 'succeeded' || m.event === 'failed'), done };
}

const orderHits = (no: string): Hit[] => hits.filter((h) => h.kind === 'order' && h.claim.shopTransactionNo === no && h.status === 200);

async function orderWebhooks(no: string, count = 1): Promise<Hit[]> {
  return eventually(async () => {
    const got = orderHits(no);
    assert.ok(got.length >= count, `${got.length} of ${count} order webhooks for ${no}`);
    return got;
  }, 5_000);
}

async function raw(method: string, path: string, opts: { key?: string | null; auth?: string; body?: string; headers?: Record<string, string> } = {}): Promise<Reply> {
  const headers: Record<string, string> = { ...(opts.headers ?? {}) };
  if (opts.auth !== undefined) headers.authorization = opts.auth;
  else if (opts.key !== null) headers.authorization = `Basic ${Buffer.from(opts.key ?? A.secretKey).toString('base64')}`;
  if (opts.body !== undefined && !headers['content-type']) headers['content-type'] = 'application/json';
  const res = await fetch(`${base}/v1${path}`, { method, headers, ...(opts.body !== undefined ? { body: opts.body } : {}) });
  return { status: res.status, headers: res.headers, json: (await res.json()) as Record<string, unknown> };
}

async function refusedWith(promise: Promise<unknown>, status: number, code: string): Promise<AtoneApiError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof AtoneApiError, String(error));
    assert.equal(error.status, status, error.message);
    assert.ok(error.codes.includes(code), `${code} in ${error.message}`);
    return error;
  }
  assert.fail(`expected HTTP ${status} ${code}`);
}

function registrationFrom(payment: AtonePayment, token: string, overrides: Partial<AtonePaymentInput> = {}): AtoneRegistration {
  const fields = buildAtonePaymentFields(orderInput({ transactionOptions: [ATONE_OPTION_RECURRING], ...overrides }));
  return { ...fields, customer: payment.customer, authentication_token: token } as AtoneRegistration;
}

describe('the SDK script', () => {
  test('is served as JavaScript, loadable from another origin', async () => {
    const res = await fetch(`${base}/atone.js`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /javascript/);
    assert.equal(res.headers.get('cross-origin-resource-policy'), 'cross-origin');
    const js = await res.text();
    for (const name of ['Atone', 'config', 'merge', 'start', 'authenticated', 'succeeded', 'failed', 'cancelled', 'error', 'pre_token', 'pub_key']) assert.ok(js.includes(name), name);
    const helper = await fetch(`${base}/modal.js`);
    assert.equal(helper.status, 200);
    assert.match(await helper.text(), /postMessage/);
  });

  test('run in a page: error callback on a refused payment; modal, postMessage and callbacks on success', async () => {
    const js = await (await fetch(`${base}/atone.js`)).text();
    const listeners: ((event: unknown) => void)[] = [];
    const appended: { child: { src?: string; contentWindow?: object } }[] = [];
    const element = (tag: string): Record<string, unknown> => {
      const el: Record<string, unknown> = { tag, style: {}, setAttribute() {}, parentNode: null, contentWindow: tag === 'iframe' ? { name: 'frame window' } : undefined };
      el.appendChild = (child: Record<string, unknown>) => {
        child.parentNode = el;
        appended.push({ child: child as { src?: string } });
      };
      el.removeChild = (child: Record<string, unknown>) => {
        child.parentNode = null;
      };
      return el;
    };
    const body = element('body');
    const page: Record<string, unknown> = {
      document: { currentScript: { src: `${base}/atone.js` }, createElement: element, body },
      location: { origin: shopOrigin, href: `${shopOrigin}/checkout` },
      addEventListener: (type: string, fn: (event: unknown) => void) => type === 'message' && listeners.push(fn),
      fetch,
      URL,
      setTimeout,
      JSON,
    };
    page.window = page;
    runInNewContext(js, page);
    const Atone = page.Atone as { config(o: object): void; merge(o: object): void; start(): void; sandbox: boolean };
    assert.equal(Atone.sandbox, true);

    const calls: [string, unknown[]][] = [];
    const record =
      (name: string) =>
      (...args: unknown[]) =>
        calls.push([name, args]);
    const callbacks = { authenticated: record('authenticated'), succeeded: record('succeeded'), failed: record('failed'), cancelled: record('cancelled'), error: record('error') };

    // A tampered payment: atone.js hands atone's refusal to error(name, message, errors).
    const bad = { ...paymentFor(A), amount: 1 };
    Atone.config({ pub_key: A.publicKey, payment: bad, pre_token: '', ...callbacks });
    Atone.start();
    await eventually(async () => assert.equal(calls.length, 1));
    assert.equal(calls[0]![0], 'error');
    assert.equal(calls[0]![1][0], 'InvalidRequest');
    const errors = calls[0]![1][2] as { code: string }[];
    assert.deepEqual(errors.map((e) => e.code).sort(), ['EATN0351', 'EATN0398']);

    // A good one (merge replaces the payment only): the overlay opens with the sandbox's modal.
    calls.length = 0;
    const payment = paymentFor(A);
    Atone.merge({ payment: JSON.stringify(payment) });
    Atone.start();
    const frame = await eventually(async () => {
      const f = appended.find((a) => typeof a.child.src === 'string');
      assert.ok(f, 'an iframe was added');
      return f.child;
    });
    const sid = /\/sandbox\/atone\/modal\/([A-Za-z0-9]+)$/.exec(frame.src!)![1]!;
    assert.ok(frame.src!.startsWith(base), 'frame.src!.startsWith(base)');

    // The customer logs in and pays inside the modal; its pages' messages are what modal.js posts.
    const confirm = await login(sid);
    assert.equal(confirm.origin, shopOrigin, 'results are addressed to the shop page only');
    const { page: done } = await submit(confirm.html, 'atone-authorize');
    const deliver = (data: unknown, from = origin, source: unknown = frame.contentWindow): void => listeners.forEach((fn) => fn({ data, origin: from, source }));
    deliver(confirm.messages[0], 'http://evil.test'); // another origin: ignored
    deliver(confirm.messages[0], origin, {}); // another window: ignored
    assert.equal(calls.length, 0);
    for (const m of [...confirm.messages, ...done.messages]) deliver(m);
    assert.deepEqual(
      calls.map(([name]) => name),
      ['authenticated', 'succeeded'],
    );
    assert.match(String(calls[0]![1][0]), /^tk_/);
    assert.match(String(calls[0]![1][1]), /^\d{10}$/);
    const response = calls[1]![1][0] as { id: string; authorization_result: number };
    assert.equal(response.authorization_result, 1);
    assert.equal((await apiA.reference(response.id)).shop_transaction_no, payment.shop_transaction_no);
    deliver(done.messages[0]); // after close: ignored
    assert.equal(calls.length, 2);
  });
});

describe('Atone.start: the payment object is checked as atone checks it', () => {
  test('unknown public key → EATN0304; CORS headers on refusals too; preflight', async () => {
    const r = await start(paymentFor(A), { pubKey: 'pk_unknown_key' });
    assert.equal(r.status, 400);
    assert.equal(r.json.name, 'InvalidRequest');
    assert.deepEqual(codes(r), ['pub_key EATN0304']);
    assert.equal(r.headers.get('access-control-allow-origin'), shopOrigin);
    const pre = await fetch(`${base}/js/start`, { method: 'OPTIONS', headers: { origin: shopOrigin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' } });
    assert.equal(pre.status, 204);
    assert.match(pre.headers.get('access-control-allow-headers') ?? '', /content-type/);
  });

  test('a checksum made with another key, or over other values → EATN0351', async () => {
    assert.deepEqual(codes(await start(paymentFor(B))), ['checksum EATN0351']);
    const p = paymentFor(A);
    assert.deepEqual(codes(await start({ ...p, description_trans: 'changed after signing' })), ['checksum EATN0351']);
    const { checksum: _c, ...unsigned } = p;
    assert.deepEqual(codes(await start(unsigned)), ['checksum EATN0351']);
    // shop_transaction_no is outside the checksum (the default exclusion set): changing it alone still passes.
    assert.equal((await start({ ...p, shop_transaction_no: orderNo() })).status, 200);
  });

  test('field rules: every problem with its path and code', async () => {
    const p = paymentFor(A);
    const r = await start({ ...p, amount: 0, items: [{ ...p.items[0]!, item_count: 100_000 }, ...p.items.slice(1)], customer: { ...p.customer, zip_code: '12-345', email: 'x' } });
    assert.equal(r.status, 400);
    assert.deepEqual(codes(r), ['amount EATN0331', 'checksum EATN0351', 'customer.email EATN0349', 'customer.zip_code EATN0346', 'items[0].item_count EATN0340']);
    const messages = (r.json.errors as { messages: string[] }[]).flatMap((e) => e.messages).join(' ');
    assert.match(messages, /郵便番号/);
  });

  test('Σ items ≠ amount, malformed pre_token, bad JSON, wrong content type', async () => {
    const fields = buildAtonePaymentFields(orderInput());
    const { atoneChecksum } = await import('../../src/gateways/atone/checksum.js');
    const skewed = { ...fields, amount: fields.amount + 1 };
    assert.deepEqual(codes(await start({ ...skewed, checksum: atoneChecksum(skewed, A.secretKey) })), ['amount EATN0398']);
    assert.deepEqual(codes(await start(paymentFor(A), { preToken: 'not-a-token' })), ['pre_token EATN0302']);
    assert.deepEqual(codes(await start(null, { raw: '{"pub_key":' })), ['- EATN0397']);
    assert.deepEqual(codes(await start(null, { raw: 'pub_key=x', contentType: 'application/x-www-form-urlencoded' })), ['- EATN0352']);
    const echo = await fetch(`${origin}/echo`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"a":1}' });
    assert.deepEqual(await echo.json(), { got: { a: 1 } }, 'the host app still parses its own JSON');
  });
});

describe('the modal', () => {
  test('log in, authorize: callbacks, both webhooks with a verifiable checksum, and the transaction read back', async () => {
    const payment = paymentFor(A);
    const { sid, authenticated, result } = await purchase(payment);
    const token = String(authenticated.authentication_token);
    assert.match(token, /^tk_[A-Za-z0-9]+$/);
    assert.equal(authenticated.atone, sid);
    assert.ok(result, 'result');
    assert.equal(result.event, 'succeeded');
    const response = result.response as { id: string; authorization_result: number; subtract_point: number };
    assert.match(response.id, /^tr_[A-Za-z0-9]{16}$/);
    assert.equal(response.authorization_result, 1);
    assert.equal(response.subtract_point, 0);

    const member = await eventually(async () => {
      const h = hits.find((x) => x.kind === 'member' && x.claim.shopTransactionNo === payment.shop_transaction_no);
      assert.ok(h, 'the 認証Webhook arrived');
      return h;
    });
    assert.equal(member.shop, 'a');
    assert.equal(member.claim.authenticationToken, token, 'a member keeps one token per shop');
    assert.equal(member.claim.userNo, authenticated.user_no);
    assert.equal(verifyAtoneWebhook(member.body, member.headers['np-confirmation-checksum'], A.secretKey), true);

    const [order] = await orderWebhooks(payment.shop_transaction_no);
    assert.equal(verifyAtoneWebhook(order!.body, order!.headers['np-confirmation-checksum'], A.secretKey), true);
    assert.equal(verifyAtoneWebhook(order!.body, order!.headers['np-confirmation-checksum'], B.secretKey), false);
    assert.equal(order!.claim.transactionId, response.id);

    // The rule: trust only 取引参照.
    const t = await readBackAtoneTransaction(apiA, order!.body);
    assert.equal(atoneTransactionState(t), 'authorized');
    assert.equal(t.authentication_token, token);
    assert.deepEqual(atoneConsistencyProblems(t, { amount: payment.amount, shop_transaction_no: payment.shop_transaction_no, items: payment.items }), []);
    assert.match(String(t.registration_datetime), /^\d{4}\/\d{2}\/\d{2} \d{2}:\d{2}$/);
    assert.equal(t.sales_settled, false);
  });

  test('modal pages may be framed by the shop page only', async () => {
    const sid = await session(paymentFor(A));
    const page = await modal(sid);
    assert.equal(page.headers.get('x-frame-options'), null);
    assert.match(page.headers.get('content-security-policy') ?? '', new RegExp(`frame-ancestors 'self' ${shopOrigin.replace(/\./g, '\\.')}`));
    assert.match(page.html, /id="atone-register"/);
  });

  test('pre_token skips the login and keeps the same token; an unknown token shows the login', async () => {
    const first = await purchase(paymentFor(A));
    const token = String(first.authenticated.authentication_token);
    const memberHooks = hits.filter((h) => h.kind === 'member' && h.claim.authenticationToken === token).length;
    const second = await purchase(paymentFor(A), { preToken: token });
    assert.equal(second.authenticated.authentication_token, token);
    assert.equal((second.result!.response as { authorization_result: number }).authorization_result, 1);
    await sleep(100);
    assert.equal(hits.filter((h) => h.kind === 'member' && h.claim.authenticationToken === token).length, memberHooks, 'no 認証Webhook for a login skip');

    const sid = await session(paymentFor(A), { preToken: 'tk_NoSuchToken123' });
    assert.match((await modal(sid)).html, /id="atone-login"/);
    // Shop B does not know shop A's token either.
    const other = await session(paymentFor(B), { pubKey: B.publicKey, preToken: token });
    assert.match((await modal(other)).html, /id="atone-login"/);
  });

  test('register a new member; wrong password and a taken e-mail are refused on the page', async () => {
    const sid = await session(paymentFor(A));
    const wrong = await submit((await modal(sid)).html, 'atone-login', { email: 'taro@example.jp', password: 'nope' });
    assert.match(wrong.page.html, /role="alert"/);
    assert.equal(wrong.page.messages.length, 0);
    const taken = await submit(wrong.page.html, 'atone-register', { name: '試験', email: 'TARO@example.jp', password: 'secret' });
    assert.match(taken.page.html, /登録済み/);
    const email = `new-${orderNo()}@example.jp`;
    const registered = await submit(taken.page.html, 'atone-register', { name: '新規 会員', email, password: 'secret' });
    const auth = registered.page.messages.find((m) => m.event === 'authenticated');
    assert.ok(auth, 'auth');
    assert.match(registered.page.html, /新規 会員/);
    // The new member can log in elsewhere with the same password, and gets the same token at this shop.
    const again = await login(await session(paymentFor(A)), email, 'secret');
    assert.equal(again.messages.find((m) => m.event === 'authenticated')!.authentication_token, auth.authentication_token);
  });

  test('declines: the test member, an amount above the limit, the decline fault; the 決済Webhook comes for NG too', async () => {
    const declined = await purchase(paymentFor(A), { email: 'decline@example.jp' });
    assert.equal(declined.result!.event, 'failed');
    assert.deepEqual(Object.keys(declined.result!.response as object).sort(), ['authorization_result', 'authorization_result_ng_reason', 'id', 'subtract_point']);
    assert.equal((declined.result!.response as { authorization_result_ng_reason: number }).authorization_result_ng_reason, 9);

    const big = paymentFor(A, { lines: [{ id: 'BIG', name: '高額商品', unitPrice: CREDIT_LIMIT + 1, quantity: 1 }], tax: 0, shipping: 0 });
    const tooMuch = await purchase(big);
    assert.equal((tooMuch.result!.response as { authorization_result_ng_reason: number }).authorization_result_ng_reason, 1);
    const [hook] = await orderWebhooks(big.shop_transaction_no);
    assert.equal((hook!.claim.body as { authorization_result: number }).authorization_result, 2);
    assert.equal(atoneTransactionState(await readBackAtoneTransaction(apiA, hook!.claim)), 'declined');

    await setFaults({ decline: true });
    const faulted = await purchase(paymentFor(A));
    assert.equal((faulted.result!.response as { authorization_result_ng_reason: number }).authorization_result_ng_reason, 9);
  });

  test('a declined attempt’s number may be used again; an authorized one’s may not', async () => {
    const p = paymentFor(A, { customer: { customer_name: '否決 花子' } });
    await purchase(p, { email: 'decline@example.jp' });
    const ok = await purchase(p);
    assert.equal(ok.result!.event, 'succeeded');
    assert.deepEqual(codes(await start(p)), ['shop_transaction_no EATN0398']);
  });

  test('cancel: cancelled is sent and nothing is registered', async () => {
    const p = paymentFor(A);
    const sid = await session(p);
    const { page } = await submit((await modal(sid)).html, 'atone-cancel');
    assert.deepEqual(
      page.messages.map((m) => m.event),
      ['cancelled'],
    );
    await sleep(50);
    assert.equal(orderHits(p.shop_transaction_no).length, 0);
  });
});

describe('REST API', () => {
  test('auth: the raw secret only; "secret:" is refused with a hint; another shop’s transaction is not found', async () => {
    const { result } = await purchase(paymentFor(A));
    const id = (result!.response as { id: string }).id;
    const none = await raw('GET', `/transactions/${id}`, { key: null });
    assert.equal(none.status, 401);
    assert.deepEqual(codes(none), ['Authorization EATN0306']);
    const colon = await raw('GET', `/transactions/${id}`, { auth: `Basic ${Buffer.from(`${A.secretKey}:`).toString('base64')}` });
    assert.equal(colon.status, 401);
    assert.match(JSON.stringify(colon.json), /no \\":\\"|no ":"/);
    assert.equal((await raw('GET', `/transactions/${id}`, { key: 'sk_wrong' })).status, 401);
    assert.equal((await raw('GET', `/transactions/${id}`)).status, 200);
    await refusedWith(apiB.reference(id), 404, 'EATN0398');
  });

  test('methods: real GET / PATCH and POST + X-HTTP-Method-Override both work; POST without it is refused', async () => {
    const { result } = await purchase(paymentFor(A));
    const id = (result!.response as { id: string }).id;
    const real = atoneApi({ secretKey: A.secretKey, baseUrl: `${base}/v1`, methodOverride: false, retries: 0 });
    assert.equal((await real.reference(id)).id, id);
    assert.equal((await apiA.reference(id)).id, id);
    assert.deepEqual(codes(await raw('POST', `/transactions/${id}`, { body: '{}' })), ['X-HTTP-Method-Override EATN0398']);
    assert.deepEqual(codes(await raw('POST', `/transactions/${id}`, { body: '{"id":', headers: { 'x-http-method-override': 'GET' } })), ['- EATN0397']);
    assert.deepEqual(codes(await raw('POST', `/transactions/${id}`, { body: 'id=1', headers: { 'x-http-method-override': 'GET', 'content-type': 'application/x-www-form-urlencoded' } })), ['- EATN0352']);
    assert.equal((await real.settle(id)).sales_settled, true);
  });

  test('settle once (EATN1201 the second time; the client converges), refund, nothing after a refund', async () => {
    const payment = paymentFor(A);
    const { result } = await purchase(payment);
    const id = (result!.response as { id: string }).id;
    const settled = await apiA.settle(id);
    assert.equal(atoneTransactionState(settled), 'settled');
    assert.match(String(settled.sales_settled_datetime), /^\d{4}\//);
    const again = await raw('PATCH', `/transactions/${id}/settle`, { body: JSON.stringify({ id }) });
    assert.equal(again.status, 400);
    assert.deepEqual(codes(again), ['id EATN1201']);
    assert.equal(atoneTransactionState(await apiA.settle(id)), 'settled', 'a settle that runs again is a success');

    const partial = await raw('PATCH', `/transactions/${id}/refund`, { body: JSON.stringify({ amount: 100 }) });
    assert.deepEqual(codes(partial), ['amount EATN0398']);
    const refunded = await apiA.refund(id);
    assert.equal(atoneTransactionState(refunded), 'refunded');
    assert.equal(refunded.amount_refund_total, payment.amount);
    assert.deepEqual(codes(await raw('PATCH', `/transactions/${id}/refund`, { body: '{}' })), ['id EATN0398']);
    assert.equal(atoneTransactionState(await apiA.refund(id)), 'refunded', 'a refund that runs again is a success');
    await refusedWith(apiA.settle(id), 400, 'EATN0398');
  });

  test('sales_settled: true settles with the authorization; a declined transaction cannot be settled', async () => {
    const { result } = await purchase(paymentFor(A, { salesSettled: true }));
    assert.equal(atoneTransactionState(await apiA.reference((result!.response as { id: string }).id)), 'settled');
    const declined = await purchase(paymentFor(A), { email: 'decline@example.jp' });
    await refusedWith(apiA.settle((declined.result!.response as { id: string }).id), 400, 'EATN0398');
  });

  test('取引更新: a new id replaces the old one, which can no longer be used', async () => {
    const payment = paymentFor(A);
    const { result, authenticated } = await purchase(payment);
    const oldId = (result!.response as { id: string }).id;
    const token = String(authenticated.authentication_token);
    const smaller = { ...registrationFrom(payment, token, { lines: [{ id: 'CD-001', name: 'アルバム CD', unitPrice: 3000, quantity: 1 }], tax: 300, shipping: 500 }), shop_transaction_no: payment.shop_transaction_no };
    delete smaller.transaction_options;
    const updated = await apiA.update(oldId, smaller);
    assert.notEqual(updated.id, oldId);
    assert.equal(updated.amount, 3800);
    assert.equal(updated.authorization_result, 1);
    assert.deepEqual(updated.updated_transactions, [oldId]);
    assert.equal(updated.shop_transaction_no, payment.shop_transaction_no);

    const old = await apiA.reference(oldId);
    assert.equal(old.related_transaction, updated.id);
    await refusedWith(apiA.settle(oldId), 400, 'EATN0398');
    await refusedWith(apiA.update(oldId, smaller), 400, 'EATN0398');
    assert.equal(atoneTransactionState(await apiA.settle(updated.id)), 'settled');
    const hooks = await orderWebhooks(payment.shop_transaction_no, 2);
    assert.ok(hooks.some((h) => h.claim.transactionId === updated.id), 'the 決済Webhook names the new transaction');

    // Another member's token cannot update it.
    const other = await purchase(paymentFor(A, { customer: { customer_name: '別人' } }), { email: 'decline@example.jp' });
    await refusedWith(apiA.update(updated.id, { ...smaller, authentication_token: String(other.authenticated.authentication_token) }), 400, 'EATN0303');
  });

  test('取引登録 (recurring): the token of a member who agreed with option 1, transaction_options [1]', async () => {
    const first = paymentFor(A, { transactionOptions: [ATONE_OPTION_RECURRING] });
    const { authenticated } = await purchase(first);
    const token = String(authenticated.authentication_token);
    const next = registrationFrom(first, token);
    const charge = await apiA.register(next);
    assert.equal(charge.authorization_result, 1);
    assert.deepEqual(charge.transaction_options, [1]);
    assert.equal(charge.authentication_token, token);
    assert.equal(charge.shop_transaction_no, next.shop_transaction_no);
    await orderWebhooks(next.shop_transaction_no);

    await refusedWith(apiA.register({ ...registrationFrom(first, token), transaction_options: [] }), 400, 'EATN0398');
    await refusedWith(apiA.register(next), 400, 'EATN0398'); // the number is taken
    await refusedWith(apiA.register(registrationFrom(first, 'tk_NoSuchToken123')), 400, 'EATN0303');
    await refusedWith(apiB.register(registrationFrom(first, token)), 400, 'EATN0303');

    // A member who bought without option 1 has not agreed to recurring charges.
    const plain = await purchase(paymentFor(A), { email: 'decline@example.jp' });
    await refusedWith(apiA.register(registrationFrom(first, String(plain.authenticated.authentication_token))), 400, 'EATN0303');
  });
});

describe('webhooks and faults', () => {
  test('a failing shop gets the webhook again until it answers 2xx', async () => {
    const p = paymentFor(A);
    failures.set(`order:${p.shop_transaction_no}`, 2);
    const { result } = await purchase(p);
    const id = (result!.response as { id: string }).id;
    await orderWebhooks(p.shop_transaction_no);
    assert.equal(hits.filter((h) => h.kind === 'order' && h.claim.shopTransactionNo === p.shop_transaction_no).length, 3);
    const res = await fetch(`${base}/api/transactions/${id}/webhooks`);
    const { data } = (await res.json()) as { data: { status: string; attempts: number }[] };
    assert.deepEqual(data.map((d) => [d.status, d.attempts]), [['delivered', 3]]);
  });

  test('dropBrowser: no callback reaches the shop page, only the webhook', async () => {
    await setFaults({ dropBrowser: true });
    const p = paymentFor(A);
    const { result, done } = await purchase(p);
    assert.equal(result, undefined);
    assert.deepEqual(done.messages, []);
    const [hook] = await orderWebhooks(p.shop_transaction_no);
    assert.equal(atoneTransactionState(await readBackAtoneTransaction(apiA, hook!.body)), 'authorized');
  });

  test('webhookFirst: the webhook has landed before the modal can call succeeded', async () => {
    await setFaults({ webhookFirst: true });
    const p = paymentFor(A);
    const sid = await session(p);
    const confirm = await login(sid);
    const m = /<form id="atone-authorize" method="post" action="([^"]+)"/.exec(confirm.html)!;
    const res = await fetch(origin + unescape(m[1]!), { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: '', redirect: 'manual' });
    assert.equal(res.status, 303);
    assert.equal(orderHits(p.shop_transaction_no).length, 1, 'delivered before the answer');
    assert.equal((await modal(sid)).messages[0]!.event, 'succeeded');
  });

  test('webhookDelayMs: the callback wins the race, the webhook follows', async () => {
    await setFaults({ webhookDelayMs: 300 });
    const p = paymentFor(A);
    const { result } = await purchase(p);
    assert.equal(result!.event, 'succeeded');
    assert.equal(orderHits(p.shop_transaction_no).length, 0);
    await orderWebhooks(p.shop_transaction_no);
  });

  test('duplicateWebhooks: the same bytes twice; dropWebhooks: none', async () => {
    await setFaults({ duplicateWebhooks: true });
    const p = paymentFor(A);
    await purchase(p);
    const twice = await orderWebhooks(p.shop_transaction_no, 2);
    assert.deepEqual(twice[0]!.body, twice[1]!.body);
    assert.equal(twice[0]!.headers['np-confirmation-checksum'], twice[1]!.headers['np-confirmation-checksum']);

    await setFaults({ duplicateWebhooks: false, dropWebhooks: true });
    const q = paymentFor(A);
    const { result } = await purchase(q);
    assert.equal(result!.event, 'succeeded');
    await sleep(100);
    assert.equal(orderHits(q.shop_transaction_no).length, 0);
  });

  test('fault switches are checked; the overview page lists what happened', async () => {
    const bad = await fetch(`${base}/api/faults`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"dropBrowser":"yes","nope":1}' });
    assert.equal(bad.status, 400);
    const faults = (await (await fetch(`${base}/api/faults`)).json()) as Record<string, unknown>;
    assert.equal(faults.dropBrowser, false);
    const overview = await fetch(`${base}/`);
    assert.equal(overview.status, 200);
    const html = await overview.text();
    assert.match(html, /atone sandbox/);
    assert.match(html, /tr_[A-Za-z0-9]{16}/);
    assert.ok(!html.includes(A.secretKey), 'secrets are never shown in full');
  });
});
