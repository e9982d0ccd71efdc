/**
 * Postcode → address: Japan Post's offline data by default, Google's Geocoding API (the sandbox's
 * stand-in, over real HTTP on loopback) per shop, and Japan Post's data again whenever Google fails.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { sandboxSecret, setShopSettings } from '../../src/commerce/shops.js';
import { GeocoderError, googleLookup, japanPostLookup, normalisePostcode, townName } from '../../src/integrations/postcode/index.js';
import { FormClient } from '../helpers/browser.js';
import { startStore, type TestStore } from '../helpers/store.js';

describe('postcodes', () => {
  it('accepts what people type and refuses what is not 7 digits', () => {
    for (const input of ['1000001', '100-0001', '〒100-0001', '１００－０００１', ' 100 0001 ', '100ー0001']) assert.equal(normalisePostcode(input), '1000001', input);
    for (const input of ['100-001', '10000011', 'abc-defg', '', '100_0001']) assert.equal(normalisePostcode(input), undefined, input);
  });

  it('Japan Post data: a town code, a designated city, a business code, a code that does not exist', () => {
    assert.deepEqual(
      (({ prefecture, city, town, source }) => ({ prefecture, city, town, source }))(japanPostLookup('1000001')!),
      { prefecture: '東京都', city: '千代田区', town: '千代田', source: 'japanpost' },
    );
    const sapporo = japanPostLookup('0600001')!;
    assert.deepEqual([sapporo.prefecture, sapporo.city, sapporo.town], ['北海道', '札幌市中央区', '北一条西']);
    const business = japanPostLookup('0608621')!;
    assert.equal(business.prefecture, '北海道');
    assert.ok(business.company && business.company.length > 0, 'a business code names the company');
    assert.equal(japanPostLookup('0000000'), undefined);
  });

  it('KEN_ALL\'s notes are not part of the town: "以下に掲載がない場合" and bracketed remarks', () => {
    assert.equal(townName('北一条西（１〜１９丁目）'), '北一条西');
    assert.equal(townName('大手町（次のビルを除く）'), '大手町');
    assert.equal(townName('以下に掲載がない場合'), '');
    assert.equal(townName('千代田'), '千代田');
    // 1000000: 東京都千代田区 "以下に掲載がない場合".
    const found = japanPostLookup('1000000')!;
    assert.equal(found.city, '千代田区');
    assert.equal(found.town, '');
  });
});

describe('postcodes through the store [sqlite]', () => {
  let store: TestStore;
  let geocoder: string;
  before(async () => {
    store = await startStore('sqlite');
    geocoder = `${store.url}/sandbox/geocoder`;
  });
  after(async () => {
    await store?.close();
  });

  const lookup = (postcode: string) => fetch(`${store.url}/api/address?postcode=${encodeURIComponent(postcode)}`);
  const faults = async (set: Record<string, unknown>) => assert.equal((await fetch(`${geocoder}/api/faults`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(set) })).status, 200);

  it('GET /api/address answers the address, 404 with a message for an unknown code, 400 naming the field for a malformed one', async () => {
    const ok = await lookup('〒100-0001');
    assert.equal(ok.status, 200);
    const { address } = (await ok.json()) as { address: Record<string, string> };
    assert.deepEqual([address.postcode, address.prefecture, address.city, address.town, address.source], ['1000001', '東京都', '千代田区', '千代田', 'japanpost']);

    const unknown = await lookup('000-0000');
    assert.equal(unknown.status, 404);
    assert.match(((await unknown.json()) as { error: { message: string } }).error.message, /enter the address by hand/);

    const bad = await lookup('100-001');
    assert.equal(bad.status, 400);
    const body = (await bad.json()) as { error: { problems: { field: string; reason: string }[] } };
    assert.deepEqual(body.error.problems.map((p) => p.field), ['postcode']);
  });

  it('the Google provider answers through the Geocoding API; a designated city keeps its ward in the city line', async () => {
    const key = sandboxSecret(store.rt.ctx.config, 'geocoder');
    const found = await googleLookup('0600001', { apiKey: key, url: `${geocoder}/maps/api/geocode/json` });
    assert.deepEqual(found && [found.prefecture, found.city, found.town, found.source], ['北海道', '札幌市中央区', '北一条西', 'google']);
    assert.equal(await googleLookup('0000000', { apiKey: key, url: `${geocoder}/maps/api/geocode/json` }), undefined);
    await assert.rejects(googleLookup('1000001', { apiKey: 'wrong-key', url: `${geocoder}/maps/api/geocode/json` }), (e: unknown) => e instanceof GeocoderError && /REQUEST_DENIED/.test(e.message));

    await setShopSettings(store.rt.ctx, 'default', { 'postcode.provider': 'google' });
    try {
      const res = await lookup('1000001');
      assert.equal(((await res.json()) as { address: { source: string } }).address.source, 'google');
    } finally {
      await setShopSettings(store.rt.ctx, 'default', { 'postcode.provider': '' });
    }
  });

  it('when Google is down, slow or over its quota, Japan Post answers and the checkout form still fills', async () => {
    await setShopSettings(store.rt.ctx, 'default', { 'postcode.provider': 'google' });
    try {
      for (const fault of [{ down: true }, { overQueryLimit: true }, { delayMs: 4000 }]) {
        await faults(fault);
        const res = await lookup('1000001');
        assert.equal(res.status, 200, JSON.stringify(fault));
        const { address } = (await res.json()) as { address: { source: string; city: string } };
        assert.deepEqual([address.source, address.city], ['japanpost', '千代田区'], JSON.stringify(fault));
        await faults({ down: false, overQueryLimit: false, delayMs: 0 });
      }
    } finally {
      await faults({ down: false, overQueryLimit: false, delayMs: 0 });
      await setShopSettings(store.rt.ctx, 'default', { 'postcode.provider': '' });
    }
  });

  it('the checkout\'s address step carries the form fill script and the postcode field', async () => {
    const html = await addressStep(store);
    assert.match(html, /<form[^>]*data-postcode/);
    assert.match(html, /<input id="f-postcode" name="postcode"/);
    assert.match(html, /<script src="\/assets\/postcode.js"><\/script>/);
    const script = await fetch(`${store.url}/assets/postcode.js`);
    assert.equal(script.status, 200);
    assert.match(await script.text(), /\/api\/address\?postcode=/);
  });
});

/** The address step's page, reached as a customer reaches it: a CD in the cart, the details given. */
async function addressStep(store: TestStore): Promise<string> {
  const b = new FormClient(store.url);
  await b.submit('/products/demo-cd', '/cart/add', { quantity: '1' });
  const details = await b.submit('/checkout/customer', '/checkout/customer', { email: 'postcode@example.jp', name: '郵便 太郎' });
  assert.equal(details.location, '/checkout/address');
  return (await b.get('/checkout/address')).body;
}
