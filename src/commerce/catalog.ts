import { z } from 'zod';
import type { Context } from '../context.js';
import { insertRow } from '../db/insert.js';
import { KessaiError, notFound, parseInput } from '../errors.js';
import { newId, nowIso } from '../ids.js';
import { serialSpecInput, writeSerialSpec } from './serial-codes.js';

export const PRODUCT_KINDS = ['physical', 'serial_code', 'ticket'] as const;
export type ProductKind = (typeof PRODUCT_KINDS)[number];

/** JAN (GTIN-13 or GTIN-8): the chart agencies key sales by it, so a wrong check digit is refused. */
export function isValidJan(code: string): boolean {
  if (!/^(\d{8}|\d{13})$/.test(code)) return false;
  const digits = [...code].map(Number);
  const check = digits.pop()!;
  const sum = digits.reverse().reduce((acc, d, i) => acc + d * (i % 2 === 0 ? 3 : 1), 0);
  return (10 - (sum % 10)) % 10 === check;
}

const codeSchema = z
  .string()
  .regex(/^[a-z0-9][a-z0-9-]{0,63}$/, { error: 'must be 1–64 lower-case letters, digits or -' });

export const productInput = z.strictObject({
  code: codeSchema,
  name: z.string().trim().min(1, { error: 'must not be empty' }).max(200),
  kind: z.enum(PRODUCT_KINDS, { error: `must be one of ${PRODUCT_KINDS.join(', ')}` }),
  description: z.string().max(10_000).default(''),
  janCode: z
    .string()
    .refine(isValidJan, { error: 'must be a JAN code (8 or 13 digits with a valid check digit)' })
    .nullable()
    .default(null),
  chartEligible: z.boolean().default(false),
  taxRate: z.union([z.literal(10), z.literal(8)], { error: 'must be 10 or 8 (per cent)' }).default(10),
  price: z.number().int({ error: 'must be whole yen' }).min(0).max(10_000_000, { error: 'must be at most 10,000,000 yen' }),
  stock: z.number().int({ error: 'must be a whole number' }).min(0).max(10_000_000),
  /** serial_code products: what Chekicha's rows must name; with it, codes come from kessai's pool (serial-codes.ts). */
  serial: serialSpecInput.optional(),
  /** Sold as a subscription: a member's paid order is renewed every this many months (atone only). */
  recurringIntervalMonths: z
    .number({ error: 'must be a number of months' })
    .int({ error: 'must be whole months' })
    .min(1, { error: 'must be at least 1 month' })
    .max(12, { error: 'must be at most 12 months' })
    .nullable()
    .default(null),
});
export type ProductInput = z.input<typeof productInput>;

/** Creates a product with its one SKU (same code); prices are yen, tax included. */
export async function createProduct(ctx: Context, shopId: string, input: ProductInput): Promise<{ productId: string; skuId: string }> {
  const p = parseInput(productInput, input);
  if (p.chartEligible && !p.janCode) {
    throw new KessaiError('invalid_input', 'invalid input: janCode: a chart-eligible product needs a JAN code', 400, [
      { field: 'janCode', reason: 'a chart-eligible product needs a JAN code' },
    ]);
  }
  if (p.recurringIntervalMonths !== null && p.kind === 'ticket') {
    throw new KessaiError('invalid_input', 'invalid input: recurringIntervalMonths: a ticket admits to one event and is not renewed', 400, [{ field: 'recurringIntervalMonths', reason: 'a ticket admits to one event and is not renewed' }]);
  }
  if (p.serial && p.kind !== 'serial_code') {
    throw new KessaiError('invalid_input', 'invalid input: serial: only a serial_code product has a serial-code spec', 400, [{ field: 'serial', reason: 'only a serial_code product has a serial-code spec' }]);
  }
  const shop = await ctx.db.selectFrom('shops').select('id').where('id', '=', shopId).executeTakeFirst();
  if (!shop) throw notFound('shop', shopId);
  const productId = newId('prd');
  const skuId = newId('sku');
  const now = nowIso();
  await ctx.db.transaction().execute(async (tx) => {
    const taken = await tx
      .selectFrom('products')
      .select('id')
      .where('shop_id', '=', shopId)
      .where('code', '=', p.code)
      .executeTakeFirst();
    if (taken) throw new KessaiError('product_exists', `product "${p.code}" already exists in shop "${shopId}"`, 409);
    await insertRow(tx, 'products', {
      id: productId,
      shop_id: shopId,
      code: p.code,
      name: p.name,
      kind: p.kind,
      description: p.description,
      jan_code: p.janCode,
      chart_eligible: p.chartEligible ? 1 : 0,
      tax_rate: p.taxRate,
      active: 1,
      created_at: now,
      recurring_interval_months: p.recurringIntervalMonths,
    });
    await insertRow(tx, 'skus', { id: skuId, shop_id: shopId, product_id: productId, code: p.code, name: p.name, price: p.price, on_hand: p.stock, reserved: 0, created_at: now });
    if (p.serial) await writeSerialSpec(tx, productId, p.serial);
  });
  return { productId, skuId };
}

export interface CatalogItem {
  code: string;
  name: string;
  kind: ProductKind;
  description: string;
  janCode: string | null;
  chartEligible: boolean;
  taxRate: number;
  price: number;
  available: number;
  /** Renewed every this many months (a subscription); null for a one-off product. */
  recurringIntervalMonths: number | null;
}

function catalogQuery(ctx: Context, shopId: string) {
  return ctx.db
    .selectFrom('products')
    .innerJoin('skus', 'skus.product_id', 'products.id')
    .select([
      'products.code',
      'products.name',
      'products.kind',
      'products.description',
      'products.jan_code',
      'products.chart_eligible',
      'products.tax_rate',
      'products.recurring_interval_months',
      'skus.price',
      'skus.on_hand',
      'skus.reserved',
    ])
    .where('products.shop_id', '=', shopId)
    .where('products.active', '=', 1);
}

type CatalogRow = Awaited<ReturnType<ReturnType<typeof catalogQuery>['executeTakeFirstOrThrow']>>;

function toItem(r: CatalogRow): CatalogItem {
  return {
    code: r.code,
    name: r.name,
    kind: r.kind,
    description: r.description,
    janCode: r.jan_code,
    chartEligible: r.chart_eligible === 1,
    taxRate: r.tax_rate,
    price: r.price,
    available: r.on_hand - r.reserved,
    recurringIntervalMonths: r.recurring_interval_months,
  };
}

export async function listProducts(ctx: Context, shopId: string): Promise<CatalogItem[]> {
  const rows = await catalogQuery(ctx, shopId).orderBy('products.created_at').orderBy('products.code').execute();
  return rows.map(toItem);
}

export async function getProduct(ctx: Context, shopId: string, code: string): Promise<CatalogItem> {
  const row = await catalogQuery(ctx, shopId).where('products.code', '=', code).executeTakeFirst();
  if (!row) throw notFound('product', code);
  return toItem(row);
}

/** The shop's items with these codes, by code; codes that name no active product are left out. */
export async function catalogItems(ctx: Context, shopId: string, codes: readonly string[]): Promise<Map<string, CatalogItem>> {
  if (codes.length === 0) return new Map();
  const rows = await catalogQuery(ctx, shopId).where('skus.code', 'in', [...codes]).execute();
  return new Map(rows.map((r) => [r.code, toItem(r)]));
}

/** What a payment choice depends on besides the shop: the order's total and the kinds of product in it. */
export interface Basket {
  /** Yen, tax included. */
  total: number;
  kinds: readonly string[];
  /** SKU codes of subscription products (renewed later with the member's saved payment). */
  subscriptions: readonly string[];
  /** The highest unit price among the lines (some gateways limit a line's price). */
  maxUnitPrice: number;
}

/**
 * The basket of order lines at today's prices. Codes that name no active product count for nothing
 * (the order refuses them); `unknown` lists the positions of those lines.
 */
export async function basketOf(ctx: Context, shopId: string, lines: readonly { sku: string; quantity: number }[]): Promise<Basket & { unknown: number[] }> {
  const items = await catalogItems(ctx, shopId, lines.map((l) => l.sku));
  const known = lines.flatMap((l) => {
    const item = items.get(l.sku);
    return item ? [{ item, quantity: l.quantity }] : [];
  });
  return {
    total: known.reduce((sum, l) => sum + l.item.price * l.quantity, 0),
    kinds: [...new Set(known.map((l) => l.item.kind))],
    subscriptions: known.filter((l) => l.item.recurringIntervalMonths !== null).map((l) => l.item.code),
    maxUnitPrice: Math.max(0, ...known.map((l) => l.item.price)),
    unknown: lines.flatMap((l, i) => (items.has(l.sku) ? [] : [i])),
  };
}
