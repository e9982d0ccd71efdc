import { getAddress } from 'yubin';

/*
 * Postcode → address for the checkout form. The default source is Japan Post's own data (KEN_ALL
 * and the business codes, JIGYOSYO) shipped inside the `yubin` npm package: no network at request
 * time, updated by upgrading the package. Google's Geocoding API is an option per shop; when it
 * fails or is slow, Japan Post's data answers instead, and when neither knows the code the customer
 * types the address by hand.
 */

export interface Address {
  postcode: string;
  prefecture: string;
  city: string;
  /** 町域 (town area); may be empty where Japan Post lists the whole city under one code. */
  town: string;
  /** A business's own code (事業所個別郵便番号) also names the street address and the company. */
  street?: string;
  company?: string;
  prefectureKana?: string;
  cityKana?: string;
  townKana?: string;
  source: 'japanpost' | 'google';
}

/** 7 digits from what people type: 〒, hyphens, full-width digits and spaces are accepted. */
export function normalisePostcode(input: string): string | undefined {
  const ascii = input.normalize('NFKC').replace(/^〒/, '').replace(/[\s\-‐‑–—―ー−]/g, '');
  return /^\d{7}$/.test(ascii) ? ascii : undefined;
}

/**
 * The town as a person writes it: KEN_ALL's "以下に掲載がない場合" (any other address in the city)
 * is no town, and its notes in full-width brackets (（１〜１９丁目）, （次のビルを除く）) are not part
 * of an address.
 */
export function townName(kenAllTown: string): string {
  return kenAllTown === '以下に掲載がない場合' ? '' : kenAllTown.replace(/（[^（）]*）$/, '').replace(/（.*$/, '');
}

/** Japan Post's data: undefined for a code that does not exist. */
export function japanPostLookup(postcode: string): Address | undefined {
  const found = getAddress(postcode);
  if (!found) return undefined;
  if (found.source === 'jigyosyo') {
    return { postcode, prefecture: found.prefecture, city: found.city, town: found.town, street: found.streetAddress, company: found.companyName, source: 'japanpost' };
  }
  return {
    postcode,
    prefecture: found.prefecture,
    city: found.city,
    town: townName(found.town),
    prefectureKana: found.prefectureKana,
    cityKana: found.cityKana,
    townKana: found.town === '以下に掲載がない場合' ? '' : found.townKana.replace(/（.*$/, ''),
    source: 'japanpost',
  };
}

export class GeocoderError extends Error {
  override name = 'GeocoderError';
}

export const GOOGLE_GEOCODING_URL = 'https://maps.googleapis.com/maps/api/geocode/json';

interface GoogleComponent {
  long_name: string;
  types: string[];
}

/**
 * Google's Geocoding API for a Japanese postcode (TLS verified by fetch, never switched off). A
 * definite "no such place" is undefined; anything else that goes wrong is a GeocoderError.
 */
export async function googleLookup(postcode: string, opts: { apiKey: string; url?: string; timeoutMs?: number; fetchImpl?: typeof fetch }): Promise<Address | undefined> {
  const url = new URL(opts.url ?? GOOGLE_GEOCODING_URL);
  url.searchParams.set('components', `country:JP|postal_code:${postcode.slice(0, 3)}-${postcode.slice(3)}`);
  url.searchParams.set('language', 'ja');
  url.searchParams.set('key', opts.apiKey);
  let body: { status?: string; error_message?: string; results?: { address_components?: GoogleComponent[] }[] };
  try {
    const res = await (opts.fetchImpl ?? fetch)(url, { signal: AbortSignal.timeout(opts.timeoutMs ?? 3000) });
    if (!res.ok) throw new GeocoderError(`Google Geocoding answered HTTP ${res.status}`);
    body = (await res.json()) as typeof body;
  } catch (error) {
    if (error instanceof GeocoderError) throw error;
    throw new GeocoderError(`Google Geocoding unreachable: ${error instanceof Error ? error.message : String(error)}`);
  }
  if (body.status === 'ZERO_RESULTS') return undefined;
  if (body.status !== 'OK') throw new GeocoderError(`Google Geocoding: ${body.status ?? 'no status'}${body.error_message ? ` (${body.error_message})` : ''}`);
  const components = body.results?.[0]?.address_components ?? [];
  const of = (type: string) => components.find((c) => c.types.includes(type))?.long_name ?? '';
  if (of('postal_code').replace('-', '') !== postcode) return undefined;
  // A designated city's ward (札幌市 + 中央区) is part of the city line, as Japan Post writes it.
  const locality = of('locality');
  const ward = of('sublocality_level_1');
  const wardIsCity = locality.endsWith('市') && ward.endsWith('区');
  const town = (wardIsCity ? ['sublocality_level_2', 'sublocality_level_3'] : ['sublocality_level_1', 'sublocality_level_2', 'sublocality_level_3']).map(of).join('');
  const prefecture = of('administrative_area_level_1');
  if (!prefecture) return undefined;
  return { postcode, prefecture, city: wardIsCity ? `${locality}${ward}` : locality || ward, town, source: 'google' };
}

export interface PostcodeSettings {
  provider: 'japanpost' | 'google';
  google?: { apiKey: string; url?: string };
}

/**
 * The shop's provider first; Japan Post's data when Google fails (the failure is passed to `warn`)
 * or does not know the code, so a Google outage never blocks a checkout.
 */
export async function lookupPostcode(postcode: string, settings: PostcodeSettings, warn: (message: string) => void = () => {}): Promise<Address | undefined> {
  if (settings.provider === 'google' && settings.google) {
    try {
      const found = await googleLookup(postcode, settings.google);
      if (found) return found;
    } catch (error) {
      warn(`${error instanceof Error ? error.message : String(error)}; answering from Japan Post's data`);
    }
  }
  return japanPostLookup(postcode);
}
