/**
 * atone through the whole store, over real HTTP on loopback: the shop page carries atone's modal
 * config (payment object with checksum, pre_token); the "browser" (fetch) walks the simulator's
 * modal as atone.js would, and posts the modal's callbacks to the store as the shop page's script
 * does; the simulator sends its webhooks to /webhooks/atone/default/{member,order}. Every fact comes
 * from reading the transaction back at atone.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, afterEach, before, it } from 'node:test';
import { createProduct } from '../../src/commerce/catalog.js';
import { atoneSandboxKeys, setShopSettings } from '../../src/commerce/shops.js';
import type { AtonePayment } from '../../src/gateways/atone/index.js';
import { atoneApiOf, runAtoneModal, setAtoneFaults } from '../helpers/atone.js';
import { forEachEngine } from '../helpers/db.js';
import { eventually } from '../helpers/eventually.js';
import { buyThroughShop, FormClient, type Answer } from '../helpers/browser.js';
import { ADMIN_TOKEN, onlyAttempt, registerMember, sku, startStore, type TestStore } from '../helpers/store.js';

interface AtoneConfig {
  scriptUrl: string;
  pub_key: string;
  payment: AtonePayment;
  pre_token: string;
  callbackUrl: string;
  orderUrl: string;
}

async function product(store: TestStore, stock: number, price: number): Promise<string> {
  const code = `atone-${randomBytes(4).toString('hex')}`;
  await createProduct(store.rt.ctx, 'default', { code, name: `限定グッズ ${code}`, kind: 'ticket', price, stock });
  return code;
}

/**
 * The confirm button answers with a redirect to the order's atone page (so that reloading it shows
 * it again); opening it, twice as a reload does, shows the same page.
 */
async function atonePage(b: FormClient, confirmed: Answer): Promise<Answer> {
  assert.equal(confirmed.status, 303, confirmed.body.slice(0, 500));
  assert.match(confirmed.location ?? '', /^\/orders\/[^/]+\/atone$/);
  const shown = await b.get(confirmed.location!);
  assert.equal(shown.status, 200, shown.body.slice(0, 500));
  const reloaded = await b.get(confirmed.location!);
  assert.equal(reloaded.status, 200, 'a reload shows the atone page again');
  assert.ok(reloaded.body.includes('id="atone-config"'), 'with its config');
  return shown;
}

/** Orders through the shop's pages, as a browser does; answers the atone page's config and the order token. */
async function orderOnPage(store: TestStore, code: string, quantity = 1): Promise<{ config: AtoneConfig; token: string; html: string }> {
  const b = new FormClient(store.url);
  const res = await atonePage(b, await buyThroughShop(b, { sku: code, quantity, email: 'taro@example.jp', name: '山田 太郎', provider: 'atone' }));
  const html = res.body;
  const json = /<script type="application\/json" id="atone-config">([^<]*)<\/script>/.exec(html);
  assert.ok(json, 'the page carries the atone config');
  const config = JSON.parse(json[1]!) as AtoneConfig;
  const token = /\/orders\/([^/]+)\/atone/.exec(config.callbackUrl)![1]!;
  // A customer who closes atone's window can go to the order and choose another method.
  assert.ok(html.includes(`<a href="/orders/${token}">`), 'the atone page links to the order page');
  return { config, token, html };
}

/** The shop page's script: posts a modal callback to the store. */
async function callback(store: TestStore, config: AtoneConfig, body: unknown): Promise<Response> {
  return fetch(new URL(config.callbackUrl, store.url), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
}

async function view(store: TestStore, token: string): Promise<{ state: string; payment: { state: string; details: Record<string, unknown> } | null }> {
  return ((await (await fetch(`${store.url}/api/orders/${token}`)).json()) as { order: { state: string; payment: { state: string; details: Record<string, unknown> } | null } }).order;
}

const orderIdOf = async (store: TestStore, token: string) => (await store.rt.ctx.db.selectFrom('orders').select('id').where('number', '=', (await (await fetch(`${store.url}/api/orders/${token}`)).json() as { order: { number: string } }).order.number).executeTakeFirstOrThrow()).id;

forEachEngine('atone through the store', (engine) => {
  let store: TestStore;
  before(async () => {
    store = await startStore(engine);
    store.startWorker();
  });
  afterEach(async () => {
    await setAtoneFaults(store, { dropBrowser: false, webhookFirst: false, duplicateWebhooks: false, decline: false, dropWebhooks: false, webhookDelayMs: 0 });
    await setShopSettings(store.rt.ctx, 'default', { 'atone.settleMode': '' });
  });
  after(async () => {
    await store?.close();
  });

  it('the page carries a payment object atone accepts; succeeded is read back → paid once, stock committed', async () => {
    const code = await product(store, 5, 3300);
    const { config, token, html } = await orderOnPage(store, code, 2);
    assert.equal(config.payment.amount, 6600);
    assert.equal(config.payment.items.reduce((sum, i) => sum + Number(i.item_price) * Number(i.item_count), 0), 6600);
    assert.match(html, new RegExp(`<script src="${config.scriptUrl}"></script>`));
    assert.ok(!html.includes(atoneSandboxKeys(store.rt.ctx.config).secretKey), 'the secret key never reaches the browser');

    const messages = await runAtoneModal(store, config);
    const succeeded = messages.find((m) => m.event === 'succeeded');
    assert.ok(succeeded?.response?.id, JSON.stringify(messages));
    const res = await callback(store, config, { event: 'succeeded', transactionId: succeeded.response.id });
    assert.equal(res.status, 200, await res.text());
    assert.equal((await view(store, token)).state, 'paid');
    const orderId = await orderIdOf(store, token);
    assert.equal((await onlyAttempt(store, orderId)).gateway_ref, succeeded.response.id);
    assert.deepEqual(await sku(store, code), { on_hand: 3, reserved: 0 });
    // atone's webhook comes too and finds the order paid: one state change.
    await eventually(async () => {
      const events = await store.rt.ctx.db.selectFrom('payment_events').select(['source', 'outcome']).where('attempt_id', '=', (await onlyAttempt(store, orderId)).id).execute();
      assert.ok(events.some((e) => e.source === 'notification') || events.length === 1, 'events.some((e) => e.source === \'notification\') || events.length === 1');
      assert.equal(events.filter((e) => e.outcome === 'applied').length, 1);
    });
  });

  it('atone is not offered for an item priced beyond its limit; a long item name is shortened, and the payment goes through', async () => {
    const dear = await product(store, 5, 1_000_000);
    const methods = (await (await fetch(`${store.url}/api/shops/default/payment-methods?lines=${dear}:1`)).json()) as { providers: { provider: string }[] };
    assert.ok(!methods.providers.some((m) => m.provider === 'atone'), 'item_price has at most 6 digits at atone');
    assert.ok(methods.providers.some((m) => m.provider === 'testpay'), 'methods.providers.some((m) => m.provider === \'testpay\')');

    const code = `atone-${randomBytes(4).toString('hex')}`;
    await createProduct(store.rt.ctx, 'default', { code, name: `限定`.repeat(75), kind: 'ticket', price: 1200, stock: 5 });
    const { config, token } = await orderOnPage(store, code);
    assert.equal([...config.payment.items[0]!.item_name].length, 100, 'cut to what atone takes');
    const succeeded = (await runAtoneModal(store, config)).find((m) => m.event === 'succeeded');
    assert.ok(succeeded?.response?.id, 'atone accepted the payment');
    assert.equal((await callback(store, config, { event: 'succeeded', transactionId: succeeded.response.id })).status, 200);
    assert.equal((await view(store, token)).state, 'paid');
  });

  it('a transaction id that is not this order\'s is refused and changes nothing', async () => {
    const first = await orderOnPage(store, await product(store, 5, 1000));
    const messages = await runAtoneModal(store, first.config);
    const other = await orderOnPage(store, await product(store, 5, 1000));
    const res = await callback(store, other.config, { event: 'succeeded', transactionId: messages.find((m) => m.event === 'succeeded')!.response!.id });
    assert.equal(res.status, 409);
    assert.equal((await view(store, other.token)).state, 'pending_payment');
    const bad = await callback(store, other.config, { event: 'succeeded', transactionId: 'not-an-id' });
    assert.equal(bad.status, 400);
  });

  it('browser gone after the authorization: the order is paid from the webhook alone', async () => {
    await setAtoneFaults(store, { dropBrowser: true });
    const { config, token } = await orderOnPage(store, await product(store, 5, 2000));
    const messages = await runAtoneModal(store, config);
    assert.ok(!messages.some((m) => m.event === 'succeeded'), 'no callback reaches the page');
    await eventually(async () => assert.equal((await view(store, token)).state, 'paid'), 10_000);
  });

  it('duplicate webhooks and the webhook before the callback converge on one paid order', async () => {
    await setAtoneFaults(store, { duplicateWebhooks: true, webhookFirst: true });
    const { config, token } = await orderOnPage(store, await product(store, 5, 2500));
    const messages = await runAtoneModal(store, config);
    await eventually(async () => assert.equal((await view(store, token)).state, 'paid'), 10_000);
    const res = await callback(store, config, { event: 'succeeded', transactionId: messages.find((m) => m.event === 'succeeded')!.response!.id });
    assert.equal(res.status, 200);
    const orderId = await orderIdOf(store, token);
    const changes = await store.rt.ctx.db.selectFrom('state_changes').select('to_state').where('entity_id', '=', orderId).execute();
    assert.equal(changes.filter((c) => c.to_state === 'paid').length, 1);
  });

  it('a decline fails the attempt and leaves the order open for another method', async () => {
    const { config, token } = await orderOnPage(store, await product(store, 5, 1800));
    const messages = await runAtoneModal(store, config, 'decline@example.jp');
    const failed = messages.find((m) => m.event === 'failed');
    assert.ok(failed?.response?.id, JSON.stringify(messages));
    await callback(store, config, { event: 'failed', transactionId: failed.response.id });
    assert.equal((await view(store, token)).state, 'pending_payment');
    assert.equal((await view(store, token)).payment?.state, 'failed');
  });

  it('a transaction that does not match the order (amount) is refunded at atone and the attempt fails', async () => {
    const { config, token } = await orderOnPage(store, await product(store, 5, 4000));
    // A tampered page: the customer authorizes a smaller amount (the checksum made by the attacker's own… the sandbox's key).
    const { buildAtonePayment } = await import('../../src/gateways/atone/index.js');
    const cheaper = buildAtonePayment(
      { shopTransactionNo: config.payment.shop_transaction_no, lines: [{ id: 'line1', name: '値引き品', unitPrice: 1, quantity: 1 }], customer: { customer_name: '山田 太郎', email: 'taro@example.jp' } },
      { secretKey: atoneSandboxKeys(store.rt.ctx.config).secretKey },
    );
    const messages = await runAtoneModal(store, { ...config, payment: cheaper });
    const id = messages.find((m) => m.event === 'succeeded')!.response!.id;
    await callback(store, config, { event: 'succeeded', transactionId: id });
    await eventually(async () => assert.equal((await view(store, token)).payment?.state, 'failed'));
    assert.equal((await view(store, token)).state, 'pending_payment');
    const atAtone = await atoneApiOf(store).reference(id);
    assert.ok(atAtone.refunds || (atAtone.amount_refund_total ?? 0) > 0, `refunded at atone: ${JSON.stringify(atAtone)}`);
  });

  it('settle on shipment: the operator ships, the sale is confirmed at atone once', async () => {
    const code = await product(store, 5, 3000);
    const { config, token } = await orderOnPage(store, code);
    const messages = await runAtoneModal(store, config);
    const id = messages.find((m) => m.event === 'succeeded')!.response!.id;
    await callback(store, config, { event: 'succeeded', transactionId: id });
    assert.equal((await atoneApiOf(store).reference(id)).sales_settled, false, 'not settled before shipment');
    const orderId = await orderIdOf(store, token);
    const ship = await fetch(`${store.url}/api/admin/orders/${orderId}/events`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify({ event: 'ship' }) });
    assert.equal(ship.status, 200, await ship.text());
    await eventually(async () => assert.equal((await atoneApiOf(store).reference(id)).sales_settled, true), 10_000);
    await eventually(async () => assert.ok((await onlyAttempt(store, orderId)).details.includes('settled'), 'the attempt records the settle'));
  });

  it('settle immediately: the payment object asks atone to settle with the authorization', async () => {
    await setShopSettings(store.rt.ctx, 'default', { 'atone.settleMode': 'immediate' });
    const { config } = await orderOnPage(store, await product(store, 5, 1200));
    assert.equal(config.payment.sales_settled, true);
  });

  it('a member: the token atone authenticated is kept (sealed), shown on the my page and passed as pre_token next time', async () => {
    const email = `member-${randomBytes(4).toString('hex')}@example.jp`;
    const b = new FormClient(store.url, { 'x-forwarded-for': '203.0.113.77' });
    await registerMember(store, b, { email, name: '山田 花子', password: 'correct horse battery' });

    const buy = async (code: string) => {
      const res = await atonePage(b, await buyThroughShop(b, { sku: code, email, name: '山田 花子', provider: 'atone' }));
      return JSON.parse(/<script type="application\/json" id="atone-config">([^<]*)<\/script>/.exec(res.body)![1]!) as AtoneConfig;
    };
    const first = await buy(await product(store, 5, 1500));
    assert.equal(first.pre_token, '', 'no token yet');
    const messages = await runAtoneModal(store, first);
    const authenticated = messages.find((m) => m.event === 'authenticated');
    assert.ok(authenticated?.authentication_token, JSON.stringify(messages));
    const linked = (await (await callback(store, first, { event: 'authenticated', authenticationToken: authenticated.authentication_token, userNo: authenticated.user_no })).json()) as { linked: boolean };
    assert.equal(linked.linked, true);
    await callback(store, first, { event: 'succeeded', transactionId: messages.find((m) => m.event === 'succeeded')!.response!.id });
    const stored = await store.rt.ctx.db.selectFrom('customer_links').selectAll().execute();
    assert.ok(stored.length > 0 && stored.every((l) => !String(l.secret).includes(authenticated.authentication_token!)), 'kept sealed, never in clear');
    assert.match((await b.get('/account')).body, /atone（NP後払い）<\/dt><dd>連携済み/);

    const second = await buy(await product(store, 5, 900));
    assert.equal(second.pre_token, authenticated.authentication_token, 'the next purchase skips atone\'s login');
    const again = await runAtoneModal(store, second);
    assert.ok(again.some((m) => m.event === 'succeeded'), JSON.stringify(again));
  });

  it('a guest\'s atone token is not kept', async () => {
    const { config } = await orderOnPage(store, await product(store, 5, 700));
    const messages = await runAtoneModal(store, config);
    const authenticated = messages.find((m) => m.event === 'authenticated')!;
    const res = (await (await callback(store, config, { event: 'authenticated', authenticationToken: authenticated.authentication_token })).json()) as { linked: boolean };
    assert.equal(res.linked, false);
  });

  it('a full refund by the operator refunds at atone; a partial one stops for a person', async () => {
    const { config, token } = await orderOnPage(store, await product(store, 5, 2600));
    const messages = await runAtoneModal(store, config);
    const id = messages.find((m) => m.event === 'succeeded')!.response!.id;
    await callback(store, config, { event: 'succeeded', transactionId: id });
    const orderId = await orderIdOf(store, token);
    const admin = (path: string, body: unknown) => fetch(`${store.url}/api/admin${path}`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    assert.equal((await admin(`/orders/${orderId}/refund`, { amount: 100 })).status, 202);
    await eventually(async () => {
      const dead = await store.rt.ctx.db.selectFrom('jobs').select(['state', 'last_error']).where('kind', '=', 'payment.refund').where('state', '=', 'dead').execute();
      assert.ok(dead.some((j) => /in full only/.test(j.last_error ?? '')), JSON.stringify(dead));
    }, 10_000);
    assert.equal((await admin(`/orders/${orderId}/refund`, { amount: 2600 })).status, 202);
    await eventually(async () => assert.equal((await view(store, token)).state, 'refunded'), 10_000);
    const atAtone = await atoneApiOf(store).reference(id);
    assert.ok(atAtone.refunds || (atAtone.amount_refund_total ?? 0) > 0, 'atAtone.refunds || (atAtone.amount_refund_total ?? 0) > 0');
  });
});
