import type { FastifyBaseLogger, FastifyReply, FastifyRequest } from 'fastify';

/**
 * An error the sandbox's own JSON APIs (testpay, Chekicha) answer with: its status and
 * `{ error: { code, message, field? } }`. The simulated real gateways answer in their own formats.
 */
export class SandboxApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly field?: string,
  ) {
    super(message);
  }
}

/**
 * The error handler of such an API: its own errors as they are, Fastify's client errors (bad JSON,
 * body too large) as `bad_request`, anything else logged and answered 500 without its details.
 */
export function sandboxApiErrorHandler(name: string, log: Pick<FastifyBaseLogger, 'error'>) {
  return (error: Error & { statusCode?: number }, _request: FastifyRequest, reply: FastifyReply) => {
    if (error instanceof SandboxApiError) {
      return reply.status(error.status).send({ error: { code: error.code, message: error.message, ...(error.field ? { field: error.field } : {}) } });
    }
    const status = error.statusCode && error.statusCode >= 400 && error.statusCode < 500 ? error.statusCode : 500;
    if (status === 500) log.error({ err: error }, `${name} sandbox error`);
    return reply.status(status).send({ error: { code: status === 500 ? 'internal_error' : 'bad_request', message: status === 500 ? `internal error in the ${name} sandbox (see its log)` : error.message } });
  };
}
