//! Host-side bindings generated from `wit/`, and nothing else.
//!
//! Plugin files are called asynchronously: a call runs on a fiber of its own
//! inside the connection's task, because their WASI imports are served by
//! `wasmtime-wasi`, whose stream functions are async. The built-ins, whose
//! WASI imports are never used, are called through their core module on the
//! worker's stack ([`super::direct`]); they share these bindings' types.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "detector-plugin",
    exports: { default: async },
});
