/**
 * Order edits and subscriptions through the whole store, over real HTTP on loopback, against the
 * atone simulator (and testpay for a gateway without 取引更新): an operator makes a paid order
 * smaller and atone's transaction is replaced (the new id is the one kept and settled); any other
 * gateway refunds the difference. A member's atone purchase of a recurring product starts a
 * subscription, whose renewal order is charged by 取引登録 with the member's token and option 1.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, afterEach, before, it } from 'node:test';
import { attachOrder } from '../../src/accounts/orders.js';
import { createProduct } from '../../src/commerce/catalog.js';
import { jstDate } from '../../src/commerce/serial-codes.js';
import { setShopSettings } from '../../src/commerce/shops.js';
import { enqueue } from '../../src/jobs/outbox.js';
import { atoneApiOf, atoneCallback, runAtoneModal, setAtoneFaults, type AtoneModalConfig } from '../helpers/atone.js';
import { FormClient } from '../helpers/browser.js';
import { forEachEngine } from '../helpers/db.js';
import { eventually } from '../helpers/eventually.js';
import { readMails } from '../helpers/mail.js';
import { ADMIN_TOKEN, notificationsApplied, registerMember, sku, startStore, type TestStore } from '../helpers/store.js';

const ADDRESS = { name: '山田 太郎', postcode: '100-0001', prefecture: '東京都', city: '千代田区', line1: '千代田1-1', phone: '03-1234-5678' };

interface Placed {
  orderId: string;
  token: string;
  number: string;
  payment: { type: string; url?: string; config?: AtoneModalConfig };
}
interface ErrorBody {
  error: { code: string; message: string; problems: { field: string; reason: string }[] };
}

async function product(store: TestStore, price: number, opts: { stock?: number; recurring?: number } = {}): Promise<string> {
  const code = `box-${randomBytes(4).toString('hex')}`;
  await createProduct(store.rt.ctx, 'default', { code, name: `お届けBOX ${code}`, kind: 'physical', price, stock: opts.stock ?? 10, recurringIntervalMonths: opts.recurring ?? null });
  return code;
}

async function checkout(store: TestStore, lines: { sku: string; quantity: number }[], provider: string, email = 'taro@example.jp'): Promise<Response> {
  return fetch(`${store.url}/api/checkout`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ shop: 'default', customer: { email, name: '山田 太郎' }, shippingAddress: ADDRESS, lines, payment: { provider } }),
  });
}

async function place(store: TestStore, lines: { sku: string; quantity: number }[], provider = 'atone', email?: string): Promise<Placed> {
  const res = await checkout(store, lines, provider, email);
  const body = (await res.json()) as { order: { number: string }; orderToken: string; payment: Placed['payment'] };
  assert.equal(res.status, 201, JSON.stringify(body));
  const row = await store.rt.ctx.db.selectFrom('orders').select('id').where('number', '=', body.order.number).executeTakeFirstOrThrow();
  return { orderId: row.id, token: body.orderToken, number: body.order.number, payment: body.payment };
}

/** The customer pays in atone's modal; the page reports the transaction. Answers its id and the modal's messages. */
async function payWithAtone(store: TestStore, placed: Placed): Promise<{ transactionId: string; token?: string }> {
  const messages = await runAtoneModal(store, placed.payment.config!);
  const authenticated = messages.find((m) => m.event === 'authenticated');
  if (authenticated) await atoneCallback(store, placed.token, { event: 'authenticated', authenticationToken: authenticated.authentication_token, userNo: authenticated.user_no });
  const transactionId = messages.find((m) => m.event === 'succeeded')?.response?.id;
  assert.ok(transactionId, JSON.stringify(messages));
  const res = await atoneCallback(store, placed.token, { event: 'succeeded', transactionId });
  assert.equal(res.status, 200, await res.text());
  return { transactionId, token: authenticated?.authentication_token };
}

const admin = (store: TestStore, method: string, path: string, body?: unknown) =>
  fetch(`${store.url}/api/admin${path}`, { method, headers: { authorization: `Bearer ${ADMIN_TOKEN}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) }, body: body === undefined ? undefined : JSON.stringify(body) });

const attemptOf = async (store: TestStore, orderId: string) => {
  const order = await store.rt.ctx.db.selectFrom('orders').select(['current_attempt_id', 'state', 'total']).where('id', '=', orderId).executeTakeFirstOrThrow();
  const attempt = await store.rt.ctx.db.selectFrom('payment_attempts').selectAll().where('id', '=', order.current_attempt_id!).executeTakeFirstOrThrow();
  return { order, attempt, details: JSON.parse(attempt.details) as Record<string, unknown> };
};

/** A registered, verified member of the shop, as the account pages make one. Answers its customer id. */
async function member(store: TestStore): Promise<string> {
  const b = new FormClient(store.url, { 'x-forwarded-for': `203.0.113.${1 + (randomBytes(1)[0]! % 200)}` });
  return registerMember(store, b, { email: `member-${randomBytes(4).toString('hex')}@example.jp`, name: '山田 花子', password: 'correct horse battery' });
}

/** The member checks out while logged in (the order becomes theirs, as the shop page does) and pays with atone. */
async function memberBuys(store: TestStore, customerId: string, code: string, quantity = 1): Promise<Placed & { transactionId: string; memberToken?: string }> {
  const placed = await place(store, [{ sku: code, quantity }]);
  await attachOrder(store.rt.ctx, placed.orderId, customerId);
  const paid = await payWithAtone(store, placed);
  return { ...placed, transactionId: paid.transactionId, memberToken: paid.token };
}

/** Time passes: the subscription is due today, and the daily schedule's job runs. */
async function renewDue(store: TestStore, subscriptionId: string): Promise<void> {
  const today = jstDate(new Date());
  await store.rt.ctx.db.updateTable('subscriptions').set({ next_date: today }).where('id', '=', subscriptionId).execute();
  await enqueue(store.rt.ctx.db, { kind: 'subscriptions.renew', payload: {} });
  await eventually(async () => {
    const jobs = await store.rt.ctx.db.selectFrom('jobs').select('state').where('dedupe_key', '=', `subscription.renew:${subscriptionId}:${today}`).execute();
    assert.deepEqual(jobs.map((j) => j.state), ['done']);
  }, 15_000);
}

const renewalOf = async (store: TestStore, subscriptionId: string) =>
  store.rt.ctx.db.selectFrom('subscription_orders').innerJoin('orders', 'orders.id', 'subscription_orders.order_id').select(['orders.id', 'orders.state', 'orders.customer_id']).where('subscription_id', '=', subscriptionId).executeTakeFirst();

forEachEngine('atone order edits', (engine) => {
  let store: TestStore;
  before(async () => {
    store = await startStore(engine);
    store.startWorker();
  });
  afterEach(async () => setAtoneFaults(store, { decline: false }));
  after(async () => {
    await store?.close();
  });

  it('an edit replaces the atone transaction (取引更新): the new id is kept, and shipping settles it', async () => {
    const a = await product(store, 1000);
    const b = await product(store, 500);
    const placed = await place(store, [{ sku: a, quantity: 3 }, { sku: b, quantity: 1 }]);
    const { transactionId: first } = await payWithAtone(store, placed);
    assert.equal((await attemptOf(store, placed.orderId)).order.state, 'paid');
    assert.deepEqual(await sku(store, a), { on_hand: 7, reserved: 0 });

    const res = await admin(store, 'POST', `/orders/${placed.orderId}/edit`, { lines: [{ sku: a, quantity: 2 }, { sku: b, quantity: 0 }] });
    const edited = (await res.json()) as { total: number; changed: boolean; difference: number; state: string };
    assert.equal(res.status, 200, JSON.stringify(edited));
    assert.deepEqual(edited, { ...edited, total: 2000, changed: true, difference: 1500, state: 'paid' });
    assert.deepEqual(await sku(store, a), { on_hand: 8, reserved: 0 }, 'the unit taken off goes back on the shelf');
    assert.deepEqual(await sku(store, b), { on_hand: 10, reserved: 0 });
    const view = (await (await fetch(`${store.url}/api/orders/${placed.token}`)).json()) as { order: { total: number; tax: { rate10: number }; lines: { quantity: number }[] } };
    assert.deepEqual([view.order.total, view.order.tax.rate10, view.order.lines.map((l) => l.quantity)], [2000, 181, [2]]);

    const updated = await eventually(async () => {
      const { attempt, details } = await attemptOf(store, placed.orderId);
      assert.notEqual(attempt.gateway_ref, first, 'the attempt holds the new transaction');
      assert.deepEqual([attempt.amount, attempt.captured_amount, attempt.state, details.replacedTransactions], [2000, 2000, 'captured', [first]]);
      return attempt.gateway_ref!;
    }, 10_000);
    const atAtone = await atoneApiOf(store).reference(updated);
    assert.deepEqual([atAtone.amount, atAtone.updated_transactions, atAtone.items?.map((i) => [i.item_price, i.item_count])], [2000, [first], [[1000, 2]]]);
    assert.equal((await atoneApiOf(store).reference(first)).related_transaction, updated, 'atone shows the first transaction replaced');

    // The same request again (an operator's retry) changes nothing and queues nothing.
    const again = (await (await admin(store, 'POST', `/orders/${placed.orderId}/edit`, { lines: [{ sku: a, quantity: 2 }] })).json()) as { changed: boolean };
    assert.equal(again.changed, false);
    const updates = await store.rt.ctx.db.selectFrom('jobs').select('id').where('kind', '=', 'payment.update').where('payload', 'like', `%${(await attemptOf(store, placed.orderId)).attempt.id}%`).execute();
    assert.equal(updates.length, 1);

    assert.equal((await admin(store, 'POST', `/orders/${placed.orderId}/events`, { event: 'ship' })).status, 200);
    await eventually(async () => assert.equal((await atoneApiOf(store).reference(updated)).sales_settled, true), 10_000);
    assert.equal((await atoneApiOf(store).reference(first)).sales_settled, false, 'the replaced transaction is never settled');
  });

  it('more items, an unknown line or a shipped order are refused with the reason, and change nothing', async () => {
    const a = await product(store, 800);
    const placed = await place(store, [{ sku: a, quantity: 2 }]);
    await payWithAtone(store, placed);
    const more = await admin(store, 'POST', `/orders/${placed.orderId}/edit`, { lines: [{ sku: a, quantity: 3 }] });
    assert.equal(more.status, 400);
    const body = (await more.json()) as ErrorBody;
    assert.equal(body.error.problems[0]?.field, 'lines.0.quantity');
    assert.match(body.error.problems[0]!.reason, /more than the 2 ordered: more items need a new payment/);
    const unknown = (await (await admin(store, 'POST', `/orders/${placed.orderId}/edit`, { lines: [{ sku: 'nothing-here', quantity: 0 }] })).json()) as ErrorBody;
    assert.equal(unknown.error.problems[0]?.field, 'lines.0.sku');
    const all = (await (await admin(store, 'POST', `/orders/${placed.orderId}/edit`, { lines: [{ sku: a, quantity: 0 }] })).json()) as ErrorBody;
    assert.match(all.error.message, /at least one item; cancel or refund/);
    assert.deepEqual([(await attemptOf(store, placed.orderId)).order.total, (await sku(store, a)).on_hand], [1600, 8]);

    assert.equal((await admin(store, 'POST', `/orders/${placed.orderId}/events`, { event: 'ship' })).status, 200);
    const shipped = await admin(store, 'POST', `/orders/${placed.orderId}/edit`, { lines: [{ sku: a, quantity: 1 }] });
    assert.equal(shipped.status, 409);
    assert.match(((await shipped.json()) as ErrorBody).error.message, /shipped; only a paid order that has not shipped can be edited/);
  });

  it('atone declines the update: the order stays edited, the attempt is flagged, an operator is alerted, nothing is settled', async () => {
    const a = await product(store, 1200);
    const placed = await place(store, [{ sku: a, quantity: 2 }]);
    const { transactionId } = await payWithAtone(store, placed);
    await setAtoneFaults(store, { decline: true });
    assert.equal((await admin(store, 'POST', `/orders/${placed.orderId}/edit`, { lines: [{ sku: a, quantity: 1 }] })).status, 200);
    const { attempt } = await eventually(async () => {
      const now = await attemptOf(store, placed.orderId);
      assert.match(String(now.details.updateFailed), /atone declined the update/);
      return now;
    }, 10_000);
    assert.deepEqual([attempt.gateway_ref, attempt.amount], [transactionId, 2400], 'the authorized transaction stands as it was');
    assert.equal((await attemptOf(store, placed.orderId)).order.total, 1200);
    // The job flags the attempt, then fails; the dispatcher dead-letters it and raises the alert after.
    await eventually(async () => {
      const alerts = (await (await admin(store, 'GET', '/alerts')).json()) as { alerts: { kind: string; message: string }[] };
      assert.ok(alerts.alerts.some((x) => x.kind === 'job_dead' && /payment\.update/.test(x.message) && /declined the update/.test(x.message)), JSON.stringify(alerts));
    }, 10_000);

    await setAtoneFaults(store, { decline: false });
    assert.equal((await admin(store, 'POST', `/orders/${placed.orderId}/events`, { event: 'ship' })).status, 200);
    await eventually(async () => {
      const settle = await store.rt.ctx.db.selectFrom('jobs').select(['state', 'last_error']).where('dedupe_key', '=', `payment.settle:${placed.orderId}`).executeTakeFirstOrThrow();
      assert.equal(settle.state, 'dead');
      assert.match(settle.last_error ?? '', /could not be updated/);
    }, 10_000);
    assert.equal((await atoneApiOf(store).reference(transactionId)).sales_settled, false);

    // The hourly re-check of a paid order reads the transaction back: its items now differ from the
    // edited order, which must not be taken for a tampered payment and refunded in full.
    await store.rt.jobs.get('payment.check-paid')!.run({ attemptId: attempt.id }, { ctx: store.rt.ctx, jobId: 'by-hand', attempt: 1, signal: new AbortController().signal, log: store.rt.ctx.log });
    const after = await atoneApiOf(store).reference(transactionId);
    assert.ok(!after.amount_refund_total, `atone was not asked to refund (${JSON.stringify(after.amount_refund_total)})`);
    assert.equal((await attemptOf(store, placed.orderId)).attempt.refunded_amount, 0);
  });

  it('an edit of an order paid with another gateway refunds the difference; the order stays paid and ships', async () => {
    const a = await product(store, 700);
    const placed = await place(store, [{ sku: a, quantity: 3 }], 'testpay');
    const pressed = await fetch(`${placed.payment.url}/card`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: '', redirect: 'manual' });
    assert.equal(pressed.status, 303);
    await notificationsApplied(store);
    assert.equal((await attemptOf(store, placed.orderId)).order.state, 'paid');

    const res = await admin(store, 'POST', `/orders/${placed.orderId}/edit`, { lines: [{ sku: a, quantity: 1 }] });
    assert.equal(res.status, 200, await res.text());
    await eventually(async () => {
      const { attempt, order } = await attemptOf(store, placed.orderId);
      assert.deepEqual([attempt.state, attempt.captured_amount, attempt.refunded_amount, order.total, order.state], ['partially_refunded', 2100, 1400, 700, 'paid']);
    }, 10_000);
    assert.equal((await admin(store, 'POST', `/orders/${placed.orderId}/events`, { event: 'ship' })).status, 200);
  });
});

forEachEngine('atone subscriptions', (engine) => {
  let store: TestStore;
  let customerId: string;
  before(async () => {
    store = await startStore(engine);
    store.startWorker();
    await setShopSettings(store.rt.ctx, 'default', { 'atone.recurring': 'true' });
    customerId = await member(store);
  });
  afterEach(async () => {
    await setAtoneFaults(store, { decline: false });
    await setShopSettings(store.rt.ctx, 'default', { 'atone.recurring': 'true' });
  });
  after(async () => {
    await store?.close();
  });

  it("an unsigned 認証Webhook (atone.webhookChecksum off) does not replace a member's saved token", async () => {
    // A member of its own: the other tests follow one member's first purchase.
    const someone = await member(store);
    const box = await product(store, 2980, { recurring: 1 });
    const bought = await memberBuys(store, someone, box);
    const link = () => store.rt.ctx.db.selectFrom('customer_links').select(['secret', 'external_id', 'updated_at']).where('customer_id', '=', someone).where('party', '=', 'atone').executeTakeFirst();
    const saved = await link();
    assert.ok(saved?.secret, 'the token was kept from the order page');
    const { attempt } = await attemptOf(store, bought.orderId);
    // Anyone who knows an order's reference could send this: later charges would go to their token.
    const res = await fetch(`${store.url}/webhooks/atone/default/member`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ shop_transaction_no: attempt.merchant_ref, authentication_token: 'tk_forgedforgedforged0001', user_no: 'someone' }),
    });
    assert.equal(res.status, 200, await res.text());
    assert.deepEqual(await link(), saved, 'the saved token is untouched');
  });

  it('a member pays a recurring product with atone: a subscription; when due, the renewal is registered with the token and option 1 and paid', async () => {
    const box = await product(store, 2980, { recurring: 1 });
    const first = await memberBuys(store, customerId, box, 2);
    assert.deepEqual(first.payment.config!.payment.transaction_options, [1], 'the first payment asks for consent to later charges');
    assert.ok(first.memberToken, 'first.memberToken');

    const listed = (await (await admin(store, 'GET', `/subscriptions?customer=${customerId}`)).json()) as { subscriptions: { id: string; sku: string; quantity: number; intervalMonths: number; nextDate: string; state: string }[] };
    const sub = listed.subscriptions.find((s) => s.sku === box);
    assert.ok(sub, JSON.stringify(listed));
    assert.deepEqual([sub.quantity, sub.intervalMonths, sub.state], [2, 1, 'active']);
    assert.ok(sub.nextDate > jstDate(new Date()), `due next month, not ${sub.nextDate}`);

    await renewDue(store, sub.id);
    const renewal = await renewalOf(store, sub.id);
    assert.ok(renewal, 'a renewal order');
    await eventually(async () => assert.equal((await attemptOf(store, renewal.id)).order.state, 'paid'), 10_000);
    assert.equal(renewal.customer_id, customerId, "the renewal is the member's order");
    const { attempt, order } = await attemptOf(store, renewal.id);
    assert.deepEqual([order.total, attempt.state, attempt.captured_amount], [5960, 'captured', 5960]);
    const registered = await atoneApiOf(store).reference(attempt.gateway_ref!);
    assert.deepEqual(
      [registered.transaction_options, registered.authentication_token, registered.shop_transaction_no, registered.amount, registered.updated_transactions],
      [[1], first.memberToken, attempt.merchant_ref, 5960, []],
    );
    assert.ok(registered.id !== first.transactionId, 'registered.id !== first.transactionId');
    const next = (await store.rt.ctx.db.selectFrom('subscriptions').select('next_date').where('id', '=', sub.id).executeTakeFirstOrThrow()).next_date;
    assert.ok(next > jstDate(new Date()), 'the next renewal is a month on');
    const subscriptions = await store.rt.ctx.db.selectFrom('subscriptions').select('id').where('customer_id', '=', customerId).where('sku_id', 'in', store.rt.ctx.db.selectFrom('skus').select('id').where('code', '=', box)).execute();
    assert.equal(subscriptions.length, 1, 'a renewal does not start another subscription');

    // Cancelled by the operator: nothing more is renewed.
    const cancelled = await admin(store, 'POST', `/subscriptions/${sub.id}/cancel`);
    assert.equal(cancelled.status, 200);
    await store.rt.ctx.db.updateTable('subscriptions').set({ next_date: jstDate(new Date()) }).where('id', '=', sub.id).execute();
    await enqueue(store.rt.ctx.db, { kind: 'subscriptions.renew', payload: {} });
    await eventually(async () => {
      const ticks = await store.rt.ctx.db.selectFrom('jobs').select('state').where('kind', '=', 'subscriptions.renew').execute();
      assert.ok(ticks.every((t) => t.state === 'done'), 'ticks.every((t) => t.state === \'done\')');
    });
    const orders = await store.rt.ctx.db.selectFrom('subscription_orders').select('order_id').where('subscription_id', '=', sub.id).execute();
    assert.equal(orders.length, 1);
  });

  it('a declined registration leaves the renewal waiting for payment, alerts an operator and tells the member once', async () => {
    const box = await product(store, 1980, { recurring: 3 });
    await memberBuys(store, customerId, box);
    const sub = await store.rt.ctx.db.selectFrom('subscriptions').selectAll().where('customer_id', '=', customerId).where('interval_months', '=', 3).executeTakeFirstOrThrow();
    await setAtoneFaults(store, { decline: true });
    await renewDue(store, sub.id);
    const renewal = (await renewalOf(store, sub.id))!;
    const { order, attempt } = await attemptOf(store, renewal.id);
    assert.deepEqual([order.state, attempt.state], ['pending_payment', 'failed']);
    const alerts = (await (await admin(store, 'GET', '/alerts')).json()) as { alerts: { kind: string; message: string; ref: string }[] };
    const alert = alerts.alerts.find((x) => x.kind === 'subscription_unpaid' && x.ref === renewal.id);
    assert.match(alert?.message ?? '', /not paid: atone did not authorize/);
    // The member hears of it by mail: which renewal, until when it waits, and where to ask.
    const { email } = await store.rt.ctx.db.selectFrom('customers').select('email').where('id', '=', customerId).executeTakeFirstOrThrow();
    const { number } = await store.rt.ctx.db.selectFrom('orders').select('number').where('id', '=', renewal.id).executeTakeFirstOrThrow();
    const mail = await eventually(async () => {
      const found = readMails(store.dataDir).filter((m) => m.name.startsWith('renewal_unpaid.') && m.text.includes(number));
      assert.equal(found.length, 1, 'one mail for the unpaid renewal');
      return found[0]!;
    }, 10_000);
    assert.match(mail.head, new RegExp(`^To: ${email}$`, 'mi'));
    assert.match(mail.text, /定期購入の今回分を、ご登録のお支払い方法でお支払いいただけませんでした/);
    assert.match(mail.text, /this renewal is cancelled/);
    assert.ok(mail.text.includes(`${store.url}/inquiry`), mail.text);
  });

  it('a member without a saved token: the renewal is not sent to atone, it waits and an operator is alerted', async () => {
    const box = await product(store, 990, { recurring: 2 });
    await memberBuys(store, customerId, box);
    const sub = await store.rt.ctx.db.selectFrom('subscriptions').selectAll().where('customer_id', '=', customerId).where('interval_months', '=', 2).executeTakeFirstOrThrow();
    await store.rt.ctx.db.deleteFrom('customer_links').where('customer_id', '=', customerId).execute();
    await renewDue(store, sub.id);
    const renewal = (await renewalOf(store, sub.id))!;
    const { order, attempt } = await attemptOf(store, renewal.id);
    assert.deepEqual([order.state, attempt.state, attempt.gateway_ref], ['pending_payment', 'pending', null]);
    const alerts = (await (await admin(store, 'GET', '/alerts')).json()) as { alerts: { kind: string; message: string; ref: string }[] };
    assert.match(alerts.alerts.find((x) => x.kind === 'subscription_unpaid' && x.ref === renewal.id)?.message ?? '', /no saved atone token/);
  });

  it('a basket with a subscription is paid with atone only, and only where the shop takes recurring purchases', async () => {
    const box = await product(store, 1500, { recurring: 1 });
    const other = await checkout(store, [{ sku: box, quantity: 1 }], 'testpay');
    assert.equal(other.status, 400);
    const refused = (await other.json()) as ErrorBody;
    assert.equal(refused.error.problems[0]?.field, 'payment.provider');
    assert.match(refused.error.problems[0]!.reason, /is a subscription.*pay it with atone/);
    assert.equal((await sku(store, box)).reserved, 0, 'no order, no reservation');

    await setShopSettings(store.rt.ctx, 'default', { 'atone.recurring': 'false' });
    const off = (await (await checkout(store, [{ sku: box, quantity: 1 }], 'atone')).json()) as ErrorBody;
    assert.match(off.error.problems[0]?.reason ?? '', /does not take subscriptions \(atone\.recurring is off\)/);
  });

  it('atone takes 1 yen and more: a 0-yen basket is refused for atone, a 1-yen one offered', async () => {
    const free = await product(store, 0);
    const zero = await checkout(store, [{ sku: free, quantity: 1 }], 'atone');
    assert.equal(zero.status, 400);
    assert.match(((await zero.json()) as ErrorBody).error.problems[0]?.reason ?? '', /atone takes orders from 1 yen; this order is 0 yen/);
    const one = await place(store, [{ sku: await product(store, 1), quantity: 1 }]);
    assert.equal(one.payment.type, 'atone');
    assert.equal(one.payment.config!.payment.amount, 1);
  });
});
