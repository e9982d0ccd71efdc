import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  computeKomojuSignature,
  KomojuApiError,
  komojuApi,
  KomojuEventParseError,
  KomojuTransportError,
  parseKomojuEvent,
  phpUrlencode,
  signLegacyHostedPageUrl,
  validateLegacyReturn,
  verifyKomojuWebhook,
} from '../../src/gateways/komoju/index.js';

/*
 * KOMOJU protocol library: the reference's COMPUTED vectors (gateways.md §3.4, §3.5), the webhook
 * check's failure modes, and the API client against a scripted KOMOJU on loopback.
 */

// Known-answer vectors from reference/gateways.md §3.4 and §3.5 (also reference/vectors.json, komoju.*),
// inlined so the tests do not depend on a file outside the repository. COMPUTED: built with the
// documented algorithm, not captured from KOMOJU.
const WH = {
  secret: 'whsec_test',
  body: '{"id":"evt_1","type":"payment.captured","resource":"event","data":{"id":"pay_1","resource":"payment","status":"captured","amount":1000,"currency":"JPY","external_order_num":"ORDER1"},"created_at":"2024-01-01T00:00:00Z"}',
  x_komoju_signature: 'd19a26fc5ac6f9e3c9e93a0ea76fabf852a4609fd0c82cdbdec609995a088e97',
};
const LEGACY = {
  secret: 'sk_test_secret',
  signed_string:
    '/en/api/MERCHANT_UUID/transactions/credit_card/new?timestamp=1700000000&transaction%5Bamount%5D=1000&transaction%5Bcancel_url%5D=https%3A%2F%2Fexample.com%2Fcancel&transaction%5Bcurrency%5D=JPY&transaction%5Bexternal_order_num%5D=ORDER1&transaction%5Breturn_url%5D=https%3A%2F%2Fexample.com%2Freturn',
  hmac_hex: '5d53197538fabed23c8d1018db4e663d2f88e67cdf0692bd15e581837a9efe1a',
};

describe('webhook signature', () => {
  test('COMPUTED vector (reference §3.4)', () => {
    assert.equal(computeKomojuSignature(WH.body, WH.secret), WH.x_komoju_signature);
    assert.equal(verifyKomojuWebhook(Buffer.from(WH.body, 'utf8'), WH.x_komoju_signature, [WH.secret]), true);
    assert.equal(verifyKomojuWebhook(WH.body, WH.x_komoju_signature, [WH.secret]), true);
    assert.equal(verifyKomojuWebhook(WH.body, ` ${WH.x_komoju_signature.toUpperCase()}\n`, [WH.secret]), true);
  });

  test('one byte changed anywhere in the body → invalid', () => {
    const raw = Buffer.from(WH.body, 'utf8');
    for (const i of [0, 10, raw.length >> 1, raw.length - 1]) {
      const tampered = Buffer.from(raw);
      tampered[i] = tampered[i]! ^ 0x01;
      assert.equal(verifyKomojuWebhook(tampered, WH.x_komoju_signature, [WH.secret]), false, `byte ${i}`);
    }
    // A one-character change in the signature too.
    const sig = WH.x_komoju_signature;
    assert.equal(verifyKomojuWebhook(raw, (sig[0] === 'a' ? 'b' : 'a') + sig.slice(1), [WH.secret]), false);
  });

  test('the same JSON re-serialised → invalid (verify the raw bytes)', () => {
    const reserialised = JSON.stringify(JSON.parse(WH.body), null, 1);
    assert.equal(verifyKomojuWebhook(reserialised, WH.x_komoju_signature, [WH.secret]), false);
  });

  test('rotation: the second secret verifies; neither does not', () => {
    assert.equal(verifyKomojuWebhook(WH.body, WH.x_komoju_signature, ['whsec_new', WH.secret]), true);
    assert.equal(verifyKomojuWebhook(WH.body, WH.x_komoju_signature, [WH.secret, 'whsec_new']), true);
    assert.equal(verifyKomojuWebhook(WH.body, WH.x_komoju_signature, ['whsec_new', 'whsec_other']), false);
  });

  test('missing or malformed header → invalid, not an exception', () => {
    for (const sig of [undefined, '', 'abc', WH.x_komoju_signature.slice(0, 63), `${WH.x_komoju_signature}00`, 'z'.repeat(64), [WH.x_komoju_signature]]) {
      assert.equal(verifyKomojuWebhook(WH.body, sig, [WH.secret]), false, String(sig));
    }
  });

  test('parsed JSON → TypeError that says so; bad secrets → TypeError', () => {
    const parsed = JSON.parse(WH.body) as unknown;
    assert.throws(() => verifyKomojuWebhook(parsed as string, WH.x_komoju_signature, [WH.secret]), (e: unknown) => e instanceof TypeError && /parsed JSON/.test(e.message));
    assert.throws(() => verifyKomojuWebhook(WH.body, WH.x_komoju_signature, []), TypeError);
    assert.throws(() => verifyKomojuWebhook(WH.body, WH.x_komoju_signature, ['']), TypeError);
    assert.throws(() => verifyKomojuWebhook(WH.body, WH.x_komoju_signature, ['a', 'b', 'c']), TypeError);
  });

  test('parseKomojuEvent: the envelope, and clear errors', () => {
    const event = parseKomojuEvent(Buffer.from(WH.body));
    assert.equal(event.id, 'evt_1');
    assert.equal(event.type, 'payment.captured');
    assert.equal(event.resource, 'event');
    assert.equal(event.created_at, '2024-01-01T00:00:00Z');
    assert.equal(event.data.external_order_num, 'ORDER1');
    assert.deepEqual(parseKomojuEvent('{"id":"evt_p","type":"ping"}').data, {});
    assert.throws(() => parseKomojuEvent('{"id":"evt_1",'), (e: unknown) => e instanceof KomojuEventParseError && /not valid JSON/.test(e.message));
    assert.throws(() => parseKomojuEvent('[]'), KomojuEventParseError);
    assert.throws(() => parseKomojuEvent('{"type":"ping"}'), /no "id"/);
    assert.throws(() => parseKomojuEvent('{"id":"e","type":"x","data":[1]}'), /"data" must be an object/);
    assert.throws(() => parseKomojuEvent({ id: 'e' } as unknown as string), TypeError);
  });
});

describe('legacy hosted page', () => {
  const input = {
    merchantUuid: 'MERCHANT_UUID',
    paymentMethod: 'credit_card',
    secretKey: LEGACY.secret,
    params: {
      'transaction[amount]': 1000,
      'transaction[currency]': 'JPY',
      'transaction[external_order_num]': 'ORDER1',
      'transaction[return_url]': 'https://example.com/return',
      'transaction[cancel_url]': 'https://example.com/cancel',
    },
    now: () => 1700000000,
  };

  test('COMPUTED vector (reference §3.5)', () => {
    const signed = signLegacyHostedPageUrl(input);
    assert.equal(signed.signedString, LEGACY.signed_string);
    assert.equal(signed.hmac, LEGACY.hmac_hex);
    assert.equal(signed.url, `https://komoju.com${LEGACY.signed_string}&hmac=${LEGACY.hmac_hex}`);
    // An explicit timestamp wins over the clock.
    assert.equal(signLegacyHostedPageUrl({ ...input, now: () => 1, params: { ...input.params, timestamp: 1700000000 } }).hmac, LEGACY.hmac_hex);
  });

  test('PHP urlencode rules', () => {
    assert.equal(phpUrlencode('a b~!*\'()[]&=/.-_'), 'a+b%7E%21%2A%27%28%29%5B%5D%26%3D%2F.-_');
    assert.equal(phpUrlencode('テ'), '%E3%83%86');
  });

  test('return validation: the signed URL itself validates; tampering, a missing hmac and options fail', () => {
    const signed = signLegacyHostedPageUrl(input);
    const uri = new URL(signed.url);
    const requestUri = uri.pathname + uri.search;
    const ok = validateLegacyReturn(requestUri, LEGACY.secret);
    assert.equal(ok.valid, true);
    assert.equal(ok.params['transaction[amount]'], '1000');
    assert.equal(ok.params['transaction[return_url]'], 'https://example.com/return');
    assert.equal(validateLegacyReturn(signed.url, LEGACY.secret).valid, true, 'a full URL is accepted');
    // Order of the pairs on the return does not matter (they are sorted), the hmac may come first.
    const reordered = `${uri.pathname}?hmac=${signed.hmac}&${LEGACY.signed_string.split('?')[1]!.split('&').reverse().join('&')}`;
    assert.equal(validateLegacyReturn(reordered, LEGACY.secret).valid, true);

    assert.deepEqual(validateLegacyReturn(requestUri.replace('amount%5D=1000', 'amount%5D=1001'), LEGACY.secret).reason, 'bad_hmac');
    assert.deepEqual(validateLegacyReturn(requestUri, 'sk_test_other').reason, 'bad_hmac');
    assert.deepEqual(validateLegacyReturn(requestUri.replace(/&hmac=.*/, ''), LEGACY.secret).reason, 'missing_hmac');
    assert.deepEqual(validateLegacyReturn(uri.pathname, LEGACY.secret).reason, 'no_query');
    assert.deepEqual(validateLegacyReturn(requestUri, LEGACY.secret, { requiredParams: ['payment_id'] }).reason, 'missing_param');
    assert.equal(validateLegacyReturn(requestUri, LEGACY.secret, { maxTimestampSkewSeconds: 600, now: () => 1700000300 }).valid, true);
    assert.deepEqual(validateLegacyReturn(requestUri, LEGACY.secret, { maxTimestampSkewSeconds: 600, now: () => 1700000601 }).reason, 'timestamp_skew');
  });
});

// ---- the API client against a scripted KOMOJU --------------------------------------------------

interface Seen {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
}

let server: Server;
let baseUrl: string;
const seen: Seen[] = [];
type Answer = (res: ServerResponse) => void;
let script: Answer[] = [];
const json =
  (status: number, body: unknown): Answer =>
  (res) => {
    res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
  };
const never: Answer = () => {
  /* no answer: the client's time-out must fire */
};
const hangUp: Answer = (res) => {
  res.socket?.destroy();
};
const payment = (extra: Record<string, unknown> = {}) => ({ id: 'pay_1', resource: 'payment', status: 'captured', amount: 1000, currency: 'JPY', ...extra });

const SECRET = 'sk_test_abc123';
const api = (extra: Partial<Parameters<typeof komojuApi>[0]> = {}) => komojuApi({ secretKey: SECRET, baseUrl, retryBaseDelayMs: 5, random: () => 0.5, timeoutMs: 2_000, ...extra });

before(async () => {
  server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      const answer = script.shift() ?? json(500, { error: { code: 'unscripted', message: 'no answer scripted' } });
      answer(res);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/api/v1`;
});
after(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});
beforeEach(() => {
  seen.length = 0;
  script = [];
});

describe('komojuApi', () => {
  test('Basic auth is the secret key with an empty password; GET has no idempotency header', async () => {
    script = [json(200, { id: 'sess_1', resource: 'session', status: 'pending', amount: 1000, currency: 'JPY', session_url: 'https://x' })];
    const session = await api().sessions.get('sess_1');
    assert.equal(session.status, 'pending');
    assert.equal(seen.length, 1);
    assert.equal(seen[0]!.method, 'GET');
    assert.equal(seen[0]!.url, '/api/v1/sessions/sess_1');
    assert.equal(seen[0]!.headers.authorization, `Basic ${Buffer.from(`${SECRET}:`).toString('base64')}`);
    assert.equal(seen[0]!.headers['x-komoju-idempotency'], undefined);
  });

  test('POST carries the idempotency key; a retry after a 500 reuses key and body', async () => {
    script = [json(500, { error: { code: 'internal_server_error', message: 'oops' } }), json(200, { id: 'sess_2', resource: 'session', status: 'pending', session_url: 'https://komoju.test/s/2' })];
    const session = await api().sessions.create(
      { amount: 1000, currency: 'JPY', return_url: 'https://shop.test/return', payment_types: ['konbini'], payment_data: { external_order_num: 'O1-AB12CD' } },
      { idempotencyKey: 'order-1-attempt-1' },
    );
    assert.equal(session.session_url, 'https://komoju.test/s/2');
    assert.equal(seen.length, 2);
    for (const s of seen) {
      assert.equal(s.method, 'POST');
      assert.equal(s.url, '/api/v1/sessions');
      assert.equal(s.headers['x-komoju-idempotency'], 'order-1-attempt-1');
      assert.match(String(s.headers['content-type']), /^application\/json/);
    }
    assert.equal(seen[1]!.body, seen[0]!.body);
    assert.equal(JSON.parse(seen[0]!.body).payment_data.external_order_num, 'O1-AB12CD');
  });

  test('409 (same key still in flight) is retried', async () => {
    script = [json(409, { error: { code: 'conflict', message: 'in flight' } }), json(200, payment({ status: 'captured' }))];
    const p = await api().payments.capture('pay_1', { idempotencyKey: 'cap-1' });
    assert.equal(p.status, 'captured');
    assert.equal(seen.length, 2);
    assert.equal(seen[0]!.url, '/api/v1/payments/pay_1/capture');
    assert.equal(seen[1]!.headers['x-komoju-idempotency'], 'cap-1');
  });

  test('a dropped connection is retried; retries run out into the last error', async () => {
    script = [hangUp, json(200, payment())];
    await api().payments.get('pay_1');
    assert.equal(seen.length, 2);

    script = [json(503, {}), json(503, {}), json(503, { error: { code: 'unavailable', message: 'down' } })];
    await assert.rejects(api({ retries: 2 }).payments.get('pay_1'), (e: unknown) => e instanceof KomojuApiError && e.status === 503 && e.code === 'unavailable' && e.retryable);
    assert.equal(seen.length, 2 + 3);
  });

  test('400 is not retried and surfaces as KomojuApiError with code and param', async () => {
    script = [json(400, { error: { code: 'invalid_parameter', message: 'A parameter is invalid', param: 'amount', details: {} } })];
    await assert.rejects(
      api().payments.refund('pay_1', { amount: 500, idempotencyKey: 'ref-1' }),
      (e: unknown) => e instanceof KomojuApiError && e.status === 400 && e.code === 'invalid_parameter' && e.param === 'amount' && e.message.includes('A parameter is invalid') && !e.retryable,
    );
    assert.equal(seen.length, 1);
  });

  test('a non-JSON error body still gives a typed error', async () => {
    script = [(res) => res.writeHead(404, { 'content-type': 'text/html' }).end('<h1>Not Found</h1>')];
    await assert.rejects(api().events.get('evt_x'), (e: unknown) => e instanceof KomojuApiError && e.status === 404 && e.code === 'http_404');
    assert.equal(seen[0]!.url, '/api/v1/events/evt_x');
  });

  test('time-out is honoured, and a POST repeats after it with the same key', async () => {
    script = [never];
    const started = Date.now();
    await assert.rejects(api({ timeoutMs: 150, retries: 0 }).payments.get('pay_1'), (e: unknown) => e instanceof KomojuTransportError && e.kind === 'timeout');
    assert.ok(Date.now() - started < 1_500, 'gave up near the time-out');

    seen.length = 0;
    script = [never, json(200, payment({ status: 'cancelled' }))];
    const p = await api({ timeoutMs: 150, retries: 1 }).payments.cancel('pay_1', { idempotencyKey: 'cancel-1' });
    assert.equal(p.status, 'cancelled');
    assert.equal(seen.length, 2);
    assert.equal(seen[0]!.headers['x-komoju-idempotency'], 'cancel-1');
    assert.equal(seen[1]!.headers['x-komoju-idempotency'], 'cancel-1');
  });

  test('refund sends the explicit amount; without one it refuses to send', async () => {
    script = [json(200, payment({ amount_refunded: 300 }))];
    const p = await api().payments.refund('pay_1', { amount: 300, description: 'partial', idempotencyKey: 'ref-2' });
    assert.equal(p.amount_refunded, 300);
    assert.equal(seen[0]!.url, '/api/v1/payments/pay_1/refund');
    assert.deepEqual(JSON.parse(seen[0]!.body), { amount: 300, description: 'partial' });
    assert.equal(seen[0]!.headers['x-komoju-idempotency'], 'ref-2');

    const client = api();
    assert.throws(() => client.payments.refund('pay_1', { idempotencyKey: 'ref-3' } as unknown as { amount: number; idempotencyKey: string }), TypeError);
    assert.throws(() => client.payments.refund('pay_1', { amount: 0, idempotencyKey: 'ref-3' }), TypeError);
    assert.throws(() => client.payments.refund('pay_1', { amount: 1.5, idempotencyKey: 'ref-3' }), TypeError);
    assert.equal(seen.length, 1);
  });

  test('POST without a usable key is refused; request() POST without a key is never retried', async () => {
    const client = api();
    assert.throws(() => client.sessions.cancel('sess_1', { idempotencyKey: '' }), TypeError);
    assert.throws(() => client.sessions.cancel('sess_1', { idempotencyKey: 'x'.repeat(101) }), TypeError);
    script = [json(500, {})];
    await assert.rejects(client.request('POST', '/payments', { body: { amount: 1 } }), (e: unknown) => e instanceof KomojuApiError && e.status === 500);
    assert.equal(seen.length, 1);
    assert.equal(seen[0]!.headers['x-komoju-idempotency'], undefined);
  });

  test('session cancel and ids are path-encoded', async () => {
    script = [json(200, { id: 'a/b', resource: 'session', status: 'cancelled' })];
    await api().sessions.cancel('a/b', { idempotencyKey: 'sc-1' });
    assert.equal(seen[0]!.url, '/api/v1/sessions/a%2Fb/cancel');
  });
});
