import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * The mails the development mailer wrote to `<dataDir>/mail`, taken apart as a mail client would:
 * multipart bodies walked, base64 and quoted-printable decoded.
 */
export interface ReadMail {
  name: string;
  /** The top-level header block, as written. */
  head: string;
  text: string;
  html: string | undefined;
  images: { cid: string; contentType: string; content: Buffer }[];
}

function headers(block: string): Map<string, string> {
  const unfolded = block.replace(/\n[ \t]+/g, ' ');
  const map = new Map<string, string>();
  for (const line of unfolded.split('\n')) {
    const colon = line.indexOf(':');
    if (colon > 0) map.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
  }
  return map;
}

function decode(body: string, encoding: string | undefined): Buffer {
  switch (encoding?.toLowerCase()) {
    case 'base64':
      return Buffer.from(body.replace(/\s+/g, ''), 'base64');
    case 'quoted-printable':
      return Buffer.from(body.replace(/=\n/g, '').replace(/=([0-9A-F]{2})/gi, (_m, h: string) => String.fromCharCode(parseInt(h, 16))), 'latin1');
    default:
      return Buffer.from(body, 'utf8');
  }
}

function walk(raw: string, into: Omit<ReadMail, 'name' | 'head'>): void {
  const split = raw.indexOf('\n\n');
  const head = headers(split < 0 ? raw : raw.slice(0, split));
  const body = split < 0 ? '' : raw.slice(split + 2);
  const type = head.get('content-type') ?? 'text/plain';
  const boundary = /boundary="?([^";]+)"?/i.exec(type)?.[1];
  if (/^multipart\//i.test(type) && boundary) {
    const parts = body.split(`--${boundary}`);
    // parts[0] is the preamble; the part after the closing delimiter starts with "--".
    for (const part of parts.slice(1)) {
      if (part.startsWith('--')) break;
      walk(part.replace(/^\n/, '').replace(/\n$/, ''), into);
    }
    return;
  }
  const content = decode(body, head.get('content-transfer-encoding'));
  if (/^text\/plain/i.test(type)) into.text += content.toString('utf8');
  else if (/^text\/html/i.test(type)) into.html = (into.html ?? '') + content.toString('utf8');
  else into.images.push({ cid: (head.get('content-id') ?? '').replace(/^<|>$/g, ''), contentType: type.split(';')[0]!, content });
}

export function readMails(dataDir: string): ReadMail[] {
  const dir = join(dataDir, 'mail');
  let names: string[];
  try {
    names = readdirSync(dir).filter((n) => n.endsWith('.eml'));
  } catch {
    return [];
  }
  return names.map((name) => {
    const raw = readFileSync(join(dir, name), 'utf8').replace(/\r\n/g, '\n');
    const split = raw.indexOf('\n\n');
    const mail: ReadMail = { name, head: raw.slice(0, split), text: '', html: undefined, images: [] };
    walk(raw, mail);
    return mail;
  });
}
