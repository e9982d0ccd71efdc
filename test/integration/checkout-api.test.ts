/**
 * POST /api/checkout over real HTTP against the whole store: bad input is refused with the field at
 * fault and writes nothing; stock is reserved atomically, also under a burst of concurrent buyers.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { after, before, it } from 'node:test';
import { createProduct } from '../../src/commerce/catalog.js';
import { setShopSettings } from '../../src/commerce/shops.js';
import type { Database } from '../../src/db/schema.js';
import { buyThroughShop, FormClient, hiddenFields } from '../helpers/browser.js';
import { forEachEngine } from '../helpers/db.js';
import { startStore, type TestStore } from '../helpers/store.js';

interface ErrorBody {
  error: { code: string; message: string; problems: { field: string; reason: string }[] };
}
interface OrderView {
  number: string;
  state: string;
  total: number;
  subtotal: number;
  tax: { rate10: number; rate8: number };
  lines: { name: string; quantity: number; unitPrice: number; amount: number }[];
  payment: { provider: string; state: string } | null;
}
interface CheckoutBody {
  order: OrderView;
  orderToken: string;
  orderUrl: string;
  payment: { type: string; url?: string } | null;
}
interface Product {
  code: string;
  price: number;
  available: number;
}

const ADDRESS = { name: '山田 花子', postcode: '100-0001', prefecture: '東京都', city: '千代田区', line1: '千代田1-1', phone: '03-1234-5678' };

function order(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    shop: 'default',
    customer: { email: 'hanako@example.jp', name: '山田 花子' },
    lines: [{ sku: 'demo-ticket', quantity: 1 }],
    payment: { provider: 'testpay' },
    ...overrides,
  };
}

async function postCheckout(store: TestStore, body: unknown): Promise<Response> {
  return fetch(`${store.url}/api/checkout`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

async function products(store: TestStore): Promise<Map<string, Product>> {
  const res = await fetch(`${store.url}/api/shops/default/products`);
  assert.equal(res.status, 200);
  const { products } = (await res.json()) as { products: Product[] };
  return new Map(products.map((p) => [p.code, p]));
}

async function available(store: TestStore, code: string): Promise<number> {
  const p = (await products(store)).get(code);
  assert.ok(p, `product ${code} is listed`);
  return p.available;
}

async function count(store: TestStore, table: keyof Database): Promise<number> {
  const row = await store.rt.ctx.db
    .selectFrom(table)
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .executeTakeFirstOrThrow();
  return Number(row.n);
}

async function skuRow(store: TestStore, code: string) {
  return store.rt.ctx.db.selectFrom('skus').select(['on_hand', 'reserved']).where('shop_id', '=', 'default').where('code', '=', code).executeTakeFirstOrThrow();
}

/** A product of its own for one test, so stock counts mean that test's stock. */
async function limitedProduct(store: TestStore, stock: number, price = 1000): Promise<string> {
  const code = `limited-${randomBytes(4).toString('hex')}`;
  await createProduct(store.rt.ctx, 'default', { code, name: `限定グッズ ${code}`, kind: 'ticket', price, stock });
  return code;
}

/** Every problem as "field: reason", for messages and for finding a key named in the reason. */
const described = (body: ErrorBody) => body.error.problems.map((p) => `${p.field}: ${p.reason}`);

forEachEngine('checkout refuses bad input and writes nothing', (engine) => {
  let store: TestStore;
  before(async () => {
    store = await startStore(engine);
    // One gateway the demo shop has but does not offer, for "provider not offered".
    await setShopSettings(store.rt.ctx, 'default', { 'atone.enabled': 'false' });
  });
  after(async () => {
    await store?.close();
  });

  it('answers each bad request with 4xx naming the field, and leaves no order, customer, reservation, attempt or job behind', async () => {
    const stockBefore = await products(store);

    // Not JSON at all.
    const malformed = await postCheckout(store, '{"shop": "default", "lines": [');
    assert.equal(malformed.status, 400);
    const malformedBody = (await malformed.json()) as ErrorBody;
    assert.ok(malformedBody.error.message.length > 0, 'the error says what is wrong');

    // Too large: refused before it is parsed.
    const huge = await postCheckout(store, order({ customer: { email: 'hanako@example.jp', name: 'あ'.repeat(70 * 1024) } }));
    assert.equal(huge.status, 413);
    assert.ok(((await huge.json()) as ErrorBody).error.message.length > 0, '((await huge.json()) as ErrorBody).error.message.length > 0');

    // Unknown keys are refused, not ignored: a typo must not silently drop what the client meant.
    const unknownTop = await postCheckout(store, order({ coupon: 'FREE' }));
    assert.equal(unknownTop.status, 400);
    const unknownTopBody = (await unknownTop.json()) as ErrorBody;
    assert.ok(described(unknownTopBody).some((d) => d.includes('coupon')), `the unknown key is named: ${described(unknownTopBody).join('; ')}`);

    const unknownInLine = await postCheckout(store, order({ lines: [{ sku: 'demo-ticket', quantity: 1, colour: 'red' }] }));
    assert.equal(unknownInLine.status, 400);
    const unknownInLineBody = (await unknownInLine.json()) as ErrorBody;
    assert.ok(
      unknownInLineBody.error.problems.some((p) => p.field.startsWith('lines.0') && `${p.field} ${p.reason}`.includes('colour')),
      `the unknown key inside line 0 is named: ${described(unknownInLineBody).join('; ')}`,
    );

    const cases: { what: string; body: unknown; field: string }[] = [
      ...[0, -1, 1.5, 100, '2'].map((quantity) => ({
        what: `quantity ${JSON.stringify(quantity)}`,
        body: order({ lines: [{ sku: 'demo-ticket', quantity }] }),
        field: 'lines.0.quantity',
      })),
      { what: 'unknown SKU', body: order({ lines: [{ sku: 'no-such-thing', quantity: 1 }] }), field: 'lines.0.sku' },
      { what: 'unknown shop', body: order({ shop: 'no-such-shop' }), field: 'shop' },
      { what: 'physical product without address', body: order({ lines: [{ sku: 'demo-cd', quantity: 1 }] }), field: 'shippingAddress' },
      {
        what: 'bad postcode',
        body: order({ lines: [{ sku: 'demo-cd', quantity: 1 }], shippingAddress: { ...ADDRESS, postcode: '100-001' } }),
        field: 'shippingAddress.postcode',
      },
      {
        what: 'bad prefecture',
        body: order({ lines: [{ sku: 'demo-cd', quantity: 1 }], shippingAddress: { ...ADDRESS, prefecture: 'Tokyo' } }),
        field: 'shippingAddress.prefecture',
      },
      { what: 'provider not offered', body: order({ payment: { provider: 'atone' } }), field: 'payment.provider' },
      { what: 'provider that does not exist', body: order({ payment: { provider: 'paypal' } }), field: 'payment.provider' },
    ];
    for (const c of cases) {
      const res = await postCheckout(store, c.body);
      const body = (await res.json()) as ErrorBody;
      assert.equal(res.status, 400, `${c.what}: status (${JSON.stringify(body)})`);
      assert.equal(body.error.code, 'invalid_input', `${c.what}: code`);
      assert.ok(
        body.error.problems.some((p) => p.field === c.field && p.reason.length > 0),
        `${c.what}: names ${c.field} with a reason; got ${described(body).join('; ')}`,
      );
      assert.ok(body.error.message.includes(c.field), `${c.what}: the message names ${c.field} too: ${body.error.message}`);
    }

    for (const table of ['orders', 'order_lines', 'customers', 'reservations', 'payment_attempts', 'jobs'] as const) {
      assert.equal(await count(store, table), 0, `no row was written to ${table}`);
    }
    const stockAfter = await products(store);
    for (const [code, p] of stockBefore) assert.equal(stockAfter.get(code)?.available, p.available, `${code}: available stock unchanged`);
  });
});

forEachEngine('checkout and stock', (engine) => {
  let store: TestStore;
  before(async () => {
    store = await startStore(engine);
  });
  after(async () => {
    await store?.close();
  });

  it('creates an order waiting for payment, hands off to the gateway, and shows it to the token holder only', async () => {
    const res = await postCheckout(store, order({ lines: [{ sku: 'demo-serial', quantity: 1 }, { sku: 'demo-ticket', quantity: 2 }] }));
    assert.equal(res.status, 201);
    const body = (await res.json()) as CheckoutBody;
    assert.equal(body.order.state, 'pending_payment');
    assert.match(body.order.number, /^K\d{6}-[2-9A-Z]{8}$/);
    assert.equal(body.order.total, 1500 + 2 * 6800);
    assert.equal(body.order.subtotal, 15_100);
    // Prices are tax-included; the 10 % tax inside is rounded down once over the total.
    assert.equal(body.order.tax.rate10, Math.floor((15_100 * 10) / 110));
    assert.equal(body.order.tax.rate10, 1372);
    assert.equal(body.order.tax.rate8, 0);
    assert.deepEqual(
      body.order.lines.map((l) => [l.quantity, l.unitPrice, l.amount]).sort((a, b) => a[1]! - b[1]!),
      [[1, 1500, 1500], [2, 6800, 13_600]],
    );
    assert.equal(body.order.payment?.provider, 'testpay');
    assert.equal(body.order.payment?.state, 'pending');
    assert.ok(body.orderToken.length >= 20, 'a long secret token');
    assert.equal(body.orderUrl, `${store.url}/orders/${body.orderToken}`);

    assert.equal(body.payment?.type, 'redirect');
    assert.ok(body.payment?.url?.startsWith(`${store.url}/sandbox/testpay/pay/`), `redirects to the sandbox: ${body.payment?.url}`);
    const payPage = await fetch(body.payment!.url!);
    assert.equal(payPage.status, 200);
    const payHtml = await payPage.text();
    assert.ok(payHtml.includes('15100 JPY'), 'the gateway asks for the order total');
    assert.ok(payHtml.includes(body.order.number), 'the gateway shows our order reference');

    const view = await fetch(`${store.url}/api/orders/${body.orderToken}`);
    assert.equal(view.status, 200);
    const viewed = ((await view.json()) as { order: OrderView }).order;
    assert.equal(viewed.number, body.order.number);
    assert.equal(viewed.state, 'pending_payment');
    assert.equal(viewed.total, 15_100);

    const wrong = await fetch(`${store.url}/api/orders/${body.orderToken.slice(0, -2)}xx`);
    assert.equal(wrong.status, 404);
    assert.equal(((await wrong.json()) as ErrorBody).error.code, 'not_found');
    const made = await fetch(`${store.url}/api/orders/not-a-token`);
    assert.equal(made.status, 404);
  });

  it('opens an order from a link made before links carried their time, and from no altered link', async () => {
    const res = await postCheckout(store, order({ lines: [{ sku: 'demo-serial', quantity: 1 }] }));
    const body = (await res.json()) as CheckoutBody;
    const [time, secret] = body.orderToken.split('.');
    assert.match(time!, /^[0-9a-hjkmnp-tv-z]{10}$/, 'the link starts with the time it was made');
    assert.equal(Buffer.from(secret!, 'base64url').length, 32, 'then 256 random bits');
    for (const altered of [`${'0'.repeat(10)}.${secret}`, secret!, `${time}.${secret!.slice(0, -1)}${secret!.endsWith('A') ? 'B' : 'A'}`]) {
      assert.equal((await fetch(`${store.url}/api/orders/${altered}`)).status, 404, altered);
    }

    // A link mailed before: a secret without a time, stored as its plain SHA-256.
    const old = randomBytes(32).toString('base64url');
    await store.rt.ctx.db.updateTable('orders').set({ token_hash: createHash('sha256').update(old).digest('hex') }).where('number', '=', body.order.number).execute();
    const view = await fetch(`${store.url}/api/orders/${old}`);
    assert.equal(view.status, 200);
    assert.equal(((await view.json()) as { order: OrderView }).order.number, body.order.number);
    assert.equal((await fetch(`${store.url}/api/orders/${body.orderToken}`)).status, 404, 'the order now answers to the old link only');
  });

  it('lists the payment methods a basket can use, with the checkout\'s own rules, and names a bad line', async () => {
    const providers = async (query: string) => {
      const res = await fetch(`${store.url}/api/shops/default/payment-methods${query}`);
      const body = (await res.json()) as { providers?: { provider: string }[]; error?: { code: string; problems: { field: string; reason: string }[] } };
      return { status: res.status, names: (body.providers ?? []).map((x) => x.provider).sort(), problems: body.error?.problems ?? [] };
    };
    await setShopSettings(store.rt.ctx, 'default', { 'payments.ticketProviders': 'komoju,sbps' });
    try {
      const all = await providers('');
      assert.equal(all.status, 200);
      assert.ok(all.names.includes('testpay') && all.names.includes('komoju'), all.names.join());
      // A ticket: only the shop's ticket providers.
      assert.deepEqual((await providers('?lines=demo-ticket:1')).names, ['komoju', 'sbps']);
      // Above KOMOJU's maximum for this shop (5,460 yen > 5,000): KOMOJU is left out, the others stay.
      await setShopSettings(store.rt.ctx, 'default', { 'komoju.maxAmount': '5000' });
      const dear = await providers('?lines=demo-cd:3,demo-serial:1');
      assert.equal(dear.status, 200);
      assert.ok(!dear.names.includes('komoju') && dear.names.includes('testpay'), dear.names.join());
      assert.ok((await providers('?lines=demo-cd:1')).names.includes('komoju'), '(await providers(\'?lines=demo-cd:1\')).names.includes(\'komoju\')');
      // Bad lines are named as the checkout names them.
      const bad = await providers('?lines=demo-cd:0,no-such-thing:1');
      assert.equal(bad.status, 400);
      assert.deepEqual(bad.problems.map((x) => x.field), ['lines.0.quantity']);
      const unknown = await providers('?lines=demo-cd:1,no-such-thing:2');
      assert.equal(unknown.status, 400);
      assert.deepEqual(unknown.problems, [{ field: 'lines.1.sku', reason: 'no product "no-such-thing" in shop "default"' }]);
      assert.deepEqual((await providers('?lines=demo-cd')).problems.map((x) => x.field), ['lines.0.quantity']);
    } finally {
      await setShopSettings(store.rt.ctx, 'default', { 'payments.ticketProviders': '', 'komoju.maxAmount': '' });
    }
  });

  it('lists the lines in the order the customer put them in the cart', async () => {
    const codes: string[] = [];
    for (let i = 0; i < 6; i++) codes.push(await limitedProduct(store, 10, 100 * (i + 1)));
    const res = await postCheckout(store, order({ lines: codes.map((sku, i) => ({ sku, quantity: i + 1 })) }));
    assert.equal(res.status, 201);
    const body = (await res.json()) as CheckoutBody;
    const expected = codes.map((_, i) => [i + 1, 100 * (i + 1)]);
    assert.deepEqual(body.order.lines.map((l) => [l.quantity, l.unitPrice]), expected, 'checkout answer');
    const view = (await (await fetch(`${store.url}/api/orders/${body.orderToken}`)).json()) as { order: OrderView };
    assert.deepEqual(view.order.lines.map((l) => [l.quantity, l.unitPrice]), expected, 'order view');
  });

  it('refuses a checkout beyond stock with 409 out_of_stock and reserves nothing', async () => {
    const code = await limitedProduct(store, 3);
    const ordersBefore = await count(store, 'orders');
    const res = await postCheckout(store, order({ lines: [{ sku: 'demo-serial', quantity: 1 }, { sku: code, quantity: 4 }] }));
    assert.equal(res.status, 409);
    const body = (await res.json()) as ErrorBody;
    assert.equal(body.error.code, 'out_of_stock');
    assert.ok(body.error.problems.some((p) => p.field === 'lines.1.quantity'), `names the line: ${described(body).join('; ')}`);
    assert.deepEqual(await skuRow(store, code), { on_hand: 3, reserved: 0 });
    assert.equal(await available(store, code), 3);
    assert.equal(await count(store, 'orders'), ordersBefore, 'no order was created');
    // The other line's reservation was rolled back with the rest.
    const serial = await skuRow(store, 'demo-serial');
    assert.equal(serial.on_hand - serial.reserved, await available(store, 'demo-serial'));
    const serialReservations = await store.rt.ctx.db
      .selectFrom('reservations')
      .innerJoin('skus', 'skus.id', 'reservations.sku_id')
      .select((eb) => eb.fn.sum<number>('reservations.quantity').as('n'))
      .where('skus.code', '=', 'demo-serial')
      .where('reservations.state', '=', 'held')
      .executeTakeFirstOrThrow();
    assert.equal(Number(serialReservations.n ?? 0), serial.reserved, 'demo-serial reserved only by orders that exist');
  });

  it('checks two lines of the same product against stock together', async () => {
    const code = await limitedProduct(store, 5);
    const tooMany = await postCheckout(store, order({ lines: [{ sku: code, quantity: 3 }, { sku: code, quantity: 3 }] }));
    assert.equal(tooMany.status, 409);
    assert.equal(((await tooMany.json()) as ErrorBody).error.code, 'out_of_stock');
    assert.deepEqual(await skuRow(store, code), { on_hand: 5, reserved: 0 });

    const exact = await postCheckout(store, order({ lines: [{ sku: code, quantity: 2 }, { sku: code, quantity: 3 }] }));
    assert.equal(exact.status, 201);
    const body = (await exact.json()) as CheckoutBody;
    assert.deepEqual(body.order.lines.map((l) => l.quantity), [5], 'one line per product');
    assert.equal(body.order.total, 5000);
    assert.equal(await available(store, code), 0);
  });

  it('sells exactly the stock there is: the last unit can be bought, then none is left', async () => {
    const code = await limitedProduct(store, 4);
    const res = await postCheckout(store, order({ lines: [{ sku: code, quantity: 4 }] }));
    assert.equal(res.status, 201);
    assert.equal(await available(store, code), 0);
    assert.deepEqual(await skuRow(store, code), { on_hand: 4, reserved: 4 });
    const more = await postCheckout(store, order({ lines: [{ sku: code, quantity: 1 }] }));
    assert.equal(more.status, 409);
    assert.equal(((await more.json()) as ErrorBody).error.code, 'out_of_stock');
  });

  it('under 40 concurrent buyers of 5 units sells exactly 5 and never reserves more than there is', async () => {
    const code = await limitedProduct(store, 5);
    // Watches the row while the burst runs: reserved must never pass on_hand, not even for a moment.
    let maxReserved = 0;
    let samples = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const row = await skuRow(store, code);
        maxReserved = Math.max(maxReserved, row.reserved - row.on_hand + 5);
        samples += 1;
        await new Promise((resolve) => setTimeout(resolve, 2));
      }
    })();
    const responses = await Promise.all(
      Array.from({ length: 40 }, (_, i) =>
        postCheckout(store, order({ customer: { email: `buyer${i}@example.jp`, name: `購入者${i}` }, lines: [{ sku: code, quantity: 1 }] })).then(
          async (res) => ({ status: res.status, body: (await res.json()) as CheckoutBody & ErrorBody }),
        ),
      ),
    );
    sampling = false;
    await sampler;

    const statuses = responses.map((r) => r.status);
    assert.equal(statuses.filter((s) => s === 201).length, 5, `201s: ${statuses.join(',')}`);
    assert.equal(statuses.filter((s) => s === 409).length, 35, `409s: ${statuses.join(',')}`);
    for (const r of responses.filter((x) => x.status === 409)) assert.equal(r.body.error.code, 'out_of_stock');
    for (const r of responses.filter((x) => x.status === 201)) assert.equal(r.body.payment?.type, 'redirect');

    assert.deepEqual(await skuRow(store, code), { on_hand: 5, reserved: 5 });
    assert.ok(samples > 0, 'samples > 0');
    assert.ok(maxReserved <= 5, `reserved went ${maxReserved - 5} above on_hand during the burst`);
    assert.equal(await available(store, code), 0);
    const held = await store.rt.ctx.db
      .selectFrom('reservations')
      .innerJoin('skus', 'skus.id', 'reservations.sku_id')
      .select(['reservations.order_id', 'reservations.quantity'])
      .where('skus.code', '=', code)
      .execute();
    assert.equal(held.length, 5, 'one reservation per successful order');
    const orderNumbers = new Set(responses.filter((r) => r.status === 201).map((r) => r.body.order.number));
    assert.equal(orderNumbers.size, 5, 'five distinct orders');
  });
});

forEachEngine('one order per checkout, however often it is sent', (engine) => {
  let store: TestStore;
  before(async () => {
    store = await startStore(engine);
  });
  after(async () => {
    await store?.close();
  });

  const keyed = (body: unknown, key: string) =>
    fetch(`${store.url}/api/checkout`, { method: 'POST', headers: { 'content-type': 'application/json', 'idempotency-key': key }, body: JSON.stringify(body) });

  it('the API with an Idempotency-Key: a repeat (even at the same moment) answers the first order; another basket under the key is refused', async () => {
    const code = await limitedProduct(store, 5);
    const key = `retry-${randomBytes(6).toString('hex')}`;
    const ordersBefore = await count(store, 'orders');
    const body = order({ lines: [{ sku: code, quantity: 2 }] });
    const answers = await Promise.all([keyed(body, key), keyed(body, key), keyed(body, key)]);
    const read = await Promise.all(answers.map(async (r) => ({ status: r.status, body: (await r.json()) as CheckoutBody & { replayed?: boolean; orderToken: string } })));
    assert.deepEqual(read.map((r) => r.status).sort(), [200, 200, 201], JSON.stringify(read.map((r) => r.body)));
    assert.equal(new Set(read.map((r) => r.body.order.number)).size, 1, 'the same order every time');
    assert.equal(new Set(read.map((r) => r.body.orderToken)).size, 1, 'with the same link');
    for (const r of read.filter((x) => x.status === 200)) assert.equal(r.body.replayed, true);
    assert.equal(await count(store, 'orders'), ordersBefore + 1);
    assert.deepEqual(await skuRow(store, code), { on_hand: 5, reserved: 2 }, 'stock reserved once');

    const other = await keyed(order({ lines: [{ sku: code, quantity: 1 }] }), key);
    assert.equal(other.status, 409);
    assert.equal(((await other.json()) as ErrorBody).error.code, 'idempotency_key_reused');
    const noShop = await keyed(order({ shop: 'no-such-shop' }), `${key}-shop`);
    assert.equal(noShop.status, 400, 'an unknown shop is named, with a key as without one');
    assert.deepEqual(((await noShop.json()) as ErrorBody).error.problems.map((p) => p.field), ['shop']);
    const bad = await keyed(body, 'has a space');
    assert.equal(bad.status, 400);
    assert.deepEqual(((await bad.json()) as ErrorBody).error.problems.map((p) => p.field), ['Idempotency-Key']);
    assert.equal(await count(store, 'orders'), ordersBefore + 1, 'neither made an order');
  });

  it('the shop front: a double click on the confirm button makes one order; the next purchase of the same basket is a new order', async () => {
    const code = await limitedProduct(store, 5);
    const b = new FormClient(store.url);
    const ordersBefore = await count(store, 'orders');
    assert.equal((await b.submit(`/products/${code}`, '/cart/add', { quantity: '1' })).status, 303);
    assert.equal((await b.submit('/checkout/customer', '/checkout/customer', { email: 'double@example.jp', name: '二度 押し' })).status, 303);
    assert.equal((await b.submit('/checkout/payment', '/checkout/payment', { provider: 'testpay' })).status, 303);
    const confirm = await b.get('/checkout/confirm');
    assert.equal(confirm.status, 200);
    // Two clicks: the browser sends the same form twice before the first answer comes back.
    const fields = hiddenFields(confirm.body, '/checkout/confirm');
    const [one, two] = await Promise.all([b.post('/checkout/confirm', fields), b.post('/checkout/confirm', fields)]);
    assert.deepEqual([one.status, two.status], [303, 303], `${one.body.slice(0, 300)} ${two.body.slice(0, 300)}`);
    assert.equal(await count(store, 'orders'), ordersBefore + 1, 'one order');
    assert.deepEqual(await skuRow(store, code), { on_hand: 5, reserved: 1 });
    const again = [one, two].find((r) => /^\/orders\//.test(r.location ?? ''));
    assert.ok(again, `the repeat lands on the first order's page: ${one.location} ${two.location}`);
    const page = await b.get(again.location!);
    assert.equal(page.status, 200);

    const next = await buyThroughShop(new FormClient(store.url), { sku: code, email: 'double@example.jp', name: '二度 押し', provider: 'testpay' });
    assert.equal(next.status, 303, next.body);
    assert.equal(await count(store, 'orders'), ordersBefore + 2, 'the same basket bought again is another order');
  });
});
