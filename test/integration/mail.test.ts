/**
 * Transactional mail as it leaves the store: every template, rendered by the one `mail.send` job and
 * delivered over SMTP to a real server on loopback, read back as a mail client reads it (Japanese
 * subjects and text intact, a plain-text part always). The server refusing for a while, being down,
 * and refusing a recipient for good; the mail log's row per attempt; the admin API over it.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { createOrder } from '../../src/commerce/orders.js';
import { setShopSettings } from '../../src/commerce/shops.js';
import { createMailer } from '../../src/integrations/mail/index.js';
import { MAIL_TEMPLATES } from '../../src/jobs/mail.js';
import { enqueue } from '../../src/jobs/outbox.js';
import { forEachEngine } from '../helpers/db.js';
import { eventually } from '../helpers/eventually.js';
import { SmtpSink } from '../helpers/smtp.js';
import { ADMIN_TOKEN, notificationsApplied, startStore, type TestStore } from '../helpers/store.js';

const ADDRESS = { name: '山田 花子', postcode: '150-0001', prefecture: '東京都', city: '渋谷区', line1: '神宮前1-1-1', phone: '090-1234-5678' };
const STAFF = 'staff@example.jp';

forEachEngine('transactional mail over SMTP', (engine) => {
  let store: TestStore;
  let smtp: SmtpSink;
  before(async () => {
    smtp = await SmtpSink.create();
    // Enough attempts (50–500 ms apart in tests) that no mail dead-letters during an outage.
    store = await startStore(engine, { KESSAI_SMTP_URL: smtp.url, KESSAI_MAIL_MAX_ATTEMPTS: '100' });
    await setShopSettings(store.rt.ctx, 'default', { 'mail.staffAddress': STAFF });
    store.startWorker();
  });
  after(async () => {
    await store?.close();
    await smtp?.stop();
  });

  const db = () => store.rt.ctx.db;
  const unique = () => randomBytes(4).toString('hex');

  /** Queues a mail as the store does and returns its job's id. */
  async function queue(payload: { template: string } & Record<string, unknown>): Promise<string> {
    const key = `test:${payload.template}:${unique()}`;
    await enqueue(db(), { kind: 'mail.send', payload, dedupeKey: key });
    return (await db().selectFrom('jobs').select('id').where('dedupe_key', '=', key).executeTakeFirstOrThrow()).id;
  }

  async function settled(jobId: string) {
    return eventually(async () => {
      const job = await db().selectFrom('jobs').selectAll().where('id', '=', jobId).executeTakeFirstOrThrow();
      assert.ok(job.state === 'done' || job.state === 'dead', `job ${jobId} is ${job.state} (${job.last_error})`);
      return job;
    }, 15_000);
  }

  const logOf = (jobId: string) => db().selectFrom('mail_log').selectAll().where('job_id', '=', jobId).orderBy('attempt').execute();
  const receivedWithId = (messageId: string) => smtp.received.filter((m) => m.messageId === messageId);

  const lottery = (template: string, email = 'fan@example.jp') => ({
    template,
    shopId: 'default',
    applicationId: `LA-${unique()}`,
    email,
    name: '推し 活子',
    lotteryName: '春のツアー先行抽選',
    productName: 'ライブチケット 東京公演',
    quantity: 2,
    resultAt: '2026-04-01T03:00:00.000Z',
    amount: 17600,
    paymentDeadline: '2026-04-05T14:59:00.000Z',
    payUrl: 'https://shop.example.jp/lottery/pay/abc',
  });

  it('every template renders in Japanese with a plain-text part and is delivered over SMTP, one mail log row each', async () => {
    const customerId = `cus_mail${unique()}`;
    const email = `hanako-${unique()}@example.jp`;
    await db().insertInto('customers').values({ id: customerId, shop_id: 'default', email, name: '山田 花子', name_kana: null, phone: null, password_hash: 'scrypt$registered', email_verified_at: null, created_at: new Date().toISOString() }).execute();
    const order = await createOrder(store.rt.ctx, { shop: 'default', customer: { email, name: '山田 花子' }, shippingAddress: ADDRESS, lines: [{ sku: 'demo-cd', quantity: 1 }], payment: { provider: 'testpay' } });
    const orderId = order.order.id;
    const inquiryId = `inq_mail${unique()}`;
    await db().insertInto('inquiries').values({ id: inquiryId, shop_id: 'default', reference: `Q260101-${unique().toUpperCase()}`, name: '山田 花子', email, category: 'shipping', order_number: order.order.number, body: '届いた商品のケースが割れていました。', created_at: new Date().toISOString() }).execute();

    // template → [payload fields, recipient, in the subject, in the text]
    const samples: Record<string, [Record<string, unknown>, string, string, string]> = {
      account_verify: [{ customerId }, email, 'メールアドレスの確認', '山田 花子 様'],
      account_exists: [{ customerId }, email, 'すでにご登録があります', 'すでに登録されています'],
      account_reset: [{ shopId: 'default', email }, email, 'パスワード再設定', '新しいパスワードを設定してください'],
      account_email_change: [{ customerId, newEmail: 'new@example.jp' }, 'new@example.jp', '新しいメールアドレスの確認', 'このアドレスに変更する'],
      account_email_changed: [{ customerId, oldEmail: 'old@example.jp' }, 'old@example.jp', 'メールアドレスが変更されました', `${email} に変更されました`],
      account_password_changed: [{ customerId }, email, 'パスワードが変更されました', 'ログアウトしました'],
      order_paid: [{ orderId }, email, 'ご注文ありがとうございます', 'お支払いを確認しました'],
      payment_instructions: [{ orderId }, email, 'お支払いのご案内', 'お支払い期限までにお支払いください'],
      refund: [{ orderId }, email, '返金のお知らせ', '返金を行いました'],
      order_cancelled: [{ orderId }, email, 'ご注文キャンセルのお知らせ', 'キャンセルされました'],
      order_shipped: [{ orderId }, email, '商品発送のお知らせ', '〒150-0001 東京都渋谷区神宮前1-1-1'],
      renewal_unpaid: [{ orderId }, email, '定期購入のお支払いができませんでした', 'お問い合わせフォームからご連絡ください'],
      lottery_applied: [lottery('lottery_applied'), 'fan@example.jp', '抽選お申し込み受付', 'ライブチケット 東京公演 × 2'],
      lottery_updated: [lottery('lottery_updated'), 'fan@example.jp', '抽選お申し込み内容の変更', '現在の内容は次のとおりです'],
      lottery_won: [lottery('lottery_won'), 'fan@example.jp', '当選のお知らせ', 'お支払い金額 / Amount: 17,600円（税込）'],
      inquiry_received: [{ inquiryId }, email, 'お問い合わせを受け付けました', '担当者よりご連絡いたします'],
      inquiry_staff: [{ inquiryId }, STAFF, 'お問い合わせ', '届いた商品のケースが割れていました。'],
      chart_alert: [{ to: 'ops@example.jp', subject: '[kessai] Oricon report for 2026-01-15 was not sent (shop default)', text: 'オリコン: 接続できませんでした', id: `chart-alert.test.${unique()}` }, 'ops@example.jp', 'Oricon report', 'オリコン: 接続できませんでした'],
    };
    assert.deepEqual(Object.keys(samples).sort(), MAIL_TEMPLATES.map((t) => t.name).sort(), 'every template has a sample here');

    const jobs = new Map<string, string>();
    for (const [template, [payload]] of Object.entries(samples)) jobs.set(template, await queue({ ...payload, template }));
    for (const [template, [, to, subject, text]] of Object.entries(samples)) {
      const job = await settled(jobs.get(template)!);
      assert.equal(job.state, 'done', `${template}: ${job.last_error}`);
      const log = await logOf(job.id);
      assert.deepEqual(log.map((r) => [r.template, r.outcome, r.recipient, r.attempt]), [[template, 'sent', to, 1]], template);
      assert.match(log[0]!.response ?? '', /^250 /, 'the server\'s answer is logged');
      const [mail, ...more] = receivedWithId(log[0]!.message_id);
      assert.ok(mail, `${template} arrived`);
      assert.equal(more.length, 0);
      assert.ok(mail.subject?.includes(subject), `${template} subject: ${mail.subject}`);
      assert.equal(mail.subject, log[0]!.subject);
      assert.ok(mail.text?.includes(text), `${template} text:\n${mail.text}`);
      assert.equal(smtp.to(to).includes(mail), true, `${template} went to ${to}`);
    }
    // The staff's copy is answered straight to the customer.
    const staff = receivedWithId((await logOf(jobs.get('inquiry_staff')!))[0]!.message_id)[0]!;
    assert.equal(staff.replyTo?.value[0]?.address, email);
  });

  it('a server answering 451 fails the attempt; the retry is delivered once, with the same Message-ID', async () => {
    smtp.failNext(1, 451, '4.3.0 Mailbox temporarily unavailable');
    const job = await settled(await queue(lottery('lottery_applied')));
    assert.equal(job.state, 'done');
    assert.equal(job.attempts, 2);
    const log = await logOf(job.id);
    assert.deepEqual(log.map((r) => [r.outcome, r.attempt]), [['failed', 1], ['sent', 2]]);
    assert.match(log[0]!.response ?? '', /451 4\.3\.0 Mailbox temporarily unavailable/);
    assert.equal(log[0]!.message_id, log[1]!.message_id);
    assert.equal(receivedWithId(log[1]!.message_id).length, 1, 'delivered exactly once');
  });

  it('a 5xx to the message itself (not the recipient) is retried too', async () => {
    smtp.failNext(1, 554, '5.6.0 Message content rejected');
    const job = await settled(await queue(lottery('lottery_updated')));
    assert.equal(job.state, 'done');
    assert.deepEqual((await logOf(job.id)).map((r) => r.outcome), ['failed', 'sent']);
  });

  it('server down: the mail waits, retried with backoff, and is sent once the server is back', async () => {
    await smtp.stop();
    let jobId: string;
    try {
      jobId = await queue(lottery('lottery_won'));
      const failed = await eventually(async () => {
        const log = await logOf(jobId);
        assert.ok(log.length >= 1, 'an attempt was made');
        return log;
      }, 10_000);
      assert.equal(failed[0]!.outcome, 'failed');
      assert.match(failed[0]!.response ?? '', /ECONNREFUSED|ECONNECTION/);
      const job = await db().selectFrom('jobs').select(['state']).where('id', '=', jobId).executeTakeFirstOrThrow();
      assert.notEqual(job.state, 'dead');
    } finally {
      await smtp.start();
    }
    const job = await settled(jobId);
    assert.equal(job.state, 'done');
    const log = await logOf(jobId);
    assert.equal(log.at(-1)!.outcome, 'sent');
    assert.ok(log.slice(0, -1).every((r) => r.outcome === 'failed'), 'log.slice(0, -1).every((r) => r.outcome === \'failed\')');
    const mail = receivedWithId(log.at(-1)!.message_id);
    assert.equal(mail.length, 1);
    assert.match(mail[0]!.text ?? '', /ご当選されました/);
  });

  it('a recipient refused for good (550) is not retried: one failed row, the job dead-lettered with an alert naming the address', async () => {
    smtp.refuse('nobody@example.jp', 550, '5.1.1 <nobody@example.jp>: Recipient address rejected');
    const job = await settled(await queue(lottery('lottery_applied', 'nobody@example.jp')));
    assert.equal(job.state, 'dead');
    assert.equal(job.attempts, 1);
    const log = await logOf(job.id);
    assert.deepEqual(log.map((r) => r.outcome), ['failed']);
    assert.match(log[0]!.response ?? '', /RCPT TO: 550 5\.1\.1/);
    const alert = await db().selectFrom('alerts').selectAll().where('ref', '=', job.id).executeTakeFirstOrThrow();
    assert.match(alert.message, /nobody@example\.jp was refused by the mail server for good .*550/);
    assert.equal(smtp.to('nobody@example.jp').length, 0);
  });

  it('shipping an order mails the customer where the parcel goes', async () => {
    const email = `ship-${unique()}@example.jp`;
    const res = await fetch(`${store.url}/api/checkout`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ shop: 'default', customer: { email, name: '山田 花子' }, shippingAddress: ADDRESS, lines: [{ sku: 'demo-cd', quantity: 1 }], payment: { provider: 'testpay' } }),
    });
    assert.equal(res.status, 201);
    const placed = (await res.json()) as { order: { number: string }; payment: { url: string } };
    const paid = await fetch(`${placed.payment.url}/card`, { method: 'POST', redirect: 'manual' });
    await paid.arrayBuffer();
    await notificationsApplied(store);
    const ship = await fetch(`${store.url}/api/admin/orders/${placed.order.number}/events`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ event: 'ship' }),
    });
    assert.equal(ship.status, 200, await ship.text());
    const mail = await eventually(async () => {
      const found = smtp.to(email).find((m) => m.subject?.includes('商品発送のお知らせ'));
      assert.ok(found, `no shipment mail yet; got: ${smtp.to(email).map((m) => m.subject).join(', ')}`);
      return found;
    }, 15_000);
    assert.ok(mail.subject?.includes(placed.order.number), 'mail.subject?.includes(placed.order.number)');
    assert.match(mail.text ?? '', /〒150-0001 東京都渋谷区神宮前1-1-1\n {2}山田 花子 様/);
  });

  it('the admin API lists the mail log by address, template and outcome, page by page', async () => {
    const get = async (query: string, token: string | null = ADMIN_TOKEN) => {
      const res = await fetch(`${store.url}/api/admin/mail-log${query}`, { headers: token ? { authorization: `Bearer ${token}` } : {} });
      return { status: res.status, body: (await res.json()) as { entries: { to: string; template: string; outcome: string; messageId: string; attempt: number }[]; next: string | null; error?: { problems: { field: string }[] } } };
    };
    assert.equal((await get('', null)).status, 401);

    const failed = await get('?outcome=failed');
    assert.equal(failed.status, 200);
    assert.ok(failed.body.entries.length >= 4 && failed.body.entries.every((e) => e.outcome === 'failed'), 'failed.body.entries.length >= 4 && failed.body.entries.every((e) => e.outcome === \'fail…');

    const refused = await get('?to=nobody@example.jp&template=lottery_applied');
    assert.deepEqual(refused.body.entries.map((e) => [e.to, e.template, e.outcome]), [['nobody@example.jp', 'lottery_applied', 'failed']]);

    const first = await get('?template=lottery_applied&limit=1');
    assert.equal(first.body.entries.length, 1);
    assert.ok(first.body.next, 'first.body.next');
    const second = await get(`?template=lottery_applied&limit=1&before=${first.body.next}`);
    assert.equal(second.body.entries.length, 1);
    assert.notDeepEqual(second.body.entries[0], first.body.entries[0]);

    const bad = await get('?outcome=bounced');
    assert.equal(bad.status, 400);
    assert.ok(bad.body.error?.problems.some((p) => p.field === 'outcome'), 'bad.body.error?.problems.some((p) => p.field === \'outcome\')');
    const lost = await get('?before=mlg_nope');
    assert.equal(lost.status, 400);
    assert.ok(lost.body.error?.problems.some((p) => p.field === 'before'), 'lost.body.error?.problems.some((p) => p.field === \'before\')');
  });

  it('`kessai mail log` prints the attempts to an address', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url)), 'mail', 'log', '--to', 'nobody@example.jp'], {
      env: { PATH: process.env.PATH ?? '', DATABASE_URL: store.database.url, KESSAI_DATA_DIR: store.dataDir, KESSAI_MASTER_KEY: '00'.repeat(32), KESSAI_ADMIN_TOKEN: ADMIN_TOKEN, LOG_LEVEL: 'silent' },
      timeout: 60_000,
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString('utf8')));
    child.stderr.on('data', (d: Buffer) => (out += d.toString('utf8')));
    const code = await new Promise((resolve) => child.on('close', resolve));
    assert.equal(code, 0, out);
    assert.match(out, /\tfailed\tlottery_applied\tnobody@example\.jp\tattempt=1\tRCPT TO: 550 5\.1\.1/);
    assert.equal(out.trim().split('\n').length, 1);
  });
});

describe('the sandbox mail page [sqlite]', () => {
  let store: TestStore;
  before(async () => {
    // No KESSAI_SMTP_URL: the development mailer writes to the mail folder the page reads.
    store = await startStore('sqlite');
    store.startWorker();
  });
  after(async () => {
    await store?.close();
  });

  const get = async (path: string) => {
    const res = await fetch(`${store.url}${path}`);
    return { status: res.status, body: await res.text(), csp: res.headers.get('content-security-policy') ?? '' };
  };

  it('lists what the store sent, newest first, and shows a mail with its text; its HTML never runs in the store\'s origin', async () => {
    assert.match((await get('/sandbox/mail')).body, /まだメールはありません/);
    await enqueue(store.rt.ctx.db, { kind: 'mail.send', payload: { template: 'lottery_applied', shopId: 'default', applicationId: 'LA-1', email: 'fan@example.jp', name: '推し 活子', lotteryName: '春の先行抽選', productName: 'アクスタ', quantity: 1, resultAt: '2026-04-01T03:00:00Z' } });
    await eventually(async () => assert.match((await get('/sandbox/mail')).body, /抽選お申し込み受付/), 10_000);
    // A mail with an HTML part that tries to run a script, written by the same development mailer.
    const mailer = createMailer({ from: 'kessai <no-reply@localhost>', folder: join(store.dataDir, 'mail') });
    await new Promise((r) => setTimeout(r, 20));
    const png = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==', 'base64');
    await mailer.send({ to: 'x@example.jp', id: 'sandbox-html-test', subject: 'HTMLのメール', text: 'テキスト部分です', html: '<p>HTML部分</p><img src="cid:dot@kessai"><script>parent.document.title="pwned"</script>', images: [{ cid: 'dot@kessai', filename: 'dot.png', contentType: 'image/png', content: png }] });
    mailer.close();

    const list = await get('/sandbox/mail');
    assert.equal(list.status, 200);
    const subjects = [...list.body.matchAll(/<a href="\/sandbox\/mail\/([^"]+)">([^<]*)<\/a>/g)].map((m) => [m[1], m[2]]);
    assert.equal(subjects.length, 2);
    assert.equal(subjects[0]![1], 'HTMLのメール', 'newest first');
    assert.match(subjects[1]![1]!, /抽選お申し込み受付/);
    assert.match(list.body, /fan@example\.jp/);

    const one = await get(`/sandbox/mail/${subjects[0]![0]}`);
    assert.equal(one.status, 200);
    assert.match(one.body, /<h1>HTMLのメール<\/h1>/);
    assert.match(one.body, /<pre>テキスト部分です\n?<\/pre>/);
    assert.ok(!one.body.includes('<script>'), 'the mail\'s markup is not in the page');
    assert.match(one.body, /<iframe sandbox src="\/sandbox\/mail\/sandbox-html-test\.eml\/html"/);

    const html = await get('/sandbox/mail/sandbox-html-test.eml/html');
    assert.equal(html.status, 200);
    assert.match(html.csp, /default-src 'none'/);
    assert.match(html.csp, /(^|; )sandbox(;|$)/, 'no origin, no script, even when opened directly');
    assert.match(html.body, /<img src="data:image\/png;base64,/, 'inline images shown from the mail itself');

    for (const bad of ['..%2F..%2Fkessai.db', '%2Fetc%2Fpasswd', 'nope.eml']) assert.equal((await get(`/sandbox/mail/${bad}`)).status, 404, bad);
  });
});
