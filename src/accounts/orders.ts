import { sql } from 'kysely';
import { orderPageUrl, orderView, type CustomerOrderView } from '../commerce/orders.js';
import type { Context } from '../context.js';

/*
 * A customer's orders on the my page: the orders placed while logged in (attached by customer id),
 * and the guest orders placed with the account's address once that address is verified. The
 * owner of a verified mailbox already received those orders' mails with their links, so listing
 * them shows nothing new; before verification nothing but the customer's own orders is shown.
 */

/** How many orders the my page lists, newest first. */
export const MY_PAGE_ORDERS = 50;

/** `url`: the order's own page (to pay an unpaid order, see its state), when its link can be made. */
export async function customerOrders(ctx: Context, customerId: string): Promise<(CustomerOrderView & { url?: string })[]> {
  const me = await ctx.db.selectFrom('customers').select(['shop_id', 'email', 'email_verified_at']).where('id', '=', customerId).executeTakeFirstOrThrow();
  const orders = await ctx.db
    .selectFrom('orders')
    .selectAll('orders')
    .where((eb) => {
      const own = eb('orders.customer_id', '=', customerId);
      if (!me.email_verified_at) return own;
      const guests = eb
        .selectFrom('customers')
        .select('customers.id')
        .where('customers.shop_id', '=', me.shop_id)
        .where('customers.password_hash', 'is', null);
      return eb.or([
        own,
        eb.and([eb('orders.shop_id', '=', me.shop_id), eb(sql`lower(orders.email)`, '=', me.email), eb('orders.customer_id', 'in', guests)]),
      ]);
    })
    .orderBy('orders.created_at', 'desc')
    .limit(MY_PAGE_ORDERS)
    .execute();
  return Promise.all(orders.map(async (o) => ({ ...(await orderView(ctx, o)), url: orderPageUrl(ctx, o) })));
}

/**
 * Checkout while logged in: the order, created for a guest by createOrder, becomes the customer's
 * and the guest record made for it alone is removed. One transaction; if it never runs (a crash just
 * after checkout) the order stays a guest order, which the my page still lists by its address.
 */
export async function attachOrder(ctx: Context, orderId: string, customerId: string): Promise<void> {
  await ctx.db.transaction().execute(async (tx) => {
    const order = await tx.selectFrom('orders').select(['customer_id', 'shop_id']).where('id', '=', orderId).executeTakeFirst();
    const customer = await tx.selectFrom('customers').select(['shop_id']).where('id', '=', customerId).where('password_hash', 'is not', null).executeTakeFirst();
    if (!order || !customer || order.shop_id !== customer.shop_id || order.customer_id === customerId) return;
    const guest = order.customer_id;
    await tx.updateTable('orders').set({ customer_id: customerId }).where('id', '=', orderId).execute();
    const stillUsed = await tx.selectFrom('orders').select('id').where('customer_id', '=', guest).executeTakeFirst();
    if (!stillUsed) await tx.deleteFrom('customers').where('id', '=', guest).where('password_hash', 'is', null).execute();
  });
}
