import type { Tx } from '../db/index.js';

/**
 * An order's lines as fulfilling it needs them. A paid order's serial codes, tickets, Chekicha link
 * and subscriptions each look at some of its lines; they are read once, in the payment's
 * transaction, and handed to each (on PostgreSQL every read is a round trip while the order is locked).
 */
export interface FulfilmentLine {
  id: string;
  skuId: string;
  productId: string;
  name: string;
  quantity: number;
  kind: string;
  /** Set for a subscription product: it renews every so many months. */
  recurringMonths: number | null;
  /** The product has a serial-code spec, so its codes come from imported batches. */
  hasCodeSpec: boolean;
}

/** The order's lines in the order the customer put them in. */
export async function fulfilmentLines(tx: Tx, orderId: string): Promise<FulfilmentLine[]> {
  const rows = await tx
    .selectFrom('order_lines')
    .innerJoin('skus', 'skus.id', 'order_lines.sku_id')
    .innerJoin('products', 'products.id', 'skus.product_id')
    .leftJoin('serial_code_specs as spec', 'spec.product_id', 'skus.product_id')
    .select(['order_lines.id', 'order_lines.sku_id', 'skus.product_id', 'order_lines.name', 'order_lines.quantity', 'order_lines.product_kind', 'products.recurring_interval_months', 'spec.product_id as spec'])
    .where('order_lines.order_id', '=', orderId)
    .orderBy('order_lines.position')
    .execute();
  return rows.map((r) => ({
    id: r.id,
    skuId: r.sku_id,
    productId: r.product_id,
    name: r.name,
    quantity: r.quantity,
    kind: r.product_kind,
    recurringMonths: r.recurring_interval_months,
    hasCodeSpec: r.spec !== null,
  }));
}
