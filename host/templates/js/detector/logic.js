// Detector `{{name}}`: what it looks for, in plain JavaScript.
//
// This module imports nothing, so `npm test` tests it in Node; `plugin.js`
// makes it a component. Routes match it with `match: { protocol: {{name}} }`.

export const NAME = "{{name}}";
export const VERSION = "0.1.0";

// The three answers, shaped as the component's `verdict` (wit/plugin.wit).

/** The bytes are this protocol. Routes can match `sni`, `alpn` and the
 * attributes (e.g. `{ host: "example.com" }`). */
export function matched({ sni = null, alpn = [], attributes = {} } = {}) {
  return {
    tag: "matched",
    val: { protocol: NAME, sni, alpn, attributes: Object.entries(attributes).map(([k, v]) => [k, String(v)]) },
  };
}

/** Cannot tell yet: `total` bytes wanted in all, 0 if unknown. */
export function needMore(total = 0) {
  return { tag: "need-more", val: total };
}

/** The bytes are not this protocol, and more bytes will not change that. */
export function noMatch() {
  return { tag: "no-match" };
}

const GREETING = "{{NAME}} ";

/**
 * FILL THIS IN. `data` (a Uint8Array) is every byte the client sent so far,
 * from the first. Answer `needMore()` while the bytes could still become
 * your protocol, `noMatch()` as soon as they cannot, `matched()` when they
 * are it. This one matches clients that start with `{{NAME}} `.
 */
export function detect(data) {
  const n = Math.min(data.length, GREETING.length);
  for (let i = 0; i < n; i++) {
    if (data[i] !== GREETING.charCodeAt(i)) {
      return noMatch();
    }
  }
  if (n < GREETING.length) {
    return needMore(GREETING.length);
  }
  return matched();
}
