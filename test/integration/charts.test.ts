import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createProduct } from '../../src/commerce/catalog.js';
import { CHART_SCHEDULE } from '../../src/commerce/chart-jobs.js';
import { lastClosedDate } from '../../src/commerce/chart-sales.js';
import { counter, sendChart, type ChartTarget } from '../../src/commerce/charts.js';
import { seedDemo } from '../../src/commerce/demo.js';
import { createOrder, operatorEvent } from '../../src/commerce/orders.js';
import { setShopSettings } from '../../src/commerce/shops.js';
import { loadConfig } from '../../src/config.js';
import { encodeSjis } from '../../src/gateways/common/sjis.js';
import { ChartUploadError } from '../../src/integrations/charts/transport.js';
import { Dispatcher } from '../../src/jobs/dispatcher.js';
import { enqueue } from '../../src/jobs/outbox.js';
import { nextRuns } from '../../src/jobs/schedules.js';
import { applyFact } from '../../src/payments/apply-fact.js';
import { createRuntime, SCHEDULES, type Runtime } from '../../src/runtime.js';
import { sshKeyPair, startFtpServer, startSftpServer, type FtpServer, type KeyPair, type SftpServer } from '../helpers/chart-servers.js';
import { jst, orderWithHistory } from '../helpers/charts.js';
import { forEachEngine, useTestDatabase } from '../helpers/db.js';

const ROOT = join(import.meta.dirname, '../..');
const MASTER_KEY = '00'.repeat(32);
const DATE = '2026-01-15';
const CD = { jan: '4988001234562', title: 'デモ シングルCD「決済の歌」' };
const BIG = { jan: '4988001234579', title: '髙橋の歌～限定盤～' };

/** What the agencies must receive for DATE: 2 units of the demo CD, 250,000 of the big seller. */
const ORICON_SJIS = encodeSjis(`20260115\t${CD.jan}\t${CD.title}\t2\n20260115\t${BIG.jan}\t${BIG.title}\t250000\n`);
const BILLBOARD = Buffer.from(
  [`9650557001${'20260115'}${CD.jan}00002`, `965055700120260115${BIG.jan}99999`, `965055700120260115${BIG.jan}99999`, `965055700120260115${BIG.jan}50002`].map((r) => `${r}\r\n`).join(''),
  'latin1',
);
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('chart reports: the daily schedule', () => {
  it('runs at 22:00 Asia/Tokyo as a recorded job', () => {
    assert.ok(SCHEDULES.includes(CHART_SCHEDULE), 'SCHEDULES.includes(CHART_SCHEDULE)');
    assert.deepEqual(CHART_SCHEDULE, { name: 'chart-reports', cron: '0 22 * * *', kind: 'charts.daily' });
    assert.deepEqual(nextRuns(CHART_SCHEDULE, 2, new Date('2026-01-15T00:00:00Z')).map((d) => d.toISOString()), ['2026-01-15T13:00:00.000Z', '2026-01-16T13:00:00.000Z']);
  });
});

forEachEngine('chart reports over SFTP and FTPS', (engine) => {
  const t = useTestDatabase(engine);
  let rt: Runtime;
  let dataDir: string;
  let sftp: SftpServer;
  let ftps: FtpServer;
  let plainFtp: FtpServer;
  let clientKey: KeyPair;
  let dispatcher: Dispatcher;

  const db = () => rt.ctx.db;
  const run = (target: ChartTarget, date = DATE) =>
    db().selectFrom('chart_runs').selectAll().where('shop_id', '=', 'default').where('target', '=', target).where('report_date', '=', date).executeTakeFirstOrThrow();
  const set = (values: Record<string, string>) => setShopSettings(rt.ctx, 'default', values);
  const oriconPath = (date = '20260115') => `/upload/oricon_${date}.tsv`;
  const billboardFile = (date = '20260115', server = ftps) => join(server.root, 'upload', `557001_${date}.txt`);

  /** Runs due jobs until the job of `kind` settles (done or dead), waiting out its backoff. */
  async function settle(kind: string, timeoutMs = 15_000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      await dispatcher.runOnce();
      const job = await db().selectFrom('jobs').selectAll().where('kind', '=', kind).orderBy('created_at', 'desc').executeTakeFirstOrThrow();
      if (job.state === 'done' || job.state === 'dead') return job;
      if (Date.now() > deadline) throw new Error(`job ${kind} did not settle: ${job.state} ${job.last_error}`);
      await sleep(20);
    }
  }

  async function runsOf(jobId: string) {
    return db().selectFrom('job_runs').select(['attempt', 'outcome', 'error']).where('job_id', '=', jobId).orderBy('attempt').execute();
  }

  /** The CLI in its own process; asynchronous, because the SFTP and FTP servers live in this one. */
  function kessai(args: string[]): Promise<{ code: number | null; out: string; err: string }> {
    const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'src/cli/main.ts'), ...args], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? '', DATABASE_URL: t.url, KESSAI_DATA_DIR: dataDir, KESSAI_MASTER_KEY: MASTER_KEY, KESSAI_ADMIN_TOKEN: 'test-admin-token-0123456789abcdef', LOG_LEVEL: 'silent' },
      timeout: 60_000,
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString('utf8')));
    child.stderr.on('data', (d: Buffer) => (err += d.toString('utf8')));
    return new Promise((resolve, reject) => {
      child.on('error', reject);
      child.on('close', (code) => resolve({ code, out, err }));
    });
  }

  before(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'kessai-charts-'));
    const config = loadConfig({
      DATABASE_URL: t.url,
      KESSAI_DATA_DIR: dataDir,
      KESSAI_MASTER_KEY: MASTER_KEY,
      KESSAI_ADMIN_TOKEN: 'test-admin-token-0123456789abcdef',
      KESSAI_JOB_MAX_ATTEMPTS: '3',
      LOG_LEVEL: process.env.KESSAI_TEST_LOG ?? 'silent',
    });
    rt = await createRuntime(config, { logDestination: process.env.KESSAI_TEST_LOG ? undefined : new Writable({ write: (_c, _e, done) => done() }) });
    dispatcher = new Dispatcher(rt.ctx, rt.jobs, { pollMs: 10, backoffBaseMs: 20, backoffCapMs: 40 });
    await seedDemo(rt.ctx);
    const big = await createProduct(rt.ctx, 'default', { code: 'big-cd', name: BIG.title, kind: 'physical', janCode: BIG.jan, chartEligible: true, price: 1100, stock: 10 });

    // One sale through the real path: checkout, payment, the operator's `ship`; then moved into DATE's window.
    const { order, attemptId } = await createOrder(rt.ctx, {
      shop: 'default',
      customer: { email: 'fan@example.jp', name: 'ファン' },
      shippingAddress: { name: 'ファン', postcode: '100-0001', prefecture: '東京都', city: '千代田区', line1: '千代田1-1', phone: '03-1234-5678' },
      lines: [{ sku: 'demo-cd', quantity: 2 }],
      payment: { provider: 'testpay' },
    });
    const attempt = await db().selectFrom('payment_attempts').select('merchant_ref').where('id', '=', attemptId).executeTakeFirstOrThrow();
    await applyFact(rt.ctx, 'default', 'testpay', { eventKey: 'evt-chart-1', merchantRef: attempt.merchant_ref, fact: { type: 'captured', amount: order.total }, payload: {} }, 'notification');
    await operatorEvent(rt.ctx, order.number, 'ship', 'test');
    await db().updateTable('state_changes').set({ at: jst(`${DATE}T10:00:00`) }).where('entity_id', '=', order.id).where('to_state', '=', 'shipped').execute();
    // A quantity no checkout allows, to see Billboard's split.
    await orderWithHistory(db(), 'default', [{ skuId: big.skuId, jan: BIG.jan, quantity: 250_000 }], [['shipped', jst(`${DATE}T11:00:00`)]]);

    clientKey = sshKeyPair();
    sftp = await startSftpServer({ user: 'kessai', clientPublicKey: clientKey.public });
    ftps = await startFtpServer({ user: 'bb', password: 'bb-secret-1', tls: true });
    plainFtp = await startFtpServer({ user: 'bb', password: 'bb-secret-1', tls: false });
    for (const server of [ftps, plainFtp]) mkdirSync(join(server.root, 'upload'));
    await set({
      'oricon.enabled': 'true',
      'oricon.host': '127.0.0.1',
      'oricon.port': String(sftp.port),
      'oricon.user': 'kessai',
      'oricon.privateKey': clientKey.private,
      'oricon.hostKeyFingerprint': sftp.hostKey.fingerprint,
      'oricon.remoteDir': 'upload',
      'oricon.encoding': 'sjis',
      'billboard.enabled': 'true',
      'billboard.host': '127.0.0.1',
      'billboard.port': String(ftps.port),
      'billboard.user': 'bb',
      'billboard.password': 'bb-secret-1',
      'billboard.remoteDir': 'upload',
      'billboard.caCert': ftps.cert!,
      'charts.alertEmail': 'ops@example.jp',
    });
  });

  after(async () => {
    await sftp?.stop();
    await ftps?.cleanup();
    await plainFtp?.cleanup();
    await rt?.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('kessai charts build writes each agency\'s file locally, byte for byte', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kessai-charts-cli-'));
    try {
      const bb = await kessai(['charts', 'build', '--date', DATE, '--target', 'billboard', '--out', join(dir, 'bb.txt')]);
      assert.equal(bb.code, 0, bb.err);
      assert.match(bb.out, new RegExp(`bb\\.txt: 4 record\\(s\\), 152 bytes, sha256 ${sha256(BILLBOARD)}`));
      assert.deepEqual(readFileSync(join(dir, 'bb.txt')), BILLBOARD);
      const or = await kessai(['charts', 'build', '--date', DATE, '--target', 'oricon', '--out', join(dir, 'or.tsv')]);
      assert.equal(or.code, 0, or.err);
      assert.deepEqual(readFileSync(join(dir, 'or.tsv')), ORICON_SJIS, 'Shift_JIS, as oricon.encoding says');
      const bad = await kessai(['charts', 'build', '--date', '2026-02-30', '--target', 'oricon']);
      assert.equal(bad.code, 1);
      assert.match(bad.err, /--date: "2026-02-30" is not a date as YYYY-MM-DD/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('sends Oricon by SFTP: Shift_JIS TSV, under a temporary name first, recorded with its checksum', async () => {
    const result = await sendChart(rt.ctx, { shop: 'default', target: 'oricon', date: DATE });
    assert.equal(result.status, 'sent');
    assert.deepEqual(sftp.files.get(oriconPath()), ORICON_SJIS);
    assert.deepEqual(sftp.opened, ['/upload/.oricon_20260115.tsv.part'], 'written under the temporary name only');
    assert.equal(sftp.files.has('/upload/.oricon_20260115.tsv.part'), false, 'renamed when complete');
    const r = await run('oricon');
    assert.equal(r.outcome, 'sent');
    assert.equal(r.checksum, sha256(ORICON_SJIS));
    assert.equal(r.row_count, 2);
    assert.equal(r.byte_count, ORICON_SJIS.length);
    assert.equal(r.attempts, 1);
    assert.equal(r.sends, 1);
    assert.ok(r.sent_at, 'r.sent_at');
    // The file sent is kept for the operator.
    assert.deepEqual(readFileSync(join(dataDir, 'charts/default/oricon/oricon_20260115.tsv')), ORICON_SJIS);
  });

  it('sends Billboard Japan by FTPS: fixed-width ASCII with CRLF, 250,000 split into 99,999 + 99,999 + 50,002', async () => {
    const result = await sendChart(rt.ctx, { shop: 'default', target: 'billboard', date: DATE });
    assert.equal(result.status, 'sent');
    assert.equal(result.status === 'sent' && result.destination, `ftps://bb@127.0.0.1:${ftps.port}/upload`);
    assert.deepEqual(result.status === 'sent' && result.warnings, []);
    assert.deepEqual(readFileSync(billboardFile()), BILLBOARD);
    assert.deepEqual(readdirSync(join(ftps.root, 'upload')), ['557001_20260115.txt']);
    const r = await run('billboard');
    assert.equal(r.row_count, 4);
    assert.equal(r.checksum, sha256(BILLBOARD));
  });

  it('refuses to send the same date twice without --force; --force sends it again', async () => {
    const again = await sendChart(rt.ctx, { shop: 'default', target: 'oricon', date: DATE });
    assert.equal(again.status, 'already_sent');
    assert.equal((await run('oricon')).attempts, 1, 'a refused send is not an attempt');
    const cli = await kessai(['charts', 'send', '--date', DATE, '--target', 'oricon']);
    assert.equal(cli.code, 3, cli.err);
    assert.match(cli.err, new RegExp(`Oricon ${DATE}: refused, already sent at .*sha256 ${sha256(ORICON_SJIS)}\\); add --force to send it again`));

    sftp.files.delete(oriconPath());
    const forced = await kessai(['charts', 'send', '--date', DATE, '--target', 'oricon', '--force']);
    assert.equal(forced.code, 0, forced.err);
    assert.match(forced.out, new RegExp(`Oricon ${DATE}: sent oricon_20260115.tsv to sftp://kessai@127.0.0.1:${sftp.port}/upload: 2 record\\(s\\)`));
    assert.deepEqual(sftp.files.get(oriconPath()), ORICON_SJIS);
    const r = await run('oricon');
    assert.equal(r.sends, 2);
    assert.equal(r.attempts, 2);

    // A forced resend over a file still there replaces it.
    const over = await sendChart(rt.ctx, { shop: 'default', target: 'billboard', date: DATE }, { force: true });
    assert.equal(over.status, 'sent');
    assert.deepEqual(readFileSync(billboardFile()), BILLBOARD);
    const runs = await kessai(['charts', 'runs', '--date', DATE]);
    assert.match(runs.out, new RegExp(`${DATE}\tdefault\tbillboard\tsent\tattempts=2\tsends=2\trows=4`));
  });

  it('refuses a day whose window is still open', async () => {
    await assert.rejects(sendChart(rt.ctx, { shop: 'default', target: 'oricon', date: '2099-01-01' }), /closes at 2099-01-01 22:00 JST/);
  });

  it('wrong host key: refused before authenticating, both fingerprints named, alert and mail at once', async () => {
    const other = sshKeyPair();
    await set({ 'oricon.hostKeyFingerprint': other.fingerprint });
    try {
      const opened = sftp.opened.length;
      await assert.rejects(
        sendChart(rt.ctx, { shop: 'default', target: 'oricon', date: '2026-01-16' }),
        (e: Error) => e instanceof ChartUploadError && e.failure === 'host_key_mismatch' && e.message.includes(`expected ${other.fingerprint}, received ${sftp.hostKey.fingerprint}`),
      );
      assert.equal(sftp.opened.length, opened, 'nothing uploaded');
      // Through the job: no retry can fix it, so it is dead-lettered on the first attempt.
      await enqueue(db(), { kind: 'charts.send', payload: { shop: 'default', target: 'oricon', date: '2026-01-17' } });
      const job = await settle('charts.send');
      assert.equal(job.state, 'dead');
      assert.equal(job.attempts, 1);
      assert.match(job.last_error ?? '', /host key mismatch/);
      const alert = await db().selectFrom('alerts').selectAll().where('ref', '=', job.id).executeTakeFirstOrThrow();
      assert.match(alert.message, /host key mismatch: expected SHA256:.*kessai charts send --shop default --date 2026-01-17 --target oricon/);
      const r = await run('oricon', '2026-01-17');
      assert.equal(r.outcome, 'dead');
      const mail = await settle('mail.send');
      assert.equal(mail.state, 'done');
      const eml = readdirSync(join(dataDir, 'mail')).map((f) => readFileSync(join(dataDir, 'mail', f), 'utf8')).find((m) => m.includes('2026-01-17'));
      assert.ok(eml, 'the operator was mailed');
      assert.match(eml, /To: ops@example\.jp/);
      assert.match(eml, /Oricon report for 2026-01-17 was not sent/);
    } finally {
      await set({ 'oricon.hostKeyFingerprint': sftp.hostKey.fingerprint });
    }
  });

  it('wrong credentials: SFTP key and FTP password refused, named, not retried', async () => {
    await set({ 'oricon.privateKey': sshKeyPair().private, 'billboard.password': 'wrong-password' });
    try {
      await assert.rejects(sendChart(rt.ctx, { shop: 'default', target: 'oricon', date: '2026-01-18' }), (e: Error) => e instanceof ChartUploadError && e.failure === 'auth_failed' && /refused user "kessai"/.test(e.message));
      await assert.rejects(sendChart(rt.ctx, { shop: 'default', target: 'billboard', date: '2026-01-18' }), (e: Error) => e instanceof ChartUploadError && e.failure === 'auth_failed' && /ftps:\/\/bb@127\.0\.0\.1:\d+: the server refused user "bb"/.test(e.message));
      assert.equal((await run('billboard', '2026-01-18')).outcome, 'dead', 'a send from the CLI has no retry: its failure is final');
      const dead = (await counter(rt.ctx.metrics).get()).values.find((v) => v.labels.target === 'billboard' && v.labels.outcome === 'dead');
      assert.ok((dead?.value ?? 0) >= 1, 'counted in kessai_chart_runs_total');
    } finally {
      await set({ 'oricon.privateKey': clientKey.private, 'billboard.password': 'bb-secret-1' });
    }
  });

  it('server down, then up: the job retries with backoff and succeeds', async () => {
    await sftp.stop();
    await enqueue(db(), { kind: 'charts.send', payload: { shop: 'default', target: 'oricon', date: '2026-01-19' }, dedupeKey: 'down-up' });
    await dispatcher.runOnce();
    const failed = await run('oricon', '2026-01-19');
    assert.equal(failed.outcome, 'failed');
    assert.match(failed.error ?? '', /cannot connect/);
    await sftp.start();
    const job = await settle('charts.send');
    assert.equal(job.state, 'done');
    const runs = await runsOf(job.id);
    assert.deepEqual(runs.map((r) => r.outcome), [...runs.slice(0, -1).map(() => 'failed'), 'succeeded']);
    assert.ok(runs.length >= 2, 'runs.length >= 2');
    const r = await run('oricon', '2026-01-19');
    assert.equal(r.outcome, 'sent');
    assert.equal(r.attempts, runs.length);
    assert.ok(sftp.files.has(oriconPath('20260119')), 'an empty day is still reported');
  });

  it('partial SFTP upload: only the temporary name holds the broken file; the retry completes and renames it', async () => {
    sftp.files.delete(oriconPath()); // the agency collected the earlier copy
    sftp.faults.dropAfterBytes = 10;
    await assert.rejects(sendChart(rt.ctx, { shop: 'default', target: 'oricon', date: DATE }, { force: true, isFinal: () => false }), /upload of upload\/oricon_20260115\.tsv failed/);
    const before = sftp.files.get('/upload/.oricon_20260115.tsv.part');
    assert.equal(before?.length, 10, 'the cut-off bytes sit under the temporary name');
    assert.equal(sftp.files.has(oriconPath()), false, 'nothing under the final name');
    assert.equal((await run('oricon')).outcome, 'failed');
    const retry = await sendChart(rt.ctx, { shop: 'default', target: 'oricon', date: DATE }, { force: true });
    assert.equal(retry.status, 'sent');
    assert.deepEqual(sftp.files.get(oriconPath()), ORICON_SJIS);
    assert.equal(sftp.files.has('/upload/.oricon_20260115.tsv.part'), false);
  });

  it('partial FTPS upload: the final name never holds a short file', async () => {
    rmSync(billboardFile());
    ftps.faults.cutAfterBytes = 40;
    await assert.rejects(sendChart(rt.ctx, { shop: 'default', target: 'billboard', date: DATE }, { force: true, isFinal: () => false }), (e: Error) => e instanceof ChartUploadError && e.failure === 'transfer_failed');
    assert.equal(existsSync(billboardFile()), false);
    assert.equal(readFileSync(join(ftps.root, 'upload', '.557001_20260115.txt.part')).length, 40);
    await sendChart(rt.ctx, { shop: 'default', target: 'billboard', date: DATE }, { force: true });
    assert.deepEqual(readFileSync(billboardFile()), BILLBOARD);
    assert.deepEqual(readdirSync(join(ftps.root, 'upload')), ['557001_20260115.txt']);
  });

  it('plain FTP only when the target allows it, with a warning on every run', async () => {
    await set({ 'billboard.port': String(plainFtp.port) });
    try {
      await assert.rejects(sendChart(rt.ctx, { shop: 'default', target: 'billboard', date: '2026-01-20' }), (e: Error) => e instanceof ChartUploadError && e.failure === 'tls_failed' && /does not offer explicit TLS.*billboard\.allowInsecure/.test(e.message));
      await set({ 'billboard.allowInsecure': 'true' });
      for (const date of ['2026-01-21', '2026-01-22']) {
        const sent = await sendChart(rt.ctx, { shop: 'default', target: 'billboard', date });
        assert.equal(sent.status, 'sent');
        assert.match(sent.status === 'sent' ? sent.warnings.join() : '', /plain FTP \(billboard\.allowInsecure=true\): the password and the sales go unencrypted/);
        assert.equal(sent.status === 'sent' && sent.destination, `ftp://bb@127.0.0.1:${plainFtp.port}/upload`);
      }
      await sendChart(rt.ctx, { shop: 'default', target: 'billboard', date: DATE }, { force: true });
      assert.deepEqual(readFileSync(billboardFile('20260115', plainFtp)), BILLBOARD);
    } finally {
      await set({ 'billboard.port': String(ftps.port), 'billboard.allowInsecure': '' });
    }
  });

  it('the 22:00 tick queues one send per enabled target for the day that closed', async () => {
    await enqueue(db(), { kind: 'charts.daily', payload: {}, dedupeKey: 'tick-test' });
    const tick = await settle('charts.daily');
    assert.equal(tick.state, 'done');
    const sends = await db().selectFrom('jobs').select(['payload', 'dedupe_key']).where('kind', '=', 'charts.send').where('dedupe_key', 'like', 'charts.send:%').execute();
    const date = lastClosedDate(new Date());
    assert.deepEqual(sends.map((s) => s.dedupe_key).sort(), [`charts.send:default:billboard:${date}`, `charts.send:default:oricon:${date}`]);
  });
});
