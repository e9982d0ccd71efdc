/**
 * Plain inserts run SQL built once per table and column list (src/db/insert.ts). What the callers
 * rely on, on both engines: the rows land with exactly the values given (also when the same shape
 * is reused with other values, and with several rows), a column left undefined takes its default,
 * a duplicate of `skipDuplicateOf` is skipped — answered 0, not an error, so the transaction can
 * carry on (PostgreSQL aborts a transaction after a failed statement) — and anything else unique
 * still fails loudly. (The checkout draws a fresh order number exactly this way when the one it drew
 * is taken.)
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { createShop } from '../../src/commerce/shops.js';
import type { Context } from '../../src/context.js';
import { insertRow, insertRows } from '../../src/db/insert.js';
import { forEachEngine, useTestDatabase } from '../helpers/db.js';

forEachEngine('plain inserts (insertRow, insertRows)', (engine) => {
  const t = useTestDatabase(engine);
  const context = (): Context => t.context();
  const at = '2026-11-24T00:00:00.000Z';

  it('writes exactly the values given, each time the same shape is reused, and leaves undefined columns to their default', async () => {
    await createShop(context(), { id: 'ins', name: 'insert shop' });
    for (const [i, kind] of (['order_on_hold', 'unknown_payment', 'job_dead'] as const).entries()) {
      assert.equal(await insertRow(t.db, 'alerts', { id: `alr_ins_${i}`, kind, message: `メッセージ ${i}`, ref: i === 1 ? null : `ref-${i}`, created_at: at, resolved_at: null }), 1);
    }
    const alerts = await t.db.selectFrom('alerts').select(['id', 'kind', 'message', 'ref']).where('id', 'like', 'alr_ins_%').orderBy('id').execute();
    assert.deepEqual(alerts, [
      { id: 'alr_ins_0', kind: 'order_on_hold', message: 'メッセージ 0', ref: 'ref-0' },
      { id: 'alr_ins_1', kind: 'unknown_payment', message: 'メッセージ 1', ref: null },
      { id: 'alr_ins_2', kind: 'job_dead', message: 'メッセージ 2', ref: 'ref-2' },
    ]);

    const written = await insertRows(t.db, 'jobs', [1, 2, 3].map((n) => ({ id: `job_ins_${n}`, kind: 'test.echo', dedupe_key: undefined, payload: JSON.stringify({ n }), state: 'done' as const, attempts: n, run_at: at, created_at: at, updated_at: at })));
    assert.equal(written, 3);
    const jobs = await t.db.selectFrom('jobs').select(['id', 'payload', 'attempts', 'dedupe_key']).where('id', 'like', 'job_ins_%').orderBy('id').execute();
    // `dedupe_key` was left undefined: the column's default (NULL) applies.
    assert.deepEqual(jobs, [1, 2, 3].map((n) => ({ id: `job_ins_${n}`, payload: JSON.stringify({ n }), attempts: n, dedupe_key: null })));
  });

  it('skips a duplicate of skipDuplicateOf inside a transaction that then commits the rest; another unique column still fails', async () => {
    const job = (id: string, key: string) => ({ id, kind: 'test.echo', dedupe_key: key, payload: '{}', state: 'pending' as const, attempts: 0, run_at: at, created_at: at, updated_at: at });
    const counts = await t.db.transaction().execute(async (tx) => [
      await insertRow(tx, 'jobs', job('job_dup_1', 'dup-key'), { skipDuplicateOf: 'dedupe_key' }),
      await insertRow(tx, 'jobs', job('job_dup_2', 'dup-key'), { skipDuplicateOf: 'dedupe_key' }),
      await insertRow(tx, 'jobs', job('job_dup_3', 'other-key'), { skipDuplicateOf: 'dedupe_key' }),
    ]);
    assert.deepEqual(counts, [1, 0, 1]);
    const ids = (await t.db.selectFrom('jobs').select('id').where('id', 'like', 'job_dup_%').orderBy('id').execute()).map((r) => r.id);
    assert.deepEqual(ids, ['job_dup_1', 'job_dup_3']);
    // The same id under a fresh dedupe key: the primary key is not what skipDuplicateOf names.
    await assert.rejects(insertRow(t.db, 'jobs', job('job_dup_1', 'third-key'), { skipDuplicateOf: 'dedupe_key' }));
  });

  it('refuses a value it cannot bind as it is, naming the table and column, and writes nothing', async () => {
    await assert.rejects(
      insertRow(t.db, 'alerts', { id: 'alr_bad', kind: 'job_dead', message: { not: 'plain' } as unknown as string, ref: null, created_at: at, resolved_at: null }),
      /insertRows\(alerts\): column message is not a plain value/,
    );
    assert.equal(await t.db.selectFrom('alerts').select('id').where('id', '=', 'alr_bad').executeTakeFirst(), undefined);
    // Rows that name different columns: never a silently dropped value.
    const row = (id: string, ref: string | undefined) => ({ id, kind: 'job_dead', message: 'm', ref, created_at: at, resolved_at: null });
    await assert.rejects(insertRows(t.db, 'alerts', [row('alr_mix_1', undefined), row('alr_mix_2', 'r')]), /a later row names a column the first row leaves out/);
    await assert.rejects(insertRows(t.db, 'alerts', [row('alr_mix_3', 'r'), row('alr_mix_4', undefined)]), /column ref is missing in a later row/);
    assert.deepEqual(await t.db.selectFrom('alerts').select('id').where('id', 'like', 'alr_mix_%').execute(), []);
  });
});
