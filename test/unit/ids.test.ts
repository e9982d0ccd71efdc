import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createHash } from 'node:crypto';
import { hashToken, newSecret, readableNumber } from '../../src/ids.js';

describe('readable numbers (orders, inquiries)', () => {
  it('are a letter, the JST date and 8 characters without look-alikes', () => {
    // 2026-11-23T15:30:00Z is already the 24th in Japan.
    const n = readableNumber('K', new Date('2026-11-23T15:30:00.000Z'));
    assert.match(n, /^K261124-[2-9A-HJ-NP-Z]{8}$/);
  });

  it('sort by the time they were drawn within a JST day, and differ when drawn at the same instant', () => {
    const start = Date.parse('2026-11-23T15:00:00.000Z'); // 00:00 JST on the 24th
    const times = [0, 100, 250, 999, 60_000, 3_600_000, 43_200_000, 86_399_900].map((ms) => start + ms);
    const numbers = times.map((t) => readableNumber('K', new Date(t)));
    assert.ok(numbers.every((n) => n.startsWith('K261124-')), numbers.join(' '));
    assert.deepEqual([...numbers].sort(), numbers);
    const same = new Set(Array.from({ length: 200 }, () => readableNumber('K', new Date(start))));
    assert.ok(same.size >= 195, `only ${same.size} different numbers of 200 drawn in one instant`);
    // The time part is shared, the random part is not.
    assert.equal(new Set([...same].map((n) => n.slice(0, 12))).size, 1);
  });
});

describe('secrets (order links, sessions, account links) and their stored hashes', () => {
  it('are the time they were made, a dot and 256 random bits; their hashes sort by that time', async () => {
    const first = newSecret();
    await new Promise((resolve) => setTimeout(resolve, 5));
    const second = newSecret();
    for (const s of [first, second]) assert.match(s, /^[0-9a-hjkmnp-tv-z]{10}\.[A-Za-z0-9_-]{43}$/);
    assert.ok(hashToken(first) < hashToken(second), 'a later secret hashes after an earlier one');
    assert.equal(hashToken(first), `${first.slice(0, 10)}.${createHash('sha256').update(first).digest('hex')}`);
    assert.notEqual(newSecret().slice(11), newSecret().slice(11));
  });

  it('hash a secret made before the time part as they always did, so links already mailed still work', () => {
    const old = 'q5H0c2mJ3x6Jk9s1v8yZr2o4u7w0e3t6a9d2g5j8l1n';
    assert.equal(hashToken(old), createHash('sha256').update(old).digest('hex'));
  });
});
