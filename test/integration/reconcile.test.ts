import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';
import { createOrder } from '../../src/commerce/orders.js';
import { sandboxSecret } from '../../src/commerce/shops.js';
import { insertRows } from '../../src/db/insert.js';
import { newId, nowIso } from '../../src/ids.js';
import { enqueue } from '../../src/jobs/outbox.js';
import { forEachEngine } from '../helpers/db.js';
import { eventually } from '../helpers/eventually.js';
import { startStore, type TestStore } from '../helpers/store.js';

/*
 * Reconciliation (DESIGN.md rule 5): a payment whose notification never arrived is found by the
 * schedule and read back from the gateway, so "paid at the gateway, not delivered by the store"
 * does not stay that way.
 */

async function faults(store: TestStore, body: Record<string, string>): Promise<void> {
  const res = await fetch(`${store.url}/sandbox/testpay/api/faults`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${sandboxSecret(store.rt.ctx.config, 'testpay')}` },
    body: JSON.stringify(body),
  });
  assert.equal(res.status, 200);
}

forEachEngine('reconciliation', (engine) => {
  let store: TestStore;
  before(async () => {
    store = await startStore(engine);
  });
  after(async () => {
    await store.close();
  });

  it('finds a payment whose notification was lost and applies what the gateway says', async () => {
    await faults(store, { webhooks: 'drop' });
    const res = await fetch(`${store.url}/api/checkout`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ shop: 'default', customer: { email: 'k@example.jp', name: '佐藤' }, lines: [{ sku: 'demo-ticket', quantity: 1 }], payment: { provider: 'testpay' } }),
    });
    const body = (await res.json()) as { order: { number: string }; payment: { url: string } };
    assert.equal(res.status, 201);
    const paid = await fetch(`${body.payment.url}/card`, { method: 'POST', redirect: 'manual' });
    assert.equal(paid.status, 303);
    const { db } = store.rt.ctx;
    const order = await db.selectFrom('orders').selectAll().where('number', '=', body.order.number).executeTakeFirstOrThrow();
    assert.equal(order.state, 'pending_payment', 'the notification was dropped: the store does not know yet');

    // The attempt has sat unfinished for 20 minutes when the schedule runs.
    await db.updateTable('payment_attempts').set({ updated_at: nowIso(new Date(Date.now() - 20 * 60_000)) }).where('order_id', '=', order.id).execute();
    await enqueue(db, { kind: 'payments.reconcile', payload: {} });
    store.startWorker();
    await eventually(async () => {
      const now = await db.selectFrom('orders').select('state').where('id', '=', order.id).executeTakeFirstOrThrow();
      assert.equal(now.state, 'paid');
    }, 10_000);
    const events = await db.selectFrom('payment_events').select(['source', 'outcome']).where('attempt_id', '=', order.current_attempt_id).execute();
    assert.deepEqual(events, [{ source: 'readback', outcome: 'applied' }]);
    await faults(store, { webhooks: 'deliver' });
  });

  it('reads back a konbini payment still awaited, however many abandoned attempts sit unfinished before it', async () => {
    const { ctx } = store.rt;
    const { db } = ctx;
    const checkout = (method: string) =>
      createOrder(ctx, { shop: 'default', customer: { email: 'konbini@example.jp', name: '鈴木' }, lines: [{ sku: 'demo-ticket', quantity: 1 }], payment: { provider: 'testpay', method } });
    const minutesAgo = (m: number) => nowIso(new Date(Date.now() - m * 60_000));

    // The customer chose konbini 20 minutes ago and has not paid yet; the gateway's news was lost.
    const awaited = await checkout('konbini');
    await db.updateTable('orders').set({ state: 'awaiting_payment' }).where('id', '=', awaited.order.id).execute();
    await db.updateTable('payment_attempts').set({ state: 'awaiting_payment', updated_at: minutesAgo(20) }).where('id', '=', awaited.attemptId).execute();
    // An order left to expire, its attempt never finished.
    const lapsed = await checkout('card');
    await db.updateTable('orders').set({ state: 'expired' }).where('id', '=', lapsed.order.id).execute();
    await db.updateTable('payment_attempts').set({ updated_at: minutesAgo(3 * 24 * 60) }).where('id', '=', lapsed.attemptId).execute();

    // Older still: 600 attempts abandoned for another one, of both orders; asking about them never changes them.
    const template = await db.selectFrom('payment_attempts').selectAll().where('id', '=', lapsed.attemptId).executeTakeFirstOrThrow();
    const abandoned = Array.from({ length: 600 }, (_, i) => ({
      ...template,
      id: newId('pay'),
      order_id: i % 2 === 0 ? awaited.order.id : lapsed.order.id,
      merchant_ref: `${template.merchant_ref}-abandoned-${i}`,
      state: 'pending',
      created_at: minutesAgo(2 * 24 * 60),
      updated_at: minutesAgo(2 * 24 * 60),
    }));
    for (let i = 0; i < abandoned.length; i += 100) await insertRows(db, 'payment_attempts', abandoned.slice(i, i + 100));

    await store.rt.jobs.get('payments.reconcile')!.run({}, { ctx, jobId: 'by-hand', attempt: 1, signal: new AbortController().signal, log: ctx.log });

    const ours = new Set([awaited.attemptId, lapsed.attemptId, ...abandoned.map((a) => a.id)]);
    const readBacks = await db.selectFrom('jobs').select('payload').where('kind', '=', 'payment.readback').execute();
    const asked = readBacks.map((j) => (JSON.parse(j.payload) as { attemptId: string }).attemptId).filter((id) => ours.has(id));
    assert.deepEqual(asked, [awaited.attemptId], 'the konbini payment is asked about, nothing that cannot change');
  });

  it('a payment held as captured that the gateway does not show captured puts the order on hold; a real one stays paid', async () => {
    const { ctx } = store.rt;
    const { db } = ctx;
    const run = (kind: string, payload: unknown) => store.rt.jobs.get(kind)!.run(payload, { ctx, jobId: 'by-hand', attempt: 1, signal: new AbortController().signal, log: ctx.log });
    const hourAgo = nowIso(new Date(Date.now() - 70 * 60_000));
    /** An order through the API, and the customer's choice on the gateway's page. */
    const placeAndPress = async (choice: 'card' | 'konbini') => {
      const placed = await fetch(`${store.url}/api/checkout`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ shop: 'default', customer: { email: 'check@example.jp', name: '高橋' }, lines: [{ sku: 'demo-ticket', quantity: 1 }], payment: { provider: 'testpay' } }),
      });
      const body = (await placed.json()) as { order: { number: string }; payment: { url: string } };
      const res = await fetch(`${body.payment.url}/${choice}`, { method: 'POST', redirect: 'manual' });
      await res.arrayBuffer();
      const order = await db.selectFrom('orders').select(['id', 'total', 'current_attempt_id']).where('number', '=', body.order.number).executeTakeFirstOrThrow();
      await eventually(async () => assert.equal((await db.selectFrom('orders').select('state').where('id', '=', order.id).executeTakeFirstOrThrow()).state, choice === 'card' ? 'paid' : 'awaiting_payment'), 10_000);
      return { order, attemptId: order.current_attempt_id! };
    };

    // The store believes this one paid (say, a shop set to capture automatically while its contract
    // only authorises), but at the gateway the customer still holds an unpaid konbini slip.
    const unpaid = await placeAndPress('konbini');
    await db.updateTable('orders').set({ state: 'paid' }).where('id', '=', unpaid.order.id).execute();
    await db.updateTable('payment_attempts').set({ state: 'captured', captured_amount: unpaid.order.total, updated_at: hourAgo }).where('id', '=', unpaid.attemptId).execute();
    // This one was really paid.
    const paid = await placeAndPress('card');
    await db.updateTable('payment_attempts').set({ updated_at: hourAgo }).where('id', '=', paid.attemptId).execute();

    await run('payments.reconcile', {});
    const checks = await db.selectFrom('jobs').select('payload').where('kind', '=', 'payment.check-paid').execute();
    const checked = checks.map((j) => (JSON.parse(j.payload) as { attemptId: string }).attemptId);
    assert.ok(checked.includes(unpaid.attemptId) && checked.includes(paid.attemptId), 'both settled payments are checked once');

    store.startWorker();
    const checkDone = async (attemptId: string) => {
      const jobs = await db.selectFrom('jobs').select(['state', 'payload']).where('kind', '=', 'payment.check-paid').execute();
      const mine = jobs.filter((j) => (JSON.parse(j.payload) as { attemptId: string }).attemptId === attemptId);
      assert.deepEqual(mine.map((j) => j.state), ['done']);
    };
    await eventually(() => checkDone(unpaid.attemptId), 10_000);
    await eventually(() => checkDone(paid.attemptId), 10_000);
    const held = await db.selectFrom('orders').select(['state', 'hold_reason']).where('id', '=', unpaid.order.id).executeTakeFirstOrThrow();
    assert.equal(held.state, 'on_hold');
    assert.match(held.hold_reason ?? '', /testpay does not show payment .* as captured \(it says: awaiting_payment\)/);
    // Checked again (a rerun of the job): the order is already a person's to look at, nothing is added.
    await run('payment.check-paid', { attemptId: unpaid.attemptId });
    const alerts = await db.selectFrom('alerts').select('kind').where('ref', '=', unpaid.order.id).execute();
    assert.deepEqual(alerts.map((a) => a.kind), ['order_on_hold']);

    assert.equal((await db.selectFrom('orders').select('state').where('id', '=', paid.order.id).executeTakeFirstOrThrow()).state, 'paid');
    assert.deepEqual(await db.selectFrom('alerts').select('kind').where('ref', '=', paid.order.id).execute(), []);
  });
});
