//! Host-side bindings generated from `wit/`, and nothing else.
//!
//! Exports are called asynchronously: a plugin call runs on its own fiber
//! inside the connection's task, so WASI calls a guest makes (a panic message
//! written to stderr, say) never block a proxy thread.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "detector-plugin",
    exports: { default: async },
});
