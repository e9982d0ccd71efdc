import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { pipeline } from 'node:stream/promises';

/*
 * What the chart agencies receive, independent of who they are: one sale line per reporting date and
 * JAN code, turned into records by a format (Oricon's TSV, Billboard Japan's fixed-width ASCII) and
 * written as one file whose checksum and record count are known before anything is uploaded.
 */

/** Units of one JAN code shipped in one reporting window (commerce/chart-sales.ts decides which). */
export interface ChartSale {
  /** The reporting date, JST, YYYY-MM-DD. */
  date: string;
  /** JAN (GTIN-13 or GTIN-8) as sold. */
  jan: string;
  /** The product's name, for formats that carry a title. */
  title: string;
  quantity: number;
}

export interface ChartFormat {
  /** The file's records for one sale, without line endings (one sale may need several). */
  records(sale: ChartSale): string[];
  /** The bytes of one record and its line ending; throws naming the record when it cannot be written. */
  encode(record: string, sale: ChartSale): Buffer;
  lineEnding: '\n' | '\r\n';
}

export interface ChartFileInfo {
  path: string;
  /** SHA-256 of the bytes written, hex. */
  checksum: string;
  /** Records (lines) in the file: more than the sales when a format splits large quantities. */
  rows: number;
  bytes: number;
}

/** Bytes handed to the file at once: few writes, and memory that does not grow with the file. */
const CHUNK_BYTES = 64 * 1024;

/**
 * Renders sales into chunks of file bytes, hashing and counting on the way. Memory stays at one
 * chunk whatever the number of sales, as long as `sales` itself streams.
 */
export async function* renderChart(
  sales: AsyncIterable<ChartSale>,
  format: ChartFormat,
  totals: { rows: number; bytes: number; hash: ReturnType<typeof createHash> },
): AsyncGenerator<Buffer> {
  const eol = Buffer.from(format.lineEnding, 'latin1');
  let parts: Buffer[] = [];
  let size = 0;
  const flush = () => {
    const chunk = Buffer.concat(parts, size);
    parts = [];
    size = 0;
    totals.hash.update(chunk);
    totals.bytes += chunk.length;
    return chunk;
  };
  for await (const sale of sales) {
    for (const record of format.records(sale)) {
      const bytes = format.encode(record, sale);
      parts.push(bytes, eol);
      size += bytes.length + eol.length;
      totals.rows += 1;
    }
    if (size >= CHUNK_BYTES) yield flush();
  }
  if (size > 0) yield flush();
}

/**
 * Writes the file under a temporary name beside `path` and renames it once complete, so a reader
 * (or an upload started by someone else) never sees half a file.
 */
export async function writeChartFile(sales: AsyncIterable<ChartSale>, format: ChartFormat, path: string): Promise<ChartFileInfo> {
  await mkdir(dirname(path), { recursive: true });
  const partial = `${path}.part`;
  const totals = { rows: 0, bytes: 0, hash: createHash('sha256') };
  try {
    await pipeline(renderChart(sales, format, totals), createWriteStream(partial));
    await rename(partial, path);
  } catch (error) {
    await rm(partial, { force: true });
    throw error;
  }
  return { path, checksum: totals.hash.digest('hex'), rows: totals.rows, bytes: totals.bytes };
}

/** YYYY-MM-DD → YYYYMMDD, as both agencies write dates. */
export function compactDate(date: string): string {
  return date.replaceAll('-', '');
}

/** A file name from a pattern: `{date}` (YYYYMMDD) and the codes a target knows, e.g. `{store}`. */
export function fileNameOf(pattern: string, values: Record<string, string>): string {
  const name = pattern.replace(/\{(\w+)\}/g, (whole, key: string) => {
    const value = values[key];
    if (value === undefined) throw new ChartFormatError(`file name pattern "${pattern}": unknown placeholder ${whole} (known: ${Object.keys(values).map((k) => `{${k}}`).join(', ')})`);
    return value;
  });
  if (!/^[\w.-]{1,200}$/.test(name) || name.startsWith('.')) {
    throw new ChartFormatError(`file name "${name}" (from "${pattern}") must be 1–200 letters, digits, _, - or . and not start with a dot`);
  }
  return name;
}

/** A sale that the agency's format cannot carry, or a layout that makes no sense: a person must fix it. */
export class ChartFormatError extends Error {
  override name = 'ChartFormatError';
}
