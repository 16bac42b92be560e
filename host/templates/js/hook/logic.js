// Hook `{{name}}`: what it does to a connection's bytes, in plain
// JavaScript.
//
// This module imports nothing, so `npm test` tests it in Node; `plugin.js`
// makes it a component. A route runs it with `hooks: [{{name}}]`.

export const NAME = "{{name}}";
export const VERSION = "0.1.0";

// Which way a chunk travels.
export const CLIENT_TO_SERVER = "client-to-server";
export const SERVER_TO_CLIENT = "server-to-client";

// The answers, shaped as the component's `action` (wit/plugin.wit). Bytes
// are a Uint8Array (or an array of numbers).

/** Write these bytes on towards the other side (none holds the chunk back:
 * forward what was held with a later chunk or at the end). */
export function forward(data = new Uint8Array(0)) {
  return { tag: "forward", val: data };
}

/** Write these bytes on, and let the rest of this direction through
 * unchanged: the hook is not called for it again, not even at its end. */
export function pass(data) {
  return { tag: "pass", val: data };
}

/** Send `data` back to the side the chunk came from, then close. */
export function respond(data, reason) {
  return { tag: "respond", val: { data, reason } };
}

/** Close the connection; `reason` goes to the log. */
export function close(reason) {
  return { tag: "close", val: reason };
}

/** What the hook keeps for one connection: the component's `session`. */
export class Session {
  /** `peer` has `clientAddr`, `localAddr`, `listener` and `transport`;
   * `detection` is what the detector found (`protocol`, `sni`, `alpn`,
   * `attributes`); `route` is the route's name. */
  constructor(peer, detection, route) {
    this.route = route;
    // Bytes the client has sent.
    this.sent = 0;
  }

  /**
   * FILL THIS IN. Each chunk (a Uint8Array) from either side comes here:
   * forward it (changed or not), hold it (forward less), answer and close
   * (`respond`), `close`, or `pass` to let the rest of a direction through
   * without the hook. This one counts what the client sends and passes the
   * server's bytes.
   */
  onData(direction, data) {
    if (direction === CLIENT_TO_SERVER) {
      this.sent += data.length;
      return forward(data);
    }
    return pass(data);
  }

  /** That side has finished sending: a last chance to forward bytes held
   * back. */
  onEnd(direction) {
    return forward();
  }
}
