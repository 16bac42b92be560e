//! Test plugin `hog`: a detector that, for data starting with `hog!`,
//! allocates memory in 1 MiB chunks, writing to each and keeping them all,
//! until allocation fails (the allocation error aborts: a Wasm trap). It
//! proves the proxy's per-instance memory cap holds. A prefix of `hog!`
//! needs 4 bytes; anything else does not match.
//!
//! It brings its own global allocator (the standard one) and so exports
//! itself with `export_detector!(Hog, own_allocator)`: the one plugin in the
//! repository that builds the SDK's opt-out, which the sandbox tests then
//! load and run.

use refractium_plugin_sdk::{Detector, Peer, Verdict};

const TRIGGER: &[u8; 4] = b"hog!";
const CHUNK: usize = 1 << 20;

pub struct Hog;

impl Detector for Hog {
    const NAME: &'static str = "hog";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn new(_config: &str) -> Result<Self, String> {
        Ok(Hog)
    }

    fn detect(&self, data: &[u8], _peer: &Peer) -> Verdict {
        if data.starts_with(TRIGGER) {
            hog()
        } else if TRIGGER.starts_with(data) {
            Verdict::NeedMore(TRIGGER.len())
        } else {
            Verdict::NoMatch
        }
    }
}

/// Allocate, touch and keep 1 MiB chunks until the allocator gives up, which
/// aborts the instance. `black_box` makes every chunk escape, so the
/// optimiser cannot drop the allocations or the writes.
fn hog() -> ! {
    let mut kept: Vec<Vec<u8>> = Vec::new();
    loop {
        let chunk = vec![0xa5u8; CHUNK];
        kept.push(core::hint::black_box(chunk));
        core::hint::black_box(&kept);
    }
}

#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: std::alloc::System = std::alloc::System;

refractium_plugin_sdk::export_detector!(Hog, own_allocator);
