/**
 * Reading an uploaded ZIP without trusting it: pure JavaScript (yauzl), never a shell, never a file
 * written to disk. Every entry is checked from the central directory before a single byte is
 * inflated — name, kind, sizes, compression ratio — and the whole archive is refused on the first
 * problem, with an error that names the limit and the entry. Entry data is then streamed, and the
 * bytes actually inflated are counted again: a header that lies about sizes cannot get past.
 */
import type { Readable } from 'node:stream';
import iconv from 'iconv-lite';
import yauzl, { type Entry, type ZipFile } from 'yauzl';
import { KessaiError } from '../../errors.js';

/** The limits an archive must keep, all named so the operator can be told which one was hit. */
export interface ZipLimits {
  /** Entries in the central directory, directories included. */
  maxEntries: number;
  /** Uncompressed bytes of one entry. */
  maxEntryBytes: number;
  /** Uncompressed bytes of all entries together. */
  maxTotalBytes: number;
  /** Uncompressed ÷ compressed size of one entry above which it is taken for a ZIP bomb… */
  maxRatio: number;
  /** …once it inflates to more than this many bytes (tiny files may compress absurdly well). */
  ratioFloorBytes: number;
}

const MiB = 1024 * 1024;

/**
 * Defaults sized for Chekicha exports: a million codes are about 80 MiB of CSV, which deflates 3–6×.
 * A bomb inflates hundreds to millions of times; 100× leaves real files a wide margin.
 */
export const DEFAULT_ZIP_LIMITS: ZipLimits = {
  maxEntries: 1000,
  maxEntryBytes: 512 * MiB,
  maxTotalBytes: 1024 * MiB,
  maxRatio: 100,
  ratioFloorBytes: 1 * MiB,
};

export type ZipProblem =
  | 'zip_unreadable'
  | 'zip_too_many_entries'
  | 'zip_entry_too_large'
  | 'zip_too_large'
  | 'zip_bomb'
  | 'zip_path_traversal'
  | 'zip_absolute_path'
  | 'zip_bad_name'
  | 'zip_symlink'
  | 'zip_encrypted'
  | 'zip_unsupported';

/** An archive refused as a whole; `code` says which rule, `entry` which entry broke it. */
export class ZipRefused extends KessaiError {
  override name = 'ZipRefused';
  constructor(
    code: ZipProblem,
    message: string,
    readonly entry?: string,
  ) {
    super(code, message, 422);
  }
}

export interface ArchiveEntry {
  /** The name as the archive's author saw it, decoded from UTF-8 or Shift_JIS. */
  name: string;
  /** How the name was stored: bit 11 of the general-purpose flag says UTF-8; otherwise CP932. */
  nameEncoding: 'utf8' | 'cp932';
  directory: boolean;
  compressedSize: number;
  uncompressedSize: number;
  entry: Entry;
}

export interface Archive {
  entries: ArchiveEntry[];
  /** Total declared uncompressed bytes of the file entries (for a progress bar). */
  totalBytes: number;
  /** An entry's inflated bytes, chunk by chunk; throws ZipRefused if it inflates past what was declared. */
  read(entry: ArchiveEntry): AsyncGenerator<Buffer>;
  close(): void;
}

const UTF8_FLAG = 0x800;
const ENCRYPTED_FLAG = 0x1;
const STORED = 0;
const DEFLATED = 8;
/** Unix mode bits live in the high half of the external attributes when the archive was made on Unix. */
const S_IFMT = 0o170000;
const S_IFLNK = 0o120000;
const MADE_ON_UNIX = 3;

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

function decodeName(raw: Buffer, flags: number): { name: string; nameEncoding: 'utf8' | 'cp932' } {
  if (flags & UTF8_FLAG) {
    try {
      return { name: strictUtf8.decode(raw), nameEncoding: 'utf8' };
    } catch {
      throw new ZipRefused('zip_bad_name', `an entry name is flagged UTF-8 but is not valid UTF-8 (bytes ${raw.toString('hex')})`);
    }
  }
  // Japanese Windows (Explorer, Lhaplus, older 7-Zip) writes CP932 names without the flag.
  return { name: iconv.decode(raw, 'cp932'), nameEncoding: 'cp932' };
}

/**
 * Refuses names that could escape a directory or mean something else on another system. Nothing is
 * extracted to disk here, but a name is shown to operators and written into reports, and a later
 * caller might extract: the archive is refused rather than the name "cleaned".
 */
function checkName(name: string): void {
  // Windows archivers sometimes write backslashes; they are separators to whoever extracts.
  const path = name.replace(/\\/g, '/');
  // eslint-disable-next-line no-control-regex -- control characters are exactly what is refused
  if (/[\u0000-\u001f\u007f\ufffd]/.test(path)) {
    throw new ZipRefused('zip_bad_name', `entry name ${JSON.stringify(name)} contains control characters or undecodable bytes`, name);
  }
  if (path.startsWith('/') || /^[a-zA-Z]:/.test(path) || path.startsWith('//')) {
    throw new ZipRefused('zip_absolute_path', `entry ${JSON.stringify(name)} has an absolute path`, name);
  }
  if (path.split('/').some((part) => part === '..')) {
    throw new ZipRefused('zip_path_traversal', `entry ${JSON.stringify(name)} climbs out of the archive with ".."`, name);
  }
}

function isSymlink(entry: Entry): boolean {
  return entry.versionMadeBy >> 8 === MADE_ON_UNIX && ((entry.externalFileAttributes >>> 16) & S_IFMT) === S_IFLNK;
}

const mib = (n: number) => `${(n / MiB).toFixed(n < 10 * MiB ? 1 : 0)} MiB`;

function checkEntry(e: ArchiveEntry, limits: ZipLimits): void {
  const { entry, name } = e;
  if (isSymlink(entry)) throw new ZipRefused('zip_symlink', `entry ${JSON.stringify(name)} is a symbolic link; links are not accepted`, name);
  if (e.directory) return;
  if (entry.generalPurposeBitFlag & ENCRYPTED_FLAG) throw new ZipRefused('zip_encrypted', `entry ${JSON.stringify(name)} is encrypted; upload it without a password`, name);
  if (entry.compressionMethod !== STORED && entry.compressionMethod !== DEFLATED) {
    throw new ZipRefused('zip_unsupported', `entry ${JSON.stringify(name)} uses compression method ${entry.compressionMethod}; only stored and deflate are read`, name);
  }
  if (e.uncompressedSize > limits.maxEntryBytes) {
    throw new ZipRefused('zip_entry_too_large', `entry ${JSON.stringify(name)} inflates to ${mib(e.uncompressedSize)}, over the limit of ${mib(limits.maxEntryBytes)} per file (maxEntryBytes)`, name);
  }
  if (e.uncompressedSize > limits.ratioFloorBytes && e.uncompressedSize > e.compressedSize * limits.maxRatio) {
    const ratio = e.compressedSize > 0 ? Math.round(e.uncompressedSize / e.compressedSize) : Infinity;
    throw new ZipRefused('zip_bomb', `entry ${JSON.stringify(name)} inflates ${ratio}× (${mib(e.uncompressedSize)}), over the compression ratio limit of ${limits.maxRatio}× (maxRatio): refused as a ZIP bomb`, name);
  }
}

function openZip(path: string): Promise<ZipFile> {
  return new Promise((resolve, reject) => {
    // decodeStrings:false: names come raw (we decode CP932 and validate ourselves) and yauzl does not
    // abort on a bad name before we can say which rule it broke. validateEntrySizes: the inflated
    // stream errors when it does not match the header.
    yauzl.open(path, { lazyEntries: true, decodeStrings: false, validateEntrySizes: true, autoClose: false }, (error, zip) => {
      if (error || !zip) reject(new ZipRefused('zip_unreadable', `not a readable ZIP file: ${error?.message ?? 'unknown error'}`));
      else resolve(zip);
    });
  });
}

function readEntries(zip: ZipFile, limits: ZipLimits): Promise<ArchiveEntry[]> {
  return new Promise((resolve, reject) => {
    const entries: ArchiveEntry[] = [];
    let total = 0;
    const fail = (error: unknown) => {
      zip.removeAllListeners('entry');
      reject(error instanceof KessaiError ? error : new ZipRefused('zip_unreadable', `not a readable ZIP file: ${error instanceof Error ? error.message : String(error)}`));
    };
    zip.on('error', fail);
    zip.on('end', () => resolve(entries));
    zip.on('entry', (entry: Entry) => {
      try {
        const raw = entry.fileName as unknown as Buffer; // decodeStrings:false gives the raw bytes
        const { name, nameEncoding } = decodeName(raw, entry.generalPurposeBitFlag);
        checkName(name);
        const e: ArchiveEntry = {
          name,
          nameEncoding,
          directory: name.endsWith('/') || name.endsWith('\\'),
          compressedSize: entry.compressedSize,
          uncompressedSize: entry.uncompressedSize,
          entry,
        };
        checkEntry(e, limits);
        if (!e.directory) total += e.uncompressedSize;
        if (total > limits.maxTotalBytes) {
          throw new ZipRefused('zip_too_large', `the archive inflates to more than ${mib(limits.maxTotalBytes)} in all (maxTotalBytes)`, name);
        }
        entries.push(e);
        zip.readEntry();
      } catch (error) {
        fail(error);
      }
    });
    zip.readEntry();
  });
}

/** Opens an archive and checks every entry against `limits`; throws ZipRefused on the first problem. */
export async function openArchive(path: string, limits: ZipLimits = DEFAULT_ZIP_LIMITS): Promise<Archive> {
  const zip = await openZip(path);
  try {
    // The count comes from the end-of-central-directory record: refused before reading any entry.
    if (zip.entryCount > limits.maxEntries) {
      throw new ZipRefused('zip_too_many_entries', `the archive has ${zip.entryCount} entries, over the limit of ${limits.maxEntries} (maxEntries)`);
    }
    const entries = await readEntries(zip, limits);
    const totalBytes = entries.reduce((sum, e) => sum + (e.directory ? 0 : e.uncompressedSize), 0);
    return {
      entries,
      totalBytes,
      async *read(e) {
        const stream = await new Promise<Readable>((resolve, reject) =>
          zip.openReadStream(e.entry, (error, s) => (error || !s ? reject(new ZipRefused('zip_unreadable', `entry ${JSON.stringify(e.name)}: ${error?.message ?? 'cannot be read'}`, e.name)) : resolve(s))),
        );
        // yauzl already errors past the declared size; counting here is the second lock.
        let seen = 0;
        try {
          for await (const chunk of stream as AsyncIterable<Buffer>) {
            seen += chunk.length;
            if (seen > e.uncompressedSize) throw new ZipRefused('zip_bomb', `entry ${JSON.stringify(e.name)} inflates past its declared ${e.uncompressedSize} bytes`, e.name);
            yield chunk;
          }
        } catch (error) {
          throw error instanceof KessaiError ? error : new ZipRefused('zip_unreadable', `entry ${JSON.stringify(e.name)} cannot be read: ${error instanceof Error ? error.message : String(error)}`, e.name);
        } finally {
          stream.destroy();
        }
      },
      close: () => zip.close(),
    };
  } catch (error) {
    zip.close();
    throw error;
  }
}
