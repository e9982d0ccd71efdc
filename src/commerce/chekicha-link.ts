import { z } from 'zod';
import type { Context } from '../context.js';
import type { Db, Tx } from '../db/index.js';
import type { Order } from '../db/schema.js';
import { StopRetrying } from '../errors.js';
import { nowIso } from '../ids.js';
import { ChekichaError, linkAccount } from '../integrations/chekicha/connect.js';
import { enqueue } from '../jobs/outbox.js';
import type { JobKind } from '../jobs/registry.js';
import type { FulfilmentLine } from './fulfilment-lines.js';
import { getShopSettings, shopSwitchedOn } from './shops.js';

/*
 * Chekicha account links (CkcConnect). The store this replaces called Chekicha inside the order's
 * transaction, so an outage rolled orders back. Here the payment's transaction only records that a
 * link is wanted — one `chekicha.link` job per member — and the job calls Chekicha afterwards:
 * retried with the worker's backoff while Chekicha is down or slow, dead-lettered with an alert when
 * Chekicha refuses for good. The job never touches the order.
 *
 * Only registered members are linked (a guest has no account here to link, and no my page to see
 * it on). A member links after buying a serial-code product, or from the my page.
 */

export const CHEKICHA_LINK_JOB = 'chekicha.link';

const payloadSchema = z.object({ customerId: z.string().min(1), orderId: z.string().min(1).optional() });
type LinkPayload = z.infer<typeof payloadSchema>;

/** One job per member: every reason to link (orders, the my page button) lands on it. */
const jobKey = (customerId: string) => `${CHEKICHA_LINK_JOB}:${customerId}`;

async function linkedAt(db: Db | Tx, customerId: string): Promise<string | undefined> {
  const row = await db.selectFrom('customer_links').select('linked_at').where('customer_id', '=', customerId).where('party', '=', 'chekicha').executeTakeFirst();
  return row?.linked_at;
}

/**
 * Asks for the member's link in the caller's transaction. A job already waiting or running takes
 * this reason along; a finished one (it failed for good, or had nothing to do then) runs again with
 * a fresh series of attempts.
 */
async function wantLink(tx: Db | Tx, payload: LinkPayload): Promise<void> {
  const key = jobKey(payload.customerId);
  await enqueue(tx, { kind: CHEKICHA_LINK_JOB, payload, dedupeKey: key });
  const at = nowIso();
  await tx
    .updateTable('jobs')
    .set({ state: 'pending', payload: JSON.stringify(payload), attempts: 0, run_at: at, finished_at: null, updated_at: at })
    .where('dedupe_key', '=', key)
    .where('state', 'in', ['done', 'dead'])
    .execute();
}

/**
 * Called by the payment's transaction when an order is fulfilled: an order with a serial-code
 * product, of a member not linked yet, in a shop with Chekicha on, asks for the link.
 */
export async function linkAfterPurchase(tx: Tx, order: Order, lines: readonly FulfilmentLine[]): Promise<void> {
  if (!lines.some((l) => l.kind === 'serial_code')) return;
  const member = await tx.selectFrom('customers').select('id').where('id', '=', order.customer_id).where('password_hash', 'is not', null).executeTakeFirst();
  if (!member || (await linkedAt(tx, member.id)) !== undefined) return;
  if (!(await shopSwitchedOn(tx, order.shop_id, 'chekicha.enabled'))) return;
  await wantLink(tx, { customerId: member.id, orderId: order.id });
}

export type ChekichaLinkState = { state: 'linked'; linkedAt: string } | { state: 'linking' } | { state: 'failed' } | { state: 'none' };

/** What the my page shows: linked (since when), being linked, the last try failed, or nothing yet. */
export async function chekichaLinkState(ctx: Context, customerId: string): Promise<ChekichaLinkState> {
  const at = await linkedAt(ctx.db, customerId);
  if (at !== undefined) return { state: 'linked', linkedAt: at };
  const job = await ctx.db.selectFrom('jobs').select('state').where('dedupe_key', '=', jobKey(customerId)).executeTakeFirst();
  if (job?.state === 'pending' || job?.state === 'running') return { state: 'linking' };
  if (job?.state === 'dead') return { state: 'failed' };
  return { state: 'none' };
}

/** The my page's button: asks for the link unless it exists. */
export async function requestChekichaLink(ctx: Context, customerId: string): Promise<void> {
  await ctx.db.transaction().execute(async (tx) => {
    if ((await linkedAt(tx, customerId)) === undefined) await wantLink(tx, { customerId });
  });
}

/** The serial-code products of an order, as Chekicha hears of them. */
async function purchase(db: Db, orderId: string): Promise<{ orderNumber: string; productCodes: string[] } | undefined> {
  const order = await db.selectFrom('orders').select('number').where('id', '=', orderId).executeTakeFirst();
  if (!order) return undefined;
  const products = await db
    .selectFrom('order_lines')
    .innerJoin('skus', 'skus.id', 'order_lines.sku_id')
    .innerJoin('products', 'products.id', 'skus.product_id')
    .select('products.code')
    .where('order_lines.order_id', '=', orderId)
    .where('order_lines.product_kind', '=', 'serial_code')
    .orderBy('order_lines.position')
    .execute();
  return { orderNumber: order.number, productCodes: [...new Set(products.map((p) => p.code))] };
}

export const chekichaLinkJob: JobKind<unknown> = {
  kind: CHEKICHA_LINK_JOB,
  async run(raw, job) {
    const { ctx, log } = job;
    const payload = payloadSchema.parse(raw);
    const customer = await ctx.db
      .selectFrom('customers')
      .select(['id', 'shop_id', 'email', 'password_hash'])
      .where('id', '=', payload.customerId)
      .executeTakeFirst();
    if (!customer || customer.password_hash === null) {
      log.info({ customerId: payload.customerId }, 'Chekicha link: not a registered member; nothing to link');
      return;
    }
    if ((await linkedAt(ctx.db, customer.id)) !== undefined) {
      log.info({ customerId: customer.id }, 'Chekicha link: already linked');
      return;
    }
    const settings = await getShopSettings(ctx, customer.shop_id);
    if (settings['chekicha.enabled'] !== true) {
      log.info({ shop: customer.shop_id }, 'Chekicha link: chekicha.enabled is off for the shop; nothing sent');
      return;
    }
    const [apiUrl, apiKey, partnerId] = (['chekicha.apiUrl', 'chekicha.apiKey', 'chekicha.partnerId'] as const).map((k) => settings[k]);
    if (typeof apiUrl !== 'string' || typeof apiKey !== 'string' || typeof partnerId !== 'string') {
      const missing = ['chekicha.apiUrl', 'chekicha.apiKey', 'chekicha.partnerId'].filter((k) => typeof settings[k] !== 'string');
      throw new StopRetrying(`shop "${customer.shop_id}" has chekicha.enabled on but ${missing.join(', ')} unset: set it (kessai shop set ${customer.shop_id} …) and retry the job`);
    }
    const bought = payload.orderId ? await purchase(ctx.db, payload.orderId) : undefined;

    let link;
    try {
      link = await linkAccount({ baseUrl: apiUrl, apiKey, signal: job.signal }, { partnerId, memberRef: customer.id, email: customer.email, ...bought });
    } catch (error) {
      // Chekicha's definite refusal (bad key, unknown partner, an address it will not take): retrying
      // for hours would only delay the alert.
      if (error instanceof ChekichaError && !error.retryable) throw new StopRetrying(error.message, { cause: error });
      throw error;
    }
    const at = nowIso();
    await ctx.db
      .insertInto('customer_links')
      .values({ customer_id: customer.id, party: 'chekicha', external_id: link.accountId, secret: null, linked_at: at, updated_at: at })
      .onConflict((oc) => oc.columns(['customer_id', 'party']).doUpdateSet({ external_id: link.accountId, updated_at: at }))
      .execute();
    log.info({ customerId: customer.id, accountId: link.accountId, linkId: link.linkId, created: link.created }, 'Chekicha account linked');
  },
};
