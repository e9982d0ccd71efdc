/**
 * Customer accounts as a customer (and an attacker) meets them in the shop front: register, the
 * mailed link, log in, buy, the my page; wrong passwords, unverified addresses, answers that never
 * tell whether an address has an account, reset and email-change links that work once, rate limits
 * shared through the database, CSRF tokens on every form, sessions that end. Real HTTP, real
 * database, real outbox worker writing mails to the sandbox's mail folder.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, it } from 'node:test';
import { cookieSettings } from '../../src/http/front.js';
import { buyThroughShop, FormClient, hiddenFields } from '../helpers/browser.js';
import { forEachEngine } from '../helpers/db.js';
import { eventually } from '../helpers/eventually.js';
import { readMails, type ReadMail } from '../helpers/mail.js';
import { notificationsApplied, startStore, type TestStore } from '../helpers/store.js';

const PASSWORD = 'correct horse 電池';
const SESSION = 'kessai_session';

forEachEngine('customer accounts', (engine) => {
  let store: TestStore;
  before(async () => {
    // Each test speaks from its own address (X-Forwarded-For from loopback is believed), so one
    // test's attempts never count against another's per-IP limits.
    store = await startStore(engine, { KESSAI_TRUST_PROXY: 'loopback' });
    store.startWorker();
  });
  after(async () => {
    await store?.close();
  });

  const newEmail = () => `user-${randomBytes(5).toString('hex')}@example.jp`;
  let ipCounter = 0;
  const client = () => new FormClient(store.url, { 'x-forwarded-for': `198.51.100.${++ipCounter}` });

  // ---------------------------------------------------------------- mail

  const seen = new Set<string>();
  /** The next mail of `template` sent to `to` that this test file has not looked at yet. */
  async function nextMail(template: string, to: string): Promise<ReadMail> {
    return eventually(async () => {
      const mail = readMails(store.dataDir).find((m) => m.name.startsWith(`${template}.`) && !seen.has(m.name) && new RegExp(`^To: ${to}$`, 'mi').test(m.head));
      assert.ok(mail, `no ${template} mail to ${to} yet`);
      seen.add(mail.name);
      return mail;
    }, 10_000);
  }

  function mailsTo(to: string): ReadMail[] {
    return readMails(store.dataDir).filter((m) => new RegExp(`^To: ${to}$`, 'mi').test(m.head));
  }

  /** The link in a mail to `path`, relative to the store. */
  function linkIn(mail: ReadMail, path: string): string {
    const m = new RegExp(`${store.url}(${path}\\?token=[\\w.-]+)`).exec(mail.text);
    assert.ok(m, `no ${path} link in:\n${mail.text}`);
    return m[1]!;
  }

  async function customer(email: string) {
    return store.rt.ctx.db.selectFrom('customers').selectAll().where('email', '=', email).where('password_hash', 'is not', null).executeTakeFirst();
  }

  // ---------------------------------------------------------------- the customer's steps

  async function registerAndVerify(b: FormClient, email: string, password = PASSWORD): Promise<void> {
    const res = await b.submit('/account/register', '/account/register', { email, name: '山田 花子', password });
    assert.equal(res.status, 200, res.body);
    const link = linkIn(await nextMail('account_verify', email), '/account/verify');
    const confirm = await b.submit(link, '/account/verify');
    assert.equal(confirm.status, 200, confirm.body);
    assert.match(confirm.body, /メールアドレスを確認しました/);
  }

  async function logIn(b: FormClient, email: string, password = PASSWORD) {
    return b.submit('/account/login', '/account/login', { email, password });
  }

  async function myPage(b: FormClient) {
    return b.get('/account');
  }

  /** The CSRF token this browser's forms carry right now. */
  async function csrfOf(b: FormClient): Promise<string> {
    return hiddenFields((await b.get('/account/password/forgot')).body, '/account/password/forgot')._csrf!;
  }

  /** Normalises what legitimately differs between two answers: CSRF tokens and the address typed. */
  const comparable = (body: string, ...emails: string[]) =>
    emails.reduce((s, e) => s.replaceAll(e, '<email>'), body).replace(/name="_csrf" value="[^"]*"/g, 'name="_csrf" value=""');

  // ---------------------------------------------------------------- the whole way

  it('register → mail → verify → log in → checkout attaches the order → the my page lists it with its ticket', async () => {
    const b = client();
    const email = newEmail();
    // An address's earlier guest order, and a registration: once verified, the my page shows both.
    const guest = await fetch(`${store.url}/api/checkout`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ shop: 'default', customer: { email: email.toUpperCase(), name: '山田 花子' }, lines: [{ sku: 'demo-ticket', quantity: 1 }], payment: { provider: 'testpay' } }),
    });
    const { order: { number: guestOrder }, orderToken: guestToken } = (await guest.json()) as { order: { number: string }; orderToken: string };

    const registered = await b.submit('/account/register', '/account/register', { email, name: '山田 花子', password: PASSWORD });
    assert.equal(registered.status, 200);
    assert.match(registered.body, /確認メールを送信しました/);
    const mail = await nextMail('account_verify', email);
    assert.match(mail.text, /メールアドレスを確認してください/);
    assert.match(mail.text, /Confirm|confirm/);
    const link = linkIn(mail, '/account/verify');
    const token = new URL(link, store.url).searchParams.get('token')!;
    // The token is never stored: only its hash, and the job that minted it carried no token.
    const stored = await store.rt.ctx.db.selectFrom('account_tokens').selectAll().execute();
    assert.ok(stored.every((t) => t.hash !== token), 'the raw token is not stored');
    const jobs = await store.rt.ctx.db.selectFrom('jobs').select('payload').where('kind', '=', 'mail.send').execute();
    assert.ok(jobs.every((j) => !j.payload.includes(token)), 'no job payload carries the token');

    // Not logged in before verifying; the link opens a page with a button (scanners do not use it up).
    const early = await logIn(b, email);
    assert.equal(early.status, 403);
    const opened = await b.get(link);
    assert.equal(opened.status, 200);
    assert.match(opened.body, new RegExp(email));
    assert.equal((await customer(email))!.email_verified_at, null, 'opening the link changes nothing');
    const confirmed = await b.post('/account/verify', hiddenFields(opened.body, '/account/verify'));
    assert.equal(confirmed.status, 200);
    assert.ok((await customer(email))!.email_verified_at, '(await customer(email))!.email_verified_at');

    const login = await logIn(b, email);
    assert.equal(login.status, 303);
    assert.equal(login.location, '/account');
    const shop = await b.get('/');
    assert.match(shop.body, /マイページ \/ My page/);
    await b.submit('/products/demo-ticket', '/cart/add', { quantity: '1' });
    assert.match((await b.get('/checkout/customer')).body, new RegExp(`value="${email}"`), 'the checkout form is filled with the account');
    await b.submit('/cart', '/cart', { remove: 'demo-ticket' });

    const checkout = await buyThroughShop(b, { sku: 'demo-ticket', email, name: '山田 花子', provider: 'testpay' });
    assert.equal(checkout.status, 303, checkout.body);
    const payUrl = checkout.location!;
    const paid = await fetch(`${payUrl}/card`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: '', redirect: 'manual' });
    await paid.arrayBuffer();
    await notificationsApplied(store);

    const me = await customer(email);
    const orders = await store.rt.ctx.db.selectFrom('orders').select(['number', 'customer_id', 'state']).where('customer_id', '=', me!.id).execute();
    assert.equal(orders.length, 1, 'the order belongs to the account');
    const guestRows = await store.rt.ctx.db.selectFrom('customers').select('id').where('email', '=', email).where('password_hash', 'is', null).execute();
    assert.deepEqual(guestRows, [], 'the guest record made for the order is gone');

    const page = await eventually(async () => {
      const p = await myPage(b);
      assert.equal(p.status, 200);
      assert.match(p.body, /お支払い完了/);
      return p;
    });
    assert.match(page.body, new RegExp(orders[0]!.number));
    assert.match(page.body, new RegExp(guestOrder), 'the guest order placed with the verified address is listed');
    assert.ok(page.body.includes(`<a href="${store.url}/orders/${guestToken}">お支払いへ進む / Pay for this order</a>`), 'the unpaid order links to its page, to pay it');
    assert.match(page.body, /チケット \/ Tickets/);
    assert.match(page.body, /<code>[2-9A-HJ-NP-Z]{4}(-[2-9A-HJ-NP-Z]{4}){6}<\/code>/, 'the ticket code');
    assert.match(page.body, /連携アカウント \/ Linked accounts/);
    assert.equal((page.body.match(/未連携 \/ not linked/g) ?? []).length, 2, 'atone and Chekicha');
    assert.equal(page.headers.get('cache-control'), 'no-store');
    // Headings in order: one h1, then h2 sections, orders as h3.
    const levels = [...page.body.matchAll(/<h([1-6])\b/g)].map((m) => Number(m[1]));
    assert.equal(levels[0], 1);
    assert.equal(levels.filter((l) => l === 1).length, 1);
    for (let i = 1; i < levels.length; i++) assert.ok(levels[i]! <= levels[i - 1]! + 1, `heading h${levels[i]} after h${levels[i - 1]}`);
  });

  // ---------------------------------------------------------------- wrong and unverified

  it('a wrong password: 401, the message next to the form, no session', async () => {
    const b = client();
    const email = newEmail();
    await registerAndVerify(b, email);
    const res = await logIn(b, email, 'not the password');
    assert.equal(res.status, 401);
    assert.match(res.body, /role="alert">メールアドレスまたはパスワードが正しくありません/);
    assert.ok(!b.cookies.has(SESSION), '!b.cookies.has(SESSION)');
    assert.equal((await myPage(b)).location, '/account/login?next=%2Faccount');
  });

  it('an unverified account cannot log in; only the right password hears why', async () => {
    const b = client();
    const email = newEmail();
    await b.submit('/account/register', '/account/register', { email, name: '未確認', password: PASSWORD });
    await nextMail('account_verify', email);
    const wrong = await logIn(b, email, 'not the password');
    assert.equal(wrong.status, 401, 'a wrong password says only "wrong"');
    const right = await logIn(b, email);
    assert.equal(right.status, 403);
    assert.match(right.body, /メールアドレスの確認が必要です/);
    assert.ok(!b.cookies.has(SESSION), '!b.cookies.has(SESSION)');
    const sessions = await store.rt.ctx.db.selectFrom('customer_sessions').select('id').where('customer_id', '=', (await customer(email))!.id).execute();
    assert.deepEqual(sessions, []);
  });

  // ---------------------------------------------------------------- no enumeration

  it('register, login and reset answer the same for known and unknown addresses; only the mails differ', async () => {
    const known = newEmail();
    const unknown = newEmail();
    await registerAndVerify(client(), known);

    const again = await client().submit('/account/register', '/account/register', { email: known, name: '誰か', password: 'another password' });
    const fresh = await client().submit('/account/register', '/account/register', { email: unknown, name: '誰か', password: 'another password' });
    assert.equal(again.status, fresh.status);
    assert.equal(comparable(again.body, known), comparable(fresh.body, unknown));
    const exists = await nextMail('account_exists', known);
    assert.match(exists.text, /すでに登録されています/);
    assert.match(exists.text, /\/account\/password\/forgot/);
    await nextMail('account_verify', unknown);
    assert.equal((await customer(known))!.name, '山田 花子', 'registering again changes nothing');

    const nobody = newEmail();
    const wrongKnown = await logIn(client(), known, 'wrong password!');
    const wrongUnknown = await logIn(client(), nobody, 'wrong password!');
    assert.equal(wrongKnown.status, wrongUnknown.status);
    assert.equal(comparable(wrongKnown.body, known), comparable(wrongUnknown.body, nobody));

    const resetKnown = await client().submit('/account/password/forgot', '/account/password/forgot', { email: known });
    const resetUnknown = await client().submit('/account/password/forgot', '/account/password/forgot', { email: nobody });
    assert.equal(resetKnown.status, 200);
    assert.equal(resetKnown.status, resetUnknown.status);
    assert.equal(comparable(resetKnown.body, known), comparable(resetUnknown.body, nobody));
    await nextMail('account_reset', known);
    await eventually(async () => {
      const pending = await store.rt.ctx.db.selectFrom('jobs').select('id').where('kind', '=', 'mail.send').where('state', '!=', 'done').execute();
      assert.deepEqual(pending, []);
    });
    assert.deepEqual(mailsTo(nobody), [], 'an unknown address gets no mail');
  });

  it('a login for an unknown address costs what one for a known address does (one scrypt either way)', async () => {
    const known = newEmail();
    await registerAndVerify(client(), known);
    const time = async (email: string) => {
      const b = client();
      const page = await b.get('/account/login');
      const fields = { ...hiddenFields(page.body, '/account/login'), email, password: 'wrong password!' };
      const t0 = performance.now();
      const res = await b.post('/account/login', fields);
      assert.equal(res.status, 401);
      return performance.now() - t0;
    };
    const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    const knownMs: number[] = [];
    const unknownMs: number[] = [];
    for (let i = 0; i < 5; i++) {
      knownMs.push(await time(known));
      unknownMs.push(await time(newEmail()));
    }
    const [k, u] = [median(knownMs), median(unknownMs)];
    // Without the decoy hash an unknown address would answer in a millisecond or two, not in a scrypt's time.
    assert.ok(u > k * 0.5 && k > u * 0.5, `known ${k.toFixed(1)} ms, unknown ${u.toFixed(1)} ms`);
  });

  // ---------------------------------------------------------------- reset

  it('a reset link works once, within its hour, and ends every session of the customer', async () => {
    const email = newEmail();
    const phone = client();
    await registerAndVerify(phone, email);
    assert.equal((await logIn(phone, email)).status, 303);
    assert.equal((await myPage(phone)).status, 200);

    const b = client();
    await b.submit('/account/password/forgot', '/account/password/forgot', { email });
    const link = linkIn(await nextMail('account_reset', email), '/account/password/reset');
    const form = await b.get(link);
    assert.equal(form.status, 200);
    const short = await b.post('/account/password/reset', { ...hiddenFields(form.body, '/account/password/reset'), password: 'short' });
    assert.equal(short.status, 400);
    assert.match(short.body, /aria-describedby="f-password-hint f-password-error"/);
    assert.match(short.body, /id="f-password-error" class="field-error" role="alert">10文字以上/);
    const done = await b.post('/account/password/reset', { ...hiddenFields(form.body, '/account/password/reset'), password: 'a brand new password' });
    assert.equal(done.status, 200, done.body);
    assert.match(done.body, /パスワードを変更しました/);
    await nextMail('account_password_changed', email);

    assert.equal((await myPage(phone)).status, 303, 'the other browser was logged out');
    assert.equal((await logIn(client(), email)).status, 401, 'the old password no longer works');
    assert.equal((await logIn(client(), email, 'a brand new password')).status, 303);

    const reused = await b.get(link);
    assert.equal(reused.status, 400, 'used once');
    assert.match(reused.body, /リンクが無効です/);
    const replay = await b.post('/account/password/reset', { ...hiddenFields(form.body, '/account/password/reset'), _csrf: await csrfOf(b), password: 'attacker password 1' });
    assert.equal(replay.status, 400);
    assert.equal((await logIn(client(), email, 'attacker password 1')).status, 401);

    // A link past its hour does nothing.
    await b.submit('/account/password/forgot', '/account/password/forgot', { email });
    const late = linkIn(await nextMail('account_reset', email), '/account/password/reset');
    const me = (await customer(email))!;
    await store.rt.ctx.db.updateTable('account_tokens').set({ expires_at: new Date(Date.now() - 1000).toISOString() }).where('customer_id', '=', me.id).where('used_at', 'is', null).execute();
    assert.equal((await b.get(late)).status, 400);
    const token = new URL(late, store.url).searchParams.get('token')!;
    const expired = await b.post('/account/password/reset', { _csrf: await csrfOf(b), token, password: 'too late password' });
    assert.equal(expired.status, 400);
    assert.equal((await logIn(client(), email, 'too late password')).status, 401);
  });

  // ---------------------------------------------------------------- email change

  it('changing the email address needs the password and a link to the new address; the old one is told', async () => {
    const b = client();
    const email = newEmail();
    const next = newEmail();
    await registerAndVerify(b, email);
    await logIn(b, email);

    const wrong = await b.submit('/account/email', '/account/email', { email: next, password: 'not my password' });
    assert.equal(wrong.status, 400);
    assert.match(wrong.body, /id="f-password-error" class="field-error" role="alert">パスワードが正しくありません/);
    const bad = await b.submit('/account/email', '/account/email', { email: 'x'.repeat(250) + '@example.jp', password: PASSWORD });
    assert.equal(bad.status, 400);
    assert.match(bad.body, /id="f-email-error" class="field-error" role="alert">254文字以内/);
    assert.match(bad.body, /aria-invalid="true" aria-describedby="f-email-error"/);

    const asked = await b.submit('/account/email', '/account/email', { email: next, password: PASSWORD });
    assert.equal(asked.status, 200, asked.body);
    assert.equal((await customer(email))!.email, email, 'nothing changes before the link is opened');
    const link = linkIn(await nextMail('account_email_change', next), '/account/verify');
    const confirmed = await b.submit(link, '/account/verify');
    assert.equal(confirmed.status, 200, confirmed.body);
    assert.match(confirmed.body, /メールアドレスを変更しました/);
    const notice = await nextMail('account_email_changed', email);
    assert.match(notice.text, new RegExp(next));

    assert.match((await myPage(b)).body, new RegExp(next));
    assert.equal((await logIn(client(), email)).status, 401);
    assert.equal((await logIn(client(), next)).status, 303);
    assert.equal((await b.get(link)).status, 400, 'the link worked once');

    // Another account's address: the same answer here; that address's owner hears of it instead.
    const other = newEmail();
    await registerAndVerify(client(), other);
    const taken = await b.submit('/account/email', '/account/email', { email: other, password: PASSWORD });
    assert.equal(taken.status, 200);
    await nextMail('account_exists', other);
  });

  // ---------------------------------------------------------------- rate limits

  it('login is limited per address: the eleventh try in 15 minutes is refused with the time to come back, right password or not', async () => {
    const email = newEmail();
    await registerAndVerify(client(), email);
    for (let i = 0; i < 10; i++) assert.equal((await logIn(client(), email, `guess number ${i}`)).status, 401);
    const refused = await logIn(client(), email);
    assert.equal(refused.status, 429);
    const retryAfter = Number(refused.headers.get('retry-after'));
    assert.ok(retryAfter > 14 * 60 && retryAfter <= 15 * 60, `Retry-After ${retryAfter}`);
    assert.match(refused.body, /role="alert">試行回数が多すぎます。\d{2}:\d{2}（日本時間、約15分後）以降/);
    assert.match(refused.body, /try again after \d{2}:\d{2} JST \(in about 15 minutes\)/);
    // The count lives in the database: every server process sees it.
    const rows = await store.rt.ctx.db.selectFrom('rate_limits').selectAll().where('bucket', 'like', 'login.email:%').execute();
    assert.ok(rows.some((r) => r.hits > 10), 'rows.some((r) => r.hits > 10)');
    assert.ok(rows.every((r) => !r.bucket.includes(email)), 'buckets hold hashes, not addresses');
  });

  it('reset is limited per address and per IP address, in the same database table', async () => {
    const email = newEmail();
    for (let i = 0; i < 5; i++) assert.equal((await client().submit('/account/password/forgot', '/account/password/forgot', { email })).status, 200);
    const refused = await client().submit('/account/password/forgot', '/account/password/forgot', { email });
    assert.equal(refused.status, 429);
    assert.match(refused.body, /約60分後/);

    const b = client();
    for (let i = 0; i < 20; i++) assert.equal((await b.submit('/account/password/forgot', '/account/password/forgot', { email: newEmail() })).status, 200);
    const fromIp = await b.submit('/account/password/forgot', '/account/password/forgot', { email: newEmail() });
    assert.equal(fromIp.status, 429, 'the 21st request from one address in an hour');
  });

  // ---------------------------------------------------------------- CSRF

  it('a form without its CSRF token, or with another browser\'s, is refused with a 403 page and changes nothing', async () => {
    const countOrders = async () => Number((await store.rt.ctx.db.selectFrom('orders').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow()).n);
    const ordersBefore = await countOrders();
    const b = client();
    await b.get('/products/demo-ticket');
    const fields = { sku: 'demo-ticket', quantity: '1' };
    const none = await b.post('/cart/add', fields);
    assert.equal(none.status, 403);
    assert.match(none.body, /送信できませんでした/);
    assert.match(none.body, /Nothing was changed/);
    const theirs = client();
    const theirPage = await theirs.get('/products/demo-ticket');
    const foreign = await b.post('/cart/add', { ...fields, _csrf: hiddenFields(theirPage.body, '/cart/add')._csrf! });
    assert.equal(foreign.status, 403, 'a token belongs to its browser');
    assert.equal(b.cookies.has('kessai_cart'), false, 'nothing was put in the cart');
    assert.equal((await b.post('/checkout/confirm', {})).status, 403);
    assert.equal(await countOrders(), ordersBefore);

    const email = newEmail();
    const reg = await b.post('/account/register', { email, name: '攻撃', password: PASSWORD });
    assert.equal(reg.status, 403);
    assert.equal(await customer(email), undefined);
    assert.equal((await b.post('/account/login', { email, password: PASSWORD })).status, 403);
    assert.equal((await b.post('/account/logout', {})).status, 403);

    // The order page's pay-again form needs one too; the gateway's browser return is exempt.
    const placed = await b.submit('/products/demo-ticket', '/cart/add', fields);
    assert.equal(placed.status, 303, 'with the token the same form goes through');
    const api = await fetch(`${store.url}/api/checkout`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ shop: 'default', customer: { email: 'csrf@example.jp', name: '客' }, lines: [{ sku: 'demo-ticket', quantity: 1 }], payment: { provider: 'testpay' } }),
    });
    const { orderToken: token, order: created } = (await api.json()) as { orderToken: string; order: { number: string } };
    const order = await store.rt.ctx.db.selectFrom('orders').select('id').where('number', '=', created.number).executeTakeFirstOrThrow();
    const pay = await b.post(`/orders/${token}/pay`, { provider: 'testpay' });
    assert.equal(pay.status, 403);
    const attempts = await store.rt.ctx.db.selectFrom('payment_attempts').select('id').where('order_id', '=', order.id).execute();
    assert.equal(attempts.length, 1, 'no new attempt');
    const payForm = await b.submit(`/orders/${token}`, `/orders/${token}/pay`, { provider: 'testpay' });
    assert.equal(payForm.status, 303);
    const ret = await b.post(`/orders/${token}/return`, {});
    assert.equal(ret.status, 303, 'a gateway return needs no token');

    // A token made for one session does not carry over to the next.
    const old = await b.get('/account/register');
    const email2 = newEmail();
    await registerAndVerify(b, email2);
    await logIn(b, email2);
    const stale = await b.post('/account/register', { ...hiddenFields(old.body, '/account/register'), email: newEmail(), name: 'x', password: PASSWORD });
    assert.equal(stale.status, 403);
  });

  // ---------------------------------------------------------------- sessions

  it('the session cookie: HttpOnly, SameSite=Lax, rotated at login; __Host- and Secure over https', async () => {
    const b = client();
    const email = newEmail();
    await registerAndVerify(b, email);
    b.cookies.set(SESSION, 'planted-by-someone-else-0123456789');
    const res = await logIn(b, email);
    const set = res.headers.getSetCookie().find((c) => c.startsWith(`${SESSION}=`))!;
    assert.match(set, /; HttpOnly/i);
    assert.match(set, /; SameSite=Lax/i);
    assert.match(set, /; Path=\//i);
    assert.match(set, /; Max-Age=\d+/i);
    assert.doesNotMatch(set, /; Secure/i, 'plain http in the test');
    assert.notEqual(b.cookies.get(SESSION), 'planted-by-someone-else-0123456789');
    const secret = b.cookies.get(SESSION)!;
    const rows = await store.rt.ctx.db.selectFrom('customer_sessions').select('id').execute();
    assert.ok(rows.every((r) => r.id !== secret), 'the database keeps a hash, not the secret');
    assert.deepEqual(cookieSettings('https://shop.example.jp'), {
      session: '__Host-kessai_session',
      csrf: '__Host-kessai_csrf',
      cart: '__Host-kessai_cart',
      checkout: '__Host-kessai_checkout',
      options: { path: '/', httpOnly: true, sameSite: 'lax', secure: true },
    });
  });

  it('a session ends after its idle time, at its absolute end, and at logout (for a copied cookie too)', async () => {
    const email = newEmail();
    const b = client();
    await registerAndVerify(b, email);
    const me = (await customer(email))!;
    const sessions = store.rt.ctx.db.selectFrom('customer_sessions').selectAll().where('customer_id', '=', me.id);
    const idleMs = store.rt.ctx.config.sessionIdleMinutes * 60_000;

    await logIn(b, email);
    assert.equal((await myPage(b)).status, 200);
    await store.rt.ctx.db.updateTable('customer_sessions').set({ last_seen_at: new Date(Date.now() - idleMs - 1000).toISOString() }).where('customer_id', '=', me.id).execute();
    assert.equal((await myPage(b)).status, 303, 'idle too long');
    assert.deepEqual(await sessions.execute(), [], 'and the row is gone');

    await logIn(b, email);
    // Activity keeps it alive only until its absolute end.
    await store.rt.ctx.db.updateTable('customer_sessions').set({ last_seen_at: new Date().toISOString(), expires_at: new Date(Date.now() - 1000).toISOString() }).where('customer_id', '=', me.id).execute();
    assert.equal((await myPage(b)).status, 303, 'past its absolute end');

    await logIn(b, email);
    const thief = new FormClient(store.url);
    for (const [k, v] of b.cookies) thief.cookies.set(k, v);
    assert.equal((await myPage(thief)).status, 200);
    const out = await b.submit('/account', '/account/logout');
    assert.equal(out.status, 303);
    assert.ok(!b.cookies.has(SESSION), 'the cookie is cleared');
    assert.equal((await myPage(thief)).status, 303, 'the server-side session is gone, so a copy is useless');
    assert.deepEqual(await sessions.execute(), []);
  });

  // ---------------------------------------------------------------- bad input

  it('bad input: each reason next to its field, nothing created', async () => {
    const b = client();
    const long = `${'a'.repeat(290)}@example.jp`;
    const res = await b.submit('/account/register', '/account/register', { email: long, name: '   ', password: 'short' });
    assert.equal(res.status, 400);
    assert.match(res.body, /id="f-email-error" class="field-error" role="alert">254文字以内/);
    assert.match(res.body, /id="f-name-error" class="field-error" role="alert">入力してください/);
    assert.match(res.body, /id="f-password-error" class="field-error" role="alert">10文字以上/);
    assert.match(res.body, /<label for="f-email">/);
    assert.match(res.body, new RegExp(`value="${long}"`), 'what was typed stays in the form');
    assert.doesNotMatch(res.body, /value="short"/, 'a password is never sent back');
    assert.equal(await customer(long), undefined);
    const notEmail = await b.submit('/account/login', '/account/login', { email: 'taro＠example', password: 'x' });
    assert.equal(notEmail.status, 400);
    assert.match(notEmail.body, /id="f-email-error" class="field-error" role="alert">メールアドレスの形式ではありません/);
    const offsite = await b.get('/account/login?next=//evil.example/');
    assert.match(offsite.body, /name="next" value="\/account"/, 'a login never sends the customer to another site');
  });
});
