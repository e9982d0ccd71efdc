import { z } from 'zod';
import { nowIso } from '../ids.js';
import { enqueue } from '../jobs/outbox.js';
import type { JobKind } from '../jobs/registry.js';
import { sweepInbox } from './inbox.js';
import { abandonSuperseded, checkPaid, expireOrder, readBack, runOperation, type Payments } from './service.js';

/*
 * The outbox job kinds of the payment pipeline. Each handler is idempotent: it may run again after
 * a crash, so gateway calls carry the job's own id as their idempotency key (mail: jobs/mail.ts).
 */

/** How long an attempt may sit unfinished before the gateway is asked, and for how long we keep asking. */
const RECONCILE_AFTER_MS = 15 * 60_000;
const RECONCILE_WITHIN_MS = 30 * 24 * 3600_000;
/** A paid attempt is compared with the gateway's record once, this long after it last changed. */
const CHECK_PAID_AFTER_MS = 60 * 60_000;

const attemptPayload = z.object({ attemptId: z.string(), amount: z.number().int().nonnegative().default(0) });

export function paymentJobKinds(p: Payments): JobKind[] {
  const operation = (kind: 'capture' | 'refund' | 'cancel'): JobKind => ({
    kind: `payment.${kind}`,
    async run(payload, job) {
      const { attemptId, amount } = attemptPayload.parse(payload);
      const op = kind === 'cancel' ? { kind } : { kind, amount };
      await runOperation(p, attemptId, op, job.jobId);
    },
  });
  return [
    {
      kind: 'order.expire',
      async run(payload) {
        const { orderId } = z.object({ orderId: z.string() }).parse(payload);
        await expireOrder(p, orderId);
      },
    },
    {
      kind: 'payment.readback',
      async run(payload) {
        await readBack(p, attemptPayload.parse(payload).attemptId);
      },
    },
    {
      kind: 'payment.abandon',
      async run(payload) {
        await abandonSuperseded(p, attemptPayload.parse(payload).attemptId);
      },
    },
    {
      kind: 'payment.check-paid',
      async run(payload) {
        await checkPaid(p, attemptPayload.parse(payload).attemptId);
      },
    },
    operation('capture'),
    operation('refund'),
    operation('cancel'),
    {
      // Rule 5: an attempt left in a non-final state is asked about, in case its notification was lost.
      kind: 'payments.reconcile',
      async run() {
        const now = Date.now();
        // Only an order's current attempt, while the order still waits for its money. An attempt
        // abandoned for another one, or of an order that expired, stays pending forever (asking
        // changes nothing) and would crowd out the ones that matter. What is left is bounded by the
        // orders open right now, so each is asked about every hour: no cap, nothing to starve behind.
        const stale = await p.ctx.db
          .selectFrom('payment_attempts')
          .innerJoin('orders', 'orders.id', 'payment_attempts.order_id')
          .select('payment_attempts.id')
          .whereRef('orders.current_attempt_id', '=', 'payment_attempts.id')
          .where('orders.state', 'in', ['pending_payment', 'awaiting_payment', 'authorized', 'on_hold'])
          .where('payment_attempts.state', 'in', ['pending', 'awaiting_payment', 'authorized'])
          .where('payment_attempts.updated_at', '<', nowIso(new Date(now - RECONCILE_AFTER_MS)))
          .where('payment_attempts.created_at', '>', nowIso(new Date(now - RECONCILE_WITHIN_MS)))
          .execute();
        const hour = nowIso().slice(0, 13);
        for (const a of stale) {
          await enqueue(p.ctx.db, { kind: 'payment.readback', payload: { attemptId: a.id }, dedupeKey: `readback:${a.id}:${hour}` });
        }
        // The other side of the four SBPS cases (paid/unpaid × delivered/undelivered): a payment we
        // hold as paid is checked once, a while after it settled (checkPaid): if the gateway does not
        // show it captured, the order goes on hold and an operator is alerted. No cap: what is
        // selected is what settled in one window, and a cap would leave the rest of a busy day unchecked.
        const settled = await p.ctx.db
          .selectFrom('payment_attempts')
          .select('id')
          .where('state', 'in', ['captured', 'partially_refunded'])
          .where('updated_at', '<', nowIso(new Date(now - CHECK_PAID_AFTER_MS)))
          .where('updated_at', '>', nowIso(new Date(now - CHECK_PAID_AFTER_MS - RECONCILE_AFTER_MS * 2)))
          .execute();
        for (const a of settled) {
          await enqueue(p.ctx.db, { kind: 'payment.check-paid', payload: { attemptId: a.id }, dedupeKey: `check-paid:${a.id}` });
        }
      },
    },
    {
      // A backstop for an order.expire job that was lost or dead-lettered: reservations must come back.
      kind: 'orders.expire-due',
      async run() {
        const due = await p.ctx.db
          .selectFrom('orders')
          .select('id')
          .where('state', '=', 'pending_payment')
          .where('expires_at', '<', nowIso())
          .limit(500)
          .execute();
        const hour = nowIso().slice(0, 13);
        for (const o of due) {
          await enqueue(p.ctx.db, { kind: 'order.expire', payload: { orderId: o.id }, dedupeKey: `order.expire:${o.id}:${hour}` });
        }
      },
    },
    {
      // The backstop of record, answer, apply: notifications recorded by a process that did not
      // live to apply them (or whose application failed) are applied here.
      kind: 'payments.apply-received',
      async run(payload) {
        const { olderThanSeconds } = z.object({ olderThanSeconds: z.number().nonnegative().default(30) }).parse(payload ?? {});
        const { failed } = await sweepInbox(p.ctx, olderThanSeconds * 1000);
        if (failed.length > 0) {
          // The job fails, so it is retried and, if it keeps failing, dead-lettered with an alert.
          throw new Error(`${failed.length} recorded notification(s) could not be applied and stay received (first: event ${failed[0]!.id}: ${failed[0]!.error})`);
        }
      },
    },
  ];
}
