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

/** The readable numbers' alphabet: no look-alikes (no 0/O, 1/I), in ascending character order. */
const NUMBER_ALPHABET = '23456789ABCDEFGHJKLMNPQRSTUVWXYZ';

/**
 * A number a customer can read out on the phone: a letter, the JST date and 8 characters without
 * look-alikes (K261124-7F3K9QAB for an order, Q… for an inquiry). The first four characters are the
 * tenth of a second of the JST day and the last four are random (about a million per tenth of a
 * second), so a day's numbers sort by time: a new one lands at the end of its unique index, where
 * one page per commit holds a whole burst, instead of on a random page each (docs/benchmarks.md §1).
 * They reveal when an order was placed, which its customer knows, and not how many there were. A
 * number already taken is drawn again by the caller.
 */
export function readableNumber(prefix: string, now: Date): string {
  const jstMs = now.getTime() + 9 * 3600_000;
  const date = new Date(jstMs).toISOString().slice(2, 10).replace(/-/g, '');
  // At most 863,999 tenths in a day: four characters of 5 bits (1,048,576).
  let tenths = Math.floor((jstMs % 86_400_000) / 100);
  let time = '';
  for (let i = 0; i < 4; i++, tenths >>>= 5) time = NUMBER_ALPHABET[tenths & 31] + time;
  const suffix = [...random(4)].map((b) => NUMBER_ALPHABET[b & 31]).join('');
  return `${prefix}${date}-${time}${suffix}`;
}
