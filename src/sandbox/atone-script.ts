/*
 * The browser side of the atone simulator, served as plain ES5 (no bundler, old browsers welcome):
 *
 * - atone.js, the SDK surface the shop's page uses (reference gateways.md §2.2): Atone.config(options),
 *   Atone.merge(options), Atone.start(). start() sends { pub_key, payment, pre_token, terminal_id } to
 *   the sandbox (POST <base>/js/start). A refusal (EATN codes) calls error(name, message, errors);
 *   otherwise an overlay with an iframe of the sandbox's modal opens. The modal reports back with
 *   postMessage; atone.js accepts messages only from that iframe and the sandbox's origin, and calls
 *   authenticated(authentication_token, user_no), succeeded(response), failed(response), cancelled() or
 *   error(name, message, errors). The terminal events close the overlay first.
 * - modal.js, loaded by the modal's own pages (a file, not inline, so a strict CSP allows it): reads the
 *   page's pending messages from a JSON block and posts them to the shop's page, addressed to the
 *   origin atone.js announced.
 *
 * The sandbox's base URL is taken from the script's own src, so the page may load it from anywhere.
 */

export function atoneSdkScript(prefix: string): string {
  return `/* atone.js — kessai sandbox (a simulator of atone's JS SDK; no real payment) */
(function () {
  'use strict';
  if (window.Atone && window.Atone.sandbox) return;
  var current = document.currentScript;
  var base = current && current.src ? current.src.replace(/\\/atone\\.js(?:[?#].*)?$/, '') : location.origin + ${JSON.stringify(prefix)};
  var sandboxOrigin = new URL(base, location.href).origin;
  var options = {};
  var overlay = null;
  var frame = null;
  var session = null;
  var starting = false;

  function call(name) {
    var fn = options[name];
    if (typeof fn !== 'function') return;
    var args = Array.prototype.slice.call(arguments, 1);
    try { fn.apply(null, args); } catch (e) { setTimeout(function () { throw e; }, 0); }
  }
  function close() {
    if (overlay && overlay.parentNode) overlay.parentNode.removeChild(overlay);
    overlay = null; frame = null; session = null;
  }
  function fail(name, message, errors) {
    call('error', name || 'InvalidRequest', message || '', errors || []);
  }
  function open(id) {
    session = id;
    overlay = document.createElement('div');
    overlay.id = 'atone-sandbox-modal';
    overlay.setAttribute('role', 'dialog');
    overlay.setAttribute('aria-modal', 'true');
    overlay.setAttribute('aria-label', 'atone');
    overlay.style.cssText = 'position:fixed;inset:0;z-index:2147483647;background:rgba(0,0,0,.45);display:flex;align-items:center;justify-content:center';
    frame = document.createElement('iframe');
    frame.name = 'atone-sandbox';
    frame.title = 'atone';
    frame.src = base + '/modal/' + encodeURIComponent(id);
    frame.style.cssText = 'width:min(420px,96vw);height:min(680px,92vh);border:0;border-radius:8px;background:#fff;box-shadow:0 8px 32px rgba(0,0,0,.35)';
    overlay.appendChild(frame);
    document.body.appendChild(overlay);
  }

  window.addEventListener('message', function (event) {
    if (!frame || event.source !== frame.contentWindow || event.origin !== sandboxOrigin) return;
    var m = event.data;
    if (!m || typeof m !== 'object' || m.atone !== session) return;
    switch (m.event) {
      case 'authenticated': call('authenticated', m.authentication_token, m.user_no); break;
      case 'succeeded': close(); call('succeeded', m.response); break;
      case 'failed': close(); call('failed', m.response); break;
      case 'cancelled': close(); call('cancelled'); break;
      case 'error': close(); fail(m.name, m.message, m.errors); break;
    }
  });

  var Atone = {
    sandbox: true,
    config: function (o) {
      options = {};
      Atone.merge(o);
    },
    merge: function (o) {
      if (!o || typeof o !== 'object') return;
      for (var k in o) if (Object.prototype.hasOwnProperty.call(o, k)) options[k] = o[k];
    },
    start: function () {
      if (frame || starting) return;
      var payment = options.payment;
      if (typeof payment === 'string') {
        try { payment = JSON.parse(payment); } catch (e) {
          fail('InvalidRequest', 'payment is not valid JSON', [{ code: 'EATN0397', messages: ['payment is not valid JSON'], params: ['payment'] }]);
          return;
        }
      }
      starting = true;
      fetch(base + '/js/start', {
        method: 'POST',
        mode: 'cors',
        credentials: 'omit',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          pub_key: options.pub_key,
          payment: payment,
          pre_token: options.pre_token || '',
          terminal_id: options.terminal_id,
          origin: location.origin
        })
      }).then(function (res) {
        return res.json().then(function (data) { return { ok: res.ok, data: data }; });
      }).then(function (r) {
        starting = false;
        if (!r.ok) { fail(r.data && r.data.name, r.data && r.data.message, r.data && r.data.errors); return; }
        open(r.data.session);
      }).catch(function (e) {
        starting = false;
        fail('ServiceUnavailable', 'the atone sandbox cannot be reached: ' + (e && e.message), [{ code: 'EATN0399', messages: ['unreachable'], params: [] }]);
      });
    }
  };
  window.Atone = Atone;
})();
`;
}

export const ATONE_MODAL_SCRIPT = `/* modal.js — kessai atone sandbox: hands the modal's results to the shop's page */
(function () {
  'use strict';
  var block = document.getElementById('atone-messages');
  if (!block || window.parent === window) return;
  var data;
  try { data = JSON.parse(block.textContent || '{}'); } catch (e) { return; }
  var list = data.messages || [];
  for (var i = 0; i < list.length; i++) window.parent.postMessage(list[i], data.origin);
})();
`;
