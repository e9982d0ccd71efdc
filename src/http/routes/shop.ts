import { createHash } from 'node:crypto';
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { attachOrder } from '../../accounts/orders.js';
import { PROVIDER_LABELS, yen } from '../../commerce/labels.js';
import { catalogItems, listProducts, type Basket, type CatalogItem } from '../../commerce/catalog.js';
import { addressInput, includedTax, orderInput } from '../../commerce/orders.js';
import { DEFAULT_SHOP_ID } from '../../commerce/shops.js';
import { KessaiError, problemsOf } from '../../errors.js';
import { forBrowser } from '../../payments/claims.js';
import { assertPayable, availableMethods, checkout, type Payments } from '../../payments/service.js';
import { MAX_CART_LINES, shopCookies, type CartLine, type CheckoutState } from '../cart.js';
import { CSRF_FIELD, currentCustomer, page } from '../front.js';
import { handoff } from './pages.js';

/*
 * The storefront: product list and detail, the cart, and the checkout in steps (customer → shipping
 * address, only for physical goods → payment method → confirm), then the gateway hand-off. Plain
 * forms that work without JavaScript; every post is checked here, and a refused one shows the
 * reason next to its field and changes nothing. The cart and the steps' answers live in sealed
 * cookies (../cart.ts); prices, stock and the payment methods a basket may use are read afresh on
 * every page, so nothing the browser sends can set them.
 */

// Physical goods are whatever the shop ships (a CD, a fan-club box, a T-shirt): the label says how they arrive.
export const KIND_LABELS: Record<string, string> = { physical: '配送商品 / Shipped goods', serial_code: 'シリアルコード / Serial code', ticket: 'チケット / Ticket' };

type Errors = Record<string, string>;

const STEPS = [
  { path: '/cart', label: 'カート / Cart' },
  { path: '/checkout/customer', label: 'お客様情報 / Your details' },
  { path: '/checkout/address', label: 'お届け先 / Shipping address' },
  { path: '/checkout/payment', label: 'お支払い方法 / Payment' },
  { path: '/checkout/confirm', label: 'ご注文の確認 / Confirm' },
] as const;
type StepPath = (typeof STEPS)[number]['path'];

function stockReason(available: number): string {
  return available <= 0 ? '在庫なし / Sold out' : `在庫が足りません（残り${available}点）/ Only ${available} left in stock`;
}

/** A quantity as typed (full-width digits too), or the reason it is not one. */
function quantityOf(text: string, min: 0 | 1): { quantity: number } | { reason: string } {
  const t = text.normalize('NFKC').trim();
  if (!/^\d+$/.test(t)) return { reason: '数量は半角または全角の数字で入力してください / must be a whole number' };
  const quantity = Number(t);
  if (quantity < min) return { reason: `数量は${min}以上にしてください / must be at least ${min}` };
  if (quantity > 99) return { reason: '数量は99以下にしてください / must be at most 99' };
  return { quantity };
}

/**
 * The posted fields this form has. Anything else — a price, a shop, an order id, a field sent
 * twice — is named back and the post does nothing.
 */
function formOf(body: unknown, allowed: (name: string) => boolean): { fields: Record<string, string>; unexpected: string | undefined } {
  const fields: Record<string, string> = {};
  const odd: string[] = [];
  for (const [name, value] of Object.entries((body ?? {}) as Record<string, unknown>)) {
    if (name === CSRF_FIELD) continue;
    if (typeof value === 'string' && allowed(name)) fields[name] = value;
    else odd.push(name.slice(0, 40));
  }
  if (odd.length === 0) return { fields, unexpected: undefined };
  const names = odd.slice(0, 5).join(', ');
  return { fields, unexpected: `この画面にない項目が送信されたため、何も変更していません（${names}）。/ The form carried fields it does not have (${names}); nothing was changed.` };
}

const DAMAGED = 'カートを読み取れなかったため、空のカートとして扱いました。/ Your cart could not be read, so it was treated as empty.';

interface PricedLine {
  sku: string;
  quantity: number;
  item: CatalogItem;
  amount: number;
}

/** The cart at today's prices: a Basket (what decides the payment methods) and what the pages show. */
interface Priced extends Basket {
  lines: PricedLine[];
  /** Codes in the cart the shop no longer sells. */
  gone: string[];
  taxes: { rate: number; amount: number; tax: number }[];
  needsAddress: boolean;
  /** Lines whose quantity is more than is in stock now, by field name. */
  stock: Errors;
}

const qField = (sku: string) => `q.${sku}`;

export function shopRoutes(p: Payments): FastifyPluginAsync {
  const { ctx } = p;
  const shopId = DEFAULT_SHOP_ID;
  const cookies = shopCookies(ctx.config, shopId);

  async function price(cart: CartLine[]): Promise<Priced> {
    const items = await catalogItems(ctx, shopId, cart.map((l) => l.sku));
    const lines = cart.flatMap((l) => {
      const item = items.get(l.sku);
      return item ? [{ sku: l.sku, quantity: l.quantity, item, amount: item.price * l.quantity }] : [];
    });
    const rates = [...new Set(lines.map((l) => l.item.taxRate))].sort((a, b) => b - a);
    const taxes = rates.map((rate) => {
      const amount = lines.filter((l) => l.item.taxRate === rate).reduce((sum, l) => sum + l.amount, 0);
      return { rate, amount, tax: includedTax(amount, rate) };
    });
    const stock: Errors = {};
    for (const l of lines) if (l.quantity > l.item.available) stock[qField(l.sku)] = stockReason(l.item.available);
    return {
      lines,
      gone: cart.filter((l) => !items.has(l.sku)).map((l) => l.sku),
      total: lines.reduce((sum, l) => sum + l.amount, 0),
      taxes,
      needsAddress: lines.some((l) => l.item.kind === 'physical'),
      kinds: [...new Set(lines.map((l) => l.item.kind))],
      subscriptions: lines.filter((l) => l.item.recurringIntervalMonths !== null).map((l) => l.item.code),
      maxUnitPrice: Math.max(0, ...lines.map((l) => l.item.price)),
      stock,
    };
  }

  /** Everything a checkout page needs, read from the cookies and the catalog, and the first step still open. */
  async function flowOf(request: FastifyRequest) {
    const cart = cookies.cart(request);
    const state = cookies.checkout(request);
    const priced = await price(cart.value);
    const methods = priced.lines.length > 0 ? await availableMethods(p, shopId, priced) : [];
    const s = state.value;
    const next: StepPath =
      cart.damaged || priced.lines.length === 0 || priced.gone.length > 0 || Object.keys(priced.stock).length > 0 ? '/cart'
      : !s.customer ? '/checkout/customer'
      : priced.needsAddress && !s.address ? '/checkout/address'
      : !s.provider || !methods.some((m) => m.provider === s.provider) ? '/checkout/payment'
      : '/checkout/confirm';
    return { cart, state, priced, methods, next, damaged: cart.damaged || state.damaged };
  }
  type Flow = Awaited<ReturnType<typeof flowOf>>;

  const stepIndex = (path: StepPath) => STEPS.findIndex((s) => s.path === path);

  /** Steps this cart goes through, marked done / current / open, for the progress list. */
  function stepsOf(flow: Flow, current: StepPath) {
    return STEPS.filter((s) => s.path !== '/checkout/address' || flow.priced.needsAddress).map((s) => ({
      ...s,
      current: s.path === current,
      reachable: stepIndex(s.path) <= stepIndex(flow.next) && s.path !== current,
    }));
  }

  /** A step can be opened once the steps before it are done; otherwise the customer goes to the first open one. */
  function guard(flow: Flow, step: StepPath, reply: FastifyReply): boolean {
    if (step === '/checkout/address' && !flow.priced.needsAddress) {
      void reply.redirect(stepIndex(flow.next) > stepIndex(step) ? '/checkout/payment' : flow.next, 303);
      return false;
    }
    if (stepIndex(step) > stepIndex(flow.next)) {
      void reply.redirect(flow.next, 303);
      return false;
    }
    return true;
  }

  const titleOf = (step: StepPath) => STEPS.find((s) => s.path === step)!.label;

  function stepPage(reply: FastifyReply, flow: Flow, step: StepPath, view: string, data: Record<string, unknown>, status = 200) {
    reply.header('cache-control', 'no-store');
    // What was typed did not open (edited, or sealed under another key): it is forgotten, and the page says so.
    const notices = flow.state.damaged ? ['入力内容を読み取れなかったため、もう一度ご入力ください。/ What you entered could not be read: please enter it again.'] : [];
    if (flow.state.damaged && reply.request.method === 'GET') cookies.saveCheckout(reply, {});
    return page(reply, `shop/${view}`, { title: titleOf(step), flow, steps: stepsOf(flow, step), errors: {}, notices, yen, kindLabels: KIND_LABELS, providerLabels: PROVIDER_LABELS, ...data }, status);
  }

  // ---------------------------------------------------------------- catalog

  async function productPage(reply: FastifyReply, code: string, values: { quantity?: string } = {}, errors: Errors = {}, formError?: string, status = 200) {
    const item = (await catalogItems(ctx, shopId, [code])).get(code);
    if (!item) {
      return page(reply, 'account/message', { title: '商品が見つかりません / Product not found', lines: ['この商品は販売されていません。/ This product is not on sale.'], links: [['/', '商品一覧 / All products']] }, 404);
    }
    return page(reply, 'shop/product', { title: item.name, item, values, errors, formError, yen, kindLabels: KIND_LABELS }, status);
  }

  // ---------------------------------------------------------------- cart

  async function cartPage(reply: FastifyReply, request: FastifyRequest, opts: { values?: Record<string, string>; errors?: Errors; formError?: string; status?: number } = {}) {
    const cart = cookies.cart(request);
    // An unreadable cookie holds nothing anyone could use: it goes, and the page says why.
    if (cart.damaged && request.method === 'GET') cookies.saveCart(reply, []);
    const priced = await price(cart.value);
    const notices = [
      ...(cart.damaged ? [DAMAGED] : []),
      ...priced.gone.map((code) => `「${code}」は販売が終了したため、カートから外しました。/ "${code}" is no longer sold and was left out.`),
    ];
    reply.header('cache-control', 'no-store');
    const errors = { ...priced.stock, ...opts.errors };
    return page(reply, 'shop/cart', { title: 'カート / Cart', priced, values: opts.values ?? {}, errors, formError: opts.formError, notices, yen, kindLabels: KIND_LABELS }, opts.status ?? 200);
  }

  return async (app) => {
    const hide = { schema: { hide: true } };
    const codeParams = z.object({ code: z.string().max(64) });

    app.get('/', hide, async (_request, reply) => {
      const shop = await ctx.db.selectFrom('shops').select(['id', 'name']).where('id', '=', shopId).executeTakeFirst();
      if (!shop) return reply.status(404).type('text/plain; charset=utf-8').send('No shop yet: run `kessai seed-demo` or `kessai shop create`.');
      return page(reply, 'index', { title: shop.name, shop, products: await listProducts(ctx, shop.id), yen, kindLabels: KIND_LABELS });
    });

    app.get('/products/:code', hide, async (request, reply) => {
      const parsed = codeParams.safeParse(request.params);
      return productPage(reply, parsed.success ? parsed.data.code : '');
    });

    app.get('/cart', hide, async (request, reply) => cartPage(reply, request));

    app.post('/cart/add', hide, async (request, reply) => {
      const { fields, unexpected } = formOf(request.body, (n) => n === 'sku' || n === 'quantity');
      const code = fields.sku ?? '';
      const values = { quantity: fields.quantity ?? '' };
      if (unexpected) return productPage(reply, code, values, {}, unexpected, 400);
      const item = (await catalogItems(ctx, shopId, [code])).get(code);
      if (!item) return cartPage(reply, request, { formError: 'この商品は販売されていません。/ This product is not on sale.', status: 400 });
      const cart = cookies.cart(request);
      // A cart that did not open is replaced by this one line (the cart page said it was unreadable).
      const lines = cart.value;
      const q = quantityOf(values.quantity, 1);
      if ('reason' in q) return productPage(reply, code, values, { quantity: q.reason }, undefined, 400);
      const inCart = lines.find((l) => l.sku === code)?.quantity ?? 0;
      const wanted = inCart + q.quantity;
      if (wanted > item.available) {
        const already = inCart > 0 ? `カートに${inCart}点あります。/ ${inCart} already in your cart. ` : '';
        return productPage(reply, code, values, { quantity: `${already}${stockReason(item.available - inCart)}` }, undefined, 400);
      }
      if (wanted > 99) return productPage(reply, code, values, { quantity: `1つの商品は99点までです（カートに${inCart}点）/ At most 99 of one product (${inCart} in your cart)` }, undefined, 400);
      if (inCart === 0 && lines.length >= MAX_CART_LINES) {
        return productPage(reply, code, values, {}, `カートに入れられる商品は${MAX_CART_LINES}種類までです。/ A cart holds at most ${MAX_CART_LINES} different products.`, 400);
      }
      cookies.saveCart(reply, inCart > 0 ? lines.map((l) => (l.sku === code ? { ...l, quantity: wanted } : l)) : [...lines, { sku: code, quantity: q.quantity }]);
      return reply.redirect('/cart', 303);
    });

    // One form for the whole cart: a quantity per line ("0" removes it) and a remove button per line.
    app.post('/cart', hide, async (request, reply) => {
      const cart = cookies.cart(request);
      if (cart.damaged) return cartPage(reply, request, { formError: `${DAMAGED} 何も変更していません。/ Nothing was changed.`, status: 400 });
      const lines = cart.value;
      const inCart = new Set(lines.map((l) => l.sku));
      const { fields, unexpected } = formOf(request.body, (n) => n === 'remove' || (n.startsWith('q.') && inCart.has(n.slice(2))));
      if (unexpected) return cartPage(reply, request, { values: fields, formError: unexpected, status: 400 });
      if (fields.remove !== undefined) {
        if (!inCart.has(fields.remove)) return cartPage(reply, request, { formError: 'この商品はカートにありません。/ This product is not in your cart.', status: 400 });
        cookies.saveCart(reply, lines.filter((l) => l.sku !== fields.remove));
        return reply.redirect('/cart', 303);
      }
      const items = await catalogItems(ctx, shopId, [...inCart]);
      const errors: Errors = {};
      const next: CartLine[] = [];
      for (const line of lines) {
        const typed = fields[qField(line.sku)];
        if (typed === undefined) {
          next.push(line);
          continue;
        }
        const q = quantityOf(typed, 0);
        if ('reason' in q) errors[qField(line.sku)] = q.reason;
        else if (q.quantity > (items.get(line.sku)?.available ?? 0)) errors[qField(line.sku)] = stockReason(items.get(line.sku)?.available ?? 0);
        else if (q.quantity > 0) next.push({ sku: line.sku, quantity: q.quantity });
      }
      if (Object.keys(errors).length > 0) return cartPage(reply, request, { values: fields, errors, status: 400 });
      cookies.saveCart(reply, next);
      return reply.redirect('/cart', 303);
    });

    // ---------------------------------------------------------------- checkout steps

    app.get('/checkout', hide, async (request, reply) => reply.redirect((await flowOf(request)).next, 303));

    /** The same post with a cart or checkout cookie that did not open: refused, nothing changes. */
    const damagedPost = (reply: FastifyReply, request: FastifyRequest) =>
      cartPage(reply, request, { formError: `${DAMAGED} 何も変更していません。/ Nothing was changed.`, status: 400 });

    const customerInput = orderInput.shape.customer.pick({ email: true, name: true });

    app.get('/checkout/customer', hide, async (request, reply) => {
      const flow = await flowOf(request);
      if (!guard(flow, '/checkout/customer', reply)) return reply;
      const me = await currentCustomer(request);
      const values = flow.state.value.customer ?? (me ? { email: me.email, name: me.name } : {});
      return stepPage(reply, flow, '/checkout/customer', 'customer', { values });
    });

    app.post('/checkout/customer', hide, async (request, reply) => {
      const flow = await flowOf(request);
      if (flow.damaged) return damagedPost(reply, request);
      if (!guard(flow, '/checkout/customer', reply)) return reply;
      const { fields, unexpected } = formOf(request.body, (n) => n === 'email' || n === 'name');
      const values = { email: (fields.email ?? '').trim(), name: (fields.name ?? '').trim() };
      if (unexpected) return stepPage(reply, flow, '/checkout/customer', 'customer', { values, formError: unexpected }, 400);
      const parsed = customerInput.safeParse(values);
      if (!parsed.success) return stepPage(reply, flow, '/checkout/customer', 'customer', { values, errors: firstReasons(problemsOf(parsed.error)) }, 400);
      cookies.saveCheckout(reply, { ...flow.state.value, customer: parsed.data });
      return reply.redirect(flow.priced.needsAddress ? '/checkout/address' : '/checkout/payment', 303);
    });

    const ADDRESS_FIELDS = ['name', 'postcode', 'prefecture', 'city', 'line1', 'line2', 'phone'] as const;

    app.get('/checkout/address', hide, async (request, reply) => {
      const flow = await flowOf(request);
      if (!guard(flow, '/checkout/address', reply)) return reply;
      const a = flow.state.value.address;
      const values = a ? { ...a, postcode: `${a.postcode.slice(0, 3)}-${a.postcode.slice(3)}` } : { name: flow.state.value.customer?.name ?? '' };
      return stepPage(reply, flow, '/checkout/address', 'address', { values });
    });

    app.post('/checkout/address', hide, async (request, reply) => {
      const flow = await flowOf(request);
      if (flow.damaged) return damagedPost(reply, request);
      if (!guard(flow, '/checkout/address', reply)) return reply;
      const { fields, unexpected } = formOf(request.body, (n) => (ADDRESS_FIELDS as readonly string[]).includes(n));
      const values = Object.fromEntries(ADDRESS_FIELDS.map((k) => [k, fields[k] ?? '']));
      if (unexpected) return stepPage(reply, flow, '/checkout/address', 'address', { values, formError: unexpected }, 400);
      const parsed = addressInput.safeParse({ ...values, line2: values.line2?.trim() || undefined });
      if (!parsed.success) return stepPage(reply, flow, '/checkout/address', 'address', { values, errors: firstReasons(problemsOf(parsed.error)) }, 400);
      cookies.saveCheckout(reply, { ...flow.state.value, address: parsed.data });
      return reply.redirect('/checkout/payment', 303);
    });

    app.get('/checkout/payment', hide, async (request, reply) => {
      const flow = await flowOf(request);
      if (!guard(flow, '/checkout/payment', reply)) return reply;
      return stepPage(reply, flow, '/checkout/payment', 'payment', { values: { provider: flow.state.value.provider ?? '' } });
    });

    app.post('/checkout/payment', hide, async (request, reply) => {
      const flow = await flowOf(request);
      if (flow.damaged) return damagedPost(reply, request);
      if (!guard(flow, '/checkout/payment', reply)) return reply;
      const { fields, unexpected } = formOf(request.body, (n) => n === 'provider');
      const values = { provider: fields.provider ?? '' };
      if (unexpected) return stepPage(reply, flow, '/checkout/payment', 'payment', { values, formError: unexpected }, 400);
      if (!values.provider) return stepPage(reply, flow, '/checkout/payment', 'payment', { values, errors: { provider: 'お支払い方法を選んでください / Choose how to pay' } }, 400);
      try {
        // The same check the order itself gets: a method this basket cannot use is refused with its reason.
        await assertPayable(p, shopId, { provider: values.provider }, '', flow.priced);
      } catch (error) {
        if (!(error instanceof KessaiError) || error.code !== 'invalid_input') throw error;
        return stepPage(reply, flow, '/checkout/payment', 'payment', { values, errors: { provider: `この注文ではご利用いただけません / Not available for this order: ${error.problems[0]?.reason ?? error.message}` } }, 400);
      }
      cookies.saveCheckout(reply, { ...flow.state.value, provider: values.provider });
      return reply.redirect('/checkout/confirm', 303);
    });

    /** Exactly what the confirm page shows, and what its button buys. */
    const shownOf = (flow: Flow) => ({
      lines: flow.priced.lines.map((l) => [l.sku, l.quantity, l.item.price]),
      total: flow.priced.total,
      customer: flow.state.value.customer,
      address: flow.priced.needsAddress ? flow.state.value.address : undefined,
      provider: flow.state.value.provider,
    });

    const confirmPage = (reply: FastifyReply, flow: Flow, formError?: string, status = 200) =>
      stepPage(reply, flow, '/checkout/confirm', 'confirm', { state: flow.state.value, review: cookies.review(shownOf(flow)), formError }, status);

    app.get('/checkout/confirm', hide, async (request, reply) => {
      const flow = await flowOf(request);
      if (!guard(flow, '/checkout/confirm', reply)) return reply;
      return confirmPage(reply, flow);
    });

    app.post('/checkout/confirm', hide, async (request, reply) => {
      const flow = await flowOf(request);
      if (flow.damaged) return damagedPost(reply, request);
      if (!guard(flow, '/checkout/confirm', reply)) return reply;
      const { fields, unexpected } = formOf(request.body, (n) => n === 'review');
      if (unexpected) return confirmPage(reply, flow, unexpected, 400);
      if (!cookies.sameReview(shownOf(flow), fields.review ?? '')) {
        return confirmPage(reply, flow, 'ご注文内容が表示後に変わりました。内容をご確認のうえ、もう一度確定してください。/ The order changed after it was shown: please check it and confirm again.', 409);
      }
      const s = flow.state.value as Required<Pick<CheckoutState, 'customer' | 'provider'>> & CheckoutState;
      // A double click sends this form twice with the same cookies (sealed anew whenever the cart or
      // the checkout changes) and the same review: one key, one order.
      const checkoutKey = `shop-front:${createHash('sha256').update(JSON.stringify(request.cookies)).update(fields.review ?? '').digest('base64url')}`;
      let result;
      try {
        result = await checkout(
          p,
          {
            shop: shopId,
            customer: s.customer,
            shippingAddress: flow.priced.needsAddress ? s.address : undefined,
            lines: flow.priced.lines.map((l) => ({ sku: l.sku, quantity: l.quantity })),
            payment: { provider: s.provider },
          },
          checkoutKey,
        );
      } catch (error) {
        if (!(error instanceof KessaiError) || error.status >= 500) throw error;
        // Stock sold in between, a method the shop turned off: the order is not made, the page says why.
        const reasons = error.problems.length > 0 ? error.problems.map((x) => x.reason).join('; ') : error.message;
        return confirmPage(reply, await flowOf(request), `ご注文できませんでした / The order was not placed: ${reasons}`, error.status);
      }
      cookies.clear(reply);
      const me = await currentCustomer(request);
      if (me) await attachOrder(ctx, result.order.id, me.customerId);
      if (!result.action) return reply.redirect(`/orders/${result.token}`, 303);
      return handoff(reply, await forBrowser(p, result.token, result.action), result.token);
    });
  };
}

/** The first reason for each field, to show next to it. */
function firstReasons(problems: { field: string; reason: string }[]): Errors {
  const errors: Errors = {};
  for (const x of problems) errors[x.field] ??= x.reason;
  return errors;
}
