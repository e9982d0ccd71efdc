/**
 * Record, answer, apply: a verified notification is stored before the gateway hears OK and applied
 * right after. These tests take the moments in between away — a process killed after answering, a
 * write that fails, a sweep and a read-back racing the applier — and check that every notification
 * the store acknowledged is applied exactly once, and that nothing unacknowledged is kept.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { after, before, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { sql } from 'kysely';
import pg from 'pg';
import { createProduct } from '../../src/commerce/catalog.js';
import { createOrder } from '../../src/commerce/orders.js';
import { sandboxSecret } from '../../src/commerce/shops.js';
import type { PaymentAttempt } from '../../src/db/schema.js';
import { enqueue } from '../../src/jobs/outbox.js';
import { applyFact, applyRecorded, applyRecordedBatch, eventRow } from '../../src/payments/apply-fact.js';
import { sweepInbox } from '../../src/payments/inbox.js';
import type { GatewayFact } from '../../src/payments/provider.js';
import { forEachEngine } from '../helpers/db.js';
import { eventually } from '../helpers/eventually.js';
import { notificationsApplied, sku, startStore, type TestStore } from '../helpers/store.js';

const FIXTURE = fileURLToPath(new URL('../fixtures/notify-and-die.ts', import.meta.url));
const ROOT = fileURLToPath(new URL('../..', import.meta.url));

interface Bought {
  code: string;
  orderId: string;
  attempt: PaymentAttempt;
}

/** An order of a fresh product, paying with testpay; the gateway is not involved (the webhooks are made here). */
async function buy(store: TestStore, price = 1500): Promise<Bought> {
  const { ctx } = store.rt;
  const code = `inbox-${randomBytes(4).toString('hex')}`;
  await createProduct(ctx, 'default', { code, name: `受信箱 ${code}`, kind: 'serial_code', price, stock: 5 });
  const created = await createOrder(ctx, { shop: 'default', customer: { email: 'inbox@example.jp', name: '受信 太郎' }, lines: [{ sku: code, quantity: 1 }], payment: { provider: 'testpay' } });
  const attempt = await ctx.db.selectFrom('payment_attempts').selectAll().where('id', '=', created.attemptId).executeTakeFirstOrThrow();
  return { code, orderId: created.order.id, attempt };
}

/** A `payment.captured` webhook as testpay sends it, signed with the shop's testpay secret. */
function capturedWebhook(store: TestStore, merchantRef: string, amount: number, id = `evt_${randomBytes(10).toString('hex')}`) {
  const body = JSON.stringify({
    id,
    type: 'payment.captured',
    data: { id: `tp_${randomBytes(6).toString('hex')}`, merchant_ref: merchantRef, status: 'captured', amount, captured_amount: amount, refunded_amount: 0, refunds: [] },
  });
  const signature = createHmac('sha256', sandboxSecret(store.rt.ctx.config, 'testpay')).update(body).digest('hex');
  return { id, body, headers: { 'content-type': 'application/json', 'x-testpay-signature': signature } };
}

/** The same news as a fact, as the testpay provider makes it from that webhook. */
function capturedFact(merchantRef: string, amount: number, eventKey: string): GatewayFact {
  return { eventKey, merchantRef, gatewayRef: 'tp_test', fact: { type: 'captured', amount }, payload: { test: true } };
}

/** A refund of part of that payment, as a gateway states it right after the capture (KOMOJU's payment.refund.created). */
function refundedFact(merchantRef: string, amount: number, eventKey: string): GatewayFact {
  return { eventKey, merchantRef, gatewayRef: 'tp_test', fact: { type: 'refunded', amount, refundId: `rf_${eventKey}` }, payload: { test: true } };
}

async function deliver(store: TestStore, hook: { body: string; headers: Record<string, string> }): Promise<Response> {
  return fetch(`${store.url}/webhooks/testpay/default`, { method: 'POST', headers: hook.headers, body: hook.body });
}

async function eventsOf(store: TestStore, eventKey: string) {
  return store.rt.ctx.db.selectFrom('payment_events').selectAll().where('event_key', '=', eventKey).execute();
}

async function orderState(store: TestStore, orderId: string): Promise<string> {
  return (await store.rt.ctx.db.selectFrom('orders').select('state').where('id', '=', orderId).executeTakeFirstOrThrow()).state;
}

/** How often the order moved to paid, and the paid mails queued for it: exactly once each when a payment is applied once. */
async function paidOnce(store: TestStore, b: Bought): Promise<void> {
  const { db } = store.rt.ctx;
  const changes = await db.selectFrom('state_changes').select('to_state').where('entity_id', '=', b.orderId).where('to_state', '=', 'paid').execute();
  assert.equal(changes.length, 1, 'the order moved to paid once');
  const mails = await db.selectFrom('jobs').select('id').where('dedupe_key', '=', `mail:order_paid:${b.orderId}`).execute();
  assert.equal(mails.length, 1, 'one order_paid mail');
  assert.deepEqual(await sku(store, b.code), { on_hand: 4, reserved: 0 }, 'the unit left the shelf once');
  const attempt = await db.selectFrom('payment_attempts').select(['state', 'captured_amount']).where('id', '=', b.attempt.id).executeTakeFirstOrThrow();
  assert.deepEqual(attempt, { state: 'captured', captured_amount: b.attempt.amount });
}

/** Runs the store's notification handler in another process that dies right after answering. */
function notifyAndDie(store: TestStore, hook: { body: string; headers: Record<string, string> }): Promise<{ answer: { status: number; body: string }; signal: string | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', FIXTURE, store.database.url, store.dataDir, store.url], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', reject);
    child.on('exit', (_code, signal) => {
      try {
        resolve({ answer: JSON.parse(stdout.trim()) as { status: number; body: string }, signal, stderr });
      } catch {
        reject(new Error(`the fixture printed no answer (exit signal ${signal}); stderr:\n${stderr}`));
      }
    });
    child.stdin.end(JSON.stringify({ provider: 'testpay', shop: 'default', body: Buffer.from(hook.body).toString('base64'), headers: hook.headers }));
  });
}

forEachEngine('notification inbox (record, answer, apply)', (engine) => {
  let store: TestStore;
  before(async () => {
    store = await startStore(engine);
  });
  after(async () => {
    await store?.close();
  });

  it('a process killed right after answering OK loses nothing: the sweep job applies the recorded notification', async () => {
    const b = await buy(store);
    const hook = capturedWebhook(store, b.attempt.merchant_ref, b.attempt.amount);
    const { answer, signal, stderr } = await notifyAndDie(store, hook);
    assert.equal(signal, 'SIGKILL', stderr);
    assert.deepEqual(answer, { status: 200, body: '{"ok":true}' }, 'the gateway was told OK');

    const [recorded] = await eventsOf(store, hook.id);
    assert.equal(recorded?.outcome, 'received', 'stored before the answer, never applied: the process died');
    assert.equal(recorded.applied_at, null);
    assert.equal(await orderState(store, b.orderId), 'pending_payment');

    // The schedule's job, as a worker runs it (without the grace it gives a live process's applier).
    await enqueue(store.rt.ctx.db, { kind: 'payments.apply-received', payload: { olderThanSeconds: 0 } });
    store.startWorker();
    await eventually(async () => assert.equal(await orderState(store, b.orderId), 'paid'), 10_000);
    const [applied] = await eventsOf(store, hook.id);
    assert.equal(applied?.outcome, 'applied');
    assert.equal(applied.attempt_id, b.attempt.id);
    assert.ok(applied.applied_at && applied.applied_at >= applied.received_at, 'applied.applied_at && applied.applied_at >= applied.received_at');
    await paidOnce(store, b);

    // SBPS-style redelivery of the same notification after the crash: acknowledged, changes nothing.
    const again = await deliver(store, hook);
    assert.equal(again.status, 200);
    await notificationsApplied(store);
    assert.equal((await eventsOf(store, hook.id)).length, 1);
    await paidOnce(store, b);
  });

  it('the same notification delivered ten times at once is recorded once and applied once', async () => {
    const b = await buy(store);
    const hook = capturedWebhook(store, b.attempt.merchant_ref, b.attempt.amount);
    const answers = await Promise.all(Array.from({ length: 10 }, () => deliver(store, hook)));
    assert.deepEqual(answers.map((r) => r.status), Array(10).fill(200), 'each delivery is acknowledged');
    await Promise.all(answers.map((r) => r.arrayBuffer()));
    await notificationsApplied(store);
    assert.deepEqual((await eventsOf(store, hook.id)).map((e) => [e.source, e.outcome]), [['notification', 'applied']]);
    await paidOnce(store, b);
  });

  it('sweeps, the applier and a read-back of the same news racing for recorded events apply each once', async () => {
    const { ctx } = store.rt;
    const bought = await Promise.all(Array.from({ length: 6 }, () => buy(store)));
    // What a process leaves when it recorded and died: rows of the recording itself, still `received`.
    const rows = bought.map((b) => eventRow('default', 'testpay', capturedFact(b.attempt.merchant_ref, b.attempt.amount, `evt_race_${randomBytes(6).toString('hex')}`), 'notification'));
    await ctx.db.insertInto('payment_events').values(rows).execute();

    const [sweeps] = await Promise.all([
      Promise.all([sweepInbox(ctx, 0), sweepInbox(ctx, 0)]),
      ...rows.map((r) => applyRecorded(ctx, r.id, 'skip')),
      applyFact(ctx, 'default', 'testpay', capturedFact(bought[0]!.attempt.merchant_ref, bought[0]!.attempt.amount, rows[0]!.event_key), 'return'),
    ]);
    assert.deepEqual(sweeps.flatMap((s) => s.failed), []);
    for (const b of bought) {
      assert.equal(await orderState(store, b.orderId), 'paid');
      await paidOnce(store, b);
    }
    const outcomes = await ctx.db.selectFrom('payment_events').select('outcome').where('id', 'in', rows.map((r) => r.id)).execute();
    assert.deepEqual(outcomes.map((o) => o.outcome), Array(rows.length).fill('applied'));
    assert.equal((await ctx.db.selectFrom('payment_events').select('id').where('event_key', 'in', rows.map((r) => r.event_key)).execute()).length, rows.length, 'no second row for any key');
  });

  it('a capture and its refund recorded together are applied in that order: the refund never conflicts as if nothing was captured', async () => {
    const { ctx } = store.rt;
    const bought = await Promise.all(Array.from({ length: 8 }, () => buy(store)));
    // One webhook, two facts (KOMOJU states the capture with the refund), for each of a few payments.
    const rows = bought.flatMap((b) => {
      const key = `evt_refund_${randomBytes(6).toString('hex')}`;
      return [
        eventRow('default', 'testpay', capturedFact(b.attempt.merchant_ref, b.attempt.amount, `${key}:captured`), 'notification'),
        eventRow('default', 'testpay', refundedFact(b.attempt.merchant_ref, 500, `${key}:refunded`), 'notification'),
      ];
    });
    await ctx.db.insertInto('payment_events').values(rows).execute();

    const done = await applyRecordedBatch(ctx, rows.map((r) => r.id));
    assert.deepEqual(done.failed, []);
    const outcomes = await ctx.db.selectFrom('payment_events').select(['fact_type', 'outcome', 'note']).where('id', 'in', rows.map((r) => r.id)).execute();
    assert.deepEqual(outcomes.filter((o) => o.outcome !== 'applied'), [], 'every fact applied, none a conflict');
    for (const b of bought) {
      assert.equal(await orderState(store, b.orderId), 'partially_refunded', 'refunded in part, not on hold');
      const attempt = await ctx.db.selectFrom('payment_attempts').select(['state', 'captured_amount', 'refunded_amount']).where('id', '=', b.attempt.id).executeTakeFirstOrThrow();
      assert.deepEqual(attempt, { state: 'partially_refunded', captured_amount: b.attempt.amount, refunded_amount: 500 });
    }
  });

  it('a read-back that finds the same news still recorded applies it now and reports it applied, not "duplicate"', async () => {
    const { ctx } = store.rt;
    const b = await buy(store);
    const key = `${b.attempt.merchant_ref}:captured`;
    const row = eventRow('default', 'testpay', capturedFact(b.attempt.merchant_ref, b.attempt.amount, key), 'notification');
    await ctx.db.insertInto('payment_events').values(row).execute();

    const result = await applyFact(ctx, 'default', 'testpay', capturedFact(b.attempt.merchant_ref, b.attempt.amount, key), 'return');
    assert.equal(result.outcome, 'applied', result.note);
    assert.equal(result.orderState, 'paid', 'the customer on the return page sees the order paid');
    assert.deepEqual((await eventsOf(store, key)).map((e) => [e.id, e.source, e.outcome]), [[row.id, 'notification', 'applied']]);
    await paidOnce(store, b);

    const again = await applyFact(ctx, 'default', 'testpay', capturedFact(b.attempt.merchant_ref, b.attempt.amount, key), 'readback');
    assert.equal(again.outcome, 'duplicate', 'now it is news already applied');
    assert.equal(await applyRecorded(ctx, row.id, 'skip'), undefined, 'and the applier finds nothing left to do');
    await paidOnce(store, b);
  });

  it('a verified notification for an unknown merchant reference is kept and alerts the operator, applied live or by the sweep', async () => {
    const { ctx } = store.rt;
    const live = capturedWebhook(store, 'K000000-NOBODY-1', 1200);
    assert.equal((await deliver(store, live)).status, 200, 'acknowledged, so the gateway stops');
    await notificationsApplied(store);
    const [kept] = await eventsOf(store, live.id);
    assert.equal(kept?.outcome, 'unknown_attempt');
    assert.equal(kept.attempt_id, null);
    assert.deepEqual((await ctx.db.selectFrom('alerts').select('kind').where('ref', '=', kept.id).execute()).map((a) => a.kind), ['unknown_payment']);

    const orphan = eventRow('default', 'testpay', capturedFact('K000000-NOBODY-2', 1200, `evt_orphan_${randomBytes(6).toString('hex')}`), 'notification');
    await ctx.db.insertInto('payment_events').values(orphan).execute();
    const swept = await sweepInbox(ctx, 0);
    assert.deepEqual(swept.failed, []);
    const [left] = await eventsOf(store, orphan.event_key);
    assert.equal(left?.outcome, 'unknown_attempt');
    const alerts = await ctx.db.selectFrom('alerts').select(['kind', 'message']).where('ref', '=', orphan.id).execute();
    assert.equal(alerts.length, 1);
    assert.equal(alerts[0]!.kind, 'unknown_payment');
    assert.match(alerts[0]!.message, /K000000-NOBODY-2/);
  });

  it('a write that fails answers 500 to every notification in it and keeps none; delivered again, each is applied', async () => {
    const { ctx } = store.rt;
    const bought = await Promise.all(Array.from({ length: 3 }, () => buy(store)));
    const hooks = bought.map((b) => capturedWebhook(store, b.attempt.merchant_ref, b.attempt.amount));
    // The database refuses the write (a full disk, a lost connection: here a trigger).
    if (engine === 'sqlite') {
      await sql`create trigger refuse_events before insert on payment_events begin select raise(abort, 'simulated write failure'); end`.execute(ctx.db);
    } else {
      await sql`create function refuse_events() returns trigger language plpgsql as $$ begin raise exception 'simulated write failure'; end $$`.execute(ctx.db);
      await sql`create trigger refuse_events before insert on payment_events for each row execute function refuse_events()`.execute(ctx.db);
    }
    try {
      const refused = await Promise.all(hooks.map((h) => deliver(store, h)));
      assert.deepEqual(refused.map((r) => r.status), [500, 500, 500], 'nothing is acknowledged that is not stored');
      await Promise.all(refused.map((r) => r.arrayBuffer()));
    } finally {
      await sql`drop trigger refuse_events${engine === 'postgres' ? sql` on payment_events` : sql``}`.execute(ctx.db);
      if (engine === 'postgres') await sql`drop function refuse_events()`.execute(ctx.db);
    }
    for (const h of hooks) assert.deepEqual(await eventsOf(store, h.id), []);
    for (const b of bought) assert.equal(await orderState(store, b.orderId), 'pending_payment');

    // The gateway delivers them again, as it does after an error.
    const accepted = await Promise.all(hooks.map((h) => deliver(store, h)));
    assert.deepEqual(accepted.map((r) => r.status), [200, 200, 200]);
    await notificationsApplied(store);
    for (const b of bought) await paidOnce(store, b);
  });
  it(
    'after a burst in which applying was slow, what was recorded is applied as soon as the burst is over',
    { skip: engine === 'sqlite' ? 'needs a second connection holding a row lock without blocking the store (PostgreSQL)' : false },
    async () => {
      const slow = await buy(store);
      const rest = await Promise.all(Array.from({ length: 12 }, () => buy(store)));
      // Another session holds the first order's row: applying its notification waits on the lock.
      const blocker = new pg.Client({ connectionString: store.database.url });
      await blocker.connect();
      try {
        await blocker.query('begin');
        await blocker.query('select id from orders where id = $1 for update', [slow.orderId]);
        assert.equal((await deliver(store, capturedWebhook(store, slow.attempt.merchant_ref, slow.attempt.amount))).status, 200);
        await new Promise((resolve) => setTimeout(resolve, 1500));
        // Notifications keep arriving while the lock goes: the slow batch ends in the middle of a
        // burst, which is when the applier holds back for nine times the batch's length.
        const deliveries = rest.map(async (b, i) => {
          await new Promise((resolve) => setTimeout(resolve, i * 15));
          if (i === 4) await blocker.query('commit');
          const res = await deliver(store, capturedWebhook(store, b.attempt.merchant_ref, b.attempt.amount));
          assert.equal(res.status, 200);
        });
        await Promise.all(deliveries);
      } finally {
        await blocker.end();
      }
      // The burst is over: everything is applied within a few seconds, not after a 13-second rest.
      await notificationsApplied(store, 5000);
      for (const b of [slow, ...rest]) assert.equal(await orderState(store, b.orderId), 'paid');
    },
  );
  it(
    'a notification whose application PostgreSQL picks as a deadlock victim is applied again at once, not left for the sweep',
    { skip: engine === 'sqlite' ? 'SQLite has one writer and no deadlocks' : false },
    async () => {
      const b = await buy(store);
      const skuId = (await store.rt.ctx.db.selectFrom('skus').select('id').where('code', '=', b.code).executeTakeFirstOrThrow()).id;
      const other = new pg.Client({ connectionString: store.database.url });
      await other.connect();
      try {
        // This session holds the SKU's row and waits long before looking for deadlocks, so the
        // store's transaction (1 s, the default) is the one PostgreSQL rolls back.
        await other.query('begin');
        await other.query("set local deadlock_timeout = '20s'");
        await other.query('select id from skus where id = $1 for update', [skuId]);
        assert.equal((await deliver(store, capturedWebhook(store, b.attempt.merchant_ref, b.attempt.amount))).status, 200);
        // The store's transaction has locked the order and now waits for the SKU.
        await eventually(async () => {
          const { rows } = await other.query("select count(*)::int as n from pg_stat_activity where wait_event_type = 'Lock' and pid <> pg_backend_pid() and datname = current_database()");
          assert.equal(rows[0].n, 1);
        }, 5000);
        // Now this session wants the order: a cycle. The store's side is rolled back after 1 s.
        await other.query('select id from orders where id = $1 for update', [b.orderId]);
        await other.query('commit');
      } finally {
        await other.end();
      }
      // Applied again right away (the sweep would take a minute or more).
      await notificationsApplied(store, 5000);
      assert.equal(await orderState(store, b.orderId), 'paid');
      await paidOnce(store, b);
    },
  );
});
