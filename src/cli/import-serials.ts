/**
 * `kessai import-serials FILE.zip --shop S --product P`: the terminal face of the serial-code import
 * (commerce/serial-codes.ts). A progress bar on stderr when it is a terminal, silence otherwise
 * (cron, CI, a pipe); a summary on stdout; every rejection in the CSV report when asked for one.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { userInfo } from 'node:os';
import { basename } from 'node:path';
import cliProgress from 'cli-progress';
import { importSerialCodes, type ImportSummary } from '../commerce/serial-codes.js';
import type { Context } from '../context.js';
import { KessaiError } from '../errors.js';
import type { CsvEncoding, Rejection } from '../integrations/chekicha/import.js';

export interface ImportSerialsOptions {
  shop: string;
  product: string;
  encoding?: CsvEncoding;
  report?: string;
}

/** Rejections printed on the terminal; the report file has all of them. */
const SHOWN = 20;

const csvCell = (v: string | number) => {
  const s = String(v);
  // A leading =, +, - or @ makes a spreadsheet run the cell as a formula: the reasons quote file contents.
  const safe = /^[=+\-@\t\r]/.test(s) ? `'${s}` : s;
  return /[",\r\n]/.test(safe) ? `"${safe.replace(/"/g, '""')}"` : safe;
};

/**
 * The report as a UTF-8 CSV with a BOM (so Excel in Japan opens it as UTF-8), written as rejections
 * come: a million of them never sit in memory.
 */
class ReportFile {
  private readonly fd: number;
  private buffer = '';
  constructor(path: string) {
    this.fd = openSync(path, 'w');
    this.buffer = '\ufefffile,line,column,reason\r\n';
  }
  add(r: Rejection): void {
    this.buffer += `${[r.file, r.line, r.column, r.reason].map(csvCell).join(',')}\r\n`;
    if (this.buffer.length > 64 * 1024) this.flush();
  }
  private flush(): void {
    writeSync(this.fd, this.buffer);
    this.buffer = '';
  }
  close(): void {
    this.flush();
    closeSync(this.fd);
  }
}

function who(): string {
  try {
    return `cli:${userInfo().username}`;
  } catch {
    return 'cli';
  }
}

/** Runs the import; answers the process exit code (0 imported, 2 nothing imported). */
export async function importSerials(ctx: Context, file: string, opts: ImportSerialsOptions): Promise<number> {
  const out = (line: string) => process.stdout.write(`${line}\n`);
  const report = opts.report ? new ReportFile(opts.report) : undefined;
  const bar = process.stderr.isTTY
    ? new cliProgress.SingleBar({ stream: process.stderr, format: 'importing {bar} {percentage}% | {rows} rows | {eta_formatted} left', hideCursor: true, clearOnComplete: true }, cliProgress.Presets.shades_classic)
    : undefined;
  let summary: ImportSummary;
  try {
    bar?.start(1, 0, { rows: 0 });
    summary = await importSerialCodes(ctx, {
      shop: opts.shop,
      product: opts.product,
      path: file,
      encoding: opts.encoding,
      importedBy: who(),
      onProgress: (p) => {
        bar?.setTotal(Math.max(1, p.bytesTotal));
        bar?.update(p.bytesDone, { rows: p.rowsRead });
      },
      onRejection: (r) => report?.add(r),
    });
  } catch (error) {
    bar?.stop();
    // A refused archive is a result too: the report says why, like any rejection.
    if (error instanceof KessaiError && (error.code.startsWith('zip_') || error.code === 'no_csv')) {
      report?.add({ file: basename(file), line: 0, column: '', reason: error.message });
      report?.close();
      out(`${basename(file)}: refused, nothing imported`);
      out(`  ${error.message}`);
      if (opts.report) out(`report: ${opts.report}`);
      return 2;
    }
    report?.close();
    throw error;
  }
  bar?.stop();
  report?.close();

  const s = summary;
  out(`${s.fileName} (sha256 ${s.checksum.slice(0, 16)}…): ${s.state === 'imported' ? 'imported' : 'rejected, nothing imported'}`);
  for (const f of s.files) out(`  ${f.name}  ${f.encoding === 'cp932' ? 'Shift_JIS' : 'UTF-8'}  ${f.rows} rows`);
  for (const k of s.skipped) out(`  ${k.name}  skipped: ${k.reason}`);
  out(`rows read ${s.rowsRead}, imported ${s.imported}, rejected ${s.rowsRejected}${s.rejectionCount > s.rowsRejected ? ` (${s.rejectionCount} problems)` : ''}`);
  for (const r of s.rejections.slice(0, SHOWN)) out(`  ${r.file}:${r.line}${r.column ? ` [${r.column}]` : ''} ${r.reason}`);
  if (s.rejectionCount > SHOWN) out(`  … and ${s.rejectionCount - SHOWN} more${opts.report ? ' in the report' : ' (--report FILE lists them all)'}`);
  if (opts.report) out(`report: ${opts.report}`);
  out(`batch ${s.batchId}`);
  return s.state === 'imported' ? 0 : 2;
}
