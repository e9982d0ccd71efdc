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

/*
 * Random bytes are drawn from a pooled buffer: each call into OpenSSL costs a system call, and a
 * checkout needs a dozen ids (docs/benchmarks.md). The pool is refilled from the same CSPRNG.
 */
const POOL_SIZE = 4096;
let pool = randomBytes(POOL_SIZE);
let offset = 0;

export function random(n: number): Buffer {
  if (n > POOL_SIZE) return randomBytes(n);
  if (offset + n > POOL_SIZE) {
    pool = randomBytes(POOL_SIZE);
    offset = 0;
  }
  const out = pool.subarray(offset, offset + n);
  offset += n;
  return out;
}

/**
 * A time-ordered, unguessable identifier such as `ord_01jd5x…`: 48 bits of milliseconds (so ids of
 * one kind sort by creation) followed by 80 random bits.
 */
export function newId(prefix: string): string {
  const time = Buffer.alloc(6);
  time.writeUIntBE(Date.now(), 0, 6);
  return `${prefix}_${base32(time)}${base32(random(10))}`;
}

/** A bearer secret for URLs (order status links): 256 random bits. */
export function newSecret(): string {
  return Buffer.from(random(32)).toString('base64url');
}

export function nowIso(date: Date = new Date()): string {
  return date.toISOString();
}

/**
 * A number a customer can read out on the phone: a letter, the JST date and 8 characters without
 * look-alikes (K260123-7F3K9QAB for an order, Q… for an inquiry).
 */
export function readableNumber(prefix: string, now: Date): string {
  const jst = new Date(now.getTime() + 9 * 3600_000).toISOString();
  const date = jst.slice(2, 10).replace(/-/g, '');
  const alphabet = '23456789ABCDEFGHJKLMNPQRSTUVWXYZ';
  const suffix = [...random(8)].map((b) => alphabet[b % alphabet.length]).join('');
  return `${prefix}${date}-${suffix}`;
}
