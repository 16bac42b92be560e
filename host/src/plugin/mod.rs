//! WebAssembly plugins: the sandbox that runs detectors.
//!
//! The recipe, from process start to one `detect` call:
//!
//! 1. [`engine::engine`] — one wasmtime `Engine` per process: component
//!    model on, component-model concurrency off (plain calls are 3× cheaper),
//!    epoch interruption (advanced by the [`watchdog`] thread when a call's
//!    deadline passes), pooling allocator with small explicit limits.
//! 2. [`cache`] — each plugin's bytes are compiled once per content hash and
//!    engine version; the artifact is kept on disk so a restart does not
//!    compile again. A running proxy compiles large plugin files (language
//!    runtimes) in the [`background`] and brings them in by a reload.
//! 3. [`loader`] — per snapshot: the built-in plugins and every `*.wasm` of
//!    `plugins.dir` are linked and pre-instantiated once. A plugin file is
//!    linked with exactly the imports it has, each granted harmlessly or
//!    refused ([`imports`], [`wasi`]), and called through the component
//!    layer ([`component`]). A built-in is linked as the core module inside
//!    its component and called with the canonical ABI written out
//!    ([`direct`]): our own code, it needs nothing of the component layer,
//!    whose per-call lookups cost more than a detection.
//! 4. [`detector`] — per call, synchronously on the caller's thread: an
//!    instance is taken from the plugin's idle pool (or created from the
//!    pre-instantiated component), given its deadline, called, and put back.
//!    A trap, an exceeded budget, memory cap or output bound, or a refused
//!    import ends the call as `no-match` and the instance is dropped; a
//!    plugin that keeps failing is disabled for a while ([`breaker`]).
//!
//! The sandbox limits themselves (imports, memory cap, time budget, output
//! bounds, log budget) live together in [`sandbox`].

pub mod background;
mod bindings;
pub mod breaker;
pub mod cache;
mod component;
pub mod detector;
mod direct;
pub mod engine;
pub mod hook;
pub mod imports;
pub mod inspect;
pub mod loader;
pub mod sandbox;
mod wasi;
pub mod watchdog;

pub use detector::{Detection, DetectorPlugin, Verdict};
pub use loader::{PluginSet, Source};
pub use sandbox::{Cause, Failure};
