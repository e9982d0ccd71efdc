import type { Migration } from 'kysely';
import * as m0001 from './0001_initial.js';
import * as m0002 from './0002_tickets.js';

/** Every migration, in order. A landed migration is never edited: add the next one. */
export const migrations: Record<string, Migration> = {
  '0001_initial': m0001,
  '0002_tickets': m0002,
};
