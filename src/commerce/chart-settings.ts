import { z } from 'zod';
import { DEFAULT_BILLBOARD_LAYOUT, DEFAULT_CHAIN_CODE, DEFAULT_STORE_CODE, layoutToText, parseBillboardLayout } from '../integrations/charts/billboard.js';
import { DEFAULT_ORICON_COLUMNS, parseOriconColumns } from '../integrations/charts/oricon.js';
import type { SettingDef } from './shops.js';

/*
 * Per-shop settings of the two chart targets, part of SHOP_SETTINGS (commerce/shops.ts): the chain
 * and store codes are the shop's own, and so are the agency accounts. Credentials are secrets
 * (sealed at rest, masked when shown). Layouts are checked when set, so a typo is refused at
 * `kessai shop set` rather than at 22:00.
 */

const bool = z.boolean();
const text = (re: RegExp, reason: string) => z.string().regex(re, { error: reason });
const host = text(/^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$|^[0-9a-fA-F:.]+$/, 'must be a host name or IP address');
const port = text(/^\d{1,5}$/, 'must be a port number').refine((p) => Number(p) >= 1 && Number(p) <= 65535, { error: 'must be 1–65535' });
const user = text(/^[\x21-\x7e]{1,64}$/, 'must be 1–64 printable ASCII characters');
const dir = text(/^[\w./-]{1,200}$/, 'must be a path of letters, digits, _, -, . and /').refine((d) => !d.split('/').includes('..'), { error: 'must not contain ..' });
const fileName = text(/^[\w{}-][\w.{}-]{0,199}$/, 'must be letters, digits, _, -, . and {date} / {store} / {chain}, not starting with a dot');
const digits = (max: number) => text(new RegExp(`^\\d{1,${max}}$`), `must be 1–${max} digits`);
const pem = (label: string) =>
  z
    .string()
    .max(16_384, { error: 'is too long' })
    .regex(new RegExp(`-----BEGIN [A-Z0-9 ]*${label}-----`), { error: `must be PEM text (-----BEGIN … ${label}-----)` });
const parsedBy = (parse: (t: string) => unknown) =>
  z.string().superRefine((value, ctx) => {
    try {
      parse(value);
    } catch (error) {
      ctx.addIssue({ code: 'custom', message: (error as Error).message.replace(/^[\w.]+: /, '') });
    }
  });

export const CHART_SETTINGS: readonly SettingDef[] = [
  { key: 'oricon.enabled', description: 'Send the daily Oricon report (22:00 JST, SFTP)', secret: false, kind: 'boolean', check: bool, fallback: () => false },
  { key: 'oricon.host', description: 'Oricon SFTP host', secret: false, kind: 'string', check: host },
  { key: 'oricon.port', description: 'Oricon SFTP port', secret: false, kind: 'string', check: port, fallback: () => '22' },
  { key: 'oricon.user', description: 'Oricon SFTP user', secret: false, kind: 'string', check: user },
  { key: 'oricon.privateKey', description: 'SSH private key for Oricon (OpenSSH or PEM text)', secret: true, kind: 'string', check: pem('PRIVATE KEY') },
  { key: 'oricon.passphrase', description: 'passphrase of oricon.privateKey, if it has one', secret: true, kind: 'string', check: z.string().min(1).max(1024) },
  { key: 'oricon.hostKeyFingerprint', description: 'the Oricon server\'s SSH host key, SHA256:… as `ssh-keygen -lf` prints it; any other key is refused', secret: false, kind: 'string', check: text(/^SHA256:[A-Za-z0-9+/]{43}$/, 'must be SHA256: and 43 base64 characters, as `ssh-keygen -lf` prints it') },
  { key: 'oricon.remoteDir', description: 'directory on the Oricon server', secret: false, kind: 'string', check: dir, fallback: () => '.' },
  { key: 'oricon.fileName', description: 'file name; {date} is the reporting date as YYYYMMDD', secret: false, kind: 'string', check: fileName, fallback: () => 'oricon_{date}.tsv' },
  { key: 'oricon.encoding', description: 'utf8 or sjis (Shift_JIS, CP932; a title it cannot hold stops the run)', secret: false, kind: 'string', check: z.enum(['utf8', 'sjis'], { error: 'must be utf8 or sjis' }), fallback: () => 'utf8' },
  { key: 'oricon.columns', description: 'TSV columns in order, from date, jan, title, quantity, store', secret: false, kind: 'string', check: parsedBy(parseOriconColumns), fallback: () => DEFAULT_ORICON_COLUMNS.join(',') },
  { key: 'oricon.storeCode', description: 'store code for the "store" column, if Oricon asks for one', secret: false, kind: 'string', check: digits(13) },
  { key: 'billboard.enabled', description: 'Send the daily Billboard Japan report (22:00 JST, FTPS)', secret: false, kind: 'boolean', check: bool, fallback: () => false },
  { key: 'billboard.host', description: 'Billboard Japan FTP host', secret: false, kind: 'string', check: host },
  { key: 'billboard.port', description: 'Billboard Japan FTP port (explicit TLS on the same port)', secret: false, kind: 'string', check: port, fallback: () => '21' },
  { key: 'billboard.user', description: 'Billboard Japan FTP user', secret: false, kind: 'string', check: user },
  { key: 'billboard.password', description: 'Billboard Japan FTP password', secret: true, kind: 'string', check: z.string().min(1).max(512) },
  { key: 'billboard.remoteDir', description: 'directory on the Billboard Japan server', secret: false, kind: 'string', check: dir, fallback: () => '.' },
  { key: 'billboard.fileName', description: 'file name; {date} (YYYYMMDD), {store} and {chain} are replaced', secret: false, kind: 'string', check: fileName, fallback: () => '{store}_{date}.txt' },
  { key: 'billboard.chainCode', description: 'chain code in every record', secret: false, kind: 'string', check: digits(10), fallback: () => DEFAULT_CHAIN_CODE },
  { key: 'billboard.storeCode', description: 'store code in every record', secret: false, kind: 'string', check: digits(10), fallback: () => DEFAULT_STORE_CODE },
  { key: 'billboard.layout', description: 'record layout, name:width[:zero|space] in order (fields chain, store, date, jan, quantity, filler)', secret: false, kind: 'string', check: parsedBy(parseBillboardLayout), fallback: () => layoutToText(DEFAULT_BILLBOARD_LAYOUT) },
  { key: 'billboard.allowInsecure', description: 'plain FTP without TLS (password and sales in clear); only if the agency cannot do FTPS — warned on every run', secret: false, kind: 'boolean', check: bool, fallback: () => false },
  { key: 'billboard.caCert', description: 'PEM certificate(s) to trust for the FTPS server instead of the system roots', secret: false, kind: 'string', check: pem('CERTIFICATE') },
  { key: 'charts.alertEmail', description: 'who is mailed when a chart report finally fails', secret: false, kind: 'string', check: z.email({ error: 'must be an e-mail address' }) },
];
