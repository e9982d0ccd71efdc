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
