import assert from 'node:assert/strict';
import { after, it } from 'node:test';
import { describeInBrowser } from '../helpers/chromium.js';
import { eventually } from '../helpers/eventually.js';
import { SmtpSink } from '../helpers/smtp.js';

/*
 * The inquiry form in a real Chromium while the mail server is down: the reason for a bad address
 * next to its field, then the thank-you page with the reference; the acknowledgement and the staff's
 * copy arrive once the server is back. Fields are reached by their labels, as a screen reader would.
 */

let smtp: SmtpSink | undefined;

describeInBrowser(
  'inquiry form with the mail server down [sqlite]',
  (suite) => {
    after(async () => {
      await smtp?.stop();
    });

    it('the inquiry is kept and answered at once; both mails are sent after SMTP returns', async (t) => {
      await suite.withPage(t, async (page) => {
        const email = 'toiawase@example.jp';
        await page.goto('/');
        await page.getByRole('link', { name: 'お問い合わせ / Contact us' }).click();
        await page.getByRole('heading', { level: 1, name: 'お問い合わせ / Contact us' }).waitFor();
        await page.getByLabel('お名前 / Name').fill('問合 花子');
        const address = page.getByLabel('メールアドレス / Email address');
        await address.fill(`${'a'.repeat(288)}@example.jp`);
        await page.getByLabel('お問い合わせの種類 / Topic').selectOption({ label: '配送について / Delivery' });
        await page.getByLabel('ご注文番号 / Order number').fill('K260123-ABCD2345');
        await page.getByLabel('お問い合わせ内容 / Your message').fill('届いた商品のケースが割れていました。');
        await page.getByRole('button', { name: '送信する / Send' }).click();

        // An address of 300 characters: refused by the server, the reason next to the field.
        const error = page.locator('#f-email-error');
        await error.waitFor();
        assert.match((await error.textContent()) ?? '', /254文字以内/);
        assert.match((await address.getAttribute('aria-describedby')) ?? '', /f-email-error/);
        assert.equal(await page.getByLabel('お問い合わせ内容 / Your message').inputValue(), '届いた商品のケースが割れていました。', 'the message stays');

        await address.fill(email);
        await page.getByRole('button', { name: '送信する / Send' }).click();
        await page.getByRole('heading', { level: 1, name: /お問い合わせを受け付けました/ }).waitFor();
        const reference = ((await page.locator('.reference').textContent()) ?? '').trim();
        assert.match(reference, /^Q\d{6}-[2-9A-HJ-NP-Z]{8}$/);

        const { db } = suite.store.rt.ctx;
        const row = await db.selectFrom('inquiries').selectAll().where('reference', '=', reference).executeTakeFirstOrThrow();
        assert.equal(row.email, email);
        await eventually(async () => {
          const failed = await db.selectFrom('mail_log').select('template').where('outcome', '=', 'failed').where('subject', 'like', `%${reference}%`).execute();
          assert.equal(new Set(failed.map((f) => f.template)).size, 2, 'both mails tried while the server is down');
        }, 10_000);
        assert.equal(smtp!.received.length, 0);

        await smtp!.start();
        await eventually(async () => {
          assert.equal(smtp!.to(email).filter((m) => m.subject?.includes(reference)).length, 1, 'the acknowledgement');
          assert.equal(smtp!.to('staff@example.jp').filter((m) => m.subject?.includes(reference)).length, 1, 'the staff\'s copy');
        }, 15_000);
      });
    });
  },
  {
    env: async () => {
      smtp = await SmtpSink.create({ running: false });
      // Enough attempts (50–500 ms apart in tests) that the outage outlasts no mail.
      return { KESSAI_SMTP_URL: smtp.url, KESSAI_MAIL_FROM: 'kessai demo <staff@example.jp>', KESSAI_MAIL_MAX_ATTEMPTS: '100' };
    },
  },
);
