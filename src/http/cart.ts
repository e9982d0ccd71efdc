import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { open, seal } from '../commerce/secrets.js';
import { cookieSettings } from './front.js';

/*
 * The cart and the checkout in progress live in the customer's browser, not in a table: two
 * cookies sealed with AES-256-GCM under keys derived from the master key (HttpOnly, SameSite=Lax).
 * Sealed rather than only signed, because the checkout cookie holds a name and an address. The cart
 * holds SKU codes and quantities only: every price is read from the catalog when a page is drawn
 * and again when the order is placed. A cookie that does not open (edited, another key, another
 * shop) reads as nothing, and the page says so.
 */

/** Distinct products in one cart: the sealed cookie must stay well under a browser's 4 KB. */
export const MAX_CART_LINES = 20;

const cartLine = z.strictObject({ sku: z.string().min(1).max(64), quantity: z.number().int().min(1).max(99) });
const cartState = z.strictObject({ lines: z.array(cartLine).max(MAX_CART_LINES) });
export type CartLine = z.infer<typeof cartLine>;

const checkoutState = z.strictObject({
  customer: z.strictObject({ email: z.string().max(254), name: z.string().max(100) }).optional(),
  address: z
    .strictObject({ name: z.string().max(100), postcode: z.string().max(8), prefecture: z.string().max(10), city: z.string().max(100), line1: z.string().max(200), line2: z.string().max(200).optional(), phone: z.string().max(11) })
    .optional(),
  provider: z.string().max(20).optional(),
});
export type CheckoutState = z.infer<typeof checkoutState>;

interface Keys {
  seal: Buffer;
  review: Buffer;
}

const keysByMaster = new WeakMap<Buffer, Keys>();

function keysOf(masterKey: Buffer): Keys {
  let keys = keysByMaster.get(masterKey);
  if (!keys) {
    const derive = (info: string) => Buffer.from(hkdfSync('sha256', masterKey, Buffer.alloc(0), info, 32));
    keys = { seal: derive('kessai shop front cart'), review: derive('kessai shop front review') };
    keysByMaster.set(masterKey, keys);
  }
  return keys;
}

export interface Read<T> {
  value: T;
  /** The cookie was there but did not open or did not hold what it should. */
  damaged: boolean;
}

function read<T>(request: FastifyRequest, masterKey: Buffer, name: string, aad: string, schema: z.ZodType<T>, empty: T): Read<T> {
  const raw = request.cookies[name];
  if (!raw) return { value: empty, damaged: false };
  try {
    const parsed = schema.safeParse(JSON.parse(open(keysOf(masterKey).seal, raw, aad)));
    return parsed.success ? { value: parsed.data, damaged: false } : { value: empty, damaged: true };
  } catch {
    return { value: empty, damaged: true };
  }
}

/** The shop front's cart and checkout cookies for one shop. */
export function shopCookies(config: { masterKey: Buffer; publicUrl: string }, shopId: string) {
  const { cart, checkout, options } = cookieSettings(config.publicUrl);
  const cartAad = `cart:${shopId}`;
  const checkoutAad = `checkout:${shopId}`;
  const review = (shown: unknown): string => createHmac('sha256', keysOf(config.masterKey).review).update(JSON.stringify(shown)).digest('base64url');
  return {
    cart: (request: FastifyRequest): Read<CartLine[]> => {
      const r = read(request, config.masterKey, cart, cartAad, cartState, { lines: [] });
      return { value: r.value.lines, damaged: r.damaged };
    },
    saveCart: (reply: FastifyReply, lines: CartLine[]): void => {
      if (lines.length === 0) void reply.clearCookie(cart, options);
      else void reply.setCookie(cart, seal(keysOf(config.masterKey).seal, JSON.stringify({ lines }), cartAad), { ...options, maxAge: 30 * 24 * 3600 });
    },
    checkout: (request: FastifyRequest): Read<CheckoutState> => read(request, config.masterKey, checkout, checkoutAad, checkoutState, {}),
    /** A browser-session cookie: what was typed is forgotten when the browser closes. */
    saveCheckout: (reply: FastifyReply, state: CheckoutState): void => {
      void reply.setCookie(checkout, seal(keysOf(config.masterKey).seal, JSON.stringify(state), checkoutAad), options);
    },
    clear: (reply: FastifyReply): void => {
      void reply.clearCookie(cart, options).clearCookie(checkout, options);
    },
    /**
     * A digest of exactly what the confirm page showed: the order is placed only if the same digest
     * comes back, so a price, stock or cart change in between (or an edited field) sends the customer
     * back to look again instead of buying something else.
     */
    review,
    sameReview: (shown: unknown, sent: string): boolean => {
      const expected = Buffer.from(review(shown));
      const actual = Buffer.from(sent);
      return actual.length === expected.length && timingSafeEqual(actual, expected);
    },
  };
}
export type ShopCookies = ReturnType<typeof shopCookies>;
