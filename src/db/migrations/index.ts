import type { Migration } from 'kysely';
import * as m0001 from './0001_initial.js';

/** Every migration, in order. A landed migration is never edited: add the next one. */
export const migrations: Record<string, Migration> = {
  '0001_initial': m0001,
};
