import { z } from 'zod';
import { StopRetrying } from '../errors.js';
import { enqueue } from '../jobs/outbox.js';
import type { JobKind } from '../jobs/registry.js';
import type { Schedule } from '../jobs/schedules.js';
import { lastClosedDate } from './chart-sales.js';
import { CHART_TARGETS, describeError, isPermanentChartError, sendChart } from './charts.js';
import { getShopSettings, listShops } from './shops.js';

/*
 * The daily chart reports as outbox jobs. At 22:00 JST the tick enqueues one `charts.send` per shop
 * and enabled target, keyed by the date, so a tick seen by several schedulers (or run twice) is one
 * send. Each send is retried with the dispatcher's backoff; its last failure — or a failure no retry
 * can fix (host key, credentials, TLS, settings) at once — dead-letters it, which raises the alert,
 * counts the metric and logs an error, and sendChart mails the shop's charts.alertEmail.
 */

export const CHART_SCHEDULE: Schedule = { name: 'chart-reports', cron: '0 22 * * *', kind: 'charts.daily' };

/** Uploads are slow on a bad day; the dispatcher's lease is this plus its grace (sendChart's lease is longer). */
const SEND_TIMEOUT_SECONDS = 300;

const sendPayload = z.object({ shop: z.string(), target: z.enum(CHART_TARGETS), date: z.string() });

export function chartJobKinds(): JobKind[] {
  return [
    {
      kind: 'charts.daily',
      async run(_payload, job) {
        // The newest closed day, not "today": a tick that runs late (or is retried after midnight) still reports its day.
        const date = lastClosedDate(new Date());
        for (const shop of await listShops(job.ctx)) {
          const settings = await getShopSettings(job.ctx, shop.id);
          for (const target of CHART_TARGETS) {
            if (settings[`${target}.enabled`] !== true) continue;
            await enqueue(job.ctx.db, { kind: 'charts.send', payload: { shop: shop.id, target, date }, dedupeKey: `charts.send:${shop.id}:${target}:${date}` });
          }
        }
      },
    },
    {
      kind: 'charts.send',
      timeoutSeconds: SEND_TIMEOUT_SECONDS,
      async run(payload, job) {
        const req = sendPayload.parse(payload);
        const maxAttempts = job.ctx.config.jobMaxAttempts;
        const isFinal = (error: unknown) => isPermanentChartError(error) || job.attempt >= maxAttempts;
        try {
          const result = await sendChart(job.ctx, req, { isFinal, signal: job.signal, log: job.log });
          if (result.status === 'already_sent') job.log.info({ ...req, sentAt: result.run.sent_at }, 'chart report already sent; nothing to do');
        } catch (error) {
          if (isPermanentChartError(error)) throw new StopRetrying(`${describeError(error)} (${resendHint(req)})`);
          if (job.attempt >= maxAttempts) throw new Error(`${describeError(error)} (${resendHint(req)})`, { cause: error });
          throw error;
        }
      },
    },
  ];
}

function resendHint(req: { shop: string; target: string; date: string }): string {
  return `after fixing the cause: kessai charts send --shop ${req.shop} --date ${req.date} --target ${req.target}`;
}
