import type { Context } from '../context.js';
import type { JobKind } from '../jobs/registry.js';
import { sweepRateLimits } from './rate-limit.js';
import { sweepSessions } from './sessions.js';
import { sweepTokens } from './tokens.js';

/** Account housekeeping: rows that can no longer be used are deleted (an expired row never lets anyone in either way). */
export function accountJobKinds(ctx: Context): JobKind[] {
  return [
    {
      kind: 'accounts.sweep',
      async run(_payload, job) {
        const sessions = await sweepSessions(ctx);
        const tokens = await sweepTokens(ctx.db);
        // The longest window is an hour; a day's margin keeps this far from any live count.
        const limits = await sweepRateLimits(ctx.db, 86_400_000);
        job.log.info({ sessions, tokens, limits }, 'account rows swept');
      },
    },
  ];
}
