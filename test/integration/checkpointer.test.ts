/**
 * SQLite files are checkpointed from a thread of their own (src/db/checkpointer.ts, decision 64):
 * a commit only appends to the WAL, and the thread copies it into the database file, syncing both,
 * a fraction of a second later. What a user relies on: a committed row reaches the database file
 * itself soon after the commit — not only when 1,000 pages of WAL have piled up — and closing the
 * store leaves nothing behind in the WAL.
 */
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import BetterSqlite3 from 'better-sqlite3';
import { sql } from 'kysely';
import { openDatabase } from '../../src/db/index.js';
import { eventually } from '../helpers/eventually.js';

type Rows = { notes: { id: number; body: string } };

/** The rows a copy of the database file alone holds: what is there without the WAL. */
function rowsInDatabaseFile(dir: string, file: string): number {
  const copy = join(dir, `copy-${Math.random().toString(36).slice(2)}.db`);
  copyFileSync(file, copy);
  const db = new BetterSqlite3(copy, { readonly: true });
  try {
    const hasTable = db.prepare(`select 1 from sqlite_master where name = 'notes'`).get();
    return hasTable ? (db.prepare('select count(*) as n from notes').get() as { n: number }).n : 0;
  } finally {
    db.close();
  }
}

describe('background checkpoints (SQLite)', () => {
  it('copies a few committed rows into the database file within a second, with the store idle', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kessai-checkpoint-'));
    const file = join(dir, 'kessai.db');
    const handle = openDatabase(file);
    try {
      const db = handle.db.withTables<Rows>();
      await sql`create table notes (id integer primary key, body text not null)`.execute(db);
      for (let i = 0; i < 5; i++) await db.insertInto('notes').values({ id: i + 1, body: `note ${i}` }).execute();
      // Five small transactions are a handful of WAL pages: SQLite's own automatic checkpoint
      // (1,000 pages) would leave them in the WAL indefinitely.
      const seen = await eventually(async () => {
        const n = rowsInDatabaseFile(dir, file);
        assert.equal(n, 5);
        return n;
      }, 3000);
      assert.equal(seen, 5);
    } finally {
      await handle.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('keeps the database readable and complete while it checkpoints under concurrent writes, and leaves an empty WAL on close', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kessai-checkpoint-'));
    const file = join(dir, 'kessai.db');
    const handle = openDatabase(file);
    const db = handle.db.withTables<Rows>();
    await sql`create table notes (id integer primary key, body text not null)`.execute(db);
    let id = 0;
    const writer = async () => {
      for (let i = 0; i < 300; i++) {
        await db.transaction().execute(async (tx) => {
          id += 1;
          await tx.insertInto('notes').values({ id, body: 'x'.repeat(500) }).execute();
        });
      }
    };
    await Promise.all([writer(), writer(), writer(), writer()]);
    const { n } = (await sql<{ n: number }>`select count(*) as n from notes`.execute(db)).rows[0]!;
    assert.equal(n, 1200);
    await handle.close();
    // Closed: everything is in the database file, the WAL is gone or empty.
    let walSize = 0;
    try {
      walSize = statSync(`${file}-wal`).size;
    } catch {
      walSize = 0;
    }
    assert.equal(walSize, 0);
    assert.equal(rowsInDatabaseFile(dir, file), 1200);
    rmSync(dir, { recursive: true, force: true });
  });
});
