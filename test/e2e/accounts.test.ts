import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { it } from 'node:test';
import type { Page } from 'playwright-core';
import { addToCart, describeInBrowser } from '../helpers/chromium.js';
import { eventually } from '../helpers/eventually.js';
import { readMails } from '../helpers/mail.js';

/*
 * A customer's account in a real Chromium: register, the verification mail read from the sandbox's
 * mail folder, verify, log in, buy, the my page; and a forgotten password reset by mail. Every input
 * is reached by its label, as a screen reader would. Like checkout.test.ts, not defined where no
 * Chromium exists.
 */

describeInBrowser('customer accounts in a real browser [sqlite]', (suite) => {
  const withPage = suite.withPage;

    /** The link to `path` in the newest mail of `template` to `to`, as the customer finds it in their mailbox. */
    async function linkFromMail(template: string, to: string, path: string): Promise<string> {
      return eventually(async () => {
        const mail = readMails(suite.store.dataDir).find((m) => m.name.startsWith(`${template}.`) && new RegExp(`^To: ${to}$`, 'mi').test(m.head));
        assert.ok(mail, `no ${template} mail to ${to} yet`);
        const link = new RegExp(`${suite.store.url}${path}\\?token=[\\w.-]+`).exec(mail.text)?.[0];
        assert.ok(link, `no link in:\n${mail.text}`);
        return link;
      }, 10_000);
    }

    async function logIn(page: Page, email: string, password: string): Promise<void> {
      await page.goto('/');
      await page.getByRole('link', { name: 'ログイン / Log in' }).click();
      await page.getByLabel('メールアドレス / Email address').fill(email);
      await page.getByLabel('パスワード / Password').fill(password);
      await page.getByRole('button', { name: 'ログイン / Log in' }).click();
    }

    it('register → verification mail → verify → log in → buy with testpay → the my page shows the order', async (t) => {
      await withPage(t, async (page) => {
        const email = `browser-${randomBytes(4).toString('hex')}@example.jp`;
        await page.goto('/');
        await page.getByRole('link', { name: '会員登録 / Register' }).click();
        await page.getByLabel('メールアドレス / Email address').fill(email);
        await page.getByLabel('お名前 / Name').fill('ブラウザ 花子');
        const password = page.getByLabel('パスワード / Password');
        // Too short: the reason is announced next to the field and tied to it.
        await password.fill('short');
        await page.getByRole('button', { name: '登録する / Register' }).click();
        const alert = page.locator('#f-password-error');
        await alert.waitFor();
        assert.equal(await alert.getAttribute('role'), 'alert');
        assert.match((await password.getAttribute('aria-describedby')) ?? '', /f-password-error/);
        assert.equal(await page.getByLabel('メールアドレス / Email address').inputValue(), email, 'what was typed stays');

        await page.getByLabel('パスワード / Password').fill('ブラウザの長いパスワード');
        await page.getByRole('button', { name: '登録する / Register' }).click();
        await page.getByRole('heading', { name: /確認メールを送信しました/ }).waitFor();

        await page.goto(await linkFromMail('account_verify', email, '/account/verify'));
        await page.getByRole('button', { name: /確認する/ }).click();
        await page.getByRole('heading', { name: /メールアドレスを確認しました/ }).waitFor();

        await logIn(page, email, 'ブラウザの長いパスワード');
        await page.waitForURL(/\/account$/);
        await page.getByRole('heading', { level: 1, name: /マイページ/ }).waitFor();
        assert.match((await page.textContent('main')) ?? '', /ご注文はまだありません/);

        await addToCart(page, 'demo-ticket');
        await page.getByRole('link', { name: 'ご購入手続きへ / Proceed to checkout' }).click();
        assert.equal(await page.getByLabel('メールアドレス / Email address', { exact: true }).inputValue(), email, 'the checkout knows the customer');
        assert.equal(await page.getByLabel('お名前 / Name', { exact: true }).inputValue(), 'ブラウザ 花子');
        await page.getByRole('button', { name: '次へ / Next' }).click();
        await page.locator('input[name=provider][value="testpay"]').check();
        await page.getByRole('button', { name: '次へ / Next' }).click();
        await page.getByRole('button', { name: '注文を確定して支払う / Place order and pay' }).click();
        await page.waitForURL(/\/sandbox\/testpay\/pay\//);
        await page.click('form[action$="/card"] button');
        await page.waitForURL(/\/orders\/[^/?]+$/);
        await page.waitForFunction(`() => /お支払い完了/.test(document.querySelector('.state')?.textContent ?? '')`, undefined, { timeout: 15_000 });
        const number = ((await page.textContent('h1')) ?? '').replace('ご注文', '').trim();

        await page.getByRole('link', { name: 'マイページ / My page' }).click();
        const order = page.getByRole('region', { name: new RegExp(number) });
        await order.waitFor();
        assert.match((await order.textContent()) ?? '', /お支払い完了/);
        assert.match((await order.textContent()) ?? '', /デモ ライブチケット/);
        assert.equal(await order.locator('img.qr').count(), 1, 'the ticket with its QR');

        await page.getByRole('button', { name: 'ログアウト / Log out' }).click();
        await page.getByRole('link', { name: 'ログイン / Log in' }).waitFor();
        await page.goto('/account');
        await page.waitForURL(/\/account\/login/);
      });
    });

    it('a forgotten password: the mailed link sets a new one; the old no longer works', async (t) => {
      await withPage(t, async (page) => {
        const email = `reset-${randomBytes(4).toString('hex')}@example.jp`;
        await page.goto('/account/register');
        await page.getByLabel('メールアドレス / Email address').fill(email);
        await page.getByLabel('お名前 / Name').fill('再設定 太郎');
        await page.getByLabel('パスワード / Password').fill('the first password');
        await page.getByRole('button', { name: '登録する / Register' }).click();
        await page.goto(await linkFromMail('account_verify', email, '/account/verify'));
        await page.getByRole('button', { name: /確認する/ }).click();
        await page.getByRole('heading', { name: /メールアドレスを確認しました/ }).waitFor();

        await page.goto('/account/login');
        await page.getByRole('link', { name: /パスワードをお忘れの方/ }).click();
        await page.getByLabel('メールアドレス / Email address').fill(email);
        await page.getByRole('button', { name: /送信する/ }).click();
        await page.getByRole('heading', { name: /メールをご確認ください/ }).waitFor();

        const link = await linkFromMail('account_reset', email, '/account/password/reset');
        await page.goto(link);
        await page.getByLabel('新しいパスワード / New password').fill('the second password');
        await page.getByRole('button', { name: /パスワードを変更する/ }).click();
        await page.getByRole('heading', { name: /パスワードを変更しました/ }).waitFor();

        await logIn(page, email, 'the first password');
        await page.getByRole('alert').filter({ hasText: /パスワードが正しくありません/ }).waitFor();
        await page.getByLabel('パスワード / Password').fill('the second password');
        await page.getByRole('button', { name: 'ログイン / Log in' }).click();
        await page.waitForURL(/\/account$/);

        await page.goto(link);
        await page.getByRole('heading', { name: /リンクが無効です/ }).waitFor();
      });
    });
  });
