import { ChartFormatError, compactDate, type ChartFormat, type ChartSale } from './file.js';

/*
 * Billboard Japan: fixed-width ASCII records ending in CRLF, uploaded by FTPS.
 *
 * The layout is this one table; `billboard.layout` reorders, resizes or adds fillers
 * (`name:width[:zero|space]`, comma-separated). Default, 36 bytes + CRLF per record:
 *
 *   field     width  padding             example
 *   chain         4  zeros on the left   9650
 *   store         6  zeros on the left   557001
 *   date          8  zeros on the left   20261123   (reporting date, YYYYMMDD)
 *   jan          13  zeros on the left   4988001234567 (a JAN-8 becomes its 13-digit form 00000…)
 *   quantity      5  zeros on the left   00012
 *
 * A quantity larger than the quantity field holds (99,999 with 5 digits) is split across records of
 * the same chain, store, date and JAN: 250,000 → 99999, 99999, 50002. A value wider than its field
 * is refused, never cut: a shortened JAN counts sales for another record.
 */

export const BILLBOARD_FIELDS = ['chain', 'store', 'date', 'jan', 'quantity', 'filler'] as const;
export type BillboardField = (typeof BILLBOARD_FIELDS)[number];

export interface LayoutField {
  field: BillboardField;
  width: number;
  /** zero: right-aligned, zeros on the left (numbers); space: left-aligned, spaces on the right. */
  pad: 'zero' | 'space';
}

export const DEFAULT_BILLBOARD_LAYOUT: readonly LayoutField[] = [
  { field: 'chain', width: 4, pad: 'zero' },
  { field: 'store', width: 6, pad: 'zero' },
  { field: 'date', width: 8, pad: 'zero' },
  { field: 'jan', width: 13, pad: 'zero' },
  { field: 'quantity', width: 5, pad: 'zero' },
];

export const DEFAULT_CHAIN_CODE = '9650';
export const DEFAULT_STORE_CODE = '557001';

export function layoutToText(layout: readonly LayoutField[]): string {
  return layout.map((f) => `${f.field}:${f.width}${f.pad === 'zero' ? '' : ':space'}`).join(',');
}

/** `chain:4,store:6,…` → layout; every field once except fillers, quantity and jan required. */
export function parseBillboardLayout(text: string): LayoutField[] {
  const layout = text.split(',').map((part): LayoutField => {
    const [field, width, pad = field === 'filler' ? 'space' : 'zero', ...rest] = part.trim().split(':');
    if (!(BILLBOARD_FIELDS as readonly string[]).includes(field ?? '')) {
      throw new ChartFormatError(`billboard.layout: unknown field "${field}" in "${part}" (known: ${BILLBOARD_FIELDS.join(', ')})`);
    }
    if (!/^\d{1,3}$/.test(width ?? '') || Number(width) < 1) throw new ChartFormatError(`billboard.layout: "${part}" needs a width of 1–999`);
    if ((pad !== 'zero' && pad !== 'space') || rest.length > 0) throw new ChartFormatError(`billboard.layout: "${part}": padding must be zero or space`);
    return { field: field as BillboardField, width: Number(width), pad };
  });
  for (const field of BILLBOARD_FIELDS) {
    const n = layout.filter((f) => f.field === field).length;
    if (field !== 'filler' && n > 1) throw new ChartFormatError(`billboard.layout: "${field}" appears ${n} times`);
  }
  for (const required of ['jan', 'quantity'] as const) {
    if (!layout.some((f) => f.field === required)) throw new ChartFormatError(`billboard.layout: "${required}" is missing`);
  }
  const quantity = layout.find((f) => f.field === 'quantity')!;
  if (quantity.pad !== 'zero' || quantity.width > 15) throw new ChartFormatError('billboard.layout: quantity must be zero-padded and at most 15 wide');
  return layout;
}

export interface BillboardOptions {
  chainCode: string;
  storeCode: string;
  layout: readonly LayoutField[];
}

const PRINTABLE_ASCII = /^[\x20-\x7e]*$/;

export function billboardFormat(options: BillboardOptions): ChartFormat {
  const { layout } = options;
  const quantityField = layout.find((f) => f.field === 'quantity')!;
  /** The most one record can carry: 99,999 for five digits. */
  const maxPerRecord = 10 ** quantityField.width - 1;

  const value = (field: BillboardField, sale: ChartSale, quantity: number): string => {
    switch (field) {
      case 'chain':
        return options.chainCode;
      case 'store':
        return options.storeCode;
      case 'date':
        return compactDate(sale.date);
      case 'jan':
        return sale.jan;
      case 'quantity':
        return String(quantity);
      case 'filler':
        return '';
    }
  };

  const record = (sale: ChartSale, quantity: number): string => {
    let out = '';
    for (const f of layout) {
      const v = value(f.field, sale, quantity);
      if (v.length > f.width) {
        throw new ChartFormatError(`Billboard record for JAN ${sale.jan}: ${f.field} "${v}" is ${v.length} characters, wider than its field (${f.width})`);
      }
      out += f.pad === 'zero' ? v.padStart(f.width, '0') : v.padEnd(f.width, ' ');
    }
    return out;
  };

  return {
    lineEnding: '\r\n',
    records(sale) {
      if (!Number.isSafeInteger(sale.quantity) || sale.quantity <= 0) {
        throw new ChartFormatError(`Billboard record for JAN ${sale.jan}: quantity ${sale.quantity} is not a positive whole number`);
      }
      const out: string[] = [];
      let left = sale.quantity;
      while (left > maxPerRecord) {
        out.push(record(sale, maxPerRecord));
        left -= maxPerRecord;
      }
      out.push(record(sale, left));
      return out;
    },
    encode(rec, sale) {
      if (!PRINTABLE_ASCII.test(rec)) throw new ChartFormatError(`Billboard record for JAN ${sale.jan} is not printable ASCII: ${JSON.stringify(rec)}`);
      return Buffer.from(rec, 'latin1');
    },
  };
}
