import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import Fastify, { type FastifyInstance } from 'fastify';
import type { PaymentAttempt } from '../../src/db/schema.js';
import type { AttemptContext, GatewayFact, NotificationResult } from '../../src/payments/provider.js';
import { testpayProvider, TestpayApiError } from '../../src/payments/testpay.js';
import { testpaySandbox } from '../../src/sandbox/testpay.js';

/*
 * The testpay adapter against the real testpay sandbox over loopback HTTP: a store-shaped webhook
 * receiver on one side, the gateway's Fastify plugin on the other, nothing mocked in between.
 */

const SECRET = 'testpay-unit-secret';
const settings = { 'testpay.enabled': true, 'testpay.secret': SECRET };

interface Received {
  headers: IncomingHttpHeaders;
  body: Buffer;
}

let gateway: FastifyInstance;
let receiver: Server;
let receiverUrl: string;
let baseUrl: string;
const webhooks: Received[] = [];
/** How many of the next webhooks the "store" refuses with 503, to exercise the gateway's retries. */
let refuseNext = 0;

const provider = () => testpayProvider({ baseUrl, timeoutMs: 2_000 });

before(async () => {
  receiver = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (refuseNext > 0) {
        refuseNext--;
        res.writeHead(503).end();
        return;
      }
      webhooks.push({ headers: req.headers, body: Buffer.concat(chunks) });
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
    });
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  receiverUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`;

  gateway = Fastify();
  await gateway.register(testpaySandbox({ secret: SECRET }), { prefix: '/sandbox/testpay' });
  await gateway.listen({ host: '127.0.0.1', port: 0 });
  baseUrl = `http://127.0.0.1:${(gateway.server.address() as AddressInfo).port}/sandbox/testpay`;
});

after(async () => {
  await gateway.close();
  await new Promise((resolve) => receiver.close(resolve));
});

let seq = 0;
function attempt(overrides: { amount?: number; method?: string | null; gatewayRef?: string | null; merchantRef?: string } = {}): AttemptContext {
  const amount = overrides.amount ?? 1000;
  const merchantRef = overrides.merchantRef ?? `KS-${process.pid}-${++seq}`;
  const row: PaymentAttempt = {
    id: `att_${seq}`,
    order_id: `ord_${seq}`,
    shop_id: 'default',
    provider: 'testpay',
    method: overrides.method === undefined ? 'card' : overrides.method,
    merchant_ref: merchantRef,
    state: 'pending',
    amount,
    captured_amount: 0,
    refunded_amount: 0,
    gateway_ref: overrides.gatewayRef ?? null,
    details: '{}',
    created_at: new Date().toISOString(),
    updated_at: new Date().toISOString(),
  };
  return {
    attempt: row,
    settings,
    order: { id: row.order_id, number: `100${seq}`, total: amount, email: 'fan@example.jp', customerName: '山田 花子', lines: [{ name: 'CD', unitPrice: amount, quantity: 1 }] },
    urls: { returnUrl: 'http://shop.test/orders/1/return', cancelUrl: 'http://shop.test/orders/1/cancelled', notifyUrl: `${receiverUrl}/webhooks/testpay/default` },
  };
}

/** Starts a payment at testpay and returns the attempt as the store would hold it afterwards. */
async function started(overrides: Parameters<typeof attempt>[0] = {}): Promise<{ a: AttemptContext; payUrl: string }> {
  const a = attempt(overrides);
  const { action, gatewayRef } = await provider().start(a);
  assert.equal(action.type, 'redirect');
  assert.ok(gatewayRef?.startsWith('tp_'), 'gatewayRef?.startsWith(\'tp_\')');
  a.attempt.gateway_ref = gatewayRef ?? null;
  return { a, payUrl: (action as { url: string }).url };
}

/** The customer presses a button on the hosted page; returns where the browser is sent. */
async function choose(payUrl: string, choice: string): Promise<{ status: number; location: string | null }> {
  const res = await fetch(`${payUrl}/${choice}`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: '',
    redirect: 'manual',
  });
  await res.arrayBuffer();
  return { status: res.status, location: res.headers.get('location') };
}

const api = (path: string, init: RequestInit = {}) =>
  fetch(`${baseUrl}${path}`, { ...init, headers: { authorization: `Bearer ${SECRET}`, 'content-type': 'application/json', ...init.headers } });

async function setFaults(faults: Record<string, unknown>): Promise<void> {
  const res = await api('/api/faults', { method: 'POST', body: JSON.stringify(faults) });
  assert.equal(res.status, 200);
}

/** The webhooks received for one testpay payment, parsed, in arrival order. */
function webhooksFor(gatewayRef: string): { raw: Received; event: { id: string; type: string } }[] {
  return webhooks
    .map((raw) => ({ raw, event: JSON.parse(raw.body.toString('utf8')) as { id: string; type: string; data: { id: string } } }))
    .filter((w) => w.event.data.id === gatewayRef);
}

async function eventually<T>(probe: () => T | undefined, ms = 3_000): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const value = probe();
    if (value !== undefined) return value;
    if (Date.now() > until) assert.fail('condition not reached in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

const parse = (w: Received): Promise<NotificationResult> =>
  provider().parseNotification({ rawBody: w.body, headers: w.headers, settings, remoteAddress: '127.0.0.1' });

function verifiedFacts(result: NotificationResult): GatewayFact[] {
  assert.ok('verified' in result && result.verified, `expected a verified notification, got ${JSON.stringify(result)}`);
  assert.equal(result.reply.status, 200);
  return result.facts;
}

const factsOnly = (facts: GatewayFact[]) => facts.map((f) => f.fact);

/** Testpay keys every refund: nothing to mark before sending. */
const unchecked = { sending: () => Promise.reject(new Error('testpay refunds need no mark')), notSent: () => Promise.reject(new Error('testpay refunds need no mark')) };

describe('testpay adapter against the testpay sandbox', () => {
  test('offers card and konbini only when enabled', () => {
    assert.deepEqual(provider().methods(settings), ['card', 'konbini']);
    assert.deepEqual(provider().methods({ 'testpay.enabled': false, 'testpay.secret': SECRET }), []);
    assert.deepEqual(provider().methods({}), []);
  });

  test('card: hosted page, signed webhook, read-back all say captured', async () => {
    const { a, payUrl } = await started({ amount: 1000 });
    const gatewayRef = a.attempt.gateway_ref!;

    const html = await (await fetch(payUrl)).text();
    assert.match(html, /¥1,000/);
    assert.match(html, /カードで支払う/);

    const browser = await choose(payUrl, 'card');
    assert.equal(browser.status, 303);
    assert.equal(browser.location, `http://shop.test/orders/1/return?payment_id=${gatewayRef}`);

    // The gateway sends the webhook before it redirects, so it is already here.
    const [hook] = webhooksFor(gatewayRef);
    assert.ok(hook, 'hook');
    assert.equal(hook.event.type, 'payment.captured');
    const facts = verifiedFacts(await parse(hook.raw));
    assert.deepEqual(facts.map(({ eventKey, merchantRef, gatewayRef: ref, fact }) => ({ eventKey, merchantRef, ref, fact })), [
      { eventKey: hook.event.id, merchantRef: a.attempt.merchant_ref, ref: gatewayRef, fact: { type: 'captured', amount: 1000 } },
    ]);

    const readBack = await provider().readBack(a);
    assert.deepEqual(factsOnly(readBack), [{ type: 'captured', amount: 1000 }]);
    assert.deepEqual((await provider().readBack(a)).map((f) => f.eventKey), readBack.map((f) => f.eventKey), 'read-back keys are stable');

    // A second press (stale tab) changes nothing.
    assert.equal((await choose(payUrl, 'decline')).status, 409);
  });

  test('a notification is accepted only with a valid signature over the exact bytes', async () => {
    const { a, payUrl } = await started();
    await choose(payUrl, 'card');
    const [hook] = webhooksFor(a.attempt.gateway_ref!);
    assert.ok(hook, 'hook');

    const tampered = Buffer.from(hook.raw.body);
    const at = tampered.indexOf('"amount":1000') + '"amount":'.length;
    tampered[at] = '9'.charCodeAt(0); // one byte: 1000 → 9000
    const forged = await parse({ headers: hook.raw.headers, body: tampered });
    assert.ok('rejected' in forged, '\'rejected\' in forged');
    assert.equal(forged.reply.status, 401);

    const { ['x-testpay-signature']: _dropped, ...unsigned } = hook.raw.headers;
    const missing = await parse({ headers: unsigned, body: hook.raw.body });
    assert.ok('rejected' in missing, '\'rejected\' in missing');
    assert.match(missing.reason, /missing or malformed/);

    const malformed = await parse({ headers: { ...hook.raw.headers, 'x-testpay-signature': 'abc' }, body: hook.raw.body });
    assert.ok('rejected' in malformed, '\'rejected\' in malformed');

    const otherSecret = await provider().parseNotification({ rawBody: hook.raw.body, headers: hook.raw.headers, settings: { ...settings, 'testpay.secret': 'another-secret' }, remoteAddress: '127.0.0.1' });
    assert.ok('rejected' in otherSecret, '\'rejected\' in otherSecret');

    // Re-serialized JSON is not what was signed: the developer is told so instead of a silent reject.
    await assert.rejects(
      provider().parseNotification({ rawBody: JSON.parse(hook.raw.body.toString()) as Buffer, headers: hook.raw.headers, settings, remoteAddress: '127.0.0.1' }),
      /raw request body as a Buffer/,
    );
  });

  test('refunds: a repeated Idempotency-Key refunds once; refunds never exceed the capture', async () => {
    const { a, payUrl } = await started({ amount: 1000 });
    await choose(payUrl, 'card');

    const first = await provider().refund(a, 300, 'refund-key-1', unchecked);
    const again = await provider().refund(a, 300, 'refund-key-1', unchecked);
    assert.deepEqual(again, first);
    const refunds = first.filter((f) => f.fact.type === 'refunded');
    assert.equal(refunds.length, 1);
    assert.deepEqual(factsOnly(first), [{ type: 'captured', amount: 1000 }, { type: 'refunded', amount: 300, refundId: refunds[0]!.eventKey.slice('refund:'.length) }]);

    const remote = (await (await api(`/api/payments/${a.attempt.gateway_ref}`)).json()) as { status: string; refunded_amount: number; refunds: unknown[] };
    assert.equal(remote.status, 'partially_refunded');
    assert.equal(remote.refunded_amount, 300);
    assert.equal(remote.refunds.length, 1);

    // The webhook for the refund carries the same event key as the read-back, so the store applies it once.
    const hook = await eventually(() => webhooksFor(a.attempt.gateway_ref!).find((w) => w.event.type === 'payment.refunded'));
    assert.deepEqual(verifiedFacts(await parse(hook.raw)).map((f) => f.eventKey), [refunds[0]!.eventKey]);

    await assert.rejects(provider().refund(a, 800, 'refund-key-2', unchecked), (e: unknown) => e instanceof TestpayApiError && e.status === 422 && e.code === 'amount_exceeds_refundable');
    await assert.rejects(provider().refund(a, 200, 'refund-key-1', unchecked), (e: unknown) => e instanceof TestpayApiError && e.code === 'idempotency_key_reused');

    const rest = await provider().refund(a, 700, 'refund-key-3', unchecked);
    assert.deepEqual(factsOnly(rest).filter((f) => f.type === 'refunded').map((f) => 'amount' in f && f.amount), [300, 700]);
    assert.equal(((await (await api(`/api/payments/${a.attempt.gateway_ref}`)).json()) as { status: string }).status, 'refunded');
  });

  test('money operations require an Idempotency-Key', async () => {
    const { a } = await started();
    const res = await api(`/api/payments/${a.attempt.gateway_ref}/cancel`, { method: 'POST', body: '{}' });
    assert.equal(res.status, 400);
    assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'idempotency_key_required');
  });

  test('konbini: awaiting with a receipt number, then paid at the store', async () => {
    const { a, payUrl } = await started({ method: 'konbini', amount: 2500 });
    const gatewayRef = a.attempt.gateway_ref!;
    assert.doesNotMatch(await (await fetch(payUrl)).text(), /カードで支払う/, 'a konbini attempt offers no card button');

    assert.equal((await choose(payUrl, 'konbini')).status, 303);
    const [awaiting] = webhooksFor(gatewayRef);
    assert.ok(awaiting, 'awaiting');
    const [fact] = verifiedFacts(await parse(awaiting.raw));
    assert.deepEqual(fact?.fact, { type: 'awaiting_payment', amount: 2500 });
    const konbini = (fact?.details as { konbini: { receipt: string; deadline: string } }).konbini;
    assert.match(konbini.receipt, /^\d{12}$/);
    const daysAhead = (Date.parse(konbini.deadline) - Date.now()) / 86_400_000;
    assert.ok(daysAhead > 2.9 && daysAhead <= 3, `deadline ${konbini.deadline} is three days ahead`);

    const readBack = await provider().readBack(a);
    assert.deepEqual(factsOnly(readBack), [{ type: 'awaiting_payment', amount: 2500 }]);
    assert.deepEqual(readBack[0]?.details, { konbini });
    assert.match(await (await fetch(payUrl)).text(), new RegExp(konbini.receipt));

    assert.equal((await choose(payUrl, 'konbini-paid')).status, 303);
    const paid = webhooksFor(gatewayRef)[1];
    assert.ok(paid, 'paid');
    assert.deepEqual(factsOnly(verifiedFacts(await parse(paid.raw))), [{ type: 'captured', amount: 2500 }]);
    assert.deepEqual(factsOnly(await provider().readBack(a)), [{ type: 'captured', amount: 2500 }]);
  });

  test('manual capture: authorized on the page, captured through the API', async () => {
    const { a, payUrl } = await started({ method: 'card_manual', amount: 1500 });
    await choose(payUrl, 'card');
    assert.deepEqual(factsOnly(await provider().readBack(a)), [{ type: 'authorized', amount: 1500 }]);

    await assert.rejects(provider().capture(a, 1501, 'cap-1'), (e: unknown) => e instanceof TestpayApiError && e.code === 'amount_exceeds_authorized');
    assert.deepEqual(factsOnly(await provider().capture(a, 1500, 'cap-2')), [{ type: 'captured', amount: 1500 }]);
    await assert.rejects(provider().cancel(a, 'cancel-1'), (e: unknown) => e instanceof TestpayApiError && e.code === 'invalid_status');
  });

  test('decline fails with a reason; cancel sends the customer to the cancel URL', async () => {
    const declined = await started();
    await choose(declined.payUrl, 'decline');
    assert.deepEqual(factsOnly(await provider().readBack(declined.a)), [{ type: 'failed', reason: 'card_declined' }]);

    const cancelled = await started();
    const browser = await choose(cancelled.payUrl, 'cancel');
    assert.equal(browser.location, `http://shop.test/orders/1/cancelled?payment_id=${cancelled.a.attempt.gateway_ref}`);
    assert.deepEqual(factsOnly(await provider().readBack(cancelled.a)), [{ type: 'cancelled' }]);
  });

  test('read-back finds an attempt by merchant reference before the gateway id is known', async () => {
    const { a, payUrl } = await started();
    await choose(payUrl, 'card');
    const withoutRef = { ...a, attempt: { ...a.attempt, gateway_ref: null } };
    const facts = await provider().readBack(withoutRef);
    assert.equal(facts[0]?.gatewayRef, a.attempt.gateway_ref);
    assert.deepEqual(await provider().readBack(attempt({ merchantRef: 'never-started' })), []);
  });

  test('dropped webhooks: nothing arrives, read-back still sees the payment', async () => {
    const { a, payUrl } = await started();
    await setFaults({ webhooks: 'drop' });
    try {
      await choose(payUrl, 'card');
    } finally {
      await setFaults({ webhooks: 'deliver' });
    }
    assert.equal(webhooksFor(a.attempt.gateway_ref!).length, 0);
    assert.deepEqual(factsOnly(await provider().readBack(a)), [{ type: 'captured', amount: 1000 }]);
  });

  test('a store that is down gets the webhook again later', async () => {
    const { a, payUrl } = await started();
    refuseNext = 1;
    await choose(payUrl, 'card');
    const hook = await eventually(() => webhooksFor(a.attempt.gateway_ref!)[0]);
    assert.equal(hook.event.type, 'payment.captured');
  });

  test('gateway errors and timeouts surface as errors the job can retry', async () => {
    const { a } = await started();
    await setFaults({ api: 'error500' });
    try {
      await assert.rejects(provider().readBack(a), (e: unknown) => e instanceof TestpayApiError && e.status === 500);
    } finally {
      await setFaults({ api: 'ok' });
    }
    await setFaults({ api: 'slow', slowMs: 300 });
    try {
      await assert.rejects(testpayProvider({ baseUrl, timeoutMs: 100 }).readBack(a), { name: 'TimeoutError' });
    } finally {
      await setFaults({ api: 'ok' });
    }
    assert.deepEqual(await provider().readBack(a), []);
  });

  test('the API refuses a wrong secret, names the bad field, and refuses a reused merchant_ref', async () => {
    const unauth = await fetch(`${baseUrl}/api/payments/tp_x`, { headers: { authorization: 'Bearer wrong' } });
    assert.equal(unauth.status, 401);

    const base = { merchant_ref: `dup-${process.pid}`, amount: 500, currency: 'JPY', return_url: 'http://shop.test/r', cancel_url: 'http://shop.test/c', notify_url: `${receiverUrl}/n`, email: 'a@example.jp', capture: 'auto' };
    const bad = await api('/api/payments', { method: 'POST', body: JSON.stringify({ ...base, amount: -5 }) });
    assert.equal(bad.status, 400);
    assert.equal(((await bad.json()) as { error: { field: string } }).error.field, 'amount');

    assert.equal((await api('/api/payments', { method: 'POST', body: JSON.stringify(base) })).status, 201);
    const dup = await api('/api/payments', { method: 'POST', body: JSON.stringify(base) });
    assert.equal(dup.status, 409);
    assert.equal(((await dup.json()) as { error: { code: string } }).error.code, 'duplicate_merchant_ref');
  });

  test('a shop without testpay.secret gets a clear error', async () => {
    await assert.rejects(provider().readBack({ ...attempt(), settings: { 'testpay.enabled': true } }), /testpay\.secret is not set/);
  });
});
