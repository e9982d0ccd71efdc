import assert from 'node:assert/strict';
import { beforeEach, describe, test } from 'node:test';
import { encodeSjis } from '../../src/gateways/common/sjis.js';
import { encodeMessage } from '../../src/gateways/sbps/index.js';
import { buildSbpsXml, parseSbpsXml, type XmlEntry } from '../../src/gateways/sbps/xml-api.js';
import { StopRetrying } from '../../src/errors.js';
import type { PaymentAttempt } from '../../src/db/schema.js';
import type { OperationRun } from '../../src/payments/operations.js';
import type { AttemptContext } from '../../src/payments/provider.js';
import { MIN_SECONDS_TO_PAY } from '../../src/commerce/orders.js';
import { sbpsProvider } from '../../src/payments/sbps.js';

/*
 * The SBPS adapter against a scripted XML API (a fetch that answers as SBPS would): which request
 * ids it sends for a payment's method, what it refuses before sending anything, the limit_second of
 * its purchase form, and what it answers to a result it does not know. The same paths through the
 * store and the simulator are in test/integration/sbps-flow.test.ts.
 */

const KEY = '398a58952baf329cac5efbae97ea84ba17028d02';
const settings = {
  'sbps.enabled': true,
  'sbps.merchantId': '30132',
  'sbps.serviceId': '001',
  'sbps.hashKey': KEY,
  'sbps.gatewayUrl': 'https://sbps.test/f01/FepBuyInfoReceive.do',
  'sbps.apiUrl': 'https://sbps.test/api/xmlapi.do',
  'sbps.apiUser': '30132001',
  'sbps.apiPassword': 'api-secret',
  'sbps.limitSecond': '9999',
};

/** Request ids SBPS received, in order. */
let seen: string[] = [];
/** payment_status the inquiry reports: 1 authorised, 2 captured. */
let paymentStatus = '2';
/** SBPS answers the partial refund NG. */
let refusePartial = false;

const fakeSbps: typeof fetch = async (_url, init) => {
  const doc = parseSbpsXml(Buffer.from(init?.body as Uint8Array));
  const id = doc.id ?? '';
  seen.push(id);
  const entries: XmlEntry[] = refusePartial && id === 'ST02-00307-101' ? [['res_result', 'NG'], ['res_err_code', '90199999']] : [['res_result', 'OK'], ['res_tracking_id', '80312789324671']];
  if (id.startsWith('MG01')) entries.push(['res_status', '0'], ['res_pay_method_info.payment_status', paymentStatus]);
  return new Response(encodeSjis(buildSbpsXml('sps-api-response', id, entries)), { status: 200, headers: { 'content-type': 'text/xml; charset=Shift_JIS' } });
};

const provider = sbpsProvider({ fetchImpl: fakeSbps });

let sent = 0;
let unsent = 0;
const run: OperationRun = {
  async sending() {
    sent++;
  },
  async notSent() {
    unsent++;
  },
};

function context(over: { method?: string | null; reported?: string; amount?: number; captured?: number; expiresAt?: string } = {}): AttemptContext {
  const amount = over.amount ?? 5000;
  const attempt: PaymentAttempt = {
    id: 'pat_1',
    order_id: 'ord_1',
    shop_id: 'default',
    provider: 'sbps',
    method: over.method === undefined ? null : over.method,
    merchant_ref: 'KS-0001-A1',
    state: 'captured',
    amount,
    captured_amount: over.captured ?? amount,
    refunded_amount: 0,
    gateway_ref: '80312789324671',
    details: JSON.stringify(over.reported ? { method: over.reported } : {}),
    created_at: '2026-01-01T00:00:00.000Z',
    updated_at: '2026-01-01T00:00:00.000Z',
  };
  return {
    attempt,
    settings,
    order: { id: 'ord_1', number: 'KS-0001', total: amount, email: 'taro@example.jp', customerName: '山田 太郎', lines: [{ name: 'ライブ参加券', unitPrice: amount, quantity: 1 }], ...(over.expiresAt ? { expiresAt: over.expiresAt } : {}) },
    urls: { returnUrl: 'https://shop.test/orders/t/return', cancelUrl: 'https://shop.test/orders/t/return?cancelled=1', notifyUrl: 'https://shop.test/webhooks/sbps/default' },
  };
}

const stops = (message: RegExp) => (error: unknown) => {
  assert.ok(error instanceof StopRetrying, `expected StopRetrying, got ${String(error)}`);
  assert.match(error.message, message);
  return true;
};

beforeEach(() => {
  seen = [];
  paymentStatus = '2';
  sent = 0;
  unsent = 0;
  refusePartial = false;
});

describe('XML API requests by the payment method', () => {
  test("a PayPay payment is read and refunded with PayPay's request ids, as SBPS reported the method", async () => {
    const facts = await provider.refund(context({ method: null, reported: 'paypay' }), 5000, 'key', run);
    assert.deepEqual(seen, ['MG01-00101-311', 'ST02-00303-311']);
    assert.deepEqual(facts.map((f) => f.fact), [{ type: 'refunded', amount: 5000, refundId: '80312789324671:refunded-to:5000' }]);
  });

  test('what SBPS reported wins over the method chosen in the shop; a card keeps the card ids', async () => {
    await provider.refund(context({ method: 'credit3d2', reported: 'docomo' }), 5000, 'key', run);
    assert.deepEqual(seen, ['MG01-00101-401', 'ST02-00303-401']);
    seen = [];
    await provider.refund(context({ method: 'credit3d2', reported: 'credit' }), 5000, 'key', run);
    assert.deepEqual(seen, ['MG01-00101-101', 'ST02-00303-101']);
    seen = [];
    await provider.readBack(context({ method: 'softbank2' }));
    assert.deepEqual(seen, ['MG01-00101-405'], 'the method chosen in the shop when SBPS named none');
  });

  test('a partial refund of a PayPay payment stops the job at once, before anything is read or sent', async () => {
    await assert.rejects(provider.refund(context({ reported: 'paypay' }), 1000, 'key', run), stops(/paypay payments: SBPS cancels or refunds a paypay payment only in full/));
    assert.deepEqual(seen, []);
    assert.equal(sent, 0, 'nothing marked as sent');
  });

  test('a convenience-store, Pay-easy or bank-transfer payment cannot be refunded through the API', async () => {
    for (const method of ['webcvs', 'payeasy', 'banktransfer']) {
      await assert.rejects(provider.refund(context({ reported: method }), 5000, 'key', run), stops(/outside SBPS/), method);
    }
    assert.deepEqual(seen, []);
  });

  test('a method kessai knows no ids for stops instead of sending card ids; one nobody named is taken for a card', async () => {
    await assert.rejects(provider.refund(context({ reported: 'linepay' }), 5000, 'key', run), stops(/"linepay"/));
    assert.deepEqual(seen, []);
    // The customer chose at SBPS and the result CGI named no method (as the one on record for a card).
    await provider.readBack(context({ method: null }));
    assert.deepEqual(seen, ['MG01-00101-101']);
  });

  test('docomo under manual capture: the whole authorisation is captured without an amount; a part is refused', async () => {
    paymentStatus = '1';
    await assert.rejects(provider.capture(context({ reported: 'docomo', captured: 0 }), 3000, 'key'), stops(/docomo payment only in full \(5000 yen\)/));
    assert.deepEqual(seen, []);
    const facts = await provider.capture(context({ reported: 'docomo', captured: 0 }), 5000, 'key');
    assert.deepEqual(seen, ['MG01-00101-401', 'ST02-00201-401']);
    assert.deepEqual(facts.map((f) => f.fact), [{ type: 'captured', amount: 5000 }]);
    await assert.rejects(provider.capture(context({ reported: 'aupay', captured: 0 }), 5000, 'key'), stops(/no capture request for aupay payments/));
  });
});

describe('partial refunds SBPS cannot be asked about afterwards', () => {
  test('a card partial refund is marked sent before SBPS gets it (its inquiry shows no refunded amounts)', async () => {
    const facts = await provider.refund(context({ reported: 'credit' }), 1000, 'key', run);
    assert.equal(sent, 1);
    assert.deepEqual(seen, ['MG01-00101-101', 'ST02-00307-101']);
    assert.deepEqual(facts.map((f) => f.fact), [{ type: 'refunded', amount: 1000, refundId: '80312789324671:refunded-to:1000' }]);
  });

  test('one SBPS refused (NG) is marked not sent, so the retry may send it', async () => {
    refusePartial = true;
    await assert.rejects(provider.refund(context({ reported: 'credit' }), 1000, 'key', run), (e: unknown) => !(e instanceof StopRetrying));
    assert.deepEqual([sent, unsent], [1, 1]);
  });

  test('one an earlier run of the job already sent is not sent again: the job stops for a person', async () => {
    const alreadySent: OperationRun = {
      sending: () => Promise.reject(new StopRetrying('an earlier run of job job_1 already sent this refund of 1000 yen')),
      notSent: () => Promise.resolve(),
    };
    await assert.rejects(provider.refund(context({ reported: 'credit' }), 1000, 'key', alreadySent), stops(/already sent this refund/));
    assert.deepEqual(seen, ['MG01-00101-101'], 'asked, but no second partial refund');
  });
});

describe('limit_second and the order reservation', () => {
  const limitOf = async (expiresAt?: string): Promise<number> => {
    const { action } = await provider.start(context({ method: 'credit3d2', ...(expiresAt ? { expiresAt } : {}) }));
    assert.equal(action.type, 'form');
    return Number(action.type === 'form' ? action.fields.find(([name]) => name === 'limit_second')?.[1] : NaN);
  };

  test('a retry 25 minutes into a 30-minute reservation gives SBPS 5 minutes, not the shop setting', async () => {
    const limit = await limitOf(new Date(Date.now() + 300_000).toISOString());
    assert.ok(limit <= 300 && limit >= 295, `limit_second ${limit}`);
  });

  test('the shop setting when it ends first, or when the store names no reservation end', async () => {
    assert.equal(await limitOf(new Date(Date.now() + 86_400_000).toISOString()), 9999);
    assert.equal(await limitOf(), 9999);
  });

  test('less than a minute left: the attempt does not start, with a reason the customer can read', async () => {
    await assert.rejects(provider.start(context({ expiresAt: new Date(Date.now() + 30_000).toISOString() })), /reservation ends in (29|30) seconds, too soon to pay at SBPS/);
    await assert.rejects(provider.start(context({ expiresAt: new Date(Date.now() - 5_000).toISOString() })), /ends in 0 seconds/);
    assert.equal(MIN_SECONDS_TO_PAY, 60);
  });
});

describe('result notifications', () => {
  test('a verified result kessai does not know is answered OK, applies nothing, and is reported for the log', async () => {
    const fields = {
      merchant_id: '30132',
      service_id: '001',
      order_id: 'KS-0001-A1',
      amount: '5000',
      res_pay_method: 'paypay',
      res_result: 'ZZ',
      res_tracking_id: '80312789324671',
      request_date: '20260101120000',
      res_date: '20260101120100',
    };
    const rawBody = encodeMessage('result', { fields, details: [] }, KEY, { uppercaseHash: true });
    const result = await provider.parseNotification({ rawBody, headers: {}, settings, remoteAddress: '61.215.213.20' });
    assert.ok('verified' in result && result.verified, JSON.stringify(result));
    assert.deepEqual(result.facts, []);
    assert.equal(result.reply.body, 'OK,');
    assert.match(result.ignored ?? '', /res_result "ZZ".*order_id KS-0001-A1, tracking id 80312789324671.*answered OK/);
  });
});
