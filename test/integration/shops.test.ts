import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { it } from 'node:test';
import { createShop, describeShop, getShopSettings, setShopSettings } from '../../src/commerce/shops.js';
import { loadConfig } from '../../src/config.js';
import type { Context } from '../../src/context.js';
import { KessaiError } from '../../src/errors.js';
import { createLogger, Metrics } from '../../src/observability.js';
import { forEachEngine, useTestDatabase } from '../helpers/db.js';

function contextFor(db: Context['db'], engine: Context['engine'], env: Record<string, string> = {}): Context {
  // Production settings: no sandbox fallbacks, so only what the shop and the environment say counts.
  const config = loadConfig({
    KESSAI_DATA_DIR: mkdtempSync(join(tmpdir(), 'kessai-shop-')),
    KESSAI_MASTER_KEY: '11'.repeat(32),
    KESSAI_SANDBOX: 'off',
    KESSAI_ADMIN_TOKEN: 'a'.repeat(32),
    KESSAI_SMTP_URL: 'smtp://127.0.0.1:2525',
    ...env,
  });
  const log = createLogger('silent', new Writable({ write: (_c, _e, done) => done() }));
  return { config, db, engine, log, metrics: new Metrics() };
}

const HASH_KEY = 'c48e0e9b32a2b2d6d8bea4c4c6b5d4e9ab12';

forEachEngine('shop settings', (engine) => {
  const t = useTestDatabase(engine);

  it('keeps secrets sealed at rest and masked when shown, in clear only for the gateway adapter', async () => {
    const ctx = contextFor(t.db, engine);
    await createShop(ctx, { id: 'tokyo', name: '東京店' });
    await setShopSettings(ctx, 'tokyo', { 'sbps.enabled': 'true', 'sbps.merchantId': '30132', 'sbps.hashKey': HASH_KEY });
    const row = await t.db.selectFrom('shops').selectAll().where('id', '=', 'tokyo').executeTakeFirstOrThrow();
    assert.ok(!row.settings.includes(HASH_KEY) && !(row.secrets ?? '').includes(HASH_KEY), 'the hash key is not stored in clear');
    assert.match(row.secrets ?? '', /^v1\./);
    const view = await describeShop(ctx, 'tokyo');
    const hashKey = view.settings.find((s) => s.key === 'sbps.hashKey');
    assert.deepEqual(hashKey, { key: 'sbps.hashKey', value: '****ab12', source: 'shop', description: hashKey?.description });
    assert.ok(!JSON.stringify(view).includes(HASH_KEY), '!JSON.stringify(view).includes(HASH_KEY)');
    const settings = await getShopSettings(ctx, 'tokyo');
    assert.equal(settings['sbps.hashKey'], HASH_KEY);
    assert.equal(settings['sbps.enabled'], true);
    assert.equal(settings['sbps.merchantId'], '30132');
    // Clearing a value with an empty string.
    await setShopSettings(ctx, 'tokyo', { 'sbps.hashKey': '' });
    assert.equal((await getShopSettings(ctx, 'tokyo'))['sbps.hashKey'], undefined);
  });

  it('refuses bad settings all or nothing, naming each key', async () => {
    const ctx = contextFor(t.db, engine);
    await createShop(ctx, { id: 'osaka', name: '大阪店' });
    await assert.rejects(
      setShopSettings(ctx, 'osaka', { 'sbps.merchantId': '30132', 'sbps.enabled': 'maybe', 'sbps.gatewayUrl': 'not a url', 'nope.key': 'x' }),
      (error: unknown) => {
        assert.ok(error instanceof KessaiError, 'error instanceof KessaiError');
        assert.deepEqual(error.problems.map((p) => p.field).sort(), ['nope.key', 'sbps.enabled', 'sbps.gatewayUrl']);
        return true;
      },
    );
    assert.equal((await getShopSettings(ctx, 'osaka'))['sbps.merchantId'], undefined, 'the valid key was not written either');
    await assert.rejects(createShop(ctx, { id: 'osaka', name: 'again' }), /already exists/);
    await assert.rejects(createShop(ctx, { id: 'Bad Id', name: 'x' }), (e: unknown) => e instanceof KessaiError && e.problems[0]?.field === 'id');
    await assert.rejects(setShopSettings(ctx, 'nowhere', { 'sbps.enabled': 'true' }), /shop "nowhere" does not exist/);
  });

  it('the default shop falls back to the described store\'s environment keys; the shop\'s own value wins', async () => {
    const ctx = contextFor(t.db, engine, { SBPS_MERCHANT_ID: '19788', SBPS_HASH_KEY: HASH_KEY, KOMOJU_SECRET_KEY: 'sk_test_abcdefgh' });
    await createShop(ctx, { id: 'default', name: 'デフォルト' });
    await createShop(ctx, { id: 'other', name: 'other' });
    const view = await describeShop(ctx, 'default');
    assert.deepEqual(
      view.settings.filter((s) => s.source === 'environment').map((s) => [s.key, s.value]),
      [['sbps.merchantId', '19788'], ['sbps.hashKey', '****ab12'], ['komoju.secretKey', '****efgh']],
    );
    assert.equal((await getShopSettings(ctx, 'other'))['sbps.merchantId'], undefined, 'only the default shop reads them');
    await setShopSettings(ctx, 'default', { 'sbps.merchantId': '30132' });
    assert.equal((await getShopSettings(ctx, 'default'))['sbps.merchantId'], '30132');
  });

  it('a different master key cannot open stored secrets, and says so', async () => {
    const ctx = contextFor(t.db, engine);
    await createShop(ctx, { id: 'kyoto', name: '京都店' });
    await setShopSettings(ctx, 'kyoto', { 'komoju.secretKey': 'sk_live_0123456789' });
    const other = { ...ctx, config: { ...ctx.config, masterKey: Buffer.alloc(32, 7) } };
    await assert.rejects(getShopSettings(other, 'kyoto'), /KESSAI_MASTER_KEY differs/);
  });
});
