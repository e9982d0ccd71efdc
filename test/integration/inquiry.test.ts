/**
 * The inquiry form as a customer meets it: every field labelled, bad input refused with the reason
 * next to its field and nothing stored; a good one stored and answered with its reference, then the
 * acknowledgement and the staff's copy delivered over SMTP — also when the mail server is down while
 * the customer writes (the form still succeeds; the mails follow once the server is back).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, it } from 'node:test';
import { FormClient, unescapeHtml } from '../helpers/browser.js';
import { forEachEngine } from '../helpers/db.js';
import { eventually } from '../helpers/eventually.js';
import { SmtpSink } from '../helpers/smtp.js';
import { startStore, type TestStore } from '../helpers/store.js';

const SHOP_ADDRESS = 'shop@example.jp';

forEachEngine('inquiry form', (engine) => {
  let store: TestStore;
  let smtp: SmtpSink;
  before(async () => {
    smtp = await SmtpSink.create();
    // No mail.staffAddress set: the staff's copy goes to the sender address.
    store = await startStore(engine, { KESSAI_SMTP_URL: smtp.url, KESSAI_MAIL_FROM: `デモショップ <${SHOP_ADDRESS}>`, KESSAI_TRUST_PROXY: 'loopback', KESSAI_MAIL_MAX_ATTEMPTS: '100' });
    store.startWorker();
  });
  after(async () => {
    await store?.close();
    await smtp?.stop();
  });

  let ip = 0;
  const client = () => new FormClient(store.url, { 'x-forwarded-for': `203.0.113.${++ip}` });
  const db = () => store.rt.ctx.db;
  const count = async (table: 'inquiries' | 'jobs') => Number((await db().selectFrom(table).select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow()).n);
  const good = () => ({ name: '山田 花子', email: `hanako-${randomBytes(4).toString('hex')}@example.jp`, category: 'shipping', orderNumber: 'ｋ２６０１２３－abcd2345', body: '届いた商品のケースが割れていました。\n交換できますか？' });

  /** The error shown for a field: next to it, announced, and tied to the input. */
  function fieldError(html: string, name: string): string | undefined {
    const error = new RegExp(`<p id="f-${name}-error" class="field-error" role="alert">([^<]*)</p>`).exec(html)?.[1];
    if (error === undefined) return undefined;
    const control = new RegExp(`<(?:input|select|textarea) id="f-${name}"[^>]*>`).exec(html)?.[0] ?? '';
    assert.match(control, /aria-invalid="true"/, `${name} is marked invalid`);
    assert.match(control, new RegExp(`aria-describedby="[^"]*f-${name}-error`), `${name} points at its error`);
    return unescapeHtml(error);
  }

  it('links from every page; every field has a label', async () => {
    const home = await client().get('/');
    assert.match(home.body, /<footer>[\s\S]*<a href="\/inquiry">お問い合わせ \/ Contact us<\/a>/);
    const form = await client().get('/inquiry');
    assert.equal(form.status, 200);
    assert.match(form.body, /<h1>お問い合わせ \/ Contact us<\/h1>/);
    for (const name of ['name', 'email', 'category', 'orderNumber', 'body']) {
      assert.match(form.body, new RegExp(`<label for="f-${name}">`), `${name} has a label`);
      assert.match(form.body, new RegExp(`id="f-${name}" name="${name}"`));
    }
  });

  it('refuses bad input with the reason next to each field, keeps what was typed, and stores nothing', async () => {
    const [inquiries, jobs] = [await count('inquiries'), await count('jobs')];
    const missing = await client().submit('/inquiry', '/inquiry', { name: '', email: '', category: '', body: '   ' });
    assert.equal(missing.status, 400);
    assert.match(fieldError(missing.body, 'name') ?? '', /入力してください \/ required/);
    assert.match(fieldError(missing.body, 'email') ?? '', /required|email address/);
    assert.match(fieldError(missing.body, 'category') ?? '', /選択してください/);
    assert.match(fieldError(missing.body, 'body') ?? '', /入力してください \/ required/);
    assert.equal(fieldError(missing.body, 'orderNumber'), undefined, 'the order number is optional');

    const long = await client().submit('/inquiry', '/inquiry', { ...good(), email: `${'a'.repeat(288)}@example.jp` });
    assert.equal(long.status, 400);
    assert.match(fieldError(long.body, 'email') ?? '', /254文字以内で入力してください \/ must be at most 254 characters/);
    assert.equal(fieldError(long.body, 'name'), undefined);
    assert.match(long.body, /<textarea id="f-body"[^>]*>届いた商品のケースが割れていました。\n交換できますか？<\/textarea>/, 'the message stays');

    const odd = await client().submit('/inquiry', '/inquiry', { ...good(), category: 'complaint', orderNumber: 'K26/0123' });
    assert.equal(odd.status, 400);
    assert.ok(fieldError(odd.body, 'category'), 'fieldError(odd.body, \'category\')');
    assert.match(fieldError(odd.body, 'orderNumber') ?? '', /英数字とハイフン/);

    const forged = await client().post('/inquiry', good());
    assert.equal(forged.status, 403, 'no CSRF token, no inquiry');

    assert.equal(await count('inquiries'), inquiries, 'nothing stored');
    assert.equal(await count('jobs'), jobs, 'nothing queued');
  });

  it('stores the inquiry, answers with its reference, then mails the customer and the staff', async () => {
    const input = good();
    const res = await client().submit('/inquiry', '/inquiry', input);
    assert.equal(res.status, 200, res.body);
    const row = await db().selectFrom('inquiries').selectAll().where('email', '=', input.email).executeTakeFirstOrThrow();
    assert.match(row.reference, /^Q\d{6}-[2-9A-HJ-NP-Z]{8}$/);
    assert.deepEqual([row.shop_id, row.name, row.category, row.order_number, row.body], ['default', '山田 花子', 'shipping', 'K260123-ABCD2345', input.body]);
    assert.match(res.body, new RegExp(`<h1>お問い合わせを受け付けました`));
    assert.match(res.body, new RegExp(`<strong class="reference">${row.reference}</strong>`));

    const [ack, staff] = await eventually(async () => {
      const a = smtp.to(input.email).find((m) => m.subject?.includes(row.reference));
      const s = smtp.to(SHOP_ADDRESS).find((m) => m.subject?.includes(row.reference));
      assert.ok(a && s, 'both mails arrived');
      return [a, s];
    }, 15_000);
    assert.match(ack.subject ?? '', /お問い合わせを受け付けました/);
    assert.match(ack.text ?? '', /山田 花子 様/);
    assert.ok(!ack.text?.includes('ケースが割れて'), 'the customer\'s text is not mailed back to whatever address was typed');
    assert.ok(staff.text?.includes(input.body), 'the staff read the message');
    assert.equal(staff.replyTo?.value[0]?.address, input.email, 'a reply reaches the customer');
  });

  it('with the mail server down the form still succeeds and the inquiry is kept; both mails follow when it is back', async () => {
    await smtp.stop();
    const input = good();
    let reference: string;
    try {
      const res = await client().submit('/inquiry', '/inquiry', input);
      assert.equal(res.status, 200, res.body);
      const row = await db().selectFrom('inquiries').selectAll().where('email', '=', input.email).executeTakeFirstOrThrow();
      reference = row.reference;
      assert.match(res.body, new RegExp(reference));
      await eventually(async () => {
        const failed = await db().selectFrom('mail_log').select('template').where('outcome', '=', 'failed').where('subject', 'like', `%${reference}%`).execute();
        assert.deepEqual([...new Set(failed.map((f) => f.template))].sort(), ['inquiry_received', 'inquiry_staff'], 'both mails were tried and failed');
      }, 10_000);
    } finally {
      await smtp.start();
    }
    await eventually(async () => {
      assert.equal(smtp.to(input.email).filter((m) => m.subject?.includes(reference)).length, 1);
      assert.equal(smtp.to(SHOP_ADDRESS).filter((m) => m.subject?.includes(reference)).length, 1);
    }, 15_000);
  });

  it('limits how often one address can send the form', async () => {
    const b = client();
    let last;
    for (let i = 0; i < 11; i++) last = await b.submit('/inquiry', '/inquiry', good());
    assert.equal(last!.status, 429);
    assert.match(last!.body, /試行回数が多すぎます/);
    assert.ok(Number(last!.headers.get('retry-after')) > 0, 'Number(last!.headers.get(\'retry-after\')) > 0');
  });
});
