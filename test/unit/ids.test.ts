import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { readableNumber } from '../../src/ids.js';

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
