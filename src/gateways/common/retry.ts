/** A server's Retry-After header (seconds or an HTTP date) in milliseconds; undefined when absent or unreadable. */
export function retryAfterMs(header: string | null): number | undefined {
  if (!header) return undefined;
  const seconds = Number(header);
  if (Number.isFinite(seconds) && seconds >= 0) return seconds * 1000;
  const at = Date.parse(header);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

/**
 * Exponential backoff with "equal jitter" (half the step fixed, half random), capped, and never
 * shorter than a server's hint: many clients retrying together do not move in lockstep.
 */
export function backoff(opts: { baseDelayMs: number; maxDelayMs: number; random: () => number }): (attempt: number, hintMs?: number) => number {
  return (attempt, hintMs) => {
    const step = Math.min(opts.maxDelayMs, opts.baseDelayMs * 2 ** attempt);
    return Math.min(opts.maxDelayMs, Math.max(step / 2 + (step / 2) * opts.random(), hintMs ?? 0));
  };
}
