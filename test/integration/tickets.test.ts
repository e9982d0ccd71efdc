/**
 * Event tickets, as the buyer, the gateway, the operator and the door see them: a paid ticket order
 * issues one ticket per unit with an unguessable code and a QR that opens the ticket's check page;
 * the order page, the JSON API and the paid mail show them; money going back voids them.
 */
import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import jsqr from 'jsqr';
import { PNG } from 'pngjs';
import { createProduct } from '../../src/commerce/catalog.js';
import { sandboxSecret } from '../../src/commerce/shops.js';
import { fulfilmentLines } from '../../src/commerce/fulfilment-lines.js';
import { canonicalTicketCode, issueTickets, maskOrderNumber, newTicketCode } from '../../src/commerce/tickets.js';
import { forEachEngine } from '../helpers/db.js';
import { eventually } from '../helpers/eventually.js';
import { readMails } from '../helpers/mail.js';
import { ADMIN_TOKEN, attempts, notificationsApplied, onlyAttempt, startStore, type TestStore } from '../helpers/store.js';

interface TicketView {
  code: string;
  productName: string;
  state: string;
  url: string;
}
interface OrderView {
  number: string;
  state: string;
  tickets: TicketView[];
}
interface Placed {
  token: string;
  number: string;
  orderId: string;
  payUrl: string;
}

// jsqr is CommonJS typed as an ES module: under NodeNext its function is the `default` property.
const jsQR = jsqr.default;
const CODE = /^[2-9A-HJ-NP-Z]{4}(-[2-9A-HJ-NP-Z]{4}){6}$/;
const DEMO_TICKET = 'デモ ライブチケット 2026/12/24 東京';

// ---------------------------------------------------------------- the buyer, the gateway, the operator

async function ticketProduct(store: TestStore, stock: number, price = 3000): Promise<string> {
  const code = `live-${randomBytes(4).toString('hex')}`;
  await createProduct(store.rt.ctx, 'default', { code, name: `ライブ ${code}`, kind: 'ticket', price, stock });
  return code;
}

async function placeOrder(store: TestStore, lines: { sku: string; quantity: number }[], method?: string): Promise<Placed> {
  const res = await fetch(`${store.url}/api/checkout`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ shop: 'default', customer: { email: 'hanako@example.jp', name: '山田 花子' }, lines, payment: { provider: 'testpay', ...(method ? { method } : {}) } }),
  });
  const body = (await res.json()) as { order: OrderView; orderToken: string; payment: { type: string; url: string } };
  assert.equal(res.status, 201, JSON.stringify(body));
  assert.deepEqual(body.order.tickets, [], 'an order being paid for has no tickets yet');
  const row = await store.rt.ctx.db.selectFrom('orders').select('id').where('number', '=', body.order.number).executeTakeFirstOrThrow();
  return { token: body.orderToken, number: body.order.number, orderId: row.id, payUrl: body.payment.url };
}

/** Presses a button on testpay's hosted page (card, konbini, konbini-paid, cancel …); its webhook is then applied. */
async function press(store: TestStore, payUrl: string, choice: string): Promise<void> {
  const res = await fetch(`${payUrl}/${choice}`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: '', redirect: 'manual' });
  await res.arrayBuffer();
  assert.equal(res.status, 303, `gateway button ${choice}`);
  await notificationsApplied(store);
}

async function view(store: TestStore, token: string): Promise<OrderView> {
  const res = await fetch(`${store.url}/api/orders/${token}`);
  assert.equal(res.status, 200);
  return ((await res.json()) as { order: OrderView }).order;
}

async function paidTickets(store: TestStore, token: string): Promise<TicketView[]> {
  const order = await view(store, token);
  assert.equal(order.state, 'paid');
  return order.tickets;
}

async function ticketRows(store: TestStore, orderId: string) {
  return store.rt.ctx.db.selectFrom('tickets').selectAll().where('order_id', '=', orderId).orderBy('serial').execute();
}

async function get(store: TestStore, path: string): Promise<{ status: number; type: string; body: string; headers: Headers }> {
  const res = await fetch(`${store.url}${path}`);
  return { status: res.status, type: res.headers.get('content-type') ?? '', body: await res.text(), headers: res.headers };
}

async function available(store: TestStore, code: string): Promise<number> {
  const res = await fetch(`${store.url}/api/shops/default/products/${code}`);
  assert.equal(res.status, 200);
  return ((await res.json()) as { product: { available: number } }).product.available;
}

async function admin(store: TestStore, method: string, path: string, body?: unknown): Promise<Response> {
  return fetch(`${store.url}/api/admin${path}`, {
    method,
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
}

/** testpay's own record of a payment, and a webhook signed as testpay signs it. */
async function gatewayPayment(store: TestStore, merchantRef: string): Promise<Record<string, unknown>> {
  const res = await fetch(`${store.url}/sandbox/testpay/api/payments?merchant_ref=${encodeURIComponent(merchantRef)}`, {
    headers: { authorization: `Bearer ${sandboxSecret(store.rt.ctx.config, 'testpay')}` },
  });
  assert.equal(res.status, 200);
  return (await res.json()) as Record<string, unknown>;
}

async function deliverCaptured(store: TestStore, data: Record<string, unknown>, id = `evt_${randomBytes(12).toString('hex')}`): Promise<void> {
  const body = JSON.stringify({ id, type: 'payment.captured', data });
  const signature = createHmac('sha256', sandboxSecret(store.rt.ctx.config, 'testpay')).update(body).digest('hex');
  const res = await fetch(`${store.url}/webhooks/testpay/default`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-testpay-signature': signature }, body });
  await res.arrayBuffer();
  assert.equal(res.status, 200);
  await notificationsApplied(store);
}

// ---------------------------------------------------------------- reading QR codes

/** Reads a QR symbol from RGBA pixels, as a phone's camera app would. */
function scan(width: number, height: number, rgba: Uint8ClampedArray): string {
  const found = jsQR(rgba, width, height);
  assert.ok(found, 'the image holds a readable QR code');
  return found.data;
}

/**
 * Draws an SVG made of horizontal strokes one module thick (the shape of the QR SVGs served here)
 * into pixels, following the path's own M/m/h commands, then reads it.
 */
function scanSvg(svg: string): string {
  const viewBox = /viewBox="0 0 (\d+) (\d+)"/.exec(svg);
  assert.ok(viewBox, 'the SVG has a viewBox');
  const size = Number(viewBox[1]);
  const d = /<path[^>]*stroke="#000000"[^>]*d="([^"]+)"/.exec(svg)?.[1];
  assert.ok(d, 'the SVG draws its dark modules as one stroked path');
  const dark = Array.from({ length: size }, () => new Array<boolean>(size).fill(false));
  let x = 0;
  let y = 0;
  for (const [, cmd, args] of d.matchAll(/([MmHh])([^MmHh]*)/g)) {
    const n = args!.trim().split(/[\s,]+/).map(Number);
    if (cmd === 'M') [x, y] = [n[0]!, n[1]!];
    else if (cmd === 'm') [x, y] = [x + n[0]!, y + n[1]!];
    else if (cmd === 'h') {
      for (let i = 0; i < n[0]!; i++) dark[Math.floor(y)]![x + i] = true;
      x += n[0]!;
    } else assert.fail(`unexpected path command ${cmd}`);
  }
  const scale = 4;
  const px = size * scale;
  const rgba = new Uint8ClampedArray(px * px * 4).fill(255);
  for (let r = 0; r < px; r++) {
    for (let c = 0; c < px; c++) {
      if (dark[Math.floor(r / scale)]![Math.floor(c / scale)]) rgba.fill(0, (r * px + c) * 4, (r * px + c) * 4 + 3);
    }
  }
  return scan(px, px, rgba);
}

function scanPng(png: Buffer): string {
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], 'a PNG file');
  const image = PNG.sync.read(png);
  return scan(image.width, image.height, new Uint8ClampedArray(image.data));
}

// ---------------------------------------------------------------- the tests

describe('ticket codes', () => {
  it('are 28 symbols in seven groups of four, without look-alikes, and never repeat', () => {
    const codes = new Set(Array.from({ length: 20_000 }, newTicketCode));
    assert.equal(codes.size, 20_000);
    for (const code of [...codes].slice(0, 200)) assert.match(code, CODE);
    // Every symbol is used: 32 symbols at 5 bits each, so 28 carry 140 bits.
    assert.equal(new Set([...codes].join('').replace(/-/g, '')).size, 32);
  });

  it('are read back whatever the case, spacing and dashes; anything else is no code at all', () => {
    const code = newTicketCode();
    assert.equal(canonicalTicketCode(code.toLowerCase()), code);
    assert.equal(canonicalTicketCode(code.replace(/-/g, '')), code);
    assert.equal(canonicalTicketCode(` ${code.replace(/-/g, ' ')} `), code);
    assert.equal(canonicalTicketCode(code.slice(0, -1)), undefined, 'a symbol short');
    assert.equal(canonicalTicketCode(`${code.slice(0, -1)}O`), undefined, 'O is not a symbol (0/O look alike)');
    assert.equal(canonicalTicketCode("' or 1=1 --"), undefined);
  });

  it('mask the order number on the check page', () => {
    assert.equal(maskOrderNumber('K261224-7XQ3P9MA'), 'K261224-******MA');
  });
});

forEachEngine('tickets', (engine) => {
  let store: TestStore;
  before(async () => {
    store = await startStore(engine);
  });
  after(async () => {
    await store?.close();
  });

  it('paying for two tickets issues two codes, shown on the order page, in the API and in the paid mail, each with a QR that opens its check page', async () => {
    const seatsBefore = await available(store, 'demo-ticket');
    const order = await placeOrder(store, [{ sku: 'demo-ticket', quantity: 2 }]);
    assert.equal(await available(store, 'demo-ticket'), seatsBefore - 2, 'the seats are held while the buyer pays');
    await press(store, order.payUrl, 'card');

    const tickets = await paidTickets(store, order.token);
    assert.equal(tickets.length, 2);
    assert.notEqual(tickets[0]!.code, tickets[1]!.code);
    for (const t of tickets) {
      assert.match(t.code, CODE);
      assert.deepEqual(t, { code: t.code, productName: DEMO_TICKET, state: 'issued', url: `${store.url}/tickets/${t.code}` });
    }
    const rows = await ticketRows(store, order.orderId);
    assert.deepEqual(rows.map((r) => [r.serial, r.code, r.state, r.shop_id]), tickets.map((t, i) => [i + 1, t.code, 'issued', 'default']));
    assert.equal(await available(store, 'demo-ticket'), seatsBefore - 2, 'the event has two seats fewer');

    // The order page lists them with their QR codes.
    const page = await get(store, `/orders/${order.token}`);
    assert.equal(page.status, 200);
    for (const t of tickets) {
      assert.ok(page.body.includes(t.code), 'the code is printed');
      assert.ok(page.body.includes(`src="/tickets/${t.code}/qr.svg"`), 'its QR is shown');
    }

    // Each QR, read as a phone reads it, opens the ticket's check page, which says it is valid.
    for (const t of tickets) {
      const qr = await get(store, `/tickets/${t.code}/qr.svg`);
      assert.equal(qr.status, 200);
      assert.match(qr.type, /^image\/svg\+xml/);
      assert.equal(scanSvg(qr.body), t.url);
      const check = await get(store, new URL(t.url).pathname);
      assert.equal(check.status, 200);
      assert.ok(check.body.includes('有効 / Valid'), 'the door is told the ticket is valid');
      assert.ok(check.body.includes(DEMO_TICKET), 'and for which event');
      assert.ok(check.body.includes(maskOrderNumber(order.number)) && !check.body.includes(order.number), 'the order number is masked');
      assert.equal(check.headers.get('cache-control'), 'no-store');
    }
    const typed = await get(store, `/tickets/${tickets[0]!.code.toLowerCase().replace(/-/g, '')}`);
    assert.ok(typed.body.includes('有効 / Valid'), 'a code typed in lower case without dashes is found too');
    const unknown = await get(store, `/tickets/${newTicketCode()}`);
    assert.equal(unknown.status, 404);
    assert.ok(unknown.body.includes('不明なチケット / Unknown ticket'), 'unknown.body.includes(\'不明なチケット / Unknown ticket\')');
    assert.equal((await get(store, `/tickets/${newTicketCode()}/qr.svg`)).status, 404, 'no QR is drawn for a code that is no ticket');

    // The paid mail lists both tickets, with their QR codes inline.
    store.startWorker();
    const mail = await eventually(async () => {
      const found = readMails(store.dataDir).find((m) => m.name.startsWith(`order_paid.${order.number}.`));
      assert.ok(found, 'the paid mail was written');
      return found;
    });
    for (const t of tickets) {
      assert.ok(mail.text.includes(t.code) && mail.text.includes(t.url), 'the text part has each code and its link');
      assert.ok(mail.html?.includes(t.code), 'the HTML part has each code');
    }
    assert.equal(mail.images.length, 2);
    const scanned = mail.images.map((image) => {
      assert.equal(image.contentType, 'image/png');
      assert.ok(mail.html?.includes(`src="cid:${image.cid}"`), 'the HTML shows the image in place');
      return scanPng(image.content);
    });
    assert.deepEqual(scanned, tickets.map((t) => t.url), 'each mailed QR opens its ticket');
  });

  it('a redelivered or repeated capture issues no more tickets', async () => {
    const order = await placeOrder(store, [{ sku: 'demo-ticket', quantity: 2 }]);
    await press(store, order.payUrl, 'card');
    const first = await paidTickets(store, order.token);
    assert.equal(first.length, 2);

    const attempt = await onlyAttempt(store, order.orderId);
    const payment = await gatewayPayment(store, attempt.merchant_ref);
    const again = `evt_${randomBytes(12).toString('hex')}`;
    await deliverCaptured(store, payment, again); // the gateway's retry of a new event id…
    await deliverCaptured(store, payment, again); // …delivered twice
    await deliverCaptured(store, payment);
    assert.deepEqual(await paidTickets(store, order.token), first, 'the same two tickets');

    // Even asked to issue again, the order's tickets are already there.
    const row = await store.rt.ctx.db.selectFrom('orders').selectAll().where('id', '=', order.orderId).executeTakeFirstOrThrow();
    assert.equal(await store.rt.ctx.db.transaction().execute(async (tx) => issueTickets(tx, row, await fulfilmentLines(tx, row.id))), 0);
    assert.equal((await ticketRows(store, order.orderId)).length, 2);
  });

  it('an order not paid has none: cancelled at the gateway, or waiting at the konbini until it is paid there', async () => {
    const cancelled = await placeOrder(store, [{ sku: 'demo-ticket', quantity: 1 }]);
    await press(store, cancelled.payUrl, 'cancel');
    const gone = await view(store, cancelled.token);
    assert.equal(gone.state, 'cancelled');
    assert.deepEqual(gone.tickets, []);
    assert.ok(!(await get(store, `/orders/${cancelled.token}`)).body.includes('qr.svg'), '!(await get(store, `/orders/${cancelled.token}`)).body.includes(\'qr.svg\')');

    const konbini = await placeOrder(store, [{ sku: 'demo-ticket', quantity: 3 }], 'konbini');
    await press(store, konbini.payUrl, 'konbini');
    const waiting = await view(store, konbini.token);
    assert.equal(waiting.state, 'awaiting_payment');
    assert.deepEqual(waiting.tickets, [], 'a konbini slip is not a ticket');
    await press(store, konbini.payUrl, 'konbini-paid');
    assert.equal((await paidTickets(store, konbini.token)).length, 3, 'paid at the konbini: three tickets');

    const serials = await placeOrder(store, [{ sku: 'demo-serial', quantity: 2 }]);
    await press(store, serials.payUrl, 'card');
    assert.deepEqual(await paidTickets(store, serials.token), [], 'a paid order of other products has no tickets');
  });

  it('a full refund voids the tickets; a partial one does not', async () => {
    store.startWorker();
    const order = await placeOrder(store, [{ sku: 'demo-ticket', quantity: 2 }]);
    await press(store, order.payUrl, 'card');
    const tickets = await paidTickets(store, order.token);

    assert.equal((await admin(store, 'POST', `/orders/${order.orderId}/refund`, { amount: 6800 })).status, 202);
    await eventually(async () => assert.equal((await view(store, order.token)).state, 'partially_refunded'));
    assert.deepEqual((await view(store, order.token)).tickets.map((t) => t.state), ['issued', 'issued'], 'which ticket a partial refund is for is the operator\'s call');

    assert.equal((await admin(store, 'POST', `/orders/${order.orderId}/refund`, { amount: 6800 })).status, 202);
    await eventually(async () => assert.equal((await view(store, order.token)).state, 'refunded'));
    const voided = (await view(store, order.token)).tickets;
    assert.deepEqual(voided.map((t) => [t.code, t.state]), tickets.map((t) => [t.code, 'void']));
    assert.ok((await ticketRows(store, order.orderId)).every((r) => r.voided_at !== null), '(await ticketRows(store, order.orderId)).every((r) => r.voided_at !== null)');
    const check = await get(store, `/tickets/${tickets[0]!.code}`);
    assert.equal(check.status, 200);
    assert.ok(check.body.includes('無効 / Void') && !check.body.includes('有効 / Valid'), 'the door is told the ticket is void');
    assert.ok(!(await get(store, `/orders/${order.token}`)).body.includes('qr.svg'), 'no QR is shown for a void ticket');

    await eventually(async () => {
      const refunds = readMails(store.dataDir).filter((m) => m.name.startsWith(`refund.${order.number}.`));
      assert.equal(refunds.length, 2);
      assert.ok(refunds.some((m) => m.text.includes('no longer valid') && m.text.includes(tickets[1]!.code)), 'the customer is told the tickets are void');
    });
  });

  it('a second payment after the order was paid holds its tickets; cancelled by the operator, they are void', async () => {
    const order = await placeOrder(store, [{ sku: 'demo-ticket', quantity: 1 }]);
    const retry = await fetch(`${store.url}/api/orders/${order.token}/payments`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ provider: 'testpay' }) });
    assert.equal(retry.status, 201);
    const second = ((await retry.json()) as { payment: { url: string } }).payment.url;
    await press(store, second, 'card');
    const [ticket] = await paidTickets(store, order.token);
    assert.ok(ticket, 'ticket');

    await press(store, order.payUrl, 'card'); // the old tab pays too: money that needs a human
    assert.equal((await view(store, order.token)).state, 'on_hold');
    assert.equal((await attempts(store, order.orderId)).length, 2);
    const held = await get(store, `/tickets/${ticket.code}`);
    assert.ok(held.body.includes('確認中 / On hold') && !held.body.includes('有効 / Valid'), 'a held order admits no one');

    const released = await admin(store, 'POST', `/orders/${order.orderId}/events`, { event: 'release_to_cancelled' });
    assert.equal(released.status, 200, await released.text());
    assert.deepEqual((await view(store, order.token)).tickets.map((t) => t.state), ['void']);
    assert.ok((await get(store, `/tickets/${ticket.code}`)).body.includes('無効 / Void'), '(await get(store, `/tickets/${ticket.code}`)).body.includes(\'無効 / Void\')');
  });

  it('tickets of orders paid at the same moment never collide', async () => {
    const code = await ticketProduct(store, 100);
    const orders = await Promise.all(Array.from({ length: 8 }, () => placeOrder(store, [{ sku: code, quantity: 3 }])));
    await Promise.all(orders.map((o) => press(store, o.payUrl, 'card')));
    const all = await Promise.all(orders.map((o) => paidTickets(store, o.token)));
    const codes = all.flat().map((t) => t.code);
    assert.equal(codes.length, 24);
    assert.equal(new Set(codes).size, 24, 'every ticket has its own code');
    for (const o of orders) assert.deepEqual((await ticketRows(store, o.orderId)).map((r) => r.serial), [1, 2, 3]);
    assert.equal(await available(store, code), 100 - 24);
  });
});

forEachEngine('tickets of an order nobody pays', (engine) => {
  let store: TestStore;
  before(async () => {
    store = await startStore(engine, { KESSAI_RESERVATION_TTL_SECONDS: '1' });
  });
  after(async () => {
    await store?.close();
  });

  it('are never issued: the order expires and its seats go back on sale', async () => {
    const code = await ticketProduct(store, 5);
    const order = await placeOrder(store, [{ sku: code, quantity: 2 }]);
    store.startWorker();
    await eventually(async () => assert.equal((await view(store, order.token)).state, 'expired'), 8000);
    assert.deepEqual((await view(store, order.token)).tickets, []);
    assert.equal((await ticketRows(store, order.orderId)).length, 0);
    assert.equal(await available(store, code), 5);
  });
});
