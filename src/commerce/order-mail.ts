import { z } from 'zod';
import type { Context } from '../context.js';
import { escapeHtml } from '../html.js';
import type { Mail } from '../integrations/mail/index.js';
import { mailTemplates } from '../jobs/mail-template.js';
import { japanTime, konbiniStoreLabel, yen } from './labels.js';
import { orderPageUrl } from './orders.js';
import { orderSerialCodes } from './serial-codes.js';
import { orderTickets, ticketQrPng, type TicketView } from './tickets.js';

export const ORDER_MAIL_TEMPLATES = ['order_paid', 'payment_instructions', 'refund', 'order_cancelled', 'order_shipped', 'renewal_unpaid'] as const;
export type OrderMailTemplate = (typeof ORDER_MAIL_TEMPLATES)[number];


/**
 * For a gateway that tells the customer itself where and what to pay (SBPS shows the payment number
 * on its screen and mails it; its notification does not carry it), the store can only say so.
 */
export const PAY_LATER_NOTE =
  'お支払い番号・お支払い先は、決済画面と決済サービスからのメールでご案内しています。/ The payment number and where to pay were shown on the payment screen and sent to you by the payment service by mail.';

/** The lines a customer needs to pay at a store or bank, from the attempt's details (any gateway). */
function paymentInstructions(details: Record<string, unknown>, total: number): string {
  const i = (details.instructions ?? details.konbini ?? {}) as Record<string, unknown>;
  const rows: [string, unknown][] = [
    ['お支払い先 / Pay at', typeof i.store === 'string' ? konbiniStoreLabel(i.store) : i.store],
    ['受付番号 / Receipt', i.receipt],
    ['確認番号 / Confirmation code', i.confirmationCode],
    ['お支払い期限 / Deadline', typeof i.deadline === 'string' ? japanTime(i.deadline) : undefined],
    ['手数料 / Fee', typeof i.fee === 'number' && i.fee > 0 ? yen(i.fee) : undefined],
    // What the customer hands over at the counter: the order and the store's fee together.
    ['お支払い金額 / Amount to pay', typeof i.fee === 'number' && i.fee > 0 ? yen(total + i.fee) : undefined],
    ['お支払い手順 / How to pay', i.url],
  ];
  const shown = rows.filter(([, v]) => v !== undefined && v !== null && v !== '').map(([k, v]) => `  ${k}: ${String(v)}`);
  return shown.length > 0 ? shown.join('\n') : `  ${PAY_LATER_NOTE}`;
}

/** Where the parcel goes, as the customer wrote it (nothing for orders without a shipping address). */
async function shippingAddress(ctx: Context, orderId: string): Promise<string> {
  const a = await ctx.db.selectFrom('order_addresses').selectAll().where('order_id', '=', orderId).where('kind', '=', 'shipping').executeTakeFirst();
  if (!a) return '';
  return `\nお届け先 / Ship to:\n  〒${a.postcode.slice(0, 3)}-${a.postcode.slice(3)} ${a.prefecture}${a.city}${a.line1}${a.line2 ? ` ${a.line2}` : ''}\n  ${a.name} 様\n`;
}

function ticketList(tickets: TicketView[]): string {
  return tickets.map((t, i) => `  ${i + 1}. ${t.productName}\n     ${t.code}\n     ${t.url}`).join('\n');
}

/**
 * The paid mail's HTML alternative: the same words, and each ticket's QR as an inline PNG (the
 * text part keeps the code and the link for clients that show no HTML).
 */
async function ticketsHtml(intro: string, summary: string, tickets: TicketView[], number: string) {
  const images = await Promise.all(
    tickets.map(async (t, i) => ({ cid: `ticket-${i + 1}.${number}@kessai`, filename: `ticket-${i + 1}.png`, contentType: 'image/png', content: await ticketQrPng(t.url) })),
  );
  const blocks = tickets.map(
    (t, i) =>
      `<div style="margin:1em 0;padding:1em;border:1px solid #ccc"><p><strong>${escapeHtml(t.productName)}</strong> (${i + 1}/${tickets.length})</p>` +
      `<p><img src="cid:${images[i]!.cid}" width="240" height="240" alt="QR ${t.code}"></p>` +
      `<p style="font-family:monospace;font-size:1.2em">${t.code}</p><p><a href="${escapeHtml(t.url)}">${escapeHtml(t.url)}</a></p></div>`,
  );
  const html =
    `<!doctype html><html><body><p>${escapeHtml(intro)}</p><pre style="font-family:inherit">${escapeHtml(summary)}</pre>` +
    `<h2>チケット / Tickets</h2><p>入場時にQRコードをご提示ください。/ Show the QR code at the entrance.</p>${blocks.join('')}</body></html>`;
  return { html, images };
}

/**
 * The text of an order mail, read from the order as it is when the mail is sent (a retried mail
 * shows the current state, not a stale copy).
 */
export async function orderMail(ctx: Context, template: OrderMailTemplate, orderId: string, jobId: string): Promise<Mail> {
  const order = await ctx.db.selectFrom('orders').selectAll().where('id', '=', orderId).executeTakeFirstOrThrow();
  const shop = await ctx.db.selectFrom('shops').select('name').where('id', '=', order.shop_id).executeTakeFirstOrThrow();
  const lines = await ctx.db.selectFrom('order_lines').selectAll().where('order_id', '=', orderId).orderBy('position').execute();
  const attempt = order.current_attempt_id
    ? await ctx.db.selectFrom('payment_attempts').selectAll().where('id', '=', order.current_attempt_id).executeTakeFirst()
    : undefined;
  const items = lines.map((l) => `  ${l.name} × ${l.quantity}  ${yen(l.amount)}`).join('\n');
  // Over every payment of the order: a duplicate payment refunded is money back too.
  const refunded = (await ctx.db.selectFrom('payment_attempts').select('refunded_amount').where('order_id', '=', orderId).execute()).reduce((sum, a) => sum + a.refunded_amount, 0);
  // Every mail leads back to the order's page: its state, what to pay where, tickets, paying again.
  const page = orderPageUrl(ctx, order);
  const summary = `ご注文番号 / Order: ${order.number}\n${items}\n  合計 / Total: ${yen(order.total)}（税込）${page ? `\nご注文の確認 / Your order: ${page}` : ''}`;
  const details = attempt ? (JSON.parse(attempt.details) as Record<string, unknown>) : {};
  const tickets = lines.some((l) => l.product_kind === 'ticket') ? await orderTickets(ctx.db, ctx.config.publicUrl, orderId) : [];
  const valid = tickets.filter((t) => t.state === 'issued');
  const voided = tickets.filter((t) => t.state === 'void');
  const validText = valid.length > 0
    ? `\nチケット / Tickets (${valid.length}):\n${ticketList(valid)}\n入場時にQRコードまたはコードをご提示ください。/ Show the QR code or the code at the entrance.\n`
    : '';
  const voidText = voided.length > 0 ? `\n次のチケットは無効になりました。/ These tickets are no longer valid:\n${ticketList(voided)}\n` : '';
  const serials = order.fulfilled === 1 && lines.some((l) => l.product_kind === 'serial_code') ? await orderSerialCodes(ctx.db, orderId) : [];
  const serialText = serials.length > 0
    ? `\nシリアルコード / Serial codes (${serials.length}):\n${serials.map((c, i) => `  ${i + 1}. ${c.productName}\n     ${c.code}\n     有効期間 / Valid ${c.validFrom} – ${c.validUntil} (JST)`).join('\n')}\n`
    : '';
  const paidIntro = 'お支払いを確認しました。/ We have received your payment.';
  const shipTo = template === 'order_shipped' ? await shippingAddress(ctx, orderId) : '';
  const bodies: Record<OrderMailTemplate, { subject: string; text: string }> = {
    order_paid: {
      subject: `【${shop.name}】ご注文ありがとうございます (${order.number})`,
      text: `${paidIntro}\n\n${summary}\n${serialText}${validText}`,
    },
    payment_instructions: {
      subject: `【${shop.name}】お支払いのご案内 (${order.number})`,
      text: `お支払い期限までにお支払いください。/ Please pay by the deadline.\n\n${summary}\n\nお支払い情報 / Payment details:\n${paymentInstructions(details, order.total)}\n`,
    },
    refund: {
      subject: `【${shop.name}】返金のお知らせ (${order.number})`,
      text: `返金を行いました。/ A refund has been made.\n\n${summary}\n  返金額累計 / Refunded so far: ${yen(refunded)}\n${voidText}`,
    },
    order_cancelled: {
      subject: `【${shop.name}】ご注文キャンセルのお知らせ (${order.number})`,
      text: `ご注文はキャンセルされました。/ Your order has been cancelled.\n\n${summary}\n${voidText}`,
    },
    order_shipped: {
      subject: `【${shop.name}】商品発送のお知らせ (${order.number})`,
      text: `ご注文の商品を発送しました。/ Your order has been shipped.\n\n${summary}\n${shipTo}`,
    },
    renewal_unpaid: {
      subject: `【${shop.name}】定期購入のお支払いができませんでした (${order.number})`,
      text:
        `定期購入の今回分を、ご登録のお支払い方法でお支払いいただけませんでした。/ We could not charge this renewal of your subscription with your registered payment method.\n\n${summary}\n\n` +
        `${japanTime(order.expires_at)} までにお支払いを確認できない場合、今回分はキャンセルされます。/ If it is not paid by then, this renewal is cancelled.\n` +
        `お支払い方法のご確認やご質問は、お問い合わせフォームからご連絡ください。/ To check your payment method or ask us: ${ctx.config.publicUrl}/inquiry\n`,
    },
  };
  const withQr = template === 'order_paid' && valid.length > 0 ? await ticketsHtml(paidIntro, `${summary}\n${serialText}`, valid, order.number) : {};
  return { to: order.email, id: `${template}.${order.number}.${jobId}`, ...bodies[template], ...withQr };
}

const byOrder = z.object({ orderId: z.string() });

/** Order mails read the order when they are sent; the payload names it only. */
export const ORDER_MAILS = mailTemplates(
  { order_paid: byOrder, payment_instructions: byOrder, refund: byOrder, order_cancelled: byOrder, order_shipped: byOrder, renewal_unpaid: byOrder } satisfies Record<OrderMailTemplate, z.ZodType>,
  (ctx, p, jobId) => orderMail(ctx, p.template, p.orderId, jobId),
);
