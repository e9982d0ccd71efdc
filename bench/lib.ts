// Shared by the benchmarks: the store on loopback (SQLite or a throwaway PostgreSQL cluster), statistics.
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { sql } from 'kysely';
import { seedDemo } from '../src/commerce/demo.js';
import { loadConfig } from '../src/config.js';
import { migrateToLatest } from '../src/db/index.js';
import { createRuntime, createServer, type Runtime } from '../src/runtime.js';
import { freePort } from '../test/helpers/net.js';

// ------------------------------------------------------------------ PostgreSQL cluster

export interface Cluster {
  url: string;
  version: string;
  stop(): void;
}

export function startPostgres(): Cluster {
  const candidates = existsSync('/usr/lib/postgresql')
    ? readdirSync('/usr/lib/postgresql')
        .sort((a, b) => Number(b) - Number(a))
        .map((v) => `/usr/lib/postgresql/${v}/bin`)
    : [];
  if (process.env.KESSAI_PG_BINDIR) candidates.unshift(process.env.KESSAI_PG_BINDIR);
  const bindir = candidates.find((d) => existsSync(join(d, 'initdb')) && existsSync(join(d, 'pg_ctl')));
  if (!bindir) throw new Error('PostgreSQL binaries (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin; set KESSAI_PG_BINDIR');
  const isRoot = process.getuid?.() === 0;
  const run = (tool: string, args: string[]) => {
    const r = isRoot
      ? spawnSync('runuser', ['-u', 'postgres', '--', join(bindir, tool), ...args], { encoding: 'utf8', env: { ...process.env, LC_ALL: 'C' } })
      : spawnSync(join(bindir, tool), args, { encoding: 'utf8', env: { ...process.env, LC_ALL: 'C' } });
    if (r.status !== 0) throw new Error(`${tool} failed (exit ${r.status}): ${r.stdout}${r.stderr}`);
    return r;
  };
  const base = mkdtempSync(join(tmpdir(), 'kessai-bench-pg-'));
  chmodSync(base, 0o755);
  const data = join(base, 'data');
  mkdirSync(data, { mode: 0o700 });
  if (isRoot) {
    const uid = Number(spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).stdout);
    const gid = Number(spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).stdout);
    chownSync(data, uid, gid);
  }
  const port = 20000 + Math.floor(Math.random() * 20000);
  let started = false;
  const stop = () => {
    if (started) {
      spawnSync(isRoot ? 'runuser' : join(bindir, 'pg_ctl'), [...(isRoot ? ['-u', 'postgres', '--', join(bindir, 'pg_ctl')] : []), '-D', data, '-m', 'fast', '-w', 'stop'], { encoding: 'utf8' });
      started = false;
    }
    rmSync(base, { recursive: true, force: true });
  };
  try {
    run('initdb', ['-D', data, '--no-sync', '-A', 'trust', '-U', 'postgres', '-E', 'UTF8', '--locale=C']);
    // synchronous_commit=off matches SQLite's synchronous=NORMAL in WAL mode: a crash may lose the
    // last commits but never corrupts. fsync stays on. max_connections covers the pool with room.
    // KESSAI_BENCH_PG_SYNC=on measures PostgreSQL's own default instead: every commit flushed
    // before it returns (what an acknowledged notification relies on in production).
    const sync = process.env.KESSAI_BENCH_PG_SYNC === 'on' ? 'on' : 'off';
    const options = `-k ${data} -p ${port} -c listen_addresses='' -c synchronous_commit=${sync} -c max_connections=100`;
    run('pg_ctl', ['-D', data, '-l', join(data, 'server.log'), '-w', '-t', '60', '-o', options, 'start']);
    started = true;
  } catch (error) {
    stop();
    throw error;
  }
  const version = spawnSync(join(bindir, 'postgres'), ['--version'], { encoding: 'utf8' }).stdout.trim();
  return { url: `postgres://postgres@localhost:${port}/postgres?host=${encodeURIComponent(data)}`, version, stop };
}

// ------------------------------------------------------------------ statistics

export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};


// ------------------------------------------------------------------ the store under load

export interface BenchStore {
  rt: Runtime;
  /** Not listening yet: a benchmark adds its hooks first, then listens on `port`. */
  app: FastifyInstance;
  port: number;
  base: string;
  engineVersion: string;
  /** Stops the cluster and removes the data; safe to call twice. */
  cleanup(): void;
}

/** The whole store with the demo shop, as `kessai serve` runs it, on a fresh database of the engine. */
export async function startBenchStore(engine: 'sqlite' | 'postgres', name: string): Promise<BenchStore> {
  const dataDir = mkdtempSync(join(tmpdir(), `kessai-bench-${name}-`));
  let cluster: Cluster | undefined;
  const cleanup = () => {
    cluster?.stop();
    cluster = undefined;
    rmSync(dataDir, { recursive: true, force: true });
  };
  try {
    let databaseUrl = join(dataDir, 'kessai.db');
    let engineVersion = '';
    if (engine === 'postgres') {
      cluster = startPostgres();
      databaseUrl = cluster.url;
      engineVersion = cluster.version;
    }
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    const config = loadConfig({
      DATABASE_URL: databaseUrl,
      KESSAI_DATA_DIR: dataDir,
      KESSAI_MASTER_KEY: '00'.repeat(32),
      KESSAI_ADMIN_TOKEN: 'bench-admin-token-0123456789abcdef',
      KESSAI_PUBLIC_URL: base,
      PORT: String(port),
      // Silent unless asked (LOG_LEVEL=info is what `kessai serve` runs with); lines go nowhere, so
      // what is measured is building them, not writing them.
      LOG_LEVEL: process.env.LOG_LEVEL ?? 'silent',
    });
    const rt = await createRuntime(config, { logDestination: new Writable({ write: (_c, _e, done) => done() }) });
    if (engine === 'postgres') await migrateToLatest(rt.ctx.db);
    else engineVersion = `SQLite ${(await sql<{ v: string }>`select sqlite_version() as v`.execute(rt.ctx.db)).rows[0]!.v}`;
    await seedDemo(rt.ctx);
    const app = await createServer(rt);
    process.once('SIGINT', () => {
      cleanup();
      process.exit(130);
    });
    return { rt, app, port, base, engineVersion, cleanup };
  } catch (error) {
    cleanup();
    throw error;
  }
}
