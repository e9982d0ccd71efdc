import assert from 'node:assert/strict';
import { it } from 'node:test';
import type { Page } from 'playwright-core';
import { addToCart, buyInBrowser, describeInBrowser, enterDetails } from '../helpers/chromium.js';
import { eventually } from '../helpers/eventually.js';

/*
 * The demo shop in a real Chromium: a customer orders through the shop's pages, pays on the gateway's page
 * and comes back to the order page. Debian's chromium is used (`.ci/run` installs it); where no
 * Chromium exists these tests are not defined, and the run says so.
 */

describeInBrowser('checkout in a real browser [sqlite]', (suite) => {
  const withPage = suite.withPage;

    const order = (page: Page, sku: string, provider: string) => buyInBrowser(page, { sku, provider });

    async function payBySbpsCard(page: Page, card: string): Promise<void> {
      await page.waitForURL(/\/sandbox\/sbps\/pay\//);
      await page.fill('input[name=cc_number]', card);
      await page.fill('input[name=cc_expiration]', '12/30');
      await page.fill('input[name=security_code]', '123');
      await page.click('form[action$="/card"] button[type=submit]');
    }

    async function expectState(page: Page, label: RegExp): Promise<void> {
      await page.waitForURL(/\/orders\/[^/?]+$/);
      // The order page refreshes itself while the gateway's result is on its way. Polled from here:
      // a predicate evaluated in the page would need 'unsafe-eval', which the shop's CSP refuses.
      await eventually(async () => assert.match((await page.locator('.state').textContent({ timeout: 1000 })) ?? '', label), 15_000, 100);
    }

    it('SBPS credit card: the Shift_JIS hand-off, the card page and back to a paid order', async (t) => {
      await withPage(t, async (page) => {
        await order(page, 'demo-cd', 'sbps');
        await payBySbpsCard(page, '4111111111111111');
        await expectState(page, /お支払い完了/);
        assert.match((await page.textContent('main')) ?? '', /デモ シングルCD「決済の歌」/);
      });
    });

    it('SBPS decline, then paying again from the order page', async (t) => {
      await withPage(t, async (page) => {
        await order(page, 'demo-ticket', 'sbps');
        await payBySbpsCard(page, '4000000000000002');
        await expectState(page, /お支払い待ち/);
        await page.selectOption('select[name=provider]', 'sbps');
        await page.click('form[action$="/pay"] button[type=submit]');
        await payBySbpsCard(page, '4111111111111111');
        await expectState(page, /お支払い完了/);
      });
    });

    async function payByKomojuCard(page: Page, card: string): Promise<void> {
      await page.waitForURL(/\/sandbox\/komoju\/sessions\//);
      await page.fill('#pay-credit_card input[name=number]', card);
      await page.fill('#pay-credit_card input[name=month]', '12');
      await page.fill('#pay-credit_card input[name=year]', '2030');
      await page.fill('#pay-credit_card input[name=verification_value]', '123');
      await page.click('#pay-credit_card button[type=submit]');
    }

    it('KOMOJU card for a ticket: hosted page, back with session_id, paid, the ticket with its QR on the order page', async (t) => {
      await withPage(t, async (page) => {
        await order(page, 'demo-ticket', 'komoju');
        await payByKomojuCard(page, '4111111111111111');
        await expectState(page, /お支払い完了/);
        const qr = page.locator('ol.tickets img.qr');
        await qr.first().waitFor();
        assert.equal(await qr.count(), 1, 'one ticket for one unit');
        assert.ok(await qr.first().evaluate((img) => (img as unknown as { naturalWidth: number }).naturalWidth > 0), 'the QR image loads');
      });
    });

    it('KOMOJU konbini: instructions and deadline on the order page, paid at the store later', async (t) => {
      await withPage(t, async (page) => {
        await order(page, 'demo-serial', 'komoju');
        await page.waitForURL(/\/sandbox\/komoju\/sessions\//);
        await page.selectOption('#pay-konbini select[name=store]', 'lawson');
        await page.click('#pay-konbini button[type=submit]');
        await expectState(page, /コンビニ/);
        const text = (await page.textContent('main')) ?? '';
        assert.match(text, /お支払い期限/);
        assert.match(text, /ローソン \/ Lawson/);
        const orderUrl = page.url();
        await page.click('dl.instructions a');
        await page.click('#pay-at-store button');
        await page.goto(orderUrl);
        await expectState(page, /お支払い完了/);
      });
    });

    it('the postcode fills the address; an unknown one leaves the fields to type', async (t) => {
      await withPage(t, async (page) => {
        await addToCart(page, 'demo-cd');
        await enterDetails(page, 'taro@example.jp', '山田 太郎');
        await page.waitForURL(/\/checkout\/address$/);
        await page.fill('input[name=postcode]', '060-0001');
        await eventually(async () => assert.equal(await page.inputValue('input[name=city]'), '札幌市中央区'), 10_000, 50);
        assert.equal(await page.inputValue('input[name=prefecture]'), '北海道');
        assert.equal(await page.inputValue('input[name=line1]'), '北一条西');
        await page.fill('input[name=postcode]', '000-0000');
        await eventually(async () => assert.match((await page.textContent('.postcode-note')) ?? '', /by hand/), 10_000, 50);
        await page.fill('input[name=city]', '手入力市');
        assert.equal(await page.inputValue('input[name=city]'), '手入力市', 'still editable');
      });
    });

    it('atone: the modal in the page, log in as a test member, authorize, back to a paid order', async (t) => {
      await withPage(t, async (page) => {
        await order(page, 'demo-serial', 'atone');
        const modal = page.frameLocator('iframe[name=atone-sandbox]');
        await modal.locator('#atone-login input[name=email]').fill('taro@example.jp');
        await modal.locator('#atone-login input[name=password]').fill('password');
        await modal.locator('#atone-login button[type=submit]').click();
        await modal.locator('#atone-authorize button').click();
        await expectState(page, /お支払い完了/);
      });
    });

    it('testpay konbini: waiting for payment with a receipt number, paid later', async (t) => {
      await withPage(t, async (page) => {
        await order(page, 'demo-serial', 'testpay');
        await page.waitForURL(/\/sandbox\/testpay\/pay\//);
        const payUrl = page.url();
        await page.click('form[action$="/konbini"] button');
        await expectState(page, /コンビニ/);
        assert.match((await page.textContent('main')) ?? '', /払込番号 \/ Receipt: \d+/);
        const orderUrl = page.url();
        // Days later the customer pays at the store; the gateway tells the shop.
        await page.goto(payUrl);
        await page.click('form[action$="/konbini-paid"] button');
        await page.goto(orderUrl);
        await expectState(page, /お支払い完了/);
      });
    });
  });
