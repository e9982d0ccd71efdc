/**
 * SBPS result notifications: verified result CGIs per second against a bare Fastify POST route.
 *
 *   node --import tsx bench/sbps-notifications.ts [--engine sqlite|postgres] [--orders 3000]
 *                                                 [--seconds 3] [--connections 64] [--rounds 5] [--profile DIR]
 *   (KESSAI_BENCH_ENGINE=postgres works too)
 *
 * The loads, the waiting for the inbox and the checks are bench/notifications.ts. What is SBPS's
 * here: each order pays with SBPS (provider sbps, method credit3d2). For each attempt the purchase
 * form is built by the SBPS provider exactly as the checkout builds it, and the result notification
 * exactly as the SBPS sandbox sends it: the request's fields echoed plus res_* (res_result=OK,
 * credit3d2, a fresh res_tracking_id), `encodeMessage('result', …, {shuffle, uppercaseHash})`:
 * urlencoded Shift_JIS (the item name is Japanese), fields in random order, hash in uppercase hex.
 * The forged copy has the hash's last hex digit changed: well-formed, verified, refused with `NG,`.
 */
import { getShopSettings, DEFAULT_SHOP_ID } from '../src/commerce/shops.js';
import { encodeMessage, orderedEntries } from '../src/gateways/sbps/index.js';
import { sbpsDate } from '../src/payments/sbps.js';
import { attemptContext } from '../src/payments/service.js';
import { runNotificationBench } from './notifications.js';

let trackingSeq = 0;

await runNotificationBench({
  name: 'sbps-notifications',
  title: 'SBPS result notifications',
  provider: 'sbps',
  method: 'credit3d2',
  headers: { 'content-type': 'application/x-www-form-urlencoded; charset=Shift_JIS', 'user-agent': 'kessai-bench-sbps' },
  ok: { status: 200, body: 'OK,', contentType: 'text/plain; charset=Shift_JIS' },
  refused: { status: 200, body: 'NG,sps_hashcode mismatch' },
  async setup(rt) {
    const hashKey = String((await getShopSettings(rt.ctx, DEFAULT_SHOP_ID))['sbps.hashKey']);
    const sbps = rt.payments.providers.get('sbps');
    if (!sbps) throw new Error('the SBPS provider is not registered');
    const resultNames = orderedEntries('result', { fields: {}, details: [] }).map(([name]) => name);
    return async ({ attempt, order, token }) => {
      // The purchase form exactly as the checkout hands it to the browser …
      const started = await sbps.start(await attemptContext(rt.payments, attempt, order, token));
      if (started.action?.type !== 'form') throw new Error(`SBPS start gave ${JSON.stringify(started.action)}, expected a form`);
      const request = Object.fromEntries(started.action.fields);
      if (request.order_id !== attempt.merchant_ref || request.amount !== String(attempt.amount)) throw new Error(`form for ${attempt.merchant_ref} does not carry its order_id and amount`);
      // … and the result CGI exactly as SBPS (and the sandbox) sends it for that form.
      trackingSeq += 1;
      const merged: Record<string, string> = {
        ...request,
        res_pay_method: 'credit3d2',
        res_result: 'OK',
        res_tracking_id: String(30_000_000_000_000 + trackingSeq),
        res_sps_cust_no: '',
        res_sps_payment_no: '',
        res_payinfo_key: '',
        res_payment_date: '',
        res_err_code: '',
        res_date: sbpsDate(),
      };
      const fields = Object.fromEntries(resultNames.map((name) => [name, merged[name] ?? '']));
      const body = encodeMessage('result', { fields, details: [] }, hashKey, { shuffle: Math.random, uppercaseHash: true }).toString('latin1');
      // The same body with the hash's last hex digit changed: well-formed, verified, refused.
      const forged = body.replace(/(sps_hashcode=[0-9A-F]{39})([0-9A-F])/, (_m, head: string, d: string) => head + (d === '0' ? '1' : '0'));
      return { genuine: { body }, forged: { body: forged } };
    };
  },
});
