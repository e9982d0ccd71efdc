import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';

/*
 * Password hashes: scrypt from node:crypto with a random salt per password. The parameters are
 * stored with each hash, so they can be raised later and old hashes still verify (and are
 * re-hashed at the next login). Format: `scrypt$ln=15,r=8,p=1$<salt>$<hash>` (base64url).
 */

/** 2^15 × 8 × 128 bytes = 32 MiB and about 0.1 s per hash on one core (docs/decisions.md). */
export const SCRYPT = { ln: 15, r: 8, p: 1, keyLength: 32, saltLength: 16 } as const;

function derive(password: string, salt: Buffer, ln: number, r: number, p: number, keyLength: number): Promise<Buffer> {
  const N = 2 ** ln;
  // scrypt needs 128·N·r bytes; Node refuses anything above maxmem (32 MiB by default).
  const options: ScryptOptions = { N, r, p, maxmem: 128 * N * r * 2 };
  return new Promise((resolve, reject) => scrypt(password, salt, keyLength, options, (error, key) => (error ? reject(error) : resolve(key))));
}

/**
 * How a password is compared: Unicode NFKC, so the full-width letters an IME may type match their
 * half-width form. Nothing else is changed (no trimming: a space may be part of a password).
 */
export function normalizePassword(password: string): string {
  return password.normalize('NFKC');
}

export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(SCRYPT.saltLength);
  const key = await derive(normalizePassword(password), salt, SCRYPT.ln, SCRYPT.r, SCRYPT.p, SCRYPT.keyLength);
  return `scrypt$ln=${SCRYPT.ln},r=${SCRYPT.r},p=${SCRYPT.p}$${salt.toString('base64url')}$${key.toString('base64url')}`;
}

const FORMAT = /^scrypt\$ln=(\d{1,2}),r=(\d{1,2}),p=(\d{1,2})\$([\w-]+)\$([\w-]+)$/;

export interface Verified {
  ok: boolean;
  /** The hash was made with other parameters than today's: store a new one. */
  outdated: boolean;
}

/** Compares in constant time. A malformed stored hash never matches (and is not an error for the caller). */
export async function verifyPassword(password: string, stored: string): Promise<Verified> {
  const m = FORMAT.exec(stored);
  if (!m) return { ok: false, outdated: true };
  const [ln, r, p] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const expected = Buffer.from(m[5]!, 'base64url');
  const actual = await derive(normalizePassword(password), Buffer.from(m[4]!, 'base64url'), ln, r, p, expected.length);
  const ok = actual.length === expected.length && timingSafeEqual(actual, expected);
  return { ok, outdated: ln !== SCRYPT.ln || r !== SCRYPT.r || p !== SCRYPT.p || expected.length !== SCRYPT.keyLength };
}

let decoy: Promise<string> | undefined;

/**
 * A hash of no one's password, verified when the email is unknown, so a login for an unknown
 * address costs what a login for a known one does and the answer's timing tells nothing.
 */
export function decoyHash(): Promise<string> {
  decoy ??= hashPassword(randomBytes(16).toString('hex'));
  return decoy;
}
