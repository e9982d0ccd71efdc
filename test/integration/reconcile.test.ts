import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';
import { sandboxSecret } from '../../src/commerce/shops.js';
import { nowIso } from '../../src/ids.js';
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
});
