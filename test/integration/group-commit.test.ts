/**
 * Concurrent transactions on SQLite share one commit (src/db/index.ts, GroupCommitDriver). These
 * tests hold the promises that makes: each transaction is all-or-nothing and a failing one takes
 * only itself back; nobody is answered before the commit that holds their work; a commit that fails
 * or a process that dies mid-group leaves none of the group behind. The checkout cases run on both
 * engines (PostgreSQL commits each transaction on its own, and must keep the same contract).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { sql } from 'kysely';
import { createProduct } from '../../src/commerce/catalog.js';
import { createOrder, type OrderInput } from '../../src/commerce/orders.js';
import { createShop } from '../../src/commerce/shops.js';
import type { Context } from '../../src/context.js';
import { KessaiError } from '../../src/errors.js';
import { ENGINES, forEachEngine, useTestDatabase } from '../helpers/db.js';

const FIXTURE = fileURLToPath(new URL('../fixtures/group-commit-crash.ts', import.meta.url));
const ROOT = fileURLToPath(new URL('../..', import.meta.url));

type Rows = { group_rows: { id: string } };

const buyer = (shop: string, sku: string, quantity = 1): OrderInput => ({
  shop,
  customer: { email: 'hanako@example.jp', name: '佐藤 花子' },
  shippingAddress: { name: '佐藤 花子', postcode: '100-0001', prefecture: '東京都', city: '千代田区', line1: '千代田1-1', phone: '03-1234-5678' },
  lines: [{ sku, quantity }],
  payment: { provider: 'testpay', method: 'card' },
});

async function count(ctx: Context, table: 'orders' | 'customers' | 'reservations' | 'payment_attempts' | 'jobs' | 'state_changes', shop?: string): Promise<number> {
  let q = ctx.db.selectFrom(table).select((eb) => eb.fn.countAll<number>().as('n'));
  if (shop && table !== 'jobs' && table !== 'state_changes') q = q.where('shop_id', '=', shop);
  return Number((await q.executeTakeFirstOrThrow()).n);
}

forEachEngine('concurrent checkouts', (engine) => {
  const t = useTestDatabase(engine);
  const context = (): Context => t.context();

  it('each gets its own outcome when some run out of stock or fail validation in the same burst', async () => {
    const ctx = context();
    await createShop(ctx, { id: 'burst', name: 'burst shop' });
    await createProduct(ctx, 'burst', { code: 'last-five', name: '限定盤', kind: 'physical', price: 3300, stock: 5 });
    const inputs: unknown[] = [
      ...Array.from({ length: 9 }, () => buyer('burst', 'last-five')),
      buyer('burst', 'no-such-sku'),
      { ...buyer('burst', 'last-five'), shippingAddress: undefined },
      buyer('burst', 'last-five', 2),
      ...Array.from({ length: 3 }, () => buyer('burst', 'last-five')),
    ];
    const outcomes = await Promise.allSettled(inputs.map((input) => createOrder(ctx, input)));
    const code = (o: PromiseSettledResult<unknown>) => (o.status === 'fulfilled' ? 'created' : o.reason instanceof KessaiError ? o.reason.code : String(o.reason));

    // Stock decides who gets the 5 units, in the order the checkouts ran; the invalid ones name their own field.
    assert.equal(code(outcomes[9]!), 'invalid_input');
    assert.match(JSON.stringify((outcomes[9] as PromiseRejectedResult).reason.problems), /lines\.0\.sku/);
    assert.equal(code(outcomes[10]!), 'invalid_input');
    assert.match(JSON.stringify((outcomes[10] as PromiseRejectedResult).reason.problems), /shippingAddress/);
    const created = outcomes.filter((o) => o.status === 'fulfilled');
    const units = outcomes.reduce((sum, o, i) => sum + (o.status === 'fulfilled' ? ((inputs[i] as OrderInput).lines[0]!.quantity) : 0), 0);
    assert.equal(units, 5);
    for (const [i, o] of outcomes.entries()) {
      if (i === 9 || i === 10) continue;
      assert.ok(['created', 'out_of_stock'].includes(code(o)), `checkout ${i}: ${code(o)}`);
    }

    // Exactly the created orders exist, each whole; the refused ones left nothing behind.
    const sku = await ctx.db.selectFrom('skus').select(['reserved', 'on_hand']).where('shop_id', '=', 'burst').executeTakeFirstOrThrow();
    assert.deepEqual(sku, { reserved: 5, on_hand: 5 });
    assert.equal(await count(ctx, 'orders', 'burst'), created.length);
    assert.equal(await count(ctx, 'customers', 'burst'), created.length);
    assert.equal(await count(ctx, 'payment_attempts', 'burst'), created.length);
    for (const o of created) {
      const { order, attemptId } = (o as PromiseFulfilledResult<Awaited<ReturnType<typeof createOrder>>>).value;
      const stored = await ctx.db.selectFrom('orders').select(['state', 'current_attempt_id']).where('id', '=', order.id).executeTakeFirstOrThrow();
      assert.deepEqual(stored, { state: 'pending_payment', current_attempt_id: attemptId });
      const held = await ctx.db.selectFrom('reservations').select('quantity').where('order_id', '=', order.id).execute();
      assert.equal(held.length, 1);
    }
    const orderIds = created.map((o) => (o as PromiseFulfilledResult<Awaited<ReturnType<typeof createOrder>>>).value.order.id);
    const changes = await ctx.db.selectFrom('state_changes').select('entity_id').where('entity', '=', 'order').where('entity_id', 'in', orderIds).execute();
    assert.equal(changes.length, created.length);
  });

  it('a transaction that throws midway takes back only its own rows; the others commit', async () => {
    await sql`create table group_rows (id text primary key)`.execute(t.db);
    const rows = t.db.withTables<Rows>();
    const boom = new Error('the caller changed its mind');
    const run = (id: string, fail = false) =>
      rows.transaction().execute(async (tx) => {
        await tx.insertInto('group_rows').values({ id }).execute();
        if (id === 'a') await nextTurn(); // the others queue behind the first
        if (fail) throw boom;
        return id;
      });
    const outcomes = await Promise.allSettled([run('a'), run('b'), run('c', true), run('d')]);
    assert.deepEqual(outcomes.map((o) => (o.status === 'fulfilled' ? o.value : o.reason)), ['a', 'b', boom, 'd']);
    const stored = await rows.selectFrom('group_rows').select('id').orderBy('id').execute();
    assert.deepEqual(stored.map((r) => r.id), ['a', 'b', 'd']);
    await sql`drop table group_rows`.execute(t.db);
  });
});

describe('group commit [sqlite]', { skip: !ENGINES.includes('sqlite') }, () => {
  const t = useTestDatabase('sqlite', { migrate: false });

  it('when SQLite abandons the transaction, the others finished in it are told they did not commit', async () => {
    await sql`create table group_rows (id text primary key)`.execute(t.db);
    const rows = t.db.withTables<Rows>();
    const run = (id: string, then?: (tx: Parameters<Parameters<ReturnType<typeof rows.transaction>['execute']>[0]>[0]) => Promise<unknown>) =>
      rows.transaction().execute(async (tx) => {
        await tx.insertInto('group_rows').values({ id }).execute();
        await then?.(tx);
        return id;
      });
    // `rollback` stands in for what SQLite does itself after a disk-full or I/O error: the whole
    // transaction ends, including the work of the members that finished before.
    const outcomes = await Promise.allSettled([run('a', () => nextTurn()), run('b'), run('c', (tx) => sql`rollback`.execute(tx))]);
    assert.deepEqual(outcomes.map((o) => o.status), ['rejected', 'rejected', 'rejected']);
    assert.match(String((outcomes[0] as PromiseRejectedResult).reason), /rolled back with the others/);
    assert.deepEqual(await rows.selectFrom('group_rows').select('id').execute(), []);

    // The next transactions run and commit as usual.
    assert.deepEqual(await Promise.all([run('d'), run('e')]), ['d', 'e']);
    assert.deepEqual((await rows.selectFrom('group_rows').select('id').orderBy('id').execute()).map((r) => r.id), ['d', 'e']);
  });

  it('when the COMMIT fails, every member gets the error and nothing of the group is stored', async () => {
    // A deferred foreign key is checked at COMMIT: a member that breaks it makes the COMMIT fail.
    await sql`create table group_parents (id text primary key)`.execute(t.db);
    await sql`create table group_children (id text primary key, parent text references group_parents (id) deferrable initially deferred)`.execute(t.db);
    const db = t.db.withTables<{ group_parents: { id: string }; group_children: { id: string; parent: string } }>();
    const outcomes = await Promise.allSettled([
      db.transaction().execute(async (tx) => {
        await tx.insertInto('group_parents').values({ id: 'p1' }).execute();
        await nextTurn();
      }),
      db.transaction().execute((tx) => tx.insertInto('group_children').values({ id: 'orphan', parent: 'missing' }).execute()),
    ]);
    for (const o of outcomes) {
      assert.equal(o.status, 'rejected');
      assert.match(String(o.reason), /FOREIGN KEY constraint failed/);
    }
    assert.deepEqual(await db.selectFrom('group_parents').select('id').execute(), []);
    assert.deepEqual(await db.selectFrom('group_children').select('id').execute(), []);
    await db.insertInto('group_parents').values({ id: 'p2' }).execute();
    assert.deepEqual(await db.selectFrom('group_parents').select('id').execute(), [{ id: 'p2' }]);
  });

  it('a member that fails after changing rows is undone alone: what the others changed is kept exactly, each once', async () => {
    await sql`create table group_counters (id text primary key, n integer not null)`.execute(t.db);
    await sql`create table group_log (id integer primary key, k integer not null)`.execute(t.db);
    await sql`insert into group_counters values ('c', 0)`.execute(t.db);
    const boom = new Error('the caller changed its mind');
    const add = (k: number, fail = false) =>
      t.db.transaction().execute(async (tx) => {
        await sql`update group_counters set n = n + ${k} where id = 'c'`.execute(tx);
        const logged = await sql<{ id: number }>`insert into group_log (k) values (${k}) returning id`.execute(tx);
        if (k === 1) await nextTurn(); // the others queue behind the first
        if (fail) throw boom;
        return `${k}@${logged.rows[0]!.id}`;
      });
    const outcomes = await Promise.allSettled([add(1), add(2), add(4, true), add(8), add(16, true), add(32)]);
    // Each caller saw its own row id; the failed ones' rows are gone and the later ones' ids were kept.
    assert.deepEqual(outcomes.map((o) => (o.status === 'fulfilled' ? o.value : o.reason)), ['1@1', '2@2', boom, '8@3', boom, '32@4']);
    const { n } = (await sql<{ n: number }>`select n from group_counters`.execute(t.db)).rows[0]!;
    assert.equal(n, 1 + 2 + 8 + 32);
    assert.deepEqual((await sql<{ id: number; k: number }>`select id, k from group_log order by id`.execute(t.db)).rows, [
      { id: 1, k: 1 },
      { id: 2, k: 2 },
      { id: 3, k: 8 },
      { id: 4, k: 32 },
    ]);
  });

  it('a member that fails before changing anything undoes nothing; one whose work cannot be repeated exactly fails the group', async () => {
    await sql`create table if not exists group_rows (id text primary key)`.execute(t.db);
    await sql`delete from group_rows`.execute(t.db);
    const rows = t.db.withTables<Rows>();
    const boom = new Error('out of stock');
    // A random id, read back: run a second time it would answer something else.
    const random = () => rows.transaction().execute(async (tx) => (await sql<{ id: string }>`insert into group_rows (id) values (lower(hex(randomblob(8)))) returning id`.execute(tx)).rows[0]!.id);
    const first = () => rows.transaction().execute(async (tx) => {
      await tx.insertInto('group_rows').values({ id: 'first' }).execute();
      await nextTurn();
      return 'first';
    });
    // Fails after an UPDATE that matched no row (the checkout's "not enough stock"): nothing to undo.
    const clean = () => rows.transaction().execute(async (tx) => {
      await sql`update group_rows set id = 'never' where id = 'missing'`.execute(tx);
      throw boom;
    });
    const cleanRun = await Promise.allSettled([first(), random(), clean()]);
    assert.deepEqual(cleanRun.map((o) => o.status), ['fulfilled', 'fulfilled', 'rejected']);
    assert.equal((cleanRun[2] as PromiseRejectedResult).reason, boom);
    const randomId = (cleanRun[1] as PromiseFulfilledResult<string>).value;
    assert.deepEqual((await rows.selectFrom('group_rows').select('id').orderBy('id').execute()).map((r) => r.id), [randomId, 'first'].sort());

    // Fails after writing: the random member's insert would have to run again and answer the same id.
    await sql`delete from group_rows`.execute(t.db);
    const dirty = () => rows.transaction().execute(async (tx) => {
      await tx.insertInto('group_rows').values({ id: 'dirty' }).execute();
      throw boom;
    });
    const dirtyRun = await Promise.allSettled([first(), random(), dirty()]);
    assert.deepEqual(dirtyRun.map((o) => o.status), ['rejected', 'rejected', 'rejected']);
    assert.match(String((dirtyRun[1] as PromiseRejectedResult).reason), /rolled back with the others[\s\S]*could not be repeated exactly/);
    assert.equal((dirtyRun[2] as PromiseRejectedResult).reason, boom);
    assert.deepEqual(await rows.selectFrom('group_rows').select('id').execute(), []);
    assert.deepEqual(await Promise.all([first(), random().then(() => 'random')]), ['first', 'random'], 'the next group commits as usual');
  });

  it('a failed member\'s trigger writes go too, though its own statement changed no row', async () => {
    await sql`create table group_items (id text primary key)`.execute(t.db);
    await sql`create table group_audit (item text not null)`.execute(t.db);
    await sql`create trigger group_items_audit before insert on group_items begin insert into group_audit values (new.id); end`.execute(t.db);
    await sql`insert into group_items values ('taken')`.execute(t.db);
    const boom = new Error('changed its mind');
    const add = (id: string, fail = false) =>
      t.db.transaction().execute(async (tx) => {
        // A duplicate is skipped (0 rows changed), but the trigger has written its audit row already.
        const r = await sql`insert or ignore into group_items values (${id})`.execute(tx);
        if (id === 'a') await nextTurn();
        if (fail) throw boom;
        return Number(r.numAffectedRows);
      });
    const outcomes = await Promise.allSettled([add('a'), add('taken', true), add('b')]);
    assert.deepEqual(outcomes.map((o) => (o.status === 'fulfilled' ? o.value : o.reason)), [1, boom, 1]);
    const audit = (await sql<{ item: string }>`select item from group_audit order by item`.execute(t.db)).rows.map((r) => r.item);
    assert.deepEqual(audit, ['a', 'b', 'taken'], 'one audit row per insert that stayed (the first "taken" is the setup\'s)');
  });

  it('a transaction of thousands of statements commits; in a group that must be redone, it is reported as not committed', async () => {
    await sql`create table if not exists group_rows (id text primary key)`.execute(t.db);
    await sql`delete from group_rows`.execute(t.db);
    const rows = t.db.withTables<Rows>();
    const bulk = (prefix: string, pause = false) =>
      rows.transaction().execute(async (tx) => {
        for (let i = 0; i < 2500; i++) await tx.insertInto('group_rows').values({ id: `${prefix}-${i}` }).execute();
        if (pause) await nextTurn();
        return prefix;
      });
    assert.equal(await bulk('alone'), 'alone');
    const first = () => rows.transaction().execute(async (tx) => {
      await tx.insertInto('group_rows').values({ id: 'first' }).execute();
      await nextTurn();
    });
    const failing = () => rows.transaction().execute(async (tx) => {
      await tx.insertInto('group_rows').values({ id: 'failing' }).execute();
      throw new Error('changed its mind');
    });
    const outcomes = await Promise.allSettled([first(), bulk('grouped'), failing()]);
    assert.deepEqual(outcomes.map((o) => o.status), ['rejected', 'rejected', 'rejected']);
    assert.match(String((outcomes[1] as PromiseRejectedResult).reason), /could not be repeated exactly/);
    const count = (await sql<{ n: number }>`select count(*) as n from group_rows`.execute(t.db)).rows[0]!.n;
    assert.equal(count, 2500, 'only the lone bulk transaction');
  });

  it('a process killed inside a group loses nothing it answered and keeps nothing of the open group', async () => {
    await sql`create table if not exists group_rows (id text primary key)`.execute(t.db);
    await sql`delete from group_rows`.execute(t.db);
    const child = spawn(process.execPath, ['--import', 'tsx', FIXTURE, t.url], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const [, signal] = (await once(child, 'exit')) as [number | null, NodeJS.Signals | null];
    assert.equal(signal, 'SIGKILL', output);

    const answered = [...output.matchAll(/^answered (\S+)$/gm)].map((m) => m[1]);
    assert.deepEqual(answered, ['before-1', 'before-2', 'before-3']);
    const stored = await t.db.withTables<Rows>().selectFrom('group_rows').select('id').orderBy('id').execute();
    assert.deepEqual(stored.map((r) => r.id), ['before-1', 'before-2', 'before-3']);
  });
});
