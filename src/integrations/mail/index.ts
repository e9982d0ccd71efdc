import { mkdir, writeFile } from 'node:fs/promises';
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
  /** Message-ID seed: the same mail retried keeps the same id, so receivers can drop duplicates. */
  id: string;
}

export interface Mailer {
  send(mail: Mail): Promise<void>;
  close(): void;
}

function message(from: string, mail: Mail) {
  return {
    from,
    to: mail.to,
    subject: mail.subject,
    text: mail.text,
    ...(mail.html === undefined ? {} : { html: mail.html }),
    ...(mail.images?.length ? { attachments: mail.images } : {}),
    messageId: `<${mail.id}@kessai>`,
  };
}

export function createMailer(opts: { smtpUrl?: string; from: string; folder: string }): Mailer {
  if (opts.smtpUrl) {
    const transport: Transporter = nodemailer.createTransport(opts.smtpUrl);
    return {
      async send(mail) {
        await transport.sendMail(message(opts.from, mail));
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
      await writeFile(join(opts.folder, `${mail.id.replace(/[^\w.-]/g, '_')}.eml`), info.message as Buffer);
    },
    close: () => transport.close(),
  };
}
