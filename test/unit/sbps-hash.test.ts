import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  buildPurchaseRequest,
  concatForHash,
  HASH_ENCODING,
  hashesMatch,
  orderedValues,
  parseMessage,
  sbpsHash,
  verifyMessage,
  verifyReport,
  type PurchaseRequestInput,
} from '../../src/gateways/sbps/index.js';

// Known-answer vectors from reference/gateways.md §1.3 (also reference/vectors.json), inlined so the
// suite runs from the repository alone.
const verified = {
  hash_key: '398a58952baf329cac5efbae97ea84ba17028d02',
  fields_in_hash_order: [
    ['pay_method', ''], ['merchant_id', '19788'], ['service_id', '001'], ['cust_code', '498b1fd98ebeb074ff1d50f2e2720a1a'],
    ['sps_cust_no', ''], ['sps_payment_no', ''], ['order_id', '9eb2fced282c5bfc67c2417217ca2682'], ['item_id', 'Item ID'],
    ['pay_item_id', ''], ['item_name', '継続課金'], ['tax', ''], ['amount', '980'], ['pay_type', '2'],
    ['auto_charge_type', '0'], ['service_type', '0'], ['div_settele', '0'], ['last_charge_month', ''], ['camp_type', ''],
    ['tracking_id', ''], ['terminal_type', '0'], ['free1', ''], ['free2', ''], ['free3', ''], ['request_date', '20150807161004'],
    ['res_pay_method', ''], ['res_result', 'OK'], ['res_tracking_id', '80312789324671'], ['res_sps_cust_no', ''],
    ['res_sps_payment_no', ''], ['res_payinfo_key', ''], ['res_payment_date', '20150807161021'], ['res_err_code', ''],
    ['res_date', '20150807161021'], ['limit_second', '600'],
  ] as [string, string][],
  sps_hashcode_as_sent: 'BE33A23EC4B61A34545E0A485D0897E33383F4DE',
  sha1_over_shift_jis_for_comparison: 'c27fa2286c6fcc2cef2ce31def31386c2e39783e',
};
const computed = {
  hash_key: '398a58952baf329cac5efbae97ea84ba17028d02',
  nonempty_fields: {
    pay_method: 'credit', merchant_id: '19788', service_id: '001', cust_code: 'CUST0001', order_id: 'ORDER0001',
    item_id: 'ITEM1', item_name: 'テスト商品', amount: '980', pay_type: '0', service_type: '0', terminal_type: '0',
    success_url: 'https://example.com/s', cancel_url: 'https://example.com/c', error_url: 'https://example.com/e',
    pagecon_url: 'https://example.com/r', request_date: '20240101120000', limit_second: '600',
  },
  sha1_utf8: '41eeff015af6df791c02c86575938a482feddf1d',
  sha1_shift_jis: '2bd42301dc41af10c24ea930893cbfe28e8a2e06',
};
const KEY = verified.hash_key;

/** The string gateways.md §1.3 gives for the captured notification (hash key appended). */
const REFERENCE_STRING =
  '19788001498b1fd98ebeb074ff1d50f2e2720a1a9eb2fced282c5bfc67c2417217ca2682Item ID継続課金9802000020150807161004OK803127893246712015080716102120150807161021600398a58952baf329cac5efbae97ea84ba17028d02';

/**
 * The captured POST written out by hand, as it came over the wire: the Shift_JIS item name
 * percent-encoded with its literal `p`, the space as `+`, the hash in uppercase.
 */
const CAPTURED_PAIRS: string[] = [
  'pay_method=', 'merchant_id=19788', 'service_id=001', 'cust_code=498b1fd98ebeb074ff1d50f2e2720a1a',
  'sps_cust_no=', 'sps_payment_no=', 'order_id=9eb2fced282c5bfc67c2417217ca2682', 'item_id=Item+ID',
  'pay_item_id=', 'item_name=%8Cp%91%B1%89%DB%8B%E0', 'tax=', 'amount=980', 'pay_type=2',
  'auto_charge_type=0', 'service_type=0', 'div_settele=0', 'last_charge_month=', 'camp_type=',
  'tracking_id=', 'terminal_type=0', 'free1=', 'free2=', 'free3=', 'request_date=20150807161004',
  'res_pay_method=', 'res_result=OK', 'res_tracking_id=80312789324671', 'res_sps_cust_no=',
  'res_sps_payment_no=', 'res_payinfo_key=', 'res_payment_date=20150807161021', 'res_err_code=',
  'res_date=20150807161021', 'limit_second=600', 'sps_hashcode=BE33A23EC4B61A34545E0A485D0897E33383F4DE',
];

/** Deterministic so a failure can be replayed; mulberry32. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function shuffledBody(seed: number, pairs = CAPTURED_PAIRS): Buffer {
  const random = seeded(seed);
  const out = pairs.slice();
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j] as string, out[i] as string];
  }
  return Buffer.from(out.join('&'), 'latin1');
}

describe('VERIFIED: the captured result CGI notification', () => {
  for (const seed of [1, 2, 3, 42, 2015]) {
    test(`shuffled order (seed ${seed}) parses and verifies as kind "result"`, () => {
      const body = shuffledBody(seed);
      assert.notEqual(body.toString('latin1').slice(0, 20), CAPTURED_PAIRS.join('&').slice(0, 20));
      const result = verifyMessage('result', body, KEY);
      assert.equal(result.valid, true);
      assert.equal(result.expected, verified.sps_hashcode_as_sent.toLowerCase());
      assert.equal(result.received, verified.sps_hashcode_as_sent);
      assert.equal(result.concatenated, REFERENCE_STRING);
      assert.deepEqual(result.fields, verified.fields_in_hash_order);
      assert.equal(result.message.fields.item_name, '継続課金');
    });
  }

  test('the same values hashed as a return screen (Shift_JIS) give the derived value, which the posted hash is not', () => {
    const { message } = parseMessage(shuffledBody(7));
    assert.equal(sbpsHash('return', orderedValues('return', message), KEY), verified.sha1_over_shift_jis_for_comparison);
    const asReturn = verifyMessage('return', shuffledBody(7), KEY);
    assert.equal(asReturn.expected, 'c27fa2286c6fcc2cef2ce31def31386c2e39783e');
    assert.equal(asReturn.valid, false);
  });

  test('a lowercase hash is accepted as well as the uppercase one SBPS sends', () => {
    const pairs = CAPTURED_PAIRS.map((p) => (p.startsWith('sps_hashcode=') ? p.toLowerCase() : p));
    assert.equal(verifyMessage('result', shuffledBody(3, pairs), KEY).valid, true);
  });

  for (const [label, from, to] of [
    ['the amount', 'amount=980', 'amount=981'],
    ['one byte of the Shift_JIS item name', 'item_name=%8Cp%91%B1%89%DB%8B%E0', 'item_name=%8Cq%91%B1%89%DB%8B%E0'],
    ['the result', 'res_result=OK', 'res_result=NG'],
    ['one hex digit of the hash', 'sps_hashcode=BE33', 'sps_hashcode=BE34'],
  ] as const) {
    test(`changing ${label} makes it invalid`, () => {
      const pairs = CAPTURED_PAIRS.map((p) => (p.startsWith(from) ? to + p.slice(from.length) : p));
      assert.notDeepEqual(pairs, CAPTURED_PAIRS);
      assert.equal(verifyMessage('result', shuffledBody(5, pairs), KEY).valid, false);
    });
  }

  test('the wrong hash key, a missing hash or a truncated hash is invalid', () => {
    assert.equal(verifyMessage('result', shuffledBody(5), `${KEY}x`).valid, false);
    const noHash = CAPTURED_PAIRS.filter((p) => !p.startsWith('sps_hashcode='));
    assert.equal(verifyMessage('result', shuffledBody(5, noHash), KEY).valid, false);
    const short = CAPTURED_PAIRS.map((p) => (p.startsWith('sps_hashcode=') ? p.slice(0, -2) : p));
    assert.equal(verifyMessage('result', shuffledBody(5, short), KEY).valid, false);
  });

  test('parsed fields are refused, with a message saying what to pass', () => {
    assert.throws(() => verifyMessage('result', { amount: '980' } as unknown as Buffer, KEY), /raw request body as a Buffer/);
  });
});

describe('COMPUTED: the purchase request vector', () => {
  const input: PurchaseRequestInput = computed.nonempty_fields;

  test('buildPurchaseRequest hashes the UTF-8 bytes', () => {
    const pairs = buildPurchaseRequest(input, { hashKey: computed.hash_key });
    assert.deepEqual(pairs.at(-1), ['sps_hashcode', computed.sha1_utf8]);
    assert.equal(computed.sha1_utf8, '41eeff015af6df791c02c86575938a482feddf1d');
  });

  test('the same values over Shift_JIS bytes (XML API and return-screen encoding)', () => {
    const values = buildPurchaseRequest(input, { hashKey: computed.hash_key }).slice(0, -1).map(([, v]) => v);
    assert.equal(sbpsHash('xml', values, computed.hash_key), computed.sha1_shift_jis);
    assert.equal(sbpsHash('return', values, computed.hash_key), '2bd42301dc41af10c24ea930893cbfe28e8a2e06');
    assert.equal(sbpsHash('request', values, computed.hash_key), computed.sha1_utf8);
  });
});

describe('hash primitives', () => {
  test('the encoding choice lives in one table', () => {
    assert.deepEqual(HASH_ENCODING, { request: 'utf8', result: 'utf8', return: 'sjis', xml: 'sjis' });
  });

  test('values are trimmed like Ruby strip: ASCII whitespace and NUL, not the full-width space', () => {
    assert.equal(concatForHash([' a ', '\tb\r\n', '\0c\0', '\u3000d\u3000', '']), 'abc\u3000d\u3000');
  });

  test('hashesMatch is case-insensitive and refuses other lengths', () => {
    assert.equal(hashesMatch('be33a23e', 'BE33A23E'), true);
    assert.equal(hashesMatch('be33a23e', 'be33a23f'), false);
    assert.equal(hashesMatch('be33a23e', 'be33a23'), false);
    assert.equal(hashesMatch('be33a23e', ''), false);
  });
});

describe('verifyReport (kessai sbps verify)', () => {
  test('valid: both hashes, the hashed string with the key masked, the fields in hash order', () => {
    const { ok, text } = verifyReport('result', shuffledBody(9), KEY);
    assert.equal(ok, true);
    const lines = text.split('\n');
    assert.equal(lines[0], 'valid');
    assert.equal(lines[1], `expected: ${verified.sps_hashcode_as_sent.toLowerCase()}`);
    assert.equal(lines[2], `received: ${verified.sps_hashcode_as_sent}`);
    assert.equal(lines[3], `string: ${REFERENCE_STRING.slice(0, -KEY.length)}****8d02`);
    assert.ok(!text.includes(KEY), 'the hash key never appears in full');
    const fieldLines = lines.filter((l) => l.startsWith('  '));
    assert.equal(fieldLines.length, verified.fields_in_hash_order.length);
    assert.equal(fieldLines[9], '  item_name = "継続課金"');
  });

  test('invalid when the wrong kind is chosen', () => {
    const { ok, text } = verifyReport('return', shuffledBody(9), KEY);
    assert.equal(ok, false);
    assert.match(text, /^invalid\nexpected: c27fa2286c6fcc2cef2ce31def31386c2e39783e\n/);
  });

  test('a malformed body is reported, not thrown', () => {
    const { ok, text } = verifyReport('result', Buffer.from('order_id=1&order_id=2'), KEY);
    assert.equal(ok, false);
    assert.match(text, /^invalid\nerror: order_id: sent more than once/);
  });

  test('fields outside the hash are listed as such', () => {
    const { text } = verifyReport('return', Buffer.from(`${CAPTURED_PAIRS.join('&')}&TOKEN=abc`), KEY);
    assert.match(text, /not hashed: TOKEN/);
  });
});
