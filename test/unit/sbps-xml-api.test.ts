import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { decodeSjis, encodeSjis } from '../../src/gateways/common/sjis.js';
import {
  buildSbpsXml,
  decodeSbpsErrorCode,
  encodeXmlApiRequest,
  jstTimestamp,
  parseSbpsXml,
  SbpsApiError,
  SbpsTransportError,
  SbpsUnsupportedError,
  SbpsXmlError,
  sbpsXmlApi,
  XML_API_REQUEST_IDS,
} from '../../src/gateways/sbps/xml-api.js';

/*
 * The XML API client against a scripted SBPS on loopback: what goes over the wire (Basic auth,
 * Shift_JIS XML, field order, hash) and what comes back (OK, NG, garbage, silence). The full round
 * trip against the simulator is in test/integration/sbps-sandbox.test.ts.
 */

const HASH_KEY = 'c48e7b8d9a2b1f0e3d4c5b6a79881726354f3e2d';
const FIXED_NOW = new Date('2024-01-01T03:00:00Z'); // 12:00:00 JST

interface Seen {
  headers: IncomingHttpHeaders;
  body: Buffer;
}

let server: Server;
let url: string;
const seen: Seen[] = [];
/** Answers for the next requests, in order; when empty, `fallback` answers. */
let script: ((res: import('node:http').ServerResponse) => void)[] = [];
let fallback: (res: import('node:http').ServerResponse) => void;

const xmlAnswer = (status: number, xml: string) => (res: import('node:http').ServerResponse) => {
  res.writeHead(status, { 'content-type': 'text/xml; charset=Shift_JIS' }).end(encodeSjis(xml));
};
const ok = (id: string | undefined, extra = '') =>
  xmlAnswer(
    200,
    `<?xml version="1.0" encoding="Shift_JIS"?>\n<sps-api-response${id === undefined ? '' : ` id="${id}"`}>\n  <res_result>OK</res_result>\n  <res_sps_transaction_id>X1234567890123456789012345678901</res_sps_transaction_id>\n  <res_tracking_id>80312789324671</res_tracking_id>\n${extra}  <res_process_date>20240101120001</res_process_date>\n  <res_err_code/>\n  <res_date>20240101120002</res_date>\n</sps-api-response>\n`,
  );
const ng = (code: string) =>
  xmlAnswer(200, `<?xml version='1.0' encoding='Shift_JIS' ?>\n  <sps-api-response>\n    <res_result>NG</res_result>\n    <res_err_code>${code}</res_err_code>\n    <res_date>20240101120002</res_date>\n  </sps-api-response>\n`);
const status = (code: number) => (res: import('node:http').ServerResponse) => {
  res.writeHead(code, { 'content-type': 'text/plain' }).end('nope');
};

before(async () => {
  server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      seen.push({ headers: req.headers, body: Buffer.concat(chunks) });
      (script.shift() ?? fallback)(res);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/api/xmlapi.do`;
});

after(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

beforeEach(() => {
  seen.length = 0;
  script = [];
  fallback = status(500);
});

const client = (overrides: Partial<Parameters<typeof sbpsXmlApi>[0]> = {}) =>
  sbpsXmlApi({
    url,
    basicAuth: { user: '30132001', password: 'api-secret' },
    merchantId: '30132',
    serviceId: '001',
    hashKey: HASH_KEY,
    now: () => FIXED_NOW,
    inquiryRetryDelaysMs: [10, 20],
    ...overrides,
  });

/** SHA-1 written out here, not through the library: the Shift_JIS bytes of the values and the key. */
const independentHash = (values: string[]) => createHash('sha1').update(encodeSjis(values.join('') + HASH_KEY)).digest('hex');

describe('request on the wire', () => {
  test('partial refund: Basic auth, Shift_JIS XML, fields in SBPS order, hash over the values in document order', async () => {
    script = [ok(XML_API_REQUEST_IDS.partialRefund)];
    const result = await client().partialRefund({ payMethod: 'credit', trackingId: '80312789324671', amount: 300 });

    assert.equal(seen.length, 1);
    const { headers, body } = seen[0]!;
    assert.equal(headers.authorization, `Basic ${Buffer.from('30132001:api-secret').toString('base64')}`);
    assert.equal(headers['content-type'], 'application/xml');
    const xml = decodeSjis(body);
    assert.match(xml, /^<\?xml version="1.0" encoding="Shift_JIS"\?>\n<sps-api-request id="ST02-00307-101">/);
    const doc = parseSbpsXml(body);
    const values = ['30132', '001', '80312789324671', '20240101120000', '300', '20240101120000'];
    assert.deepEqual(doc.entries, [
      ['merchant_id', '30132'],
      ['service_id', '001'],
      ['tracking_id', '80312789324671'],
      ['processing_datetime', '20240101120000'],
      ['pay_option_manage.amount', '300'],
      ['request_date', '20240101120000'],
      ['sps_hashcode', independentHash(values)],
    ]);
    assert.match(xml, /<pay_option_manage>\s*<amount>300<\/amount>\s*<\/pay_option_manage>/);
    assert.equal(result.trackingId, '80312789324671');
    assert.equal(result.spsTransactionId, 'X1234567890123456789012345678901');
    assert.equal(result.processDate, '20240101120001');
  });

  test('each operation sends its request id and only its fields', async () => {
    fallback = (res) => ok(undefined)(res);
    const api = client();
    const cases: [string, () => Promise<unknown>, string[]][] = [
      ['ST02-00201-101', () => api.commit({ payMethod: 'credit', trackingId: '1' }), ['merchant_id', 'service_id', 'tracking_id', 'processing_datetime', 'request_date', 'sps_hashcode']],
      ['ST02-00201-101', () => api.commit({ payMethod: 'credit', trackingId: '1', amount: 500 }), ['merchant_id', 'service_id', 'tracking_id', 'processing_datetime', 'pay_option_manage.amount', 'request_date', 'sps_hashcode']],
      ['ST02-00303-101', () => api.refund({ payMethod: 'credit', trackingId: '1' }), ['merchant_id', 'service_id', 'tracking_id', 'processing_datetime', 'request_date', 'sps_hashcode']],
      ['ST02-00305-101', () => api.cancel({ payMethod: 'credit', trackingId: '1' }), ['merchant_id', 'service_id', 'tracking_id', 'processing_datetime', 'request_date', 'sps_hashcode']],
      ['MG01-00101-101', () => api.inquiry({ payMethod: 'credit', trackingId: '1' }), ['merchant_id', 'service_id', 'tracking_id', 'request_date', 'sps_hashcode']],
    ];
    for (const [id, run, names] of cases) {
      seen.length = 0;
      // The answer carries no id here (as NG answers are seen): the client must not insist on one.
      await run();
      const doc = parseSbpsXml(seen[0]!.body);
      assert.equal(doc.id, id);
      assert.deepEqual(doc.entries.map(([name]) => name), names, id);
    }
  });

  // A tracking id belongs to one payment method at SBPS; the card's ids sent for a PayPay payment are answered NG.
  const METHOD_IDS: [method: string, refund: string, cancel: string, inquiry: string, commit?: string][] = [
    ['credit3d2', 'ST02-00303-101', 'ST02-00305-101', 'MG01-00101-101', 'ST02-00201-101'],
    ['paypay', 'ST02-00303-311', 'ST02-00303-311', 'MG01-00101-311', 'ST02-00201-311'],
    ['docomo', 'ST02-00303-401', 'ST02-00303-401', 'MG01-00101-401', 'ST02-00201-401'],
    ['auone', 'ST02-00303-402', 'ST02-00303-402', 'MG01-00101-402', 'ST02-00201-402'],
    ['softbank2', 'ST02-00303-405', 'ST02-00303-405', 'MG01-00101-405', 'ST02-00201-405'],
    ['aupay', 'ST02-00303-406', 'ST02-00303-406', 'MG01-00101-406'],
  ];
  for (const [payMethod, refund, cancel, inquiry, commit] of METHOD_IDS) {
    test(`${payMethod}: refund, cancel, inquiry${commit ? ' and capture' : ''} send ${payMethod}'s request ids`, async () => {
      fallback = (res) => ok(undefined)(res);
      const api = client();
      const sent = async (run: () => Promise<unknown>): Promise<string | undefined> => {
        seen.length = 0;
        await run();
        return parseSbpsXml(seen[0]!.body).id;
      };
      assert.equal(await sent(() => api.refund({ payMethod, trackingId: '1' })), refund);
      assert.equal(await sent(() => api.cancel({ payMethod, trackingId: '1' })), cancel);
      assert.equal(await sent(() => api.inquiry({ payMethod, trackingId: '1' })), inquiry);
      if (commit) assert.equal(await sent(() => api.commit({ payMethod, trackingId: '1' })), commit);
      else await assert.rejects(api.commit({ payMethod, trackingId: '1' }), SbpsUnsupportedError);
    });
  }

  test('an operation the method does not have is refused, naming the method, before anything is sent', async () => {
    fallback = (res) => ok(undefined)(res);
    const api = client();
    const cases: [string, () => Promise<unknown>, RegExp][] = [
      ['paypay partial refund', () => api.partialRefund({ payMethod: 'paypay', trackingId: '1', amount: 100 }), /no partial refund request for paypay payments: SBPS cancels or refunds a paypay payment only in full \(ST02-00303-311\)/],
      ['docomo partial refund', () => api.partialRefund({ payMethod: 'docomo', trackingId: '1', amount: 100 }), /docomo payment only in full/],
      ['docomo capture of part', () => api.commit({ payMethod: 'docomo', trackingId: '1', amount: 100 }), /capture a docomo authorisation in full/],
      ['aupay capture', () => api.commit({ payMethod: 'aupay', trackingId: '1' }), /no capture request for aupay payments/],
      ['webcvs refund', () => api.refund({ payMethod: 'webcvs', trackingId: '1' }), /no refund request for webcvs payments: .*outside SBPS/],
      ['payeasy cancel', () => api.cancel({ payMethod: 'payeasy', trackingId: '1' }), /payeasy payments: .*outside SBPS/],
      ['banktransfer refund', () => api.refund({ payMethod: 'banktransfer', trackingId: '1' }), /banktransfer payments: .*outside SBPS/],
      ['unionpay refund', () => api.refund({ payMethod: 'unionpay', trackingId: '1' }), /kessai knows no XML API request ids for "unionpay"/],
      ['linepay inquiry', () => api.inquiry({ payMethod: 'linepay', trackingId: '1' }), /linepay/],
      ['unknown method', () => api.inquiry({ payMethod: '', trackingId: '1' }), /payment method is not known/],
    ];
    for (const [what, run, message] of cases) {
      await assert.rejects(run(), (e: unknown) => e instanceof SbpsUnsupportedError && message.test(e.message), what);
    }
    assert.equal(seen.length, 0, 'nothing was sent');
  });

  test('a carrier capture takes no amount; requestIds overrides an id', async () => {
    fallback = (res) => ok(undefined)(res);
    await client().commit({ payMethod: 'docomo', trackingId: '1' });
    assert.deepEqual(parseSbpsXml(seen[0]!.body).entries.map(([name]) => name), ['merchant_id', 'service_id', 'tracking_id', 'processing_datetime', 'request_date', 'sps_hashcode']);
    seen.length = 0;
    await client({ requestIds: { docomo: { inquiry: 'MG01-00102-401' } } }).inquiry({ payMethod: 'docomo', trackingId: '1' });
    assert.equal(parseSbpsXml(seen[0]!.body).id, 'MG01-00102-401');
  });

  test('request_date is Japan time', () => {
    assert.equal(jstTimestamp(new Date('2024-12-31T15:00:00Z')), '20250101000000');
    assert.equal(jstTimestamp(new Date('2024-02-29T14:59:59Z')), '20240229235959');
  });

  test('bad input is refused before anything is sent', async () => {
    const api = client();
    await assert.rejects(api.partialRefund({ payMethod: 'credit', trackingId: '80312789324671', amount: 0 }), TypeError);
    await assert.rejects(api.partialRefund({ payMethod: 'credit', trackingId: '80312789324671', amount: 1.5 }), TypeError);
    await assert.rejects(api.commit({ payMethod: 'credit', trackingId: '80312789324671', amount: 10_000_000 }), TypeError);
    await assert.rejects(api.refund({ payMethod: 'credit', trackingId: '8031<x>' }), TypeError);
    assert.equal(seen.length, 0);
    assert.throws(() => client({ merchantId: 'abc' }), /merchantId must be digits/);
  });
});

describe('answers', () => {
  test('NG becomes SbpsApiError with the code taken apart', async () => {
    script = [ng('10109025')];
    const error = await client().refund({ payMethod: 'credit', trackingId: '80312789324671' }).then(
      () => assert.fail('expected NG'),
      (e: unknown) => e,
    );
    assert.ok(error instanceof SbpsApiError, 'error instanceof SbpsApiError');
    assert.equal(error.code, '10109025');
    assert.equal(error.method, '101');
    assert.equal(error.type, '09');
    assert.equal(error.item, '025');
    assert.equal(error.transient, false);
    assert.equal(error.operation, 'refund');
    assert.match(error.message, /ST02-00303-101.*NG 10109025: hash error \(field sps_hashcode\) \[credit card\]: check the hash key/);
  });

  test('an SBPS system error is marked transient', async () => {
    script = [ng('10190999')];
    const error = await client().commit({ payMethod: 'credit', trackingId: '1' }).catch((e: unknown) => e);
    assert.ok(error instanceof SbpsApiError, 'error instanceof SbpsApiError');
    assert.equal(error.transient, true);
  });

  test('inquiry: payment_status as SBPS sends it, amounts only when the answer carries them', async () => {
    script = [ok(XML_API_REQUEST_IDS.inquiry, '  <res_status>0</res_status>\n  <res_pay_method_info>\n    <payment_status>2</payment_status>\n    <commit_status>1</commit_status>\n  </res_pay_method_info>\n')];
    const real = await client().inquiry({ payMethod: 'credit', trackingId: '80312789324671' });
    assert.equal(real.status, 'captured');
    assert.equal(real.paymentStatus, '2');
    assert.equal(real.commitStatus, '1');
    assert.equal(real.fromSandbox, false);
    assert.equal(real.amount, undefined);
    assert.equal(real.refundedAmount, undefined);

    script = [ok(XML_API_REQUEST_IDS.inquiry, '  <res_status>0</res_status>\n')];
    assert.equal((await client().inquiry({ payMethod: 'credit', trackingId: '80312789324671' })).status, 'unknown');
  });

  test('an answer that is not SBPS XML is a transport error with an unknown outcome', async () => {
    script = [(res) => res.writeHead(200, { 'content-type': 'text/html' }).end('<html><body>maintenance</body></html>')];
    const error = await client().commit({ payMethod: 'credit', trackingId: '1' }).catch((e: unknown) => e);
    assert.ok(error instanceof SbpsTransportError, 'error instanceof SbpsTransportError');
    assert.equal(error.kind, 'malformed');
    assert.equal(error.outcomeUnknown, true);

    script = [ok('ST02-00303-101')];
    const crossed = await client().commit({ payMethod: 'credit', trackingId: '1' }).catch((e: unknown) => e);
    assert.ok(crossed instanceof SbpsTransportError, 'crossed instanceof SbpsTransportError');
    assert.match(crossed.message, /answer is for ST02-00303-101/);
  });

  test('401 says what to check, and that nothing happened', async () => {
    script = [status(401)];
    const error = await client().refund({ payMethod: 'credit', trackingId: '1' }).catch((e: unknown) => e);
    assert.ok(error instanceof SbpsTransportError, 'error instanceof SbpsTransportError');
    assert.equal(error.kind, 'http');
    assert.equal(error.status, 401);
    assert.equal(error.outcomeUnknown, false);
    assert.match(error.message, /Basic auth refused/);
  });
});

describe('retries', () => {
  test('inquiry retries a 5xx twice and then succeeds', async () => {
    script = [status(503), status(502), ok(XML_API_REQUEST_IDS.inquiry, '  <res_pay_method_info><payment_status>1</payment_status></res_pay_method_info>\n')];
    const result = await client().inquiry({ payMethod: 'credit', trackingId: '80312789324671' });
    assert.equal(result.status, 'authorized');
    assert.equal(seen.length, 3);
  });

  test('inquiry gives up after two retries', async () => {
    fallback = status(500);
    const error = await client().inquiry({ payMethod: 'credit', trackingId: '1' }).catch((e: unknown) => e);
    assert.ok(error instanceof SbpsTransportError, 'error instanceof SbpsTransportError');
    assert.equal(error.status, 500);
    assert.equal(seen.length, 3);
  });

  test('inquiry does not retry an NG', async () => {
    script = [ng('10112027')];
    await assert.rejects(client().inquiry({ payMethod: 'credit', trackingId: '1' }), SbpsApiError);
    assert.equal(seen.length, 1);
  });

  test('money operations are never repeated by the client', async () => {
    const api = client();
    for (const run of [() => api.commit({ payMethod: 'credit', trackingId: '1' }), () => api.refund({ payMethod: 'credit', trackingId: '1' }), () => api.partialRefund({ payMethod: 'credit', trackingId: '1', amount: 1 }), () => api.cancel({ payMethod: 'credit', trackingId: '1' })]) {
      seen.length = 0;
      const error = await run().catch((e: unknown) => e);
      assert.ok(error instanceof SbpsTransportError, 'error instanceof SbpsTransportError');
      assert.equal(error.outcomeUnknown, true, 'a 5xx may have been applied: read back first');
      assert.equal(seen.length, 1);
    }
  });

  test('a silent server times out; the refund is not repeated', async () => {
    script = [() => undefined]; // never answers
    const started = Date.now();
    const error = await client({ timeoutMs: 150 }).refund({ payMethod: 'credit', trackingId: '1' }).catch((e: unknown) => e);
    assert.ok(error instanceof SbpsTransportError, 'error instanceof SbpsTransportError');
    assert.equal(error.kind, 'timeout');
    assert.equal(error.outcomeUnknown, true);
    assert.ok(Date.now() - started < 2_000, 'Date.now() - started < 2_000');
    assert.equal(seen.length, 1);
    server.closeAllConnections();
  });

  test('a refused connection is a network error', async () => {
    const error = await client({ url: 'http://127.0.0.1:9/api/xmlapi.do' }).cancel({ payMethod: 'credit', trackingId: '1' }).catch((e: unknown) => e);
    assert.ok(error instanceof SbpsTransportError, 'error instanceof SbpsTransportError');
    assert.equal(error.kind, 'network');
  });
});

describe('the document', () => {
  test('values are escaped, groups nest, empty values self-close, and it reads back the same', () => {
    const entries = [
      ['merchant_id', '30132'],
      ['note', `a<b & "c" 'd'>`],
      ['pay_option_manage.amount', '100'],
      ['pay_option_manage.token', ''],
      ['request_date', '20240101120000'],
    ] as const;
    const xml = buildSbpsXml('sps-api-request', 'ST02-00307-101', entries);
    assert.match(xml, /<note>a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt;<\/note>/);
    assert.match(xml, /<token\/>/);
    const doc = parseSbpsXml(encodeSjis(xml));
    assert.equal(doc.root, 'sps-api-request');
    assert.equal(doc.id, 'ST02-00307-101');
    assert.deepEqual(doc.entries, entries);
  });

  test('multi-byte fields travel as Base64 of Shift_JIS and are hashed as text', () => {
    const body = encodeXmlApiRequest('ST01-00131-101', [['item_name', '継続課金'], ['amount', '980']], HASH_KEY, { multibyte: new Set(['item_name']) });
    const xml = decodeSjis(body);
    assert.ok(xml.includes(`<item_name>${encodeSjis('継続課金').toString('base64')}</item_name>`), xml);
    const doc = parseSbpsXml(body, { multibyte: new Set(['item_name']) });
    assert.deepEqual(doc.entries.slice(0, 2), [['item_name', '継続課金'], ['amount', '980']]);
    assert.equal(doc.entries[2]![1], independentHash(['継続課金', '980']));
  });

  test('a Shift_JIS answer is decoded by its declaration', () => {
    const doc = parseSbpsXml(encodeSjis(`<?xml version='1.0' encoding='Shift_JIS' ?><sps-api-response><res_result>NG</res_result><note>継続課金 &#x3042;</note></sps-api-response>`));
    assert.deepEqual(doc.entries, [['res_result', 'NG'], ['note', '継続課金 あ']]);
  });

  test('what SBPS never sends is refused', () => {
    const refuse = (xml: string, pattern: RegExp) => assert.throws(() => parseSbpsXml(xml), (e: unknown) => e instanceof SbpsXmlError && pattern.test(e.message));
    refuse('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "boom">]><sps-api-response/>', /DOCTYPE/);
    refuse('<sps-api-response><a x="1">v</a></sps-api-response>', /attributes on <a>/);
    refuse('<sps-api-response foo="1"/>', /attribute "foo"/);
    refuse('<sps-api-response><a>text<b>v</b></a></sps-api-response>', /mixes text and elements/);
    refuse('<sps-api-response><a><b><c><d>v</d></c></b></a></sps-api-response>', /nested deeper/);
    refuse('<sps-api-response><a>v</b></sps-api-response>', /expected <\/a>/);
    refuse('<sps-api-response><a>&e;</a></sps-api-response>', /entity/);
    refuse('<sps-api-response/><x/>', /after the root/);
    assert.throws(() => parseSbpsXml(Buffer.from('<?xml version="1.0" encoding="EUC-JP"?><sps-api-response/>')), /unsupported XML encoding "euc-jp"/);
    assert.throws(() => parseSbpsXml(Buffer.alloc(70 * 1024, 0x20)), /exceeds/);
    assert.throws(() => buildSbpsXml('sps-api-request', 'x', [['a.b.c.d', '1']]), /nested deeper/);
    assert.throws(() => buildSbpsXml('sps-api-request', 'x', [['bad name', '1']]), /invalid element name/);
    assert.throws(() => buildSbpsXml('sps-api-request', 'x', [['a', 'x\u0001']]), /control characters/);
  });
});

describe('error codes', () => {
  test('MMMTTIII is named as far as it is known', () => {
    const hash = decodeSbpsErrorCode('99909025');
    assert.deepEqual([hash.method, hash.type, hash.item, hash.methodName, hash.typeName, hash.itemName], ['999', '09', '025', 'common', 'hash error', 'sps_hashcode']);
    assert.match(decodeSbpsErrorCode('10137999').description, /auto capture is configured/);
    assert.match(decodeSbpsErrorCode('101K1008').description, /refunds would exceed the captured amount \(field amount\)/);
    assert.match(decodeSbpsErrorCode('40503001').description, /required field missing \(field merchant_id\) \[SoftBank/);
    assert.match(decodeSbpsErrorCode('70123214').description, /payment deadline invalid \(item 214\) \[Web convenience store\]/);
    assert.match(decodeSbpsErrorCode('12345').description, /unrecognised/);
  });
});
