import { z } from 'zod';
import { ACCOUNT_MAILS } from '../accounts/mail.js';
import { CHART_MAILS } from '../commerce/charts.js';
import { INQUIRY_MAILS } from '../commerce/inquiries.js';
import { LOTTERY_MAILS } from '../commerce/lottery-mail.js';
import { ORDER_MAILS } from '../commerce/order-mail.js';
import type { Context } from '../context.js';
import type { Db } from '../db/index.js';
import { insertRow } from '../db/insert.js';
import type { MailLogEntry } from '../db/schema.js';
import { invalid, StopRetrying } from '../errors.js';
import { newId, nowIso } from '../ids.js';
import { describeMailError, isRecipientRejected, type Mail, type Mailer } from '../integrations/mail/index.js';
import type { MailTemplate } from './mail-template.js';
import type { JobKind } from './registry.js';
import type { Schedule } from './schedules.js';

/*
 * The one way mail leaves kessai: a `mail.send` outbox job names a template; this job renders it,
 * hands it to the mailer and writes one mail_log row per attempt. A refused or unreachable server
 * fails the job, so the outbox retries it with backoff (the Message-ID stays the same); a recipient
 * the server refuses for good (5xx to RCPT TO) is dead-lettered at once, with an alert.
 */

/** Every mail kessai sends. */
export const MAIL_TEMPLATES: readonly MailTemplate[] = [...ACCOUNT_MAILS, ...ORDER_MAILS, ...LOTTERY_MAILS, ...INQUIRY_MAILS, ...CHART_MAILS];

/** Mail log rows are kept this long, then swept (docs/decisions.md). */
export const MAIL_LOG_RETENTION_DAYS = 90;

export const MAIL_LOG_SCHEDULE: Schedule = { name: 'sweep-mail-log', cron: '40 4 * * *', kind: 'mail.sweep-log' };

export function mailJobKinds(mailer: Mailer, opts: { maxAttempts: number }, templates: readonly MailTemplate[] = MAIL_TEMPLATES): JobKind[] {
  const byName = new Map(templates.map((t) => [t.name, t]));
  return [
    {
      kind: 'mail.send',
      maxAttempts: opts.maxAttempts,
      async run(payload, job) {
        const name = (payload as { template?: unknown } | null)?.template;
        const template = typeof name === 'string' ? byName.get(name) : undefined;
        // Neither can get better by waiting: stop at once, so the alert names the fault.
        if (!template) throw new StopRetrying(`no mail template ${JSON.stringify(name)} (known: ${[...byName.keys()].join(', ')})`);
        const parsed = template.payload.safeParse(payload);
        if (!parsed.success) throw new StopRetrying(`mail ${template.name}: bad payload: ${z.prettifyError(parsed.error)}`);
        const mail = await template.render(job.ctx, parsed.data, job.jobId);
        if (!mail) {
          job.log.info({ template: template.name }, 'nothing to mail any more');
          return;
        }
        const entry = { ctx: job.ctx, jobId: job.jobId, attempt: job.attempt, template: template.name, mail };
        let sent;
        try {
          sent = await mailer.send(mail);
        } catch (error) {
          const response = describeMailError(error);
          await logAttempt({ ...entry, outcome: 'failed', response });
          if (isRecipientRejected(error)) throw new StopRetrying(`${mail.to} was refused by the mail server for good (${response}); not retried`);
          throw error;
        }
        await logAttempt({ ...entry, outcome: 'sent', response: sent.response });
      },
    },
    {
      kind: 'mail.sweep-log',
      async run(_payload, job) {
        const before = nowIso(new Date(Date.now() - MAIL_LOG_RETENTION_DAYS * 86_400_000));
        const r = await job.ctx.db.deleteFrom('mail_log').where('created_at', '<', before).executeTakeFirst();
        job.log.info({ deleted: Number(r.numDeletedRows) }, 'old mail log rows swept');
      },
    },
  ];
}

/** The Message-ID header the mailer gives a mail (integrations/mail): the same on every retry. */
const messageId = (mail: Mail) => `<${mail.id}@kessai>`;

async function logAttempt(e: { ctx: Context; jobId: string; attempt: number; template: string; mail: Mail; outcome: 'sent' | 'failed'; response: string }): Promise<void> {
  try {
    await insertRow(e.ctx.db, 'mail_log', {
      id: newId('mlg'),
      job_id: e.jobId,
      template: e.template,
      recipient: e.mail.to,
      subject: e.mail.subject,
      message_id: messageId(e.mail),
      outcome: e.outcome,
      response: e.response.slice(0, 1000),
      attempt: e.attempt,
      created_at: nowIso(),
    });
  } catch (err) {
    // The log is a record, not the delivery: a mail sent must not be sent again because its row failed.
    e.ctx.log.error({ err, job: e.jobId }, 'could not write the mail log');
  }
}

export interface MailLogQuery {
  to?: string;
  template?: string;
  outcome?: 'sent' | 'failed';
  /** Rows older than this entry's (created_at, id): the page after it. */
  before?: string;
  limit?: number;
}

/** Newest first; `next` is the cursor of the following page, if there is one. */
export async function listMailLog(db: Db, q: MailLogQuery): Promise<{ entries: MailLogEntry[]; next: string | null }> {
  const limit = q.limit ?? 50;
  let query = db.selectFrom('mail_log').selectAll();
  if (q.to) query = query.where('recipient', '=', q.to);
  if (q.template) query = query.where('template', '=', q.template);
  if (q.outcome) query = query.where('outcome', '=', q.outcome);
  if (q.before) {
    const cursor = await db.selectFrom('mail_log').select(['created_at', 'id']).where('id', '=', q.before).executeTakeFirst();
    if (!cursor) throw invalid([{ field: 'before', reason: 'no mail log entry has this id (use the `next` of the previous page)' }]);
    query = query.where((eb) => eb.or([eb('created_at', '<', cursor.created_at), eb.and([eb('created_at', '=', cursor.created_at), eb('id', '<', cursor.id)])]));
  }
  const rows = await query.orderBy('created_at', 'desc').orderBy('id', 'desc').limit(limit + 1).execute();
  const entries = rows.slice(0, limit);
  return { entries, next: rows.length > limit ? entries[entries.length - 1]!.id : null };
}
