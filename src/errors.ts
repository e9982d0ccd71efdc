import type { z } from 'zod';

export interface FieldProblem {
  field: string;
  reason: string;
}

/**
 * An error a caller can act on: a stable `code` for programs, a sentence for people, the HTTP status
 * it maps to, and for bad input the fields at fault.
 */
export class KessaiError extends Error {
  override name = 'KessaiError';
  constructor(
    readonly code: string,
    message: string,
    readonly status = 400,
    readonly problems: FieldProblem[] = [],
  ) {
    super(message);
  }
}

export function invalid(problems: FieldProblem[]): KessaiError {
  const summary = problems.map((p) => `${p.field}: ${p.reason}`).join('; ');
  return new KessaiError('invalid_input', `invalid input: ${summary}`, 400, problems);
}

export function notFound(what: string, id: string): KessaiError {
  return new KessaiError('not_found', `${what} "${id}" does not exist`, 404);
}

export function problemsOf(error: z.ZodError, prefix = ''): FieldProblem[] {
  return error.issues.map((issue) => {
    const path = [prefix, ...issue.path.map(String)].filter(Boolean).join('.');
    return { field: path || '(body)', reason: issue.message };
  });
}

/** Parses `input` with `schema` or throws `invalid_input` naming every bad field. */
export function parseInput<S extends z.ZodType>(schema: S, input: unknown, prefix = ''): z.infer<S> {
  const result = schema.safeParse(input);
  if (!result.success) throw invalid(problemsOf(result.error, prefix));
  return result.data;
}

/**
 * Thrown by a job handler when running it again could do harm — a money operation whose outcome is
 * unknown and cannot be checked — so the job is dead-lettered at once, with an alert, for a person.
 */
export class StopRetrying extends Error {
  override name = 'StopRetrying';
}

/**
 * Thrown by a job handler that cannot run yet and did nothing (another job holds what it needs):
 * the job runs again a little later, and the wait costs none of its attempts.
 */
export class RetryLater extends Error {
  override name = 'RetryLater';
}
