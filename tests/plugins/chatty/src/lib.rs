//! Test plugin `chatty`: for data starting with `chat` it calls the host's
//! `log` 10,000 times with 4 KiB messages inside one call, to prove the host
//! truncates and rate-limits plugin logging. It then answers `no-match`.
//! A prefix of `chat` needs 4 bytes; anything else does not match.

use refractium_plugin_sdk::{Detector, Peer, Verdict, log};

const TRIGGER: &[u8; 4] = b"chat";

pub struct Chatty;

impl Detector for Chatty {
    const NAME: &'static str = "chatty";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn new(_config: &str) -> Result<Self, String> {
        Ok(Chatty)
    }

    fn detect(&self, data: &[u8], _peer: &Peer) -> Verdict {
        if data.starts_with(TRIGGER) {
            let line = "chatty ".repeat(600);
            for _ in 0..10_000 {
                log::info(&line);
            }
            Verdict::NoMatch
        } else if TRIGGER.starts_with(data) {
            Verdict::NeedMore(TRIGGER.len())
        } else {
            Verdict::NoMatch
        }
    }
}

refractium_plugin_sdk::export_detector!(Chatty);
