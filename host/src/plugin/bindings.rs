//! Host-side bindings generated from `wit/`, and nothing else: the types
//! of the package, the `crypto` interface's host trait, and the exports of
//! the two plugin worlds. The `hook-plugin` world's bindings share the
//! detector world's types, so a detection or a peer is one type for both.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "detector-plugin",
});

/// The `hook-plugin` world: a component that exports the hook interface
/// (a plugin file may export it beside the detector interface).
pub mod hooks {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "hook-plugin",
        with: {
            "refractium:plugin/types": super::refractium::plugin::types,
            "refractium:plugin/host": super::refractium::plugin::host,
            "refractium:plugin/crypto": super::refractium::plugin::crypto,
        },
    });
}
