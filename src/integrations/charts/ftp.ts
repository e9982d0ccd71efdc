import { createReadStream } from 'node:fs';
import { Client, FTPError } from 'basic-ftp';
import { ChartUploadError, isUnreachable, reason, remotePath, temporaryName, type ChartUpload } from './transport.js';

/*
 * FTP with explicit TLS (AUTH TLS, then PBSZ 0 / PROT P so the data connections are encrypted too),
 * for Billboard Japan. The certificate is always verified, against the system's roots or the CA the
 * target names. Plain FTP — password and sales in clear, as the described store sent them — happens
 * only when the target says `insecure: true`, and the caller warns about it on every run.
 */

export interface FtpTarget {
  host: string;
  port: number;
  user: string;
  password: string;
  remoteDir: string;
  /** Plain FTP instead of FTPS; only when the agency cannot do TLS (billboard.allowInsecure). */
  insecure: boolean;
  /** PEM certificate(s) to trust instead of the system roots (a private CA). */
  ca?: string;
  /** Per command and connection (default 30 s). */
  timeoutMs?: number;
}

type Phase = 'connect' | 'tls' | 'login' | 'transfer';

export async function uploadFtp(target: FtpTarget, upload: ChartUpload): Promise<void> {
  const where = `${target.insecure ? 'ftp' : 'ftps'}://${target.user}@${target.host}:${target.port}`;
  const client = new Client(target.timeoutMs ?? 30_000);
  const abort = () => client.close();
  upload.signal?.addEventListener('abort', abort, { once: true });
  let phase: Phase = 'connect';
  const final = remotePath(target.remoteDir, upload.fileName);
  try {
    await client.connect(target.host, target.port);
    if (!target.insecure) {
      phase = 'tls';
      // `host` also names the server for certificate checks on the data connections.
      await client.useTLS({ host: target.host, ...(isIp(target.host) ? {} : { servername: target.host }), ...(target.ca ? { ca: target.ca } : {}) });
    }
    phase = 'login';
    await client.login(target.user, target.password);
    phase = 'transfer';
    await client.useDefaultSettings();
    const partial = remotePath(target.remoteDir, temporaryName(upload.fileName));
    await client.uploadFrom(createReadStream(upload.localPath), partial);
    // An empty day has nothing to cut short (and some servers answer SIZE of an empty file without a number).
    if (upload.bytes > 0) {
      const stored = await client.size(partial);
      if (stored !== upload.bytes) throw new Error(`the server stored ${stored} bytes of ${upload.bytes} under ${partial}`);
    }
    // Many servers refuse RNTO onto an existing file; only a forced resend finds one there.
    await client.remove(final, true);
    await client.rename(partial, final);
  } catch (error) {
    throw classify(error, phase, where, final, target);
  } finally {
    upload.signal?.removeEventListener('abort', abort);
    client.close();
  }
}

function classify(error: unknown, phase: Phase, where: string, final: string, target: FtpTarget): ChartUploadError {
  const text = reason(error);
  const ftpCode = error instanceof FTPError ? error.code : undefined;
  if (phase === 'connect' || isUnreachable(error)) {
    return new ChartUploadError('unreachable', `${where}: cannot connect: ${text}`, { cause: error });
  }
  if (phase === 'tls') {
    const hint = ftpCode !== undefined
      ? 'the server does not offer explicit TLS (AUTH TLS); ask the agency for FTPS, or set billboard.allowInsecure=true only if they cannot'
      : 'the TLS handshake or certificate check failed; if the agency uses a private CA, set billboard.caCert';
    return new ChartUploadError('tls_failed', `${where}: ${hint}: ${text}`, { cause: error });
  }
  if (phase === 'login') {
    if (ftpCode === 530 || ftpCode === 331 || ftpCode === 332) {
      return new ChartUploadError('auth_failed', `${where}: the server refused user "${target.user}" (${text})`, { cause: error });
    }
    return new ChartUploadError('transfer_failed', `${where}: login failed: ${text}`, { cause: error });
  }
  return new ChartUploadError('transfer_failed', `${where}: upload of ${final} failed: ${text}`, { cause: error });
}

function isIp(host: string): boolean {
  return /^[\d.]+$/.test(host) || host.includes(':');
}
