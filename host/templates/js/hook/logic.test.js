// Native tests of the logic: `npm test` (node --test) in this directory.

import assert from "node:assert/strict";
import { test } from "node:test";

import { CLIENT_TO_SERVER, SERVER_TO_CLIENT, Session } from "./logic.js";

const bytes = (text) => new TextEncoder().encode(text);
const text = (data) => new TextDecoder().decode(Uint8Array.from(data));
const PEER = { clientAddr: "127.0.0.1:50000", localAddr: "127.0.0.1:443", listener: "test", transport: "tcp" };
const DETECTION = { protocol: "test", sni: null, alpn: [], attributes: [] };

// What the server gets when the client sends `chunks` and then ends, as
// the proxy runs the hook.
function run(chunks) {
  const session = new Session(PEER, DETECTION, "test");
  let out = [];
  for (let i = 0; i < chunks.length; i++) {
    const action = session.onData(CLIENT_TO_SERVER, chunks[i]);
    if (action.tag === "pass") {
      // The rest of the stream goes through without the hook.
      return text([...out, ...action.val, ...chunks.slice(i + 1).flatMap((c) => [...c])]);
    }
    assert.equal(action.tag, "forward", JSON.stringify(action));
    out = [...out, ...action.val];
  }
  const end = session.onEnd(CLIENT_TO_SERVER);
  assert.equal(end.tag, "forward", JSON.stringify(end));
  return text([...out, ...end.val]);
}

test("the client stream goes through unchanged however it is split", () => {
  const stream = bytes("hello, server\r\n");
  for (let cut = 0; cut <= stream.length; cut++) {
    assert.equal(run([stream.subarray(0, cut), stream.subarray(cut)]), "hello, server\r\n", `cut at ${cut}`);
  }
});

test("the server bytes are passed", () => {
  const action = new Session(PEER, DETECTION, "test").onData(SERVER_TO_CLIENT, bytes("welcome\r\n"));
  assert.equal(action.tag, "pass");
  assert.equal(text(action.val), "welcome\r\n");
});
