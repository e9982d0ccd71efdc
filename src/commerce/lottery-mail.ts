import { z } from 'zod';
import type { Context } from '../context.js';
import type { Mail } from '../integrations/mail/index.js';
import { jstTime, MAIL_FOOTER, mailTemplates, type PayloadOf } from '../jobs/mail-template.js';

/*
 * Lottery (抽選販売) mails: application received, application changed, won. There are no lottery
 * tables yet, so each payload carries every fact the mail shows; only the shop's name is read when
 * the mail is sent. `applicationId` keys the Message-ID.
 */

const application = {
  shopId: z.string(),
  applicationId: z.string(),
  email: z.email(),
  name: z.string().min(1),
  lotteryName: z.string().min(1),
  productName: z.string().min(1),
  quantity: z.number().int().positive(),
  /** When the results are announced. */
  resultAt: z.iso.datetime({ offset: true }),
};

const schemas = {
  lottery_applied: z.object(application),
  lottery_updated: z.object(application),
  lottery_won: z.object({
    ...application,
    /** Tax-included yen to pay for what was won. */
    amount: z.number().int().nonnegative(),
    /** The winner must pay (or the win lapses) by then. */
    paymentDeadline: z.iso.datetime({ offset: true }),
    /** Where the winner pays. */
    payUrl: z.url({ protocol: /^https?$/ }),
  }),
};
export type LotteryMailPayload = PayloadOf<typeof schemas>;

async function lotteryMail(ctx: Context, p: LotteryMailPayload, jobId: string): Promise<Mail> {
  const shop = await ctx.db.selectFrom('shops').select('name').where('id', '=', p.shopId).executeTakeFirstOrThrow();
  const entry =
    `抽選 / Lottery: ${p.lotteryName}\n` +
    `  ${p.productName} × ${p.quantity}\n` +
    `  お申し込み番号 / Application: ${p.applicationId}`;
  const results = `抽選結果のお知らせ / Results: ${jstTime(p.resultAt)} 以降にメールでお知らせします。/ We will mail you from then.`;
  const base = { to: p.email, id: `${p.template}.${p.applicationId}.${jobId}` };
  switch (p.template) {
    case 'lottery_applied':
      return {
        ...base,
        subject: `【${shop.name}】抽選お申し込み受付 / Lottery application received (${p.lotteryName})`,
        text: `${p.name} 様\n\n抽選へのお申し込みを受け付けました。/ We have received your lottery application.\n\n${entry}\n\n${results}\n${MAIL_FOOTER}`,
      };
    case 'lottery_updated':
      return {
        ...base,
        subject: `【${shop.name}】抽選お申し込み内容の変更 / Lottery application changed (${p.lotteryName})`,
        text: `${p.name} 様\n\n抽選のお申し込み内容を変更しました。現在の内容は次のとおりです。/ Your lottery application was changed; it now reads:\n\n${entry}\n\n${results}\n\nお心当たりがない場合は、ショップにご連絡ください。/ If this was not you, contact the shop.\n${MAIL_FOOTER}`,
      };
    case 'lottery_won':
      return {
        ...base,
        subject: `【${shop.name}】抽選結果：当選のお知らせ / You won the lottery (${p.lotteryName})`,
        text:
          `${p.name} 様\n\n厳正なる抽選の結果、ご当選されました。おめでとうございます。/ Congratulations: you won the lottery.\n\n${entry}\n` +
          `  お支払い金額 / Amount: ${p.amount.toLocaleString('ja-JP')}円（税込）\n\n` +
          `お支払い期限 / Pay by: ${jstTime(p.paymentDeadline)}\n${p.payUrl}\n\n` +
          `期限までにお支払いがない場合、当選は無効になります。/ The win lapses if it is not paid by then.\n${MAIL_FOOTER}`,
      };
  }
}

export const LOTTERY_MAILS = mailTemplates(schemas, lotteryMail);
