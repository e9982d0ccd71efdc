/**
 * The bytes a webhook was signed over. Anything but a Buffer, Uint8Array or string is a programming
 * error — most often a body a JSON parser already turned into an object — and says how to fix it.
 * `why` tells what the signature covers, for the message.
 */
export function rawBytes(fn: string, rawBody: unknown, why: string): Buffer {
  if (typeof rawBody === 'string') return Buffer.from(rawBody, 'utf8');
  if (Buffer.isBuffer(rawBody)) return rawBody;
  if (rawBody instanceof Uint8Array) return Buffer.from(rawBody.buffer, rawBody.byteOffset, rawBody.byteLength);
  const what = rawBody === null ? 'null' : Array.isArray(rawBody) ? 'an array' : typeof rawBody === 'object' ? 'an object' : typeof rawBody;
  throw new TypeError(
    `${fn}: the webhook body must be the raw request body (a Buffer or string exactly as received), but ${what} was passed. ` +
      (typeof rawBody === 'object' && rawBody !== null ? `You passed parsed JSON: ${why} ` : '') +
      'Read the body before any JSON parser runs (in Fastify, a content-type parser with parseAs: "buffer" for this route).',
  );
}
