//! Test plugin `testhook`: a hook that behaves, or misbehaves, as its config
//! says (`{"mode": ...}`), so the proxy's tests can show what a hook can do
//! to a stream and that a broken one ends only its own connection:
//!
//! - `identity`: forwards every chunk unchanged;
//! - `upper`: upper-cases what the client sends;
//! - `hold`: holds every byte of a side until that side ends;
//! - `deny`: answers `HTTP/1.1 403 Forbidden` and closes when a client chunk
//!   contains `forbidden`; closes without answer on `close`;
//! - `broken`: forwards unchanged, except that a client chunk containing
//!   `trap` panics, `spin` loops forever, `hog!` allocates until memory
//!   runs out, and `grow` answers one byte with 1 MiB;
//! - `session`: puts what its session was opened with (the peer, the
//!   detection, the route) on a line before the first chunk each side sends;
//! - `count`: puts `[n]` before the first chunk each connection sends, `n`
//!   being how many sessions its instance has opened, or `[poisoned]` once
//!   a chunk containing `trap` was seen in the instance (which then panics).
//!
//! With `{"log": "text"}` it also logs `text` through the host at each new
//! session (for the tests of log escaping).

use refractium_plugin_sdk::hook::{Action, Direction, Hook};
use refractium_plugin_sdk::{Detection, Peer};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Sessions this instance opened (mode `count`).
static OPENED: AtomicU32 = AtomicU32::new(0);
/// A session of this instance trapped (mode `count`).
static POISONED: AtomicBool = AtomicBool::new(false);

pub struct TestHook {
    mode: String,
    log: Option<String>,
}

/// Per connection: the bytes held back, per direction.
#[derive(Default)]
pub struct Held {
    up: Vec<u8>,
    down: Vec<u8>,
    /// Mode `count`: the session's number in its instance, until told.
    number: Option<u32>,
    /// Mode `session`: what the session was opened with, until told, per
    /// direction.
    opened: [Option<String>; 2],
}

fn contains(data: &[u8], word: &[u8]) -> bool {
    data.windows(word.len()).any(|w| w == word)
}

impl Hook for TestHook {
    const NAME: &'static str = "testhook";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    type Session = Held;

    fn new(config: &str) -> Result<Self, String> {
        let config: serde_json::Value = serde_json::from_str(config).map_err(|e| e.to_string())?;
        let mode = config.get("mode").and_then(|m| m.as_str()).unwrap_or("identity");
        let log = config.get("log").and_then(|l| l.as_str()).map(str::to_string);
        Ok(TestHook { mode: mode.to_string(), log })
    }

    fn open(&self, peer: &Peer, detection: &Detection, route: &str) -> Held {
        if let Some(line) = &self.log {
            refractium_plugin_sdk::log::info(line);
        }
        let number = Some(OPENED.fetch_add(1, Ordering::Relaxed) + 1);
        let opened = (self.mode == "session").then(|| {
            format!(
                "[{} {} {} {:?} | {} {:?} {:?} {:?} | {route}]\n",
                peer.client_addr,
                peer.local_addr,
                peer.listener,
                peer.transport,
                detection.protocol,
                detection.sni,
                detection.alpn,
                detection.attributes
            )
        });
        Held { number, opened: [opened.clone(), opened], ..Held::default() }
    }

    fn on_data(&self, held: &mut Held, direction: Direction, data: Vec<u8>) -> Action {
        let from_client = direction == Direction::ClientToServer;
        match self.mode.as_str() {
            "upper" if from_client => Action::Forward(data.to_ascii_uppercase()),
            "hold" => {
                let buffer = if from_client { &mut held.up } else { &mut held.down };
                buffer.extend_from_slice(&data);
                Action::Forward(Vec::new())
            }
            "deny" if from_client && contains(&data, b"forbidden") => Action::Respond {
                data: b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
                reason: "forbidden word".into(),
            },
            "deny" if from_client && contains(&data, b"close") => Action::Close("asked to close".into()),
            "session" => match held.opened[usize::from(!from_client)].take() {
                Some(opened) => Action::Forward([opened.into_bytes(), data].concat()),
                None => Action::Forward(data),
            },
            "count" if from_client => {
                if contains(&data, b"trap") {
                    POISONED.store(true, Ordering::Relaxed);
                    panic!("testhook: deliberate panic");
                }
                let Some(number) = held.number.take() else { return Action::Forward(data) };
                let tag = if POISONED.load(Ordering::Relaxed) { "poisoned".to_string() } else { number.to_string() };
                Action::Forward([format!("[{tag}]").into_bytes(), data].concat())
            }
            "broken" if from_client => {
                if contains(&data, b"trap") {
                    panic!("testhook: deliberate panic");
                }
                if contains(&data, b"spin") {
                    let mut n = 0u64;
                    loop {
                        n = std::hint::black_box(n.wrapping_add(1));
                    }
                }
                if contains(&data, b"hog!") {
                    let mut kept: Vec<Vec<u8>> = Vec::new();
                    loop {
                        kept.push(std::hint::black_box(vec![0xa5u8; 1 << 20]));
                    }
                }
                if contains(&data, b"grow") {
                    return Action::Forward(vec![b'x'; 1 << 20]);
                }
                Action::Forward(data)
            }
            _ => Action::Forward(data),
        }
    }

    fn on_end(&self, held: &mut Held, direction: Direction) -> Action {
        let buffer = if direction == Direction::ClientToServer { &mut held.up } else { &mut held.down };
        Action::Forward(std::mem::take(buffer))
    }
}

refractium_plugin_sdk::export_hook!(TestHook);

#[cfg(test)]
mod tests {
    use super::*;
    use refractium_plugin_sdk::testing::check_hook_splits;

    fn hook(mode: &str) -> TestHook {
        TestHook::new(&format!("{{\"mode\":\"{mode}\"}}")).expect("config")
    }

    #[test]
    fn modes_do_not_depend_on_where_the_stream_is_split() {
        let stream = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(check_hook_splits(&hook("identity"), Direction::ClientToServer, stream).output, stream);
        assert_eq!(check_hook_splits(&hook("hold"), Direction::ServerToClient, stream).output, stream);
        let upper = check_hook_splits(&hook("upper"), Direction::ClientToServer, stream);
        assert_eq!(upper.output, stream.to_ascii_uppercase());
    }
}
