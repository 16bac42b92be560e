//! Test plugin `snoop`: for data starting with `snoop` it tries to reach
//! what the sandbox must not grant — a file, the environment, the clock's
//! sleep — and reports what it got as attributes of a `snoop` match, so the
//! proxy's tests can prove each attempt failed. Anything else: no match.

use refractium_plugin_sdk::{Detection, Detector, Peer, Verdict};

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
            let file = match std::fs::read_to_string("/etc/hostname") {
                Ok(text) => format!("read {} bytes", text.len()),
                Err(err) => format!("denied: {err}"),
            };
            let env = std::env::vars().count().to_string();
            let args = std::env::args().count().to_string();
            let cwd = match std::env::current_dir() {
                Ok(dir) => dir.display().to_string(),
                Err(_) => "none".to_string(),
            };
            Verdict::Matched(
                Detection::new("snoop").attr("file", file).attr("env", env).attr("args", args).attr("cwd", cwd),
            )
        } else if TRIGGER.starts_with(data) {
            Verdict::NeedMore(TRIGGER.len())
        } else {
            Verdict::NoMatch
        }
    }
}

refractium_plugin_sdk::export_detector!(Snoop);
