import { randomBytes } from 'node:crypto';

const ALPHABET = '0123456789abcdefghjkmnpqrstvwxyz'; // Crockford base32, lower case

function base32(bytes: Uint8Array): string {
  let out = '';
  let bits = 0;
  let value = 0;
  for (const byte of bytes) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += ALPHABET[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += ALPHABET[(value << (5 - bits)) & 31];
  return out;
}

/**
 * A time-ordered, unguessable identifier such as `ord_01jd5x…`: 48 bits of milliseconds (so ids of
 * one kind sort by creation) followed by 80 random bits.
 */
export function newId(prefix: string): string {
  const time = Buffer.alloc(6);
  time.writeUIntBE(Date.now(), 0, 6);
  return `${prefix}_${base32(time)}${base32(randomBytes(10))}`;
}

/** A bearer secret for URLs (order status links): 256 random bits. */
export function newSecret(): string {
  return randomBytes(32).toString('base64url');
}

export function nowIso(date: Date = new Date()): string {
  return date.toISOString();
}
