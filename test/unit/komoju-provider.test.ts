import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { computeKomojuSignature, type KomojuPayment } from '../../src/gateways/komoju/index.js';
import { komojuProvider, orderAmountOf, paymentFacts } from '../../src/payments/komoju.js';
import type { AttemptContext, NotificationResult } from '../../src/payments/provider.js';

/*
 * The KOMOJU adapter's reading of webhooks and payment objects: what becomes a fact, with which key
 * and which amount. The end-to-end paths (simulator, database) are in test/integration/komoju-flow.
 */

const SECRET = 'whsec_current_0123';
const OLD_SECRET = 'whsec_previous_0123';
const settings = { 'komoju.enabled': true, 'komoju.secretKey': 'sk_test_x', 'komoju.apiUrl': 'http://127.0.0.1:9/api/v1', 'komoju.webhookSecret': SECRET };

function payment(overrides: Partial<KomojuPayment> = {}): KomojuPayment {
  return {
    id: 'pay_1',
    resource: 'payment',
    status: 'captured',
    amount: 3000,
    total: 3000,
    payment_method_fee: 0,
    currency: 'JPY',
    external_order_num: 'K261123-ABCDEFGH-1',
    session: 'sess_1',
    payment_details: { type: 'credit_card' },
    amount_refunded: 0,
    refunds: [],
    ...overrides,
  };
}

function event(type: string, data: unknown, id = 'evt_1'): Buffer {
  return Buffer.from(JSON.stringify({ id, type, resource: 'event', data, created_at: '2026-11-23T00:00:00Z', reason: null }));
}

async function deliver(body: Buffer, headers: Record<string, string | undefined>, s: Record<string, string | boolean> = settings): Promise<NotificationResult> {
  return komojuProvider().parseNotification({ rawBody: body, headers, settings: s, remoteAddress: '127.0.0.1' });
}

const signed = (body: Buffer, secret = SECRET) => ({ 'x-komoju-signature': computeKomojuSignature(body, secret), 'x-komoju-id': 'dlv_1', 'x-komoju-event': 'x' });

describe('KOMOJU webhooks', () => {
  test('a captured payment signed over the raw body is one captured fact keyed by payment and state', async () => {
    const body = event('payment.captured', payment());
    const result = await deliver(body, signed(body));
    assert.ok('verified' in result && result.verified, JSON.stringify(result));
    assert.equal(result.reply.status, 200);
    assert.deepEqual(result.facts.map((f) => [f.eventKey, f.merchantRef, f.fact]), [['pay_1:captured:3000', 'K261123-ABCDEFGH-1', { type: 'captured', amount: 3000 }]]);
    assert.equal(result.facts[0]!.gatewayRef, 'sess_1');
  });

  test('forged, missing, wrongly keyed and re-serialised bodies are refused with 401 and no fact', async () => {
    const body = event('payment.captured', payment());
    const reserialised = Buffer.from(JSON.stringify(JSON.parse(body.toString()), null, 2));
    const cases: [string, Buffer, Record<string, string | undefined>][] = [
      ['missing header', body, {}],
      ['empty header', body, { 'x-komoju-signature': '' }],
      ['other secret', body, signed(body, 'whsec_attacker_000')],
      ['re-serialised JSON', reserialised, signed(body)],
      ['amount changed after signing', Buffer.from(body.toString().replace('3000', '1')), signed(body)],
    ];
    for (const [what, raw, headers] of cases) {
      const result = await deliver(raw, headers);
      assert.ok('rejected' in result, `${what}: refused`);
      assert.equal(result.reply.status, 401, what);
    }
  });

  test('during a rotation the previous secret is accepted too, and only while it is configured', async () => {
    const body = event('payment.captured', payment());
    const rotating = { ...settings, 'komoju.webhookSecretPrevious': OLD_SECRET };
    assert.ok('verified' in (await deliver(body, signed(body, OLD_SECRET), rotating)), '\'verified\' in (await deliver(body, signed(body, OLD_SECRET), rotating))');
    assert.ok('rejected' in (await deliver(body, signed(body, OLD_SECRET))), '\'rejected\' in (await deliver(body, signed(body, OLD_SECRET)))');
  });

  test('a shop without a webhook secret refuses every webhook', async () => {
    const body = event('payment.captured', payment());
    const { 'komoju.webhookSecret': _, ...noSecret } = settings;
    const result = await deliver(body, signed(body), noSecret);
    assert.ok('rejected' in result && /webhookSecret/.test(result.reason), '\'rejected\' in result && /webhookSecret/.test(result.reason)');
  });

  test('ping, payment.updated and unknown types are acknowledged with 2xx and no fact', async () => {
    for (const [type, data] of [['ping', {}], ['payment.updated', payment()], ['customer.created', { id: 'cus_1', resource: 'customer' }], ['brand.new.type', {}]] as const) {
      const body = event(type, data);
      const result = await deliver(body, signed(body));
      assert.ok('verified' in result && result.verified, type);
      assert.equal(result.reply.status, 200, type);
      // payment.updated carries the payment as it is now: its state is applied like any other news.
      assert.deepEqual(result.facts.map((f) => f.eventKey), type === 'payment.updated' ? ['pay_1:captured:3000'] : [], type);
    }
  });

  test('a signed body that is not an event is a 400, not a crash', async () => {
    const body = Buffer.from('{"no":"id"}');
    const result = await deliver(body, signed(body));
    assert.ok('rejected' in result, '\'rejected\' in result');
    assert.equal(result.reply.status, 400);
  });

  test('a payment converted into another currency is read back, not trusted for its amount', async () => {
    const body = event('payment.captured', payment({ currency: 'USD', amount: 20, total: 20 }));
    const result = await deliver(body, signed(body));
    assert.ok('verified' in result && result.verified === false, '\'verified\' in result && result.verified === false');
    assert.equal(result.merchantRef, 'K261123-ABCDEFGH-1');
  });

  test('a cancelled or expired payment is read back, not applied: it may be a declined try beside the payment that paid', async () => {
    for (const [type, status] of [['payment.cancelled', 'cancelled'], ['payment.expired', 'expired'], ['payment.updated', 'expired']] as const) {
      const body = event(type, payment({ status, payment_details: { type: 'credit_card' } }));
      const result = await deliver(body, signed(body));
      assert.ok('verified' in result && result.verified === false, `${type} (${status}): ${JSON.stringify(result)}`);
      assert.equal(result.merchantRef, 'K261123-ABCDEFGH-1');
      assert.equal(result.reply.status, 200, 'acknowledged as before');
    }
  });

  test('a payment.failed is no fact: the session stays open for another card', async () => {
    const body = event('payment.failed', payment({ status: 'pending' }));
    const result = await deliver(body, signed(body));
    assert.ok('verified' in result && result.verified, '\'verified\' in result && result.verified');
    assert.deepEqual(result.facts, []);
  });
});

describe('KOMOJU payment objects as facts', () => {
  test('the order amount is the total minus the payment-method fee', () => {
    assert.equal(orderAmountOf(payment({ amount: 3000, total: 3190, payment_method_fee: 190 })), 3000);
    assert.equal(orderAmountOf(payment({ amount: 3000, total: undefined, payment_method_fee: undefined })), 3000);
    assert.equal(orderAmountOf(payment({ currency: 'USD' }), 3000), 3000);
    assert.equal(orderAmountOf(payment({ currency: 'USD' })), undefined);
  });

  test('konbini authorized means waiting for the customer, with what they need to pay', () => {
    const konbini = payment({
      status: 'authorized',
      total: 3190,
      payment_method_fee: 190,
      payment_deadline: '2026-11-26T14:59:59Z',
      payment_details: { type: 'konbini', store: 'lawson', confirmation_code: '1234', receipt: 'R-1', instructions_url: 'https://example.test/i' },
    });
    const [fact, ...rest] = paymentFacts(konbini, 'ref');
    assert.equal(rest.length, 0);
    assert.deepEqual(fact!.fact, { type: 'awaiting_payment', amount: 3000 });
    assert.equal(fact!.eventKey, 'pay_1:awaiting');
    assert.deepEqual(fact!.details, {
      method: 'konbini',
      instructions: { store: 'lawson', confirmationCode: '1234', receipt: 'R-1', url: 'https://example.test/i', deadline: '2026-11-26T14:59:59Z', fee: 190 },
    });
  });

  test('card authorized (manual capture) is an authorization', () => {
    assert.deepEqual(paymentFacts(payment({ status: 'authorized' }), 'ref').map((f) => f.fact), [{ type: 'authorized', amount: 3000 }]);
  });

  test('refunds are one fact each, keyed by the refund id, after the capture they belong to', () => {
    const refunds = [
      { id: 'ref_a', resource: 'refund' as const, amount: 1000, currency: 'JPY', payment: 'pay_1', created_at: 'x' },
      { id: 'ref_b', resource: 'refund' as const, amount: 2000, currency: 'JPY', payment: 'pay_1', created_at: 'y' },
    ];
    const facts = paymentFacts(payment({ status: 'refunded', amount_refunded: 3000, refunds }), 'ref');
    assert.deepEqual(facts.map((f) => [f.eventKey, f.fact]), [
      ['pay_1:captured:3000', { type: 'captured', amount: 3000 }],
      ['refund:ref_a', { type: 'refunded', amount: 1000, refundId: 'ref_a' }],
      ['refund:ref_b', { type: 'refunded', amount: 2000, refundId: 'ref_b' }],
    ]);
  });

  test('a konbini slip KOMOJU shows as pending (older samples) waits for the customer too, as the same fact', () => {
    const slip = { total: 3190, payment_method_fee: 190, payment_deadline: '2026-11-26T14:59:59Z', payment_details: { type: 'konbini', store: 'lawson', confirmation_code: '1234', receipt: 'R-1' } };
    const pending = paymentFacts(payment({ status: 'pending', ...slip }), 'ref');
    const authorized = paymentFacts(payment({ status: 'authorized', ...slip }), 'ref');
    assert.deepEqual(pending.map((f) => [f.eventKey, f.fact]), [['pay_1:awaiting', { type: 'awaiting_payment', amount: 3000 }]]);
    assert.deepEqual(pending.map((f) => f.eventKey), authorized.map((f) => f.eventKey), 'a later authorized is the same news');
  });

  test('a pending card says nothing; cancelled and expired end the attempt', () => {
    assert.deepEqual(paymentFacts(payment({ status: 'pending' }), 'ref'), []);
    assert.deepEqual(paymentFacts(payment({ status: 'cancelled' }), 'ref').map((f) => [f.eventKey, f.fact.type]), [['pay_1:cancelled', 'cancelled']]);
    assert.deepEqual(paymentFacts(payment({ status: 'expired' }), 'ref').map((f) => [f.eventKey, f.fact.type]), [['pay_1:expired', 'expired']]);
  });
});

describe('KOMOJU methods', () => {
  test('offered only when enabled and configured, as the shop lists them', () => {
    const p = komojuProvider();
    assert.deepEqual(p.methods({ ...settings, 'komoju.enabled': false }), []);
    assert.deepEqual(p.methods({ 'komoju.enabled': true, 'komoju.apiUrl': 'http://x' }), []);
    assert.deepEqual(p.methods(settings), ['credit_card', 'konbini']);
    assert.deepEqual(p.methods({ ...settings, 'komoju.paymentTypes': 'konbini,pay_easy' }), ['konbini', 'pay_easy']);
  });
});

describe('KOMOJU: ending an attempt whose reservation expired', () => {
  /** KOMOJU's session API as this adapter uses it, answering from `session` (a test double of the gateway, not of kessai). */
  function gateway(session: Record<string, unknown>, opts: { refuseCancel?: () => void } = {}) {
    const calls: { method: string; path: string; key: string | null }[] = [];
    const json = (status: number, body: unknown) => new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } });
    const fetchImpl = (async (url: string | URL, init?: RequestInit) => {
      const path = new URL(url).pathname.replace('/api/v1', '');
      const headers = (init?.headers ?? {}) as Record<string, string>;
      calls.push({ method: init?.method ?? 'GET', path, key: headers['x-komoju-idempotency'] ?? null });
      if (path === '/sessions/sess_1' && init?.method === 'GET') return json(200, session);
      if (path === '/sessions/sess_1/cancel' && init?.method === 'POST') {
        if (session.status !== 'pending' || opts.refuseCancel) {
          opts.refuseCancel?.();
          return json(422, { error: { code: 'unprocessable_entity', message: `session is ${String(session.status)}`, param: null, details: {} } });
        }
        session.status = 'cancelled';
        return json(200, session);
      }
      return json(404, { error: { code: 'not_found', message: path, param: null, details: {} } });
    }) as typeof fetch;
    return { calls, provider: komojuProvider({ fetchImpl }) };
  }

  const pendingSession = () => ({ id: 'sess_1', resource: 'session', status: 'pending', amount: 3000, currency: 'JPY', session_url: 'http://x/sessions/sess_1', payment: null });
  const attemptContext = { attempt: { id: 'pay_att_1', merchant_ref: 'K261123-ABCDEFGH-1', gateway_ref: 'sess_1' }, settings } as unknown as AttemptContext;
  const key = 'kessai-expire-pay_att_1';

  test('an open session is cancelled with the given key; the attempt is stated expired, not cancelled', async () => {
    const { calls, provider } = gateway(pendingSession());
    const facts = await provider.abandon!(attemptContext, key);
    assert.deepEqual(calls.filter((c) => c.method === 'POST'), [{ method: 'POST', path: '/sessions/sess_1/cancel', key }]);
    assert.deepEqual(facts.map((f) => [f.eventKey, f.merchantRef, f.fact]), [['sess_1:expired', 'K261123-ABCDEFGH-1', { type: 'expired' }]]);
  });

  test('a session a payment completed is not cancelled: its payment decides', async () => {
    const { calls, provider } = gateway({ ...pendingSession(), status: 'completed', payment: payment() });
    const facts = await provider.abandon!(attemptContext, key);
    assert.deepEqual(calls.filter((c) => c.method === 'POST'), []);
    assert.deepEqual(facts.map((f) => [f.eventKey, f.fact]), [['pay_1:captured:3000', { type: 'captured', amount: 3000 }]]);
  });

  test('a cancel KOMOJU refuses because the customer paid a moment ago answers that payment', async () => {
    const session: Record<string, unknown> = pendingSession();
    const { calls, provider } = gateway(session, {
      // Between our look and our cancel the customer pays: KOMOJU refuses the cancel of a completed session.
      refuseCancel: () => Object.assign(session, { status: 'completed', payment: payment() }),
    });
    const facts = await provider.abandon!(attemptContext, key);
    assert.deepEqual(calls.map((c) => `${c.method} ${c.path}`), ['GET /sessions/sess_1', 'POST /sessions/sess_1/cancel', 'GET /sessions/sess_1']);
    assert.deepEqual(facts.map((f) => f.fact), [{ type: 'captured', amount: 3000 }]);
  });

  test('a cancel refused for another reason leaves nothing to apply: the order simply expires', async () => {
    const { provider } = gateway(pendingSession(), { refuseCancel: () => undefined });
    assert.deepEqual(await provider.abandon!(attemptContext, key), []);
  });
});
