/**
 * The storefront as a customer meets it over real HTTP: the product list and pages, the cart, the
 * checkout steps up to the gateway hand-off; and what a wrong or tampered post gets: the reason next
 * to the field, and nothing changed.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, it } from 'node:test';
import { createProduct } from '../../src/commerce/catalog.js';
import { setShopSettings } from '../../src/commerce/shops.js';
import { buyThroughShop, FormClient, hiddenFields, TEST_ADDRESS, unescapeHtml } from '../helpers/browser.js';
import { forEachEngine } from '../helpers/db.js';
import { sku, startStore, type TestStore } from '../helpers/store.js';

const CART = 'kessai_cart';

forEachEngine('storefront', (engine) => {
  let store: TestStore;
  before(async () => {
    store = await startStore(engine);
  });
  after(async () => {
    await store?.close();
  });

  const client = () => new FormClient(store.url);
  const product = async (kind: 'physical' | 'serial_code' | 'ticket', price: number, stock: number, extra: { taxRate?: 8 | 10 } = {}) => {
    const code = `sf-${kind.slice(0, 4)}-${randomBytes(3).toString('hex')}`;
    await createProduct(store.rt.ctx, 'default', { code, name: `テスト商品 ${code}`, kind, price, stock, description: `説明 ${code}`, ...extra });
    return code;
  };
  const countOrders = async () => Number((await store.rt.ctx.db.selectFrom('orders').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow()).n);
  /** The text a field's error shows, found the way assistive technology finds it: through aria-describedby. */
  const fieldError = (html: string, id: string): string | undefined => {
    const input = new RegExp(`<(?:input|fieldset)\\b[^>]*\\bid="${id}"[^>]*>`).exec(html)?.[0];
    if (!input) return undefined;
    assert.match(input, /aria-invalid="true"|<fieldset/, `${id} is marked invalid`);
    const ids = /aria-describedby="([^"]*)"/.exec(input)?.[1]?.split(' ') ?? [];
    for (const ref of ids) {
      const m = new RegExp(`<p id="${ref}" class="field-error" role="alert">([^<]*)</p>`).exec(html);
      if (m) return unescapeHtml(m[1]!);
    }
    return undefined;
  };
  const cartText = async (b: FormClient) => (await b.get('/cart')).body;
  const clearSettings = (keys: string[]) => setShopSettings(store.rt.ctx, 'default', Object.fromEntries(keys.map((k) => [k, ''])));

  it('a wrong order link or address opened in a browser is a page of the shop that says so; the API still answers JSON', async () => {
    const html = { accept: 'text/html,application/xhtml+xml' };
    for (const [path, says] of [
      ['/orders/not-a-real-link', 'ご注文メールのリンクをご確認ください'],
      ['/no-such-page', 'お探しのページはありません'],
    ] as const) {
      const res = await fetch(`${store.url}${path}`, { headers: html });
      assert.equal(res.status, 404);
      assert.match(res.headers.get('content-type') ?? '', /^text\/html/);
      const body = await res.text();
      assert.ok(body.includes(says), `${path}: ${body.slice(0, 300)}`);
      assert.ok(body.includes('href="/"'), 'with the way back to the shop');
    }
    const api = await fetch(`${store.url}/api/orders/not-a-real-link`, { headers: html });
    assert.equal(api.status, 404);
    assert.equal(((await api.json()) as { error: { code: string } }).error.code, 'not_found');
    const script = await fetch(`${store.url}/orders/not-a-real-link`);
    assert.match(script.headers.get('content-type') ?? '', /json/, 'a client that does not ask for HTML gets JSON');
  });

  it('the list and the product page show the price with tax, the kind and whether it is in stock', async () => {
    const gone = await product('physical', 2200, 0, { taxRate: 8 });
    const list = (await client().get('/')).body;
    assert.match(list, /デモ シングルCD「決済の歌」<\/a><\/h3>\s*<p><span class="kind kind-physical">配送商品 \/ Shipped goods<\/span>\s*<span class="price">1,320円（税込/);
    assert.match(list, /<span class="kind kind-serial_code">シリアルコード/);
    assert.match(list, /<span class="kind kind-ticket">チケット/);
    assert.match(list, new RegExp(`${gone}</a></h3>[\\s\\S]*?在庫なし / Sold out`));

    const cd = (await client().get('/products/demo-cd')).body;
    assert.match(cd, /<h1>デモ シングルCD「決済の歌」<\/h1>/);
    assert.match(cd, /1,320円（税込 \/ tax incl.、消費税 10%/);
    assert.match(cd, /<code>4988001234562<\/code>/, 'the JAN code');
    assert.match(cd, /<code>demo-cd<\/code>/, 'the SKU');
    assert.match(cd, /A CD single with a JAN code/);
    assert.match(cd, /在庫あり/);
    assert.match(cd, /<label for="f-quantity">数量 \/ Quantity<\/label>/);

    const soldOut = await client().get(`/products/${gone}`);
    assert.match(soldOut.body, /消費税 8%/);
    assert.match(soldOut.body, /在庫なし \/ Sold out/);
    assert.doesNotMatch(soldOut.body, /action="\/cart\/add"/, 'nothing to add');
    assert.equal((await client().get('/products/no-such-thing')).status, 404);

    // A subscription says so before it is in the cart: who can buy it and how often it comes.
    assert.match(list, /デモ ファンクラブ 毎月お届けBOX<\/a><\/h3>\s*<p><span class="kind kind-physical">配送商品 \/ Shipped goods<\/span> <span class="kind recurring">定期購入/);
    assert.doesNotMatch(list, /デモ シングルCD「決済の歌」<\/a><\/h3>\s*<p><span class="kind kind-physical">配送商品 \/ Shipped goods<\/span> <span class="kind recurring">/);
    assert.match((await client().get('/products/demo-fanclub')).body, /<dt>定期購入 \/ Subscription<\/dt><dd class="recurring">毎月お届け \/ every month（atone でお支払い。会員は自動で継続/);
  });

  it('the cart: add, change the quantity, remove; totals with the tax included', async () => {
    const b = client();
    assert.equal((await b.submit('/products/demo-cd', '/cart/add', { quantity: '２' })).status, 303, 'full-width digits are a quantity');
    let cart = await cartText(b);
    assert.match(cart, /value="2"/);
    assert.match(cart, /合計（税込）\/ Total<\/th><td class="total">2,640円/);
    assert.match(cart, /10%対象 2,640円（うち消費税 \/ incl. tax）<\/td><td>240円/);
    // Adding again adds to the line.
    await b.submit('/products/demo-cd', '/cart/add', { quantity: '1' });
    await b.submit('/products/demo-ticket', '/cart/add', { quantity: '1' });
    cart = await cartText(b);
    assert.match(cart, /value="3"/);
    assert.match(cart, /<td class="total">10,760円/);

    const changed = await b.submit('/cart', '/cart', { 'q.demo-cd': '1' });
    assert.equal(changed.status, 303);
    assert.match(await cartText(b), /<td class="total">8,120円/);
    assert.equal((await b.submit('/cart', '/cart', { remove: 'demo-ticket' })).status, 303);
    cart = await cartText(b);
    assert.doesNotMatch(cart, /デモ ライブチケット/);
    assert.match(cart, /<td class="total">1,320円/);
    assert.equal((await b.submit('/cart', '/cart', { 'q.demo-cd': '0' })).status, 303, '0 removes the line');
    assert.match(await cartText(b), /カートは空です/);
  });

  it('a quantity beyond the stock is refused with the reason next to the field, and the cart stays as it was', async () => {
    const code = await product('serial_code', 500, 3);
    const b = client();
    const tooMany = await b.submit(`/products/${code}`, '/cart/add', { quantity: '4' });
    assert.equal(tooMany.status, 400);
    assert.match(fieldError(tooMany.body, 'f-quantity') ?? '', /残り3点/);
    assert.match(tooMany.body, /value="4"/, 'what was typed is kept');
    assert.match(tooMany.body, /role="alert"/);
    assert.match(await cartText(b), /カートは空です/);

    assert.equal((await b.submit(`/products/${code}`, '/cart/add', { quantity: '2' })).status, 303);
    const more = await b.submit(`/products/${code}`, '/cart/add', { quantity: '2' });
    assert.equal(more.status, 400);
    assert.match(fieldError(more.body, 'f-quantity') ?? '', /カートに2点あります.*残り1点/);
    const change = await b.submit('/cart', '/cart', { [`q.${code}`]: '5' });
    assert.equal(change.status, 400);
    assert.match(fieldError(change.body, `f-q.${code}`) ?? '', /残り3点/);
    assert.match(change.body, /value="5"/);
    assert.match(await cartText(b), /value="2"/, 'the cart still holds 2');
    const word = await b.submit('/cart', '/cart', { [`q.${code}`]: 'two' });
    assert.match(fieldError(word.body, `f-q.${code}`) ?? '', /whole number/);
  });

  it('an order through the steps: a full-width postcode is accepted and normalised, the order arrives at the gateway hand-off', async () => {
    const before = await sku(store, 'demo-cd');
    const b = client();
    const email = `buyer-${randomBytes(3).toString('hex')}@example.jp`;
    await b.submit('/products/demo-cd', '/cart/add', { quantity: '2' });
    // The steps cannot be skipped: the confirm page sends the customer to the first open one.
    assert.equal((await b.get('/checkout/confirm')).location, '/checkout/customer');
    assert.equal((await b.submit('/checkout/customer', '/checkout/customer', { email, name: '山田 太郎' })).location, '/checkout/address');
    const address = await b.submit('/checkout/address', '/checkout/address', { ...TEST_ADDRESS, postcode: '１００－０００１', phone: '０３－１２３４－５６７８' });
    assert.equal(address.status, 303, address.body.slice(0, 2000));
    assert.equal(address.location, '/checkout/payment');
    assert.match((await b.get('/checkout/address')).body, /value="100-0001"/, 'shown normalised when the customer comes back');
    assert.equal((await b.submit('/checkout/payment', '/checkout/payment', { provider: 'testpay' })).location, '/checkout/confirm');
    const confirm = (await b.get('/checkout/confirm')).body;
    assert.match(confirm, /〒100-0001<br>東京都千代田区千代田1-1/);
    assert.match(confirm, /<td class="total">2,640円/);
    assert.match(confirm, /テスト決済/);

    const placed = await b.submit('/checkout/confirm', '/checkout/confirm');
    assert.equal(placed.status, 303, placed.body.slice(0, 1500));
    assert.match(placed.location ?? '', new RegExp(`^${store.url}/sandbox/testpay/pay/`), 'handed off to the gateway');
    const order = await store.rt.ctx.db.selectFrom('orders').selectAll().where('email', '=', email).executeTakeFirstOrThrow();
    assert.equal(order.total, 2640);
    assert.equal(order.state, 'pending_payment');
    const shipTo = await store.rt.ctx.db.selectFrom('order_addresses').selectAll().where('order_id', '=', order.id).executeTakeFirstOrThrow();
    assert.equal(shipTo.postcode, '1000001');
    assert.equal(shipTo.phone, '0312345678');
    assert.equal((await sku(store, 'demo-cd')).reserved, before.reserved + 2);
    assert.match(await cartText(b), /カートは空です/, 'the cart is emptied once the order is placed');
  });

  it('an email of 300 characters is refused next to its field, what was typed is kept, the step is not passed', async () => {
    const b = client();
    await b.submit('/products/demo-serial', '/cart/add', { quantity: '1' });
    const long = `${'a'.repeat(289)}@example.jp`;
    assert.equal(long.length, 300);
    const res = await b.submit('/checkout/customer', '/checkout/customer', { email: long, name: '' });
    assert.equal(res.status, 400);
    assert.match(fieldError(res.body, 'f-email') ?? '', /at most 254 characters/);
    assert.match(fieldError(res.body, 'f-name') ?? '', /must not be empty/);
    assert.match(res.body, /<div class="error-summary" role="alert">/);
    assert.match(res.body, /<a href="#f-email">メールアドレス/);
    assert.ok(res.body.includes(`value="${long}"`), 'the typed address is kept');
    assert.equal((await b.get('/checkout/payment')).location, '/checkout/customer', 'nothing was saved');
  });

  it('a method below its minimum or above its maximum is not offered, and refused when posted anyway (pages and API)', async () => {
    const cheap = await product('serial_code', 1, 10);
    const dear = await product('serial_code', 50_000, 10);
    await setShopSettings(store.rt.ctx, 'default', { 'testpay.minAmount': '100', 'komoju.maxAmount': '30000' });
    try {
      const b = client();
      await buyPrepared(b, cheap);
      const cheapPage = (await b.get('/checkout/payment')).body;
      assert.doesNotMatch(cheapPage, /value="testpay"/, 'testpay starts at 100 yen');
      assert.match(cheapPage, /value="atone"/, 'atone takes 1 yen');
      assert.match(cheapPage, /value="komoju"/);
      const refused = await b.submit('/checkout/payment', '/checkout/payment', { provider: 'testpay' });
      assert.equal(refused.status, 400);
      assert.match(fieldError(refused.body, 'f-provider') ?? '', /testpay takes orders from 100 yen; this order is 1 yen/);
      assert.equal((await b.get('/checkout/confirm')).location, '/checkout/payment', 'no method was saved');

      const c = client();
      await buyPrepared(c, dear);
      const dearPage = (await c.get('/checkout/payment')).body;
      assert.doesNotMatch(dearPage, /value="komoju"/);
      assert.match(dearPage, /value="testpay"/);
      const overMax = await c.submit('/checkout/payment', '/checkout/payment', { provider: 'komoju' });
      assert.match(fieldError(overMax.body, 'f-provider') ?? '', /up to 30,000 yen/);

      const orders = await countOrders();
      const api = await fetch(`${store.url}/api/checkout`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ shop: 'default', customer: { email: 'api@example.jp', name: '客' }, lines: [{ sku: cheap, quantity: 1 }], payment: { provider: 'testpay' } }),
      });
      assert.equal(api.status, 400);
      const body = (await api.json()) as { error: { problems: { field: string; reason: string }[] } };
      assert.deepEqual(body.error.problems.map((x) => x.field), ['payment.provider']);
      assert.match(body.error.problems[0]!.reason, /from 100 yen/);
      assert.equal(await countOrders(), orders);
    } finally {
      await clearSettings(['testpay.minAmount', 'komoju.maxAmount']);
    }
  });

  it('a cart with a ticket offers only the shop\'s ticket methods', async () => {
    await setShopSettings(store.rt.ctx, 'default', { 'payments.ticketProviders': 'komoju,sbps' });
    try {
      const b = client();
      await buyPrepared(b, 'demo-ticket');
      const html = (await b.get('/checkout/payment')).body;
      assert.deepEqual([...html.matchAll(/name="provider" value="(\w+)"/g)].map((m) => m[1]).sort(), ['komoju', 'sbps']);
      const refused = await b.submit('/checkout/payment', '/checkout/payment', { provider: 'testpay' });
      assert.equal(refused.status, 400);
      assert.match(refused.body, /testpay is not offered for tickets \(offered: komoju, sbps\)/);

      const other = client();
      await buyPrepared(other, 'demo-serial');
      assert.match((await other.get('/checkout/payment')).body, /value="testpay"/, 'no ticket, no restriction');
    } finally {
      await clearSettings(['payments.ticketProviders']);
    }
  });

  it('paying again from the order page offers only what the order can use, and refuses the rest next to the field', async () => {
    const code = await product('serial_code', 80, 10);
    const api = await fetch(`${store.url}/api/checkout`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ shop: 'default', customer: { email: 'again@example.jp', name: '再 払い' }, lines: [{ sku: code, quantity: 1 }], payment: { provider: 'testpay' } }),
    });
    assert.equal(api.status, 201);
    const { orderToken: token } = (await api.json()) as { orderToken: string };
    const order = await store.rt.ctx.db.selectFrom('orders').selectAll().where('email', '=', 'again@example.jp').executeTakeFirstOrThrow();
    await setShopSettings(store.rt.ctx, 'default', { 'testpay.minAmount': '100' });
    try {
      const b = client();
      const orderPage = (await b.get(`/orders/${token}`)).body;
      assert.doesNotMatch(orderPage, /<option value="testpay"/);
      assert.match(orderPage, /<option value="atone"/);
      const before = await store.rt.ctx.db.selectFrom('payment_attempts').select('id').where('order_id', '=', order.id).execute();
      const refused = await b.submit(`/orders/${token}`, `/orders/${token}/pay`, { provider: 'testpay' });
      assert.equal(refused.status, 400);
      assert.match(refused.body, /<select id="f-provider" name="provider" aria-invalid="true" aria-describedby="f-provider-error">/);
      assert.match(refused.body, /<p id="f-provider-error" class="field-error" role="alert">testpay takes orders from 100 yen; this order is 80 yen<\/p>/);
      const after = await store.rt.ctx.db.selectFrom('payment_attempts').select('id').where('order_id', '=', order.id).execute();
      assert.equal(after.length, before.length, 'no new attempt');
    } finally {
      await clearSettings(['testpay.minAmount']);
    }
  });

  /** A cart with one `code`, the customer step done: the payment step is next (no physical goods). */
  async function buyPrepared(b: FormClient, code: string) {
    assert.equal((await b.submit(`/products/${code}`, '/cart/add', { quantity: '1' })).status, 303);
    assert.equal((await b.submit('/checkout/customer', '/checkout/customer', { email: 'limits@example.jp', name: '上限 テスト' })).location, '/checkout/payment');
  }

  it('an edited cart cookie or tampered hidden fields are refused, and nothing changes', async () => {
    const b = client();
    await b.submit('/products/demo-serial', '/cart/add', { quantity: '1' });
    await b.submit('/checkout/customer', '/checkout/customer', { email: 'tamper@example.jp', name: '改ざん' });
    await b.submit('/checkout/payment', '/checkout/payment', { provider: 'testpay' });
    const confirm = await b.get('/checkout/confirm');
    const fields = hiddenFields(confirm.body, '/checkout/confirm');
    const orders = await countOrders();

    // Another price, shop or order id posted with the form: named back, nothing done.
    for (const extra of [{ price: '1' }, { shop: 'other-shop' }, { orderId: 'ord_x' }, { total: '1' }] as Record<string, string>[]) {
      const res = await b.post('/checkout/confirm', { ...fields, ...extra });
      assert.equal(res.status, 400, JSON.stringify(extra));
      assert.match(res.body, new RegExp(`fields it does not have \\(${Object.keys(extra)[0]}\\); nothing was changed`));
    }
    const priced = await b.post('/cart/add', { ...hiddenFields((await b.get('/products/demo-cd')).body, '/cart/add'), quantity: '1', price: '1' });
    assert.equal(priced.status, 400);
    assert.match(priced.body, /\(price\)/);
    // The digest of what the confirm page showed, altered.
    const altered = await b.post('/checkout/confirm', { ...fields, review: `${fields.review!.slice(0, -2)}xx` });
    assert.equal(altered.status, 409);
    assert.match(altered.body, /The order changed after it was shown/);
    assert.equal(await countOrders(), orders);

    // The cookie edited by hand: it does not open, the order is not placed.
    const sealed = b.cookies.get(CART)!;
    b.cookies.set(CART, `${sealed.slice(0, -4)}${sealed.endsWith('AAAA') ? 'BBBB' : 'AAAA'}`);
    const forged = await b.post('/checkout/confirm', fields);
    assert.equal(forged.status, 400);
    assert.match(forged.body, /could not be read.*Nothing was changed/);
    assert.equal(await countOrders(), orders);
    const cart = await b.get('/cart');
    assert.match(cart.body, /カートを読み取れなかった/);
    assert.match(cart.body, /カートは空です/);

    // The untouched cookie still buys exactly what was shown.
    b.cookies.set(CART, sealed);
    const placed = await b.post('/checkout/confirm', fields);
    assert.equal(placed.status, 303, placed.body.slice(0, 1000));
    assert.equal(await countOrders(), orders + 1);
  });

  it('the customer and address steps give each reason in Japanese and English, as the account pages do', async () => {
    const b = client();
    await b.submit('/products/demo-cd', '/cart/add', { quantity: '1' });
    const customer = await b.submit('/checkout/customer', '/checkout/customer', { email: 'not an address', name: '  ' });
    assert.equal(customer.status, 400);
    assert.equal(fieldError(customer.body, 'f-name'), '入力してください / must not be empty');
    assert.equal(fieldError(customer.body, 'f-email'), 'メールアドレスの形式ではありません / must be an email address such as taro@example.jp');

    assert.equal((await b.submit('/checkout/customer', '/checkout/customer', { email: 'bilingual@example.jp', name: '山田 太郎' })).location, '/checkout/address');
    const address = await b.submit('/checkout/address', '/checkout/address', { ...TEST_ADDRESS, prefecture: '東京', city: '', postcode: '12345', phone: '12345' });
    assert.equal(address.status, 400);
    assert.match(fieldError(address.body, 'f-prefecture') ?? '', /^47都道府県のいずれかを入力してください.*\/ must be one of the 47 prefectures/);
    assert.equal(fieldError(address.body, 'f-city'), '入力してください / must not be empty');
    assert.match(fieldError(address.body, 'f-postcode') ?? '', /^郵便番号は7桁の数字で入力してください.*\/ must be a 7-digit postcode/);
    assert.match(fieldError(address.body, 'f-phone') ?? '', /^電話番号の形式ではありません.*\/ must be a Japanese phone number/);

    // The note the address form shows under the postcode when the lookup knows no address.
    const unknown = await fetch(`${store.url}/api/address?postcode=9999999`);
    assert.equal(unknown.status, 404);
    assert.equal(((await unknown.json()) as { error: { message: string } }).error.message, '郵便番号 999-9999 の住所が見つかりません。住所を入力してください。/ No address is known for postcode 999-9999; please enter the address by hand.');

    // The API takes the same reasons, under its own field names.
    const api = await fetch(`${store.url}/api/checkout`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ shop: 'default', customer: { email: 'api-bilingual@example.jp', name: '' }, lines: [{ sku: 'demo-serial', quantity: 1 }], payment: { provider: 'testpay' } }),
    });
    assert.equal(api.status, 400);
    const body = (await api.json()) as { error: { problems: { field: string; reason: string }[] } };
    assert.deepEqual(body.error.problems, [{ field: 'customer.name', reason: '入力してください / must not be empty' }]);
  });

  it('a quantity too large to buy gets the "at most 99" reason, however many digits it has', async () => {
    const b = client();
    for (const quantity of ['100', '99999', '１２３４５６７８９０']) {
      const res = await b.submit('/products/demo-cd', '/cart/add', { quantity });
      assert.equal(res.status, 400, quantity);
      assert.equal(fieldError(res.body, 'f-quantity'), '数量は99以下にしてください / must be at most 99', quantity);
    }
    await b.submit('/products/demo-cd', '/cart/add', { quantity: '1' });
    const change = await b.submit('/cart', '/cart', { 'q.demo-cd': '99999' });
    assert.equal(fieldError(change.body, 'f-q.demo-cd'), '数量は99以下にしてください / must be at most 99');
  });

  it('the checkout steps read as separate steps of one list, also as plain text', async () => {
    const b = client();
    await b.submit('/products/demo-cd', '/cart/add', { quantity: '1' });
    const html = (await b.get('/checkout/customer')).body;
    const nav = /<nav aria-label="ご注文の手順 \/ Checkout steps">\s*<ol class="steps">([\s\S]*?)<\/ol>/.exec(html)?.[1] ?? '';
    assert.equal((nav.match(/<li\b/g) ?? []).length, 5, 'one list item per step');
    // What a text-only reader or a copy of the page gets once the markup is gone: one step per line.
    const text = unescapeHtml(nav.replace(/<[^>]*>/g, ''));
    assert.deepEqual(text.split('\n').map((l) => l.trim()).filter(Boolean), [
      'カート / Cart',
      'お客様情報 / Your details',
      'お届け先 / Shipping address',
      'お支払い方法 / Payment',
      'ご注文の確認 / Confirm',
    ]);
    assert.match(nav, /<li aria-current="step" class="current">お客様情報 \/ Your details<\/li>/);
  });

  it('the fan-club box is not called a CD: physical goods are labelled as shipped goods', async () => {
    const list = (await client().get('/')).body;
    const kinds = [...list.matchAll(/<a href="\/products\/(demo-[a-z]+)">[^<]*<\/a><\/h3>\s*<p><span class="kind kind-\w+">([^<]*)<\/span>/g)].map((m) => [m[1], m[2]]);
    assert.deepEqual(Object.fromEntries(kinds), {
      'demo-cd': '配送商品 / Shipped goods',
      'demo-serial': 'シリアルコード / Serial code',
      'demo-ticket': 'チケット / Ticket',
      'demo-fanclub': '配送商品 / Shipped goods',
    });
    const fanclub = (await client().get('/products/demo-fanclub')).body;
    assert.match(fanclub, /<dt>種類 \/ Kind<\/dt><dd class="kind kind-physical">配送商品 \/ Shipped goods<\/dd>/);
    assert.doesNotMatch(fanclub, />CD</);
  });

  it('buyThroughShop walks every step to the hand-off', async () => {
    const res = await buyThroughShop(client(), { sku: 'demo-cd', email: 'walk@example.jp', name: '歩 太郎', provider: 'sbps' });
    assert.equal(res.status, 200);
    assert.match(res.body, /accept-charset="Shift_JIS" id="handoff"/);
  });
});
