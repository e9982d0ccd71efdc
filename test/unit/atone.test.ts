import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, createHmac } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  ATONE_OPTION_RECURRING,
  atoneApi,
  AtoneApiError,
  atoneChecksum,
  atoneChecksumPreimage,
  atoneConsistencyProblems,
  AtonePaymentError,
  atoneTransactionState,
  AtoneTransportError,
  AtoneWebhookParseError,
  buildAtonePayment,
  buildAtonePaymentFields,
  computeAtoneWebhookChecksum,
  parseAtoneWebhook,
  readBackAtoneTransaction,
  toFullWidth,
  validateAtonePayment,
  verifyAtoneChecksum,
  verifyAtoneWebhook,
  type AtonePaymentInput,
  type AtoneRegistration,
  type AtoneTransaction,
} from '../../src/gateways/atone/index.js';

/*
 * atone protocol library: the VERIFIED checksum example (reference gateways.md §2.3), atone's field rules
 * with their EATN codes, the payment builder, webhook checksum constructions, and the REST client against
 * a scripted atone on loopback (auth header, method override, time-outs, which calls are repeated).
 */

// NP's documented example (reference §2.3 and vectors.json atone.checksum_verified_np_documented_example),
// inlined. The two ⽂ are U+2F42 (KANGXI RADICAL SCRIPT), not U+6587: hashing them as given is the point.
const NP = {
  secret: '-BQhbgwCordkeJjKnY-Z3w',
  preimage:
    '-BQhbgwCordkeJjKnY-Z3w,12460台北市信義區松智路1號11樓1990-01-01Net Protections注\u2F42太郎注\u2F42太郎業務np@netprotections.co.jp090-1111-1111121608108備註銀座太郎1【豪華車庫房 3h】銀星會員贈送0.5h1099https://np-pay.be/items/012/P19122317true1122700049',
  checksum: 'miZt1Gmns8GA2jb/D21L1rMZ8Qutc49BOHLtezm2YKk=',
};

/** The example's payment object, keys deliberately NOT in sorted order at any level. */
function npExample(): Record<string, unknown> {
  return {
    user_no: '1122700049',
    sales_settled: true,
    items: [{ shop_item_id: 'P19122317', item_url: 'https://np-pay.be/items/012/', item_price: 1099, item_name: '【豪華車庫房 3h】銀星會員贈送0.5h', item_count: 1 }],
    dest_customers: [{ dest_customer_name: '銀座太郎' }],
    description_trans: '備註',
    customer: {
      zip_code: '108',
      total_purchase_count: 8,
      total_purchase_amount: 2160,
      sex_division: '1',
      phone_number: '090-1111-1111',
      email: 'np@netprotections.co.jp',
      department: '業務',
      customer_name: '注\u2F42太郎',
      customer_given_name: '太郎',
      customer_family_name: '注\u2F42',
      company_name: 'Net Protections',
      birthday: '1990-01-01',
      address: '台北市信義區松智路1號11樓',
    },
    amount: 12460,
  };
}

describe('checksum', () => {
  test('VERIFIED example: pre-image and Base64 SHA-256, keys sorted at every level', () => {
    assert.equal(atoneChecksumPreimage(npExample(), NP.secret), NP.preimage);
    assert.equal(atoneChecksum(npExample(), NP.secret), NP.checksum);
    assert.equal(createHash('sha256').update(NP.preimage, 'utf8').digest('base64'), NP.checksum, 'the vector itself');
  });

  test('NFKC-normalising the example breaks it (characters are hashed as given)', () => {
    const normalised = JSON.parse(JSON.stringify(npExample()).normalize('NFKC')) as Record<string, unknown>;
    assert.notEqual(atoneChecksum(normalised, NP.secret), NP.checksum);
  });

  test('default exclusions: shop_transaction_no, transaction_options, return_url and checksum do not count; the set is an option', () => {
    const withExtras = { ...npExample(), shop_transaction_no: 'A-1', transaction_options: [1], return_url: 'https://shop.test/', checksum: 'x' };
    assert.equal(atoneChecksum(withExtras, NP.secret), NP.checksum);
    const included = atoneChecksum(withExtras, NP.secret, { excludedKeys: [] });
    assert.notEqual(included, NP.checksum);
    assert.equal(atoneChecksumPreimage(withExtras, NP.secret, { excludedKeys: ['return_url'] }).includes('A-11'), true, 'shop_transaction_no then transaction_options, in key order');
  });

  test('null and undefined are skipped; every value changes the checksum', () => {
    assert.equal(atoneChecksum({ ...npExample(), description_trans: null, extra: undefined }, NP.secret), atoneChecksum({ ...npExample(), description_trans: undefined }, NP.secret));
    assert.notEqual(atoneChecksum({ ...npExample(), amount: 12461 }, NP.secret), NP.checksum);
    assert.notEqual(atoneChecksum(npExample(), `${NP.secret}x`), NP.checksum);
  });

  test('verifyAtoneChecksum: true for the example, false when anything differs, never throws on junk', () => {
    assert.equal(verifyAtoneChecksum({ ...npExample(), checksum: NP.checksum }, NP.secret), true);
    assert.equal(verifyAtoneChecksum({ ...npExample(), amount: 1, checksum: NP.checksum }, NP.secret), false);
    assert.equal(verifyAtoneChecksum({ ...npExample(), checksum: NP.checksum }, 'other'), false);
    for (const checksum of [undefined, '', 'abc', NP.checksum.slice(1), 42]) assert.equal(verifyAtoneChecksum({ ...npExample(), checksum }, NP.secret), false, String(checksum));
    assert.equal(verifyAtoneChecksum('not an object', NP.secret), false);
    assert.throws(() => verifyAtoneChecksum(npExample(), ''), TypeError);
  });
});

// ---- the payment object --------------------------------------------------------------------------

const SECRET = 'atone_secret_for_tests';

function order(overrides: Partial<AtonePaymentInput> = {}): AtonePaymentInput {
  return {
    shopTransactionNo: 'K-1001-1',
    lines: [
      { id: 'CD-001', name: 'アルバム CD', unitPrice: 3000, quantity: 2, url: 'https://shop.test/p/cd-001' },
      { id: 777, name: 'シリアルコード', unitPrice: 500, quantity: 1 },
    ],
    tax: 650,
    shipping: 800,
    discount: 300,
    customer: { customer_name: '山田 太郎', email: 'taro@example.jp', zip_code: '150-0001', address: '東京都渋谷区神宮前1-1-1', tel: '03-1234-5678' },
    destinations: [{ dest_customer_name: '山田 花子', dest_zip_code: '1500001', dest_address: '東京都渋谷区神宮前1-1-1' }],
    ...overrides,
  };
}

const pairs = (problems: { path: string; code: string }[]): string[] => problems.map((p) => `${p.path} ${p.code}`).sort();

describe('payment builder and validator', () => {
  test('tax, shipping and discount become items; amount is their sum; the checksum verifies', () => {
    const payment = buildAtonePayment(order(), { secretKey: SECRET });
    assert.equal(payment.amount, 3000 * 2 + 500 + 650 + 800 - 300);
    assert.deepEqual(
      payment.items.map((i) => [i.shop_item_id, i.item_price, i.item_count]),
      [
        ['CD-001', 3000, 2],
        ['777', 500, 1],
        ['tax', 650, 1],
        ['shipping', 800, 1],
        ['discount', -300, 1],
      ],
    );
    assert.equal(payment.items[2]!.item_name, '消費税');
    assert.equal(payment.sales_settled, false);
    assert.equal(payment.shop_transaction_no, 'K-1001-1');
    assert.equal(payment.checksum, atoneChecksum(payment, SECRET));
    assert.equal(verifyAtoneChecksum(payment, SECRET), true);
    assert.deepEqual(validateAtonePayment(payment), []);
    assert.equal(JSON.stringify(payment).includes('null'), false, 'no null is ever sent');
  });

  test('names become full-width where atone demands 全角', () => {
    assert.equal(toFullWidth('Taro Yamada'), 'Ｔａｒｏ\u3000Ｙａｍａｄａ');
    assert.equal(toFullWidth('ﾔﾏﾀﾞ ﾀﾛｳ'), 'ヤマダ\u3000タロウ');
    assert.equal(toFullWidth('山田　太郎'), '山田　太郎');
    const payment = buildAtonePayment(order({ customer: { customer_name: 'Taro Yamada', customer_name_kana: 'ﾔﾏﾀﾞ ﾀﾛｳ' } }), { secretKey: SECRET });
    assert.equal(payment.customer.customer_name, 'Ｔａｒｏ\u3000Ｙａｍａｄａ');
    assert.equal(payment.customer.customer_name_kana, 'ヤマダ\u3000タロウ');
    assert.equal(payment.dest_customers![0]!.dest_customer_name, '山田\u3000花子');
  });

  test('options: recurring, settled at once, no zero adjustment lines', () => {
    const fields = buildAtonePaymentFields(order({ tax: 0, shipping: undefined, discount: 0, salesSettled: true, transactionOptions: [ATONE_OPTION_RECURRING] }));
    assert.deepEqual(fields.transaction_options, [1]);
    assert.equal(fields.sales_settled, true);
    assert.equal(fields.items.length, 2);
    assert.equal('checksum' in fields, false);
  });

  test('the builder refuses what atone would refuse, listing every problem', () => {
    assert.throws(
      () => buildAtonePayment(order({ shopTransactionNo: '注文1', lines: [{ id: 'X', name: 'x', unitPrice: 1_000_000, quantity: 1 }], customer: { customer_name: '' } }), { secretKey: SECRET }),
      (e: unknown) => e instanceof AtonePaymentError && pairs([...e.problems]).join('|') === ['customer.customer_name EATN0342', 'items[0].item_price EATN0339', 'shop_transaction_no EATN0332'].join('|'),
    );
    assert.throws(() => buildAtonePayment(order({ discount: -5 }), { secretKey: SECRET }), AtonePaymentError);
  });

  test('validator: every broken rule, with its path and EATN code', () => {
    const payment = {
      amount: 10_000_000,
      shop_transaction_no: 'x'.repeat(101),
      sales_settled: 'yes',
      description_trans: 'tab\there',
      subtract_point: -1,
      transaction_options: ['one'],
      items: [
        { shop_item_id: 'ok-1', item_name: 'n'.repeat(101), item_price: 1.5, item_count: 0, item_url: `https://x/${'u'.repeat(1000)}` },
        'not an item',
        { item_name: 'no id', item_price: 100, item_count: 1 },
      ],
      customer: {
        customer_name: 'Taro',
        customer_name_kana: 'た'.repeat(129),
        customer_family_name: 'や'.repeat(51),
        customer_given_name: 'Ta',
        customer_family_name_kana: 'ABC',
        customer_given_name_kana: 'ｶﾀ',
        phone_number: '03-1234-5678',
        birthday: '1990-02-30',
        sex_division: 3,
        company_name: 'c'.repeat(101),
        department: 'd'.repeat(31),
        zip_code: '1500-001',
        address: 'a'.repeat(256),
        tel: '1234567890',
        email: 'not-an-email',
        total_purchase_count: 10_000_000,
        total_purchase_amount: -1,
      },
      dest_customers: [{ dest_customer_name: '宛先', dest_zip_code: '150', dest_tel: '090-1234-5678' }],
    };
    assert.deepEqual(
      pairs(validateAtonePayment(payment)),
      [
        'amount EATN0331',
        'checksum EATN0351',
        'customer.address EATN0347',
        'customer.birthday EATN0359',
        'customer.company_name EATN0344',
        'customer.customer_family_name EATN0354',
        'customer.customer_family_name_kana EATN0356',
        'customer.customer_given_name EATN0355',
        'customer.customer_given_name_kana EATN0357',
        'customer.customer_name EATN0342',
        'customer.customer_name_kana EATN0343',
        'customer.department EATN0345',
        'customer.email EATN0349',
        'customer.phone_number EATN0358',
        'customer.sex_division EATN0360',
        'customer.tel EATN0348',
        'customer.total_purchase_amount EATN0362',
        'customer.total_purchase_count EATN0361',
        'customer.zip_code EATN0346',
        'description_trans EATN0334',
        'dest_customers[0].dest_address EATN0347',
        'dest_customers[0].dest_zip_code EATN0346',
        'items[0].item_count EATN0340',
        'items[0].item_name EATN0338',
        'items[0].item_price EATN0339',
        'items[0].item_url EATN0341',
        'items[1] EATN0336',
        'items[2].shop_item_id EATN0335',
        'sales_settled EATN0333',
        'shop_transaction_no EATN0332',
        'subtract_point EATN0350',
        'transaction_options EATN0398',
      ].sort(),
    );
  });

  test('Σ(item_price × item_count) must equal amount; strings of digits count as numbers', () => {
    const payment = buildAtonePayment(order(), { secretKey: SECRET });
    const problems = validateAtonePayment({ ...payment, amount: payment.amount + 1 });
    assert.deepEqual(pairs(problems), ['amount EATN0398']);
    assert.match(problems[0]!.message, /sum of item_price × item_count \(7650\)/);
    const stringly = { ...payment, amount: String(payment.amount), items: payment.items.map((i) => ({ ...i, item_price: String(i.item_price), item_count: String(i.item_count) })) };
    assert.deepEqual(validateAtonePayment(stringly), []);
  });

  test('shapes: no object, no items, too many destinations, no checksum needed for REST', () => {
    assert.deepEqual(pairs(validateAtonePayment(null)), [' EATN0398']);
    assert.deepEqual(pairs(validateAtonePayment({ amount: 1, shop_transaction_no: 'a', customer: { customer_name: '名前' }, checksum: 'c', items: [] })), ['items EATN0336']);
    const fields = buildAtonePaymentFields(order());
    assert.deepEqual(validateAtonePayment(fields, { requireChecksum: false }), []);
    const many = { ...fields, dest_customers: Array.from({ length: 10 }, () => fields.dest_customers![0]!) };
    assert.deepEqual(pairs(validateAtonePayment(many, { requireChecksum: false })), ['dest_customers EATN0353']);
    const mobileOk = { ...fields, customer: { ...fields.customer, phone_number: '09012345678', birthday: '2000-02-29', sex_division: '2' as const } };
    assert.deepEqual(validateAtonePayment(mobileOk, { requireChecksum: false }), []);
  });
});

// ---- webhooks ------------------------------------------------------------------------------------

describe('webhook checksum (construction UNCONFIRMED: named schemes)', () => {
  const body = '{"id":"tr_AbC123","shop_transaction_no":"K-1","amount":1000,"authorization_result":1,"items":[{"shop_item_id":"A","item_price":1000,"item_count":1}],"refunds":null}';
  // Hand-built expectations, one per construction (sorted-values: keys sorted, null skipped).
  const sortedValues = `${SECRET},10001tr_AbC12311000AK-1`;
  const expected = {
    'sorted-values': createHash('sha256').update(sortedValues, 'utf8').digest('base64'),
    'raw-body': createHash('sha256').update(`${SECRET},${body}`, 'utf8').digest('base64'),
    'hmac-raw-body': createHmac('sha256', SECRET).update(body).digest('base64'),
  } as const;

  test('each scheme gives its construction; the default is sorted-values', () => {
    assert.equal(computeAtoneWebhookChecksum(body, SECRET), expected['sorted-values']);
    for (const scheme of ['sorted-values', 'raw-body', 'hmac-raw-body'] as const) {
      assert.equal(computeAtoneWebhookChecksum(Buffer.from(body), SECRET, { scheme }), expected[scheme], scheme);
      assert.equal(verifyAtoneWebhook(body, expected[scheme], SECRET, { scheme }), true, scheme);
      assert.equal(verifyAtoneWebhook(body, ` ${expected[scheme]}\n`, SECRET, { scheme }), true, `${scheme} trimmed`);
    }
    assert.equal(verifyAtoneWebhook(body, expected['raw-body'], SECRET), false, 'another scheme’s value does not pass the default');
  });

  test('sorted-values ignores key order and spacing; the raw schemes do not', () => {
    const reverse = (v: unknown): unknown =>
      Array.isArray(v) ? v.map(reverse) : v !== null && typeof v === 'object' ? Object.fromEntries(Object.entries(v).reverse().map(([k, x]) => [k, reverse(x)])) : v;
    const reordered = JSON.stringify(reverse(JSON.parse(body)), null, 2);
    assert.notEqual(reordered.indexOf('"refunds"'), -1);
    assert.ok(reordered.indexOf('"refunds"') < reordered.indexOf('"id"'), 'keys really are in another order');
    assert.equal(verifyAtoneWebhook(reordered, expected['sorted-values'], SECRET), true);
    assert.equal(verifyAtoneWebhook(reordered, expected['raw-body'], SECRET, { scheme: 'raw-body' }), false);
  });

  test('tampered body, wrong secret, missing or malformed header → false; parsed JSON → TypeError', () => {
    assert.equal(verifyAtoneWebhook(body.replace('1000', '1001'), expected['sorted-values'], SECRET), false);
    assert.equal(verifyAtoneWebhook(body, expected['sorted-values'], 'other'), false);
    for (const header of [undefined, '', 'abc', expected['sorted-values'].slice(1), [expected['sorted-values']]]) {
      assert.equal(verifyAtoneWebhook(body, header, SECRET), false, String(header));
    }
    assert.equal(verifyAtoneWebhook('not json', expected['sorted-values'], SECRET), false);
    assert.throws(() => verifyAtoneWebhook(JSON.parse(body) as string, expected['sorted-values'], SECRET), (e: unknown) => e instanceof TypeError && /parsed JSON/.test(e.message));
    assert.throws(() => verifyAtoneWebhook(body, expected['sorted-values'], ''), TypeError);
  });

  test('parseAtoneWebhook names what to read back, leniently', () => {
    const claim = parseAtoneWebhook(body);
    assert.equal(claim.transactionId, 'tr_AbC123');
    assert.equal(claim.shopTransactionNo, 'K-1');
    assert.equal(claim.authenticationToken, null);
    const member = parseAtoneWebhook('{"authentication_token":"tk_abc","user_no":1234567890}');
    assert.equal(member.transactionId, null);
    assert.equal(member.authenticationToken, 'tk_abc');
    assert.equal(member.userNo, '1234567890');
    assert.equal(parseAtoneWebhook('{"id":"../etc"}').transactionId, null);
    assert.throws(() => parseAtoneWebhook('[1]'), AtoneWebhookParseError);
  });

  test('transaction state and consistency with the shop’s attempt', () => {
    const base: AtoneTransaction = { id: 'tr_1', shop_transaction_no: 'K-1', amount: 1000, authorization_result: 1, items: [{ shop_item_id: 'A', item_name: 'a', item_price: 1000, item_count: 1 }] };
    assert.equal(atoneTransactionState(base), 'authorized');
    assert.equal(atoneTransactionState({ ...base, sales_settled: true }), 'settled');
    assert.equal(atoneTransactionState({ ...base, sales_settled_datetime: '2024/01/01 10:00' }), 'settled');
    assert.equal(atoneTransactionState({ ...base, sales_settled: true, refunds: { amount_refund: 1000 } }), 'refunded');
    assert.equal(atoneTransactionState({ ...base, refunds: null }), 'authorized');
    assert.equal(atoneTransactionState({ ...base, authorization_result: 2 }), 'declined');
    assert.equal(atoneTransactionState({ ...base, authorization_result: 3 }), 'unknown');
    const expected = { amount: 1000, shop_transaction_no: 'K-1', items: [{ shop_item_id: 'A', item_price: 1000, item_count: 1 }] };
    assert.deepEqual(atoneConsistencyProblems(base, expected), []);
    assert.equal(atoneConsistencyProblems({ ...base, amount: 900 }, expected).length, 1);
    assert.equal(atoneConsistencyProblems({ ...base, shop_transaction_no: 'K-2' }, expected).length, 1);
    assert.match(atoneConsistencyProblems({ ...base, items: [{ shop_item_id: 'A', item_name: 'a', item_price: 500, item_count: 2 }] }, expected)[0]!, /items differ/);
  });
});

// ---- the REST client against a scripted atone ----------------------------------------------------

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
const eatn = (status: number, code: string, param = 'id'): Answer => json(status, { name: 'InvalidRequest', message: 'invalid', errors: [{ code, messages: [`${code} message`], params: [param] }] });
const tx = (extra: Partial<AtoneTransaction> = {}): AtoneTransaction => ({ id: 'tr_AbC123', shop_transaction_no: 'K-1', amount: 1000, authorization_result: 1, ...extra });

const API_SECRET = 'shop_secret_abc';
const api = (extra: Partial<Parameters<typeof atoneApi>[0]> = {}) => atoneApi({ secretKey: API_SECRET, baseUrl, retryBaseDelayMs: 5, random: () => 0.5, timeoutMs: 2_000, ...extra });

function registration(): AtoneRegistration {
  const fields = buildAtonePaymentFields(order({ transactionOptions: [ATONE_OPTION_RECURRING] }));
  return { ...fields, authentication_token: 'tk_member1', transaction_options: [1] } as AtoneRegistration;
}

before(async () => {
  server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      const answer = script.shift() ?? json(500, { name: 'Unscripted', message: 'no answer scripted', errors: [] });
      answer(res);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
});
after(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});
beforeEach(() => {
  seen.length = 0;
  script = [];
});

describe('atoneApi', () => {
  test('Basic auth is base64 of the secret alone (no ":"); POST with X-HTTP-Method-Override by default', async () => {
    script = [json(200, tx())];
    const t = await api({ terminalId: '4000000400' }).reference('tr_AbC123');
    assert.equal(t.id, 'tr_AbC123');
    const s = seen[0]!;
    assert.equal(s.headers.authorization, `Basic ${Buffer.from(API_SECRET).toString('base64')}`);
    assert.equal(Buffer.from(String(s.headers.authorization).slice(6), 'base64').toString(), API_SECRET);
    assert.equal(s.method, 'POST');
    assert.equal(s.headers['x-http-method-override'], 'GET');
    assert.equal(s.url, '/v1/transactions/tr_AbC123');
    assert.deepEqual(JSON.parse(s.body), { id: 'tr_AbC123' });
    assert.match(String(s.headers['content-type']), /^application\/json/);
    assert.equal(s.headers.accept, 'application/json');
    assert.equal(s.headers['x-np-terminal-id'], '4000000400');
  });

  test('methodOverride false sends the real methods', async () => {
    script = [json(200, tx()), json(200, tx({ sales_settled: true })), json(200, tx({ refunds: { amount_refund: 1000 } }))];
    const client = api({ methodOverride: false });
    await client.reference('tr_AbC123');
    await client.settle('tr_AbC123');
    await client.refund('tr_AbC123');
    assert.deepEqual(
      seen.map((s) => `${s.method} ${s.url} ${s.headers['x-http-method-override'] ?? '-'}`),
      ['GET /v1/transactions/tr_AbC123 -', 'PATCH /v1/transactions/tr_AbC123/settle -', 'PATCH /v1/transactions/tr_AbC123/refund -'],
    );
    assert.equal(seen[0]!.body, '', 'a real GET has no body');
  });

  test('reference is repeated after a dropped connection, a 503 and EATN0399; retries run out into a typed error', async () => {
    script = [hangUp, json(503, {}), eatn(400, 'EATN0399', '-'), json(200, tx())];
    await api({ retries: 3 }).reference('tr_AbC123');
    assert.equal(seen.length, 4);

    seen.length = 0;
    script = [json(503, {}), json(503, {}), json(503, { name: 'ServiceUnavailable', message: 'down', errors: [] })];
    await assert.rejects(api({ retries: 2 }).reference('tr_AbC123'), (e: unknown) => e instanceof AtoneApiError && e.status === 503 && e.type === 'ServiceUnavailable' && e.retryable);
    assert.equal(seen.length, 3);
  });

  test('a 400 is atone’s answer: not repeated, EATN codes and params on the error', async () => {
    script = [eatn(400, 'EATN0398', 'id')];
    await assert.rejects(
      api().reference('tr_AbC123'),
      (e: unknown) => e instanceof AtoneApiError && e.status === 400 && e.type === 'InvalidRequest' && e.codes.join() === 'EATN0398' && e.errors[0]!.params[0] === 'id' && !e.retryable,
    );
    assert.equal(seen.length, 1);
    script = [(res) => res.writeHead(401, { 'content-type': 'text/html' }).end('<h1>401</h1>')];
    await assert.rejects(api().reference('tr_AbC123'), (e: unknown) => e instanceof AtoneApiError && e.status === 401 && /secret key/.test(e.message));
  });

  test('time-out: a read gives up near it (nothing applied); a settle repeats after it', async () => {
    script = [never];
    const started = Date.now();
    await assert.rejects(api({ timeoutMs: 150, retries: 0 }).reference('tr_AbC123'), (e: unknown) => e instanceof AtoneTransportError && e.kind === 'timeout' && !e.maybeApplied);
    assert.ok(Date.now() - started < 1_500, 'Date.now() - started < 1_500');

    seen.length = 0;
    script = [never, json(200, tx({ sales_settled: true }))];
    const t = await api({ timeoutMs: 150, retries: 1 }).settle('tr_AbC123');
    assert.equal(t.sales_settled, true);
    assert.equal(seen.length, 2);
    assert.equal(seen[1]!.headers['x-http-method-override'], 'PATCH');
    assert.equal(seen[1]!.url, '/v1/transactions/tr_AbC123/settle');
  });

  test('settle refused as already settled (EATN1201) → read back, settled → success', async () => {
    script = [eatn(400, 'EATN1201'), json(200, tx({ sales_settled: true, sales_settled_datetime: '2024/05/01 10:00' }))];
    const t = await api().settle('tr_AbC123');
    assert.equal(t.sales_settled, true);
    assert.deepEqual(
      seen.map((s) => `${s.url} ${String(s.headers['x-http-method-override'])}`),
      ['/v1/transactions/tr_AbC123/settle PATCH', '/v1/transactions/tr_AbC123 GET'],
    );
  });

  test('settle refused and not settled at atone → the refusal stands', async () => {
    script = [eatn(400, 'EATN0398'), json(200, tx({ authorization_result: 2 }))];
    await assert.rejects(api().settle('tr_AbC123'), (e: unknown) => e instanceof AtoneApiError && e.codes[0] === 'EATN0398');
    assert.equal(seen.length, 2);
  });

  test('settle refused on a transaction settled and then refunded → the refusal stands (the goal is "settled", not "was settled")', async () => {
    script = [eatn(400, 'EATN0398'), json(200, tx({ sales_settled: true, refunds: { amount_refund: 1000 } }))];
    await assert.rejects(api().settle('tr_AbC123'), (e: unknown) => e instanceof AtoneApiError && e.codes[0] === 'EATN0398');
  });

  test('refund is full and converges: a refusal on an already refunded transaction is success', async () => {
    script = [json(200, tx({ refunds: { amount_refund: 1000 } }))];
    await api().refund('tr_AbC123');
    assert.deepEqual(JSON.parse(seen[0]!.body), { id: 'tr_AbC123' });
    seen.length = 0;
    script = [hangUp, eatn(400, 'EATN0398'), json(200, tx({ amount_refund_total: 1000, refunds: { amount_refund: 1000 } }))];
    const t = await api().refund('tr_AbC123');
    assert.equal(atoneTransactionState(t), 'refunded');
    assert.equal(seen.length, 3);
  });

  test('register is never repeated: not after a 500, not after a time-out (maybeApplied)', async () => {
    script = [json(500, { name: 'InternalServerError', message: 'oops', errors: [] })];
    await assert.rejects(api().register(registration()), (e: unknown) => e instanceof AtoneApiError && e.status === 500 && e.retryable);
    assert.equal(seen.length, 1);
    assert.equal(seen[0]!.headers['x-http-method-override'], 'POST');
    const sent = JSON.parse(seen[0]!.body) as Record<string, unknown>;
    assert.equal(sent.authentication_token, 'tk_member1');
    assert.deepEqual(sent.transaction_options, [1]);
    assert.equal('updated_transactions' in sent, false);
    assert.equal('checksum' in sent, false);

    seen.length = 0;
    script = [never];
    await assert.rejects(api({ timeoutMs: 150 }).register(registration()), (e: unknown) => e instanceof AtoneTransportError && e.kind === 'timeout' && e.maybeApplied);
    assert.equal(seen.length, 1);
  });

  test('update sends updated_transactions with the old id and returns the new transaction', async () => {
    script = [json(200, tx({ id: 'tr_NewOne456', updated_transactions: ['tr_AbC123'] }))];
    const t = await api().update('tr_AbC123', registration());
    assert.equal(t.id, 'tr_NewOne456');
    assert.deepEqual((JSON.parse(seen[0]!.body) as { updated_transactions: string[] }).updated_transactions, ['tr_AbC123']);
  });

  test('an invalid registration is refused before anything is sent', async () => {
    const bad = { ...registration(), amount: 1, authentication_token: 'nope' };
    await assert.rejects(api().register(bad), (e: unknown) => e instanceof AtonePaymentError && pairs([...e.problems]).join('|') === 'amount EATN0398|authentication_token EATN0302');
    await assert.rejects(api().register({ ...registration(), authentication_token: '' }), (e: unknown) => e instanceof AtonePaymentError && e.problems[0]!.code === 'EATN0301');
    assert.throws(() => api().reference('../admin'), TypeError);
    assert.equal(seen.length, 0);
  });

  test('readBackAtoneTransaction: only the id is taken from the notification', async () => {
    script = [json(200, tx({ amount: 1000 }))];
    const forged = Buffer.from(JSON.stringify({ id: 'tr_AbC123', amount: 1, authorization_result: 1 }));
    const t = await readBackAtoneTransaction(api(), forged);
    assert.equal(t.amount, 1000, 'the amount is atone’s, not the notification’s');
    script = [json(200, tx())];
    await readBackAtoneTransaction(api(), { id: 'tr_AbC123', authorization_result: 1 } as { id: string });
    script = [json(200, tx({ id: 'tr_Other999' }))];
    await assert.rejects(readBackAtoneTransaction(api(), 'tr_AbC123'), AtoneWebhookParseError);
    await assert.rejects(readBackAtoneTransaction(api(), '{"amount":1}'), AtoneWebhookParseError);
    assert.equal(seen.length, 3);
  });
});
