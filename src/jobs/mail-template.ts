import type { z } from 'zod';
import type { Context } from '../context.js';
import type { Mail } from '../integrations/mail/index.js';

/*
 * What a mail template is. Every mail is one `mail.send` outbox job whose payload names a template
 * and carries what the template needs (ids to read, or the facts themselves); the job looks the
 * template up in the one registry (jobs/mail.ts), renders and sends. Domains define their templates
 * next to their data (accounts/mail.ts, commerce/order-mail.ts, …) with `mailTemplates`.
 */

export interface MailTemplate {
  name: string;
  /** Checks the job's payload; a payload that fails it is never sent (the job is dead-lettered). */
  payload: z.ZodType;
  /**
   * The mail as it should read now (a retried mail shows the current state), or null when there is
   * nothing to send any more. The mail's id must depend on the job id only, so every retry of the
   * job keeps the same Message-ID.
   */
  render(ctx: Context, payload: unknown, jobId: string): Promise<Mail | null>;
}

/** The payload of one of `schemas`' templates, tagged with its name: `{ template: 'x', …fields }`. */
export type PayloadOf<S extends Record<string, z.ZodType>> = { [K in keyof S & string]: { template: K } & z.infer<S[K]> }[keyof S & string];

/** Templates sharing one render function (which switches on `template`), one payload schema each. */
export function mailTemplates<S extends Record<string, z.ZodType>>(
  schemas: S,
  render: (ctx: Context, payload: PayloadOf<S>, jobId: string) => Promise<Mail | null>,
): MailTemplate[] {
  return Object.entries(schemas).map(([name, schema]) => ({
    name,
    payload: schema,
    render: (ctx, payload, jobId) => render(ctx, { ...(payload as object), template: name } as PayloadOf<S>, jobId),
  }));
}

/** The closing line of every mail to a customer. */
export const MAIL_FOOTER = '\n--\nこのメールは送信専用です。/ This address does not receive replies.\n';

/** A moment as customers read it: Japan time, e.g. 2026/01/23 18:00. */
export function jstTime(d: Date | string): string {
  return new Date(d).toLocaleString('ja-JP', { timeZone: 'Asia/Tokyo', dateStyle: 'medium', timeStyle: 'short' });
}
