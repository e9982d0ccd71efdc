import { encodeSjis, normaliseCommonOffenders, SjisError } from '../../gateways/common/sjis.js';
import { ChartFormatError, compactDate, type ChartFormat, type ChartSale } from './file.js';

/*
 * Oricon: a tab-separated file, one line per reporting date and JAN code, uploaded by SFTP.
 *
 * Default layout (`oricon.columns`, docs/decisions.md):
 *
 *   date      jan            title                quantity
 *   20261123  4988001234567  はじまりの歌（通常盤）   12
 *
 * No header line, LF line endings, UTF-8 unless `oricon.encoding=sjis`, as the described store's
 * export wrote it. TSV has no quoting, so a tab or line break inside a title becomes a space.
 */

const COLUMNS = {
  /** Reporting date, YYYYMMDD. */
  date: (s: ChartSale) => compactDate(s.date),
  /** JAN code, 8 or 13 digits as sold. */
  jan: (s: ChartSale) => s.jan,
  /** Product name. */
  title: (s: ChartSale) => s.title.replace(/[\t\r\n]+/g, ' '),
  /** Units shipped in the window. */
  quantity: (s: ChartSale) => String(s.quantity),
  /** `oricon.storeCode`, for accounts that report several stores in one place. */
  store: (_: ChartSale, o: OriconOptions) => o.storeCode ?? '',
} satisfies Record<string, (s: ChartSale, o: OriconOptions) => string>;

export type OriconColumn = keyof typeof COLUMNS;
export const ORICON_COLUMNS = Object.keys(COLUMNS) as OriconColumn[];
export const DEFAULT_ORICON_COLUMNS: readonly OriconColumn[] = ['date', 'jan', 'title', 'quantity'];

export interface OriconOptions {
  columns: readonly OriconColumn[];
  encoding: 'utf8' | 'sjis';
  storeCode?: string;
}

/** `date,jan,title,quantity` → columns; names every unknown or repeated one. */
export function parseOriconColumns(text: string): OriconColumn[] {
  const names = text.split(',').map((c) => c.trim());
  const bad = names.filter((n) => !(ORICON_COLUMNS as string[]).includes(n));
  if (bad.length > 0 || names.length === 0) {
    throw new ChartFormatError(`oricon.columns: unknown column(s) ${bad.map((b) => `"${b}"`).join(', ')} (known: ${ORICON_COLUMNS.join(', ')})`);
  }
  const seen = new Set<string>();
  for (const n of names) {
    if (seen.has(n)) throw new ChartFormatError(`oricon.columns: "${n}" appears twice`);
    seen.add(n);
  }
  return names as OriconColumn[];
}

export function oriconFormat(options: OriconOptions): ChartFormat {
  if (options.columns.includes('store') && !options.storeCode) {
    throw new ChartFormatError('oricon.columns has "store" but oricon.storeCode is not set');
  }
  const cells = options.columns.map((c) => COLUMNS[c]);
  return {
    lineEnding: '\n',
    records: (sale) => [cells.map((cell) => cell(sale, options)).join('\t')],
    encode(record, sale) {
      if (options.encoding === 'utf8') return Buffer.from(record, 'utf8');
      try {
        // Wave dash, minus and friends typed on a Mac have CP932 twins with the same glyph.
        return encodeSjis(normaliseCommonOffenders(record));
      } catch (error) {
        if (error instanceof SjisError) {
          throw new ChartFormatError(
            `Oricon file in Shift_JIS: the record of JAN ${sale.jan} (title ${JSON.stringify(sale.title)}) has ${JSON.stringify(error.char)}, ` +
              `which cannot be written (${error.reason}); rename the product or set oricon.encoding=utf8`,
          );
        }
        throw error;
      }
    },
  };
}
