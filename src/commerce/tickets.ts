import QRCode from 'qrcode';
import type { Context } from '../context.js';
import type { Db, Tx } from '../db/index.js';
import { insertRows } from '../db/insert.js';
import type { Order, Ticket } from '../db/schema.js';
import type { FulfilmentLine } from './fulfilment-lines.js';
import { newId, nowIso, random } from '../ids.js';

/*
 * Event tickets. A paid ticket line becomes one ticket per unit; the ticket's code is its only
 * secret: whoever holds it (printed, in the mail, as the QR) is admitted, so it is drawn from the
 * CSPRNG and never derived from anything guessable. The event's remaining seats are the SKU's stock.
 */

/** The order numbers' alphabet: no 0/O or 1/I to misread at the door. 32 symbols, so byte % 32 is unbiased. */
const ALPHABET = '23456789ABCDEFGHJKLMNPQRSTUVWXYZ';
/** 28 symbols × 5 bits = 140 random bits (at least 128), read out in seven groups of four. */
const SYMBOLS = 28;
const GROUP = 4;
const CODE_SHAPE = new RegExp(`^[${ALPHABET}]{${GROUP}}(-[${ALPHABET}]{${GROUP}}){${SYMBOLS / GROUP - 1}}$`);

export type TicketState = Ticket['state'];

export function newTicketCode(): string {
  const symbols = [...random(SYMBOLS)].map((b) => ALPHABET[b % ALPHABET.length]).join('');
  return symbols.match(new RegExp(`.{${GROUP}}`, 'g'))!.join('-');
}

/**
 * The code as stored, from what a person typed or a scanner read: case, spaces and dashes do not
 * matter. Anything that cannot be a ticket code is undefined (never looked up).
 */
export function canonicalTicketCode(input: string): string | undefined {
  const bare = input.toUpperCase().replace(/[\s-]/g, '');
  if (bare.length !== SYMBOLS) return undefined;
  const code = bare.match(new RegExp(`.{${GROUP}}`, 'g'))!.join('-');
  return CODE_SHAPE.test(code) ? code : undefined;
}

/** What the QR carries: the page that tells the door whether the ticket admits anyone. */
export function ticketUrl(publicUrl: string, code: string): string {
  return `${publicUrl}/tickets/${code}`;
}

/** Rows per INSERT: well under SQLite's and PostgreSQL's bound-parameter limits. */
const INSERT_CHUNK = 500;

/**
 * Issues the order's tickets inside the caller's transaction (the `fulfil` effect of a payment):
 * one per unit of every ticket line, numbered 1…n in line order. Called again for the same order it
 * issues nothing; the unique (order, serial) pair refuses a double issue even if that check were
 * raced. Answers the number of tickets issued by this call.
 */
export async function issueTickets(tx: Tx, order: Pick<Order, 'id' | 'shop_id'>, orderLines: readonly FulfilmentLine[]): Promise<number> {
  const lines = orderLines.filter((l) => l.kind === 'ticket');
  if (lines.length === 0) return 0;
  const already = await tx.selectFrom('tickets').select('id').where('order_id', '=', order.id).limit(1).executeTakeFirst();
  if (already) return 0;
  const at = nowIso();
  let serial = 0;
  const rows = lines.flatMap((line) =>
    Array.from({ length: line.quantity }, () => ({
      id: newId('tkt'),
      shop_id: order.shop_id,
      order_id: order.id,
      order_line_id: line.id,
      sku_id: line.skuId,
      serial: ++serial,
      code: newTicketCode(),
      state: 'issued' as const,
      issued_at: at,
      voided_at: null,
    })),
  );
  for (let i = 0; i < rows.length; i += INSERT_CHUNK) {
    await insertRows(tx, 'tickets', rows.slice(i, i + INSERT_CHUNK));
  }
  return rows.length;
}

/**
 * Voids the order's tickets (refunded in full, or cancelled after payment), inside the caller's
 * transaction. The seats are not put back on sale: that is the operator's call (docs/decisions.md).
 */
export async function voidTickets(tx: Tx, orderId: string): Promise<number> {
  const result = await tx
    .updateTable('tickets')
    .set({ state: 'void', voided_at: nowIso() })
    .where('order_id', '=', orderId)
    .where('state', '=', 'issued')
    .executeTakeFirst();
  return Number(result.numUpdatedRows);
}

export interface TicketView {
  code: string;
  productName: string;
  state: TicketState;
  url: string;
}

/** The order's tickets as the customer sees them, in serial order. */
export async function orderTickets(db: Db | Tx, publicUrl: string, orderId: string): Promise<TicketView[]> {
  const rows = await db
    .selectFrom('tickets')
    .innerJoin('order_lines', 'order_lines.id', 'tickets.order_line_id')
    .select(['tickets.code', 'tickets.state', 'order_lines.name'])
    .where('tickets.order_id', '=', orderId)
    .orderBy('tickets.serial')
    .execute();
  return rows.map((r) => ({ code: r.code, productName: r.name, state: r.state, url: ticketUrl(publicUrl, r.code) }));
}

/**
 * What the door is told about a code. `held` is a ticket whose order an operator must look at
 * first (the money disagrees): it admits no one until they decide.
 */
export type TicketCheck =
  | { status: 'unknown' }
  | { status: 'valid' | 'void' | 'held'; code: string; eventName: string; orderNumber: string; serial: number; of: number; issuedAt: string; voidedAt: string | null };

export async function checkTicket(ctx: Context, input: string): Promise<TicketCheck> {
  const code = canonicalTicketCode(input);
  if (!code) return { status: 'unknown' };
  const row = await ctx.db
    .selectFrom('tickets')
    .innerJoin('order_lines', 'order_lines.id', 'tickets.order_line_id')
    .innerJoin('orders', 'orders.id', 'tickets.order_id')
    .select(['tickets.order_id', 'tickets.serial', 'tickets.state', 'tickets.issued_at', 'tickets.voided_at', 'order_lines.name', 'orders.number', 'orders.state as order_state'])
    .where('tickets.code', '=', code)
    .executeTakeFirst();
  if (!row) return { status: 'unknown' };
  const count = await ctx.db
    .selectFrom('tickets')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('order_id', '=', row.order_id)
    .executeTakeFirstOrThrow();
  const status = row.state === 'void' ? 'void' : row.order_state === 'on_hold' ? 'held' : 'valid';
  return {
    status,
    code,
    eventName: row.name,
    orderNumber: maskOrderNumber(row.number),
    serial: row.serial,
    of: Number(count.n),
    issuedAt: row.issued_at,
    voidedAt: row.voided_at,
  };
}

/**
 * Enough of the order number for the holder to recognise it (`K261224-******MA`), not enough for
 * whoever scans the ticket to quote it to the shop as the buyer.
 */
export function maskOrderNumber(number: string): string {
  const dash = number.indexOf('-');
  const tail = number.slice(dash + 1);
  return `${number.slice(0, dash + 1)}${'*'.repeat(Math.max(0, tail.length - 2))}${tail.slice(-2)}`;
}

/** Error correction M (15 %): survives a scuffed printout; the URL stays a small symbol. */
const QR_OPTIONS = { errorCorrectionLevel: 'M', margin: 4 } as const;

/** The QR for a page: scalable, a couple of kilobytes. */
export function ticketQrSvg(url: string): Promise<string> {
  return QRCode.toString(url, { ...QR_OPTIONS, type: 'svg' });
}

/** The QR for mail: a PNG, the image format every mail client shows inline. */
export function ticketQrPng(url: string): Promise<Buffer> {
  return QRCode.toBuffer(url, { ...QR_OPTIONS, type: 'png', scale: 6 });
}
