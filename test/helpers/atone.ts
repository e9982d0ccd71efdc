import assert from 'node:assert/strict';
import { atoneSandboxKeys } from '../../src/commerce/shops.js';
import { atoneApi, type AtoneApi, type AtonePayment } from '../../src/gateways/atone/index.js';
import type { TestStore } from './store.js';

/**
 * What atone.js and its modal do, without a browser: start a session with the page's config, log in
 * at the simulator's modal (unless pre_token skips it), authorize, and collect the messages the
 * modal posts to the shop page. Then the shop page's script posts callbacks to the store.
 */

export interface AtoneModalConfig {
  pub_key: string;
  payment: AtonePayment;
  pre_token?: string;
}

export interface AtoneMessage {
  event: string;
  authentication_token?: string;
  user_no?: string;
  response?: { id: string };
}

export const atoneSim = (store: TestStore): string => `${store.url}/sandbox/atone`;

/** The simulator's REST API with the shop's secret key, as the store calls it. */
export const atoneApiOf = (store: TestStore): AtoneApi => atoneApi({ secretKey: atoneSandboxKeys(store.rt.ctx.config).secretKey, baseUrl: `${atoneSim(store)}/v1`, retries: 0 });

async function modalPage(store: TestStore, sid: string): Promise<{ html: string; messages: AtoneMessage[] }> {
  const html = await (await fetch(`${atoneSim(store)}/modal/${sid}`)).text();
  const m = /<script type="application\/json" id="atone-messages">([^<]*)<\/script>/.exec(html);
  return { html, messages: m ? (JSON.parse(m[1]!) as { messages: AtoneMessage[] }).messages : [] };
}

async function submit(store: TestStore, html: string, id: string, fields: Record<string, string> = {}): Promise<{ html: string; messages: AtoneMessage[] }> {
  const m = new RegExp(`<form id="${id}" method="post" action="([^"]+)"`).exec(html);
  assert.ok(m, `the modal has a form #${id}`);
  const action = m[1]!.replace(/&#(\d+);/g, (_x, c: string) => String.fromCharCode(Number(c)));
  const res = await fetch(new URL(action, store.url), { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(fields).toString(), redirect: 'manual' });
  assert.equal(res.status, 303, await res.text());
  return modalPage(store, /\/modal\/([A-Za-z0-9]+)/.exec(res.headers.get('location') ?? '')![1]!);
}

/** The modal from start to authorization; answers every message the shop page receives. */
export async function runAtoneModal(store: TestStore, config: AtoneModalConfig, email = 'taro@example.jp'): Promise<AtoneMessage[]> {
  const started = await fetch(`${atoneSim(store)}/js/start`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', origin: store.url },
    body: JSON.stringify({ pub_key: config.pub_key, payment: config.payment, pre_token: config.pre_token ?? '' }),
  });
  const body = (await started.json()) as { session: string };
  assert.equal(started.status, 200, JSON.stringify(body));
  let page = await modalPage(store, body.session);
  const messages = [...page.messages];
  if (!/id="atone-authorize"/.test(page.html)) {
    page = await submit(store, page.html, 'atone-login', { email, password: 'password' });
    messages.push(...page.messages);
  }
  page = await submit(store, page.html, 'atone-authorize');
  messages.push(...page.messages);
  return messages;
}

/** The shop page's script posting one of the modal's callbacks to the store. */
export async function atoneCallback(store: TestStore, orderToken: string, body: unknown): Promise<Response> {
  return fetch(`${store.url}/orders/${orderToken}/atone`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
}

export async function setAtoneFaults(store: TestStore, set: Record<string, unknown>): Promise<void> {
  assert.equal((await fetch(`${atoneSim(store)}/api/faults`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(set) })).status, 200);
}
