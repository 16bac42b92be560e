// Native tests of the logic: `npm test` (node --test) in this directory.

import assert from "node:assert/strict";
import { test } from "node:test";

import { detect } from "./logic.js";

const bytes = (text) => new TextEncoder().encode(text);

// First bytes of some other protocols, none of which may match.
const OTHERS = {
  http: bytes("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"),
  tls: Uint8Array.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]),
  ssh: bytes("SSH-2.0-OpenSSH_9.6\r\n"),
  "empty line": bytes("\r\n"),
};

test("its first bytes match", () => {
  assert.equal(detect(bytes("{{NAME}} hello\r\n")).tag, "matched");
});

test("every shorter start is waited for", () => {
  const greeting = bytes("{{NAME}} ");
  for (let n = 0; n < greeting.length; n++) {
    assert.equal(detect(greeting.subarray(0, n)).tag, "need-more", `${n} bytes`);
  }
});

test("other protocols do not match", () => {
  for (const [name, data] of Object.entries(OTHERS)) {
    assert.equal(detect(data).tag, "no-match", name);
  }
});
