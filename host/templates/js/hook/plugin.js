// The component: componentize-qjs builds it from this module (see
// package.json), whose export `hook` implements the interface of that name
// in wit/plugin.wit; its resource `session` is the class `Session`. You
// should not need to change this file: the logic is in `logic.js`.
//
// To log, import the host's interface here (not in logic.js, which Node
// must load without it) and call it:
//   import host from "refractium:plugin/host@0.1.0";
//   host.log("info", "a line for the proxy's log");
// There is no `console`, `TextDecoder` or `TextEncoder`.

import { NAME, VERSION, Session } from "./logic.js";

export const hook = {
  // `config` is the YAML's `plugins.config.{{name}}` as JSON, or `null`;
  // throw a string to refuse it.
  init(config) {
    return { name: NAME, version: VERSION };
  },
  Session,
};
