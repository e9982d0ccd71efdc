import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import Fastify, { type FastifyInstance } from 'fastify';
import formbody from '@fastify/formbody';
import { encodeSjis, sjisUrlEncode } from '../../src/gateways/common/sjis.js';
import { buildPurchaseRequest, parseMessage, sbpsHash, verifyMessage, type PurchaseRequestInput } from '../../src/gateways/sbps/index.js';
import { encodeXmlApiRequest, jstTimestamp, parseSbpsXml, SbpsApiError, SbpsTransportError, SbpsUnsupportedError, sbpsXmlApi } from '../../src/gateways/sbps/xml-api.js';
import { sbpsSandbox, type SbpsSandboxMerchant } from '../../src/sandbox/sbps.js';
import { eventually } from '../helpers/eventually.js';

/*
 * The SBPS simulator over real HTTP on loopback, driven the way a shop and a customer drive SBPS:
 * a purchase request posted as a Shift_JIS form, the payment screens walked with fetch, a
 * node:http "shop" receiving the result CGI, and the XML API through kessai's own client. The
 * Fastify instance also has @fastify/formbody at its root, as the real app does, to prove the
 * simulator's own Shift_JIS parser wins inside its plugin.
 */

const AUTO: SbpsSandboxMerchant = {
  merchantId: '30132',
  serviceId: '001',
  hashKey: '398a58952baf329cac5efbae97ea84ba17028d02',
  basicAuth: { user: '30132001', password: 'api-pass-auto' },
};
const MANUAL: SbpsSandboxMerchant = {
  merchantId: '30132',
  serviceId: '002',
  hashKey: 'c0ffee52baf329cac5efbae97ea84ba17028d0ff',
  basicAuth: { user: '30132002', password: 'api-pass-manual' },
  autoCapture: false,
};

interface Received {
  path: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
  fields: Record<string, string>;
}

let gateway: FastifyInstance;
let receiver: Server;
let shopUrl: string;
let base: string;
const received: Received[] = [];
/** What the shop answers to the next notifications, in order; then `OK,`. */
let answers: string[] = [];

before(async () => {
  receiver = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      received.push({ path: req.url ?? '', headers: req.headers, body, fields: parseMessage(body).message.fields });
      res.writeHead(200, { 'content-type': 'text/plain; charset=Shift_JIS' }).end(answers.shift() ?? 'OK,');
    });
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  shopUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`;

  gateway = Fastify();
  await gateway.register(formbody);
  gateway.post('/echo', async (request) => request.body); // the app's own forms still parse as before
  await gateway.register(sbpsSandbox({ merchants: [AUTO, MANUAL], notificationRetryDelaysMs: [50, 100, 200, 400, 800], notificationTimeoutMs: 2_000 }), { prefix: '/sandbox/sbps' });
  await gateway.listen({ host: '127.0.0.1', port: 0 });
  base = `http://127.0.0.1:${(gateway.server.address() as AddressInfo).port}/sandbox/sbps`;
});

after(async () => {
  await gateway.close();
  receiver.closeAllConnections();
  await new Promise((resolve) => receiver.close(resolve));
});

beforeEach(async () => {
  answers = [];
  await setFaults({ notification: 'deliver', browserReturn: 'send', delayMs: 1_000 });
});

async function setFaults(faults: Record<string, unknown>): Promise<void> {
  const res = await fetch(`${base}/api/faults`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(faults) });
  assert.equal(res.status, 200);
}

let seq = 0;
const orderId = () => `KS${process.pid}T${Date.now()}N${++seq}`;

function purchase(merchant: SbpsSandboxMerchant, overrides: PurchaseRequestInput = {}): [string, string][] {
  return buildPurchaseRequest(
    {
      pay_method: '',
      merchant_id: merchant.merchantId,
      service_id: merchant.serviceId,
      cust_code: 'reg_sps_guest',
      order_id: orderId(),
      item_id: 'CD-0001',
      item_name: 'テスト商品',
      amount: '1000',
      pay_type: '0',
      service_type: '0',
      terminal_type: '0',
      success_url: `${shopUrl}/success`,
      cancel_url: `${shopUrl}/cancel`,
      error_url: `${shopUrl}/error`,
      pagecon_url: `${shopUrl}/pagecon`,
      request_date: jstTimestamp(),
      limit_second: '600',
      ...overrides,
    },
    { hashKey: merchant.hashKey },
  );
}

/** Re-signs a tampered form the way a merchant's (wrong) code would: the hash matches the new values. */
function resign(pairs: [string, string][], merchant: SbpsSandboxMerchant, change: Record<string, string>): [string, string][] {
  const values = pairs.filter(([name]) => name !== 'sps_hashcode').map(([name, value]): [string, string] => [name, change[name] ?? value]);
  return [...values, ['sps_hashcode', sbpsHash('request', values.map(([, v]) => v), merchant.hashKey)]];
}

const valueOf = (pairs: [string, string][], name: string) => pairs.find(([n]) => n === name)?.[1] ?? '';

/** The browser submitting the shop's hand-off form: Shift_JIS, then following SBPS's redirect. */
async function submit(pairs: [string, string][]): Promise<{ status: number; url: string; html: string }> {
  const res = await fetch(`${base}/f01/FepBuyInfoReceive.do`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: Buffer.from(sjisUrlEncode(pairs), 'latin1'),
  });
  return { status: res.status, url: res.url, html: await res.text() };
}

const unescapeHtml = (s: string) => s.replace(/&#(\d+);/g, (_m, n: string) => String.fromCharCode(Number(n)));

/** Presses the button of the form whose action ends in `/${path}` on `html`, following redirects. */
async function press(html: string, path: string, form: Record<string, string> = {}, redirect: 'follow' | 'manual' = 'follow'): Promise<Response> {
  const action = new RegExp(`action="([^"]*/${path})"`).exec(html)?.[1];
  assert.ok(action, `no form posting to .../${path} on the page`);
  return fetch(new URL(unescapeHtml(action), base), {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(form).toString(),
    redirect,
  });
}

/** The auto-submitting return form: where it posts and what. */
function returnForm(html: string): { action: string; pairs: [string, string][] } {
  const form = /<form method="post" action="([^"]*)" accept-charset="Shift_JIS" id="sbps-return">([\s\S]*?)<\/form>/.exec(html);
  assert.ok(form, 'no return form on the page');
  const pairs = [...form[2]!.matchAll(/<input type="hidden" name="([^"]*)" value="([^"]*)">/g)].map((m): [string, string] => [unescapeHtml(m[1]!), unescapeHtml(m[2]!)]);
  return { action: unescapeHtml(form[1]!), pairs };
}

const notificationsFor = (order: string) => received.filter((r) => r.fields.order_id === order);

async function payByCard(merchant: SbpsSandboxMerchant, card: string, overrides: PurchaseRequestInput = {}) {
  const pairs = purchase(merchant, overrides);
  const screen = await submit(pairs);
  assert.equal(screen.status, 200);
  assert.match(screen.url, /\/pay\/[0-9a-f]{32}$/);
  const res = await press(screen.html, 'card', { cc_number: card });
  return { pairs, order: valueOf(pairs, 'order_id'), res, html: await res.text() };
}

async function trackingIdOf(order: string): Promise<string> {
  const [first] = await eventually(async () => {
    const list = notificationsFor(order);
    assert.ok(list.length > 0, `no notification for ${order}`);
    return list;
  });
  return first!.fields.res_tracking_id!;
}

describe('purchase request and result notification', () => {
  test('card payment: the result CGI is Shift_JIS, randomly ordered, hashed as UTF-8 and sent in uppercase', async () => {
    const { order, res, html } = await payByCard(AUTO, '4111111111111111');
    assert.equal(res.status, 200);
    // The first attempt is made before the browser is sent back, as SBPS orders them.
    const [note] = notificationsFor(order);
    assert.ok(note, 'notification arrived before the browser return');
    assert.equal(note.path, '/pagecon');
    assert.equal(note.headers['content-type'], 'application/x-www-form-urlencoded; charset=Shift_JIS');
    const raw = note.body.toString('latin1');
    assert.match(raw, /(^|&)item_name=%83e%83X%83g%8F%A4%95i(&|$)/, 'テスト商品 as Shift_JIS bytes');
    assert.match(raw, /(^|&)sps_hashcode=[0-9A-F]{40}(&|$)/, 'uppercase hex');
    const verified = verifyMessage('result', note.body, AUTO.hashKey);
    assert.ok(verified.valid, `result hash: expected ${verified.expected}, got ${verified.received}`);
    assert.equal(verifyMessage('result', note.body, MANUAL.hashKey).valid, false);
    const f = note.fields;
    assert.equal(f.res_result, 'OK');
    assert.equal(f.res_pay_method, 'credit');
    assert.match(f.res_tracking_id ?? '', /^\d{14}$/);
    assert.match(f.res_payment_date ?? '', /^\d{14}$/);
    assert.match(f.res_date ?? '', /^\d{14}$/);
    assert.equal(f.res_err_code, '');
    assert.equal(f.amount, '1000');
    assert.equal(f.item_name, 'テスト商品');
    assert.equal(f.pagecon_url, undefined, 'URLs are not echoed');

    // The browser return: a form to success_url, signed over Shift_JIS, with an unhashed TOKEN.
    const back = returnForm(html);
    assert.equal(back.action, `${shopUrl}/success`);
    assert.match(html, /<script src="\/sandbox\/sbps\/assets\/autosubmit\.js"><\/script>/);
    const body = Buffer.from(sjisUrlEncode(back.pairs), 'latin1');
    const ret = verifyMessage('return', body, AUTO.hashKey);
    assert.ok(ret.valid, 'return hash over Shift_JIS');
    assert.deepEqual(ret.unhashed, ['TOKEN']);
    assert.equal(verifyMessage('result', body, AUTO.hashKey).valid, false, 'the return is not hashed like the result');
    assert.equal(ret.message.fields.res_tracking_id, f.res_tracking_id);
    assert.match(valueOf(back.pairs, 'sps_hashcode'), /^[0-9A-F]{40}$/);

    const script = await fetch(`${base}/assets/autosubmit.js`);
    assert.match(await script.text(), /sbps-return/);
  });

  test('two notifications list their fields in different orders', async () => {
    const a = await payByCard(AUTO, '4111111111111111');
    const b = await payByCard(AUTO, '4111111111111111');
    const names = (order: string) => [...notificationsFor(order)[0]!.body.toString('latin1').matchAll(/(?:^|&)([^=&]+)=/g)].map((m) => m[1]);
    assert.equal(names(a.order).length, names(b.order).length);
    assert.notDeepEqual(names(a.order), names(b.order));
  });

  test('a declined card: NG with a credit error code, browser to error_url', async () => {
    const { order, html } = await payByCard(AUTO, '4000000000000002');
    const [note] = notificationsFor(order);
    assert.ok(note, 'note');
    assert.ok(verifyMessage('result', note.body, AUTO.hashKey).valid, 'verifyMessage(\'result\', note.body, AUTO.hashKey).valid');
    assert.equal(note.fields.res_result, 'NG');
    assert.equal(note.fields.res_err_code, '10123999');
    assert.equal(note.fields.res_payment_date, '');
    const back = returnForm(html);
    assert.equal(back.action, `${shopUrl}/error`);
    assert.equal(valueOf(back.pairs, 'res_err_code'), '10123999');
  });

  test('3-D Secure: the challenge page, a wrong password fails, 1234 passes', async () => {
    const failed = await payByCard(AUTO, '4000000000003220');
    assert.match(failed.res.url, /\/3ds$/);
    assert.match(failed.html, /type="password" name="password"/);
    assert.equal(notificationsFor(failed.order).length, 0, 'nothing is sent while the customer authenticates');
    const wrong = await press(failed.html, '3ds', { password: '0000' });
    returnForm(await wrong.text());
    assert.equal(notificationsFor(failed.order)[0]?.fields.res_err_code, '10136999');

    const passed = await payByCard(AUTO, '4000000000003220');
    const right = await press(passed.html, '3ds', { password: '1234' });
    assert.equal(returnForm(await right.text()).action, `${shopUrl}/success`);
    assert.equal(notificationsFor(passed.order)[0]?.fields.res_result, 'OK');
  });

  test('an invalid card number is asked again; nothing is sent', async () => {
    const { order, html } = await payByCard(AUTO, '4111111111111112');
    assert.match(html, /カード番号が正しくありません/);
    assert.match(html, /name="cc_number"/);
    assert.equal(notificationsFor(order).length, 0);
  });

  test('cancel on the payment screen: no notification, browser to cancel_url', async () => {
    const pairs = purchase(AUTO);
    const screen = await submit(pairs);
    const res = await press(screen.html, 'cancel');
    const back = returnForm(await res.text());
    assert.equal(back.action, `${shopUrl}/cancel`);
    assert.equal(valueOf(back.pairs, 'res_result'), 'CR');
    assert.ok(verifyMessage('return', Buffer.from(sjisUrlEncode(back.pairs), 'latin1'), AUTO.hashKey).valid, 'verifyMessage(\'return\', Buffer.from(sjisUrlEncode(back.pairs), \'latin1\'), AUTO.hashKey)…');
    await sleep(200);
    assert.equal(notificationsFor(valueOf(pairs, 'order_id')).length, 0);
    // A second press finds the transaction closed.
    assert.equal((await press(screen.html, 'card', { cc_number: '4111111111111111' })).status, 409);
  });

  test('convenience store: OK with webcvs, then a deposit sends PY and an expiry sends CN', async () => {
    const pairs = purchase(AUTO, { pay_method: 'webcvs' });
    const order = valueOf(pairs, 'order_id');
    const screen = await submit(pairs);
    assert.doesNotMatch(screen.html, /name="cc_number"/, 'pay_method=webcvs offers no card');
    const res = await press(screen.html, 'webcvs', { store: 'lawson' });
    const html = await res.text();
    assert.match(html, /払込番号 \/ Payment number<\/th><td><strong class="number">\d{4}-\d{4}-\d{4}<\/strong>/);
    assert.match(html, /支払期限 \/ Deadline<\/th><td>\d{4}-\d{2}-\d{2} \d{2}:\d{2} JST/);
    assert.doesNotMatch(html, /autosubmit/, 'the customer must read the number before leaving');
    assert.equal(returnForm(html).action, `${shopUrl}/success`);
    const [ok] = notificationsFor(order);
    assert.equal(ok?.fields.res_result, 'OK');
    assert.equal(ok?.fields.res_pay_method, 'webcvs');
    const trackingId = ok!.fields.res_tracking_id!;

    const pending = await (await fetch(`${base}/pending`)).text();
    assert.match(pending, new RegExp(trackingId));

    const paid = await fetch(`${base}/api/deposit/${trackingId}`, { method: 'POST' });
    assert.equal(paid.status, 200);
    assert.equal(((await paid.json()) as { state: string }).state, 'paid');
    const py = notificationsFor(order)[1];
    assert.ok(py && verifyMessage('result', py.body, AUTO.hashKey).valid, 'py && verifyMessage(\'result\', py.body, AUTO.hashKey).valid');
    assert.equal(py.fields.res_result, 'PY');
    assert.equal(py.fields.res_tracking_id, trackingId);
    assert.equal(py.fields.res_payinfo_key, 'P,1000,1000,');
    assert.equal((await fetch(`${base}/api/deposit/${trackingId}`, { method: 'POST' })).status, 409);
    assert.equal((await fetch(`${base}/api/expire/${trackingId}`, { method: 'POST' })).status, 409);
    assert.equal((await fetch(`${base}/api/deposit/99999999999999`, { method: 'POST' })).status, 404);

    // The other ending, from the pending page's button.
    const second = purchase(AUTO, { pay_method: 'webcvs' });
    const secondOrder = valueOf(second, 'order_id');
    await (await press((await submit(second)).html, 'webcvs', { store: 'familymart' })).text();
    const secondId = notificationsFor(secondOrder)[0]!.fields.res_tracking_id!;
    const list = await (await fetch(`${base}/pending`)).text();
    const expired = await press(list, `pending/${secondId}/expire`);
    assert.match(expired.url, /\/pending$/);
    assert.equal(notificationsFor(secondOrder)[1]?.fields.res_result, 'CN');
    assert.doesNotMatch(await expired.text(), new RegExp(secondId));
  });
});

describe('what SBPS refuses', () => {
  const errorCode = (html: string) => /<strong class="code">([0-9A-Z]{8})<\/strong>/.exec(html)?.[1];

  test('a wrong hash: error 09 on an SBPS-style page, nothing sent', async () => {
    const pairs = purchase(AUTO);
    const tampered = pairs.map(([name, value]): [string, string] => [name, name === 'amount' ? '1' : value]);
    const page = await submit(tampered);
    assert.equal(page.status, 200, 'SBPS error screens are HTTP 200');
    assert.equal(errorCode(page.html), '99909025');
    const noHash = await submit(pairs.filter(([name]) => name !== 'sps_hashcode'));
    assert.equal(errorCode(noHash.html), '99903025');
    const otherKey = await submit(purchase(MANUAL).map(([n, v]): [string, string] => [n, n === 'service_id' ? '001' : v]));
    assert.equal(errorCode(otherKey.html), '99909025');
    await sleep(200);
    assert.equal(notificationsFor(valueOf(pairs, 'order_id')).length, 0);
  });

  test('a duplicate order_id: error 96', async () => {
    const pairs = purchase(AUTO);
    assert.match((await submit(pairs)).url, /\/pay\//);
    const again = await submit(pairs);
    assert.equal(errorCode(again.html), '99996004');
    assert.match(again.html, /already used/);
  });

  test('required, characters, length, merchant, expiry: SBPS error types with the field', async () => {
    const cases: [string, [string, string][]][] = [
      ['99903005', resign(purchase(AUTO), AUTO, { item_id: '' })],
      ['99904005', resign(purchase(AUTO), AUTO, { item_id: 'CD!1' })],
      ['99905006', resign(purchase(AUTO), AUTO, { item_name: 'あ'.repeat(21) })],
      ['99906023', resign(purchase(AUTO), AUTO, { request_date: '2024011' })],
      ['99914001', resign(purchase(AUTO), AUTO, { merchant_id: '99999' })],
      ['99910023', purchase(AUTO, { request_date: jstTimestamp(new Date(Date.now() - 3_600_000)), limit_second: '600' })],
    ];
    for (const [code, pairs] of cases) {
      const page = await submit(pairs);
      assert.equal(errorCode(page.html), code, `${code}: ${page.html.slice(-600)}`);
    }
  });

  test('a field left out of the form altogether is a missing required item (03), although the hash still matches', async () => {
    for (const [name, code] of [['sps_cust_no', '99903999'], ['tracking_id', '99903027'], ['free_csv', '99903999'], ['tax', '99903007']] as const) {
      const pairs = purchase(AUTO).filter(([n]) => n !== name);
      assert.ok(verifyMessage('request', Buffer.from(sjisUrlEncode(pairs), 'latin1'), AUTO.hashKey).valid, 'an empty value adds nothing to the hash');
      const page = await submit(pairs);
      assert.equal(errorCode(page.html), code, `${name}: ${page.html.slice(-600)}`);
      assert.match(page.html, new RegExp(`${name}: the element is missing`));
    }
    // Detail rows are the one part that may be left out.
    assert.match((await submit(purchase(AUTO))).url, /\/pay\//);
    assert.match((await submit(purchase(AUTO, { details: [{ dtl_item_id: 'CD-0001', dtl_item_count: '1', dtl_amount: '1000' }] }))).url, /\/pay\//);
  });

  test('free_csv is decoded (Base64 of Shift_JIS) and its values checked as SBPS does', async () => {
    const base64 = (text: string) => encodeSjis(text).toString('base64');
    const cases: [string, string][] = [
      ['99904999', base64('LAST_NAME=鈴木,ADD2=A&B')],
      ['99904999', base64("ADD3=O'Hara")],
      ['99904999', base64('ITEM_NAME=<b>')],
      ['99904999', base64('LAST_NAME_KANA=ｽｽﾞｷ')],
      ['99904999', base64('MAIL=a+tag@example.jp')],
      ['99906999', base64('ADD2=1-2-3,101')], // the comma splits the value: "101" is not KEY=VALUE
      ['99906999', base64('LAST_NAME=鈴木').replace(/=+$/, '')], // unpadded: length not a multiple of 4
      ['99906999', 'TEFTVF9OQU1FPQ'],
    ];
    for (const [code, value] of cases) {
      const page = await submit(resign(purchase(AUTO), AUTO, { free_csv: value }));
      assert.equal(errorCode(page.html), code, `${value}: ${page.html.slice(-600)}`);
      assert.match(page.html, /free_csv/);
    }
    const accepted = purchase(AUTO, { pay_method: 'webcvs', freeCsv: { LAST_NAME: '鈴木', FIRST_NAME: '太郎', TEL: '0312345678', MAIL: 'taro@example.jp' } });
    assert.match((await submit(accepted)).url, /\/pay\//, 'what the library builds is accepted');
  });

  test("the app's own form parser is untouched outside the simulator", async () => {
    const res = await fetch(`${base.replace('/sandbox/sbps', '')}/echo`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'a=1&b=%E3%81%82' });
    assert.deepEqual(await res.json(), { a: '1', b: 'あ' });
  });
});

describe('delivery of notifications', () => {
  test('retried when the shop answers NG, with the same body', async () => {
    answers = ['NG,busy'];
    const { order } = await payByCard(AUTO, '4111111111111111');
    const list = await eventually(async () => {
      const l = notificationsFor(order);
      assert.equal(l.length, 2);
      return l;
    });
    assert.deepEqual(list[0]!.body, list[1]!.body);
    const overview = await (await fetch(`${base}/`)).text();
    assert.match(overview, new RegExp(`${order}[\\s\\S]*?OK: delivered ×2`));
  });

  test('retried when the shop answers something that is neither OK nor NG', async () => {
    answers = ['thanks!', 'NG,still busy'];
    const { order } = await payByCard(AUTO, '4111111111111111');
    await eventually(async () => assert.equal(notificationsFor(order).length, 3));
  });

  test('fault drop: nothing arrives, the overview says so', async () => {
    await setFaults({ notification: 'drop' });
    const { order, html } = await payByCard(AUTO, '4111111111111111');
    returnForm(html);
    await sleep(300);
    assert.equal(notificationsFor(order).length, 0);
    assert.match(await (await fetch(`${base}/`)).text(), new RegExp(`${order}[\\s\\S]*?OK: dropped`));
  });

  test('fault duplicate: the same notification twice', async () => {
    await setFaults({ notification: 'duplicate' });
    const { order } = await payByCard(AUTO, '4111111111111111');
    const list = await eventually(async () => {
      const l = notificationsFor(order);
      assert.equal(l.length, 2);
      return l;
    });
    assert.deepEqual(list[0]!.body, list[1]!.body);
  });

  test('fault after_return: the notification waits for the browser return', async () => {
    await setFaults({ notification: 'after_return', delayMs: 0 });
    const pairs = purchase(AUTO);
    const order = valueOf(pairs, 'order_id');
    const screen = await submit(pairs);
    const chosen = await press(screen.html, 'card', { cc_number: '4111111111111111' }, 'manual');
    assert.equal(chosen.status, 303);
    await sleep(300);
    assert.equal(notificationsFor(order).length, 0, 'held until the browser is back');
    returnForm(await (await fetch(new URL(chosen.headers.get('location')!, base))).text());
    await eventually(async () => assert.equal(notificationsFor(order).length, 1));
  });

  test('fault delay: the notification comes later, the browser does not wait', async () => {
    await setFaults({ notification: 'delay', delayMs: 400 });
    const { order } = await payByCard(AUTO, '4111111111111111');
    assert.equal(notificationsFor(order).length, 0);
    await eventually(async () => assert.equal(notificationsFor(order).length, 1), 3_000);
  });

  test('fault browserReturn omit: the customer never comes back', async () => {
    await setFaults({ browserReturn: 'omit' });
    const { order, html } = await payByCard(AUTO, '4111111111111111');
    assert.doesNotMatch(html, /id="sbps-return"/);
    assert.match(html, /browserReturn=omit/);
    assert.equal(notificationsFor(order).length, 1, 'the notification still goes');
  });

  test('bad fault settings are refused', async () => {
    const res = await fetch(`${base}/api/faults`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ notification: 'sometimes' }) });
    assert.equal(res.status, 400);
  });
});

describe('XML API through kessai’s client', () => {
  const api = (merchant: SbpsSandboxMerchant, overrides: Partial<Parameters<typeof sbpsXmlApi>[0]> = {}) =>
    sbpsXmlApi({ url: `${base}/api/xmlapi.do`, basicAuth: merchant.basicAuth, merchantId: merchant.merchantId, serviceId: merchant.serviceId, hashKey: merchant.hashKey, ...overrides });
  const pickState = (i: { status: string; capturedAmount?: number; refundedAmount?: number }) => [i.status, i.capturedAmount, i.refundedAmount];
  const ngCode = async (promise: Promise<unknown>) => {
    const error = await promise.then(
      () => assert.fail('expected NG'),
      (e: unknown) => e,
    );
    assert.ok(error instanceof SbpsApiError, String(error));
    return error.code;
  };

  test('manual capture: authorized → commit → partial refund → refund, with inquiry at each step', async () => {
    const { order } = await payByCard(MANUAL, '4111111111111111');
    const trackingId = await trackingIdOf(order);
    const client = api(MANUAL);
    const before = received.length;

    let state = await client.inquiry({ payMethod: 'credit', trackingId });
    assert.equal(state.status, 'authorized');
    assert.equal(state.paymentStatus, '1');
    assert.deepEqual([state.amount, state.capturedAmount, state.refundedAmount], [1000, 0, 0]);
    assert.equal(state.fromSandbox, true);

    assert.equal(await ngCode(client.partialRefund({ payMethod: 'credit', trackingId, amount: 100 })), '101K0999');
    assert.equal(await ngCode(client.commit({ payMethod: 'credit', trackingId, amount: 1001 })), '10179008');
    const committed = await client.commit({ payMethod: 'credit', trackingId, amount: 800 });
    assert.equal(committed.trackingId, trackingId);
    assert.match(committed.spsTransactionId ?? '', /^[0-9A-Z]{32}$/);
    state = await client.inquiry({ payMethod: 'credit', trackingId });
    assert.deepEqual([state.status, state.capturedAmount], ['captured', 800]);
    assert.equal(await ngCode(client.commit({ payMethod: 'credit', trackingId })), '10141999');

    await client.partialRefund({ payMethod: 'credit', trackingId, amount: 300 });
    state = await client.inquiry({ payMethod: 'credit', trackingId });
    assert.deepEqual([state.status, state.refundedAmount], ['partially_refunded', 300]);
    assert.equal(await ngCode(client.partialRefund({ payMethod: 'credit', trackingId, amount: 501 })), '101K1008');

    await client.refund({ payMethod: 'credit', trackingId });
    state = await client.inquiry({ payMethod: 'credit', trackingId });
    assert.deepEqual([state.status, state.paymentStatus, state.refundedAmount], ['refunded', '4', 800]);
    assert.equal(await ngCode(client.refund({ payMethod: 'credit', trackingId })), '10146999');

    await sleep(100);
    assert.equal(received.length, before, 'XML API operations send no result notification');
  });

  test('cancel voids an authorisation; nothing can be captured after it', async () => {
    const { order } = await payByCard(MANUAL, '4111111111111111');
    const trackingId = await trackingIdOf(order);
    const client = api(MANUAL);
    await client.cancel({ payMethod: 'credit', trackingId });
    assert.equal((await client.inquiry({ payMethod: 'credit', trackingId })).status, 'cancelled');
    assert.equal(await ngCode(client.commit({ payMethod: 'credit', trackingId })), '10140999');
    assert.equal(await ngCode(client.cancel({ payMethod: 'credit', trackingId })), '10152999');
  });

  test('auto capture: the payment is captured at once; commit and cancel are refused as SBPS does', async () => {
    const { order } = await payByCard(AUTO, '4111111111111111');
    const trackingId = await trackingIdOf(order);
    const client = api(AUTO);
    const state = await client.inquiry({ payMethod: 'credit', trackingId });
    assert.deepEqual([state.status, state.capturedAmount], ['captured', 1000]);
    assert.equal(await ngCode(client.commit({ payMethod: 'credit', trackingId })), '10137999');
    assert.equal(await ngCode(client.cancel({ payMethod: 'credit', trackingId })), '10149999');
  });

  test('inquiry of a convenience-store payment reports awaiting_payment, then captured', async () => {
    const pairs = purchase(AUTO, { pay_method: 'webcvs' });
    await (await press((await submit(pairs)).html, 'webcvs', { store: 'seven-eleven' })).text();
    const trackingId = await trackingIdOf(valueOf(pairs, 'order_id'));
    const client = api(AUTO);
    const waiting = await client.inquiry({ payMethod: 'webcvs', trackingId });
    assert.deepEqual([waiting.status, waiting.payMethod, waiting.paymentStatus], ['awaiting_payment', 'webcvs', undefined]);
    await fetch(`${base}/api/deposit/${trackingId}`, { method: 'POST' });
    assert.equal((await client.inquiry({ payMethod: 'webcvs', trackingId })).status, 'captured');
    assert.equal(await ngCode(client.inquiry({ payMethod: 'credit', trackingId })), '10112027', "the card's inquiry does not know a convenience-store payment");
    assert.equal(await ngCode(client.refund({ payMethod: 'credit', trackingId })), '10112027', 'the card API does not know a convenience-store payment');
    await assert.rejects(client.refund({ payMethod: 'webcvs', trackingId }), (e: unknown) => e instanceof SbpsUnsupportedError && /pay the money back outside SBPS/.test(e.message));
  });

  /** Pays with a carrier or PayPay on the simulator's screen; answers the tracking id. */
  async function payByWallet(merchant: SbpsSandboxMerchant, method: string): Promise<string> {
    const pairs = purchase(merchant, { pay_method: method });
    const screen = await submit(pairs);
    assert.doesNotMatch(screen.html, /name="cc_number"/, `pay_method=${method} offers no card`);
    returnForm(await (await press(screen.html, 'wallet', { method })).text());
    const trackingId = await trackingIdOf(valueOf(pairs, 'order_id'));
    assert.equal(notificationsFor(valueOf(pairs, 'order_id'))[0]?.fields.res_pay_method, method);
    return trackingId;
  }

  /** An XML API request written by hand (what another client might send), answered as parsed fields. */
  async function rawRequest(merchant: SbpsSandboxMerchant, requestId: string, entries: [string, string][]): Promise<Record<string, string>> {
    const body = encodeXmlApiRequest(requestId, [['merchant_id', merchant.merchantId], ['service_id', merchant.serviceId], ...entries], merchant.hashKey);
    const res = await fetch(`${base}/api/xmlapi.do`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`${merchant.basicAuth.user}:${merchant.basicAuth.password}`).toString('base64')}`, 'content-type': 'text/xml; charset=Shift_JIS' },
      body,
    });
    return Object.fromEntries(parseSbpsXml(Buffer.from(await res.arrayBuffer())).entries);
  }

  test("PayPay: read and refunded with PayPay's request ids; the card's ids do not find it, as at SBPS", async () => {
    const trackingId = await payByWallet(AUTO, 'paypay');
    const client = api(AUTO);
    const state = await client.inquiry({ payMethod: 'paypay', trackingId });
    assert.deepEqual([state.status, state.payMethod, state.capturedAmount], ['captured', 'paypay', 1000]);
    assert.equal(await ngCode(client.inquiry({ payMethod: 'credit', trackingId })), '10112027');
    assert.equal(await ngCode(client.refund({ payMethod: 'credit', trackingId })), '10112027', 'a card refund of a PayPay payment is NG');
    await assert.rejects(client.partialRefund({ payMethod: 'paypay', trackingId, amount: 100 }), SbpsUnsupportedError);
    const at = jstTimestamp();
    const partial = await rawRequest(AUTO, 'ST02-00307-101', [['tracking_id', trackingId], ['processing_datetime', at], ['pay_option_manage.amount', '100'], ['request_date', at]]);
    assert.deepEqual([partial.res_result, partial.res_err_code], ['NG', '10112027'], "the card's partial refund does not find it either");
    await client.refund({ payMethod: 'paypay', trackingId });
    const refunded = await client.inquiry({ payMethod: 'paypay', trackingId });
    assert.deepEqual([refunded.status, refunded.refundedAmount], ['refunded', 1000]);
    assert.equal(await ngCode(client.refund({ payMethod: 'paypay', trackingId })), '31146999');
  });

  test('docomo under manual capture: captured in full by its sales request (no amount), then voided-or-refunded by its one request', async () => {
    const trackingId = await payByWallet(MANUAL, 'docomo');
    const client = api(MANUAL);
    assert.equal((await client.inquiry({ payMethod: 'docomo', trackingId })).status, 'authorized');
    const at = jstTimestamp();
    const withAmount = await rawRequest(MANUAL, 'ST02-00201-401', [['tracking_id', trackingId], ['processing_datetime', at], ['pay_option_manage.amount', '500'], ['request_date', at]]);
    assert.deepEqual([withAmount.res_result, withAmount.res_err_code], ['NG', '40113008']);
    assert.equal(await ngCode(client.commit({ payMethod: 'credit', trackingId })), '10112027');
    await client.commit({ payMethod: 'docomo', trackingId });
    assert.deepEqual(pickState(await client.inquiry({ payMethod: 'docomo', trackingId })), ['captured', 1000, 0]);
    await client.cancel({ payMethod: 'docomo', trackingId }); // ST02-00303-401: a sale is refunded
    assert.deepEqual(pickState(await client.inquiry({ payMethod: 'docomo', trackingId })), ['refunded', 1000, 1000]);
  });

  test('wrong Basic auth: 401, nothing applied', async () => {
    const error = await api(AUTO, { basicAuth: { user: AUTO.basicAuth.user, password: 'wrong' } })
      .inquiry({ payMethod: 'credit', trackingId: '12345678901234' })
      .catch((e: unknown) => e);
    assert.ok(error instanceof SbpsTransportError, 'error instanceof SbpsTransportError');
    assert.equal(error.status, 401);
    assert.equal(error.outcomeUnknown, false);
  });

  test('wrong hash key: NG of type 09', async () => {
    const { order } = await payByCard(MANUAL, '4111111111111111');
    const trackingId = await trackingIdOf(order);
    const error = await api(MANUAL, { hashKey: AUTO.hashKey }).commit({ payMethod: 'credit', trackingId }).catch((e: unknown) => e);
    assert.ok(error instanceof SbpsApiError, 'error instanceof SbpsApiError');
    assert.equal(error.type, '09');
    assert.equal(error.code, '10109025');
    assert.match(error.message, /hash error/);
    assert.equal((await api(MANUAL).inquiry({ payMethod: 'credit', trackingId })).status, 'authorized', 'nothing changed');
  });

  test("another merchant's ids, an unknown tracking id, the confirm request id", async () => {
    const { order } = await payByCard(AUTO, '4111111111111111');
    const trackingId = await trackingIdOf(order);
    // MANUAL's credentials and key, AUTO's service id: the account does not own those ids.
    assert.equal(await ngCode(api(MANUAL, { serviceId: AUTO.serviceId }).inquiry({ payMethod: 'credit', trackingId })), '10114001');
    // MANUAL may not touch AUTO's payment.
    assert.equal(await ngCode(api(MANUAL).inquiry({ payMethod: 'credit', trackingId })), '10112027');
    assert.equal(await ngCode(api(AUTO).inquiry({ payMethod: 'credit', trackingId: '11111111111111' })), '10112027');

    const at = jstTimestamp();
    const body = encodeXmlApiRequest('ST02-00101-101', [['merchant_id', AUTO.merchantId], ['service_id', AUTO.serviceId], ['tracking_id', trackingId], ['request_date', at]], AUTO.hashKey);
    const res = await fetch(`${base}/api/xmlapi.do`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`${AUTO.basicAuth.user}:${AUTO.basicAuth.password}`).toString('base64')}`, 'content-type': 'text/xml; charset=Shift_JIS' },
      body,
    });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /text\/xml; charset=Shift_JIS/i);
    const answer = Object.fromEntries(parseSbpsXml(Buffer.from(await res.arrayBuffer())).entries);
    assert.deepEqual([answer.res_result, answer.res_err_code], ['NG', '10113000']);
  });
});
