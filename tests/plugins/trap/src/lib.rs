//! Test plugin `trap`: a detector that panics for data starting with `trap`
//! (built with `panic = "abort"`, the panic is a Wasm trap), to prove the
//! proxy survives a trapping plugin and replaces the instance. A prefix of
//! `trap` needs 4 bytes; anything else does not match.

use refractium_plugin_sdk::{Detector, Peer, Verdict};

const TRIGGER: &[u8; 4] = b"trap";

pub struct Trap;

impl Detector for Trap {
    const NAME: &'static str = "trap";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn new(_config: &str) -> Result<Self, String> {
        Ok(Trap)
    }

    fn detect(&self, data: &[u8], _peer: &Peer) -> Verdict {
        if data.starts_with(TRIGGER) {
            panic!("trap plugin: deliberate panic on {} bytes", data.len())
        } else if TRIGGER.starts_with(data) {
            Verdict::NeedMore(TRIGGER.len())
        } else {
            Verdict::NoMatch
        }
    }
}

refractium_plugin_sdk::export_detector!(Trap);
