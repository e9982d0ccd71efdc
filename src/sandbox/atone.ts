import { randomBytes, randomInt, timingSafeEqual } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyError, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { z } from 'zod';
import {
  ATONE_ERROR_CODES,
  ATONE_OPTION_RECURRING,
  ATONE_TOKEN,
  ATONE_TRANSACTION_ID,
  atoneInteger,
  computeAtoneWebhookChecksum,
  validateAtonePayment,
  verifyAtoneChecksum,
  type AtoneChecksumOptions,
  type AtoneItem,
  type AtoneProblem,
  type AtoneTransaction,
  type AtoneWebhookChecksumOptions,
} from '../gateways/atone/index.js';
import { ATONE_MODAL_SCRIPT, atoneSdkScript } from './atone-script.js';
import { escapeHtml as esc } from '../html.js';

/*
 * The atone (NP後払い) simulator: the JS SDK's modal, the legacy REST API and the webhooks, as strict as
 * atone where reference gateways.md §2 knows atone's behaviour, and documented below where it guesses.
 * Mounted at /sandbox/atone by the app; the shop loads `<public>/sandbox/atone/atone.js` instead of
 * atone's and talks to the API with the library client
 * (`atoneApi({ secretKey, baseUrl: '<public>/sandbox/atone/v1' })`).
 *
 *   GET  /atone.js                         the SDK: Atone.config / merge / start (see atone-script.ts)
 *   GET  /modal.js                         helper of the modal's pages (posts results to the shop's page)
 *   POST /js/start                         what Atone.start() sends: { pub_key, payment, pre_token,
 *                                          terminal_id, origin } → { session } or 400 with EATN errors
 *   GET  /modal/:session                   the modal page: log in / register, confirm, result
 *   POST /modal/:session/{login,register,authorize,switch,cancel}   its forms
 *   GET  /v1/transactions/:id              取引参照   (also POST + X-HTTP-Method-Override: GET)
 *   PATCH /v1/transactions/:id/settle      売上確定   (also POST + X-HTTP-Method-Override: PATCH)
 *   PATCH /v1/transactions/:id/refund      課金払戻   (also POST + X-HTTP-Method-Override: PATCH)
 *   POST /v1/transactions                  取引登録 / 取引更新 (with updated_transactions)
 *   GET  /                                 overview: shops, test members, transactions, webhooks, faults
 *   GET|POST /api/faults, GET /api/transactions/:id/webhooks   test switches (no credentials: the
 *                                          sandbox is off in production)
 *
 * Its state is in memory and invisible to the store: the store learns what happened only from the
 * browser callbacks, the webhooks and the API, as with the real atone.
 *
 * Test members (any shop): taro@example.jp / password (approved up to the credit limit) and
 * decline@example.jp / password (always declined); anyone may register in the modal. Rules: an e-mail
 * containing "decline" is declined with authorization_result_ng_reason 9; an amount above `creditLimit`
 * (default ¥100,000) with reason 1 (金額超過); the `decline` fault declines everything with reason 9.
 *
 * Choices where the reference is silent or UNCONFIRMED (each one a guess at atone's behaviour):
 * - Errors are HTTP 400 `{ name: "InvalidRequest", message, errors: [{ code, messages, params }] }` with
 *   every problem at once; `params` holds the field's path (`items[0].item_price`). Wrong or missing
 *   credentials: 401 name "Unauthorized" with EATN0306; unknown transaction: 404 name "NotFound" with
 *   EATN0398. State refusals are 400: a second settle is EATN1201 (the CS-Cart add-on's reading:
 *   already settled); settling or refunding a declined, refunded or replaced transaction is EATN0398.
 *   Σ(item_price × item_count) ≠ amount is EATN0398 on `amount` (no code of its own is known).
 * - Basic auth must be the raw secret key with no ":" (the one public implementation's form); "secret:"
 *   is refused with a message saying so. Methods: the real GET / PATCH / POST and POST with
 *   X-HTTP-Method-Override are both accepted. A body must be application/json (EATN0352); bad JSON is
 *   EATN0397. X-NP-Terminal-Id is accepted and ignored.
 * - The checksum of the modal's payment object is checked with the library's default exclusion set
 *   (shop_transaction_no, transaction_options, return_url; option `checksum`). A bad one is EATN0351.
 *   Registration over REST carries no checksum (the secret key authenticates it).
 * - pre_token: empty means log in; a malformed one is EATN0302; a well-formed token unknown to this
 *   shop (revoked, another shop's, from before a restart) just shows the login (no login skip). A
 *   valid one skips the login, and `authenticated` is still called with the same token.
 * - A member has one token per shop (`tk_…`), the same at every login. The 認証Webhook goes out on
 *   log-in and registration (not on a pre_token skip) with body { object: "authentication",
 *   authentication_token, user_no, shop_transaction_no, authenticated_datetime }.
 * - The 決済Webhook goes out for every authorization, OK and NG (shop-support's description), also for
 *   取引登録 / 取引更新 over REST; its body is the transaction as 取引参照 answers it (AFTEE's shape).
 *   Both webhooks carry Np-Confirmation-Checksum built with the library's default construction
 *   (option `webhookChecksum`). Any non-2xx answer, a time-out or a refused connection is retried after
 *   baseDelayMs, doubling, capped at 60 s, up to maxAttempts in all; per transaction (and per token)
 *   one delivery after the other.
 * - shop_transaction_no: a new transaction may not reuse the number of an authorized, unrefunded,
 *   unreplaced transaction of the same shop (EATN0398); a declined attempt's number may be reused.
 *   取引更新 may keep the old transaction's number.
 * - 取引更新 (updated_transactions: [old id], exactly one): the old transaction must be authorized, not
 *   refunded and not replaced, and the token must be its member's (EATN0303). The new transaction is
 *   authorized by the same rules; if it is OK the old one is replaced: 取引参照 still shows it, with
 *   `related_transaction` = the new id, and settle / refund / update of it are refused. A declined
 *   update leaves the old one as it was.
 * - 取引登録 without updated_transactions (a recurring charge): needs transaction_options containing 1
 *   and a token whose member completed an authorized modal purchase with option 1 at this shop (else
 *   EATN0303). transaction_options may hold 1, 2 and 3; 3 has no effect here.
 * - Refunds are full only: a body naming an amount is refused (partial refunds UNCONFIRMED). A refund
 *   is possible before and after 売上確定.
 * - Times are JST "YYYY/MM/DD HH:mm" (the one sample, "2020/07/06 15:07"). Ids: tr_ + 16 letters and digits.
 * - The modal is an overlay with an iframe; its pages send their results with postMessage to the
 *   shop page's origin (from the request's Origin header, else the `origin` atone.js sends), and allow
 *   being framed by that origin only. Modal sessions live 30 minutes.
 * - Faults (POST /api/faults): `dropBrowser` — after the authorization the browser is gone: the modal
 *   calls neither succeeded nor failed, only the webhook arrives; `webhookFirst` — the authorization's
 *   answer waits until the 決済Webhook was delivered (or given up), so the webhook lands before the
 *   callback; `duplicateWebhooks` — every delivery is sent twice, same bytes; `decline` — every
 *   authorization is NG (reason 9); `dropWebhooks` — no webhooks at all; `webhookDelayMs` — each
 *   delivery waits that long first (the callback then wins the race). Values are read when a webhook
 *   or an authorization is created.
 */

export interface AtoneSandboxShop {
  publicKey: string;
  secretKey: string;
  /** The shop's 認証Webhook (member) and 決済Webhook (order) URLs, as set in atone's admin. */
  webhookUrls?: { member?: string; order?: string };
  /** Shown in the modal. Default "Sandbox shop #<n>". */
  name?: string;
}

export interface AtoneSandboxMember {
  email: string;
  password: string;
  name: string;
}

export interface AtoneSandboxOptions {
  shops: AtoneSandboxShop[];
  log: Logger;
  /** Members besides the built-in test members. */
  members?: AtoneSandboxMember[];
  /** Amounts above this are declined with reason 1 (金額超過). Default 100,000 yen. */
  creditLimit?: number;
  /** How the payment object's checksum is checked. Default: the library's default exclusion set. */
  checksum?: AtoneChecksumOptions;
  /** How Np-Confirmation-Checksum is built. Default: the library's default construction. */
  webhookChecksum?: AtoneWebhookChecksumOptions;
  /** Webhook retry: first delay (default 1000 ms, doubling, capped at 60 s), attempts in all (default 8), per-attempt time-out (default 10 s). */
  webhookRetry?: { baseDelayMs?: number; maxAttempts?: number; timeoutMs?: number };
}

const BUILT_IN_MEMBERS: AtoneSandboxMember[] = [
  { email: 'taro@example.jp', password: 'password', name: '試験 太郎' },
  { email: 'decline@example.jp', password: 'password', name: '否決 花子' },
];

const SESSION_LIFETIME_MS = 30 * 60 * 1000;
const MAX_RETRY_DELAY_MS = 60_000;
const API_BODY_LIMIT = 1024 * 1024;
const FORM_LIMIT = 16 * 1024;

const faultsSchema = z
  .object({
    dropBrowser: z.boolean().optional(),
    webhookFirst: z.boolean().optional(),
    duplicateWebhooks: z.boolean().optional(),
    decline: z.boolean().optional(),
    dropWebhooks: z.boolean().optional(),
    webhookDelayMs: z.number().int().min(0).max(600_000).optional(),
  })
  .strict();
type Faults = Required<z.infer<typeof faultsSchema>>;
const DEFAULT_FAULTS: Faults = { dropBrowser: false, webhookFirst: false, duplicateWebhooks: false, decline: false, dropWebhooks: false, webhookDelayMs: 0 };

// ---- state ----------------------------------------------------------------------------------------

interface Shop {
  index: number;
  name: string;
  publicKey: string;
  secret: string;
  secretBytes: Buffer;
  webhookUrls: { member?: string; order?: string };
}

interface Member {
  userNo: string;
  email: string;
  password: string;
  name: string;
  /** shop index → token */
  tokens: Map<number, string>;
  /** Shops where the member completed an authorized purchase with transaction option 1. */
  recurring: Set<number>;
}

interface Txn {
  id: string;
  shop: Shop;
  member: Member;
  token: string;
  shopTransactionNo: string;
  amount: number;
  items: Record<string, unknown>[];
  customer: Record<string, unknown>;
  destCustomers: Record<string, unknown>[];
  description: string | null;
  options: number[];
  result: 1 | 2;
  ngReason: 1 | 9 | null;
  settledAt: Date | null;
  refundedAt: Date | null;
  replacedBy: string | null;
  updates: string[];
  via: 'modal' | 'api';
  createdAt: Date;
}

type ModalState = 'login' | 'confirm' | 'done' | 'cancelled';

interface Message {
  atone: string;
  event: 'authenticated' | 'succeeded' | 'failed' | 'cancelled' | 'error';
  [key: string]: unknown;
}

interface ModalSession {
  id: string;
  shop: Shop;
  /** The shop page's origin: where the results are posted, and who may frame the modal. */
  origin: string;
  payment: Record<string, unknown>;
  state: ModalState;
  member: Member | null;
  transaction: Txn | null;
  /** Results not yet handed to the shop's page (sent with the next page the modal shows). */
  outbox: Message[];
  /** The browser "went away" after the authorization (fault dropBrowser). */
  dropped: boolean;
  note: string | null;
  expiresAt: number;
}

interface Delivery {
  kind: 'order' | 'member';
  subject: string;
  url: string;
  status: 'scheduled' | 'sending' | 'retrying' | 'delivered' | 'failed' | 'dropped';
  attempts: number;
  lastOutcome: string;
  duplicate: boolean;
  at: Date;
}

// ---- errors ---------------------------------------------------------------------------------------

interface ErrorDetail {
  code: string;
  messages: string[];
  params: string[];
}

class AtoneError extends Error {
  constructor(
    readonly status: number,
    readonly type: string,
    message: string,
    readonly errors: ErrorDetail[],
  ) {
    super(message);
  }
  body(): { name: string; message: string; errors: ErrorDetail[] } {
    return { name: this.type, message: this.message, errors: this.errors };
  }
}

const detail = (code: string, param?: string, message?: string): ErrorDetail => ({
  code,
  messages: [message ? `${ATONE_ERROR_CODES[code] ?? code}: ${message}` : (ATONE_ERROR_CODES[code] ?? code)],
  params: param ? [param] : [],
});
const invalid = (errors: ErrorDetail[], message = 'the request is invalid'): AtoneError => new AtoneError(400, 'InvalidRequest', message, errors);
const refused = (code: string, param: string, message: string): AtoneError => invalid([detail(code, param, message)], message);
const fromProblems = (problems: AtoneProblem[]): ErrorDetail[] => problems.map((p) => detail(p.code, p.path || undefined, p.message));

// ---- the plugin -----------------------------------------------------------------------------------

export function atoneSandbox(opts: AtoneSandboxOptions): FastifyPluginAsync {
  if (!Array.isArray(opts.shops) || opts.shops.length === 0) throw new TypeError('atoneSandbox: at least one shop is required');
  const publicKeys = new Set<string>();
  const secrets = new Set<string>();
  const shops: Shop[] = opts.shops.map((s, index) => {
    if (typeof s.publicKey !== 'string' || !s.publicKey) throw new TypeError(`atoneSandbox: shop ${index} has no public key`);
    if (typeof s.secretKey !== 'string' || !s.secretKey) throw new TypeError(`atoneSandbox: shop ${index} has no secret key`);
    if (publicKeys.has(s.publicKey) || secrets.has(s.secretKey)) throw new TypeError(`atoneSandbox: shop ${index} repeats another shop's key`);
    publicKeys.add(s.publicKey);
    secrets.add(s.secretKey);
    for (const [kind, url] of Object.entries(s.webhookUrls ?? {})) {
      if (url !== undefined && !/^https?:\/\//.test(url)) throw new TypeError(`atoneSandbox: shop ${index}: ${kind} webhook URL ${JSON.stringify(url)} is not http(s)`);
    }
    return { index, name: s.name ?? `Sandbox shop #${index}`, publicKey: s.publicKey, secret: s.secretKey, secretBytes: Buffer.from(s.secretKey, 'utf8'), webhookUrls: { ...s.webhookUrls } };
  });
  const log = opts.log;
  const creditLimit = opts.creditLimit ?? 100_000;
  const retry = {
    baseDelayMs: opts.webhookRetry?.baseDelayMs ?? 1_000,
    maxAttempts: opts.webhookRetry?.maxAttempts ?? 8,
    timeoutMs: opts.webhookRetry?.timeoutMs ?? 10_000,
  };
  if (!Number.isInteger(retry.maxAttempts) || retry.maxAttempts < 1) throw new TypeError('atoneSandbox: webhookRetry.maxAttempts must be a positive integer');

  return async (app) => {
    const prefix = app.prefix;
    const members = new Map<string, Member>();
    const tokens = new Map<string, { member: Member; shop: Shop }>();
    const sessions = new Map<string, ModalSession>();
    const transactions = new Map<string, Txn>();
    const deliveries: Delivery[] = [];
    const faults: Faults = { ...DEFAULT_FAULTS };
    const stop = new AbortController();
    app.addHook('onClose', async () => stop.abort());

    const userNos = new Set<string>();
    function addMember(m: AtoneSandboxMember): Member {
      let userNo = String(randomInt(1_000_000_000, 10_000_000_000));
      while (userNos.has(userNo)) userNo = String(randomInt(1_000_000_000, 10_000_000_000));
      userNos.add(userNo);
      const member: Member = { userNo, email: m.email.trim(), password: m.password, name: m.name, tokens: new Map(), recurring: new Set() };
      members.set(member.email.toLowerCase(), member);
      return member;
    }
    for (const m of [...BUILT_IN_MEMBERS, ...(opts.members ?? [])]) addMember(m);

    // ---- body parsing: atone's codes for bad JSON and wrong content types -----------------------

    if (app.hasContentTypeParser('application/json')) app.removeContentTypeParser('application/json');
    app.addContentTypeParser('application/json', { parseAs: 'string', bodyLimit: API_BODY_LIMIT }, (_req, body, done) => {
      const text = body as string;
      if (text.trim() === '') return done(null, undefined);
      try {
        done(null, JSON.parse(text));
      } catch (error) {
        done(invalid([detail('EATN0397', undefined, (error as Error).message)], 'the body is not valid JSON'), undefined);
      }
    });
    if (!app.hasContentTypeParser('application/x-www-form-urlencoded')) {
      app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: FORM_LIMIT }, (_req, body, done) => {
        done(null, Object.fromEntries(new URLSearchParams(body as string)));
      });
    }

    const isHtml = (url: string): boolean => url === `${prefix}/` || url === prefix || url.startsWith(`${prefix}/modal/`);

    app.setErrorHandler((error: FastifyError | AtoneError, request, reply) => {
      let e: AtoneError;
      if (error instanceof AtoneError) e = error;
      else if (error.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') e = invalid([detail('EATN0352')], 'send the body as application/json');
      else if (error.statusCode && error.statusCode >= 400 && error.statusCode < 500) e = invalid([detail('EATN0398', undefined, error.message)], error.message);
      else {
        log.error({ err: error }, 'atone sandbox error');
        e = new AtoneError(500, 'InternalServerError', 'internal error in the atone sandbox (see its log)', []);
      }
      if (isHtml(request.url)) return html(reply, page('atone sandbox', `<h1>エラー / Error</h1><p>${esc(e.message)}</p>`), e.status);
      return reply.status(e.status).header('cross-origin-resource-policy', 'cross-origin').send(e.body());
    });
    app.setNotFoundHandler((request, reply) => {
      const message = `no route ${request.method} ${request.url.split('?')[0]} in the atone sandbox`;
      if (isHtml(request.url)) return html(reply, page('Not found', `<p>ページが見つかりません / Not found.</p><p class="note">${esc(message)}</p>`), 404);
      return reply.status(404).send(new AtoneError(404, 'NotFound', message, []).body());
    });

    // ---- views ----------------------------------------------------------------------------------

    function view(t: Txn): AtoneTransaction {
      return {
        id: t.id,
        object: 'transaction',
        livemode: false,
        shop_name: t.shop.name,
        authentication_token: t.token,
        user_no: t.member.userNo,
        shop_transaction_no: t.shopTransactionNo,
        amount: t.amount,
        discount_amount: 0,
        authorization_result: t.result,
        authorization_result_ng_reason: t.ngReason,
        amount_refund_total: t.refundedAt ? t.amount : 0,
        registration_datetime: jst(t.createdAt),
        sales_settled: t.settledAt !== null,
        sales_settled_datetime: t.settledAt ? jst(t.settledAt) : null,
        transaction_options: [...t.options],
        related_transaction: t.replacedBy,
        updated_transactions: [...t.updates],
        description_trans: t.description,
        customer: { ...t.customer },
        dest_customers: t.destCustomers.map((d) => ({ ...d })),
        items: t.items.map((i) => ({ ...i })) as unknown as AtoneItem[],
        refunds: t.refundedAt ? { object: 'refund', amount_refund: t.amount, refund_datetime: jst(t.refundedAt), refund_reason: null, description_refund: null } : null,
      };
    }

    // ---- webhooks -------------------------------------------------------------------------------

    const chains = new Map<string, Promise<void>>();
    /** Runs tasks of one key strictly one after the other; the promise settles when this task is done. */
    function enqueue(key: string, task: () => Promise<void>): Promise<void> {
      const next = (chains.get(key) ?? Promise.resolve()).then(task).catch((err: unknown) => log.error({ err }, 'atone sandbox: webhook task failed'));
      chains.set(key, next);
      void next.then(() => {
        if (chains.get(key) === next) chains.delete(key);
      });
      return next;
    }

    async function pause(ms: number): Promise<boolean> {
      if (ms <= 0) return !stop.signal.aborted;
      try {
        await sleep(ms, undefined, { signal: stop.signal });
        return true;
      } catch {
        return false;
      }
    }

    async function post(url: string, body: Buffer, checksum: string): Promise<{ ok: boolean; outcome: string }> {
      const timeout = AbortSignal.timeout(retry.timeoutMs);
      try {
        const res = await fetch(url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'user-agent': 'atone-sandbox-webhook', 'np-confirmation-checksum': checksum },
          body,
          redirect: 'manual',
          signal: AbortSignal.any([timeout, stop.signal]),
        });
        await res.arrayBuffer().catch(() => undefined);
        return { ok: res.status >= 200 && res.status < 300, outcome: `HTTP ${res.status}` };
      } catch (error) {
        if (timeout.aborted) return { ok: false, outcome: `no answer within ${retry.timeoutMs} ms` };
        return { ok: false, outcome: `cannot connect: ${(error as Error).message}` };
      }
    }

    async function deliver(d: Delivery, body: Buffer, checksum: string): Promise<void> {
      for (let attempt = 1; attempt <= retry.maxAttempts; attempt++) {
        if (stop.signal.aborted) return;
        d.attempts = attempt;
        d.status = 'sending';
        const { ok, outcome } = await post(d.url, body, checksum);
        d.lastOutcome = outcome;
        if (ok) {
          d.status = 'delivered';
          return;
        }
        log.warn({ kind: d.kind, subject: d.subject, url: d.url, attempt, outcome }, 'atone sandbox: webhook not accepted');
        if (attempt === retry.maxAttempts) {
          d.status = 'failed';
          return;
        }
        d.status = 'retrying';
        if (!(await pause(Math.min(retry.baseDelayMs * 2 ** (attempt - 1), MAX_RETRY_DELAY_MS)))) return;
      }
    }

    /** Sends a webhook in the background; the promise settles when it was delivered or given up. */
    function sendWebhook(shop: Shop, kind: 'order' | 'member', subject: string, payload: unknown): Promise<void> {
      const url = shop.webhookUrls[kind];
      if (!url) return Promise.resolve();
      const d: Delivery = { kind, subject, url, status: 'scheduled', attempts: 0, lastOutcome: '', duplicate: false, at: new Date() };
      deliveries.push(d);
      if (deliveries.length > 1000) deliveries.splice(0, deliveries.length - 1000);
      if (faults.dropWebhooks) {
        d.status = 'dropped';
        return Promise.resolve();
      }
      const body = Buffer.from(JSON.stringify(payload), 'utf8');
      const checksum = computeAtoneWebhookChecksum(body, shop.secret, opts.webhookChecksum);
      const delayMs = faults.webhookDelayMs;
      const duplicate = faults.duplicateWebhooks;
      return enqueue(`${kind}:${subject}`, async () => {
        if (!(await pause(delayMs))) return;
        await deliver(d, body, checksum);
        if (duplicate) {
          const again: Delivery = { ...d, status: 'scheduled', attempts: 0, lastOutcome: '', duplicate: true, at: new Date() };
          deliveries.push(again);
          await deliver(again, body, checksum);
        }
      });
    }

    // ---- members, tokens, transactions ----------------------------------------------------------

    function tokenFor(member: Member, shop: Shop): string {
      let token = member.tokens.get(shop.index);
      if (!token) {
        token = `tk_${randomId(24)}`;
        member.tokens.set(shop.index, token);
        tokens.set(token, { member, shop });
      }
      return token;
    }

    /** Whether a new transaction may take this number (see the top). */
    function numberInUse(shop: Shop, no: string, except?: Txn): Txn | undefined {
      for (const t of transactions.values()) {
        if (t.shop === shop && t !== except && t.shopTransactionNo === no && t.result === 1 && !t.refundedAt && !t.replacedBy) return t;
      }
      return undefined;
    }

    function decide(member: Member, amount: number): { result: 1 | 2; ngReason: 1 | 9 | null } {
      if (faults.decline || member.email.toLowerCase().includes('decline')) return { result: 2, ngReason: 9 };
      if (amount > creditLimit) return { result: 2, ngReason: 1 };
      return { result: 1, ngReason: null };
    }

    function createTransaction(shop: Shop, member: Member, token: string, p: Record<string, unknown>, via: Txn['via'], updates: string[]): Txn {
      let id = `tr_${randomId(16)}`;
      while (transactions.has(id)) id = `tr_${randomId(16)}`;
      const amount = atoneInteger(p.amount) ?? 0;
      const verdict = decide(member, amount);
      const settled = verdict.result === 1 && (p.sales_settled === true || p.sales_settled === 'true');
      const now = new Date();
      const t: Txn = {
        id,
        shop,
        member,
        token,
        shopTransactionNo: String(p.shop_transaction_no),
        amount,
        items: Array.isArray(p.items) ? (p.items as Record<string, unknown>[]).map((i) => ({ ...i })) : [],
        customer: isObject(p.customer) ? { ...p.customer } : {},
        destCustomers: Array.isArray(p.dest_customers) ? (p.dest_customers as Record<string, unknown>[]).map((d) => ({ ...d })) : [],
        description: typeof p.description_trans === 'string' ? p.description_trans : null,
        options: Array.isArray(p.transaction_options) ? p.transaction_options.map((o) => atoneInteger(o) ?? 0) : [],
        result: verdict.result,
        ngReason: verdict.ngReason,
        settledAt: settled ? now : null,
        refundedAt: null,
        replacedBy: null,
        updates,
        via,
        createdAt: now,
      };
      transactions.set(t.id, t);
      log.info({ transaction: t.id, shop: shop.index, amount, result: t.result, via }, 'atone sandbox: authorization');
      return t;
    }

    // ---- the JS SDK -----------------------------------------------------------------------------

    app.get('/atone.js', async (_request, reply) =>
      reply
        .type('application/javascript; charset=utf-8')
        .header('cache-control', 'no-cache')
        .header('cross-origin-resource-policy', 'cross-origin')
        .send(atoneSdkScript(prefix)),
    );
    app.get('/modal.js', async (_request, reply) => reply.type('application/javascript; charset=utf-8').header('cache-control', 'no-cache').send(ATONE_MODAL_SCRIPT));

    const cors = (request: FastifyRequest, reply: FastifyReply): FastifyReply =>
      reply
        .header('access-control-allow-origin', typeof request.headers.origin === 'string' ? request.headers.origin : '*')
        .header('vary', 'origin')
        .header('cross-origin-resource-policy', 'cross-origin');

    app.options('/js/start', async (request, reply) =>
      cors(request, reply).header('access-control-allow-methods', 'POST').header('access-control-allow-headers', 'content-type').header('access-control-max-age', '600').status(204).send(),
    );

    // CORS headers go on before the body is parsed, so that refusals (bad JSON too) reach atone.js's error callback.
    app.post('/js/start', { bodyLimit: API_BODY_LIMIT, onRequest: async (request, reply) => void cors(request, reply) }, async (request) => {
      requireJson(request);
      const body = request.body;
      if (!isObject(body)) throw invalid([detail('EATN0398', undefined, 'send a JSON object { pub_key, payment, pre_token }')]);
      const shop = shops.find((s) => s.publicKey === body.pub_key);
      if (!shop) throw invalid([detail('EATN0304', 'pub_key', 'no shop has this public key')], 'unknown public key');

      const payment = body.payment;
      const problems = validateAtonePayment(payment, { requireChecksum: true });
      const errors = fromProblems(problems);
      if (isObject(payment) && !problems.some((p) => p.code === 'EATN0351') && !verifyAtoneChecksum(payment, shop.secret, opts.checksum)) {
        errors.push(detail('EATN0351', 'checksum', 'it does not match the payment object and this shop’s secret key'));
      }
      const preToken = body.pre_token;
      let preMember: Member | null = null;
      if (preToken !== undefined && preToken !== null && preToken !== '') {
        if (typeof preToken !== 'string' || !ATONE_TOKEN.test(preToken)) errors.push(detail('EATN0302', 'pre_token', 'a token looks like tk_ followed by letters and digits'));
        else {
          const known = tokens.get(preToken);
          if (known && known.shop === shop) preMember = known.member;
        }
      }
      if (isObject(payment) && typeof payment.shop_transaction_no === 'string') {
        const taken = numberInUse(shop, payment.shop_transaction_no);
        if (taken) errors.push(detail('EATN0398', 'shop_transaction_no', `already used by the authorized transaction ${taken.id}: use a new number for every payment attempt`));
      }
      if (errors.length) {
        log.info({ shop: shop.index, codes: errors.map((e) => e.code) }, 'atone sandbox: payment refused');
        throw invalid(errors, 'the payment object was refused');
      }

      const origin = originOf(request.headers.origin) ?? originOf(body.origin) ?? `${request.protocol}://${request.host}`;
      for (const [id, s] of sessions) if (s.expiresAt < Date.now()) sessions.delete(id);
      const session: ModalSession = {
        id: randomId(24),
        shop,
        origin,
        payment: payment as Record<string, unknown>,
        state: preMember ? 'confirm' : 'login',
        member: preMember,
        transaction: null,
        outbox: [],
        dropped: false,
        note: null,
        expiresAt: Date.now() + SESSION_LIFETIME_MS,
      };
      if (preMember) session.outbox.push({ atone: session.id, event: 'authenticated', authentication_token: tokenFor(preMember, shop), user_no: preMember.userNo });
      sessions.set(session.id, session);
      log.info({ session: session.id, shop: shop.index, amount: payment && (payment as Record<string, unknown>).amount, skipLogin: Boolean(preMember) }, 'atone sandbox: modal opened');
      return { session: session.id };
    });

    // ---- the modal ------------------------------------------------------------------------------

    const sessionOf = (id: string): ModalSession => {
      const s = sessions.get(id);
      if (!s || s.expiresAt < Date.now()) throw new AtoneError(404, 'NotFound', 'この画面は期限切れです / This atone window has expired. Start again from the shop.', []);
      return s;
    };
    const back = (reply: FastifyReply, s: ModalSession): FastifyReply => reply.redirect(`${prefix}/modal/${s.id}`, 303);

    function authenticate(s: ModalSession, member: Member): void {
      s.member = member;
      s.state = 'confirm';
      s.note = null;
      const token = tokenFor(member, s.shop);
      s.outbox.push({ atone: s.id, event: 'authenticated', authentication_token: token, user_no: member.userNo });
      void sendWebhook(s.shop, 'member', token, {
        object: 'authentication',
        authentication_token: token,
        user_no: member.userNo,
        shop_transaction_no: typeof s.payment.shop_transaction_no === 'string' ? s.payment.shop_transaction_no : null,
        authenticated_datetime: jst(new Date()),
      });
      log.info({ session: s.id, member: member.userNo }, 'atone sandbox: member authenticated');
    }

    app.get<{ Params: { id: string } }>('/modal/:id', async (request, reply) => {
      const s = sessionOf(request.params.id);
      const messages = s.outbox.splice(0);
      return modalPage(reply, s, messages);
    });

    app.post<{ Params: { id: string } }>('/modal/:id/login', { bodyLimit: FORM_LIMIT }, async (request, reply) => {
      const s = sessionOf(request.params.id);
      if (s.state !== 'login') return back(reply, s);
      const form = formOf(request.body);
      const member = members.get(form('email').toLowerCase());
      if (!member || !safeEqual(member.password, form('password'))) {
        s.note = 'メールアドレスかパスワードが違います / Wrong e-mail address or password.';
        return back(reply, s);
      }
      authenticate(s, member);
      return back(reply, s);
    });

    app.post<{ Params: { id: string } }>('/modal/:id/register', { bodyLimit: FORM_LIMIT }, async (request, reply) => {
      const s = sessionOf(request.params.id);
      if (s.state !== 'login') return back(reply, s);
      const form = formOf(request.body);
      const email = form('email');
      const name = form('name');
      const password = form('password');
      if (!z.email().safeParse(email).success) s.note = 'メールアドレスを確認してください / Enter a valid e-mail address.';
      else if (members.has(email.toLowerCase())) s.note = 'このメールアドレスは登録済みです。ログインしてください / This e-mail address is registered: log in.';
      else if (!name || name.length > 100) s.note = 'お名前を入力してください / Enter your name.';
      else if (password.length < 4) s.note = 'パスワードは 4 文字以上です / The password needs at least 4 characters.';
      else {
        authenticate(s, addMember({ email, name, password }));
        log.info({ email }, 'atone sandbox: member registered');
      }
      return back(reply, s);
    });

    app.post<{ Params: { id: string } }>('/modal/:id/switch', { bodyLimit: FORM_LIMIT }, async (request, reply) => {
      const s = sessionOf(request.params.id);
      if (s.state === 'confirm') {
        s.state = 'login';
        s.member = null;
        s.note = null;
      }
      return back(reply, s);
    });

    app.post<{ Params: { id: string } }>('/modal/:id/cancel', { bodyLimit: FORM_LIMIT }, async (request, reply) => {
      const s = sessionOf(request.params.id);
      if (s.state === 'login' || s.state === 'confirm') {
        s.state = 'cancelled';
        s.outbox.push({ atone: s.id, event: 'cancelled' });
      }
      return back(reply, s);
    });

    app.post<{ Params: { id: string } }>('/modal/:id/authorize', { bodyLimit: FORM_LIMIT }, async (request, reply) => {
      const s = sessionOf(request.params.id);
      if (s.state !== 'confirm' || !s.member) return back(reply, s);
      const member = s.member;
      const no = String(s.payment.shop_transaction_no);
      const taken = numberInUse(s.shop, no);
      s.state = 'done';
      if (taken) {
        // Another window of the same attempt was faster: atone refuses the second.
        const e = refused('EATN0398', 'shop_transaction_no', `already used by the authorized transaction ${taken.id}`);
        s.outbox.push({ atone: s.id, event: 'error', ...e.body() });
        s.note = e.message;
        return back(reply, s);
      }
      const t = createTransaction(s.shop, member, tokenFor(member, s.shop), s.payment, 'modal', []);
      s.transaction = t;
      if (t.result === 1 && t.options.includes(ATONE_OPTION_RECURRING)) member.recurring.add(s.shop.index);
      const response =
        t.result === 1 ? { id: t.id, authorization_result: 1, subtract_point: 0 } : { id: t.id, authorization_result: 2, authorization_result_ng_reason: t.ngReason, subtract_point: 0 };
      if (faults.dropBrowser) s.dropped = true;
      else s.outbox.push({ atone: s.id, event: t.result === 1 ? 'succeeded' : 'failed', response });
      const webhook = sendWebhook(s.shop, 'order', t.id, view(t));
      if (faults.webhookFirst) await webhook;
      return back(reply, s);
    });

    function modalPage(reply: FastifyReply, s: ModalSession, messages: Message[]): FastifyReply {
      const action = (name: string): string => esc(`${prefix}/modal/${s.id}/${name}`);
      const yen = (n: unknown): string => `¥${(atoneInteger(n) ?? 0).toLocaleString('ja-JP')}`;
      const amount = yen(s.payment.amount);
      const note = s.note ? `<p class="error" role="alert">${esc(s.note)}</p>` : '';
      const cancel = `<form id="atone-cancel" method="post" action="${action('cancel')}"><button type="submit" class="link">キャンセルしてショップに戻る / Cancel</button></form>`;
      let body: string;
      if (s.state === 'login') {
        body = `<h1>atone にログイン / Log in to atone</h1>
<p class="amount">${esc(s.shop.name)} — ${amount}</p>${note}
<form id="atone-login" method="post" action="${action('login')}">
<p><label>メールアドレス / E-mail <input type="email" name="email" autocomplete="username" required></label></p>
<p><label>パスワード / Password <input type="password" name="password" autocomplete="current-password" required></label></p>
<p><button type="submit">ログイン / Log in</button></p>
</form>
<details><summary>テスト会員 / Test members</summary><p><code>taro@example.jp</code> / <code>password</code>: 承認 / approved (≤ ¥${creditLimit.toLocaleString('ja-JP')})<br>
<code>decline@example.jp</code> / <code>password</code>: 否決 / declined<br>メールアドレスに "decline" を含む会員は否決されます / e-mails containing "decline" are declined.</p></details>
<h2>はじめての方 / New to atone</h2>
<form id="atone-register" method="post" action="${action('register')}">
<p><label>お名前 / Name <input name="name" autocomplete="name" required></label></p>
<p><label>メールアドレス / E-mail <input type="email" name="email" autocomplete="email" required></label></p>
<p><label>パスワード / Password <input type="password" name="password" autocomplete="new-password" minlength="4" required></label></p>
<p><button type="submit">登録して続ける / Register and continue</button></p>
</form>
${cancel}`;
      } else if (s.state === 'confirm' && s.member) {
        const items = Array.isArray(s.payment.items) ? (s.payment.items as Record<string, unknown>[]) : [];
        const rows = items.map((i) => `<tr><td>${esc(String(i.item_name ?? ''))}</td><td>${esc(String(i.item_count ?? ''))}</td><td>${yen(i.item_price)}</td></tr>`).join('');
        body = `<h1>お支払い内容の確認 / Confirm</h1>
<p>${esc(s.member.name)} さん (<code>${esc(s.member.email)}</code>)</p>${note}
<table><tr><th>商品 / Item</th><th>数 / Qty</th><th>単価 / Price</th></tr>${rows}</table>
<p class="amount">合計 / Total <strong>${amount}</strong> — 翌月にまとめてお支払い / pay next month</p>
<form id="atone-authorize" method="post" action="${action('authorize')}"><button type="submit">atone で支払う / Pay with atone</button></form>
<form id="atone-switch" method="post" action="${action('switch')}"><button type="submit" class="link">別のアカウントを使う / Use another account</button></form>
${cancel}`;
      } else if (s.state === 'done') {
        const t = s.transaction;
        const heading = !t
          ? 'お支払いを受け付けられませんでした / The payment could not be taken'
          : t.result === 1
            ? 'お支払いが承認されました / Payment approved'
            : `ご利用いただけません / Not approved (${t.ngReason === 1 ? '金額超過 / amount too high' : 'その他 / other'})`;
        const dropped = s.dropped ? '<p class="note">ブラウザが閉じられました (fault dropBrowser): ショップの画面には結果が届きません / The browser went away: the shop page gets no callback.</p>' : '';
        body = `<h1>${heading}</h1>${t ? `<p>取引 ID / Transaction <code>${esc(t.id)}</code></p>` : ''}${note}${dropped}`;
      } else {
        body = '<h1>キャンセルしました / Cancelled</h1>';
      }
      const data = JSON.stringify({ origin: s.origin, messages }).replace(/</g, '\\u003c');
      const framers = s.origin === 'null' ? "'self'" : `'self' ${s.origin}`;
      reply.raw.removeHeader('x-frame-options');
      return html(
        reply.header(
          'content-security-policy',
          `default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors ${framers}`,
        ),
        page('atone', `${body}\n<script type="application/json" id="atone-messages">${data}</script>\n<script src="${esc(`${prefix}/modal.js`)}"></script>`, true),
      );
    }

    // ---- REST API -------------------------------------------------------------------------------

    await app.register(
      async (api) => {
        const shopOf = new WeakMap<FastifyRequest, Shop>();

        api.addHook('onRequest', async (request) => {
          const match = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(request.headers.authorization ?? '');
          const unauthorized = (why: string): AtoneError => new AtoneError(401, 'Unauthorized', why, [detail('EATN0306', 'Authorization', why)]);
          if (!match) throw unauthorized('send Authorization: Basic base64(<shop secret key>)');
          const given = Buffer.from(match[1]!, 'base64');
          let found: Shop | undefined;
          let withColon = false;
          for (const shop of shops) {
            // Every shop is compared, so the time taken does not say which one nearly matched.
            if (shop.secretBytes.length === given.length && timingSafeEqual(shop.secretBytes, given) && !found) found = shop;
            const colon = Buffer.concat([shop.secretBytes, Buffer.from(':')]);
            if (colon.length === given.length && timingSafeEqual(colon, given)) withColon = true;
          }
          if (!found) throw unauthorized(withColon ? 'send the secret key alone, base64-encoded, with no ":" after it' : 'the secret key is not valid');
          shopOf.set(request, found);
        });

        api.addHook('preValidation', async (request) => requireJson(request));

        const shop = (request: FastifyRequest): Shop => {
          const s = shopOf.get(request);
          if (!s) throw new AtoneError(401, 'Unauthorized', 'not authenticated', [detail('EATN0306')]);
          return s;
        };
        const findTxn = (request: FastifyRequest, id: string): Txn => {
          const t = ATONE_TRANSACTION_ID.test(id) ? transactions.get(id) : undefined;
          if (!t || t.shop !== shop(request)) throw new AtoneError(404, 'NotFound', `no transaction ${id}`, [detail('EATN0398', 'id', `no transaction ${id} for this shop`)]);
          return t;
        };
        const override = (request: FastifyRequest, expected: string): void => {
          const h = request.headers['x-http-method-override'];
          const value = typeof h === 'string' ? h.trim().toUpperCase() : undefined;
          if (value !== expected) {
            throw refused('EATN0398', 'X-HTTP-Method-Override', `send ${expected} ${request.url.split('?')[0]}, or POST with X-HTTP-Method-Override: ${expected}`);
          }
        };
        const usable = (t: Txn, action: string): void => {
          if (t.result !== 1) throw refused('EATN0398', 'id', `cannot ${action} ${t.id}: its authorization was declined`);
          if (t.replacedBy) throw refused('EATN0398', 'id', `cannot ${action} ${t.id}: it was replaced by ${t.replacedBy} (取引更新)`);
          if (t.refundedAt) throw refused('EATN0398', 'id', `cannot ${action} ${t.id}: it was refunded`);
        };

        const reference = (request: FastifyRequest<{ Params: { id: string } }>): AtoneTransaction => view(findTxn(request, request.params.id));
        api.get<{ Params: { id: string } }>('/transactions/:id', async (request) => reference(request));
        api.post<{ Params: { id: string } }>('/transactions/:id', { bodyLimit: API_BODY_LIMIT }, async (request) => {
          override(request, 'GET');
          return reference(request);
        });

        const settle = (request: FastifyRequest<{ Params: { id: string } }>): AtoneTransaction => {
          const t = findTxn(request, request.params.id);
          usable(t, 'settle');
          if (t.settledAt) throw refused('EATN1201', 'id', `${t.id} is already settled (売上確定済み)`);
          t.settledAt = new Date();
          log.info({ transaction: t.id }, 'atone sandbox: settled');
          return view(t);
        };
        api.patch<{ Params: { id: string } }>('/transactions/:id/settle', { bodyLimit: API_BODY_LIMIT }, async (request) => settle(request));
        api.post<{ Params: { id: string } }>('/transactions/:id/settle', { bodyLimit: API_BODY_LIMIT }, async (request) => {
          override(request, 'PATCH');
          return settle(request);
        });

        const refund = (request: FastifyRequest<{ Params: { id: string } }>): AtoneTransaction => {
          const t = findTxn(request, request.params.id);
          const body = isObject(request.body) ? request.body : {};
          const partial = ['amount', 'amount_refund', 'items'].find((k) => body[k] !== undefined);
          if (partial) throw refused('EATN0398', partial, 'only full refunds are simulated (a partial refund is UNCONFIRMED at atone): send {} or {id}; to charge less, update the transaction (取引更新)');
          usable(t, 'refund');
          t.refundedAt = new Date();
          log.info({ transaction: t.id }, 'atone sandbox: refunded');
          return view(t);
        };
        api.patch<{ Params: { id: string } }>('/transactions/:id/refund', { bodyLimit: API_BODY_LIMIT }, async (request) => refund(request));
        api.post<{ Params: { id: string } }>('/transactions/:id/refund', { bodyLimit: API_BODY_LIMIT }, async (request) => {
          override(request, 'PATCH');
          return refund(request);
        });

        api.post('/transactions', { bodyLimit: API_BODY_LIMIT }, async (request) => {
          const h = request.headers['x-http-method-override'];
          if (h !== undefined && (typeof h !== 'string' || h.trim().toUpperCase() !== 'POST')) override(request, 'POST');
          const s = shop(request);
          const body = request.body;
          if (!isObject(body)) throw invalid([detail('EATN0398', undefined, 'send the transaction as a JSON object')]);
          const errors = fromProblems(validateAtonePayment(body, { requireChecksum: false }));
          const token = body.authentication_token;
          let holder: { member: Member; shop: Shop } | undefined;
          if (token === undefined || token === null || token === '') errors.push(detail('EATN0301', 'authentication_token'));
          else if (typeof token !== 'string' || !ATONE_TOKEN.test(token)) errors.push(detail('EATN0302', 'authentication_token'));
          else {
            holder = tokens.get(token);
            if (!holder || holder.shop !== s) {
              holder = undefined;
              errors.push(detail('EATN0303', 'authentication_token', 'no member of this shop has this token'));
            }
          }
          const updated = body.updated_transactions;
          let previous: Txn | undefined;
          if (updated !== undefined && updated !== null) {
            if (!Array.isArray(updated) || updated.length !== 1 || typeof updated[0] !== 'string') {
              errors.push(detail('EATN0398', 'updated_transactions', 'updated_transactions is an array with the one transaction id being replaced'));
            } else {
              previous = transactions.get(updated[0]);
              if (!previous || previous.shop !== s) errors.push(detail('EATN0398', 'updated_transactions', `no transaction ${updated[0]} for this shop`));
            }
          }
          if (errors.length) throw invalid(errors);
          const member = holder!.member;
          const no = String(body.shop_transaction_no);
          const options = Array.isArray(body.transaction_options) ? body.transaction_options.map((o) => atoneInteger(o)) : [];

          if (previous) {
            usable(previous, 'update');
            if (previous.member !== member) throw refused('EATN0303', 'authentication_token', `${previous.id} belongs to another member: send that member's token`);
            const taken = numberInUse(s, no, previous);
            if (taken) throw refused('EATN0398', 'shop_transaction_no', `already used by the authorized transaction ${taken.id}`);
          } else {
            if (!options.includes(ATONE_OPTION_RECURRING)) {
              throw refused('EATN0398', 'transaction_options', '取引登録 without updated_transactions is a recurring charge: send transaction_options [1]');
            }
            if (!member.recurring.has(s.index)) {
              throw refused('EATN0303', 'authentication_token', 'this member has not agreed to recurring charges at this shop: the first purchase in the modal needs transaction_options [1]');
            }
            const taken = numberInUse(s, no);
            if (taken) throw refused('EATN0398', 'shop_transaction_no', `already used by the authorized transaction ${taken.id}: use a new number for every charge`);
          }

          const t = createTransaction(s, member, String(token), body, 'api', previous ? [previous.id] : []);
          if (previous && t.result === 1) previous.replacedBy = t.id;
          if (t.result === 1 && t.options.includes(ATONE_OPTION_RECURRING)) member.recurring.add(s.index);
          void sendWebhook(s, 'order', t.id, view(t));
          return view(t);
        });
      },
      { prefix: '/v1' },
    );

    function requireJson(request: FastifyRequest): void {
      const type = request.headers['content-type'];
      const hasBody = request.body !== undefined || Number(request.headers['content-length'] ?? 0) > 0;
      if (hasBody && !(typeof type === 'string' && /^application\/json\b/i.test(type))) throw invalid([detail('EATN0352')], 'send the body as application/json');
    }

    // ---- test switches (no credentials) ---------------------------------------------------------

    app.get('/api/faults', async () => ({ ...faults }));
    app.post('/api/faults', { bodyLimit: FORM_LIMIT }, async (request) => {
      const parsed = faultsSchema.safeParse(request.body ?? {});
      if (!parsed.success) {
        throw invalid(parsed.error.issues.map((i) => detail('EATN0398', i.path.join('.') || undefined, i.message)), 'bad fault switches');
      }
      Object.assign(faults, parsed.data);
      log.info({ faults }, 'atone sandbox: faults set');
      return { ...faults };
    });
    app.get<{ Params: { id: string } }>('/api/transactions/:id/webhooks', async (request) => {
      const t = transactions.get(request.params.id);
      if (!t) throw new AtoneError(404, 'NotFound', `no transaction ${request.params.id}`, []);
      return {
        data: deliveries
          .filter((d) => d.kind === 'order' && d.subject === t.id)
          .map((d) => ({ url: d.url, status: d.status, attempts: d.attempts, lastOutcome: d.lastOutcome, duplicate: d.duplicate })),
      };
    });

    // ---- overview -------------------------------------------------------------------------------

    app.get('/', async (_request, reply) => {
      const shopRows = shops
        .map(
          (s) =>
            `<tr><td>#${s.index}</td><td>${esc(s.name)}</td><td><code>${esc(s.publicKey)}</code></td><td><code>${esc(s.secret.slice(0, 4))}…</code></td><td>${esc(s.webhookUrls.member ?? '—')}<br>${esc(s.webhookUrls.order ?? '—')}</td></tr>`,
        )
        .join('\n');
      const memberRows = [...members.values()]
        .slice(-50)
        .map((m) => `<tr><td><code>${esc(m.email)}</code></td><td>${esc(m.name)}</td><td>${esc(m.userNo)}</td><td>${m.tokens.size}</td><td>${m.recurring.size ? '定期 / recurring' : ''}</td></tr>`)
        .join('\n');
      const txnRows = [...transactions.values()]
        .reverse()
        .slice(0, 50)
        .map((t) => {
          const state = t.result !== 1 ? `NG (${t.ngReason})` : t.replacedBy ? `replaced by ${t.replacedBy}` : t.refundedAt ? 'refunded' : t.settledAt ? 'settled' : 'authorized';
          const hooks = deliveries
            .filter((d) => d.kind === 'order' && d.subject === t.id)
            .map((d) => `${d.status}${d.attempts > 1 ? ` ×${d.attempts}` : ''}${d.duplicate ? ' (dup)' : ''}`)
            .join(', ');
          return `<tr><td>${esc(jst(t.createdAt))}</td><td><code>${esc(t.id)}</code></td><td>#${t.shop.index}</td><td>${esc(t.shopTransactionNo)}</td><td>¥${t.amount.toLocaleString('ja-JP')}</td><td>${esc(t.via)}</td><td>${esc(state)}</td><td>${esc(hooks || '—')}</td></tr>`;
        })
        .join('\n');
      return html(
        reply,
        page(
          'atone sandbox',
          `<h1>atone sandbox</h1>
<p>atone (NP後払い) の JS SDK・API・Webhook の模擬環境です。/ A simulator of atone's JS SDK, REST API and webhooks.</p>
<ul>
<li>SDK: <code>${esc(prefix)}/atone.js</code></li>
<li>API: <code>${esc(prefix)}/v1</code> (Basic auth: base64 of the secret key, no ":")</li>
<li>与信上限 / Credit limit: ¥${creditLimit.toLocaleString('ja-JP')}</li>
<li>障害設定 / Faults: <code>${esc(JSON.stringify(faults))}</code> — <code>POST ${esc(prefix)}/api/faults</code></li>
</ul>
<h2>店舗 / Shops</h2>
<table><tr><th>#</th><th>名前 / Name</th><th>公開可能鍵 / Public key</th><th>秘密鍵 / Secret</th><th>Webhook (認証 / 決済)</th></tr>${shopRows}</table>
<h2>テスト会員 / Members</h2>
<p>パスワード / Password: <code>password</code> (built-in members)</p>
<table><tr><th>E-mail</th><th>名前 / Name</th><th>user_no</th><th>Tokens</th><th></th></tr>${memberRows}</table>
<h2>取引 / Transactions</h2>
<table><tr><th>登録 / At</th><th>ID</th><th>Shop</th><th>shop_transaction_no</th><th>金額</th><th>経路 / Via</th><th>状態 / State</th><th>決済Webhook</th></tr>
${txnRows || '<tr><td colspan="8">まだありません / None yet.</td></tr>'}</table>`,
        ),
      );
    });
  };
}

// ---- helpers --------------------------------------------------------------------------------------

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function originOf(v: unknown): string | undefined {
  if (typeof v !== 'string' || !v) return undefined;
  try {
    const url = new URL(v);
    return (url.protocol === 'http:' || url.protocol === 'https:') && url.origin === v.replace(/\/$/, '') ? url.origin : undefined;
  } catch {
    return undefined;
  }
}

function formOf(body: unknown): (name: string) => string {
  const fields = isObject(body) ? body : {};
  return (name) => {
    const v = fields[name];
    return typeof v === 'string' ? v.trim() : Array.isArray(v) && typeof v[0] === 'string' ? v[0].trim() : '';
  };
}

function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a, 'utf8');
  const y = Buffer.from(b, 'utf8');
  return x.length === y.length && timingSafeEqual(x, y);
}

function randomId(length: number): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  let out = '';
  for (const b of randomBytes(length)) out += alphabet[b % alphabet.length];
  return out;
}

/** "YYYY/MM/DD HH:mm" in Japan time, the one format seen in atone's answers. */
function jst(d: Date): string {
  const t = new Date(d.getTime() + 9 * 3600 * 1000).toISOString();
  return `${t.slice(0, 4)}/${t.slice(5, 7)}/${t.slice(8, 10)} ${t.slice(11, 16)}`;
}

function html(reply: FastifyReply, body: string, status = 200): FastifyReply {
  return reply.status(status).type('text/html; charset=utf-8').header('cache-control', 'no-store').send(body);
}

function page(title: string, body: string, modal = false): string {
  const width = modal ? '26rem' : '60rem';
  return `<!doctype html>
<html lang="ja"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>${esc(title)}</title>
<style>body{font-family:system-ui,sans-serif;max-width:${width};margin:1rem auto;padding:0 1rem}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left}.error{color:#a00}.note{color:#555;font-size:.9em}.amount{font-size:1.1em}button{padding:.4rem .9rem}button.link{background:none;border:0;color:#06c;text-decoration:underline;padding:0;cursor:pointer}input{width:100%;box-sizing:border-box}</style>
</head>
<body>
<p class="note">atone sandbox — テスト環境 / test environment, no real money</p>
${body}
</body></html>
`;
}
