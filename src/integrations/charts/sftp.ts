import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import ssh2 from 'ssh2';
import SftpClient from 'ssh2-sftp-client';
import { ChartUploadError, isUnreachable, reason, remotePath, temporaryName, type ChartUpload } from './transport.js';

/*
 * SFTP with SSH key authentication and a pinned host key (Oricon). The host key is checked against
 * the configured fingerprint during the handshake, before our key or any data is sent; a server that
 * shows another key is refused and both fingerprints are named, so an operator can compare them with
 * what the agency published. There is no "accept any key" setting.
 */

export interface SftpTarget {
  host: string;
  port: number;
  username: string;
  /** OpenSSH or PEM private key text. */
  privateKey: string;
  passphrase?: string;
  /** As `ssh-keygen -lf` prints it: `SHA256:` and unpadded base64. */
  hostKeyFingerprint: string;
  remoteDir: string;
  /** Handshake timeout (default 20 s). */
  timeoutMs?: number;
}

/** The OpenSSH SHA-256 fingerprint of a public host key blob (the raw key as sent in the handshake). */
export function sshFingerprint(keyBlob: Buffer): string {
  return `SHA256:${createHash('sha256').update(keyBlob).digest('base64').replace(/=+$/, '')}`;
}

export async function uploadSftp(target: SftpTarget, upload: ChartUpload): Promise<void> {
  const where = `sftp://${target.username}@${target.host}:${target.port}`;
  const parsed = ssh2.utils.parseKey(target.privateKey, target.passphrase);
  if (parsed instanceof Error) {
    throw new ChartUploadError('auth_failed', `${where}: the private key cannot be read (${parsed.message}); check oricon.privateKey and oricon.passphrase`);
  }
  const expected = target.hostKeyFingerprint.trim();
  let received: string | undefined;
  const client = new SftpClient('kessai-charts');
  const abort = () => void client.end().catch(() => undefined);
  upload.signal?.addEventListener('abort', abort, { once: true });
  try {
    try {
      await client.connect({
        host: target.host,
        port: target.port,
        username: target.username,
        privateKey: target.privateKey,
        ...(target.passphrase ? { passphrase: target.passphrase } : {}),
        readyTimeout: target.timeoutMs ?? 20_000,
        // Only what we authenticate with: no agent, no keyboard-interactive prompts.
        tryKeyboard: false,
        hostVerifier: (key: Buffer) => {
          received = sshFingerprint(key);
          return received === expected;
        },
      });
    } catch (error) {
      if (received !== undefined && received !== expected) {
        throw new ChartUploadError(
          'host_key_mismatch',
          `${where}: host key mismatch: expected ${expected || '(none pinned)'}, received ${received}. ` +
            'Refused before authenticating. If the agency changed its key, confirm the new fingerprint with them and set oricon.hostKeyFingerprint.',
        );
      }
      const text = reason(error);
      if (/authentication methods failed/i.test(text)) {
        throw new ChartUploadError('auth_failed', `${where}: the server refused user "${target.username}" with this key (${text})`, { cause: error });
      }
      if (isUnreachable(error) || /refused connection|Address lookup failed|timed out/i.test(text)) {
        throw new ChartUploadError('unreachable', `${where}: cannot connect: ${text}`, { cause: error });
      }
      throw new ChartUploadError('transfer_failed', `${where}: connection failed: ${text}`, { cause: error });
    }

    const partial = remotePath(target.remoteDir, temporaryName(upload.fileName));
    const final = remotePath(target.remoteDir, upload.fileName);
    try {
      await client.put(createReadStream(upload.localPath), partial);
      const stored = await client.stat(partial);
      if (stored.size !== upload.bytes) {
        throw new Error(`the server stored ${stored.size} bytes of ${upload.bytes} under ${partial}`);
      }
      // SFTP's RENAME refuses an existing target; only a forced resend finds one there.
      if (await client.exists(final)) await client.delete(final);
      await client.rename(partial, final);
    } catch (error) {
      throw new ChartUploadError('transfer_failed', `${where}: upload of ${final} failed: ${reason(error)}`, { cause: error });
    }
  } finally {
    upload.signal?.removeEventListener('abort', abort);
    await client.end().catch(() => undefined);
  }
}
