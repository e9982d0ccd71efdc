/**
 * Chekicha account links as a member, the shop and an operator meet them: a member's serial-code
 * purchase is paid at once and the Chekicha account is linked afterwards by an outbox job; Chekicha
 * being down, slow or refusing never touches the order; the job is retried, idempotent, and
 * dead-lettered with an alert when Chekicha refuses for good; the my page shows the link and has a
 * button to link by hand. Real HTTP on loopback, real database, the sandbox's Chekicha with its
 * fault switches; the client's error classification against the same sandbox.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, afterEach, before, describe, it } from 'node:test';
import Fastify, { type FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { chekichaLinkJob } from '../../src/commerce/chekicha-link.js';
import { ChekichaError, idempotencyKey, linkAccount, linkBody, type ChekichaLinkRequest } from '../../src/integrations/chekicha/connect.js';
import { chekichaSandbox } from '../../src/sandbox/chekicha.js';
import { buyThroughShop, FormClient } from '../helpers/browser.js';
import { forEachEngine } from '../helpers/db.js';
import { eventually } from '../helpers/eventually.js';
import { freePort } from '../helpers/net.js';
import { notificationsApplied, registerMember, startStore, type TestStore } from '../helpers/store.js';

const PASSWORD = 'correct horse 電池';

interface SandboxLink {
  link_id: string;
  account_id: string;
  member_ref: string;
  email: string;
  orders: string[];
  product_codes: string[];
  requests: number;
}

forEachEngine('Chekicha account link', (engine) => {
  let store: TestStore;
  before(async () => {
    // A one-second job limit, so a slow Chekicha outlasts it; room for the retries that causes.
    store = await startStore(engine, { KESSAI_TRUST_PROXY: 'loopback', KESSAI_JOB_TIMEOUT_SECONDS: '1', KESSAI_JOB_MAX_ATTEMPTS: '40' });
    store.startWorker();
  });
  after(async () => {
    await store?.close();
  });
  afterEach(async () => {
    await faults({ down: false, delayMs: 0, failNext: 0, rejectStatus: 0 });
  });

  const db = () => store.rt.ctx.db;
  let ip = 0;

  async function faults(set: Record<string, unknown>): Promise<void> {
    const res = await fetch(`${store.url}/sandbox/chekicha/api/faults`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(set) });
    assert.equal(res.status, 200, await res.text());
  }

  async function sandboxLinks(memberRef: string): Promise<SandboxLink[]> {
    const res = await fetch(`${store.url}/sandbox/chekicha/api/links`);
    return ((await res.json()) as { links: SandboxLink[] }).links.filter((l) => l.member_ref === memberRef);
  }

  /** A registered, verified, logged-in member in a browser of their own. */
  async function member(): Promise<{ b: FormClient; email: string; id: string }> {
    const b = new FormClient(store.url, { 'x-forwarded-for': `198.51.100.${++ip}` });
    const email = `fan-${randomBytes(5).toString('hex')}@example.jp`;
    const id = await registerMember(store, b, { email, name: '星野 アイ', password: PASSWORD });
    return { b, email, id };
  }

  /** Checks out the demo serial-code product in the shop front and pays with the sandbox card. */
  async function buySerial(b: FormClient, email: string) {
    const checkout = await buyThroughShop(b, { sku: 'demo-serial', email, name: '星野 アイ', provider: 'testpay' });
    assert.equal(checkout.status, 303, checkout.body);
    const paid = await fetch(`${checkout.location!}/card`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: '', redirect: 'manual' });
    await paid.arrayBuffer();
    await notificationsApplied(store);
    const order = await db().selectFrom('orders').selectAll().where('email', '=', email).orderBy('created_at', 'desc').executeTakeFirstOrThrow();
    assert.equal(order.state, 'paid', 'the order is paid at once, whatever Chekicha does');
    const codes = await db().selectFrom('serial_codes').select('code').where('order_id', '=', order.id).execute();
    assert.equal(codes.length, 1, 'the serial code is delivered with the payment');
    return order;
  }

  const linkRow = (customerId: string) => db().selectFrom('customer_links').selectAll().where('customer_id', '=', customerId).where('party', '=', 'chekicha').executeTakeFirst();
  const linkJob = (customerId: string) => db().selectFrom('jobs').selectAll().where('dedupe_key', '=', `chekicha.link:${customerId}`).executeTakeFirst();
  const runsOf = (jobId: string) => db().selectFrom('job_runs').selectAll().where('job_id', '=', jobId).orderBy('started_at').execute();

  async function linked(customerId: string): Promise<SandboxLink> {
    return eventually(async () => {
      const row = await linkRow(customerId);
      assert.ok(row, 'customer_links has the Chekicha link');
      const at = await sandboxLinks(customerId);
      assert.equal(at.length, 1, 'one link at Chekicha');
      assert.equal(row.external_id, at[0]!.account_id, 'the link names the Chekicha account');
      return at[0]!;
    }, 15_000);
  }

  const chekichaRow = async (b: FormClient) => {
    const page = await b.get('/account');
    assert.equal(page.status, 200);
    const row = /<dd class="chekicha chekicha-(\w+)">([\s\S]*?)<\/dd>/.exec(page.body);
    assert.ok(row, 'the my page has a Chekicha row');
    return { state: row[1]!, text: row[2]!, button: row[2]!.includes('action="/account/chekicha"') };
  };

  it('a member buys a serial-code product: paid at once, then the job links the Chekicha account and the my page says so', async () => {
    const { b, email, id } = await member();
    const before = await chekichaRow(b);
    assert.match(before.text, /未連携 \/ not linked/);
    assert.ok(before.button, 'a button to link by hand');

    const order = await buySerial(b, email);
    const link = await linked(id);
    assert.equal(link.email, email);
    assert.deepEqual(link.orders, [order.number]);
    assert.deepEqual(link.product_codes, ['demo-serial']);
    assert.match(link.account_id, /^ckc_\d+$/);

    const after = await chekichaRow(b);
    assert.equal(after.state, 'linked');
    assert.match(after.text, /連携済み \/ linked \(\d{4}\/\d{1,2}\/\d{1,2}\)/);
    assert.equal(after.button, false);

    // A second purchase by a linked member asks Chekicha nothing more.
    await buySerial(b, email);
    await notificationsApplied(store);
    assert.equal((await sandboxLinks(id))[0]!.requests, 1);
    assert.equal((await linkJob(id))!.state, 'done');
  });

  it("a guest's serial-code purchase links nothing: a guest has no account here", async () => {
    const email = `guest-${randomBytes(5).toString('hex')}@example.jp`;
    const order = await buySerial(new FormClient(store.url, { 'x-forwarded-for': `198.51.100.${++ip}` }), email);
    const jobs = await db().selectFrom('jobs').select('id').where('kind', '=', 'chekicha.link').where('payload', 'like', `%${order.customer_id}%`).execute();
    assert.deepEqual(jobs, []);
  });

  it('Chekicha down while paying: the order is paid and stays paid; the job retries and links once Chekicha is back', async () => {
    const { b, email, id } = await member();
    await faults({ down: true });
    const order = await buySerial(b, email);

    const job = await eventually(async () => {
      const j = await linkJob(id);
      assert.ok(j, 'j');
      const failed = (await runsOf(j.id)).filter((r) => r.outcome === 'failed');
      assert.ok(failed.length >= 2, 'the job failed and was retried');
      assert.ok(failed.some((r) => /HTTP 503 service_unavailable/.test(r.error ?? '')), 'Chekicha answered 503');
      return j;
    }, 15_000);
    assert.equal(job.state === 'pending' || job.state === 'running', true);
    assert.equal((await chekichaRow(b)).state, 'linking');
    assert.equal(await linkRow(id), undefined);
    assert.equal((await db().selectFrom('orders').select('state').where('id', '=', order.id).executeTakeFirstOrThrow()).state, 'paid');

    await faults({ down: false });
    await linked(id);
    assert.equal((await chekichaRow(b)).state, 'linked');
    const alerts = await db().selectFrom('alerts').select('id').where('ref', '=', job.id).execute();
    assert.deepEqual(alerts, [], 'an outage that ended raises no alert');
  });

  it('a permanent refusal dead-letters the job at once with an alert; the order is untouched; the member can try again', async () => {
    const { b, email, id } = await member();
    await faults({ rejectStatus: 403 });
    const order = await buySerial(b, email);

    const job = await eventually(async () => {
      const j = await linkJob(id);
      assert.equal(j?.state, 'dead');
      return j;
    }, 15_000);
    const runs = await runsOf(job.id);
    assert.equal(runs.length, 1, 'a definite refusal is not retried');
    assert.equal(runs[0]!.outcome, 'dead');
    const alert = await db().selectFrom('alerts').selectAll().where('ref', '=', job.id).executeTakeFirstOrThrow();
    assert.equal(alert.kind, 'job_dead');
    assert.match(alert.message, /chekicha\.link/);
    assert.match(alert.message, /HTTP 403 rejected/);
    assert.deepEqual(await db().selectFrom('orders').selectAll().where('id', '=', order.id).executeTakeFirstOrThrow(), order, 'the order is exactly as the payment left it');
    assert.equal(await linkRow(id), undefined);
    assert.deepEqual(await sandboxLinks(id), []);

    const shown = await chekichaRow(b);
    assert.equal(shown.state, 'failed');
    assert.match(shown.text, /連携できませんでした \/ linking failed/);
    assert.ok(shown.button, 'shown.button');

    // Chekicha accepts again; the member's button runs the same job once more.
    await faults({ rejectStatus: 0 });
    const clicked = await b.submit('/account', '/account/chekicha');
    assert.equal(clicked.status, 303);
    assert.equal(clicked.location, '/account');
    await linked(id);
    // The link is recorded by the run; the run's success right after it.
    const revived = await eventually(async () => {
      const j = (await linkJob(id))!;
      assert.equal(j.state, 'done');
      return j;
    });
    assert.equal(revived.id, job.id, 'one job per member');
  });

  it('the job run twice (a worker that died after Chekicha answered) makes one link at Chekicha', async () => {
    const { b, email, id } = await member();
    const order = await buySerial(b, email);
    const first = await linked(id);
    await eventually(async () => assert.equal((await linkJob(id))?.state, 'done'));

    const { ctx } = store.rt;
    for (let i = 0; i < 2; i++) {
      // As if the first run's answer had never been recorded.
      await db().deleteFrom('customer_links').where('customer_id', '=', id).execute();
      await chekichaLinkJob.run({ customerId: id, orderId: order.id }, { ctx, jobId: 'by-hand', attempt: 1, signal: new AbortController().signal, log: ctx.log });
    }
    const again = await linked(id);
    assert.equal(again.link_id, first.link_id);
    assert.equal(again.account_id, first.account_id);
    assert.equal(again.requests, 1, 'the repeats were answered from the idempotency key, not linked again');
    assert.equal((await linkRow(id))!.external_id, first.account_id);
  });

  it('Chekicha slower than the job timeout: the run times out, is retried, and the member is linked once', async () => {
    const { b, email, id } = await member();
    await faults({ delayMs: 1500 });
    await buySerial(b, email);
    const link = await linked(id);
    const runs = await eventually(async () => {
      const r = await runsOf((await linkJob(id))!.id);
      assert.equal(r.at(-1)!.outcome, 'succeeded');
      return r;
    });
    assert.match(runs[0]!.error ?? '', /JobTimeoutError: job run timed out after 1 s/, 'the first run ran out of time');
    assert.equal(link.requests, 1);
  });

  it('links by hand from the my page (linking… until Chekicha answers); a post without the CSRF token is refused', async () => {
    const { b, id } = await member();

    const forged = await b.post('/account/chekicha', {});
    assert.equal(forged.status, 403);
    assert.match(forged.body, /送信できませんでした/);
    assert.equal(await linkJob(id), undefined, 'a refused form asks for nothing');

    await faults({ down: true });
    const clicked = await b.submit('/account', '/account/chekicha');
    assert.equal(clicked.status, 303);
    assert.equal(clicked.location, '/account');
    const shown = await chekichaRow(b);
    assert.equal(shown.state, 'linking');
    assert.match(shown.text, /連携処理中 \/ linking…/);
    assert.equal(shown.button, false);

    // A second click while linking adds nothing.
    const job = (await linkJob(id))!;
    await b.post('/account/chekicha', { _csrf: /name="_csrf" value="([^"]+)"/.exec((await b.get('/account')).body)![1]! });
    assert.equal((await db().selectFrom('jobs').select('id').where('kind', '=', 'chekicha.link').where('payload', 'like', `%${id}%`).execute()).length, 1);

    await faults({ down: false });
    const link = await linked(id);
    assert.deepEqual(link.orders, [], 'linked without a purchase');
    assert.equal((await chekichaRow(b)).state, 'linked');
    assert.equal((await linkJob(id))!.id, job.id);
  });
});

describe('Chekicha client against the sandbox: what can be retried and what cannot', () => {
  const KEY = 'sandbox-chekicha-key-0123456789';
  let app: FastifyInstance;
  let base: string;
  let web: string;
  before(async () => {
    app = Fastify();
    await app.register(chekichaSandbox({ partners: [{ partnerId: 'p-1', apiKey: KEY }], log: pino({ level: 'silent' }) }), { prefix: '/ckc' });
    app.post('/web/v1/account-links', async (_request, reply) => reply.type('text/html').send('<!doctype html><title>Welcome</title><p>Our new website'));
    const port = await freePort();
    await app.listen({ port, host: '127.0.0.1' });
    web = `http://127.0.0.1:${port}`;
    base = `${web}/ckc`;
  });
  after(async () => {
    await app?.close();
  });
  afterEach(async () => {
    await fetch(`${base}/api/faults`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ down: false, delayMs: 0, failNext: 0, rejectStatus: 0 }) });
  });

  const request = (over: Partial<ChekichaLinkRequest> = {}): ChekichaLinkRequest => ({ partnerId: 'p-1', memberRef: `cus_${randomBytes(4).toString('hex')}`, email: 'fan@example.jp', ...over });
  const setFaults = (f: Record<string, unknown>) => fetch(`${base}/api/faults`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(f) }).then((r) => r.json());

  async function failure(promise: Promise<unknown>): Promise<ChekichaError> {
    try {
      await promise;
    } catch (error) {
      assert.ok(error instanceof ChekichaError, String(error));
      return error;
    }
    assert.fail('expected a ChekichaError');
  }

  it('links a member: 201 the first time, 200 with the same link for the same member', async () => {
    const req = request({ orderNumber: 'K260101-ABCDEFGH', productCodes: ['demo-serial'] });
    const first = await linkAccount({ baseUrl: base, apiKey: KEY }, req);
    assert.equal(first.created, true);
    assert.equal(first.status, 'linked');
    const other = await linkAccount({ baseUrl: `${base}/`, apiKey: KEY }, { ...req, orderNumber: 'K260102-ABCDEFGH' });
    assert.equal(other.created, false, 'a member_ref is linked once');
    assert.equal(other.accountId, first.accountId);
  });

  it('refusals that no retry can fix are not retryable, and name the field', async () => {
    const wrongKey = await failure(linkAccount({ baseUrl: base, apiKey: 'not-the-key-000000' }, request()));
    assert.deepEqual([wrongKey.status, wrongKey.code, wrongKey.retryable], [401, 'unauthorized', false]);
    const partner = await failure(linkAccount({ baseUrl: base, apiKey: KEY }, request({ partnerId: 'someone-else' })));
    assert.deepEqual([partner.status, partner.code, partner.field, partner.retryable], [403, 'partner_mismatch', 'partner_id', false]);
    const email = await failure(linkAccount({ baseUrl: base, apiKey: KEY }, request({ email: 'not an address' })));
    assert.deepEqual([email.status, email.code, email.field, email.retryable], [422, 'invalid_parameter', 'email', false]);
    assert.match(email.message, /email: must be an email address/);
    await setFaults({ rejectStatus: 451 });
    const rejected = await failure(linkAccount({ baseUrl: base, apiKey: KEY }, request()));
    assert.deepEqual([rejected.status, rejected.code, rejected.retryable], [451, 'rejected', false]);
    // Not Chekicha at all: a wrong chekicha.apiUrl whose server answers with a web page.
    const page = await failure(linkAccount({ baseUrl: `${web}/web`, apiKey: KEY }, request()));
    assert.deepEqual([page.kind, page.retryable], ['malformed', false]);
    assert.match(page.message, /is chekicha\.apiUrl Chekicha's API\?/);
  });

  it('an outage, a server error, a time-out, no server at all are retryable', async () => {
    await setFaults({ down: true });
    const down = await failure(linkAccount({ baseUrl: base, apiKey: KEY }, request()));
    assert.deepEqual([down.kind, down.status, down.retryable], ['http', 503, true]);
    await setFaults({ down: false, failNext: 1 });
    const once = await failure(linkAccount({ baseUrl: base, apiKey: KEY }, request()));
    assert.deepEqual([once.status, once.retryable], [500, true]);
    assert.equal((await linkAccount({ baseUrl: base, apiKey: KEY }, request())).created, true, 'only the next one failed');
    await setFaults({ delayMs: 400 });
    const slow = await failure(linkAccount({ baseUrl: base, apiKey: KEY, timeoutMs: 100 }, request()));
    assert.deepEqual([slow.kind, slow.retryable], ['timeout', true]);
    const port = await freePort();
    const nobody = await failure(linkAccount({ baseUrl: `http://127.0.0.1:${port}`, apiKey: KEY }, request()));
    assert.deepEqual([nobody.kind, nobody.retryable], ['network', true]);
  });

  it('idempotency: the same key and body get the same answer, a reused key with another body is refused, one in flight answers 409', async () => {
    const req = request();
    const send = (body: string, key = idempotencyKey(req)) =>
      fetch(`${base}/v1/account-links`, { method: 'POST', headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json', 'idempotency-key': key }, body });
    await setFaults({ delayMs: 300 });
    const [first, during] = await Promise.all([send(linkBody(req)), new Promise((r) => setTimeout(r, 100)).then(() => send(linkBody(req)))]);
    assert.equal(first.status, 201);
    assert.equal(during.status, 409);
    assert.equal(((await during.json()) as { error: { code: string } }).error.code, 'request_in_progress');
    const firstBody = await first.json();
    const replay = await send(linkBody(req));
    assert.equal(replay.status, 201, 'the kept answer, status and all');
    assert.deepEqual(await replay.json(), firstBody);
    const reused = await send(linkBody({ ...req, email: 'other@example.jp' }));
    assert.equal(reused.status, 422);
    assert.equal(((await reused.json()) as { error: { code: string } }).error.code, 'idempotency_key_reused');
    assert.notEqual(idempotencyKey(req), idempotencyKey({ ...req, orderNumber: 'K1' }), 'another request, another key');
    assert.ok(idempotencyKey(req).startsWith(`kessai-${req.memberRef}-`), 'idempotencyKey(req).startsWith(`kessai-${req.memberRef}-`)');
  });
});
