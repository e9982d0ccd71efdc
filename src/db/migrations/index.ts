import type { Migration } from 'kysely';
import * as m0001 from './0001_initial.js';
import * as m0002 from './0002_tickets.js';
import * as m0003 from './0003_payment_inbox.js';
import * as m0004 from './0004_serial_codes.js';
import * as m0005 from './0005_chart_runs.js';
import * as m0006 from './0006_accounts.js';
import * as m0007 from './0007_customer_links.js';
import * as m0008 from './0008_mail_log_inquiries.js';
import * as m0009 from './0009_subscriptions.js';
import * as m0010 from './0010_shipped_changes_index.js';
import * as m0011 from './0011_payment_operations.js';
import * as m0012 from './0012_job_lost_runs.js';
import * as m0013 from './0013_checkout_keys.js';

/** Every migration, in order. A landed migration is never edited: add the next one. */
export const migrations: Record<string, Migration> = {
  '0001_initial': m0001,
  '0002_tickets': m0002,
  '0003_payment_inbox': m0003,
  '0004_serial_codes': m0004,
  '0005_chart_runs': m0005,
  '0006_accounts': m0006,
  '0007_customer_links': m0007,
  '0008_mail_log_inquiries': m0008,
  '0009_subscriptions': m0009,
  '0010_shipped_changes_index': m0010,
  '0011_payment_operations': m0011,
  '0012_job_lost_runs': m0012,
  '0013_checkout_keys': m0013,
};
