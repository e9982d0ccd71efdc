import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { resolve } from 'node:path';
import { parseEnv } from 'node:util';
import { z } from 'zod';

/** Settings of the described Laravel store that the default shop keeps reading (see commerce/shop-settings). */
export const LEGACY_SHOP_ENV_KEYS = [
  'SBPS_MERCHANT_ID',
  'SBPS_SERVICE_ID',
  'SBPS_HASH_KEY',
  'SBPS_GATEWAY_URL',
  'ATONE_PUBLIC_KEY',
  'ATONE_SECRET_KEY',
  'GOOGLE_MAPS_API_KEY',
  'KOMOJU_SECRET_KEY',
  'KOMOJU_WEBHOOK_SECRET',
] as const;

const onOff = z
  .enum(['on', 'off', 'true', 'false', '1', '0'], { error: 'must be on or off' })
  .transform((v) => v === 'on' || v === 'true' || v === '1');

const positiveInt = (name: string) =>
  z.coerce
    .number({ error: `${name} must be a whole number` })
    .int({ error: 'must be a whole number' })
    .positive({ error: 'must be greater than zero' });

const schema = z.object({
  PORT: positiveInt('PORT').max(65535, { error: 'must be at most 65535' }).default(3000),
  HOST: z.string().min(1).default('127.0.0.1'),
  DATABASE_URL: z.string().min(1, { error: 'must not be empty' }).optional(),
  KESSAI_DATA_DIR: z.string().min(1).default('./data'),
  KESSAI_ADMIN_TOKEN: z.string().min(24, { error: 'must be at least 24 characters' }).optional(),
  KESSAI_MASTER_KEY: z
    .string()
    .regex(/^(?:[0-9a-fA-F]{64}|[A-Za-z0-9+/]{43}=)$/, { error: 'must be 32 bytes as 64 hex digits or base64' })
    .optional(),
  KESSAI_PUBLIC_URL: z
    .url({ protocol: /^https?$/, error: 'must be an http(s) URL such as https://shop.example.jp' })
    .optional(),
  KESSAI_SANDBOX: onOff.default(true),
  KESSAI_WORKER: onOff.default(true),
  KESSAI_RESERVATION_TTL_SECONDS: positiveInt('KESSAI_RESERVATION_TTL_SECONDS').default(1800),
  KESSAI_JOB_MAX_ATTEMPTS: positiveInt('KESSAI_JOB_MAX_ATTEMPTS').default(10),
  KESSAI_JOB_TIMEOUT_SECONDS: positiveInt('KESSAI_JOB_TIMEOUT_SECONDS').default(60),
  KESSAI_SESSION_IDLE_MINUTES: positiveInt('KESSAI_SESSION_IDLE_MINUTES').default(1440),
  KESSAI_SESSION_MAX_DAYS: positiveInt('KESSAI_SESSION_MAX_DAYS').default(14),
  KESSAI_TRUST_PROXY: z
    .string()
    .transform((v) => v.split(',').map((p) => p.trim()).filter(Boolean))
    .pipe(
      z.array(
        z.string().regex(/^(loopback|linklocal|uniquelocal|off|[0-9a-fA-F.:]+(\/\d{1,3})?)$/, {
          error: 'must list the proxies to trust: loopback, linklocal, uniquelocal, addresses or CIDRs such as 10.0.0.0/8 (or off); "on" would let any client forge its address',
        }),
      ),
    )
    .default([]),
  KESSAI_SMTP_URL: z.url({ protocol: /^smtps?$/, error: 'must be an smtp:// or smtps:// URL' }).optional(),
  KESSAI_MAIL_FROM: z.string().min(3).default('kessai <no-reply@localhost>'),
  KESSAI_MAIL_MAX_ATTEMPTS: positiveInt('KESSAI_MAIL_MAX_ATTEMPTS').default(20),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});

export interface Config {
  port: number;
  host: string;
  databaseUrl: string;
  engine: 'sqlite' | 'postgres';
  dataDir: string;
  adminToken: string;
  masterKey: Buffer;
  publicUrl: string;
  sandbox: boolean;
  inProcessWorker: boolean;
  reservationTtlSeconds: number;
  jobMaxAttempts: number;
  jobTimeoutSeconds: number;
  /** A customer's session ends after this long without a request… */
  sessionIdleMinutes: number;
  /** …and this long after login, whatever the activity. */
  sessionMaxDays: number;
  /** Proxies whose X-Forwarded-For is believed (by address, never "everyone"); empty: none. */
  trustProxy: string[];
  /** SMTP server for outgoing mail; without one (sandbox only) mails are written to dataDir/mail. */
  smtpUrl: string | undefined;
  mailFrom: string;
  /** Tries of one mail before it is dead-lettered: more than other jobs, so mail outlives an SMTP outage of hours. */
  mailMaxAttempts: number;
  logLevel: z.infer<typeof schema>['LOG_LEVEL'];
  /** The described store's own keys, read for the default shop. */
  legacyShopEnv: Partial<Record<(typeof LEGACY_SHOP_ENV_KEYS)[number], string>>;
  /** Things a person should know at start (generated development secrets). */
  warnings: string[];
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

/** Reads `.env` into the environment without overriding what the environment already says. */
export function readDotEnv(env: NodeJS.ProcessEnv, file = '.env'): void {
  if (!existsSync(file)) return;
  for (const [key, value] of Object.entries(parseEnv(readFileSync(file, 'utf8')))) {
    if (env[key] === undefined) env[key] = value;
  }
}

/**
 * Validates the environment. Development conveniences (a generated master key and admin token kept
 * under the data directory) exist only while the sandbox is on; production (KESSAI_SANDBOX=off)
 * must set its own secrets.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const parsed = schema.safeParse(env);
  if (!parsed.success) {
    throw new ConfigError(
      parsed.error.issues.map((i) => `${i.path.join('.') || '(environment)'}: ${i.message}`),
    );
  }
  const e = parsed.data;
  const problems: string[] = [];
  const warnings: string[] = [];
  const dataDir = resolve(e.KESSAI_DATA_DIR);
  const databaseUrl = e.DATABASE_URL ?? resolve(dataDir, 'kessai.db');
  const engine = /^postgres(ql)?:\/\//.test(databaseUrl) ? 'postgres' : 'sqlite';
  if (/^[a-z]+:\/\//i.test(databaseUrl) && engine !== 'postgres' && !databaseUrl.startsWith('file:')) {
    problems.push('DATABASE_URL: must be a SQLite file path or a postgres:// URL');
  }

  const devSecret = (name: string, file: string, make: () => string): string | undefined => {
    if (!e.KESSAI_SANDBOX) {
      problems.push(`${name}: required when KESSAI_SANDBOX=off (production must set its own)`);
      return undefined;
    }
    const path = resolve(dataDir, file);
    if (!existsSync(path)) {
      mkdirSync(dataDir, { recursive: true });
      writeFileSync(path, make(), { mode: 0o600 });
    }
    warnings.push(`${name} not set: using a development value stored in ${path}; production must set its own`);
    return readFileSync(path, 'utf8').trim();
  };

  const masterKeyText =
    e.KESSAI_MASTER_KEY ?? devSecret('KESSAI_MASTER_KEY', 'master.key', () => randomBytes(32).toString('hex'));
  const adminToken =
    e.KESSAI_ADMIN_TOKEN ?? devSecret('KESSAI_ADMIN_TOKEN', 'admin.token', () => randomBytes(24).toString('base64url'));
  if (!e.KESSAI_SANDBOX && !e.KESSAI_SMTP_URL) {
    problems.push('KESSAI_SMTP_URL: required when KESSAI_SANDBOX=off (customers must receive their order mail)');
  }
  if (problems.length > 0) throw new ConfigError(problems);

  const legacyShopEnv: Config['legacyShopEnv'] = {};
  for (const key of LEGACY_SHOP_ENV_KEYS) {
    const value = env[key]?.trim();
    if (value) legacyShopEnv[key] = value;
  }

  return {
    port: e.PORT,
    host: e.HOST,
    databaseUrl,
    engine,
    dataDir,
    adminToken: adminToken!,
    masterKey: decodeMasterKey(masterKeyText!),
    publicUrl: (e.KESSAI_PUBLIC_URL ?? `http://localhost:${e.PORT}`).replace(/\/+$/, ''),
    sandbox: e.KESSAI_SANDBOX,
    inProcessWorker: e.KESSAI_WORKER,
    reservationTtlSeconds: e.KESSAI_RESERVATION_TTL_SECONDS,
    jobMaxAttempts: e.KESSAI_JOB_MAX_ATTEMPTS,
    jobTimeoutSeconds: e.KESSAI_JOB_TIMEOUT_SECONDS,
    sessionIdleMinutes: e.KESSAI_SESSION_IDLE_MINUTES,
    sessionMaxDays: e.KESSAI_SESSION_MAX_DAYS,
    trustProxy: e.KESSAI_TRUST_PROXY.filter((p) => p !== 'off'),
    smtpUrl: e.KESSAI_SMTP_URL,
    mailFrom: e.KESSAI_MAIL_FROM,
    mailMaxAttempts: e.KESSAI_MAIL_MAX_ATTEMPTS,
    logLevel: e.LOG_LEVEL,
    legacyShopEnv,
    warnings,
  };
}

function decodeMasterKey(text: string): Buffer {
  const key = /^[0-9a-fA-F]{64}$/.test(text) ? Buffer.from(text, 'hex') : Buffer.from(text, 'base64');
  if (key.length !== 32) throw new ConfigError(['KESSAI_MASTER_KEY: must decode to exactly 32 bytes']);
  return key;
}
