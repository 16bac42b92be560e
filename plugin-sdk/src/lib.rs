//! Write refractium plugins in plain Rust.
//!
//! A detector is one trait impl and one macro call (a hook too: see
//! [`hook`]):
//!
//! ```ignore
//! use refractium_plugin_sdk::{Detection, Detector, Peer, Verdict};
//!
//! struct Gopher;
//!
//! impl Detector for Gopher {
//!     const NAME: &'static str = "gopher";
//!     const VERSION: &'static str = env!("CARGO_PKG_VERSION");
//!
//!     fn new(_config: &str) -> Result<Self, String> {
//!         Ok(Gopher)
//!     }
//!
//!     fn detect(&self, data: &[u8], _peer: &Peer) -> Verdict {
//!         match data.iter().position(|&b| b == b'\n') {
//!             Some(_) if data.ends_with(b"\r\n") => Verdict::Matched(Detection::new("gopher")),
//!             Some(_) => Verdict::NoMatch,
//!             None => Verdict::NeedMore(0),
//!         }
//!     }
//! }
//!
//! refractium_plugin_sdk::export_detector!(Gopher);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` (crate type
//! `cdylib`) and drop the `.wasm` into the proxy's plugins directory. The
//! decision logic is ordinary Rust: `cargo test` runs it natively, the export
//! macro only does something when compiling for WebAssembly.
//!
//! [`testing`] has helpers for a detector's tests (other protocols' first
//! bytes, verdict and prefix checks); [`bytes`] a checked big-endian reader
//! for messages that may not have arrived whole; [`crypto`] the AES and
//! HKDF the proxy computes natively for a plugin.
//!
//! The SDK hides the generated WIT bindings (`wit/` at the root of the
//! refractium repository is the ABI) and converts them to the types below.

extern crate self as refractium_plugin_sdk;

pub mod alloc;
pub mod bytes;
pub mod crypto;
pub mod hook;
pub mod log;
pub mod testing;
pub mod tls;
mod types;

pub use hook::Hook;
pub use types::{Detection, Peer, Transport, Verdict};

/// A protocol detector.
///
/// One value is created per plugin instance by [`Detector::new`] and then
/// asked about many connections, one at a time. The proxy may drop an
/// instance at any time (after a trap, on reload) and create a new one, so
/// keep no state between calls that a new instance would not rebuild.
pub trait Detector: Sized + 'static {
    /// The plugin's name, as operators write it in `detectors:` lists and
    /// under `plugins.config`.
    const NAME: &'static str;
    /// The plugin's version, shown by `refractium plugins`.
    const VERSION: &'static str;

    /// Build the detector from its config: the plugin's section of the YAML
    /// config, as JSON text, or `null` when there is none. An `Err` stops the
    /// plugin from loading and is shown to the operator.
    fn new(config: &str) -> Result<Self, String>;

    /// Look at every byte the client has sent so far, always from the first
    /// byte. Answer [`Verdict::NeedMore`] while the bytes could still become
    /// this protocol, [`Verdict::NoMatch`] as soon as they cannot.
    fn detect(&self, data: &[u8], peer: &Peer) -> Verdict;
}

/// Generated bindings; not part of the public API.
#[doc(hidden)]
pub mod __bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "detector-plugin",
        pub_export_macro: true,
        export_macro_name: "__refractium_export_detector_world",
        default_bindings_module: "refractium_plugin_sdk::__bindings",
        runtime_path: "refractium_plugin_sdk::__bindings::__wit_bindgen::rt",
    });
    #[doc(hidden)]
    pub use wit_bindgen as __wit_bindgen;
}

/// The bindings of the `hook-plugin` world, sharing the types and imports
/// of [`__bindings`]. Each generated world contributes only its imports to
/// a plugin; its exports come with the export macro the plugin invokes, so
/// a plugin that invokes both (`export_plugin!`) exports both interfaces.
#[doc(hidden)]
pub mod __hook_bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "hook-plugin",
        pub_export_macro: true,
        export_macro_name: "__refractium_export_hook_world",
        default_bindings_module: "refractium_plugin_sdk::__hook_bindings",
        runtime_path: "refractium_plugin_sdk::__bindings::__wit_bindgen::rt",
        with: {
            "refractium:plugin/types@0.1.0": crate::__bindings::refractium::plugin::types,
            "refractium:plugin/host@0.1.0": crate::__bindings::refractium::plugin::host,
            "refractium:plugin/crypto@0.1.0": crate::__bindings::refractium::plugin::crypto,
        },
    });
}

/// Glue between the generated bindings and [`Detector`]; used by the export
/// macro.
#[doc(hidden)]
pub mod __rt {
    use super::__bindings::refractium::plugin::types as wit;
    use super::{Detector, Peer, Verdict};
    use std::any::Any;
    use std::cell::RefCell;

    thread_local! {
        static INSTANCE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
    }

    /// `arena` is the plugin's allocator when the export macro installed
    /// it: the detector outlives the call, so it is built outside the arena.
    pub fn init<D: Detector>(
        config: String,
        arena: Option<&crate::alloc::CallArena>,
    ) -> Result<wit::PluginInfo, String> {
        let build = || {
            let detector = D::new(&config)?;
            INSTANCE.with(|cell| *cell.borrow_mut() = Some(Box::new(detector)));
            Ok(wit::PluginInfo { name: D::NAME.to_string(), version: D::VERSION.to_string() })
        };
        match arena {
            Some(arena) => crate::alloc::bypass(arena, build),
            None => build(),
        }
    }

    pub fn detect<D: Detector>(data: Vec<u8>, peer: wit::Peer) -> wit::Verdict {
        let peer = Peer::from(peer);
        INSTANCE.with(|cell| {
            let guard = cell.borrow();
            match guard.as_ref().and_then(|d| d.downcast_ref::<D>()) {
                Some(detector) => detector.detect(&data, &peer).into(),
                // `init` failed or was never called: say nothing.
                None => Verdict::NoMatch.into(),
            }
        })
    }
}

/// Export a [`Detector`] implementation as the plugin's `detector` interface.
///
/// Also installs the SDK's allocator ([`alloc::CallArena`]), which makes the
/// small allocations of a call nearly free. A plugin that brings its own
/// `#[global_allocator]` writes `export_detector!(MyDetector, own_allocator)`.
///
/// Expands to nothing when not compiling for WebAssembly, so the same crate
/// can be unit-tested natively.
#[macro_export]
macro_rules! export_detector {
    ($detector:ty) => {
        #[cfg(target_arch = "wasm32")]
        #[global_allocator]
        static REFRACTIUM_CALL_ARENA: $crate::alloc::CallArena = $crate::alloc::CallArena::new();

        $crate::export_detector!(@export $detector, Some(&REFRACTIUM_CALL_ARENA));
    };
    ($detector:ty, own_allocator) => {
        $crate::export_detector!(@export $detector, None);
    };
    (@export $detector:ty, $arena:expr) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::__bindings::exports::refractium::plugin::detector::Guest;
            use $crate::__bindings::refractium::plugin::types as wit;

            struct RefractiumDetectorExport;

            impl Guest for RefractiumDetectorExport {
                fn init(config: String) -> Result<wit::PluginInfo, String> {
                    $crate::__rt::init::<$detector>(config, $arena)
                }
                fn detect(data: Vec<u8>, peer: wit::Peer) -> wit::Verdict {
                    $crate::__rt::detect::<$detector>(data, peer)
                }
            }

            $crate::__bindings::__refractium_export_detector_world!(
                RefractiumDetectorExport with_types_in $crate::__bindings
            );
        };
    };
}

/// Export a [`Detector`] and a [`Hook`] from one plugin: both the
/// `refractium:plugin/detector` and `refractium:plugin/hook` interfaces,
/// with the SDK's allocator as [`export_detector!`] and [`export_hook!`]
/// install it (`export_plugin!(MyDetector, MyHook, own_allocator)` without).
///
/// ```ignore
/// refractium_plugin_sdk::export_plugin!(MyDetector, MyHook);
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($detector:ty, $hook:ty) => {
        #[cfg(target_arch = "wasm32")]
        #[global_allocator]
        static REFRACTIUM_CALL_ARENA: $crate::alloc::CallArena = $crate::alloc::CallArena::new();

        $crate::export_detector!(@export $detector, Some(&REFRACTIUM_CALL_ARENA));
        $crate::export_hook!(@export $hook, Some(&REFRACTIUM_CALL_ARENA));
    };
    ($detector:ty, $hook:ty, own_allocator) => {
        $crate::export_detector!(@export $detector, None);
        $crate::export_hook!(@export $hook, None);
    };
}
