import type { Logger } from 'pino';
import type { Context } from '../context.js';

/** What a handler gets besides its payload. */
export interface JobContext {
  ctx: Context;
  jobId: string;
  /** 1 on the first run; grows with every retry, including runs after a crashed worker. */
  attempt: number;
  /** Aborted when the run exceeds its timeout: stop work and let the retry take over. */
  signal: AbortSignal;
  log: Logger;
}

/**
 * One kind of side effect. Delivery is at-least-once: a worker can crash after the effect but
 * before recording success, and a timed-out run may still be finishing while its retry starts. So
 * `run` MUST be idempotent — key the outside effect on the job id or a business key (an idempotency
 * key header, an upsert, a "sent" row checked first) so a second run changes nothing.
 */
export interface JobKind<P = unknown> {
  kind: string;
  run(payload: P, job: JobContext): Promise<void>;
  /** Runs before dead-lettering (default: config.jobMaxAttempts). */
  maxAttempts?: number;
  /** Per-run limit in seconds (default: config.jobTimeoutSeconds); fractions allowed. */
  timeoutSeconds?: number;
}

export class JobRegistry {
  private readonly byKind = new Map<string, JobKind>();

  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  register(kind: JobKind<any>): this {
    if (this.byKind.has(kind.kind)) throw new Error(`job kind "${kind.kind}" is registered twice`);
    this.byKind.set(kind.kind, kind);
    return this;
  }

  get(kind: string): JobKind | undefined {
    return this.byKind.get(kind);
  }

  kinds(): string[] {
    return [...this.byKind.keys()];
  }
}
