//! Test plugin `flood`: every call answers a match too large for the host
//! to take, in the way its config names (`{"flood": ...}`):
//!
//! - `attributes`: 100,000 small attributes;
//! - `string`: one attribute whose value is 10 MiB;
//! - `aliased`: 100,000 attributes whose values are all the same 1 MiB of
//!   guest memory (free for the guest to build, a copy each for a host that
//!   lifted them naively).
//!
//! The proxy must refuse each answer before it copies it, as a plugin
//! failure; the call then counts as `no-match`.
#![allow(unsafe_code)] // `aliased` builds strings that share one buffer, on purpose.

use refractium_plugin_sdk::{Detection, Detector, Peer, Verdict};

pub struct Flood {
    how: String,
}

impl Detector for Flood {
    const NAME: &'static str = "flood";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn new(config: &str) -> Result<Self, String> {
        let config: serde_json::Value = serde_json::from_str(config).map_err(|e| e.to_string())?;
        let how = config.get("flood").and_then(|t| t.as_str()).ok_or("config needs `flood`")?;
        Ok(Flood { how: how.to_string() })
    }

    fn detect(&self, _data: &[u8], _peer: &Peer) -> Verdict {
        let mut detection = Detection::new("flood");
        match self.how.as_str() {
            "attributes" => {
                detection.attributes = (0..100_000).map(|i| (format!("k{i}"), "v".to_string())).collect();
            }
            "string" => detection = detection.attr("big", "x".repeat(10 << 20)),
            "aliased" => {
                let shared = std::mem::ManuallyDrop::new("y".repeat(1 << 20));
                let (ptr, len) = (shared.as_ptr().cast_mut(), shared.len());
                detection.attributes = (0..100_000)
                    .map(|_| {
                        // SAFETY: none, by design: every value aliases the
                        // same bytes, which outlive the call (never freed),
                        // and only the host reads them before the instance
                        // is thrown away.
                        let alias = unsafe { String::from_raw_parts(ptr, len, len) };
                        ("k".to_string(), alias)
                    })
                    .collect();
            }
            _ => {}
        }
        Verdict::Matched(detection)
    }
}

refractium_plugin_sdk::export_detector!(Flood);
