import { z } from 'zod';

/** A zod schema rendered for the OpenAPI document (the handler validates with the zod schema itself). */
export function doc(schema: z.ZodType): Record<string, unknown> {
  return z.toJSONSchema(schema, { target: 'openapi-3.0', io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
}
