import type { Context } from '../context.js';
import { createProduct, type ProductInput } from './catalog.js';
import { addDemoCodes, writeSerialSpec } from './serial-codes.js';
import { createShop, DEFAULT_SHOP_ID, setShopSettings, shopExists } from './shops.js';

/** What the demo serial-code product's Chekicha rows name (an import for it must say the same). */
export const DEMO_SERIAL_SPEC = { artistName: 'デモアーティスト', groupName: 'デモグループ', codeType: '特典会参加券' };

/** The demo shop `npm start` serves: one product of each kind and a subscription, with stock (and codes for the serial one). */
export const DEMO_PRODUCTS: ProductInput[] = [
  { code: 'demo-cd', name: 'デモ シングルCD「決済の歌」', kind: 'physical', description: 'A CD single with a JAN code, reported to the charts.', janCode: '4988001234562', chartEligible: true, taxRate: 10, price: 1320, stock: 100 },
  { code: 'demo-serial', name: 'デモ シリアルコード（特典会参加券）', kind: 'serial_code', description: 'A serial code delivered after payment.', taxRate: 10, price: 1500, stock: 500, serial: DEMO_SERIAL_SPEC },
  { code: 'demo-ticket', name: 'デモ ライブチケット 2026/12/24 東京', kind: 'ticket', description: 'An event ticket; stock is the remaining seats.', taxRate: 10, price: 6800, stock: 200 },
  { code: 'demo-fanclub', name: 'デモ ファンクラブ 毎月お届けBOX', kind: 'physical', description: 'A subscription: sent every month to a member who pays with atone.', taxRate: 10, price: 2980, stock: 300, recurringIntervalMonths: 1 },
];

/** Creates what is missing of the demo shop; running it twice changes nothing. */
export async function seedDemo(ctx: Context): Promise<string[]> {
  const done: string[] = [];
  if (!(await shopExists(ctx, DEFAULT_SHOP_ID))) {
    await createShop(ctx, { id: DEFAULT_SHOP_ID, name: 'kessai デモショップ' });
    done.push(`shop ${DEFAULT_SHOP_ID}`);
  }
  for (const product of DEMO_PRODUCTS) {
    const exists = await ctx.db.selectFrom('products').select('id').where('shop_id', '=', DEFAULT_SHOP_ID).where('code', '=', product.code).executeTakeFirst();
    if (!exists) {
      await createProduct(ctx, DEFAULT_SHOP_ID, product);
      done.push(`product ${product.code}`);
    } else if (product.serial) {
      // A demo database made before serial-code specs existed.
      const spec = await ctx.db.selectFrom('serial_code_specs').select('product_id').where('product_id', '=', exists.id).executeTakeFirst();
      if (!spec) await writeSerialSpec(ctx.db, exists.id, product.serial);
    }
  }
  for (const product of DEMO_PRODUCTS.filter((p) => p.serial)) {
    const added = await addDemoCodes(ctx, DEFAULT_SHOP_ID, product.code, product.stock);
    if (added > 0) done.push(`${added} serial codes for ${product.code}`);
  }
  if (ctx.config.sandbox) await setShopSettings(ctx, DEFAULT_SHOP_ID, { 'testpay.enabled': 'true', 'sbps.enabled': 'true', 'komoju.enabled': 'true', 'atone.enabled': 'true', 'atone.recurring': 'true', 'chekicha.enabled': 'true' });
  return done;
}
