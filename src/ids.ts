import { createHash, createHmac, randomBytes } from 'node:crypto';

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

let lastMs = -1;
let lastTime = '';

/** 48 bits of milliseconds in 10 base32 characters: sorts as the time it stands for. */
function timePart(ms: number): string {
  // A checkout makes a dozen ids within the same millisecond.
  if (ms !== lastMs) {
    const time = Buffer.alloc(6);
    time.writeUIntBE(ms, 0, 6);
    lastTime = base32(time);
    lastMs = ms;
  }
  return lastTime;
}

/**
 * A time-ordered, unguessable identifier such as `ord_01jd5x…`: 48 bits of milliseconds (so ids of
 * one kind sort by creation) followed by 80 random bits.
 */
export function newId(prefix: string): string {
  return `${prefix}_${timePart(Date.now())}${base32(random(10))}`;
}

/**
 * A bearer secret for URLs and cookies (order status links, sessions, account links): the time it
 * was made, a dot, then 256 random bits. Only its hash is stored (`hashToken`); the time makes the
 * stored hashes sort by creation, so a new one lands at the end of its unique index instead of on a
 * random page (docs/benchmarks.md §1). It reveals when the link or session was made, which its
 * holder knows; guessing one is as hard as guessing the random part.
 */
export function newSecret(): string {
  return `${timePart(Date.now())}.${Buffer.from(random(32)).toString('base64url')}`;
}

/**
 * A bearer secret the store can make again later, shaped like `newSecret`: the time it was made, a
 * dot, then 256 bits, here an HMAC under `key` of what it is for and that time instead of random
 * bits. Only its hash is stored; whoever holds the key can mail the link again. `made`: the time
 * part of a secret made earlier (the part before the dot of its stored hash).
 */
export function derivedSecret(key: Buffer, purpose: string, made: string = timePart(Date.now())): string {
  return `${made}.${createHmac('sha256', key).update(`${purpose}:${made}`).digest('base64url')}`;
}

/**
 * What is stored for a secret: its SHA-256 (hex), after the secret's time part when it has one.
 * A secret made before the time part existed (no dot) hashes as it always did, so links already
 * mailed keep working. Whatever comes before the dot, only the right secret gives the stored hash.
 */
export function hashToken(token: string): string {
  const sha = createHash('sha256').update(token).digest('hex');
  const dot = token.indexOf('.');
  return dot === -1 ? sha : `${token.slice(0, dot)}.${sha}`;
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
