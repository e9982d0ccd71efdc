import { join } from 'node:path';
import { sql } from 'kysely';
import { Counter } from 'prom-client';
import type { Logger } from 'pino';
import { z } from 'zod';
import type { Context } from '../context.js';
import type { ChartRun } from '../db/schema.js';
import { KessaiError } from '../errors.js';
import { newId, nowIso } from '../ids.js';
import { billboardFormat, parseBillboardLayout } from '../integrations/charts/billboard.js';
import { ChartFormatError, fileNameOf, writeChartFile, compactDate, type ChartFileInfo, type ChartFormat } from '../integrations/charts/file.js';
import { uploadFtp } from '../integrations/charts/ftp.js';
import { oriconFormat, parseOriconColumns } from '../integrations/charts/oricon.js';
import { uploadSftp } from '../integrations/charts/sftp.js';
import { ChartUploadError, type ChartUpload } from '../integrations/charts/transport.js';
import { mailTemplates } from '../jobs/mail-template.js';
import { enqueue } from '../jobs/outbox.js';
import type { Metrics } from '../observability.js';
import { chartSales, parseReportDate, reportingWindow } from './chart-sales.js';
import { getShopSettings, type ShopSettings } from './shops.js';

/*
 * Chart reports: build a day's file from the sales (chart-sales.ts), upload it, and keep the record in
 * `chart_runs` — checksum, rows, every attempt, the last error, when it was sent. The same function
 * serves the 22:00 job and `kessai charts send`; a date already sent is sent again only when asked
 * (`force`), and the row's lease keeps two senders of the same day apart. Nothing here swallows an
 * error: the job retries it and, at the end, the operator is alerted and mailed.
 */

export const CHART_TARGETS = ['oricon', 'billboard'] as const;
export type ChartTarget = (typeof CHART_TARGETS)[number];

export const TARGET_NAMES: Record<ChartTarget, string> = { oricon: 'Oricon', billboard: 'Billboard Japan' };

/** How long a send holds its day: longer than the job's timeout, so a live sender is never overtaken. */
export const SEND_LEASE_MS = 10 * 60_000;

function str(settings: ShopSettings, key: string): string | undefined {
  const v = settings[key];
  return typeof v === 'string' && v !== '' ? v : undefined;
}

/** Throws one error naming every missing setting of the target. */
function need(settings: ShopSettings, shop: string, keys: string[]): void {
  const missing = keys.filter((k) => str(settings, k) === undefined);
  if (missing.length > 0) {
    throw new KessaiError(
      'chart_not_configured',
      `shop "${shop}": ${missing.join(', ')} ${missing.length === 1 ? 'is' : 'are'} not set (kessai shop set ${shop} ${missing.map((k) => `${k}=…`).join(' ')})`,
      409,
    );
  }
}

/** The file a target gets for a date: its name and how its records are written. */
export function chartFileSetup(settings: ShopSettings, target: ChartTarget, date: string): { fileName: string; format: ChartFormat } {
  const day = compactDate(date);
  if (target === 'oricon') {
    const storeCode = str(settings, 'oricon.storeCode');
    const format = oriconFormat({
      columns: parseOriconColumns(str(settings, 'oricon.columns') ?? 'date,jan,title,quantity'),
      encoding: settings['oricon.encoding'] === 'sjis' ? 'sjis' : 'utf8',
      ...(storeCode ? { storeCode } : {}),
    });
    return { fileName: fileNameOf(str(settings, 'oricon.fileName') ?? 'oricon_{date}.tsv', { date: day, ...(storeCode ? { store: storeCode } : {}) }), format };
  }
  const chainCode = str(settings, 'billboard.chainCode')!;
  const storeCode = str(settings, 'billboard.storeCode')!;
  const format = billboardFormat({ chainCode, storeCode, layout: parseBillboardLayout(str(settings, 'billboard.layout')!) });
  return { fileName: fileNameOf(str(settings, 'billboard.fileName')!, { date: day, store: storeCode, chain: chainCode }), format };
}

export interface ChartTransport {
  /** Where the file goes, for logs and the CLI (no secrets). */
  describe: string;
  /** Said on every run where it applies (plain FTP). */
  warning?: string;
  upload(upload: ChartUpload): Promise<void>;
}

export function chartTransport(settings: ShopSettings, shop: string, target: ChartTarget): ChartTransport {
  if (target === 'oricon') {
    need(settings, shop, ['oricon.host', 'oricon.user', 'oricon.privateKey', 'oricon.hostKeyFingerprint']);
    const t = {
      host: str(settings, 'oricon.host')!,
      port: Number(str(settings, 'oricon.port') ?? '22'),
      username: str(settings, 'oricon.user')!,
      privateKey: str(settings, 'oricon.privateKey')!,
      passphrase: str(settings, 'oricon.passphrase'),
      hostKeyFingerprint: str(settings, 'oricon.hostKeyFingerprint')!,
      remoteDir: str(settings, 'oricon.remoteDir') ?? '.',
    };
    return { describe: `sftp://${t.username}@${t.host}:${t.port}/${t.remoteDir}`, upload: (u) => uploadSftp(t, u) };
  }
  need(settings, shop, ['billboard.host', 'billboard.user', 'billboard.password']);
  const insecure = settings['billboard.allowInsecure'] === true;
  const t = {
    host: str(settings, 'billboard.host')!,
    port: Number(str(settings, 'billboard.port') ?? '21'),
    user: str(settings, 'billboard.user')!,
    password: str(settings, 'billboard.password')!,
    remoteDir: str(settings, 'billboard.remoteDir') ?? '.',
    insecure,
    ca: str(settings, 'billboard.caCert'),
  };
  return {
    describe: `${insecure ? 'ftp' : 'ftps'}://${t.user}@${t.host}:${t.port}/${t.remoteDir}`,
    ...(insecure
      ? { warning: `shop "${shop}": Billboard Japan upload over plain FTP (billboard.allowInsecure=true): the password and the sales go unencrypted` }
      : {}),
    upload: (u) => uploadFtp(t, u),
  };
}

/** Where a shop's generated files are kept: what was sent stays readable for the operator. */
export function chartFileDir(ctx: Context, shop: string, target: ChartTarget): string {
  return join(ctx.config.dataDir, 'charts', shop, target);
}

export interface ChartRequest {
  shop: string;
  target: ChartTarget;
  date: string;
}

/** Builds the day's file (to `out`, or the shop's chart folder) without sending it. */
export async function buildChart(ctx: Context, req: ChartRequest & { out?: string }): Promise<ChartFileInfo & { fileName: string }> {
  const date = parseReportDate(req.date);
  const settings = await getShopSettings(ctx, req.shop);
  const { fileName, format } = chartFileSetup(settings, req.target, date);
  const path = req.out ?? join(chartFileDir(ctx, req.shop, req.target), fileName);
  return { fileName, ...(await writeChartFile(chartSales(ctx.db, req.shop, date), format, path)) };
}

export type SendResult =
  | { status: 'sent'; run: ChartRun; file: ChartFileInfo & { fileName: string }; destination: string; warnings: string[] }
  | { status: 'already_sent'; run: ChartRun };

export interface SendOptions {
  /** Send again although the date was sent (kessai charts send --force). */
  force?: boolean;
  /**
   * Whether a failure now is the last word (the job's last attempt, or a failure no retry can fix):
   * then the run is marked dead and the operator is mailed. Default: every failure is final (CLI).
   */
  isFinal?: (error: unknown) => boolean;
  signal?: AbortSignal;
  log?: Logger;
  now?: Date;
}

/** Errors no retry can fix: a person must change settings, a product name or ask the agency. */
export function isPermanentChartError(error: unknown): boolean {
  return (
    (error instanceof ChartUploadError && error.permanent) ||
    error instanceof ChartFormatError ||
    (error instanceof KessaiError && error.code !== 'chart_busy')
  );
}

/**
 * Sends one day's file to one target, recording the attempt. Returns `already_sent` (and changes
 * nothing) when the date was sent before and `force` is not set.
 */
export async function sendChart(ctx: Context, req: ChartRequest, opts: SendOptions = {}): Promise<SendResult> {
  const date = parseReportDate(req.date);
  const now = opts.now ?? new Date();
  const log = (opts.log ?? ctx.log).child({ shop: req.shop, target: req.target, date });
  const { end } = reportingWindow(date);
  if (now < end) {
    throw new KessaiError('chart_day_open', `the reporting window of ${date} closes at ${date} 22:00 JST; sending now would report an incomplete day`, 409);
  }

  // An unknown shop is refused before anything is recorded; a target's bad settings are an attempt.
  const settings = await getShopSettings(ctx, req.shop);
  const claimed = await claim(ctx, req, date, opts.force === true, now);
  if (!claimed.ok) return { status: 'already_sent', run: claimed.run };
  const run = claimed.run;

  const warnings: string[] = [];
  try {
    const transport = chartTransport(settings, req.shop, req.target);
    if (transport.warning) {
      warnings.push(transport.warning);
      log.warn(transport.warning);
    }
    const file = await buildChart(ctx, { ...req, date });
    await transport.upload({ localPath: file.path, bytes: file.bytes, fileName: file.fileName, ...(opts.signal ? { signal: opts.signal } : {}) });
    const at = nowIso();
    await ctx.db
      .updateTable('chart_runs')
      .set({
        outcome: 'sent',
        file_name: file.fileName,
        checksum: file.checksum,
        row_count: file.rows,
        byte_count: file.bytes,
        sends: sql`sends + 1`,
        error: null,
        locked_until: null,
        updated_at: at,
        sent_at: at,
      })
      .where('id', '=', run.id)
      .execute();
    counter(ctx.metrics).inc({ target: req.target, outcome: 'sent' });
    log.info({ file: file.fileName, rows: file.rows, bytes: file.bytes, checksum: file.checksum, to: transport.describe }, 'chart report sent');
    const sent = await ctx.db.selectFrom('chart_runs').selectAll().where('id', '=', run.id).executeTakeFirstOrThrow();
    return { status: 'sent', run: sent, file, destination: transport.describe, warnings };
  } catch (error) {
    const final = (opts.isFinal ?? (() => true))(error);
    await recordFailure(ctx, run, error, final, log);
    throw error;
  }
}

type Claim = { ok: true; run: ChartRun } | { ok: false; run: ChartRun };

/**
 * Takes the day for this attempt: creates its row, or takes it over when it is not sent (or `force`)
 * and no other sender holds a live lease. The lease outlives the job's timeout, so it only expires
 * for a sender that died.
 */
async function claim(ctx: Context, req: ChartRequest, date: string, force: boolean, now: Date): Promise<Claim> {
  const at = nowIso(now);
  const lease = { outcome: 'running' as const, locked_until: nowIso(new Date(now.getTime() + SEND_LEASE_MS)), updated_at: at };
  const day = { shop_id: req.shop, target: req.target, report_date: date };
  const inserted = await ctx.db
    .insertInto('chart_runs')
    .values({ id: newId('chr'), ...day, ...lease, attempts: 1, sends: 0, created_at: at })
    .onConflict((oc) => oc.columns(['shop_id', 'target', 'report_date']).doNothing())
    .executeTakeFirst();
  let taken = (inserted.numInsertedOrUpdatedRows ?? 0n) > 0n;
  if (!taken) {
    let update = ctx.db
      .updateTable('chart_runs')
      .set({ ...lease, attempts: sql`attempts + 1` })
      .where('shop_id', '=', req.shop)
      .where('target', '=', req.target)
      .where('report_date', '=', date)
      .where((eb) => eb.or([eb('outcome', '!=', 'running'), eb('locked_until', '<', at)]));
    if (!force) update = update.where('outcome', '!=', 'sent');
    taken = (await update.executeTakeFirst()).numUpdatedRows > 0n;
  }
  const run = await ctx.db
    .selectFrom('chart_runs')
    .selectAll()
    .where('shop_id', '=', req.shop)
    .where('target', '=', req.target)
    .where('report_date', '=', date)
    .executeTakeFirstOrThrow();
  if (taken) return { ok: true, run };
  if (run.outcome === 'sent') return { ok: false, run };
  throw new KessaiError('chart_busy', `the ${TARGET_NAMES[req.target]} report of ${date} for shop "${req.shop}" is being sent by another process (held until ${run.locked_until})`, 409);
}

async function recordFailure(ctx: Context, run: ChartRun, error: unknown, final: boolean, log: Logger): Promise<void> {
  const message = describeError(error);
  const target = run.target;
  const at = nowIso();
  try {
    const alertTo = final ? str(await getShopSettings(ctx, run.shop_id).catch(() => ({}) as ShopSettings), 'charts.alertEmail') : undefined;
    await ctx.db.transaction().execute(async (tx) => {
      await tx
        .updateTable('chart_runs')
        .set({ outcome: final ? 'dead' : 'failed', error: message, locked_until: null, updated_at: at })
        .where('id', '=', run.id)
        .execute();
      if (alertTo) {
        // Through the outbox, in the same transaction: the mail exists exactly when the failure is recorded.
        await enqueue(tx, {
          kind: 'mail.send',
          payload: { template: 'chart_alert', ...failureMail(run, message, alertTo) },
          dedupeKey: `charts.alert-mail:${run.id}:${run.attempts}`,
        });
      }
    });
  } catch (err) {
    log.error({ err }, 'could not record the chart run failure');
  }
  counter(ctx.metrics).inc({ target, outcome: final ? 'dead' : 'failed' });
  if (final) log.error({ error: message, attempts: run.attempts }, 'chart report not sent: it needs an operator');
  else log.warn({ error: message, attempts: run.attempts }, 'chart report failed; it will be retried');
}

const alertMail = z.object({ to: z.string(), subject: z.string(), text: z.string(), id: z.string() });
export type AlertMail = z.infer<typeof alertMail>;

/** The operator's mail about a report that finally failed: written when the failure is recorded. */
export const CHART_MAILS = mailTemplates({ chart_alert: alertMail }, async (_ctx, { to, subject, text, id }) => ({ to, subject, text, id }));

function failureMail(run: ChartRun, message: string, to: string): AlertMail {
  const name = TARGET_NAMES[run.target];
  return {
    to,
    subject: `[kessai] ${name} report for ${run.report_date} was not sent (shop ${run.shop_id})`,
    text: [
      `The ${name} chart report of ${run.report_date} for shop "${run.shop_id}" could not be sent after ${run.attempts} attempt(s).`,
      '',
      `Last error: ${message}`,
      '',
      'Once the cause is fixed, send it with:',
      `  kessai charts send --shop ${run.shop_id} --date ${run.report_date} --target ${run.target}`,
      '',
      'Runs and their errors: kessai charts runs; open alerts: kessai jobs alerts.',
    ].join('\n'),
    id: `chart-alert.${run.id}.${run.attempts}`,
  };
}

export function describeError(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  return text.length > 2000 ? `${text.slice(0, 2000)}…` : text;
}

/** Newest first. */
export async function listChartRuns(ctx: Context, filter: { shop?: string; date?: string; limit?: number } = {}): Promise<ChartRun[]> {
  let q = ctx.db.selectFrom('chart_runs').selectAll();
  if (filter.shop) q = q.where('shop_id', '=', filter.shop);
  if (filter.date) q = q.where('report_date', '=', parseReportDate(filter.date));
  return q.orderBy('report_date', 'desc').orderBy('target').limit(Math.min(filter.limit ?? 60, 1000)).execute();
}

const counters = new WeakMap<Metrics, Counter<'target' | 'outcome'>>();

/** `kessai_chart_runs_total{target,outcome}`: sent, failed (will retry), dead (operator alerted). */
export function counter(metrics: Metrics): Counter<'target' | 'outcome'> {
  let c = counters.get(metrics);
  if (!c) {
    c = new Counter({
      name: 'kessai_chart_runs_total',
      help: 'Chart report attempts by target and outcome (sent, failed, dead)',
      labelNames: ['target', 'outcome'],
      registers: [metrics.registry],
    });
    counters.set(metrics, c);
  }
  return c;
}
