//! Host-side bindings generated from `wit/`, and nothing else: the types
//! of the package and the `crypto` interface's host trait. Plugin calls go
//! through [`super::component`] (plugin files) and [`super::direct`]
//! (built-ins), which read answers lazily instead of through the generated
//! export wrappers.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "detector-plugin",
});
