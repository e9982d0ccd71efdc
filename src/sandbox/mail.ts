import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { FastifyPluginAsync } from 'fastify';
import { simpleParser, type AddressObject, type ParsedMail } from 'mailparser';
import { escapeHtml as esc } from '../html.js';

/*
 * The sandbox's mailbox, mounted at /sandbox/mail: every mail the development mailer wrote to the
 * mail folder (the store sends no real mail while the sandbox runs without KESSAI_SMTP_URL), newest
 * first, each readable as a mail client shows it. A mail's HTML is someone else's markup: it is
 * served on its own URL with a CSP that runs no script and gives it no origin (`sandbox`), inside a
 * sandboxed frame, never inline in this page.
 */

export interface MailSandboxOptions {
  /** Where the development mailer writes (<dataDir>/mail). */
  folder: string;
  /** Set when the store sends through an SMTP server instead: the folder then stays empty. */
  smtpUrl?: string;
}

/** Only file names the mailer writes: no separators, so a name never leaves the folder. */
const NAME = /^[\w.-]{1,200}\.eml$/;
/** The newest this many are listed; older files stay on disk. */
const LISTED = 200;
const HTML_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; sandbox; frame-ancestors 'self'";

const addresses = (a: AddressObject | AddressObject[] | undefined) => (a === undefined ? '' : (Array.isArray(a) ? a : [a]).map((x) => x.text).join(', '));
const jst = (d: Date) => d.toLocaleString('ja-JP', { timeZone: 'Asia/Tokyo' });

export function mailSandbox(opts: MailSandboxOptions): FastifyPluginAsync {
  const read = async (name: string): Promise<ParsedMail | null> => {
    if (!NAME.test(name)) return null;
    try {
      return await simpleParser(await readFile(join(opts.folder, name)));
    } catch {
      return null;
    }
  };

  return async (app) => {
    app.get('/', { schema: { hide: true } }, async (_request, reply) => {
      let names: string[] = [];
      try {
        names = (await readdir(opts.folder)).filter((n) => NAME.test(n));
      } catch {
        // No mail yet: the folder is made by the first mail.
      }
      const files = await Promise.all(names.map(async (name) => ({ name, mtime: (await stat(join(opts.folder, name))).mtimeMs })));
      files.sort((a, b) => b.mtime - a.mtime);
      const mails = await Promise.all(files.slice(0, LISTED).map(async (f) => ({ ...f, mail: await read(f.name) })));
      const rows = mails
        .map(({ name, mtime, mail }) => `<tr><td>${esc(jst(mail?.date ?? new Date(mtime)))}</td><td>${esc(addresses(mail?.to))}</td><td><a href="/sandbox/mail/${esc(encodeURIComponent(name))}">${esc(mail?.subject ?? name)}</a></td></tr>`)
        .join('\n');
      const where = opts.smtpUrl
        ? `<p class="warn">KESSAI_SMTP_URL が設定されているため、メールは SMTP サーバーに送信され、ここには表示されません。/ KESSAI_SMTP_URL is set: mail goes to that SMTP server and is not listed here.</p>`
        : `<p class="note">ストアが送信したメール（${esc(opts.folder)}）/ Mail the store sent, as written to ${esc(opts.folder)}.</p>`;
      const body =
        files.length === 0
          ? `${where}<p>まだメールはありません。/ No mail yet.</p>`
          : `${where}<table><thead><tr><th scope="col">日時 / Time</th><th scope="col">宛先 / To</th><th scope="col">件名 / Subject</th></tr></thead><tbody>\n${rows}\n</tbody></table>` +
            (files.length > LISTED ? `<p class="note">最新 ${LISTED} 件を表示 / The newest ${LISTED} of ${files.length}.</p>` : '');
      return reply.type('text/html; charset=utf-8').header('cache-control', 'no-store').send(page('メール / Mail', `<h1>メール / Mail</h1>${body}`));
    });

    app.get('/:name', { schema: { hide: true } }, async (request, reply) => {
      const { name } = request.params as { name: string };
      const mail = await read(name);
      if (!mail) return reply.status(404).type('text/html; charset=utf-8').send(page('Not found', '<h1>メールがありません / No such mail</h1><p><a href="/sandbox/mail">一覧 / All mail</a></p>'));
      const head: [string, string][] = [
        ['From', addresses(mail.from)],
        ['To', addresses(mail.to)],
        ['Reply-To', addresses(mail.replyTo)],
        ['Date', mail.date ? `${mail.date.toISOString()} (${jst(mail.date)})` : ''],
        ['Message-ID', mail.messageId ?? ''],
      ];
      const facts = head.filter(([, v]) => v).map(([k, v]) => `<dt>${k}</dt><dd>${esc(v)}</dd>`).join('');
      const parts = mail.attachments.map((a) => `<li>${esc(a.filename ?? a.cid ?? 'part')} (${esc(a.contentType)}, ${a.size} bytes)</li>`).join('');
      const body =
        `<p><a href="/sandbox/mail">← 一覧 / All mail</a></p><h1>${esc(mail.subject ?? '(no subject)')}</h1><dl>${facts}</dl>` +
        `<h2>本文（テキスト）/ Text part</h2><pre>${esc(mail.text ?? '')}</pre>` +
        (mail.html === false ? '' : `<h2>HTML</h2><iframe sandbox src="/sandbox/mail/${esc(encodeURIComponent(name))}/html" title="HTML part" style="width:100%;height:32rem;border:1px solid #ccc"></iframe>`) +
        (parts ? `<h2>添付 / Attachments</h2><ul>${parts}</ul>` : '');
      return reply.type('text/html; charset=utf-8').header('cache-control', 'no-store').send(page(mail.subject ?? 'Mail', body));
    });

    app.get('/:name/html', { schema: { hide: true } }, async (request, reply) => {
      const { name } = request.params as { name: string };
      const mail = await read(name);
      if (!mail || mail.html === false) return reply.status(404).send({ error: { code: 'not_found', message: 'no such mail or no HTML part', problems: [] } });
      // Inline images (cid:) arrive as data: URIs from the parser; nothing else may load or run.
      return reply.type('text/html; charset=utf-8').header('content-security-policy', HTML_CSP).header('cache-control', 'no-store').send(mail.html);
    });
  };
}

function page(title: string, body: string): string {
  return `<!doctype html>
<html lang="ja"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>${esc(title)}</title>
<style>body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}table{border-collapse:collapse;width:100%}td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left}pre{white-space:pre-wrap;background:#f6f6f6;padding:1rem}dt{font-weight:bold}.warn{color:#a00}.note{color:#555;font-size:.9em}</style>
</head>
<body>
<p class="note">Mail sandbox — テスト環境 / test environment: these mails were not delivered to anyone</p>
${body}
</body></html>
`;
}
