import { sql } from 'kysely';
import type { Db } from '../db/index.js';
import { invalid } from '../errors.js';
import type { ChartSale } from '../integrations/charts/file.js';

/*
 * What the chart agencies are told was sold: per reporting date and JAN code, the units of
 * chart-eligible products shipped in that date's window (docs/decisions.md).
 *
 * The window. The described store's job ran at 22:00 JST and reported shipments of 00:00–21:59 that
 * day, so anything shipped from 22:00 to 23:59 fell between two days and was never reported. Here the
 * window of date D is [D−1 22:00, D 22:00) JST: it still closes when the 22:00 run starts, it covers
 * 00:00–21:59 of D as the agencies know it, and the evening after the previous cutoff belongs to the
 * next report. Every shipment is in exactly one window.
 *
 * A sale is counted when the order first enters `shipped` (an order that goes on hold and is shipped
 * again counts once, on its first shipment). Orders cancelled or refunded before shipping never
 * shipped, so they never appear. An order fully refunded or cancelled after shipping but before the
 * cutoff is left out: the goods came back before the day was reported. After the cutoff nothing is
 * subtracted — the files carry sales only (Billboard's quantity is unsigned digits), a sent day is
 * final, and because the rule reads only what happened before the cutoff, rebuilding a past day gives
 * the same file. Partial refunds are money only (kessai does not know which units, if any, came back),
 * so they leave the count alone.
 */

/** The hour (JST) at which a reporting date's window closes and the daily run starts. */
export const CUTOFF_HOUR_JST = 22;
const JST_MS = 9 * 3600_000;
const DAY_MS = 24 * 3600_000;

/** Order states that undo a shipped sale when reached before the cutoff. */
export const REVERSING_STATES = ['refunded', 'cancelled'] as const;

/** `YYYY-MM-DD` that is a real calendar date; anything else is refused naming `field`. */
export function parseReportDate(text: string, field = 'date'): string {
  const at = /^\d{4}-\d{2}-\d{2}$/.test(text) ? Date.parse(`${text}T00:00:00Z`) : Number.NaN;
  const ok = Number.isFinite(at) && new Date(at).toISOString().startsWith(text);
  if (!ok) throw invalid([{ field, reason: `"${text}" is not a date as YYYY-MM-DD` }]);
  return text;
}

function addDays(date: string, days: number): string {
  return new Date(Date.parse(`${date}T00:00:00Z`) + days * DAY_MS).toISOString().slice(0, 10);
}

/** The instants (UTC) bounding date D's window: [D−1 22:00 JST, D 22:00 JST). */
export function reportingWindow(date: string): { start: Date; end: Date } {
  const end = new Date(Date.parse(`${date}T00:00:00Z`) + CUTOFF_HOUR_JST * 3600_000 - JST_MS);
  return { start: new Date(end.getTime() - DAY_MS), end };
}

/** The reporting date whose window contains `instant`: shipments from 22:00 JST go to the next day. */
export function reportingDateOf(instant: Date): string {
  const jst = new Date(instant.getTime() + JST_MS);
  const day = jst.toISOString().slice(0, 10);
  return jst.getUTCHours() >= CUTOFF_HOUR_JST ? addDays(day, 1) : day;
}

/** The newest reporting date whose window has closed at `now` (what the 22:00 run reports). */
export function lastClosedDate(now: Date): string {
  return addDays(reportingDateOf(now), -1);
}

/**
 * Sales grouped per JAN are read in pages of this many JAN codes. Memory is bounded by the page, not
 * by the number of order lines; each page is one pass over the day's shipments, so a page holds more
 * JAN codes than a shop sells in a day (docs/benchmarks.md).
 */
const PAGE = 20_000;

/**
 * The day's sales in JAN order, streamed page by page (keyset on the JAN code), on both engines.
 * The database adds up the lines; this process never holds more than one page.
 */
export async function* chartSales(db: Db, shopId: string, date: string, opts: { pageSize?: number } = {}): AsyncGenerator<ChartSale> {
  const { start, end } = reportingWindow(parseReportDate(date));
  const from = start.toISOString();
  const until = end.toISOString();
  const pageSize = opts.pageSize ?? PAGE;
  let after = '';
  for (;;) {
    const page = await db
      .selectFrom('state_changes as sc')
      .innerJoin('orders as o', 'o.id', 'sc.entity_id')
      .innerJoin('order_lines as ol', 'ol.order_id', 'o.id')
      .innerJoin('skus as s', 's.id', 'ol.sku_id')
      .innerJoin('products as p', 'p.id', 's.product_id')
      .select((eb) => [
        'ol.jan_code as jan',
        eb.fn.sum<number | string>('ol.quantity').as('quantity'),
        eb.fn.min<string>('p.name').as('title'),
      ])
      // Literals: the partial index on shipments (migration 0010) is then certain to be used.
      .where('sc.entity', '=', sql.lit('order'))
      .where('sc.to_state', '=', sql.lit('shipped'))
      .where('sc.at', '>=', from)
      .where('sc.at', '<', until)
      .where('o.shop_id', '=', shopId)
      .where('p.chart_eligible', '=', 1)
      .where('ol.jan_code', 'is not', null)
      .where('ol.jan_code', '>', after)
      // Only the order's first shipment counts (ties on the timestamp broken by id), and not when the
      // order was refunded or cancelled before the cutoff. One probe of the order's few state changes.
      .where(({ not, exists, selectFrom }) =>
        not(
          exists(
            selectFrom('state_changes as x')
              .select(sql`1`.as('one'))
              .whereRef('x.entity_id', '=', 'sc.entity_id')
              .where('x.at', '<', until)
              .where((eb) =>
                eb.or([
                  eb.and([eb('x.to_state', '=', 'shipped'), eb.or([eb('x.at', '<', eb.ref('sc.at')), eb.and([eb('x.at', '=', eb.ref('sc.at')), eb('x.id', '<', eb.ref('sc.id'))])])]),
                  eb('x.to_state', 'in', [...REVERSING_STATES]),
                ]),
              ),
          ),
        ),
      )
      .groupBy('ol.jan_code')
      .orderBy('ol.jan_code')
      .limit(pageSize)
      .execute();
    for (const row of page) {
      const quantity = Number(row.quantity);
      if (quantity > 0) yield { date, jan: row.jan!, title: row.title, quantity };
    }
    if (page.length < pageSize) return;
    after = page[page.length - 1]!.jan!;
  }
}
