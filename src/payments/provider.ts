import type { PaymentFact } from '../commerce/payment-machine.js';
import type { ShopSettings } from '../commerce/shops.js';
import type { PaymentAttempt } from '../db/schema.js';
import type { OperationRun } from './operations.js';

/*
 * The seam between the store and a gateway. An adapter speaks its gateway's protocol (through
 * src/gateways) and hands the core nothing but normalized facts; the core never sees a gateway's
 * vocabulary. Every adapter method that talks to the network runs outside any database transaction.
 */

/** What the customer's browser must do next to pay (DESIGN.md "Fixed external contracts"). */
export type PaymentAction =
  | { type: 'form'; action: string; charset: string; fields: [string, string][] }
  | { type: 'redirect'; url: string }
  | { type: 'atone'; config: Record<string, unknown> };

/** A fact a gateway stated, in the store's vocabulary, with the key that makes it idempotent. */
export interface GatewayFact {
  /** Unique per gateway event: the same notification delivered twice has the same key. */
  eventKey: string;
  /** The attempt's merchant reference as the gateway echoes it (SBPS order_id, KOMOJU external_order_num …). */
  merchantRef: string;
  fact: PaymentFact;
  /** The gateway's own id for the payment (tracking id, payment id, transaction id). */
  gatewayRef?: string;
  /** What the customer needs to finish paying (konbini receipt number, deadline), shown on the order page. */
  details?: Record<string, unknown>;
  /** The raw fact as received, kept for the audit trail (secrets removed by the adapter). */
  payload: unknown;
}

/** What a notification endpoint answers, byte for byte as the gateway expects it. */
export interface GatewayReply {
  status: number;
  contentType: string;
  body: string | Buffer;
}

export type NotificationResult =
  /** Signature checked: the facts may be applied as they are. `ignored`: verified, but nothing kessai acts on, and why (logged as a warning). */
  | { verified: true; facts: GatewayFact[]; reply: GatewayReply; ignored?: string }
  /**
   * Not verifiable (no signature configured, or the gateway does not sign this kind): the store reads
   * the attempt back from the gateway's API and trusts only that answer.
   */
  | { verified: false; merchantRef: string; /** The gateway's id for the payment, when the notification names one (checked with `claim`). */ gatewayRef?: string; reply: GatewayReply }
  /** Forged or malformed: nothing happens, the gateway gets its error answer. */
  | { rejected: true; reason: string; reply: GatewayReply };

export interface AttemptContext {
  attempt: PaymentAttempt;
  settings: ShopSettings;
  order: {
    id: string;
    number: string;
    total: number;
    email: string;
    customerName: string;
    lines: { name: string; unitPrice: number; quantity: number }[];
    /** A line is a subscription (renewed later with the member's token, where the gateway can). */
    recurring?: boolean;
    /** When the order's stock reservation ends (ISO 8601): a gateway's payment page must not outlive it. */
    expiresAt?: string;
  };
  /** Absolute URLs on this store for the gateway to send the customer and its notifications to. */
  urls: { returnUrl: string; cancelUrl: string; notifyUrl: string };
}

export interface PaymentProvider {
  readonly name: string;
  /**
   * `start` only builds a page the store shows itself (atone's modal), without calling the gateway:
   * it is made again when the customer reloads that page.
   */
  readonly pageInStore?: boolean;
  /** The smallest order total, in yen, the gateway takes (atone: 1); a smaller basket is not offered it. */
  readonly minAmount?: number;
  /** The largest order total and unit price, in yen, the gateway takes; a basket beyond them is not offered it. */
  readonly maxAmount?: number;
  readonly maxUnitPrice?: number;
  /** Methods this provider offers with the given shop settings ([] when it is not configured). */
  methods(settings: ShopSettings): string[];
  /** Starts paying for an attempt; may call the gateway (e.g. create a session). */
  start(a: AttemptContext): Promise<{ action: PaymentAction; gatewayRef?: string }>;
  /** Checks a notification over its raw bytes and turns it into facts. */
  parseNotification(input: { rawBody: Buffer; headers: Record<string, string | string[] | undefined>; settings: ShopSettings; remoteAddress: string }): Promise<NotificationResult>;
  /**
   * Checks the signed data a gateway posts with the customer's browser return. It is shown, never
   * trusted for money: only notifications and read-backs are facts.
   */
  verifyReturn?(input: { rawBody: Buffer; settings: ShopSettings }): { valid: boolean; reason?: string };
  /** Reads the attempt's state from the gateway's API: the fallback source of truth. */
  readBack(a: AttemptContext): Promise<GatewayFact[]>;
  /**
   * Ends the customer's chance to pay at the gateway for an attempt about to expire (a payment page
   * left open would still take money for stock given back); answers the facts the gateway holds (a
   * payment made meanwhile). The key makes a rerun of the expiry safe. Without it, an expiring
   * attempt is only read back.
   */
  abandon?(a: AttemptContext, idempotencyKey: string): Promise<GatewayFact[]>;
  /**
   * Why the gateway cannot do `op` for this payment at all (SBPS refunds no convenience-store
   * payment; a payment the gateway has not reported yet), in words for the operator; undefined when
   * it may. Asked before the operation is queued, so the operator hears it at once, not from a
   * dead job.
   */
  refusal?(attempt: PaymentAttempt, op: 'capture' | 'refund' | 'cancel', amount: number): string | undefined;
  /** Money operations: amounts are always explicit; the key makes a retried call safe. */
  capture(a: AttemptContext, amount: number, idempotencyKey: string): Promise<GatewayFact[]>;
  /** `run.sending()` goes right before a refund call the gateway cannot be asked about afterwards (operations.ts). */
  refund(a: AttemptContext, amount: number, idempotencyKey: string, run: OperationRun): Promise<GatewayFact[]>;
  cancel(a: AttemptContext, idempotencyKey: string): Promise<GatewayFact[]>;
  /**
   * Whether the gateway's payment `gatewayRef`, named by a browser or an unsigned notification,
   * belongs to the attempt (asked of the gateway's API). Only then is it adopted for read-backs.
   */
  claim?(a: AttemptContext, gatewayRef: string): Promise<boolean>;
  /** Confirms the sale at the gateway when the order ships (atone's 売上確定); answers details to keep. */
  settle?(a: AttemptContext): Promise<Record<string, unknown>>;
  /**
   * Replaces the gateway's payment with one for the order as it is now (an operator made it smaller;
   * atone's 取引更新). Safe to run again: a payment already matching the order is answered as it is.
   * Without it, an edited order gets the difference refunded.
   */
  update?(a: AttemptContext): Promise<{ gatewayRef: string; amount: number; details: Record<string, unknown> }>;
  /**
   * Charges the attempt without the customer, with the member's saved token (a subscription's renewal;
   * atone's 取引登録). Answers the gateway's payment id, to be claimed and read back. Never repeated.
   */
  register?(a: AttemptContext, memberToken: string): Promise<string>;
}

export class ProviderRegistry {
  private readonly providers = new Map<string, PaymentProvider>();

  register(provider: PaymentProvider): this {
    this.providers.set(provider.name, provider);
    return this;
  }

  get(name: string): PaymentProvider | undefined {
    return this.providers.get(name);
  }

  all(): PaymentProvider[] {
    return [...this.providers.values()];
  }
}
