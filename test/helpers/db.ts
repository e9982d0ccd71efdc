/**
 * Databases for tests: a fresh, migrated database per call, on SQLite and/or PostgreSQL.
 *
 *   forEachEngine('orders', (engine) => {
 *     const t = useTestDatabase(engine);            // before: create + migrate, after: drop
 *     it('…', async () => { await t.db.selectFrom('orders')… });
 *   });
 *
 * Engines come from KESSAI_TEST_ENGINES (comma list, default "sqlite,postgres"). PostgreSQL tests
 * create `kessai_test_<random>` databases on the server at TEST_DATABASE_URL, which `npm test`
 * (scripts/test.mjs) points at a throwaway cluster it starts.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe } from 'node:test';
import pg from 'pg';
import { loadConfig } from '../../src/config.js';
import type { Context } from '../../src/context.js';
import { migrateToLatest, openDatabase, type DatabaseHandle, type Db, type Engine } from '../../src/db/index.js';
import { createLogger, Metrics } from '../../src/observability.js';

export type { Engine };

function readEngines(): Engine[] {
  const raw = process.env.KESSAI_TEST_ENGINES?.trim();
  const names = raw ? raw.split(',').map((e) => e.trim()).filter(Boolean) : ['sqlite', 'postgres'];
  for (const name of names) {
    if (name !== 'sqlite' && name !== 'postgres') {
      throw new Error(`KESSAI_TEST_ENGINES=${raw}: unknown engine "${name}" (expected sqlite, postgres)`);
    }
  }
  if (names.length === 0) throw new Error(`KESSAI_TEST_ENGINES=${raw}: no engine`);
  const engines = [...new Set(names)] as Engine[];
  if (engines.includes('postgres') && !process.env.TEST_DATABASE_URL) {
    throw new Error(
      'PostgreSQL tests need TEST_DATABASE_URL. Run them with `npm test` (it starts a throwaway cluster; ' +
        '`npm test -- path/to/file.test.ts` for one file), or set TEST_DATABASE_URL=postgres://… ' +
        '(a user that may CREATE DATABASE), or KESSAI_TEST_ENGINES=sqlite to skip PostgreSQL.',
    );
  }
  return engines;
}

export const ENGINES: Engine[] = readEngines();

export interface TestDatabase {
  url: string;
  handle: DatabaseHandle;
  drop(): Promise<void>;
}

export interface TestDatabaseOptions {
  /** Run migrateToLatest (default true); false gives an empty database. */
  migrate?: boolean;
  poolSize?: number;
}

/** Runs one statement on the server's maintenance database, on a short-lived connection. */
async function admin(statement: string): Promise<void> {
  const client = new pg.Client({ connectionString: process.env.TEST_DATABASE_URL });
  await client.connect();
  try {
    await client.query(statement);
  } finally {
    await client.end();
  }
}

/** A fresh database: a new WAL file in a temp dir (SQLite), or a new database on the cluster (PostgreSQL). */
export async function testDatabase(engine: Engine, options: TestDatabaseOptions = {}): Promise<TestDatabase> {
  let url: string;
  let remove: () => Promise<void>;
  if (engine === 'sqlite') {
    const dir = mkdtempSync(join(tmpdir(), 'kessai-test-sqlite-'));
    url = join(dir, 'kessai.db');
    remove = async () => rmSync(dir, { recursive: true, force: true });
  } else {
    const base = process.env.TEST_DATABASE_URL;
    if (!base) throw new Error('TEST_DATABASE_URL is not set: run the tests with `npm test`');
    const name = `kessai_test_${randomBytes(6).toString('hex')}`;
    const target = new URL(base);
    target.pathname = `/${name}`;
    url = target.toString();
    await admin(`CREATE DATABASE "${name}"`);
    remove = () => admin(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
  }

  let handle: DatabaseHandle;
  try {
    handle = openDatabase(url, { poolSize: options.poolSize });
    if (options.migrate !== false) await migrateToLatest(handle.db);
  } catch (error) {
    await remove();
    throw error;
  }

  let dropped = false;
  return {
    url,
    handle,
    async drop() {
      if (dropped) return;
      dropped = true;
      try {
        await handle.close();
      } finally {
        await remove();
      }
    },
  };
}

/** Defines the same describe block once per engine: `name [sqlite]`, `name [postgres]`. */
export function forEachEngine(name: string, fn: (engine: Engine) => void): void {
  for (const engine of ENGINES) describe(`${name} [${engine}]`, () => fn(engine));
}

/**
 * One database for the enclosing describe block: created in `before`, dropped in `after`.
 * Read `.db` / `.handle` / `.url` inside tests (not at definition time).
 */
export function useTestDatabase(engine: Engine, options?: TestDatabaseOptions) {
  let current: TestDatabase | undefined;
  before(async () => {
    current = await testDatabase(engine, options);
  });
  after(async () => {
    await current?.drop();
  });
  const get = (): TestDatabase => {
    if (!current) throw new Error('useTestDatabase: the database exists only inside tests and hooks');
    return current;
  };
  return {
    get db(): Db {
      return get().handle.db;
    },
    get handle(): DatabaseHandle {
      return get().handle;
    },
    get url(): string {
      return get().url;
    },
    /** A store context on this database (silent log), for tests that call the domain directly. */
    context(): Context {
      const { url, handle } = get();
      const config = loadConfig({ DATABASE_URL: url, KESSAI_MASTER_KEY: '0'.repeat(64), KESSAI_ADMIN_TOKEN: 'test-admin-token-0123456789' });
      return { config, db: handle.db, engine, log: createLogger('silent'), metrics: new Metrics() };
    },
  };
}
