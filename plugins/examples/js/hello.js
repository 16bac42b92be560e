// Detector `js-hello`: matches clients whose first bytes are `HELO-JS `.
// componentize-qjs turns this ES module into a component of the world
// `detector-plugin` (wit/plugin.wit): the interface `detector` is the
// exported object of that name, its functions take and return plain
// JavaScript values (a `list<u8>` is a Uint8Array, a variant is
// `{ tag, val }`, a record an object with camelCase keys).

const NAME = "js-hello";
const GREETING = "HELO-JS ";

export const detector = {
  // `config` is the YAML's `plugins.config.js-hello` as JSON, or `null`;
  // throwing a string refuses it.
  init(config) {
    return { name: NAME, version: "0.1.0" };
  },

  // `data` is every byte the client sent so far, from the first.
  detect(data, peer) {
    const n = Math.min(data.length, GREETING.length);
    for (let i = 0; i < n; i++) {
      if (data[i] !== GREETING.charCodeAt(i)) {
        return { tag: "no-match" };
      }
    }
    if (n < GREETING.length) {
      // A start of the greeting: ask for the whole of it.
      return { tag: "need-more", val: GREETING.length };
    }
    return { tag: "matched", val: { protocol: NAME, sni: null, alpn: [], attributes: [] } };
  },
};
