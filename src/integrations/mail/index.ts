import { mkdir, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import nodemailer, { type Transporter } from 'nodemailer';

/*
 * Outgoing mail. Every mail is sent by an outbox job, never inside a request, so a mail server
 * outage delays mail and never fails an order. Without an SMTP server (development), mails are
 * written as .eml files to a folder a person can open.
 */

/** An image the HTML part shows in place, as `<img src="cid:…">`. */
export interface InlineImage {
  cid: string;
  filename: string;
  contentType: string;
  content: Buffer;
}

export interface Mail {
  to: string;
  subject: string;
  text: string;
  /** An HTML alternative to the text, for what text cannot show (a ticket's QR code). */
  html?: string;
  /**
   * Images the HTML refers to. Attached with a Content-ID rather than as data: URIs, which many
   * mail clients (Gmail, Outlook) do not show.
   */
  images?: InlineImage[];
  /** Where a reply goes, when not to the sender (staff answering a customer's inquiry). */
  replyTo?: string;
  /** Message-ID seed: the same mail retried keeps the same id, so receivers can drop duplicates. */
  id: string;
}

/** What the receiving side said: the SMTP server's answer, or the file the development mailer wrote. */
export interface Sent {
  messageId: string;
  response: string;
}

export interface Mailer {
  send(mail: Mail): Promise<Sent>;
  close(): void;
}

/**
 * Waits short enough that a hung server fails the job well inside its run timeout, so the outbox
 * retries it instead of the run being cut off (nodemailer waits 2 minutes to connect by default).
 */
const SMTP_TIMEOUTS = { connectionTimeout: 10_000, greetingTimeout: 10_000, socketTimeout: 30_000 };

interface SmtpError {
  code?: string;
  command?: string;
  responseCode?: number;
  response?: string;
  message?: string;
}

/**
 * The server refused the recipient for good (5xx to RCPT TO: no such mailbox, domain unknown): the
 * same mail to the same address will be refused again, so retrying only delays telling a person.
 * A 4xx, an unreachable server or a 5xx to any other command (authentication, the message itself)
 * can be fixed by waiting or by the operator, and is retried.
 */
export function isRecipientRejected(error: unknown): boolean {
  const e = error as SmtpError | null;
  return e?.command === 'RCPT TO' && typeof e.responseCode === 'number' && e.responseCode >= 500 && e.responseCode < 600;
}

/** One line for the mail log: the server's own answer when there is one. */
export function describeMailError(error: unknown): string {
  const e = error as SmtpError | null;
  if (e?.response) return `${e.command ? `${e.command}: ` : ''}${e.response}`;
  if (e?.code) return `${e.code}: ${e.message ?? ''}`;
  return error instanceof Error ? error.message : String(error);
}

/** The bare address of a From line such as `kessai <no-reply@example.jp>`. */
export function mailAddress(from: string): string {
  return /<([^<>]+)>\s*$/.exec(from)?.[1]?.trim() ?? from.trim();
}

function message(from: string, mail: Mail) {
  return {
    from,
    to: mail.to,
    subject: mail.subject,
    text: mail.text,
    ...(mail.replyTo === undefined ? {} : { replyTo: mail.replyTo }),
    ...(mail.html === undefined ? {} : { html: mail.html }),
    ...(mail.images?.length ? { attachments: mail.images } : {}),
    messageId: `<${mail.id}@kessai>`,
  };
}

export function createMailer(opts: { smtpUrl?: string; from: string; folder: string }): Mailer {
  if (opts.smtpUrl) {
    const transport: Transporter = nodemailer.createTransport({ url: opts.smtpUrl, ...SMTP_TIMEOUTS });
    return {
      async send(mail) {
        const info = await transport.sendMail(message(opts.from, mail));
        return { messageId: info.messageId, response: String(info.response ?? '') };
      },
      close: () => transport.close(),
    };
  }
  const transport = nodemailer.createTransport({ streamTransport: true, buffer: true, newline: 'unix' });
  return {
    async send(mail) {
      const info = await transport.sendMail(message(opts.from, mail));
      await mkdir(opts.folder, { recursive: true });
      // Named by id: a retried job overwrites its own file instead of adding a second mail.
      const file = join(opts.folder, `${mail.id.replace(/[^\w.-]/g, '_')}.eml`);
      // Written aside, then renamed: whoever reads the folder sees a whole mail or none.
      await writeFile(`${file}.part`, info.message as Buffer);
      await rename(`${file}.part`, file);
      return { messageId: info.messageId, response: `written to ${file}` };
    },
    close: () => transport.close(),
  };
}
