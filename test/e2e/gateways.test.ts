import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { it, type TestContext } from 'node:test';
import type { Page } from 'playwright-core';
import { hashPassword } from '../../src/accounts/passwords.js';
import { komojuSandboxKeys } from '../../src/commerce/shops.js';
import { newId, nowIso } from '../../src/ids.js';
import { buyInBrowser, describeInBrowser } from '../helpers/chromium.js';
import { eventually } from '../helpers/eventually.js';

/*
 * The payment paths a customer can only prove in a browser: paying later at a convenience store
 * through SBPS, KOMOJU's webhook arriving before the customer comes back, and atone's modal for a
 * member — first as a new atone member (the token is kept), then skipping atone's log-in with that
 * token, and a browser that went away after atone approved (the order comes from the webhook alone).
 */

describeInBrowser('gateways in a real browser [sqlite]', (suite) => {
  const withPage = suite.withPage;

  const order = (page: Page, sku: string, provider: string, email?: string) => buyInBrowser(page, { sku, provider, email });

  async function expectState(page: Page, label: RegExp): Promise<void> {
    await page.waitForURL(/\/orders\/[^/?]+$/);
    // Polled from here: a predicate evaluated in the page would need 'unsafe-eval', which the CSP refuses.
    await eventually(async () => {
      assert.match((await page.locator('.state').textContent({ timeout: 1000 })) ?? '', label);
    }, 15_000, 100);
  }

  async function sandbox(path: string, body: unknown): Promise<void> {
    const res = await fetch(`${suite.store.url}/sandbox${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    assert.equal(res.status, 200, await res.text());
  }

  /** A verified member of the shop, as registration and the mailed link would leave it. */
  async function member(): Promise<{ email: string; password: string }> {
    const email = `member-${randomBytes(4).toString('hex')}@example.jp`;
    const password = 'ブラウザの長いパスワード';
    const at = nowIso();
    await suite.store.rt.ctx.db
      .insertInto('customers')
      .values({ id: newId('cus'), shop_id: 'default', email, name: '会員 花子', name_kana: null, phone: null, password_hash: await hashPassword(password), email_verified_at: at, created_at: at })
      .execute();
    return { email, password };
  }

  async function logIn(page: Page, who: { email: string; password: string }): Promise<void> {
    await page.goto('/account/login');
    await page.getByLabel('メールアドレス / Email address').fill(who.email);
    await page.getByLabel('パスワード / Password').fill(who.password);
    await page.getByRole('button', { name: 'ログイン / Log in' }).click();
    await page.waitForURL(/\/account$/);
  }

  async function withFaults(t: TestContext, path: string, faults: Record<string, unknown>, reset: Record<string, unknown>, body: () => Promise<void>): Promise<void> {
    await sandbox(path, faults);
    try {
      await body();
    } finally {
      await sandbox(path, reset).catch((error: unknown) => t.diagnostic(`could not reset ${path}: ${String(error)}`));
    }
  }

  it('SBPS convenience store: the payment number to take to the store, the order waits, then paid (PY)', async (t) => {
    await withPage(t, async (page) => {
      await order(page, 'demo-cd', 'sbps');
      await page.waitForURL(/\/sandbox\/sbps\/pay\//);
      await page.selectOption('form[action$="/webcvs"] select[name=store]', { index: 0 });
      await page.click('form[action$="/webcvs"] button[type=submit]');
      // SBPS shows the number first; the customer goes back to the shop by hand.
      const number = ((await page.locator('.cvs .number').textContent()) ?? '').trim();
      assert.match(number, /^\d{4}-\d{4}-\d{4}$/);
      await page.click('#sbps-return button[type=submit]');
      await expectState(page, /コンビニ/);
      const orderUrl = page.url();

      // Days later the customer pays at the store; SBPS sends PY.
      await page.goto('/sandbox/sbps/pending');
      await page.locator('tr', { hasText: number }).getByRole('button', { name: /入金する/ }).click();
      await page.goto(orderUrl);
      await expectState(page, /お支払い完了/);
    });
  });

  it('KOMOJU: the webhook lands while the customer is still on KOMOJU; coming back shows the paid order at once', async (t) => {
    await withFaults(t, '/komoju/api/faults', { noReturn: true }, { noReturn: false }, () =>
      withPage(t, async (page) => {
        await order(page, 'demo-ticket', 'komoju');
        await page.waitForURL(/\/sandbox\/komoju\/sessions\//);
        const sessionId = /\/sessions\/([^/?#]+)/.exec(page.url())![1]!;
        await page.fill('#pay-credit_card input[name=number]', '4111111111111111');
        await page.fill('#pay-credit_card input[name=month]', '12');
        await page.fill('#pay-credit_card input[name=year]', '2030');
        await page.fill('#pay-credit_card input[name=verification_value]', '123');
        await page.click('#pay-credit_card button[type=submit]');
        await page.getByText(/fault noReturn/).waitFor();

        // The store learns of the payment from the webhook alone.
        const attempt = await eventually(async () => {
          const row = await suite.store.rt.ctx.db
            .selectFrom('payment_attempts')
            .innerJoin('orders', 'orders.id', 'payment_attempts.order_id')
            .select(['orders.state', 'payment_attempts.id'])
            .where('payment_attempts.gateway_ref', '=', sessionId)
            .executeTakeFirst();
          assert.equal(row?.state, 'paid');
          return row!;
        }, 15_000, 100);

        // Then the customer comes back through the session's return URL.
        const { secretKey } = komojuSandboxKeys(suite.store.rt.ctx.config);
        const res = await fetch(`${suite.store.url}/sandbox/komoju/api/v1/sessions/${sessionId}`, { headers: { authorization: `Basic ${Buffer.from(`${secretKey}:`).toString('base64')}` } });
        const session = (await res.json()) as { return_url: string };
        assert.equal(res.status, 200, JSON.stringify(session));
        assert.match(session.return_url, new RegExp(`attempt=${attempt.id}`));
        await page.goto(`${session.return_url}${session.return_url.includes('?') ? '&' : '?'}session_id=${sessionId}`);
        await page.waitForURL(/\/orders\/[^/?]+$/);
        assert.match((await page.locator('.state').textContent()) ?? '', /お支払い完了/, 'paid on the first look, no "processing"');
        assert.equal(await page.locator('ol.tickets img.qr').count(), 1);
      }),
    );
  });

  it('atone for a member: a new atone account (its token kept), then the next order skips atone log-in', async (t) => {
    const who = await member();
    await withPage(t, async (page) => {
      await logIn(page, who);
      await order(page, 'demo-serial', 'atone', who.email);
      const modal = page.frameLocator('iframe[name=atone-sandbox]');
      const form = modal.locator('#atone-register');
      await form.getByLabel('お名前 / Name').fill('会員 花子');
      await form.getByLabel('メールアドレス / E-mail').fill(`atone-${randomBytes(4).toString('hex')}@example.jp`);
      await form.getByLabel('パスワード / Password').fill('atone-pass');
      await form.getByRole('button').click();
      await modal.locator('#atone-authorize button').click();
      await expectState(page, /お支払い完了/);

      await page.goto('/account');
      await eventually(async () => {
        await page.reload();
        assert.match((await page.locator('dl.linked').textContent()) ?? '', /atone（NP後払い）\s*連携済み/);
      }, 10_000, 200);

      // The second order: atone opens at the confirmation, signed in by the kept token.
      await order(page, 'demo-serial', 'atone', who.email);
      const again = page.frameLocator('iframe[name=atone-sandbox]');
      await again.locator('#atone-authorize button').waitFor();
      assert.equal(await again.locator('#atone-login').count(), 0, 'no atone log-in asked');
      await again.locator('#atone-authorize button').click();
      await expectState(page, /お支払い完了/);
    });
  });

  it('atone: the browser goes away after atone approved; the order is paid from the webhook alone', async (t) => {
    const who = await member();
    await withFaults(t, '/atone/api/faults', { dropBrowser: true }, { dropBrowser: false }, () =>
      withPage(t, async (page) => {
        await logIn(page, who);
        await order(page, 'demo-serial', 'atone', who.email);
        const modal = page.frameLocator('iframe[name=atone-sandbox]');
        await modal.locator('#atone-login input[name=email]').fill('taro@example.jp');
        await modal.locator('#atone-login input[name=password]').fill('password');
        await modal.locator('#atone-login button[type=submit]').click();
        await modal.locator('#atone-authorize button').click();
        await modal.getByText(/fault dropBrowser/).waitFor();
        assert.match(page.url(), /\/orders\/[^/]+\/atone$/, 'still on the atone page: the shop page got no callback');

        // Later the customer looks at the my page: the order is there, paid.
        await page.goto('/account');
        await eventually(async () => {
          await page.reload();
          const orders = page.locator('section.my-order');
          assert.equal(await orders.count(), 1);
          assert.match((await orders.first().textContent()) ?? '', /お支払い完了/);
        }, 15_000, 200);
      }),
    );
  });
});
