//! Host-side bindings generated from `wit/`, and nothing else.
//!
//! Two sets of export bindings share one set of types. Plugin files are
//! called asynchronously: a call runs on a fiber of its own inside the
//! connection's task, because their WASI imports are served by
//! `wasmtime-wasi`, whose stream functions are async. The built-ins, whose
//! WASI imports are never used (see [`super::loader`]), are called
//! synchronously ([`sync`]) on the worker's stack: no fiber to create and
//! switch to on every call.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "detector-plugin",
    exports: { default: async },
});

/// The same world with synchronous exports, for the built-ins.
pub mod sync {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "detector-plugin",
        with: {
            "refractium:plugin/types": super::refractium::plugin::types,
            "refractium:plugin/host": super::refractium::plugin::host,
        },
    });
}
