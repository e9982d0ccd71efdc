import assert from 'node:assert/strict';

/**
 * What a browser does with the shop front's forms, without a browser: keeps cookies, opens the page
 * a form is on and posts it with its hidden fields (the CSRF token among them) plus what the person
 * typed. Redirects are not followed: tests look at them.
 *
 *   const b = new FormClient(store.url);
 *   const res = await b.submit('/account/login', '/account/login', { email, password });
 *   assert.equal(res.status, 303);
 */

export interface Answer {
  status: number;
  body: string;
  headers: Headers;
  /** The redirect target, if any. */
  location: string | null;
}

export function unescapeHtml(s: string): string {
  return s.replace(/&#(\d+);/g, (_m, n: string) => String.fromCharCode(Number(n))).replace(/&amp;/g, '&').replace(/&quot;/g, '"').replace(/&lt;/g, '<').replace(/&gt;/g, '>');
}

/** The hidden inputs of the form on `html` that posts to `action`. */
export function hiddenFields(html: string, action: string): Record<string, string> {
  const forms = [...html.matchAll(/<form\b[^>]*\baction="([^"]*)"[^>]*>([\s\S]*?)<\/form>/g)];
  const form = forms.find((f) => unescapeHtml(f[1]!) === action);
  assert.ok(form, `no form posting to ${action} on the page:\n${html.slice(0, 2000)}`);
  const fields: Record<string, string> = {};
  for (const input of form[2]!.matchAll(/<input\b[^>]*>/g)) {
    const tag = input[0];
    if (!/\btype="hidden"/.test(tag)) continue;
    const name = /\bname="([^"]*)"/.exec(tag)?.[1];
    const value = /\bvalue="([^"]*)"/.exec(tag)?.[1] ?? '';
    if (name) fields[unescapeHtml(name)] = unescapeHtml(value);
  }
  return fields;
}

export class FormClient {
  readonly cookies = new Map<string, string>();

  constructor(
    readonly base: string,
    private readonly headers: Record<string, string> = {},
  ) {}

  private remember(res: Response): void {
    for (const line of res.headers.getSetCookie()) {
      const [pair, ...attributes] = line.split(';').map((s) => s.trim());
      const eq = pair!.indexOf('=');
      const name = pair!.slice(0, eq);
      const gone = attributes.some((a) => /^max-age=0$/i.test(a) || (/^expires=/i.test(a) && new Date(a.slice(8)).getTime() < Date.now()));
      if (gone) this.cookies.delete(name);
      else this.cookies.set(name, pair!.slice(eq + 1));
    }
  }

  private cookieHeader(): Record<string, string> {
    return this.cookies.size ? { cookie: [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ') } : {};
  }

  async get(path: string): Promise<Answer> {
    const res = await fetch(new URL(path, this.base), { headers: { ...this.headers, ...this.cookieHeader() }, redirect: 'manual' });
    this.remember(res);
    return { status: res.status, body: await res.text(), headers: res.headers, location: res.headers.get('location') };
  }

  /** Posts exactly these fields (no page opened first): what a forged cross-site post looks like. */
  async post(path: string, fields: Record<string, string>): Promise<Answer> {
    const res = await fetch(new URL(path, this.base), {
      method: 'POST',
      headers: { ...this.headers, ...this.cookieHeader(), 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams(fields).toString(),
      redirect: 'manual',
    });
    this.remember(res);
    return { status: res.status, body: await res.text(), headers: res.headers, location: res.headers.get('location') };
  }

  /** Opens `pagePath`, fills the form posting to `action` with `fields` and sends it. */
  async submit(pagePath: string, action: string, fields: Record<string, string> = {}): Promise<Answer> {
    const page = await this.get(pagePath);
    assert.equal(page.status, 200, `opening ${pagePath}: HTTP ${page.status} ${page.body.slice(0, 500)}`);
    return this.post(action, { ...hiddenFields(page.body, action), ...fields });
  }
}

/** The address `buyThroughShop` types when the cart has physical goods, unless told otherwise. */
export const TEST_ADDRESS = { name: '山田 太郎', postcode: '100-0001', prefecture: '東京都', city: '千代田区', line1: '千代田1-1', line2: '', phone: '03-1234-5678' };

export interface Purchase {
  sku: string;
  quantity?: number;
  email: string;
  name: string;
  provider: string;
  /** Typed on the shipping-address step (asked only for physical goods); TEST_ADDRESS fills the rest. */
  address?: Partial<typeof TEST_ADDRESS>;
}

/**
 * Buys as a customer does in the shop front: the product page's add-to-cart form, then each
 * checkout step's form (details, the address when asked, the payment method), then the confirm
 * button. Answers that last post: the gateway hand-off (a redirect, a form, the atone page) or the
 * order page. Every step before it must be accepted.
 */
export async function buyThroughShop(client: FormClient, p: Purchase): Promise<Answer> {
  const step = async (pagePath: string, fields: Record<string, string>, expected: string | RegExp) => {
    const res = await client.submit(pagePath, pagePath === `/products/${p.sku}` ? '/cart/add' : pagePath, fields);
    assert.equal(res.status, 303, `${pagePath}: HTTP ${res.status} ${res.body.slice(0, 1500)}`);
    assert.match(res.location ?? '', typeof expected === 'string' ? new RegExp(`^${expected}$`) : expected, `${pagePath} went on to ${res.location}`);
    return res.location!;
  };
  await step(`/products/${p.sku}`, { quantity: String(p.quantity ?? 1) }, '/cart');
  const next = await step('/checkout/customer', { email: p.email, name: p.name }, /^\/checkout\/(address|payment)$/);
  if (next === '/checkout/address') await step('/checkout/address', { ...TEST_ADDRESS, ...p.address }, '/checkout/payment');
  await step('/checkout/payment', { provider: p.provider }, '/checkout/confirm');
  return client.submit('/checkout/confirm', '/checkout/confirm');
}
