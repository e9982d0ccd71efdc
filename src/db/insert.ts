import { CompiledQuery, type Insertable } from 'kysely';
import type { Db, Tx } from './index.js';
import { builtOnce, isPlain, type Value } from './prepared.js';
import type { Database } from './schema.js';

type Table = keyof Database & string;

export interface InsertOptions<T extends Table> {
  /** A row that would repeat this unique column is skipped (`ON CONFLICT (column) DO NOTHING`). */
  skipDuplicateOf?: keyof Database[T] & string;
}

/**
 * Inserts rows that all name the same columns. Kysely builds and compiles a query tree for every
 * insert; on the checkout and notification paths that was about a fifth of the time
 * (docs/benchmarks.md §1), so the SQL is built once per table, number of rows and column list and
 * then run with the new values bound. Columns whose value is `undefined` are left to their default,
 * as Kysely does. Answers the number of rows written. An insert that needs more than plain values
 * (`returning`, `doUpdateSet`, several conflict columns, an SQL expression as a value) uses Kysely's
 * builder directly.
 */
export async function insertRows<T extends Table>(db: Db | Tx, table: T, rows: readonly Insertable<Database[T]>[], options: InsertOptions<T> = {}): Promise<number> {
  if (rows.length === 0) return 0;
  const first = rows[0] as Record<string, unknown>;
  const columns = Object.keys(first).filter((c) => first[c] !== undefined);
  const parameters: Value[] = [];
  for (const row of rows as readonly Record<string, unknown>[]) {
    for (const c of columns) {
      const value = row[c];
      if (!isPlain(value)) throw new TypeError(`insertRows(${table}): column ${c} is ${value === undefined ? 'missing in a later row' : 'not a plain value'}`);
      parameters.push(value);
    }
    if (row !== first && Object.keys(row).some((c) => row[c] !== undefined && !columns.includes(c))) {
      throw new TypeError(`insertRows(${table}): a later row names a column the first row leaves out`);
    }
  }
  const key = `insert|${table}|${rows.length}|${columns.join(',')}|${options.skipDuplicateOf ?? ''}`;
  const text = builtOnce(db, key, () => {
    let query = db.insertInto(table).values(rows.map((row) => Object.fromEntries(columns.map((c) => [c, (row as Record<string, unknown>)[c]]))) as never);
    const unique = options.skipDuplicateOf;
    if (unique) query = query.onConflict((oc) => oc.column(unique as never).doNothing());
    const compiled = query.compile();
    if (compiled.parameters.length !== parameters.length) throw new Error(`insertRows(${table}): expected ${parameters.length} parameters, Kysely built ${compiled.parameters.length}`);
    return compiled.sql;
  });
  const result = await db.executeQuery(CompiledQuery.raw(text, parameters));
  return Number(result.numAffectedRows ?? 0);
}

/** Answers the number of rows written: 0 when `skipDuplicateOf` skipped the row. */
export function insertRow<T extends Table>(db: Db | Tx, table: T, row: Insertable<Database[T]>, options: InsertOptions<T> = {}): Promise<number> {
  return insertRows(db, table, [row], options);
}
