//! Test plugin `snoop`: for data starting with `snoop` it looks at what the
//! sandbox grants harmlessly — the environment, the arguments, the working
//! directory, the clocks, random bytes — and reports what it saw as
//! attributes of a `snoop` match, so the proxy's tests can show each grant
//! holds (an empty environment, a clock that moves, ...). It also serves
//! the reload tests as a detector that matches something. Anything else:
//! no match.

use refractium_plugin_sdk::{Detection, Detector, Peer, Verdict};
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher as _;

const TRIGGER: &[u8; 5] = b"snoop";

pub struct Snoop;

impl Detector for Snoop {
    const NAME: &'static str = "snoop";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn new(_config: &str) -> Result<Self, String> {
        Ok(Snoop)
    }

    fn detect(&self, data: &[u8], _peer: &Peer) -> Verdict {
        if data.starts_with(TRIGGER) {
            let env = std::env::vars().count().to_string();
            let args = std::env::args().count().to_string();
            let cwd = match std::env::current_dir() {
                Ok(dir) => dir.display().to_string(),
                Err(_) => "none".to_string(),
            };
            let start = std::time::Instant::now();
            let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs());
            // Two hashers seeded from the host's random source differ.
            let random = RandomState::new().hash_one(1u8) != RandomState::new().hash_one(1u8);
            Verdict::Matched(
                Detection::new("snoop")
                    .attr("env", env)
                    .attr("args", args)
                    .attr("cwd", cwd)
                    .attr("wall", wall.map(|s| s.to_string()).unwrap_or_else(|_| "none".into()))
                    .attr("elapsed_ns", start.elapsed().as_nanos().to_string())
                    .attr("random", random.to_string()),
            )
        } else if TRIGGER.starts_with(data) {
            Verdict::NeedMore(TRIGGER.len())
        } else {
            Verdict::NoMatch
        }
    }
}

refractium_plugin_sdk::export_detector!(Snoop);
