import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ConfigError, loadConfig, readDotEnv } from '../../src/config.js';

const tempDir = () => mkdtempSync(join(tmpdir(), 'kessai-config-'));

describe('configuration', () => {
  it('works with no configuration at all: SQLite under the data dir, sandbox on, generated dev secrets kept', () => {
    const dir = tempDir();
    const first = loadConfig({ KESSAI_DATA_DIR: dir });
    assert.equal(first.engine, 'sqlite');
    assert.equal(first.databaseUrl, join(dir, 'kessai.db'));
    assert.equal(first.sandbox, true);
    assert.equal(first.port, 3000);
    assert.equal(first.publicUrl, 'http://localhost:3000');
    assert.equal(first.masterKey.length, 32);
    assert.ok(existsSync(join(dir, 'master.key')), 'existsSync(join(dir, \'master.key\'))');
    assert.ok(first.warnings.some((w) => w.includes('KESSAI_MASTER_KEY') && w.includes('production must set its own')), 'first.warnings.some((w) => w.includes(\'KESSAI_MASTER_KEY\') && w.includes(\'production mu…');
    // The same key on the next start, or stored secrets would no longer open.
    const second = loadConfig({ KESSAI_DATA_DIR: dir });
    assert.deepEqual(second.masterKey, first.masterKey);
    assert.equal(second.adminToken, first.adminToken);
  });

  it('names every bad key, one line each', () => {
    assert.throws(
      () => loadConfig({ KESSAI_DATA_DIR: tempDir(), PORT: 'eighty', KESSAI_SANDBOX: 'maybe', KESSAI_MASTER_KEY: 'short', KESSAI_PUBLIC_URL: 'ftp://x' }),
      (error: unknown) => {
        assert.ok(error instanceof ConfigError, 'error instanceof ConfigError');
        const keys = error.problems.map((p) => p.split(':')[0]).sort();
        assert.deepEqual(keys, ['KESSAI_MASTER_KEY', 'KESSAI_PUBLIC_URL', 'KESSAI_SANDBOX', 'PORT']);
        assert.match(error.message, /KESSAI_SANDBOX: must be on or off/);
        return true;
      },
    );
  });

  it('trusts only named proxies, never every hop', () => {
    assert.deepEqual(loadConfig({ KESSAI_DATA_DIR: tempDir(), KESSAI_TRUST_PROXY: 'loopback, 10.0.0.0/8' }).trustProxy, ['loopback', '10.0.0.0/8']);
    assert.deepEqual(loadConfig({ KESSAI_DATA_DIR: tempDir() }).trustProxy, []);
    assert.throws(() => loadConfig({ KESSAI_DATA_DIR: tempDir(), KESSAI_TRUST_PROXY: 'on' }), /KESSAI_TRUST_PROXY.*: must list the proxies to trust/);
  });

  it('production (sandbox off) must bring its own secrets and mail server', () => {
    assert.throws(
      () => loadConfig({ KESSAI_DATA_DIR: tempDir(), KESSAI_SANDBOX: 'off' }),
      (error: unknown) => {
        assert.ok(error instanceof ConfigError, 'error instanceof ConfigError');
        assert.deepEqual(error.problems.map((p) => p.split(':')[0]).sort(), ['KESSAI_ADMIN_TOKEN', 'KESSAI_MASTER_KEY', 'KESSAI_SMTP_URL']);
        return true;
      },
    );
    const ok = loadConfig({
      KESSAI_SANDBOX: 'off',
      KESSAI_MASTER_KEY: 'ab'.repeat(32),
      KESSAI_ADMIN_TOKEN: 'x'.repeat(32),
      KESSAI_SMTP_URL: 'smtp://mail.example.jp:587',
      DATABASE_URL: 'postgres://kessai@db.example.jp/kessai',
      KESSAI_PUBLIC_URL: 'https://shop.example.jp/',
    });
    assert.equal(ok.engine, 'postgres');
    assert.equal(ok.publicUrl, 'https://shop.example.jp');
    assert.deepEqual(ok.warnings, []);
  });

  it('reads the described store\'s own gateway keys for the default shop', () => {
    const c = loadConfig({ KESSAI_DATA_DIR: tempDir(), SBPS_MERCHANT_ID: '30132', SBPS_HASH_KEY: 'c48e0e9b32a2b2d6d8bea4c4c6b5d4e9', KOMOJU_SECRET_KEY: ' ' });
    assert.deepEqual(c.legacyShopEnv, { SBPS_MERCHANT_ID: '30132', SBPS_HASH_KEY: 'c48e0e9b32a2b2d6d8bea4c4c6b5d4e9' });
  });

  it('.env fills in what the environment does not say, and never overrides it', () => {
    const file = join(tempDir(), '.env');
    writeFileSync(file, 'PORT=4000\nLOG_LEVEL=debug\n# comment\nKESSAI_PUBLIC_URL="https://x.example.jp"\n');
    const env: NodeJS.ProcessEnv = { PORT: '5000' };
    readDotEnv(env, file);
    assert.equal(env.PORT, '5000');
    assert.equal(env.LOG_LEVEL, 'debug');
    assert.equal(env.KESSAI_PUBLIC_URL, 'https://x.example.jp');
    assert.ok(readFileSync(file, 'utf8').includes('PORT=4000'), 'readFileSync(file, \'utf8\').includes(\'PORT=4000\')');
  });
});
