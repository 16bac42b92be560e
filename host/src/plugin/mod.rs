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
//!    compile again.
//! 3. [`loader`] — per snapshot: the built-in plugins and every `*.wasm` of
//!    `plugins.dir` are linked (an empty WASI context: no files, no sockets,
//!    no environment, plus the `host` interface) and pre-instantiated once.
//!    A built-in is linked as the core module inside its component and
//!    called with the canonical ABI written out ([`direct`]): our own code,
//!    it needs nothing of the component layer, whose per-call lookups cost
//!    more than a detection.
//! 4. [`detector`] — per call: an instance is taken from the plugin's idle
//!    pool (or created from the pre-instantiated component), given its
//!    deadline, called, and put back. A trap, an exceeded deadline or an
//!    exceeded memory cap ends the call as `no-match` and the instance is
//!    dropped; a plugin that keeps failing is disabled for a while.
//!
//! The sandbox limits themselves (memory cap, time budget, log budget, no
//! capabilities) live together in [`sandbox`].

mod bindings;
pub mod cache;
pub mod detector;
mod direct;
pub mod engine;
pub mod loader;
pub mod sandbox;
pub mod watchdog;

pub use detector::{Detection, DetectorPlugin, Verdict};
pub use loader::{PluginSet, Source};
