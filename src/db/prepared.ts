import { CompiledQuery, type Compilable, type DialectAdapter, type QueryResult } from 'kysely';
import type { Db, Tx } from './index.js';

/** What a bound parameter may be: exactly what both drivers bind as it is. */
export type Value = string | number | bigint | null | Buffer;

export function isPlain(value: unknown): value is Value {
  return value === null || typeof value === 'string' || typeof value === 'number' || typeof value === 'bigint' || Buffer.isBuffer(value);
}

/** Built SQL per dialect, then per key (the callers make the key say everything the SQL depends on). */
const built = new WeakMap<DialectAdapter, Map<string, unknown>>();

/** The SQL a key stands for on this database's dialect, built by `build` the first time it is asked for. */
export function builtOnce<S>(db: Db | Tx, key: string, build: () => S): S {
  const adapter = db.getExecutor().adapter;
  let texts = built.get(adapter);
  if (!texts) built.set(adapter, (texts = new Map()));
  let entry = texts.get(key) as S | undefined;
  if (entry === undefined) texts.set(key, (entry = build()));
  return entry;
}

type Params = Record<string, Value | readonly Value[]>;

interface Shape {
  sql: string;
  /** Where each bound parameter comes from: a parameter's name (and index in a list), or a constant of the query. */
  sources: ({ name: string; index?: number } | { constant: unknown })[];
}

const MARK = '\u0000kessai-param:';

/**
 * A query whose SQL Kysely builds once per dialect and shape, then runs with new values bound each
 * time. Kysely builds and compiles a query tree on every call; on the checkout path that was about
 * an eighth of a checkout (docs/benchmarks.md §1). `build` writes the query as usual, with the
 * parameters taken from its second argument; the first time, it receives a marker in place of each
 * value, and the markers found among the compiled parameters say which value goes where. A list
 * parameter (for `in`) gives a shape per length. Every value must end up a bound parameter: a query
 * that puts one into its SQL text (sql.lit, sql.raw, a value Kysely inlines) is refused when it is
 * built, since the next call's value would be ignored.
 */
export function prepared<P extends Params, O>(name: string, build: (db: Db | Tx, params: P) => Compilable<O>): (db: Db | Tx, params: P) => Promise<QueryResult<O>> {
  return async (db, params) => {
    const names = Object.keys(params);
    const key = `query|${name}|${names.map((n) => (Array.isArray(params[n]) ? `${n}[${(params[n] as readonly Value[]).length}]` : n)).join(',')}`;
    const shape = builtOnce(db, key, () => compileShape(db, name, params, build));
    const parameters = shape.sources.map((s) => {
      if ('constant' in s) return s.constant;
      const value = s.index === undefined ? params[s.name] : (params[s.name] as readonly Value[])[s.index];
      if (!isPlain(value)) throw new TypeError(`prepared(${name}): parameter ${s.name}${s.index === undefined ? '' : `[${s.index}]`} is not a plain value`);
      return value;
    });
    return db.executeQuery(CompiledQuery.raw(shape.sql, parameters)) as Promise<QueryResult<O>>;
  };
}

function compileShape<P extends Params, O>(db: Db | Tx, name: string, params: P, build: (db: Db | Tx, params: P) => Compilable<O>): Shape {
  const markers: Record<string, string | string[]> = {};
  for (const [n, v] of Object.entries(params)) {
    markers[n] = Array.isArray(v) ? v.map((_, i) => `${MARK}${n}[${i}]`) : `${MARK}${n}`;
  }
  const compiled = build(db, markers as unknown as P).compile();
  const seen = new Set<string>();
  const sources = compiled.parameters.map((p): Shape['sources'][number] => {
    if (typeof p !== 'string' || !p.startsWith(MARK)) return { constant: p };
    const m = /^(.*?)(?:\[(\d+)\])?$/.exec(p.slice(MARK.length))!;
    seen.add(p);
    return m[2] === undefined ? { name: m[1]! } : { name: m[1]!, index: Number(m[2]) };
  });
  const all = Object.values(markers).flat();
  const missing = all.filter((m) => !seen.has(m));
  if (missing.length > 0 || compiled.sql.includes(MARK)) {
    throw new Error(`prepared(${name}): every parameter must be bound, not written into the SQL (${missing.map((m) => m.slice(MARK.length)).join(', ') || 'a marker is in the text'})`);
  }
  return { sql: compiled.sql, sources };
}
