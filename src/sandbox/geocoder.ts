import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyPluginAsync } from 'fastify';
import { getAddress } from 'yubin';
import { z } from 'zod';
import { townName } from '../integrations/postcode/index.js';

/*
 * A stand-in for Google's Geocoding API (GET /maps/api/geocode/json), mounted at /sandbox/geocoder.
 * It answers Japanese postcodes from Japan Post's data in the shape Google uses: `status`,
 * `results[].address_components[]` with `long_name`, `short_name` and `types`, and `error_message`
 * for REQUEST_DENIED. Designated cities are split as Google splits them (札幌市 as `locality`, 中央区
 * as `sublocality_level_1`). Only `components=country:JP|postal_code:NNN-NNNN` lookups are served.
 *
 *   POST /api/faults {down?: boolean (HTTP 500), delayMs?: number, overQueryLimit?: boolean}
 */

export interface GeocoderSandboxOptions {
  /** The API key the fake accepts; any other gets REQUEST_DENIED, as Google answers. */
  apiKey: string;
}

const query = z.object({ components: z.string().optional(), address: z.string().optional(), key: z.string().optional(), language: z.string().optional() });
const faultsBody = z.object({ down: z.boolean().optional(), delayMs: z.number().int().min(0).max(60_000).optional(), overQueryLimit: z.boolean().optional() });

function components(postcode: string) {
  const found = getAddress(postcode);
  if (!found) return undefined;
  const parts: { long_name: string; short_name: string; types: string[] }[] = [];
  const add = (name: string, types: string[]) => name && parts.push({ long_name: name, short_name: name, types });
  add(`${postcode.slice(0, 3)}-${postcode.slice(3)}`, ['postal_code']);
  add('日本', ['country', 'political']);
  add(found.prefecture, ['administrative_area_level_1', 'political']);
  const designated = /^(.+市)(.+区)$/.exec(found.city);
  if (designated) {
    add(designated[1]!, ['locality', 'political']);
    add(designated[2]!, ['political', 'sublocality', 'sublocality_level_1']);
    add(townName(found.town), ['political', 'sublocality', 'sublocality_level_2']);
  } else {
    add(found.city, ['locality', 'political']);
    add(townName(found.town), ['political', 'sublocality', 'sublocality_level_1']);
  }
  return parts.reverse();
}

export function geocoderSandbox(opts: GeocoderSandboxOptions): FastifyPluginAsync {
  return async (app) => {
    const faults: z.infer<typeof faultsBody> = {};
    app.post('/api/faults', async (request) => Object.assign(faults, faultsBody.parse(request.body ?? {})));

    app.get('/maps/api/geocode/json', { schema: { hide: true } }, async (request, reply) => {
      if (faults.delayMs) await sleep(faults.delayMs);
      if (faults.down) return reply.status(500).type('text/html').send('<html><body>Server Error</body></html>');
      const q = query.parse(request.query);
      if (q.key !== opts.apiKey) return { status: 'REQUEST_DENIED', error_message: 'The provided API key is invalid.', results: [] };
      if (faults.overQueryLimit) return { status: 'OVER_QUERY_LIMIT', error_message: 'You have exceeded your rate-limit for this API.', results: [] };
      const postcode = /postal_code:(\d{3})-?(\d{4})/.exec(q.components ?? '');
      if (!postcode) return { status: 'INVALID_REQUEST', results: [] };
      const found = components(`${postcode[1]}${postcode[2]}`);
      if (!found) return { status: 'ZERO_RESULTS', results: [] };
      return { status: 'OK', results: [{ address_components: found, formatted_address: found.map((c) => c.long_name).reverse().join(' '), types: ['postal_code'] }] };
    });
  };
}
