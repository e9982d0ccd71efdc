/**
 * KOMOJU webhooks: verified `payment.captured` webhooks per second against a bare Fastify POST route.
 *
 *   node --import tsx bench/komoju-webhooks.ts [--engine sqlite|postgres] [--orders 3000]
 *                                              [--seconds 3] [--connections 64] [--rounds 5] [--profile DIR]
 *   (KESSAI_BENCH_ENGINE=postgres works too)
 *
 * The loads, the waiting for the inbox and the checks are bench/notifications.ts. What is KOMOJU's
 * here: each order pays with KOMOJU (provider komoju, method credit_card). For each attempt the
 * webhook is the event KOMOJU (and the sandbox, src/sandbox/komoju.ts) sends when a card payment is
 * captured: a JSON `payment.captured` event whose `data` is the payment object, with
 * `external_order_num` = the attempt's merchant reference, `total` = amount + `payment_method_fee`,
 * signed with X-Komoju-Signature (computeKomojuSignature: HMAC-SHA256 of the raw body under the
 * shop's webhook secret), plus X-Komoju-ID and X-Komoju-Event. The forged copy has the signature's
 * last hex digit changed: refused with 401.
 */
import { randomBytes } from 'node:crypto';
import { getShopSettings, DEFAULT_SHOP_ID } from '../src/commerce/shops.js';
import { computeKomojuSignature } from '../src/gateways/komoju/index.js';
import { runNotificationBench } from './notifications.js';

const hex = (n: number) => randomBytes(n).toString('hex');

await runNotificationBench({
  name: 'komoju-webhooks',
  title: 'KOMOJU webhooks (payment.captured)',
  provider: 'komoju',
  method: 'credit_card',
  headers: { 'content-type': 'application/json', 'user-agent': 'Komoju-Webhook' },
  ok: { status: 200, body: 'ok', contentType: 'text/plain; charset=utf-8' },
  refused: { status: 401, body: 'invalid signature' },
  async setup(rt) {
    const secret = (await getShopSettings(rt.ctx, DEFAULT_SHOP_ID))['komoju.webhookSecret'];
    if (typeof secret !== 'string' || !secret) throw new Error('the demo shop has no komoju.webhookSecret (is the sandbox on?)');
    if (!rt.payments.providers.get('komoju')) throw new Error('the KOMOJU provider is not registered');
    return async ({ attempt, order }) => {
      const at = new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
      const fee = 0;
      const event = {
        id: `evt_${hex(12)}`,
        type: 'payment.captured',
        resource: 'event',
        data: {
          id: hex(12),
          resource: 'payment',
          status: 'captured',
          amount: attempt.amount,
          tax: 0,
          customer: null,
          payment_deadline: null,
          payment_details: { type: 'credit_card', email: null, brand: 'visa', last_four_digits: '1111', month: 12, year: 2030 },
          payment_method_fee: fee,
          total: attempt.amount + fee,
          currency: 'JPY',
          description: null,
          captured_at: at,
          external_order_num: attempt.merchant_ref,
          metadata: { kessai_order: order.number, kessai_attempt: attempt.id },
          session: hex(12),
          created_at: at,
          amount_refunded: 0,
          locale: 'ja',
          refunds: [],
          refund_requests: [],
        },
        created_at: at,
        reason: null,
      };
      const body = JSON.stringify(event);
      const signature = computeKomojuSignature(body, secret);
      const forgedSignature = signature.slice(0, -1) + (signature.endsWith('0') ? '1' : '0');
      const headers = { 'x-komoju-id': `whd_${hex(10)}`, 'x-komoju-event': 'payment.captured' };
      return {
        genuine: { body, headers: { ...headers, 'x-komoju-signature': signature } },
        forged: { body, headers: { ...headers, 'x-komoju-signature': forgedSignature } },
      };
    };
  },
});
