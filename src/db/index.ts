import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import {
  CompiledQuery,
  Kysely,
  Migrator,
  PostgresDialect,
  SelectQueryNode,
  SqliteDialect,
  type DatabaseConnection,
  type Driver,
  type MigrationResultSet,
  type QueryResult,
  type SelectQueryBuilder,
  type Transaction,
} from 'kysely';
import pg from 'pg';
import { BACKSTOP_CHECKPOINT_PAGES, startCheckpointer } from './checkpointer.js';
import { migrations } from './migrations/index.js';
import type { Database } from './schema.js';

export type Engine = 'sqlite' | 'postgres';
export type Db = Kysely<Database>;
export type Tx = Transaction<Database>;

export interface DatabaseHandle {
  db: Db;
  engine: Engine;
  close(): Promise<void>;
}

/** The most SQLite transactions that share one commit (see GroupCommitDriver). */
export const MAX_GROUP_COMMIT = 32;

/** A statement a group member ran, and what it answered: run again, it must answer the same. */
interface Recorded {
  sql: string;
  parameters: readonly unknown[];
  outcome: string;
}

const DML = /^\s*(insert|update|delete|replace)\b/i;
const INSERT = /^\s*(insert|replace)\b/i;
const UNREPEATABLE = '\u0000unrepeatable';
/** Statements recorded per member at most (see GroupCommitDriver#record). */
const MAX_RECORDS = 2000;

/** Waiters take the connection in the order they asked for it. */
class Mutex {
  #locked = false;
  #waiting: (() => void)[] = [];
  async lock(): Promise<void> {
    if (!this.#locked) {
      this.#locked = true;
      return;
    }
    await new Promise<void>((resolve) => this.#waiting.push(resolve));
  }
  unlock(): void {
    const next = this.#waiting.shift();
    if (next) next();
    else this.#locked = false;
  }
}

/**
 * One use of the single SQLite connection. A plain query takes the connection for itself; a
 * transaction becomes a member of the open group instead.
 */
class Lease implements DatabaseConnection {
  /** Holds the connection (queries outside a transaction, or `db.connection()`). */
  holding = false;
  /** Set while this lease's transaction runs in the open group. */
  member = false;
  /** The member's statements so far, in order (for the replay, see GroupCommitDriver). */
  records: Recorded[] = [];
  /** Whether the member ran something that may change the database other than row changes (DDL, savepoints, a failed statement). */
  dirty = false;
  /** total_changes() when the member was admitted: rows it changed show as a difference. */
  changesBefore = 0;
  /** The last statement error, reported to the group if SQLite rolls the whole transaction back. */
  failure: unknown;
  constructor(private readonly driver: GroupCommitDriver) {}

  async executeQuery<R>(query: CompiledQuery): Promise<QueryResult<R>> {
    if (!this.member && !this.holding) await this.driver.hold(this);
    try {
      return this.driver.run<R>(query, this.member ? this : undefined);
    } catch (error) {
      this.failure = error;
      throw error;
    }
  }

  async *streamQuery<R>(query: CompiledQuery): AsyncIterableIterator<QueryResult<R>> {
    if (!this.member && !this.holding) await this.driver.hold(this);
    if (!SelectQueryNode.is(query.query)) throw new Error('SQLite streams select queries only');
    // A stream's rows are not kept: a replay could not check them, and refuses (see GroupCommitDriver).
    if (this.member) this.records.push({ sql: query.sql, parameters: query.parameters, outcome: UNREPEATABLE });
    for (const row of this.driver.prepare(query.sql).iterate(query.parameters)) yield { rows: [row as R] };
  }
}

interface Waiter {
  lease: Lease;
  admit(): void;
  refuse(error: unknown): void;
}

interface Finished {
  committed(): void;
  lost(error: unknown): void;
}

/**
 * Group commit. SQLite has one writer and the store one connection, so concurrent transactions
 * already run one after another; what each one pays for alone is its commit (the WAL pages it
 * touched, written whole: docs/benchmarks.md §1). Here the transactions waiting for the connection
 * run back to back inside one BEGIN IMMEDIATE … COMMIT, so that:
 * - a transaction that fails takes back only its own effects: its caller gets its own error at
 *   once, the others carry on (how, below);
 * - a transaction that succeeds is answered only after the group's COMMIT returned, so no caller
 *   learns of a commit before it is as durable as `synchronous` makes any commit;
 * - if the COMMIT fails, or SQLite abandons the whole transaction after an error (disk full, I/O
 *   error), every finished member is told its transaction did not happen;
 * - queries outside a transaction wait for the group's COMMIT, so nothing reads uncommitted rows.
 * The group closes when no transaction is waiting (a lone caller commits at once, as before) or
 * after MAX_GROUP_COMMIT members. Members run one at a time, as they did on the mutex, so a
 * transaction that would deadlock here deadlocked before too (a query on `ctx.db` inside one).
 * Transactions start with BEGIN IMMEDIATE: they take the write lock up front, so two processes on
 * one file (serve + worker) wait on busy_timeout instead of failing with SQLITE_BUSY when a
 * deferred reader tries to become a writer.
 *
 * Undoing one member (decision 72). A savepoint per member made SQLite copy every page a member
 * touched into a savepoint journal, the same shared index pages again for each member: about a
 * tenth of a checkout's time. There are no savepoints now. Instead, what each member runs is
 * recorded as it runs: every statement, its parameters and what it answered (the rows read, the
 * rows changed, an error). A member that fails before changing anything (out of stock, an unknown
 * product: the usual failures) leaves nothing to undo. One that fails after changing something
 * rolls the transaction back; a new one begins, and the members finished in the group so far run
 * their recorded statements again, in order. Each must answer exactly as it did (same rows, same
 * number changed, same error), so every member's work rests on what it saw; if anything answers
 * otherwise (another process wrote in between, a statement that cannot be repeated), the group is
 * abandoned and every member told its transaction did not happen, as when a COMMIT fails.
 */
class GroupCommitDriver implements Driver {
  readonly #mutex = new Mutex();
  readonly #statements = new Map<string, BetterSqlite3.Statement>();
  readonly #waiting: Waiter[] = [];
  #finished: Finished[] = [];
  #open = false;
  #members = 0;
  /** The recorded statements of the members finished in the open group, in order. */
  #replay: Recorded[] = [];

  constructor(
    private readonly database: BetterSqlite3.Database,
    private readonly maxGroup: number,
  ) {}

  async init(): Promise<void> {}

  async acquireConnection(): Promise<DatabaseConnection> {
    return new Lease(this);
  }

  async releaseConnection(connection: DatabaseConnection): Promise<void> {
    const lease = connection as Lease;
    if (lease.holding) {
      lease.holding = false;
      this.#mutex.unlock();
    }
  }

  async hold(lease: Lease): Promise<void> {
    await this.#mutex.lock();
    lease.holding = true;
  }

  /** Kysely prepares every query afresh; statements are reused instead, as better-sqlite3 intends. */
  prepare(text: string): BetterSqlite3.Statement {
    let statement = this.#statements.get(text);
    if (!statement) {
      statement = this.database.prepare(text);
      if (this.#statements.size > 500) this.#statements.clear();
      this.#statements.set(text, statement);
    }
    return statement;
  }

  /** Runs a statement; for a group member (`member`), records it and what it answered. */
  run<R>({ sql, parameters }: CompiledQuery, member?: Lease): QueryResult<R> {
    const statement = this.prepare(sql);
    let rows: R[] | undefined;
    let info: BetterSqlite3.RunResult | undefined;
    try {
      if (statement.reader) rows = statement.all(parameters) as R[];
      else info = statement.run(parameters);
    } catch (error) {
      // The member saw the error and may go on; what the failed statement left behind is not
      // assumed to be nothing (a conflict clause such as OR FAIL keeps part of it).
      if (member) {
        this.#record(member, { sql, parameters, outcome: failureOf(error) });
        member.dirty = true;
      }
      throw error;
    }
    if (member) {
      this.#record(member, { sql, parameters, outcome: rows ? rowsOutcome(rows) : runOutcome(sql, info!) });
      // Rows changed by INSERT, UPDATE or DELETE (triggers included) are seen in total_changes();
      // anything else that is not a read (DDL, a member's own savepoints) counts as a change.
      if (!(statement.reader && statement.readonly) && !DML.test(sql)) member.dirty = true;
    }
    return rows ? { rows } : { numAffectedRows: BigInt(info!.changes), insertId: BigInt(info!.lastInsertRowid), rows: [] };
  }

  /**
   * A member's records are kept until its group commits. A transaction of very many statements
   * (a bulk import) is kept as one mark instead: should a later member of its group fail after
   * changing something, the group cannot be redone and is reported as not committed.
   */
  #record(member: Lease, r: Recorded): void {
    if (member.records.length < MAX_RECORDS) member.records.push(r);
    else if (member.records.length === MAX_RECORDS) member.records.push({ sql: r.sql, parameters: [], outcome: UNREPEATABLE });
  }

  /** Runs a recorded statement again; answers what it answers now, in the recorded form. */
  #rerun({ sql, parameters }: Recorded): string {
    const statement = this.prepare(sql);
    try {
      return statement.reader ? rowsOutcome(statement.all(parameters)) : runOutcome(sql, statement.run(parameters));
    } catch (error) {
      return failureOf(error);
    }
  }

  /** Rows changed on this connection so far, by any statement or trigger (never goes down). */
  #totalChanges(): number {
    return this.prepare('select total_changes()').pluck().get() as number;
  }

  #exec(text: string): void {
    this.prepare(text).run();
  }

  async beginTransaction(connection: DatabaseConnection): Promise<void> {
    const lease = connection as Lease;
    // A transaction on a connection already held (`db.connection()`) runs alone on it.
    if (lease.holding) return this.#exec('begin immediate');
    await new Promise<void>((admit, refuse) => {
      this.#waiting.push({ lease, admit, refuse });
      if (!this.#open) void this.#openGroup();
    });
  }

  async commitTransaction(connection: DatabaseConnection): Promise<void> {
    const lease = connection as Lease;
    if (lease.holding) return this.#exec('commit');
    lease.member = false;
    if (!this.database.inTransaction) {
      // A statement error made SQLite give up the transaction, and the callback carried on.
      const error = new Error(`the transaction was rolled back by SQLite: ${describe(lease.failure)}`, { cause: lease.failure });
      this.#abandon(error);
      throw error;
    }
    for (const r of lease.records) this.#replay.push(r);
    lease.records = [];
    await new Promise<void>((committed, lost) => {
      this.#finished.push({ committed, lost });
      this.#next();
    });
  }

  async rollbackTransaction(connection: DatabaseConnection): Promise<void> {
    const lease = connection as Lease;
    if (lease.holding) {
      if (this.database.inTransaction) this.#exec('rollback');
      return;
    }
    const member = lease.member;
    lease.member = false;
    // Not a member any more: its group's commit failed and already rolled everything back.
    if (!member) return;
    if (!this.database.inTransaction) {
      this.#abandon(new Error(`the transaction was rolled back by SQLite: ${describe(lease.failure)}`, { cause: lease.failure }));
      return;
    }
    const changed = lease.dirty || this.#totalChanges() !== lease.changesBefore;
    lease.records = [];
    // It failed before changing anything: nothing to undo, the group goes on.
    if (!changed) return this.#next();
    if (this.#finished.length === 0) {
      // Members run one at a time: nothing but this member's own work is in the transaction.
      this.#rollback();
      this.#close();
      return;
    }
    try {
      this.#redoFinished();
    } catch (error) {
      this.#abandon(error);
      return;
    }
    this.#next();
  }

  /** A member failed after changing something: a new transaction with only the finished members' work. */
  #redoFinished(): void {
    this.#exec('rollback');
    this.#exec('begin immediate');
    for (const r of this.#replay) {
      if (r.outcome === UNREPEATABLE || this.#rerun(r) !== r.outcome) {
        throw new Error(`after a failed transaction in the same group, another one could not be repeated exactly (${r.sql.replace(/\s+/g, ' ').slice(0, 80)})`);
      }
    }
  }

  async destroy(): Promise<void> {
    this.database.close();
  }

  async #openGroup(): Promise<void> {
    this.#open = true;
    await this.#mutex.lock();
    try {
      this.#exec('begin immediate');
    } catch (error) {
      // As before: the transaction that asked first gets the error (busy_timeout ran out).
      const first = this.#waiting.shift()!;
      this.#close();
      first.refuse(error);
      return;
    }
    this.#members = 0;
    this.#admit();
  }

  #admit(): void {
    const next = this.#waiting.shift()!;
    next.lease.member = true;
    next.lease.records = [];
    next.lease.dirty = false;
    next.lease.changesBefore = this.#totalChanges();
    this.#members += 1;
    next.admit();
  }

  /** A member finished: admit the next waiting transaction, or commit the group. */
  #next(): void {
    if (this.#waiting.length > 0 && this.#members < this.maxGroup) return this.#admit();
    const finished = this.#finished;
    this.#finished = [];
    let failure: unknown;
    try {
      this.#exec('commit');
    } catch (error) {
      failure = error;
      this.#rollback();
    }
    this.#close();
    for (const f of finished) {
      if (failure === undefined) f.committed();
      else f.lost(failure);
    }
  }

  /** The open transaction is gone: members that finished in it are told it did not commit. */
  #abandon(cause: unknown): void {
    const finished = this.#finished;
    this.#finished = [];
    this.#rollback();
    this.#close();
    const error = new Error(`the transaction was rolled back with the others committed together with it: ${describe(cause)}`, { cause });
    for (const f of finished) f.lost(error);
  }

  #rollback(): void {
    try {
      if (this.database.inTransaction) this.#exec('rollback');
    } catch {
      // The connection is unusable; the next BEGIN reports it to whoever asks.
    }
  }

  #close(): void {
    this.#open = false;
    this.#replay = [];
    this.#mutex.unlock();
    if (this.#waiting.length > 0) void this.#openGroup();
  }
}

/** How a failed statement is recorded: a replay must fail the same way. */
function failureOf(error: unknown): string {
  return `\u0000error:${(error as { code?: string }).code ?? ''}:${describe(error)}`;
}

/** How rows read or returned are recorded; rows that cannot be written down cannot be checked. */
function rowsOutcome(rows: unknown[]): string {
  try {
    return JSON.stringify(rows, (_key, value: unknown) => (typeof value === 'bigint' ? `${value}n` : value));
  } catch {
    return UNREPEATABLE;
  }
}

/** How a write is recorded: rows changed, and for an insert the rowid its caller was given. */
function runOutcome(sql: string, info: BetterSqlite3.RunResult): string {
  return info.changes > 0 && INSERT.test(sql) ? `${info.changes}:${info.lastInsertRowid}` : String(info.changes);
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error ?? 'unknown error');
}

class GroupCommitSqliteDialect extends SqliteDialect {
  constructor(
    private readonly database: BetterSqlite3.Database,
    private readonly maxGroup: number,
  ) {
    super({ database });
  }
  override createDriver(): Driver {
    return new GroupCommitDriver(this.database, this.maxGroup);
  }
}

export interface OpenOptions {
  poolSize?: number;
  /**
   * An idle PostgreSQL connection that breaks (server restart, failover, a terminated backend) is
   * dropped from the pool and reported here; without a listener it would crash the process.
   */
  onIdleError?: (error: Error) => void;
  /** SQLite: the most transactions committed together (1: each commits alone). PostgreSQL commits each on its own connection. */
  maxGroupCommit?: number;
  /** SQLite: checkpoint from a thread of its own (default), or inside commits as SQLite does by itself. */
  checkpointThread?: boolean;
  /** SQLite: a failing background checkpoint (src/db/checkpointer.ts) is reported here. */
  onCheckpointError?: (message: string) => void;
}

/**
 * PostgreSQL connections kept open however long they stay idle (pg closes the others after 10 s).
 * A burst after a quiet spell, such as a flash sale's payment notifications, would otherwise wait
 * for new connections first: in the notification benchmark the p99 of fresh notifications was
 * 175–260 ms from a pool emptied by the idle timeout, 140–160 ms keeping 4 and 95–112 ms keeping 6
 * (docs/benchmarks.md §3). Six: what such a burst keeps busy (the inbox's insert, its four
 * concurrent appliers, a request).
 */
const IDLE_CONNECTIONS = 6;

export function openDatabase(url: string, options: OpenOptions = {}): DatabaseHandle {
  if (/^postgres(ql)?:\/\//.test(url)) {
    // int8 (bigint) comes back as a string by default; counts and sums here fit in a JS number.
    pg.types.setTypeParser(20, (v) => Number.parseInt(v, 10));
    const max = options.poolSize ?? 10;
    const pool = new pg.Pool({ connectionString: url, max, min: Math.min(IDLE_CONNECTIONS, max) });
    pool.on('error', (error) => (options.onIdleError ?? ((e: Error) => process.emitWarning(`idle PostgreSQL connection lost: ${e.message}`)))(error));
    const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
    return { db, engine: 'postgres', close: () => db.destroy() };
  }
  const file = url.startsWith('file:') ? url.slice('file:'.length) : url;
  if (file !== ':memory:') mkdirSync(dirname(file), { recursive: true });
  const sqlite = new BetterSqlite3(file);
  sqlite.pragma('journal_mode = WAL');
  sqlite.pragma('synchronous = NORMAL');
  sqlite.pragma('foreign_keys = ON');
  sqlite.pragma('busy_timeout = 10000');
  // Savepoint journals (group commit, decision 61) stay in memory instead of spilling to a
  // temporary file past 64 KiB: a checkout's savepoint journals about 30 pages (decision 64).
  sqlite.pragma('temp_store = MEMORY');
  const db = new Kysely<Database>({ dialect: new GroupCommitSqliteDialect(sqlite, options.maxGroupCommit ?? MAX_GROUP_COMMIT) });
  if (file === ':memory:' || options.checkpointThread === false) return { db, engine: 'sqlite', close: () => db.destroy() };
  sqlite.pragma(`wal_autocheckpoint = ${BACKSTOP_CHECKPOINT_PAGES}`);
  const checkpointer = startCheckpointer(resolve(file), options.onCheckpointError ?? ((m) => process.emitWarning(m)));
  return {
    db,
    engine: 'sqlite',
    close: async () => {
      await checkpointer.stop();
      await db.destroy();
    },
  };
}

/** Adds a row lock on PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises writers. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function forUpdate<QB extends SelectQueryBuilder<any, any, any>>(engine: Engine, qb: QB): QB {
  return engine === 'postgres' ? (qb.forUpdate() as QB) : qb;
}

export function migrator(db: Db): Migrator {
  return new Migrator({
    db,
    provider: { getMigrations: async () => migrations },
    migrationTableName: 'kessai_migrations',
    migrationLockTableName: 'kessai_migrations_lock',
  });
}

export class MigrationError extends Error {
  override name = 'MigrationError';
}

function check(result: MigrationResultSet): MigrationResultSet {
  if (result.error) {
    const failed = result.results?.find((r) => r.status === 'Error');
    const cause = result.error instanceof Error ? result.error.message : String(result.error);
    throw new MigrationError(`migration ${failed?.migrationName ?? ''} failed: ${cause}`.replace('  ', ' '));
  }
  return result;
}

export async function migrateToLatest(db: Db): Promise<string[]> {
  const result = check(await migrator(db).migrateToLatest());
  return (result.results ?? []).map((r) => r.migrationName);
}

export async function migrateDown(db: Db): Promise<string[]> {
  const result = check(await migrator(db).migrateDown());
  return (result.results ?? []).map((r) => r.migrationName);
}

export async function migrationStatus(db: Db): Promise<{ name: string; executedAt: Date | null }[]> {
  const list = await migrator(db).getMigrations();
  return list.map((m) => ({ name: m.name, executedAt: m.executedAt ?? null }));
}

export async function pendingMigrations(db: Db): Promise<string[]> {
  return (await migrationStatus(db)).filter((m) => m.executedAt === null).map((m) => m.name);
}
