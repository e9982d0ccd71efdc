import type { Context } from '../context.js';

export const ORDER_MAIL_TEMPLATES = ['order_paid', 'payment_instructions', 'refund', 'order_cancelled'] as const;
export type OrderMailTemplate = (typeof ORDER_MAIL_TEMPLATES)[number];

const yen = (n: number) => `${n.toLocaleString('ja-JP')}円`;

/**
 * The text of an order mail, read from the order as it is when the mail is sent (a retried mail
 * shows the current state, not a stale copy).
 */
export async function orderMail(ctx: Context, template: OrderMailTemplate, orderId: string, jobId: string) {
  const order = await ctx.db.selectFrom('orders').selectAll().where('id', '=', orderId).executeTakeFirstOrThrow();
  const shop = await ctx.db.selectFrom('shops').select('name').where('id', '=', order.shop_id).executeTakeFirstOrThrow();
  const lines = await ctx.db.selectFrom('order_lines').selectAll().where('order_id', '=', orderId).orderBy('position').execute();
  const attempt = order.current_attempt_id
    ? await ctx.db.selectFrom('payment_attempts').selectAll().where('id', '=', order.current_attempt_id).executeTakeFirst()
    : undefined;
  const items = lines.map((l) => `  ${l.name} × ${l.quantity}  ${yen(l.amount)}`).join('\n');
  const summary = `ご注文番号 / Order: ${order.number}\n${items}\n  合計 / Total: ${yen(order.total)}（税込）`;
  const details = attempt ? (JSON.parse(attempt.details) as Record<string, unknown>) : {};
  const bodies: Record<OrderMailTemplate, { subject: string; text: string }> = {
    order_paid: {
      subject: `【${shop.name}】ご注文ありがとうございます (${order.number})`,
      text: `お支払いを確認しました。/ We have received your payment.\n\n${summary}\n`,
    },
    payment_instructions: {
      subject: `【${shop.name}】お支払いのご案内 (${order.number})`,
      text: `お支払い期限までにお支払いください。/ Please pay by the deadline.\n\n${summary}\n\nお支払い情報 / Payment details:\n${JSON.stringify(details, null, 2)}\n`,
    },
    refund: {
      subject: `【${shop.name}】返金のお知らせ (${order.number})`,
      text: `返金を行いました。/ A refund has been made.\n\n${summary}\n  返金額累計 / Refunded so far: ${yen(attempt?.refunded_amount ?? 0)}\n`,
    },
    order_cancelled: {
      subject: `【${shop.name}】ご注文キャンセルのお知らせ (${order.number})`,
      text: `ご注文はキャンセルされました。/ Your order has been cancelled.\n\n${summary}\n`,
    },
  };
  return { to: order.email, id: `${template}.${order.number}.${jobId}`, ...bodies[template] };
}
