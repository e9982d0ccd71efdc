import { z } from 'zod';
import { hitAll, RULES } from '../accounts/rate-limit.js';
import { email } from '../accounts/service.js';
import type { Context } from '../context.js';
import { insertRow } from '../db/insert.js';
import type { Inquiry } from '../db/schema.js';
import { parseInput } from '../errors.js';
import { newId, nowIso, readableNumber } from '../ids.js';
import type { Mail } from '../integrations/mail/index.js';
import { jstTime, MAIL_FOOTER, mailTemplates } from '../jobs/mail-template.js';
import { enqueue } from '../jobs/outbox.js';
import { getShopSettings } from './shops.js';

/*
 * The inquiry form (お問い合わせ). The inquiry is stored, and its two mails (the customer's
 * acknowledgement, the staff's copy) queued, in one transaction: the form answers from the stored
 * row, so an SMTP outage delays the mails and never loses an inquiry or fails the form.
 */

export const INQUIRY_CATEGORIES = {
  order: 'ご注文について / Orders',
  shipping: '配送について / Delivery',
  payment: 'お支払いについて / Payment',
  product: '商品について / Products',
  account: '会員登録・ログインについて / Your account',
  other: 'その他 / Other',
} as const;
export type InquiryCategory = keyof typeof INQUIRY_CATEGORIES;
const CATEGORIES = Object.keys(INQUIRY_CATEGORIES) as [InquiryCategory, ...InquiryCategory[]];

const required = '入力してください / required';
export const inquiryInput = z.object({
  name: z.string().trim().min(1, { error: required }).max(100, { error: '100文字以内で入力してください / must be at most 100 characters' }),
  email,
  category: z.enum(CATEGORIES, { error: '選択してください / choose one of the listed topics' }),
  // Optional: typed as printed on the order mail, perhaps in full-width characters.
  orderNumber: z
    .string()
    .transform((s) => s.normalize('NFKC').trim().toUpperCase())
    .pipe(z.string().max(40, { error: '40文字以内で入力してください / must be at most 40 characters' }).regex(/^[A-Z0-9-]*$/, { error: 'ご注文番号は英数字とハイフンです / an order number has letters, digits and hyphens, e.g. K260123-ABCD2345' }))
    .optional()
    .transform((s) => s || null),
  body: z.string().trim().min(1, { error: required }).max(5000, { error: '5000文字以内で入力してください / must be at most 5000 characters' }),
});

export type CreatedInquiry = { outcome: 'stored'; inquiry: Inquiry } | { outcome: 'rate_limited'; retryAt: Date };

export async function createInquiry(ctx: Context, shopId: string, input: unknown, ip: string): Promise<CreatedInquiry> {
  const i = parseInput(inquiryInput, input);
  const limited = await hitAll(ctx.db, [[RULES.inquiryIp, ip], [RULES.inquiryEmail, `${shopId}\0${i.email}`]]);
  if (limited.retryAt) return { outcome: 'rate_limited', retryAt: limited.retryAt };
  const now = new Date();
  const inquiry = await ctx.db.transaction().execute(async (tx) => {
    let reference = readableNumber('Q', now);
    while (await tx.selectFrom('inquiries').select('id').where('reference', '=', reference).executeTakeFirst()) reference = readableNumber('Q', now);
    const row: Inquiry = { id: newId('inq'), shop_id: shopId, reference, name: i.name, email: i.email, category: i.category, order_number: i.orderNumber, body: i.body, created_at: nowIso(now) };
    await insertRow(tx, 'inquiries', row);
    for (const template of ['inquiry_received', 'inquiry_staff'] as const) {
      await enqueue(tx, { kind: 'mail.send', payload: { template, inquiryId: row.id }, dedupeKey: `mail:${template}:${row.id}` });
    }
    return row;
  });
  return { outcome: 'stored', inquiry };
}

const categoryLabel = (c: string) => INQUIRY_CATEGORIES[c as InquiryCategory] ?? c;

async function inquiryMail(ctx: Context, p: { template: 'inquiry_received' | 'inquiry_staff'; inquiryId: string }, jobId: string): Promise<Mail> {
  const q = await ctx.db.selectFrom('inquiries').selectAll().where('id', '=', p.inquiryId).executeTakeFirstOrThrow();
  const shop = await ctx.db.selectFrom('shops').select('name').where('id', '=', q.shop_id).executeTakeFirstOrThrow();
  const id = `${p.template}.${q.reference}.${jobId}`;
  const facts =
    `受付番号 / Reference: ${q.reference}\n` +
    `受付日時 / Received: ${jstTime(q.created_at)}\n` +
    `種別 / Topic: ${categoryLabel(q.category)}\n` +
    (q.order_number ? `ご注文番号 / Order: ${q.order_number}\n` : '');
  if (p.template === 'inquiry_received') {
    // The customer's text is not quoted back: the form would otherwise mail anything to any address.
    return {
      to: q.email,
      id,
      subject: `【${shop.name}】お問い合わせを受け付けました / We received your inquiry (${q.reference})`,
      text:
        `${q.name} 様\n\nお問い合わせありがとうございます。内容を確認のうえ、担当者よりご連絡いたします。\n` +
        `Thank you for contacting us. We will reply as soon as we can.\n\n${facts}\n` +
        `お問い合わせの際は受付番号をお知らせください。/ Please quote the reference when you write to us.\n${MAIL_FOOTER}`,
    };
  }
  const settings = await getShopSettings(ctx, q.shop_id);
  return {
    to: String(settings['mail.staffAddress']),
    replyTo: q.email,
    id,
    subject: `【${shop.name}】お問い合わせ ${q.reference}（${categoryLabel(q.category).split(' / ')[0]}）${q.name} 様`,
    text:
      `お問い合わせがありました。返信するとお客様に届きます。/ A customer wrote through the inquiry form; replying reaches them.\n\n` +
      `${facts}お名前 / Name: ${q.name}\nメール / Email: ${q.email}\n\n${q.body}\n`,
  };
}

const byInquiry = z.object({ inquiryId: z.string() });
export const INQUIRY_MAILS = mailTemplates({ inquiry_received: byInquiry, inquiry_staff: byInquiry }, inquiryMail);
