#!/usr/bin/env node
// The test runner behind `npm test`.
//
//   npm test                                  every test/**/*.test.ts, on SQLite and PostgreSQL
//   npm test -- test/unit/foo.test.ts test/integration
//                                             only those files (directories are searched)
//   npm test -- --test-name-pattern=refund    extra flags go to `node --test`
//   KESSAI_TEST_ENGINES=sqlite npm test       SQLite only: no PostgreSQL needed
//   TEST_DATABASE_URL=postgres://… npm test   use that server instead of a throwaway cluster
//
// Node 20's `--test` expands no globs and finds no .ts files by itself, so the files are listed here.
// Unless TEST_DATABASE_URL is set, one throwaway PostgreSQL cluster is started for the whole run
// (unix socket in its data dir, fsync off); each test gets its own database in it (test/helpers/db.ts).
// Everything of a run lives in <tmp>/kessai-test-XXXXXX/: runner.pid, tmp/ (the tests' TMPDIR, so
// their SQLite files go too) and data/ (the cluster). It is removed at the end, also on failure and
// Ctrl-C; a run killed outright (SIGKILL) is cleaned up by the next one.

import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { availableParallelism, tmpdir } from 'node:os';
import { delimiter, dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const TMP_PREFIX = 'kessai-testrun-';
const started = performance.now();

const seconds = (ms) => `${(ms / 1000).toFixed(1)} s`;
const log = (message) => process.stderr.write(`[test] ${message}\n`);

class Fatal extends Error {}

// ---------------------------------------------------------------- files and flags

function findTests(dir) {
  const found = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (entry.name === 'node_modules' || entry.name.startsWith('.')) continue;
    const path = join(dir, entry.name);
    if (entry.isDirectory()) found.push(...findTests(path));
    else if (entry.isFile() && entry.name.endsWith('.test.ts')) found.push(path);
  }
  return found;
}

function selectFiles(args) {
  const flags = [];
  const files = [];
  for (const arg of args) {
    if (arg.startsWith('-')) {
      flags.push(arg);
      continue;
    }
    const path = resolve(arg);
    if (!existsSync(path)) throw new Fatal(`no such test file or directory: ${arg}`);
    if (statSync(path).isDirectory()) files.push(...findTests(path));
    else files.push(path);
  }
  const explicit = args.some((a) => !a.startsWith('-'));
  const list = explicit ? files : findTests(join(ROOT, 'test'));
  const unique = [...new Set(list.map((f) => relative(process.cwd(), f) || f))].sort();
  if (unique.length === 0) throw new Fatal(explicit ? `no *.test.ts files in ${args.join(' ')}` : 'no test/**/*.test.ts files found');
  return { files: unique, flags };
}

function wantedEngines() {
  const raw = process.env.KESSAI_TEST_ENGINES?.trim();
  const engines = raw ? raw.split(',').map((e) => e.trim()).filter(Boolean) : ['sqlite', 'postgres'];
  const unknown = engines.filter((e) => e !== 'sqlite' && e !== 'postgres');
  if (unknown.length > 0 || engines.length === 0) {
    throw new Fatal(`KESSAI_TEST_ENGINES=${raw}: expected a comma list of sqlite, postgres`);
  }
  return engines;
}

// ---------------------------------------------------------------- PostgreSQL cluster

const isRoot = process.getuid?.() === 0;

function versionOf(dir) {
  const m = /postgresql\/(\d+(?:\.\d+)?)\//.exec(`${dir}/`);
  return m ? Number(m[1]) : 0;
}

function findPgBindir() {
  const candidates = [];
  if (process.env.KESSAI_PG_BINDIR) candidates.push(process.env.KESSAI_PG_BINDIR);
  const debian = '/usr/lib/postgresql';
  if (existsSync(debian)) {
    const versions = readdirSync(debian).map((v) => join(debian, v, 'bin')).sort((a, b) => versionOf(b) - versionOf(a));
    candidates.push(...versions);
  }
  const pgConfig = spawnSync('pg_config', ['--bindir'], { encoding: 'utf8' });
  if (pgConfig.status === 0) candidates.push(pgConfig.stdout.trim());
  candidates.push(...(process.env.PATH ?? '').split(delimiter).filter(Boolean));
  const bindir = candidates.find((dir) => existsSync(join(dir, 'initdb')) && existsSync(join(dir, 'pg_ctl')));
  if (!bindir) {
    throw new Fatal(
      'PostgreSQL server binaries (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin, `pg_config --bindir` or PATH.\n' +
        '  Fix one of:\n' +
        '    - install them:           apt-get install postgresql   (or KESSAI_PG_BINDIR=/path/to/bin)\n' +
        '    - use a running server:   TEST_DATABASE_URL=postgres://user@host:5432/postgres npm test\n' +
        '                              (the user must be allowed to CREATE DATABASE)\n' +
        '    - skip PostgreSQL on purpose: KESSAI_TEST_ENGINES=sqlite npm test',
    );
  }
  return bindir;
}

function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

/** Runs a PostgreSQL tool, as the `postgres` user when we are root (initdb refuses root). */
function pgTool(bindir, tool, args, cwd) {
  const command = isRoot ? 'runuser' : join(bindir, tool);
  const argv = isRoot ? ['-u', 'postgres', '--', join(bindir, tool), ...args] : args;
  const result = spawnSync(command, argv, {
    cwd,
    encoding: 'utf8',
    env: { ...process.env, LC_ALL: 'C', LANG: 'C' },
  });
  if (result.error) throw new Fatal(`${tool}: ${result.error.message}`);
  return result;
}

/** This run's directory: { base, tmp, bindir } (bindir once a cluster is set up in base/data). */
let run = null;

function createRunDir() {
  const base = mkdtempSync(join(tmpdir(), TMP_PREFIX));
  run = { base, tmp: join(base, 'tmp'), bindir: null };
  writeFileSync(join(base, 'runner.pid'), String(process.pid));
  chmodSync(base, 0o755); // the postgres user must reach base/data
  mkdirSync(run.tmp);
  return run;
}

/** Stops the cluster (if any) and removes the run directory; synchronous and idempotent. */
function removeRunDir() {
  if (!run) return;
  const { base, bindir } = run;
  run = null;
  const data = join(base, 'data');
  if (bindir && existsSync(join(data, 'postmaster.pid'))) {
    const stop = pgTool(bindir, 'pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop'], base);
    if (stop.status !== 0) log(`pg_ctl stop failed (exit ${stop.status}): ${stop.stderr.trim()}`);
  }
  rmSync(base, { recursive: true, force: true });
}

function isAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return error.code === 'EPERM';
  }
}

/** Removes what runs killed outright left behind (SIGKILL gives no chance to clean up). */
function reapStale() {
  const dir = tmpdir();
  for (const name of readdirSync(dir)) {
    if (!name.startsWith(TMP_PREFIX)) continue;
    const base = join(dir, name);
    try {
      const owner = Number(readFileSync(join(base, 'runner.pid'), 'utf8'));
      if (!owner || isAlive(owner)) continue;
      const data = join(base, 'data');
      if (existsSync(join(data, 'postmaster.pid'))) {
        pgTool(findPgBindir(), 'pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop'], dir);
      }
      rmSync(base, { recursive: true, force: true });
      log(`removed what the killed run ${owner} left: ${base}`);
    } catch {
      // not ours, or someone else is cleaning it up
    }
  }
}

async function startCluster() {
  const t0 = performance.now();
  const bindir = findPgBindir();
  let owner = null;
  if (isRoot) {
    const id = (flag) => spawnSync('id', [flag, 'postgres'], { encoding: 'utf8' });
    const uid = id('-u');
    const gid = id('-g');
    if (uid.status !== 0 || gid.status !== 0) {
      throw new Fatal(
        'running as root, but there is no `postgres` OS user to run the test cluster as (initdb refuses root).\n' +
          '  Fix: useradd --system --create-home postgres   (apt-get install postgresql creates it),\n' +
          '       or set TEST_DATABASE_URL, or run as a normal user, or KESSAI_TEST_ENGINES=sqlite.',
      );
    }
    owner = { uid: Number(uid.stdout), gid: Number(gid.stdout) };
  }

  // data/ belongs to the postgres user; the socket lives there, as postgres must create its lock file.
  const { base } = run;
  const data = join(base, 'data');
  run.bindir = bindir;
  if (`${data}/.s.PGSQL.65535`.length > 100) {
    throw new Fatal(`the temp dir path is too long for a unix socket (${data}); set TMPDIR=/tmp`);
  }
  // initdb accepts an existing empty directory; create it here so its owner is right.
  mkdirSync(data, { mode: 0o700 });
  if (owner) chownSync(data, owner.uid, owner.gid);

  const init = pgTool(bindir, 'initdb', ['-D', data, '--no-sync', '-A', 'trust', '-U', 'postgres', '-E', 'UTF8', '--locale=C'], base);
  if (init.status !== 0) {
    throw new Fatal(`initdb failed (exit ${init.status}):\n${init.stdout}${init.stderr}\n  Fix the error above, or set TEST_DATABASE_URL, or KESSAI_TEST_ENGINES=sqlite.`);
  }

  const port = await freePort();
  const options = [
    `-k '${data}'`,
    `-p ${port}`,
    "-c listen_addresses=''",
    '-c fsync=off',
    '-c synchronous_commit=off',
    '-c full_page_writes=off',
    '-c max_connections=200',
  ].join(' ');
  const logFile = join(data, 'server.log');
  const start = pgTool(bindir, 'pg_ctl', ['-D', data, '-l', logFile, '-w', '-t', '60', '-o', options, 'start'], base);
  if (start.status !== 0) {
    const serverLog = existsSync(logFile) ? readFileSync(logFile, 'utf8') : '(no server log)';
    throw new Fatal(
      `pg_ctl start failed (exit ${start.status}):\n${start.stdout}${start.stderr}\n--- server log ---\n${serverLog}\n` +
        '  Fix the error above, or set TEST_DATABASE_URL, or KESSAI_TEST_ENGINES=sqlite.',
    );
  }
  const version = spawnSync(join(bindir, 'postgres'), ['--version'], { encoding: 'utf8' }).stdout?.trim() ?? '';
  const url = `postgres://postgres@localhost:${port}/postgres?host=${encodeURIComponent(data)}`;
  log(`PostgreSQL cluster started in ${seconds(performance.now() - t0)}: ${version} (${bindir}), socket ${data}, port ${port}`);
  return url;
}

// ---------------------------------------------------------------- run

let child = null;
let interrupted = null;

function finish(code) {
  try {
    removeRunDir();
  } catch (error) {
    log(`could not remove the test run's directory or cluster: ${error.message}`);
    if (code === 0) code = 1;
  }
  log(`total ${seconds(performance.now() - started)}`);
  process.exit(code);
}

for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => {
    interrupted = signal;
    if (child) child.kill(signal); // its exit handler cleans up
    else finish(130);
  });
}
// Last resort (an uncaught error).
process.on('exit', () => removeRunDir());

async function main() {
  const { files, flags } = selectFiles(process.argv.slice(2));
  const engines = wantedEngines();
  reapStale();
  const { tmp } = createRunDir();
  const env = { ...process.env, KESSAI_TEST_ENGINES: engines.join(','), TMPDIR: tmp };

  if (engines.includes('postgres')) {
    if (process.env.TEST_DATABASE_URL) log(`PostgreSQL: using TEST_DATABASE_URL`);
    else env.TEST_DATABASE_URL = await startCluster();
  } else {
    log('KESSAI_TEST_ENGINES=sqlite: PostgreSQL tests are NOT run');
  }
  if (interrupted) return finish(130);

  const concurrency = Math.max(2, Math.min(4, availableParallelism()));
  const args = ['--enable-source-maps', '--import', 'tsx', '--test', '--test-reporter=spec', `--test-concurrency=${concurrency}`, ...flags, ...files];
  log(`${files.length} test file(s), engines ${engines.join(', ')}, concurrency ${concurrency}`);
  child = spawn(process.execPath, args, { stdio: 'inherit', env, cwd: process.cwd() });
  child.on('error', (error) => {
    log(`could not start node: ${error.message}`);
    finish(1);
  });
  child.on('exit', (code, signal) => {
    child = null;
    if (interrupted) return finish(130);
    finish(code ?? (signal ? 1 : 0));
  });
}

main().catch((error) => {
  log(error instanceof Fatal ? `ERROR: ${error.message}` : `ERROR: ${error.stack ?? error}`);
  finish(1);
});
