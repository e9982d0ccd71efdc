import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { Writable } from 'node:stream';
import { DEMO_PRODUCTS } from '../../src/commerce/demo.js';
import { ORDER_STATES } from '../../src/commerce/order-machine.js';
import { createOrder } from '../../src/commerce/orders.js';
import { loadConfig } from '../../src/config.js';
import { migrations } from '../../src/db/migrations/index.js';
import { applyFact } from '../../src/payments/apply-fact.js';
import { createRuntime } from '../../src/runtime.js';
import { ENGINES, testDatabase } from '../helpers/db.js';

// The command as users get it: the built bin (built once here, as `npm start` does).
const ROOT = join(import.meta.dirname, '../..');
const MAIN = join(ROOT, 'dist/cli/main.js');

function kessai(args: string[], env: Record<string, string>) {
  const result = spawnSync(process.execPath, [MAIN, ...args], {
    env: { PATH: process.env.PATH ?? '', LOG_LEVEL: 'warn', ...env },
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { code: result.status, out: result.stdout, err: result.stderr };
}

function sqliteEnv() {
  const dir = mkdtempSync(join(tmpdir(), 'kessai-cli-'));
  return { KESSAI_DATA_DIR: dir, DATABASE_URL: join(dir, 'kessai.db') };
}

describe('kessai CLI', () => {
  before(() => {
    const build = spawnSync('npm', ['run', 'build'], { cwd: ROOT, encoding: 'utf8' });
    assert.equal(build.status, 0, `npm run build failed:\n${build.stdout}${build.stderr}`);
  });

  it('migrates up, reports status, and migrates down', () => {
    const env = sqliteEnv();
    assert.match(kessai(['migrate', 'status'], env).out, /pending {2}0001_initial/);
    const up = kessai(['migrate'], env);
    assert.equal(up.code, 0, up.err);
    assert.match(up.out, /applied: 0001_initial/);
    assert.match(kessai(['migrate', 'status'], env).out, /applied {2}0001_initial/);
    assert.match(kessai(['migrate', 'up'], env).out, /nothing to do/);
    assert.match(kessai(['migrate', 'down'], env).out, new RegExp(`reverted: ${Object.keys(migrations).at(-1)}$`, 'm'), 'down reverts the newest migration only');
    const bad = kessai(['migrate', 'sideways'], env);
    assert.notEqual(bad.code, 0);
    assert.match(bad.err, /Allowed choices are up, down, status/);
  });

  it('stops on bad configuration with one line per problem', () => {
    const r = kessai(['migrate', 'status'], { ...sqliteEnv(), PORT: 'abc', KESSAI_SANDBOX: 'perhaps' });
    assert.equal(r.code, 1);
    assert.match(r.err, /invalid configuration:\n {2}PORT: .*\n {2}KESSAI_SANDBOX: must be on or off/);
  });

  it('creates and configures shops; a bad setting is refused with its name', () => {
    const env = sqliteEnv();
    assert.equal(kessai(['shop', 'create', 'nagoya', '--name', '名古屋店'], env).code, 0);
    assert.match(kessai(['shop', 'list'], env).out, /nagoya\t名古屋店/);
    const set = kessai(['shop', 'set', 'nagoya', 'sbps.merchantId=30132', 'sbps.hashKey=abcdefgh12345678'], env);
    assert.equal(set.code, 0, set.err);
    const show = kessai(['shop', 'show', 'nagoya'], env).out;
    assert.match(show, /sbps\.merchantId\s+30132\s+shop/);
    assert.match(show, /sbps\.hashKey\s+\*\*\*\*5678\s+shop/);
    assert.doesNotMatch(show, /abcdefgh12345678/);
    const bad = kessai(['shop', 'set', 'nagoya', 'sbps.enabled=maybe'], env);
    assert.equal(bad.code, 1);
    assert.match(bad.err, /sbps\.enabled: must be true or false/);
    assert.match(kessai(['shop', 'create', 'nagoya', '--name', 'x'], env).err, /already exists/);
  });

  it('seeds the demo shop once', () => {
    const env = sqliteEnv();
    assert.match(kessai(['seed-demo'], env).out, /created: shop default, product demo-cd, product demo-serial, product demo-ticket, product demo-fanclub/);
    assert.match(kessai(['seed-demo'], env).out, /already present/);
  });

  it('looks up orders and queues refunds with an explicit amount, refusing what cannot be refunded', async () => {
    const env = sqliteEnv();
    assert.equal(kessai(['seed-demo'], env).code, 0);
    assert.match(kessai(['order', 'list'], env).out, /no orders/);
    // A paid order, made in this process the way the store makes one.
    const rt = await createRuntime(loadConfig({ ...env, LOG_LEVEL: 'silent' }), { logDestination: new Writable({ write: (_c, _e, done) => done() }) });
    let number: string;
    try {
      const { order, attemptId } = await createOrder(rt.ctx, { shop: 'default', customer: { email: 'c@example.jp', name: '客' }, lines: [{ sku: 'demo-ticket', quantity: 1 }], payment: { provider: 'testpay' } });
      number = order.number;
      const attempt = await rt.ctx.db.selectFrom('payment_attempts').select('merchant_ref').where('id', '=', attemptId).executeTakeFirstOrThrow();
      await applyFact(rt.ctx, 'default', 'testpay', { eventKey: 'evt-cli-1', merchantRef: attempt.merchant_ref, fact: { type: 'captured', amount: 6800 }, payload: {} }, 'notification');
    } finally {
      await rt.close();
    }
    assert.match(kessai(['order', 'list', '--state', 'paid'], env).out, new RegExp(`${number}\tdefault\tpaid\t6,800円`));
    assert.match(kessai(['order', 'show', number], env).out, /"state": "paid"/);
    const tooMuch = kessai(['order', 'refund', number, '--amount', '7000'], env);
    assert.equal(tooMuch.code, 1);
    assert.match(tooMuch.err, /amount: exceeds the refundable 6800 yen/);
    assert.match(kessai(['order', 'refund', number, '--amount', 'lots'], env).err, /amount: must be a positive whole number of yen/);
    const ok = kessai(['order', 'refund', number, '--amount', '300'], env);
    assert.equal(ok.code, 0, ok.err);
    assert.match(ok.out, /refund of 300円 queued/);
    assert.match(kessai(['jobs', 'list', '--kind', 'payment.refund'], env).out, /payment\.refund\tpending/);
    assert.match(kessai(['order', 'refund', number, '--amount', '6600'], env).err, /exceeds the refundable 6500 yen/);
    assert.match(kessai(['order', 'show', 'K000000-NOPE'], env).err, /order "K000000-NOPE" does not exist/);
  });

  it('answers --help for every command', () => {
    for (const args of [['--help'], ['worker', '--help'], ['shop', 'set', '--help']]) {
      const r = kessai(args, sqliteEnv());
      assert.equal(r.code, 0, `${args.join(' ')}: ${r.err}`);
      assert.match(r.out, /Usage: kessai/);
    }
  });

  if (ENGINES.includes('postgres')) {
    it('migrates a PostgreSQL database', async () => {
      const db = await testDatabase('postgres', { migrate: false });
      try {
        const r = kessai(['migrate'], { ...sqliteEnv(), DATABASE_URL: db.url });
        assert.equal(r.code, 0, r.err);
        assert.match(kessai(['migrate', 'status'], { ...sqliteEnv(), DATABASE_URL: db.url }).out, /applied {2}0001_initial/);
      } finally {
        await db.drop();
      }
    });
  }

  it('lists orders with amounts as shops write them, and refuses a state that does not exist', async () => {
    const env = sqliteEnv();
    assert.equal(kessai(['seed-demo'], env).code, 0);
    const rt = await createRuntime(loadConfig({ ...env, LOG_LEVEL: 'silent' }), { logDestination: new Writable({ write: (_c, _e, done) => done() }) });
    let number: string;
    try {
      ({ order: { number } } = await createOrder(rt.ctx, { shop: 'default', customer: { email: 'two@example.jp', name: '客' }, lines: [{ sku: 'demo-ticket', quantity: 2 }], payment: { provider: 'testpay' } }));
    } finally {
      await rt.close();
    }
    const list = kessai(['order', 'list'], env);
    assert.equal(list.code, 0, list.err);
    assert.match(list.out, new RegExp(`^${number}\tdefault\tpending_payment\t13,600円\ttwo@example\\.jp$`, 'm'));

    const bogus = kessai(['order', 'list', '--state', 'bogus'], env);
    assert.notEqual(bogus.code, 0);
    assert.equal(bogus.out, '', 'no "no orders"');
    assert.match(bogus.err, /option '--state <state>' argument 'bogus' is invalid/);
    assert.match(bogus.err, new RegExp(`Allowed choices are ${ORDER_STATES.join(', ')}`));
  });

  it('stops quietly when whoever reads its output stops reading (`kessai shop show default | head -1`)', async () => {
    const env = sqliteEnv();
    assert.equal(kessai(['seed-demo'], env).code, 0);
    const child = spawn(process.execPath, [MAIN, 'shop', 'show', 'default'], { env: { PATH: process.env.PATH ?? '', LOG_LEVEL: 'warn', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    // The reading end closes before the command has written its first line.
    child.stdout.destroy();
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
    assert.equal(err, '', 'no stack trace');
    assert.equal(code, 0);
  });

  it('help says what sandbox and seed-demo do', () => {
    const help = (args: string[]) => {
      const r = kessai([...args, '--help'], sqliteEnv());
      assert.equal(r.code, 0, r.err);
      return r.out.replace(/\s+/g, ' ');
    };
    const sandbox = help(['sandbox']);
    for (const party of ['SBPS', 'atone', 'KOMOJU', 'testpay', 'Chekicha', 'geocoder']) assert.match(sandbox, new RegExp(`\\b${party}\\b`), `sandbox --help names ${party}`);
    const seed = help(['seed-demo']);
    for (const { code } of DEMO_PRODUCTS) assert.match(seed, new RegExp(`\\b${code}\\b`), `seed-demo --help names ${code}`);
  });

  it('every URL the start banner prints opens a page', async () => {
    const port = 30000 + Math.floor(Math.random() * 20000);
    const child = spawn(process.execPath, [MAIN, 'start', '--port', String(port)], { env: { PATH: process.env.PATH ?? '', LOG_LEVEL: 'warn', ...sqliteEnv() } });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      const deadline = Date.now() + 60_000;
      // The banner: from its first line to the blank line that ends it.
      const banner = () => /kessai is running[\s\S]*?\n\n/.exec(out)?.[0];
      while (!banner() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      const urls = banner()?.match(/https?:\/\/[^\s,;)]+/g) ?? [];
      assert.ok(urls.some((u) => u.includes('/sandbox/')), `the banner lists the sandbox:\n${out}`);
      const answers = await Promise.all(urls.map(async (url) => `${url} ${(await fetch(url)).status}`));
      assert.deepEqual(answers, urls.map((url) => `${url} 200`));
    } finally {
      child.kill('SIGTERM');
    }
    assert.equal(await exited, 0);
  });

  it('serves, answers health checks, and stops cleanly on SIGTERM', async () => {
    const env = { ...sqliteEnv(), PORT: '0' };
    const port = 30000 + Math.floor(Math.random() * 20000);
    const child = spawn(process.execPath, [MAIN, 'start', '--port', String(port)], { env: { PATH: process.env.PATH ?? '', LOG_LEVEL: 'warn', ...env } });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      const deadline = Date.now() + 60_000;
      while (!out.includes('kessai is running') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      assert.match(out, /shop {7}http:\/\/localhost:\d+\//, `no start banner; stderr:\n${err}`);
      const health = await fetch(`http://127.0.0.1:${port}/readyz`);
      assert.equal(health.status, 200);
      const products = (await (await fetch(`http://127.0.0.1:${port}/api/shops/default/products`)).json()) as { products: { code: string }[] };
      // Every demo product is on sale. (Their order is by creation time, then code: products seeded
      // within one millisecond fall back to code order, so the order is not asserted here.)
      assert.deepEqual(products.products.map((p) => p.code).sort(), ['demo-cd', 'demo-fanclub', 'demo-serial', 'demo-ticket']);
    } finally {
      child.kill('SIGTERM');
    }
    assert.equal(await exited, 0);
  });
});
