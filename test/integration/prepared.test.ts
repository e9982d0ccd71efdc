/**
 * Queries whose SQL is built once (src/db/prepared.ts), on both engines: each call binds its own
 * values (also a value used twice, and a list whose length picks the shape), a constant written in
 * the query stays in it, and a query that would write a value into its SQL text, or a value that
 * cannot be bound as it is, is refused before anything runs.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { sql } from 'kysely';
import { createProduct } from '../../src/commerce/catalog.js';
import { createShop } from '../../src/commerce/shops.js';
import { prepared } from '../../src/db/prepared.js';
import { forEachEngine, useTestDatabase } from '../helpers/db.js';

const skusOf = prepared('test skus', (db, p: { shop: string; codes: readonly string[] }) =>
  db.selectFrom('skus').select(['code', 'price']).where('shop_id', '=', p.shop).where('code', 'in', p.codes).where('price', '>', 0).orderBy('code'),
);

const take = prepared('test take', (db, p: { code: string; quantity: number }) =>
  db
    .updateTable('skus')
    .set({ reserved: sql`reserved + ${p.quantity}` })
    .where('code', '=', p.code)
    .where(sql<boolean>`on_hand - reserved >= ${p.quantity}`),
);

forEachEngine('queries built once (prepared)', (engine) => {
  const t = useTestDatabase(engine);

  it('binds each call\'s own values, a list of any length, and a value used twice', async () => {
    const ctx = t.context();
    await createShop(ctx, { id: 'prep', name: 'prepared shop' });
    for (const [code, price] of [['a', 100], ['b', 200], ['c', 300]] as const) {
      await createProduct(ctx, 'prep', { code: `prep-${code}`, name: `商品 ${code}`, kind: 'physical', price, stock: 5 });
    }
    const codes = async (list: string[]) => (await skusOf(t.db, { shop: 'prep', codes: list })).rows.map((r) => `${r.code}:${r.price}`);
    assert.deepEqual(await codes(['prep-a']), ['prep-a:100']);
    assert.deepEqual(await codes(['prep-b']), ['prep-b:200'], 'the same shape with another value');
    assert.deepEqual(await codes(['prep-c', 'prep-a', 'nope']), ['prep-a:100', 'prep-c:300'], 'a longer list');
    assert.deepEqual((await skusOf(t.db, { shop: 'other', codes: ['prep-a'] })).rows, []);

    assert.equal(Number((await take(t.db, { code: 'prep-a', quantity: 3 })).numAffectedRows), 1);
    assert.equal(Number((await take(t.db, { code: 'prep-a', quantity: 3 })).numAffectedRows), 0, 'only 2 left: the condition binds the same value');
    assert.equal(Number((await take(t.db, { code: 'prep-a', quantity: 2 })).numAffectedRows), 1);
    const row = await t.db.selectFrom('skus').select(['reserved', 'on_hand']).where('code', '=', 'prep-a').executeTakeFirstOrThrow();
    assert.deepEqual(row, { reserved: 5, on_hand: 5 });
  });

  it('refuses a query that writes a value into its SQL, and a value it cannot bind, running nothing', async () => {
    const literal = prepared('test literal', (db, p: { code: string }) => db.selectFrom('skus').select('code').where('code', '=', sql.lit(p.code)));
    await assert.rejects(literal(t.db, { code: 'x' }), /prepared\(test literal\): every parameter must be bound/);
    await assert.rejects(take(t.db, { code: 'prep-b', quantity: { n: 1 } as unknown as number }), /prepared\(test take\): parameter quantity is not a plain value/);
    const row = await t.db.selectFrom('skus').select('reserved').where('code', '=', 'prep-b').executeTakeFirstOrThrow();
    assert.equal(row.reserved, 0);
  });
});
