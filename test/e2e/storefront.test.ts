import assert from 'node:assert/strict';
import { it } from 'node:test';
import type { Page } from 'playwright-core';
import { describeInBrowser } from '../helpers/chromium.js';
import { eventually } from '../helpers/eventually.js';

/*
 * The storefront in a real Chromium, page by page as a customer goes: the list, a product, the
 * cart, each checkout step, the gateway and the finished order. On every page an accessibility
 * check runs inside the page: every input has a label, headings never skip a level, and a field
 * marked invalid names its error through aria-describedby. Not defined where no Chromium exists.
 */

/** The few DOM shapes the check reads (the project compiles without the DOM library). */
interface El {
  id: string;
  tagName: string;
  type?: string;
  textContent: string | null;
  outerHTML: string;
  getAttribute(name: string): string | null;
  closest(selector: string): El | null;
  classList: { contains(name: string): boolean };
}
interface Doc {
  querySelectorAll(selector: string): ArrayLike<El>;
  querySelector(selector: string): El | null;
  getElementById(id: string): El | null;
}

/**
 * Runs in the page (passed to page.evaluate as a function, never as a string: the CSP forbids
 * eval). Written without inner functions, so nothing the test's compiler adds is needed there.
 */
const audit = (): { problems: string[]; invalid: number; headings: number } => {
  const doc = (globalThis as unknown as { document: Doc }).document;
  const problems: string[] = [];
  const controls = Array.from(doc.querySelectorAll('input, select, textarea')).filter((el) => el.getAttribute('type') !== 'hidden');
  for (const el of controls) {
    const byFor = el.id ? doc.querySelector(`label[for="${el.id}"]`) : null;
    const label = byFor ?? el.closest('label');
    const named = (label?.textContent ?? '').trim() || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby');
    if (!named) problems.push(`no label: ${el.outerHTML.slice(0, 120)}`);
  }
  const headings = Array.from(doc.querySelectorAll('h1, h2, h3, h4, h5, h6'));
  let last = 0;
  for (const h of headings) {
    const level = Number(h.tagName.slice(1));
    if (level > last + 1) problems.push(`h${level} after h${last}: ${(h.textContent ?? '').trim()}`);
    last = level;
  }
  if (headings.filter((h) => h.tagName === 'H1').length !== 1) problems.push('not exactly one h1');
  const invalid = Array.from(doc.querySelectorAll('[aria-invalid="true"]'));
  for (const el of invalid) {
    const ids = (el.getAttribute('aria-describedby') ?? '').split(/\s+/).filter(Boolean);
    const errors = ids.map((id) => doc.getElementById(id)).filter((d) => d !== null && d.classList.contains('field-error') && (d.textContent ?? '').trim() !== '');
    if (errors.length === 0) problems.push(`${el.id} is invalid but no error describes it`);
  }
  return { problems, invalid: invalid.length, headings: headings.length };
};

describeInBrowser('the storefront in a real browser [sqlite]', (suite) => {
  const withPage = suite.withPage;

  async function accessible(page: Page): Promise<{ invalid: number }> {
    const result = await page.evaluate(audit);
    assert.deepEqual(result.problems, [], `accessibility on ${page.url()}`);
    assert.ok(result.headings > 0, 'result.headings > 0');
    return result;
  }

  it('browse, a product, the cart, each step, pay at the gateway, the finished order; every page passes the check', async (t) => {
    await withPage(t, async (page) => {
      await page.goto('/');
      await accessible(page);
      assert.match((await page.textContent('main')) ?? '', /1,320円（税込/);
      await page.getByRole('link', { name: 'デモ シングルCD「決済の歌」' }).click();
      await page.waitForURL(/\/products\/demo-cd$/);
      await accessible(page);
      assert.match((await page.textContent('.facts')) ?? '', /4988001234562/);

      await page.getByLabel('数量 / Quantity', { exact: true }).fill('2');
      await page.getByRole('button', { name: 'カートに入れる / Add to cart' }).click();
      await page.waitForURL(/\/cart$/);
      await accessible(page);
      assert.equal(await page.textContent('td.total'), '2,640円');

      await page.getByRole('link', { name: 'ご購入手続きへ / Proceed to checkout' }).click();
      await page.waitForURL(/\/checkout\/customer$/);
      await accessible(page);
      const email = page.getByLabel('メールアドレス / Email address', { exact: true });
      await email.fill(`${'a'.repeat(289)}@example.jp`);
      await page.getByLabel('お名前 / Name', { exact: true }).fill('ブラウザ 太郎');
      await page.getByRole('button', { name: '次へ / Next' }).click();
      await page.locator('.error-summary').waitFor();
      const refused = await accessible(page);
      assert.equal(refused.invalid, 1, 'the email field is marked invalid');
      assert.equal(await email.getAttribute('aria-invalid'), 'true');
      const describedBy = (await email.getAttribute('aria-describedby')) ?? '';
      assert.match((await page.locator(`[id="${describedBy.split(' ').find((id) => id.endsWith('-error'))}"]`).textContent()) ?? '', /at most 254 characters/);
      assert.equal(await page.getByLabel('お名前 / Name', { exact: true }).inputValue(), 'ブラウザ 太郎', 'what was typed is kept');

      await email.fill('browser-taro@example.jp');
      await page.getByRole('button', { name: '次へ / Next' }).click();
      await page.waitForURL(/\/checkout\/address$/);
      await accessible(page);
      // Full-width digits: the page's script looks the address up, the server normalises what is sent.
      await page.getByLabel('郵便番号 / Postcode', { exact: true }).fill('１００－０００１');
      await eventually(async () => assert.equal(await page.getByLabel('市区町村 / City', { exact: true }).inputValue(), '千代田区'), 10_000, 50);
      assert.equal(await page.getByLabel('都道府県 / Prefecture', { exact: true }).inputValue(), '東京都');
      await page.getByLabel('番地 / Street address', { exact: true }).fill('千代田1-1');
      await page.getByLabel('電話番号 / Phone', { exact: true }).fill('03-1234-5678');
      await page.getByRole('button', { name: '次へ / Next' }).click();
      await page.waitForURL(/\/checkout\/payment$/);
      await accessible(page);

      await page.getByLabel(/テスト決済/).check();
      await page.getByRole('button', { name: '次へ / Next' }).click();
      await page.waitForURL(/\/checkout\/confirm$/);
      await accessible(page);
      const summary = (await page.textContent('main')) ?? '';
      assert.match(summary, /〒100-0001/);
      assert.match(summary, /2,640円/);

      await page.getByRole('button', { name: '注文を確定して支払う / Place order and pay' }).click();
      await page.waitForURL(/\/sandbox\/testpay\/pay\//);
      await page.click('form[action$="/card"] button');
      await page.waitForURL(/\/orders\/[^/?]+$/);
      // Polled from here: a predicate evaluated in the page would need 'unsafe-eval'.
      await eventually(async () => assert.match((await page.locator('.state').textContent({ timeout: 1000 })) ?? '', /お支払い完了/), 15_000, 100);
      await accessible(page);
      assert.match((await page.textContent('main')) ?? '', /デモ シングルCD「決済の歌」/);

      await page.goto('/cart');
      assert.match((await page.textContent('main')) ?? '', /カートは空です/, 'the cart is empty after the order');
    });
  });
});
