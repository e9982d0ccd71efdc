import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { seedDemo } from '../../src/commerce/demo.js';
import { loadConfig } from '../../src/config.js';
import { createRuntime, createServer, startWorker, type Runtime } from '../../src/runtime.js';
import type { FormClient } from './browser.js';
import { testDatabase, type Engine, type TestDatabase } from './db.js';
import { eventually } from './eventually.js';
import { readMails } from './mail.js';
import { freePort } from './net.js';

export const ADMIN_TOKEN = 'test-admin-token-0123456789abcdef';

export interface TestStore {
  rt: Runtime;
  app: FastifyInstance;
  /** http://127.0.0.1:<port> — the store and its sandbox, listening on loopback. */
  url: string;
  database: TestDatabase;
  dataDir: string;
  /** Starts the in-process job worker (tests that want to run jobs by hand leave it off). */
  startWorker(): void;
  close(): Promise<void>;
}

/**
 * The whole store as `kessai serve` runs it — real database, real HTTP on loopback, sandbox
 * gateways mounted — with the demo shop seeded. Logs are discarded unless KESSAI_TEST_LOG is set.
 */
export async function startStore(engine: Engine, env: Record<string, string> = {}): Promise<TestStore> {
  const database = await testDatabase(engine);
  const dataDir = mkdtempSync(join(tmpdir(), 'kessai-test-data-'));
  const port = await freePort();
  const config = loadConfig({
    DATABASE_URL: database.url,
    KESSAI_DATA_DIR: dataDir,
    KESSAI_MASTER_KEY: '00'.repeat(32),
    KESSAI_ADMIN_TOKEN: ADMIN_TOKEN,
    KESSAI_PUBLIC_URL: `http://127.0.0.1:${port}`,
    PORT: String(port),
    LOG_LEVEL: process.env.KESSAI_TEST_LOG ?? 'silent',
    ...env,
  });
  const sink = new Writable({ write: (_chunk, _enc, done) => done() });
  const rt = await createRuntime(config, { logDestination: process.env.KESSAI_TEST_LOG ? undefined : sink });
  await seedDemo(rt.ctx);
  const app = await createServer(rt);
  await app.listen({ port, host: '127.0.0.1' });
  let worker: { stop(): Promise<void> } | undefined;
  return {
    rt,
    app,
    url: `http://127.0.0.1:${port}`,
    database,
    dataDir,
    startWorker() {
      worker ??= startWorker(rt, { pollMs: 50, backoffBaseMs: 50, backoffCapMs: 500 });
    },
    async close() {
      await worker?.stop();
      await app.close();
      await rt.close();
      await database.drop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

// What the store recorded, read straight from its database.

export async function sku(store: TestStore, code: string) {
  return store.rt.ctx.db.selectFrom('skus').select(['on_hand', 'reserved']).where('shop_id', '=', 'default').where('code', '=', code).executeTakeFirstOrThrow();
}

export async function attempts(store: TestStore, orderId: string) {
  return store.rt.ctx.db.selectFrom('payment_attempts').selectAll().where('order_id', '=', orderId).orderBy('created_at').orderBy('id').execute();
}

export async function onlyAttempt(store: TestStore, orderId: string) {
  const all = await attempts(store, orderId);
  assert.equal(all.length, 1);
  return all[0]!;
}

/**
 * Waits until every notification the store has acknowledged is applied. A notification is answered
 * once it is recorded and applied right after (record, answer, apply), so a test that looks at
 * what a notification changed waits for this first.
 */
export async function notificationsApplied(store: TestStore, timeoutMs = 15_000): Promise<void> {
  await eventually(async () => {
    const waiting = await store.rt.ctx.db.selectFrom('payment_events').select('id').where('outcome', '=', 'received').execute();
    assert.deepEqual(waiting, [], 'recorded notifications not applied yet');
  }, timeoutMs);
}

/**
 * Makes a registered, verified and logged-in member through the account pages, as a person does:
 * register, open the link in the verification mail, log in. Answers the member's customer id.
 */
export async function registerMember(store: TestStore, b: FormClient, member: { email: string; name: string; password: string }): Promise<string> {
  const { email, name, password } = member;
  const registered = await b.submit('/account/register', '/account/register', { email, name, password });
  assert.equal(registered.status, 200, registered.body);
  const link = await eventually(async () => {
    const mail = readMails(store.dataDir).find((m) => m.name.startsWith('account_verify.') && new RegExp(`^To: ${email}$`, 'mi').test(m.head));
    const found = mail && new RegExp(`${store.url}(/account/verify\\?token=[\\w.-]+)`).exec(mail.text);
    assert.ok(found, `no verification mail to ${email} yet`);
    return found[1]!;
  }, 10_000);
  assert.equal((await b.submit(link, '/account/verify')).status, 200);
  assert.equal((await b.submit('/account/login', '/account/login', { email, password })).status, 303);
  const row = await store.rt.ctx.db.selectFrom('customers').select('id').where('email', '=', email).where('password_hash', 'is not', null).executeTakeFirstOrThrow();
  return row.id;
}
