import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';

/*
 * Gateway credentials at rest: AES-256-GCM under the master key. The sealed form is
 * `v1.<iv>.<tag>.<ciphertext>` (base64url parts); the version prefix lets a later key rotation tell
 * old blobs from new. The associated data binds a blob to its shop, so a blob copied to another
 * shop's row does not open.
 */

export class SecretError extends Error {
  override name = 'SecretError';
}

export function seal(masterKey: Buffer, plaintext: string, associatedData: string): string {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', masterKey, iv);
  cipher.setAAD(Buffer.from(associatedData, 'utf8'));
  const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
  return ['v1', iv, cipher.getAuthTag(), body].map((p) => (typeof p === 'string' ? p : p.toString('base64url'))).join('.');
}

export function open(masterKey: Buffer, sealed: string, associatedData: string): string {
  const [version, iv, tag, body] = sealed.split('.');
  if (version !== 'v1' || !iv || !tag || body === undefined) throw new SecretError('sealed secret has an unknown format');
  try {
    const decipher = createDecipheriv('aes-256-gcm', masterKey, Buffer.from(iv, 'base64url'));
    decipher.setAAD(Buffer.from(associatedData, 'utf8'));
    decipher.setAuthTag(Buffer.from(tag, 'base64url'));
    return Buffer.concat([decipher.update(Buffer.from(body, 'base64url')), decipher.final()]).toString('utf8');
  } catch {
    throw new SecretError('cannot decrypt shop secrets: KESSAI_MASTER_KEY differs from the key they were stored with');
  }
}

/** How a secret is shown back to a person: enough to recognise it, never enough to use it. */
export function mask(value: string): string {
  if (value.length <= 4) return '****';
  return `****${value.slice(-4)}`;
}
