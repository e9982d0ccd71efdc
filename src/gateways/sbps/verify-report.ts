/**
 * What `kessai sbps verify` prints: the tool a merchant reaches for when SBPS answers error 09 or a
 * notification is refused. It shows the exact string that was hashed, so the first differing value
 * is visible, with the hash key masked so the output can be pasted into a ticket.
 */
import type { DetailOptions, MessageKind } from './fields.js';
import { verifyMessage } from './messages.js';

/** `****` plus the key's last four characters; keys too short to spare four show nothing. */
export function maskHashKey(hashKey: string): string {
  return hashKey.length >= 12 ? `****${hashKey.slice(-4)}` : '****';
}

export function verifyReport(kind: MessageKind, body: Buffer, hashKey: string, opts: DetailOptions = {}): { ok: boolean; text: string } {
  let result;
  try {
    result = verifyMessage(kind, body, hashKey, opts);
  } catch (error) {
    return { ok: false, text: `invalid\nerror: ${error instanceof Error ? error.message : String(error)}\n` };
  }
  const hashedText = result.concatenated.slice(0, result.concatenated.length - hashKey.length);
  const lines = [
    result.valid ? 'valid' : 'invalid',
    `expected: ${result.expected === '' ? '(none)' : result.expected}`,
    `received: ${result.received === '' ? '(missing sps_hashcode)' : result.received}`,
    `string: ${hashedText}${maskHashKey(hashKey)}`,
  ];
  if (result.problem !== undefined) lines.push(`error: ${result.problem}`);
  // JSON quoting makes padding and invisible characters visible; the hash ignores the padding only.
  lines.push(`fields (${kind}, hash order):`);
  for (const [name, value] of result.fields) lines.push(`  ${name} = ${JSON.stringify(value)}`);
  if (result.unhashed.length > 0) lines.push(`not hashed: ${result.unhashed.join(', ')}`);
  return { ok: result.valid, text: `${lines.join('\n')}\n` };
}
