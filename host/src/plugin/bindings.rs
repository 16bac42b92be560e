//! Host-side bindings generated from `wit/`, and nothing else.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "detector-plugin",
});
