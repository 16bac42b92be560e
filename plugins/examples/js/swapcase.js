// Hook `js-swapcase`: swaps the case of the ASCII letters a client sends
// (`Hello` becomes `hELLO`), chunk by chunk, passes the server's bytes at
// their first chunk, and logs through `host.log` how many bytes it
// rewrote when the client has finished. componentize-qjs turns this ES
// module into a component of the world `hook-plugin` (wit/plugin.wit).

// The host's interface, imported by its WIT name.
import host from "refractium:plugin/host@0.1.0";

// What each byte becomes: a letter with its case swapped, anything else as
// it is. A table look-up is the cheapest per-byte work for QuickJS, an
// interpreter.
const SWAPPED = new Uint8Array(256);
for (let b = 0; b < 256; b++) {
  const letter = (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a);
  SWAPPED[b] = letter ? b ^ 0x20 : b;
}

// One per connection on a route that lists the hook: the WIT resource
// `session`, whose constructor and methods are this class's.
class Session {
  constructor(peer, detection, route) {
    this.rewritten = 0;
  }

  // A chunk from one side: `direction` is "client-to-server" or
  // "server-to-client", `data` a Uint8Array of the hook's own.
  onData(direction, data) {
    if (direction === "server-to-client") {
      // This chunk and the rest of the server's bytes go through as they are.
      return { tag: "pass", val: data };
    }
    for (let i = 0; i < data.length; i++) {
      data[i] = SWAPPED[data[i]];
    }
    this.rewritten += data.length;
    return { tag: "forward", val: data };
  }

  // That side has finished sending (only the client's comes here: the
  // server's was passed). Nothing was held back.
  onEnd(direction) {
    host.log("info", `rewrote ${this.rewritten} bytes`);
    return { tag: "forward", val: new Uint8Array(0) };
  }
}

export const hook = {
  init(config) {
    return { name: "js-swapcase", version: "0.1.0" };
  },
  Session,
};
