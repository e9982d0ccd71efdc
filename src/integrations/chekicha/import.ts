/**
 * Reading a Chekicha serial-code ZIP: its CSV files, decoded from Shift_JIS (CP932) or UTF-8 as
 * they stream out of the archive, each row checked against the product's spec. This is the part of
 * the import that knows Chekicha's format and nothing about our database: it hands rows and
 * rejections, chunk by chunk, to commerce/serial-codes.ts, which stores them all or nothing and
 * checks the one rule that needs the database (a code never imported twice).
 *
 * The rules (the seed's six; the numbers are used in reports and docs):
 *   1. artist name  must be the product's        4. the code must be unique within the file and
 *   2. group name   must be the product's           against the database (commerce/serial-codes.ts)
 *   3. code type    must be the product's        5. valid-from is a date
 *                                                 6. valid-until is a date, not before valid-from
 * plus the shape of the file itself: a header naming the six columns, a non-empty code without
 * spaces or control characters, well-formed CSV, bytes valid in the file's encoding.
 */
import iconv from 'iconv-lite';
import { KessaiError } from '../../errors.js';
import { CsvReader, CsvTooLong, type CsvRecord } from './csv.js';
import { DEFAULT_ZIP_LIMITS, openArchive, type ZipLimits } from './zip.js';

/** What every row must say, as set on the product (`serial_code_specs`). */
export interface SerialSpec {
  artistName: string;
  groupName: string;
  codeType: string;
}

export type CsvEncoding = 'sjis' | 'utf8';

/** A row whose code has a usable shape (other rules may still have rejected it: see the rejections). */
export interface CodeRow {
  file: number;
  line: number;
  code: string;
  artistName: string;
  groupName: string;
  codeType: string;
  validFrom: string;
  validUntil: string;
}

export interface Rejection {
  /** The CSV's name inside the ZIP. */
  file: string;
  /** 1-based line in that CSV (0: the file as a whole). */
  line: number;
  /** The header name of the column at fault, or '' for the whole row or file. */
  column: string;
  reason: string;
}

export interface CsvFile {
  index: number;
  name: string;
  encoding: 'cp932' | 'utf8';
  rows: number;
  /** The code column's name in this file's header (for reports). */
  codeColumn: string;
}

export type ImportEvent =
  | { type: 'file'; file: CsvFile }
  | { type: 'rows'; rows: CodeRow[]; rejections: Rejection[]; rowsRead: number; bytesDone: number; bytesTotal: number }
  | { type: 'skipped'; name: string; reason: string };

/** The columns of a Chekicha export, by the header names it is known to use (Japanese or English). */
export const COLUMNS = {
  code: ['シリアルコード', 'シリアル', 'コード', 'serial_code', 'serial', 'code'],
  artistName: ['アーティスト名', 'アーティスト', 'artist_name', 'artist'],
  groupName: ['グループ名', 'グループ', 'group_name', 'group'],
  codeType: ['コード種別', 'コードタイプ', '種別', 'code_type', 'type'],
  validFrom: ['有効期間開始', '有効開始日', '有効期限開始', 'valid_from'],
  validUntil: ['有効期間終了', '有効終了日', '有効期限', '有効期限終了', 'valid_until'],
} as const;
type Column = keyof typeof COLUMNS;
const COLUMN_KEYS = Object.keys(COLUMNS) as Column[];

/** The longest code accepted; Chekicha's are 16–20 characters. */
export const MAX_CODE_LENGTH = 128;

export interface ReadOptions {
  spec: SerialSpec;
  /** How to decode a CSV without a BOM (a UTF-8 BOM always wins). Chekicha exports Shift_JIS. */
  encoding?: CsvEncoding;
  limits?: ZipLimits;
  /** The longest CSV record (an unclosed quote would otherwise swallow the file). */
  maxRecordChars?: number;
}

/** Compared the way a person reads them: full- and half-width forms alike, outer spaces ignored. */
export const sameText = (a: string, b: string) => normal(a) === normal(b);
const normal = (s: string) => s.normalize('NFKC').trim();

/**
 * A calendar date as Chekicha writes it: 2026-04-01, 2026/4/1 or 20260401. Answers YYYY-MM-DD, or
 * undefined when it is not a real date (2026-02-30 is not).
 */
export function parseDate(input: string): string | undefined {
  const m = /^(\d{4})[-/](\d{1,2})[-/](\d{1,2})$/.exec(input) ?? /^(\d{4})(\d{2})(\d{2})$/.exec(input);
  if (!m) return undefined;
  const [y, mo, d] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const date = new Date(Date.UTC(y, mo - 1, d));
  if (date.getUTCFullYear() !== y || date.getUTCMonth() !== mo - 1 || date.getUTCDate() !== d) return undefined;
  return `${m[1]}-${String(mo).padStart(2, '0')}-${String(d).padStart(2, '0')}`;
}

/** The one thing that is wrong with a code's shape, or undefined. */
function codeProblem(code: string): string | undefined {
  if (code.length === 0) return 'is empty';
  if (code.length > MAX_CODE_LENGTH) return `is longer than ${MAX_CODE_LENGTH} characters`;
  // eslint-disable-next-line no-control-regex -- control characters are exactly what is refused
  if (/[\s\u0000-\u001f\u007f]/.test(code)) return 'contains spaces or control characters';
  return undefined;
}

/** Small caches: a file repeats the same artist, group, type and dates on every row. */
class Memo<V> {
  private map = new Map<string, V>();
  constructor(private readonly compute: (key: string) => V) {}
  get(key: string): V {
    let v = this.map.get(key);
    if (v === undefined && !this.map.has(key)) {
      if (this.map.size > 10_000) this.map.clear();
      v = this.compute(key);
      this.map.set(key, v);
    }
    return v as V;
  }
}

/** Reads one CSV's records into rows and rejections against the spec. */
class RowChecker {
  private columns: Record<Column, number> | undefined;
  private headerNames: string[] = [];
  private readonly artist: Memo<boolean>;
  private readonly group: Memo<boolean>;
  private readonly type: Memo<boolean>;
  private readonly date = new Memo<string | undefined>((s) => parseDate(s.trim()));
  rowsRead = 0;
  failed = false;

  constructor(
    private readonly file: CsvFile,
    private readonly spec: SerialSpec,
    private readonly encodingName: string,
  ) {
    this.artist = new Memo((s) => sameText(s, spec.artistName));
    this.group = new Memo((s) => sameText(s, spec.groupName));
    this.type = new Memo((s) => sameText(s, spec.codeType));
  }

  private reject(out: Rejection[], line: number, column: Column | '', reason: string): void {
    const name = column === '' ? '' : (this.columns ? this.headerNames[this.columns[column]] : undefined) ?? COLUMNS[column][0];
    out.push({ file: this.file.name, line, column: name, reason });
  }

  /** The header row: every column found by one of its names, or the file is rejected. */
  private header(record: CsvRecord, rejections: Rejection[]): void {
    const names = record.fields.map((f) => normal(f).toLowerCase());
    this.headerNames = record.fields.map((f) => f.trim());
    const found: Partial<Record<Column, number>> = {};
    for (const key of COLUMN_KEYS) {
      const at = names.findIndex((n) => (COLUMNS[key] as readonly string[]).includes(n));
      if (at >= 0) found[key] = at;
    }
    const missing = COLUMN_KEYS.filter((k) => found[k] === undefined);
    if (missing.length > 0) {
      this.failed = true;
      for (const k of missing) {
        rejections.push({ file: this.file.name, line: record.line, column: COLUMNS[k][0], reason: `the header has no ${COLUMNS[k][0]} (${k}) column; expected one of: ${COLUMNS[k].join(', ')}` });
      }
      return;
    }
    this.columns = found as Record<Column, number>;
    this.file.codeColumn = this.headerNames[this.columns.code] ?? COLUMNS.code[0];
  }

  check(records: CsvRecord[], rows: CodeRow[], rejections: Rejection[]): void {
    for (const record of records) {
      if (!this.columns) {
        if (this.failed) return;
        this.header(record, rejections);
        continue;
      }
      this.rowsRead++;
      const line = record.line;
      if (record.error) {
        this.reject(rejections, line, '', `malformed CSV: ${record.error}`);
        continue;
      }
      const f = record.fields;
      const c = this.columns;
      const code = (f[c.code] ?? '').trim();
      const artistName = f[c.artistName] ?? '';
      const groupName = f[c.groupName] ?? '';
      const codeType = f[c.codeType] ?? '';
      const from = f[c.validFrom] ?? '';
      const until = f[c.validUntil] ?? '';
      let ok = true;
      const bad = (column: Column | '', reason: string) => {
        ok = false;
        this.reject(rejections, line, column, reason);
      };
      if (f.some((v) => v.includes('\ufffd'))) {
        bad('', `contains bytes that are not valid ${this.encodingName} (is --encoding right?)`);
        continue;
      }
      const shape = codeProblem(code);
      if (shape) bad('code', `code ${shape}`);
      if (!this.artist.get(artistName)) bad('artistName', `rule 1: artist name "${artistName}" is not the product's "${this.spec.artistName}"`);
      if (!this.group.get(groupName)) bad('groupName', `rule 2: group name "${groupName}" is not the product's "${this.spec.groupName}"`);
      if (!this.type.get(codeType)) bad('codeType', `rule 3: code type "${codeType}" is not the product's "${this.spec.codeType}"`);
      const validFrom = this.date.get(from);
      const validUntil = this.date.get(until);
      if (!validFrom) bad('validFrom', `rule 5: valid-from "${from}" is not a date (YYYY-MM-DD, YYYY/MM/DD or YYYYMMDD)`);
      if (!validUntil) bad('validUntil', `rule 6: valid-until "${until}" is not a date (YYYY-MM-DD, YYYY/MM/DD or YYYYMMDD)`);
      else if (validFrom && validUntil < validFrom) bad('validUntil', `rule 6: valid-until ${validUntil} is before valid-from ${validFrom}`);
      if (!ok) this.failed = true;
      // A row rejected for another rule is still stored (the batch will not count) so that a
      // duplicate of its code is reported too.
      if (!shape) {
        rows.push({ file: this.file.index, line, code, artistName: artistName.trim(), groupName: groupName.trim(), codeType: codeType.trim(), validFrom: validFrom ?? '', validUntil: validUntil ?? '' });
      }
    }
  }

  finish(rejections: Rejection[]): void {
    if (!this.columns && !this.failed) {
      this.failed = true;
      rejections.push({ file: this.file.name, line: 0, column: '', reason: 'the file is empty: no header row' });
    }
  }
}

function isCsv(name: string): boolean {
  const base = name.split('/').pop() ?? '';
  return /\.csv$/i.test(base) && !base.startsWith('._') && !name.startsWith('__MACOSX/');
}

/**
 * Reads every CSV in the ZIP at `path`, in archive order, as events: each file as it starts, then
 * its rows and rejections chunk by chunk (memory holds one chunk, never the file). Throws ZipRefused
 * before reading any data when the archive breaks a limit.
 */
export async function* readChekichaZip(path: string, options: ReadOptions): AsyncGenerator<ImportEvent> {
  const archive = await openArchive(path, options.limits ?? DEFAULT_ZIP_LIMITS);
  try {
    const csvs = archive.entries.filter((e) => !e.directory && isCsv(e.name));
    if (csvs.length === 0) throw new KessaiError('no_csv', 'the archive holds no .csv file', 422);
    for (const e of archive.entries) {
      if (!e.directory && !isCsv(e.name)) yield { type: 'skipped', name: e.name, reason: 'not a .csv file' };
    }
    let bytesDone = 0;
    let rowsRead = 0;
    for (const [index, entry] of csvs.entries()) {
      let decoder: { write(b: Buffer): string; end(): string | undefined } | undefined;
      let head = Buffer.alloc(0);
      let file: CsvFile | undefined;
      let checker: RowChecker | undefined;
      let refused = false;
      const reader = new CsvReader(options.maxRecordChars);
      const start = (bytes: Buffer) => {
        let encoding: 'cp932' | 'utf8' = options.encoding === 'utf8' ? 'utf8' : 'cp932';
        let body = bytes;
        if (bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) {
          encoding = 'utf8';
          body = bytes.subarray(3);
        }
        file = { index, name: entry.name, encoding, rows: 0, codeColumn: COLUMNS.code[0] };
        checker = new RowChecker(file, options.spec, encoding === 'utf8' ? 'UTF-8' : 'Shift_JIS (CP932)');
        decoder = iconv.getDecoder(encoding);
        if ((bytes[0] === 0xff && bytes[1] === 0xfe) || (bytes[0] === 0xfe && bytes[1] === 0xff)) {
          refused = true;
          checker.failed = true;
        }
        return body;
      };
      const emit = (text: string, final: boolean): ImportEvent => {
        const rows: CodeRow[] = [];
        const rejections: Rejection[] = [];
        try {
          const records = reader.push(text);
          if (final) reader.end(records);
          checker!.check(records, rows, rejections);
          if (final) checker!.finish(rejections);
        } catch (error) {
          if (!(error instanceof CsvTooLong)) throw error;
          refused = true;
          checker!.failed = true;
          rejections.push({ file: entry.name, line: 0, column: '', reason: error.message });
        }
        const added = checker!.rowsRead - file!.rows;
        file!.rows = checker!.rowsRead;
        rowsRead += added;
        return { type: 'rows', rows, rejections, rowsRead, bytesDone, bytesTotal: archive.totalBytes };
      };
      for await (const chunk of archive.read(entry)) {
        bytesDone += chunk.length;
        if (refused) continue; // read to the end only so the progress bar stays true
        if (!file) {
          head = Buffer.concat([head, chunk]);
          if (head.length < 3) continue;
          const body = start(head);
          yield { type: 'file', file: file! };
          if (refused) {
            yield { type: 'rows', rows: [], rejections: [{ file: entry.name, line: 0, column: '', reason: 'the file is UTF-16; save it as Shift_JIS or UTF-8' }], rowsRead, bytesDone, bytesTotal: archive.totalBytes };
            continue;
          }
          yield emit(decoder!.write(body), false);
          continue;
        }
        yield emit(decoder!.write(chunk), false);
      }
      if (!file) {
        start(head);
        yield { type: 'file', file: file! };
        yield emit(decoder!.write(head) + (decoder!.end() ?? ''), true);
      } else if (!refused) {
        yield emit(decoder!.end() ?? '', true);
      }
    }
  } finally {
    archive.close();
  }
}
