import { posix } from 'node:path';

/*
 * How a finished chart file reaches an agency. Both transports follow one contract: the bytes go to
 * a temporary name in the target directory (hidden, with a suffix no agency collects), the size the
 * server reports is compared with the local file, and only then is it renamed to its final name. An
 * upload cut off at any point leaves at most the temporary file, never a short file under the name
 * the agency picks up; the next attempt overwrites the same temporary name.
 */

export interface ChartUpload {
  /** The complete local file. */
  localPath: string;
  /** Its size, checked against what the server stored before the rename. */
  bytes: number;
  /** Final name in the remote directory. */
  fileName: string;
  signal?: AbortSignal;
}

export type UploadFailure =
  /** The server's SSH host key is not the pinned one: possibly someone in between. */
  | 'host_key_mismatch'
  /** The server refused our user, key or password. */
  | 'auth_failed'
  /** TLS could not be set up or verified. */
  | 'tls_failed'
  /** No connection (refused, timed out, name not found). */
  | 'unreachable'
  /** Connected, but the transfer or the rename failed. */
  | 'transfer_failed';

/** Failures that another attempt cannot fix: a person must change the settings or ask the agency. */
export const PERMANENT_FAILURES: ReadonlySet<UploadFailure> = new Set(['host_key_mismatch', 'auth_failed', 'tls_failed']);

export class ChartUploadError extends Error {
  override name = 'ChartUploadError';
  constructor(
    readonly failure: UploadFailure,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  get permanent(): boolean {
    return PERMANENT_FAILURES.has(this.failure);
  }
}

/** Where the bytes wait until they are complete: `.oricon_20261123.tsv.part` beside the final name. */
export function temporaryName(fileName: string): string {
  return `.${fileName}.part`;
}

export function remotePath(dir: string, name: string): string {
  return dir === '' || dir === '.' ? name : posix.join(dir, name);
}

export function reason(error: unknown): string {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    return typeof code === 'string' && !error.message.includes(code) ? `${error.message} (${code})` : error.message;
  }
  return String(error);
}

/** Node's socket error codes that mean "could not reach the server at all". */
export function isUnreachable(error: unknown): boolean {
  const code = (error as { code?: unknown } | undefined)?.code;
  const text = error instanceof Error ? error.message : '';
  return (
    (typeof code === 'string' && ['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN'].includes(code)) ||
    /ECONNREFUSED|ETIMEDOUT|ENOTFOUND|EHOSTUNREACH|Timed out while waiting for handshake|Timeout \(control socket\)/.test(text)
  );
}
