import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Retries `check` until it stops throwing, for effects that happen asynchronously (a job the worker
 * runs, a webhook the sandbox retries). Fails with the check's last error once `timeoutMs` has passed:
 *
 *   const order = await eventually(async () => {
 *     const o = await getOrder(token);
 *     assert.equal(o.state, 'paid');
 *     return o;
 *   }, 5000);
 */
export async function eventually<T>(check: () => Promise<T>, timeoutMs = 5000, intervalMs = 25): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await check();
    } catch (error) {
      if (Date.now() >= deadline) throw error;
    }
    await sleep(intervalMs);
  }
}
