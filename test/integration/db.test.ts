import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { describe, it } from 'node:test';
import { sql } from 'kysely';
import pg from 'pg';
import { migrateDown, migrateToLatest, pendingMigrations, type Db } from '../../src/db/index.js';
import { migrations } from '../../src/db/migrations/index.js';
import { ENGINES, forEachEngine, testDatabase, useTestDatabase, type Engine } from '../helpers/db.js';

const ALL_MIGRATIONS = Object.keys(migrations);
const TABLES = [
  'account_tokens', 'alerts', 'chart_runs', 'checkout_keys', 'customer_links', 'customer_sessions', 'customers', 'inquiries', 'job_runs', 'jobs', 'mail_log', 'order_addresses', 'order_lines', 'orders',
  'payment_attempts', 'payment_events', 'payment_operations', 'products', 'rate_limits', 'reservations', 'serial_code_batches', 'serial_code_specs', 'serial_codes',
  'shops', 'skus', 'state_changes', 'subscription_orders', 'subscriptions', 'tickets',
];
const NOW = '2026-11-23T10:00:00.000Z';

async function tableNames(db: Db): Promise<string[]> {
  const tables = await db.introspection.getTables();
  return tables.map((t) => t.name).filter((n) => !n.startsWith('kessai_migrations')).sort();
}

/** The engine's error code: SQLITE_CONSTRAINT_CHECK…, or PostgreSQL's SQLSTATE. */
function code(error: unknown): string | undefined {
  return (error as { code?: string }).code;
}

function violates(engine: Engine, kind: 'check' | 'unique') {
  const expected = engine === 'sqlite'
    ? { check: 'SQLITE_CONSTRAINT_CHECK', unique: 'SQLITE_CONSTRAINT_UNIQUE' }[kind]
    : { check: '23514', unique: '23505' }[kind];
  return (error: unknown) => {
    assert.equal(code(error), expected, `expected a ${kind} violation, got ${String(error)}`);
    return true;
  };
}

async function insertShopWithSku(db: Db, onHand: number) {
  await db.insertInto('shops').values({ id: 'shop1', name: 'テスト店', settings: '{}', created_at: NOW, updated_at: NOW }).execute();
  await db
    .insertInto('products')
    .values({ id: 'prod1', shop_id: 'shop1', code: 'P-1', name: '商品', kind: 'physical', description: '', jan_code: null, chart_eligible: 0, tax_rate: 10, active: 1, created_at: NOW })
    .execute();
  await db
    .insertInto('skus')
    .values({ id: 'sku1', shop_id: 'shop1', product_id: 'prod1', code: 'S-1', name: '通常版', price: 1000, on_hand: onHand, reserved: 0, created_at: NOW })
    .execute();
}

async function insertOrder(db: Db) {
  await db
    .insertInto('customers')
    .values({ id: 'cust1', shop_id: 'shop1', email: 'a@example.jp', name: '山田太郎', created_at: NOW })
    .execute();
  await db
    .insertInto('orders')
    .values({
      id: 'ord1', shop_id: 'shop1', number: 'K-000001', token_hash: 'th1', customer_id: 'cust1', email: 'a@example.jp',
      state: 'pending_payment', subtotal: 1000, shipping_fee: 0, total: 1000, tax_10: 90, tax_8: 0, current_attempt_id: null,
      fulfilled: 0, stock_committed: 0, stock_released: 0, hold_reason: null, expires_at: NOW, created_at: NOW, updated_at: NOW,
    })
    .execute();
}

function attempt(id: string, provider: string, merchantRef: string) {
  return {
    id, order_id: 'ord1', shop_id: 'shop1', provider, method: 'card', merchant_ref: merchantRef, state: 'created',
    amount: 1000, captured_amount: 0, refunded_amount: 0, gateway_ref: null, details: '{}', created_at: NOW, updated_at: NOW,
  };
}

forEachEngine('database', (engine) => {
  describe('migrations', () => {
    it('apply from an empty database, and nothing is pending after', async (c) => {
      const t = await testDatabase(engine, { migrate: false });
      c.after(() => t.drop());
      const { db } = t.handle;
      assert.deepEqual(await pendingMigrations(db), ALL_MIGRATIONS);
      assert.deepEqual(await tableNames(db), []);

      assert.deepEqual(await migrateToLatest(db), ALL_MIGRATIONS);
      assert.deepEqual(await pendingMigrations(db), []);
      assert.deepEqual(await tableNames(db), TABLES);
      assert.deepEqual(await migrateToLatest(db), [], 'a second run does nothing');
    });

    it('migrate down, then up again', async (c) => {
      const t = await testDatabase(engine);
      c.after(() => t.drop());
      const { db } = t.handle;
      const last = ALL_MIGRATIONS.at(-1);
      assert.deepEqual(await migrateDown(db), [last]);
      assert.deepEqual(await pendingMigrations(db), [last]);
      if (ALL_MIGRATIONS.length === 1) assert.deepEqual(await tableNames(db), []);

      assert.deepEqual(await migrateToLatest(db), [last]);
      assert.deepEqual(await pendingMigrations(db), []);
      assert.deepEqual(await tableNames(db), TABLES);
    });
  });

  describe('constraints', () => {
    const t = useTestDatabase(engine);

    it('skus refuse reserved > on_hand (and reserved < 0)', async () => {
      const { db } = t;
      await insertShopWithSku(db, 5);
      await db.updateTable('skus').set({ reserved: 5 }).where('id', '=', 'sku1').execute();
      await assert.rejects(db.updateTable('skus').set({ reserved: 6 }).where('id', '=', 'sku1').execute(), violates(engine, 'check'));
      await assert.rejects(db.updateTable('skus').set({ on_hand: 4 }).where('id', '=', 'sku1').execute(), violates(engine, 'check'));
      await assert.rejects(db.updateTable('skus').set({ reserved: -1 }).where('id', '=', 'sku1').execute(), violates(engine, 'check'));
      const sku = await db.selectFrom('skus').select(['on_hand', 'reserved']).where('id', '=', 'sku1').executeTakeFirstOrThrow();
      assert.deepEqual(sku, { on_hand: 5, reserved: 5 });
    });

    it('payment_attempts refuse a duplicate (shop_id, provider, merchant_ref)', async () => {
      const { db } = t;
      await insertOrder(db);
      await db.insertInto('payment_attempts').values(attempt('pa1', 'sbps', 'K-000001-1')).execute();
      await assert.rejects(
        db.insertInto('payment_attempts').values(attempt('pa2', 'sbps', 'K-000001-1')).execute(),
        violates(engine, 'unique'),
      );
      // the same reference at another provider is a different attempt
      await db.insertInto('payment_attempts').values(attempt('pa3', 'komoju', 'K-000001-1')).execute();
      const rows = await db.selectFrom('payment_attempts').select('id').orderBy('id').execute();
      assert.deepEqual(rows.map((r) => r.id), ['pa1', 'pa3']);
    });

    it('foreign keys are enforced', async () => {
      await assert.rejects(
        t.db
          .insertInto('skus')
          .values({ id: 'sku-x', shop_id: 'shop1', product_id: 'no-such-product', code: 'S-X', name: 'x', price: 1, on_hand: 1, reserved: 0, created_at: NOW })
          .execute(),
        (error: unknown) => {
          assert.equal(code(error), engine === 'sqlite' ? 'SQLITE_CONSTRAINT_FOREIGNKEY' : '23503');
          return true;
        },
      );
    });
  });

  if (engine === 'sqlite') {
    it('SQLite is a real file in WAL mode with foreign keys on', async (c) => {
      const t = await testDatabase(engine);
      c.after(() => t.drop());
      assert.ok(existsSync(t.url), `${t.url} exists`);
      const mode = await sql<{ journal_mode: string }>`pragma journal_mode`.execute(t.handle.db);
      assert.equal(mode.rows[0]?.journal_mode, 'wal');
      const fk = await sql<{ foreign_keys: number }>`pragma foreign_keys`.execute(t.handle.db);
      assert.equal(fk.rows[0]?.foreign_keys, 1);
      await t.drop();
      assert.ok(!existsSync(t.url), 'drop() removes the file');
    });
  }

  if (engine === 'postgres') {
    it('each call gets its own database, and drop() removes it', async (c) => {
      const [a, b] = await Promise.all([testDatabase(engine), testDatabase(engine)]);
      c.after(async () => {
        await Promise.all([a.drop(), b.drop()]);
      });
      assert.notEqual(a.url, b.url);
      const name = new URL(a.url).pathname.slice(1);
      assert.match(name, /^kessai_test_[0-9a-f]+$/);
      const current = await sql<{ name: string }>`select current_database() as name`.execute(a.handle.db);
      assert.equal(current.rows[0]?.name, name);

      await a.drop();
      const client = new pg.Client({ connectionString: process.env.TEST_DATABASE_URL });
      await client.connect();
      try {
        const left = await client.query('select 1 from pg_database where datname = $1', [name]);
        assert.equal(left.rowCount, 0);
      } finally {
        await client.end();
      }
    });
  }
});

describe('test engines', () => {
  it('KESSAI_TEST_ENGINES selects the engines', () => {
    assert.ok(ENGINES.length > 0, 'ENGINES.length > 0');
    assert.deepEqual(ENGINES, (process.env.KESSAI_TEST_ENGINES ?? 'sqlite,postgres').split(',').map((e) => e.trim()));
  });
});
