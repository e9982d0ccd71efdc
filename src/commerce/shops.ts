import { createHmac } from 'node:crypto';
import { z } from 'zod';
import type { Config, LEGACY_SHOP_ENV_KEYS } from '../config.js';
import type { Context } from '../context.js';
import type { Db, Tx } from '../db/index.js';
import { insertRow } from '../db/insert.js';
import type { Shop } from '../db/schema.js';
import { KessaiError, invalid, notFound, parseInput, type FieldProblem } from '../errors.js';
import { nowIso } from '../ids.js';
import { CHEKICHA_DEFAULT_API_URL } from '../integrations/chekicha/connect.js';
import { CHART_SETTINGS } from './chart-settings.js';
import { mailAddress } from '../integrations/mail/index.js';
import { mask, open, seal } from './secrets.js';

/*
 * Gateway settings live per shop in the database. One table says, for every key, how a value is
 * checked, whether it is a secret (sealed at rest, masked when shown) and which of the described
 * store's environment keys it was called there: the default shop falls back to those, so a merchant
 * moving over keeps their configuration.
 */

type LegacyKey = (typeof LEGACY_SHOP_ENV_KEYS)[number];

export interface SettingDef {
  key: string;
  description: string;
  secret: boolean;
  kind: 'string' | 'boolean';
  check: z.ZodType<string | boolean>;
  env?: LegacyKey;
  /** Value when nothing is set: may depend on the process configuration (sandbox URLs). */
  fallback?: (config: Config) => string | boolean | undefined;
}

const bool = z.boolean();
const text = (re: RegExp, reason: string) => z.string().regex(re, { error: reason });
const url = z.url({ protocol: /^https?$/, error: 'must be an http(s) URL' });
const yen = text(/^\d{1,9}$/, 'must be a whole number of yen, e.g. 3000');
/** The payment providers kessai ships, for the settings every provider has. */
export const PAYMENT_PROVIDERS = ['testpay', 'sbps', 'atone', 'komoju'] as const;
const secret = z.string().min(8, { error: 'must be at least 8 characters' }).max(512, { error: 'is too long' });

export const SHOP_SETTINGS: readonly SettingDef[] = [
  { key: 'testpay.enabled', description: 'Offer the sandbox test gateway (development only)', secret: false, kind: 'boolean', check: bool, fallback: (c) => c.sandbox },
  { key: 'testpay.secret', description: 'Signing secret shared with the sandbox test gateway', secret: true, kind: 'string', check: secret, fallback: (c) => sandboxSecret(c, 'testpay') },
  // Which payment providers a basket may use (payments/service.ts `unusableBecause`); unset: no limit.
  ...PAYMENT_PROVIDERS.flatMap((name): SettingDef[] => [
    { key: `${name}.minAmount`, description: `smallest order total (yen, tax included) ${name} is offered for`, secret: false, kind: 'string', check: yen, fallback: name === 'atone' ? () => '1' : undefined },
    { key: `${name}.maxAmount`, description: `largest order total (yen, tax included) ${name} is offered for`, secret: false, kind: 'string', check: yen },
  ]),
  { key: 'payments.ticketProviders', description: 'providers offered for an order with a ticket in it, comma-separated (e.g. komoju,sbps; unset: every enabled one)', secret: false, kind: 'string', check: text(/^[a-z]+(,[a-z]+)*$/, 'must be provider names separated by commas, e.g. komoju,sbps') },
  { key: 'sbps.enabled', description: 'Offer SBPS link-type payment', secret: false, kind: 'boolean', check: bool, fallback: () => false },
  { key: 'sbps.merchantId', description: 'SBPS merchant id (マーチャントID)', secret: false, kind: 'string', check: text(/^\d{1,10}$/, 'must be digits'), env: 'SBPS_MERCHANT_ID', fallback: sandboxOnly(() => SBPS_SANDBOX_MERCHANT.merchantId) },
  { key: 'sbps.serviceId', description: 'SBPS service id (サービスID)', secret: false, kind: 'string', check: text(/^\d{1,5}$/, 'must be digits'), env: 'SBPS_SERVICE_ID', fallback: sandboxOnly(() => SBPS_SANDBOX_MERCHANT.serviceId) },
  { key: 'sbps.hashKey', description: 'SBPS hash key (ハッシュキー)', secret: true, kind: 'string', check: secret, env: 'SBPS_HASH_KEY', fallback: sandboxOnly((c) => sandboxSecret(c, 'sbps')) },
  { key: 'sbps.gatewayUrl', description: 'SBPS purchase-request URL (test: https://stbfep.sps-system.com/f01/FepBuyInfoReceive.do, production: https://fep.sps-system.com/f01/FepBuyInfoReceive.do)', secret: false, kind: 'string', check: url, env: 'SBPS_GATEWAY_URL', fallback: sandboxOnly((c) => `${c.publicUrl}/sandbox/sbps/f01/FepBuyInfoReceive.do`) },
  { key: 'sbps.apiUrl', description: 'SBPS XML API URL (test: https://stbfep.sps-system.com/api/xmlapi.do, production: https://api.sps-system.com/api/xmlapi.do)', secret: false, kind: 'string', check: url, fallback: sandboxOnly((c) => `${c.publicUrl}/sandbox/sbps/api/xmlapi.do`) },
  { key: 'sbps.apiUser', description: 'SBPS XML API Basic-auth user', secret: false, kind: 'string', check: text(/^[\x21-\x7e]{1,64}$/, 'must be 1–64 printable ASCII characters'), fallback: sandboxOnly(() => `${SBPS_SANDBOX_MERCHANT.merchantId}${SBPS_SANDBOX_MERCHANT.serviceId}`) },
  { key: 'sbps.apiPassword', description: 'SBPS XML API Basic-auth password', secret: true, kind: 'string', check: secret, fallback: sandboxOnly((c) => sandboxSecret(c, 'sbps-api')) },
  { key: 'sbps.payMethods', description: 'pay_method codes offered, comma-separated (empty: the customer chooses on the SBPS screen)', secret: false, kind: 'string', check: text(/^[a-z0-9]+(,[a-z0-9]+)*$/, 'must be pay_method codes separated by commas, e.g. credit3d2,webcvs') },
  { key: 'sbps.captureMode', description: 'auto (自動売上: an OK credit result is a sale) or manual (指定売上: commit later)', secret: false, kind: 'string', check: z.enum(['auto', 'manual'], { error: 'must be auto or manual' }), fallback: () => 'auto' },
  { key: 'sbps.limitSecond', description: 'limit_second: seconds the customer has on the SBPS screen', secret: false, kind: 'string', check: text(/^\d{2,4}$/, 'must be 10–9999 seconds'), fallback: () => '600' },
  { key: 'sbps.allowedIps', description: 'accept result notifications only from these addresses, comma-separated (SBPS test 61.215.213.47, production 61.215.213.20; empty: any)', secret: false, kind: 'string', check: text(/^[0-9a-fA-F.:]+(,[0-9a-fA-F.:]+)*$/, 'must be IP addresses separated by commas') },
  { key: 'atone.enabled', description: 'Offer atone (NP後払い)', secret: false, kind: 'boolean', check: bool, fallback: () => false },
  { key: 'atone.publicKey', description: 'atone public key (店舗公開鍵)', secret: false, kind: 'string', check: text(/^[\w-]{8,256}$/, 'must be 8–256 letters, digits, _ or -'), env: 'ATONE_PUBLIC_KEY', fallback: sandboxOnly((c) => atoneSandboxKeys(c).publicKey) },
  { key: 'atone.secretKey', description: 'atone secret key (店舗秘密鍵)', secret: true, kind: 'string', check: secret, env: 'ATONE_SECRET_KEY', fallback: sandboxOnly((c) => atoneSandboxKeys(c).secretKey) },
  { key: 'atone.apiUrl', description: 'atone API base URL (test https://ct-api.a-to-ne.jp/v1, production https://api.atone.be/v1)', secret: false, kind: 'string', check: url, fallback: (c) => (c.sandbox ? `${c.publicUrl}/sandbox/atone/v1` : 'https://api.atone.be/v1') },
  { key: 'atone.scriptUrl', description: "atone's atone.js (test https://ct-auth.a-to-ne.jp/v1/atone.js, production https://auth.atone.be/v1/atone.js)", secret: false, kind: 'string', check: url, fallback: (c) => (c.sandbox ? `${c.publicUrl}/sandbox/atone/atone.js` : 'https://auth.atone.be/v1/atone.js') },
  { key: 'atone.settleMode', description: '売上確定: immediate (with the authorization) or shipment (when the order ships)', secret: false, kind: 'string', check: z.enum(['immediate', 'shipment'], { error: 'must be immediate or shipment' }), fallback: () => 'shipment' },
  { key: 'atone.webhookChecksum', description: 'check Np-Confirmation-Checksum on atone webhooks: off, sorted-values, raw-body or hmac-raw-body (every webhook is read back from atone in any case)', secret: false, kind: 'string', check: z.enum(['off', 'sorted-values', 'raw-body', 'hmac-raw-body'], { error: 'must be off, sorted-values, raw-body or hmac-raw-body' }), fallback: () => 'off' },
  { key: 'atone.recurring', description: 'take recurring purchases (定期購入) with atone: the first order asks atone for the member\'s consent (transaction option 1), renewals are registered with the member\'s token', secret: false, kind: 'boolean', check: bool, fallback: () => false },
  { key: 'komoju.enabled', description: 'Offer KOMOJU', secret: false, kind: 'boolean', check: bool, fallback: () => false },
  { key: 'komoju.secretKey', description: 'KOMOJU secret API key (sk_live_… or sk_test_…)', secret: true, kind: 'string', check: secret, env: 'KOMOJU_SECRET_KEY', fallback: sandboxOnly((c) => komojuSandboxKeys(c).secretKey) },
  { key: 'komoju.webhookSecret', description: 'KOMOJU webhook secret token (signs X-Komoju-Signature)', secret: true, kind: 'string', check: secret, env: 'KOMOJU_WEBHOOK_SECRET', fallback: sandboxOnly((c) => komojuSandboxKeys(c).webhookSecret) },
  { key: 'komoju.webhookSecretPrevious', description: 'the previous KOMOJU webhook secret, also accepted while a new one is rolled out (clear it afterwards)', secret: true, kind: 'string', check: secret },
  { key: 'komoju.apiUrl', description: 'KOMOJU API base URL', secret: false, kind: 'string', check: url, fallback: (c) => (c.sandbox ? `${c.publicUrl}/sandbox/komoju/api/v1` : 'https://komoju.com/api/v1') },
  { key: 'komoju.paymentTypes', description: 'KOMOJU payment types offered, comma-separated (e.g. credit_card,konbini,pay_easy)', secret: false, kind: 'string', check: text(/^[a-z_]+(,[a-z_]+)*$/, 'must be KOMOJU payment types separated by commas, e.g. credit_card,konbini'), fallback: () => 'credit_card,konbini' },
  { key: 'komoju.captureMode', description: 'auto (a card payment is captured at once) or manual (authorized; capture later, cards only)', secret: false, kind: 'string', check: z.enum(['auto', 'manual'], { error: 'must be auto or manual' }), fallback: () => 'auto' },
  { key: 'postcode.provider', description: 'where postcodes are looked up: japanpost (Japan Post data shipped with kessai, no network) or google (Geocoding API, Japan Post data when it fails)', secret: false, kind: 'string', check: z.enum(['japanpost', 'google'], { error: 'must be japanpost or google' }), fallback: () => 'japanpost' },
  { key: 'mail.staffAddress', description: 'who receives the inquiry form\'s messages (default: the address of KESSAI_MAIL_FROM)', secret: false, kind: 'string', check: z.email({ error: 'must be an e-mail address' }), fallback: (c) => mailAddress(c.mailFrom) },
  { key: 'google.mapsApiKey', description: 'Google Geocoding API key (for postcode.provider=google)', secret: true, kind: 'string', check: secret, env: 'GOOGLE_MAPS_API_KEY', fallback: sandboxOnly((c) => sandboxSecret(c, 'geocoder')) },
  { key: 'google.geocodingUrl', description: 'Google Geocoding API URL', secret: false, kind: 'string', check: url, fallback: (c) => (c.sandbox ? `${c.publicUrl}/sandbox/geocoder/maps/api/geocode/json` : 'https://maps.googleapis.com/maps/api/geocode/json') },
  { key: 'chekicha.enabled', description: "Link members' Chekicha accounts after a serial-code purchase, and offer the link on the my page", secret: false, kind: 'boolean', check: bool, fallback: () => false },
  { key: 'chekicha.apiUrl', description: 'Chekicha API base URL (production https://api.ckc.utaten.com, test https://develop.api.ckc.utaten.com)', secret: false, kind: 'string', check: url, fallback: (c) => (c.sandbox ? `${c.publicUrl}/sandbox/chekicha` : CHEKICHA_DEFAULT_API_URL) },
  { key: 'chekicha.apiKey', description: 'Chekicha API key (sent as Authorization: Bearer)', secret: true, kind: 'string', check: secret, fallback: sandboxOnly((c) => sandboxSecret(c, 'chekicha')) },
  { key: 'chekicha.partnerId', description: "the shop's partner id at Chekicha (partner_id)", secret: false, kind: 'string', check: text(/^[\w.-]{1,64}$/, 'must be 1–64 letters, digits, _, . or -'), fallback: sandboxOnly(() => CHEKICHA_SANDBOX_PARTNER) },
  ...CHART_SETTINGS,
];

/** The one merchant the sandbox's SBPS knows; its keys are derived like every sandbox secret. */
export const SBPS_SANDBOX_MERCHANT = { merchantId: '30132', serviceId: '001' } as const;

/** The one partner the sandbox's Chekicha knows; its API key is derived like every sandbox secret. */
export const CHEKICHA_SANDBOX_PARTNER = 'kessai-sandbox';

/** A fallback that applies only while the sandbox is on: production never gets a made-up credential. */
function sandboxOnly(value: (c: Config) => string): (c: Config) => string | undefined {
  return (c) => (c.sandbox ? value(c) : undefined);
}

/** The sandbox atone shop's keys, derived like every sandbox secret. */
export function atoneSandboxKeys(config: Config): { publicKey: string; secretKey: string } {
  return { publicKey: `pk_sandbox_${sandboxSecret(config, 'atone-public').slice(0, 24)}`, secretKey: sandboxSecret(config, 'atone') };
}

/** The sandbox KOMOJU account's keys, derived like every sandbox secret (KOMOJU's test keys start sk_test_). */
export function komojuSandboxKeys(config: Config): { secretKey: string; webhookSecret: string } {
  return { secretKey: `sk_test_${sandboxSecret(config, 'komoju').slice(0, 32)}`, webhookSecret: sandboxSecret(config, 'komoju-webhook') };
}

/** A development secret shared by the store and its in-process sandbox, derived so both sides agree. */
export function sandboxSecret(config: Config, party: string): string {
  return createHmac('sha256', config.masterKey).update(`sandbox:${party}`).digest('hex');
}

const DEFS = new Map(SHOP_SETTINGS.map((d) => [d.key, d]));

export type ShopSettings = Record<string, string | boolean>;

const shopIdSchema = z
  .string()
  .regex(/^[a-z0-9][a-z0-9-]{0,39}$/, { error: 'must be 1–40 lower-case letters, digits or -, starting with a letter or digit' });

export const DEFAULT_SHOP_ID = 'default';

export async function createShop(ctx: Context, input: { id: string; name: string }): Promise<void> {
  const { id, name } = parseInput(
    z.object({ id: shopIdSchema, name: z.string().trim().min(1, { error: 'must not be empty' }).max(100) }),
    input,
  );
  const existing = await ctx.db.selectFrom('shops').select('id').where('id', '=', id).executeTakeFirst();
  if (existing) throw new KessaiError('shop_exists', `shop "${id}" already exists`, 409);
  const now = nowIso();
  await insertRow(ctx.db, 'shops', { id, name, settings: '{}', secrets: null, created_at: now, updated_at: now });
}

export async function shopExists(ctx: Context, id: string): Promise<boolean> {
  return (await ctx.db.selectFrom('shops').select('id').where('id', '=', id).executeTakeFirst()) !== undefined;
}

export async function listShops(ctx: Context): Promise<{ id: string; name: string }[]> {
  return ctx.db.selectFrom('shops').select(['id', 'name']).orderBy('id').execute();
}

async function loadStored(ctx: Context, id: string): Promise<{ name: string; plain: ShopSettings; secrets: ShopSettings }> {
  const row = await ctx.db.selectFrom('shops').selectAll().where('id', '=', id).executeTakeFirst();
  if (!row) throw notFound('shop', id);
  return storedOf(ctx, row);
}

function storedOf(ctx: Context, row: Shop): { name: string; plain: ShopSettings; secrets: ShopSettings } {
  const plain = JSON.parse(row.settings) as ShopSettings;
  const secrets = row.secrets ? (JSON.parse(open(ctx.config.masterKey, row.secrets, `shop:${row.id}`)) as ShopSettings) : {};
  return { name: row.name, plain, secrets };
}

/** Turns CLI / form text into typed values and checks each; every bad key is named. */
export function parseSettingValues(raw: Record<string, string>): ShopSettings {
  const problems: FieldProblem[] = [];
  const out: ShopSettings = {};
  for (const [key, text] of Object.entries(raw)) {
    const def = DEFS.get(key);
    if (!def) {
      problems.push({ field: key, reason: `unknown setting (known: ${SHOP_SETTINGS.map((d) => d.key).join(', ')})` });
      continue;
    }
    if (text === '') {
      out[key] = '';
      continue;
    }
    let value: string | boolean = text;
    if (def.kind === 'boolean') {
      if (['true', 'on', '1', 'yes'].includes(text)) value = true;
      else if (['false', 'off', '0', 'no'].includes(text)) value = false;
      else {
        problems.push({ field: key, reason: 'must be true or false' });
        continue;
      }
    }
    const checked = def.check.safeParse(value);
    if (!checked.success) problems.push({ field: key, reason: checked.error.issues[0]?.message ?? 'is invalid' });
    else out[key] = checked.data;
  }
  if (problems.length > 0) throw invalid(problems);
  return out;
}

/** Sets (or, with an empty string, clears) settings of one shop, all or nothing. */
export async function setShopSettings(ctx: Context, id: string, raw: Record<string, string>): Promise<void> {
  const values = parseSettingValues(raw);
  forgetSettings(ctx.db);
  await ctx.db.transaction().execute(async (tx) => {
    const stored = await loadStored({ ...ctx, db: tx }, id);
    for (const [key, value] of Object.entries(values)) {
      const target = DEFS.get(key)!.secret ? stored.secrets : stored.plain;
      if (value === '') delete target[key];
      else target[key] = value;
    }
    const secrets =
      Object.keys(stored.secrets).length > 0
        ? seal(ctx.config.masterKey, JSON.stringify(stored.secrets), `shop:${id}`)
        : null;
    await tx
      .updateTable('shops')
      .set({ settings: JSON.stringify(stored.plain), secrets, updated_at: nowIso() })
      .where('id', '=', id)
      .execute();
  });
  // Again after the commit: a read that started before it must not cache what it replaced.
  forgetSettings(ctx.db);
}

export interface SettingView {
  key: string;
  value: string | boolean | null;
  source: 'shop' | 'environment' | 'default' | 'unset';
  description: string;
}

function resolveSettings(ctx: Context, id: string, stored: { plain: ShopSettings; secrets: ShopSettings }): SettingView[] {
  return SHOP_SETTINGS.map((def) => {
    const own = (def.secret ? stored.secrets : stored.plain)[def.key];
    const fromEnv = id === DEFAULT_SHOP_ID && def.env ? ctx.config.legacyShopEnv[def.env] : undefined;
    const fallback = def.fallback?.(ctx.config);
    if (own !== undefined) return { key: def.key, value: own, source: 'shop', description: def.description };
    if (fromEnv !== undefined) return { key: def.key, value: fromEnv, source: 'environment', description: def.description };
    if (fallback !== undefined) return { key: def.key, value: fallback, source: 'default', description: def.description };
    return { key: def.key, value: null, source: 'unset', description: def.description };
  });
}

/**
 * How long a process keeps a shop's effective settings. They are read on every notification and
 * checkout, and resolving them costs a read, a decryption and the sandbox fallbacks' HMACs. A change
 * made in this process is seen at once; one made by another process (`kessai shop set`, a second
 * `kessai serve`) within this bound (docs/decisions.md).
 */
export const SETTINGS_CACHE_MS = 5_000;

interface SettingsCache {
  /** Bumped by every change: entries, and reads begun, under an older generation are not used. */
  generation: number;
  /** Per configuration too: the effective values depend on the master key and the environment. */
  byConfig: WeakMap<Config, Map<string, { settings: ShopSettings; generation: number; until: number }>>;
}
/** Per database handle, so two stores in one process (tests) never share settings. */
const settingsCaches = new WeakMap<object, SettingsCache>();

function cacheOf(db: object): SettingsCache {
  let cache = settingsCaches.get(db);
  if (!cache) settingsCaches.set(db, (cache = { generation: 0, byConfig: new WeakMap() }));
  return cache;
}

function forgetSettings(db: object): void {
  cacheOf(db).generation += 1;
}

/** The effective settings of a shop, or undefined when there is no such shop: one read at most. */
export async function findShopSettings(ctx: Context, id: string): Promise<ShopSettings | undefined> {
  const cache = cacheOf(ctx.db);
  let shops = cache.byConfig.get(ctx.config);
  if (!shops) cache.byConfig.set(ctx.config, (shops = new Map()));
  const now = Date.now();
  const hit = shops.get(id);
  if (hit && hit.generation === cache.generation && hit.until > now) return hit.settings;
  const generation = cache.generation;
  const row = await ctx.db.selectFrom('shops').selectAll().where('id', '=', id).executeTakeFirst();
  if (!row) return undefined;
  const out: ShopSettings = {};
  for (const view of resolveSettings(ctx, id, storedOf(ctx, row))) if (view.value !== null) out[view.key] = view.value;
  // Frozen: every caller shares this object while it is cached.
  Object.freeze(out);
  if (cache.generation === generation) shops.set(id, { settings: out, generation, until: now + SETTINGS_CACHE_MS });
  return out;
}

/** The effective settings a gateway adapter uses, secrets in clear. Never render this to a person. */
export async function getShopSettings(ctx: Context, id: string): Promise<ShopSettings> {
  const settings = await findShopSettings(ctx, id);
  if (!settings) throw notFound('shop', id);
  return settings;
}

/** The settings as a person may see them: secrets masked, with where each value comes from. */
export async function describeShop(ctx: Context, id: string): Promise<{ id: string; name: string; settings: SettingView[] }> {
  const stored = await loadStored(ctx, id);
  const settings = resolveSettings(ctx, id, stored).map((view) =>
    DEFS.get(view.key)!.secret && typeof view.value === 'string' ? { ...view, value: mask(view.value) } : view,
  );
  return { id, name: stored.name, settings };
}

/**
 * Whether the shop itself switched on a flag that is off by default, read through the caller's
 * transaction: a payment's transaction decides on its side effects without a second connection
 * (SQLite has one, which that transaction holds). Only the shop's own value counts, so this is for
 * flags whose fallback is false whatever the configuration (`chekicha.enabled`).
 */
export async function shopSwitchedOn(db: Db | Tx, shopId: string, key: string): Promise<boolean> {
  const def = DEFS.get(key);
  if (def?.kind !== 'boolean' || def.secret || def.env) throw new Error(`${key} is not a plain boolean shop setting`);
  const row = await db.selectFrom('shops').select('settings').where('id', '=', shopId).executeTakeFirst();
  return row !== undefined && (JSON.parse(row.settings) as ShopSettings)[key] === true;
}
