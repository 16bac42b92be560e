//! Test plugin `spin`: a detector that never returns for data starting with
//! `spin`, to prove the proxy's per-call time budget (epoch interruption or
//! fuel) ends the call. A prefix of `spin` needs 4 bytes; anything else does
//! not match. Do not call it natively with the trigger: it would hang.

use refractium_plugin_sdk::{Detector, Peer, Verdict};

const TRIGGER: &[u8; 4] = b"spin";

pub struct Spin;

impl Detector for Spin {
    const NAME: &'static str = "spin";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn new(_config: &str) -> Result<Self, String> {
        Ok(Spin)
    }

    fn detect(&self, data: &[u8], _peer: &Peer) -> Verdict {
        if data.starts_with(TRIGGER) {
            spin()
        } else if TRIGGER.starts_with(data) {
            Verdict::NeedMore(TRIGGER.len())
        } else {
            Verdict::NoMatch
        }
    }
}

/// Loop forever. An infinite loop is defined behaviour in Rust (LLVM is not
/// allowed to assume it terminates), and `black_box` keeps the counter opaque
/// so the body cannot be folded into a bare `loop {}` either: the Wasm keeps
/// a real loop, whose back edge is where the host interrupts it.
fn spin() -> ! {
    let mut counter: u64 = 0;
    loop {
        counter = core::hint::black_box(counter).wrapping_add(1);
    }
}

refractium_plugin_sdk::export_detector!(Spin);
