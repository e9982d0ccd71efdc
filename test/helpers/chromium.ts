import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, type TestContext } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { startStore, type TestStore } from './store.js';

/*
 * The store in a real Chromium (Debian's; `.ci/run` installs it): one store with its worker and one
 * browser per describe block, a fresh context per test, a screenshot kept when a test fails. Where
 * no Chromium exists the block is not defined, and the run says so.
 */

const CHROMIUM = process.env.KESSAI_CHROMIUM ?? ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p));
const SHOTS = join(import.meta.dirname, '../../test-results');

export interface BrowserSuite {
  readonly store: TestStore;
  withPage(t: TestContext, fn: (page: Page) => Promise<void>): Promise<void>;
}

/** `env`: configuration the store starts with, made when the suite starts (a port of a server the test runs). */
export function describeInBrowser(name: string, fn: (suite: BrowserSuite) => void, opts: { env?: () => Promise<Record<string, string>> } = {}): void {
  if (!CHROMIUM) {
    process.stderr.write(`[e2e] no Chromium found (install Debian's chromium or set KESSAI_CHROMIUM): "${name}" not run\n`);
    return;
  }
  describe(name, () => {
    let store: TestStore | undefined;
    let browser: Browser | undefined;
    before(async () => {
      store = await startStore('sqlite', await opts.env?.());
      store.startWorker();
      browser = await chromium.launch({
        executablePath: CHROMIUM,
        args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-quic', '--no-first-run'],
      });
    });
    after(async () => {
      await browser?.close();
      await store?.close();
    });
    fn({
      get store() {
        if (!store) throw new Error('the store exists only inside tests');
        return store;
      },
      async withPage(t, body) {
        const context = await browser!.newContext({ baseURL: store!.url, locale: 'ja-JP' });
        const page = await context.newPage();
        page.setDefaultTimeout(15_000);
        try {
          await body(page);
        } catch (error) {
          mkdirSync(SHOTS, { recursive: true });
          await page.screenshot({ path: join(SHOTS, `${t.name.replace(/[^\w-]+/g, '_')}.png`), fullPage: true }).catch(() => {});
          throw error;
        } finally {
          await context.close();
        }
      },
    });
  });
}

export interface BrowserPurchase {
  sku: string;
  quantity?: number;
  email?: string;
  name?: string;
  provider: string;
}

/** The product page's add-to-cart form, then the cart page; every input reached by its label. */
export async function addToCart(page: Page, sku: string, quantity = 1): Promise<void> {
  await page.goto(`/products/${sku}`);
  await page.getByLabel('数量 / Quantity', { exact: true }).fill(String(quantity));
  await page.getByRole('button', { name: 'カートに入れる / Add to cart' }).click();
  await page.waitForURL(/\/cart$/);
}

/** From the cart through the customer step; leaves the browser on the next step (address or payment). */
export async function enterDetails(page: Page, email: string, name: string): Promise<void> {
  await page.getByRole('link', { name: 'ご購入手続きへ / Proceed to checkout' }).click();
  await page.waitForURL(/\/checkout\/customer$/);
  await page.getByLabel('メールアドレス / Email address', { exact: true }).fill(email);
  await page.getByLabel('お名前 / Name', { exact: true }).fill(name);
  await page.getByRole('button', { name: '次へ / Next' }).click();
  await page.waitForURL(/\/checkout\/(address|payment)$/);
}

/**
 * Buys as a customer does in the shop: product page, cart, the checkout steps (an address in Tokyo
 * when the cart has physical goods), the confirm button. Leaves the browser wherever the hand-off
 * goes: the gateway's page, or the atone modal over the shop's page.
 */
export async function buyInBrowser(page: Page, p: BrowserPurchase): Promise<void> {
  await addToCart(page, p.sku, p.quantity);
  await enterDetails(page, p.email ?? 'taro@example.jp', p.name ?? '山田 太郎');
  if (page.url().endsWith('/checkout/address')) {
    for (const [label, value] of [
      ['郵便番号 / Postcode', '100-0001'],
      ['都道府県 / Prefecture', '東京都'],
      ['市区町村 / City', '千代田区'],
      ['番地 / Street address', '千代田1-1'],
      ['電話番号 / Phone', '03-1234-5678'],
    ] as const) {
      await page.getByLabel(label, { exact: true }).fill(value);
    }
    await page.getByRole('button', { name: '次へ / Next' }).click();
    await page.waitForURL(/\/checkout\/payment$/);
  }
  await page.locator(`input[name=provider][value="${p.provider}"]`).check();
  await page.getByRole('button', { name: '次へ / Next' }).click();
  await page.waitForURL(/\/checkout\/confirm$/);
  await page.getByRole('button', { name: '注文を確定して支払う / Place order and pay' }).click();
}
