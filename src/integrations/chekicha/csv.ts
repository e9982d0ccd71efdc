/**
 * A streaming CSV reader (RFC 4180: comma, double-quote quoting with "" inside, CRLF or LF) that
 * says on which line each record starts. Text goes in chunk by chunk; only the unfinished last
 * record is kept between chunks, and a record longer than `maxRecordChars` (an unclosed quote
 * swallowing the file) is an error rather than unbounded memory.
 *
 * Written here instead of using csv-parse because a million-row import spends most of its time
 * parsing: csv-parse took 5.8 s per million Chekicha rows (9.1 s with line numbers), this reader
 * about 1.4 s, because a line without quotes is a plain split (docs/decisions.md).
 */

export interface CsvRecord {
  /** 1-based line on which the record starts. */
  line: number;
  fields: string[];
  /** Set when the record is malformed; `fields` then holds what could be read. */
  error?: string;
}

export class CsvTooLong extends Error {
  override name = 'CsvTooLong';
}

export class CsvReader {
  private rest = '';
  /** Lines fully consumed so far. */
  private lines = 0;

  constructor(private readonly maxRecordChars = 64 * 1024) {}

  /** Records completed by this chunk; blank lines are skipped. */
  push(text: string, out: CsvRecord[] = []): CsvRecord[] {
    const buf = this.rest.length > 0 ? this.rest + text : text;
    let pos = 0;
    // Where the next quote is, looked up again only once passed: a scan per line would be quadratic.
    let quote = buf.indexOf('"');
    for (;;) {
      const nl = buf.indexOf('\n', pos);
      if (nl < 0) break;
      const end = nl > pos && buf.charCodeAt(nl - 1) === 13 ? nl - 1 : nl;
      if (quote >= 0 && quote < pos) quote = buf.indexOf('"', pos);
      if (quote < 0 || quote > end) {
        this.lines++;
        if (end > pos) out.push({ line: this.lines, fields: buf.slice(pos, end).split(',') });
        pos = nl + 1;
        continue;
      }
      const quoted = this.quoted(buf, pos, false);
      if (!quoted) break; // the record goes on in the next chunk
      out.push(quoted.record);
      pos = quoted.next;
    }
    this.rest = buf.slice(pos);
    if (this.rest.length > this.maxRecordChars) {
      throw new CsvTooLong(`line ${this.lines + 1}: a record is longer than ${this.maxRecordChars} characters (an unclosed quote?)`);
    }
    return out;
  }

  /** The last record when the text does not end with a newline. */
  end(out: CsvRecord[] = []): CsvRecord[] {
    const buf = this.rest;
    this.rest = '';
    if (buf.length === 0) return out;
    if (buf.indexOf('"') < 0) {
      this.lines++;
      out.push({ line: this.lines, fields: buf.replace(/\r$/, '').split(',') });
      return out;
    }
    const quoted = this.quoted(buf, 0, true);
    if (quoted) out.push(quoted.record);
    return out;
  }

  /**
   * Parses one record that contains quotes, starting at `pos`. Undefined when the text ends inside
   * it and more may come (`final` false).
   */
  private quoted(buf: string, pos: number, final: boolean): { record: CsvRecord; next: number } | undefined {
    const line = this.lines + 1;
    let newlines = 0;
    const fields: string[] = [];
    let error: string | undefined;
    let i = pos;
    for (;;) {
      // One field, at i.
      if (buf.charCodeAt(i) === 34) {
        let value = '';
        let from = i + 1;
        for (;;) {
          const q = buf.indexOf('"', from);
          if (q < 0) {
            if (!final) return undefined;
            value += buf.slice(from);
            newlines += countNewlines(buf, from, buf.length);
            error = 'a quoted field is not closed';
            fields.push(value);
            this.lines += newlines + 1;
            return { record: { line, fields, error }, next: buf.length };
          }
          newlines += countNewlines(buf, from, q);
          value += buf.slice(from, q);
          if (buf.charCodeAt(q + 1) === 34) {
            value += '"';
            from = q + 2;
            continue;
          }
          if (q + 1 >= buf.length && !final) return undefined;
          i = q + 1;
          break;
        }
        // After the closing quote: a separator, the end of the record, or stray text.
        const c = buf.charCodeAt(i);
        if (c !== 44 && c !== 10 && c !== 13 && i < buf.length) {
          const stop = nextStop(buf, i);
          value += buf.slice(i, stop);
          error ??= 'text after a closing quote';
          i = stop;
        }
        fields.push(value);
      } else {
        const stop = nextStop(buf, i);
        const value = buf.slice(i, stop);
        if (value.includes('"')) error ??= 'a quote inside an unquoted field';
        fields.push(value);
        i = stop;
      }
      const c = buf.charCodeAt(i);
      if (c === 44) {
        i++;
        continue;
      }
      if (i >= buf.length) {
        if (!final) return undefined;
        this.lines += newlines + 1;
        return { record: { line, fields, ...(error ? { error } : {}) }, next: i };
      }
      // CR LF, LF, or a lone CR before LF.
      if (c === 13 && buf.charCodeAt(i + 1) === 10) i += 2;
      else if (c === 13 && i + 1 >= buf.length && !final) return undefined;
      else i += 1;
      this.lines += newlines + 1;
      return { record: { line, fields, ...(error ? { error } : {}) }, next: i };
    }
  }
}

/** Index of the next comma or line end (CR or LF) from i, or the end of the text. */
function nextStop(buf: string, i: number): number {
  for (let j = i; j < buf.length; j++) {
    const c = buf.charCodeAt(j);
    if (c === 44 || c === 10 || c === 13) return j;
  }
  return buf.length;
}

function countNewlines(buf: string, from: number, to: number): number {
  let n = 0;
  for (let j = buf.indexOf('\n', from); j >= 0 && j < to; j = buf.indexOf('\n', j + 1)) n++;
  return n;
}
