//! Built-in hook `rewrite`: replaces literals in a direction's stream, the
//! same however the network splits it (a server banner, a host name in a
//! protocol that carries it in the clear).
//!
//! ```yaml
//! plugins:
//!   config:
//!     rewrite:
//!       rules:
//!         - from: "SSH-2.0-OpenSSH_9.2"
//!           to: "SSH-2.0-Server"
//!           direction: server-to-client   # client-to-server | server-to-client | both (default)
//! ```
//!
//! Rules are tried in order at each position of the stream; the first whose
//! `from` is there wins, and the scan goes on after it. Bytes that could
//! still be the start of a `from` are held until the next chunk decides
//! (or the side ends), so a match that straddles two chunks is found.

use refractium_plugin_sdk::hook::{Action, Direction, Hook};
use refractium_plugin_sdk::{Detection, Peer};
use serde_json::Value;

/// One replacement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    from: Vec<u8>,
    to: Vec<u8>,
    up: bool,
    down: bool,
}

/// The configured rules.
pub struct Rewrite {
    rules: Vec<Rule>,
}

/// Per connection: bytes held per direction (a possible start of a `from`).
#[derive(Default)]
pub struct Held {
    up: Vec<u8>,
    down: Vec<u8>,
}

impl Rewrite {
    /// Rewrite `data` with the rules of `direction`; with `last`, nothing
    /// follows, so nothing is held. The bytes to forward, and those held.
    fn scan(&self, direction: Direction, data: &[u8], last: bool) -> (Vec<u8>, Vec<u8>) {
        let up = direction == Direction::ClientToServer;
        let rules: Vec<&Rule> = self.rules.iter().filter(|r| if up { r.up } else { r.down }).collect();
        let mut out = Vec::with_capacity(data.len());
        let mut i = 0;
        'scan: while i < data.len() {
            let rest = &data[i..];
            for rule in &rules {
                if rest.starts_with(&rule.from) {
                    out.extend_from_slice(&rule.to);
                    i += rule.from.len();
                    continue 'scan;
                }
                if !last && rest.len() < rule.from.len() && rule.from.starts_with(rest) {
                    // Undecided until more bytes come: hold from here.
                    return (out, rest.to_vec());
                }
            }
            out.push(data[i]);
            i += 1;
        }
        (out, Vec::new())
    }
}

fn direction(value: Option<&Value>) -> Result<(bool, bool), String> {
    match value.map(|v| v.as_str()) {
        None | Some(Some("both")) => Ok((true, true)),
        Some(Some("client-to-server")) => Ok((true, false)),
        Some(Some("server-to-client")) => Ok((false, true)),
        _ => Err("`direction` must be client-to-server, server-to-client or both".into()),
    }
}

/// The rules of the config's JSON.
pub fn parse(config: &str) -> Result<Vec<Rule>, String> {
    let value: Value = serde_json::from_str(config).map_err(|e| format!("config is not valid JSON: {e}"))?;
    let rules = match &value {
        Value::Null => return Ok(Vec::new()),
        Value::Object(map) => map.get("rules").and_then(Value::as_array).ok_or("needs `rules`, a list")?,
        _ => return Err("must be a mapping with a `rules` list".into()),
    };
    rules
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            let text = |key: &str| rule.get(key).and_then(Value::as_str).map(|s| s.as_bytes().to_vec());
            let from = text("from").filter(|f| !f.is_empty()).ok_or(format!("rules[{i}]: needs a non-empty `from`"))?;
            let to = text("to").ok_or(format!("rules[{i}]: needs `to`"))?;
            let (up, down) = direction(rule.get("direction")).map_err(|e| format!("rules[{i}]: {e}"))?;
            Ok(Rule { from, to, up, down })
        })
        .collect()
}

impl Hook for Rewrite {
    const NAME: &'static str = "rewrite";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    type Session = Held;

    fn new(config: &str) -> Result<Self, String> {
        Ok(Rewrite { rules: parse(config)? })
    }

    fn open(&self, _peer: &Peer, _detection: &Detection, _route: &str) -> Held {
        Held::default()
    }

    fn on_data(&self, held: &mut Held, direction: Direction, data: Vec<u8>) -> Action {
        let up = direction == Direction::ClientToServer;
        if !self.rules.iter().any(|r| if up { r.up } else { r.down }) {
            // Nothing to replace this way.
            return Action::Pass(data);
        }
        let buffer = if direction == Direction::ClientToServer { &mut held.up } else { &mut held.down };
        let data = if buffer.is_empty() { data } else { [std::mem::take(buffer), data].concat() };
        let (out, keep) = self.scan(direction, &data, false);
        *buffer = keep;
        Action::Forward(out)
    }

    fn on_end(&self, held: &mut Held, direction: Direction) -> Action {
        let buffer = if direction == Direction::ClientToServer { &mut held.up } else { &mut held.down };
        let (out, _) = self.scan(direction, &std::mem::take(buffer), true);
        Action::Forward(out)
    }
}

refractium_plugin_sdk::export_hook!(Rewrite);

#[cfg(test)]
mod tests;
