import { simpleParser, type ParsedMail } from 'mailparser';
import { SMTPServer } from 'smtp-server';
import { freePort } from './net.js';

/**
 * A real SMTP server on loopback (smtp-server) that keeps what it receives, parsed as a mail client
 * would (mailparser). It can be stopped and started again on the same port (an outage), answer the
 * next messages with a temporary error, and refuse recipients for good.
 */
export class SmtpSink {
  readonly received: (ParsedMail & { raw: Buffer })[] = [];
  private server: SMTPServer | undefined;
  private tempFailures: { count: number; code: number; message: string } = { count: 0, code: 451, message: '' };
  private readonly refused = new Map<string, { code: number; message: string }>();

  private constructor(readonly port: number) {}

  /** A sink with its port chosen; `running: false` leaves it down until `start()`. */
  static async create(opts: { running?: boolean } = {}): Promise<SmtpSink> {
    const sink = new SmtpSink(await freePort());
    if (opts.running !== false) await sink.start();
    return sink;
  }

  get url(): string {
    return `smtp://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    if (this.server) return;
    const server = new SMTPServer({
      authOptional: true,
      disabledCommands: ['STARTTLS'],
      logger: false,
      onRcptTo: (address, _session, callback) => {
        const refusal = this.refused.get(address.address.toLowerCase());
        callback(refusal ? smtpError(refusal.code, refusal.message) : null);
      },
      onData: (stream, _session, callback) => {
        const chunks: Buffer[] = [];
        stream.on('data', (c: Buffer) => chunks.push(c));
        stream.on('end', () => {
          if (this.tempFailures.count > 0) {
            this.tempFailures.count -= 1;
            callback(smtpError(this.tempFailures.code, this.tempFailures.message));
            return;
          }
          const raw = Buffer.concat(chunks);
          simpleParser(raw).then(
            (mail) => {
              this.received.push(Object.assign(mail, { raw }));
              callback(null, 'Message queued as test');
            },
            (err: Error) => callback(err),
          );
        });
      },
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.server = server;
  }

  /** Down: new connections are refused until `start()`. */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** The next `count` messages are answered with `code` after their data (e.g. 451 4.3.0). */
  failNext(count: number, code = 451, message = '4.3.0 Temporary failure, try again later'): void {
    this.tempFailures = { count, code, message };
  }

  /** Mail to `address` is refused at RCPT TO with `code` (550: no such user). */
  refuse(address: string, code = 550, message = '5.1.1 No such user here'): void {
    this.refused.set(address.toLowerCase(), { code, message });
  }

  /** The mails to `to`, in arrival order. */
  to(to: string): (ParsedMail & { raw: Buffer })[] {
    return this.received.filter((m) => (Array.isArray(m.to) ? m.to : m.to ? [m.to] : []).some((a) => a.value.some((v) => v.address?.toLowerCase() === to.toLowerCase())));
  }
}

function smtpError(code: number, message: string): Error {
  return Object.assign(new Error(message), { responseCode: code });
}
