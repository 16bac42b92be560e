//! Built-in hook `deny`: closes a connection, optionally after answering the
//! side that sent it, when a configured literal or regular expression
//! appears in a direction's stream — also when it straddles two chunks.
//!
//! ```yaml
//! plugins:
//!   config:
//!     deny:
//!       rules:
//!         - regex: "^GET /admin"                # or literal: "..."
//!           direction: client-to-server         # the default; or server-to-client, both
//!           respond: "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
//!           reason: "admin path"                # for the access log; default: the pattern
//!         - literal: "SSH-2.0-libssh_0.1"
//!       window: 4096                            # bytes of a side kept to find a match across chunks
//! ```
//!
//! Chunks pass on unchanged until a rule matches: the bytes of a match that
//! came before its last byte have already gone on. A regular expression is
//! run over the kept window and the new chunk, so a match must fit in
//! `window` bytes plus one chunk; `^` anchors at the start of the stream only
//! while the stream is shorter than the window. Regular expressions match
//! bytes (Unicode mode off).

use refractium_plugin_sdk::hook::{Action, Direction, Hook};
use refractium_plugin_sdk::{Detection, Peer};
use serde_json::Value;

/// Bytes of a side kept by default to find a match across chunks.
const DEFAULT_WINDOW: usize = 4096;

enum Pattern {
    Literal(Vec<u8>),
    Regex(regex::bytes::Regex),
}

struct Rule {
    pattern: Pattern,
    up: bool,
    down: bool,
    respond: Option<Vec<u8>>,
    reason: String,
}

/// The configured rules.
pub struct Deny {
    rules: Vec<Rule>,
    window: usize,
}

/// Per connection: the last bytes of each side, and whether each side is
/// still at its start (so that `^` means the start of the stream).
#[derive(Default)]
pub struct Tails {
    up: Vec<u8>,
    down: Vec<u8>,
    up_seen: usize,
    down_seen: usize,
}

fn direction(value: Option<&Value>) -> Result<(bool, bool), String> {
    match value.map(|v| v.as_str()) {
        None | Some(Some("client-to-server")) => Ok((true, false)),
        Some(Some("server-to-client")) => Ok((false, true)),
        Some(Some("both")) => Ok((true, true)),
        _ => Err("`direction` must be client-to-server, server-to-client or both".into()),
    }
}

fn parse(config: &str) -> Result<Deny, String> {
    let value: Value = serde_json::from_str(config).map_err(|e| format!("config is not valid JSON: {e}"))?;
    let map = match &value {
        Value::Null => return Ok(Deny { rules: Vec::new(), window: DEFAULT_WINDOW }),
        Value::Object(map) => map,
        _ => return Err("must be a mapping with a `rules` list".into()),
    };
    if let Some(key) = map.keys().find(|k| *k != "rules" && *k != "window") {
        return Err(format!("unknown key `{key}` (keys: rules, window)"));
    }
    let window = match map.get("window") {
        None => DEFAULT_WINDOW,
        Some(w) => w.as_u64().filter(|&w| (1..=65536).contains(&w)).ok_or("`window` must be 1 to 65536")? as usize,
    };
    let rules = map.get("rules").and_then(Value::as_array).ok_or("needs `rules`, a list")?;
    let rules = rules
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            let text = |key: &str| rule.get(key).and_then(Value::as_str);
            let (pattern, shown) = match (text("literal"), text("regex")) {
                (Some(l), None) if !l.is_empty() => (Pattern::Literal(l.as_bytes().to_vec()), l.to_string()),
                (None, Some(r)) => {
                    let regex = regex::bytes::RegexBuilder::new(r)
                        .unicode(false)
                        .build()
                        .map_err(|e| format!("rules[{i}]: key `regex`: {e}"))?;
                    (Pattern::Regex(regex), r.to_string())
                }
                _ => return Err(format!("rules[{i}]: needs one of `literal` (non-empty) or `regex`")),
            };
            let (up, down) = direction(rule.get("direction")).map_err(|e| format!("rules[{i}]: {e}"))?;
            let respond = text("respond").map(|r| r.as_bytes().to_vec());
            let reason = text("reason").map_or_else(|| format!("matched `{shown}`"), str::to_string);
            Ok(Rule { pattern, up, down, respond, reason })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Deny { rules, window })
}

impl Deny {
    /// The first rule of `direction` that matches in `hay` (the kept tail
    /// and the new chunk); `start` says whether `hay` begins the stream.
    fn matching(&self, direction: Direction, hay: &[u8], start: bool) -> Option<&Rule> {
        let up = direction == Direction::ClientToServer;
        self.rules.iter().filter(|r| if up { r.up } else { r.down }).find(|rule| match &rule.pattern {
            Pattern::Literal(l) => hay.windows(l.len()).any(|w| w == l.as_slice()),
            Pattern::Regex(r) => {
                if start {
                    r.is_match(hay)
                } else {
                    // Past the start, `^` must not match at the window's edge.
                    r.find_iter(hay).any(|m| m.start() > 0 || !r.as_str().starts_with('^'))
                }
            }
        })
    }
}

impl Hook for Deny {
    const NAME: &'static str = "deny";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    type Session = Tails;

    fn new(config: &str) -> Result<Self, String> {
        parse(config)
    }

    fn open(&self, _peer: &Peer, _detection: &Detection, _route: &str) -> Tails {
        Tails::default()
    }

    fn on_data(&self, tails: &mut Tails, direction: Direction, data: Vec<u8>) -> Action {
        let up = direction == Direction::ClientToServer;
        if !self.rules.iter().any(|r| if up { r.up } else { r.down }) {
            // Nothing to look for this way.
            return Action::Pass(data);
        }
        let (tail, seen) = match direction {
            Direction::ClientToServer => (&mut tails.up, &mut tails.up_seen),
            Direction::ServerToClient => (&mut tails.down, &mut tails.down_seen),
        };
        let start = *seen == tail.len();
        tail.extend_from_slice(&data);
        *seen += data.len();
        if let Some(rule) = self.matching(direction, tail, start) {
            return match &rule.respond {
                Some(answer) => Action::Respond { data: answer.clone(), reason: rule.reason.clone() },
                None => Action::Close(rule.reason.clone()),
            };
        }
        let excess = tail.len().saturating_sub(self.window);
        tail.drain(..excess);
        Action::Forward(data)
    }
}

refractium_plugin_sdk::export_hook!(Deny);

#[cfg(test)]
mod tests {
    use super::*;
    use refractium_plugin_sdk::testing::{HookRun, Stop, check_hook_splits, run_hook};

    /// How the stream ends, split in two at every position: the same stop
    /// each time (what went on before the match depends on the split).
    fn stop_at_every_split(direction: Direction, stream: &[u8]) -> Option<Stop> {
        let whole = run_hook(&deny(), direction, &[stream]).stop;
        for at in 0..=stream.len() {
            let (head, tail) = stream.split_at(at);
            let HookRun { output, stop } = run_hook(&deny(), direction, &[head, tail]);
            assert_eq!(stop, whole, "split after byte {at}");
            assert!(stream.starts_with(&output), "only bytes of the stream, unchanged, go on");
        }
        whole
    }

    const RULES: &str = r#"{"rules":[
        {"regex":"^GET /admin","respond":"HTTP/1.1 403 Forbidden\r\n\r\n","reason":"admin path"},
        {"literal":"SSH-2.0-libssh_0.1","direction":"both"}
    ]}"#;

    fn deny() -> Deny {
        Deny::new(RULES).expect("config")
    }

    #[test]
    fn a_match_anywhere_in_the_stream_stops_it_however_it_is_split() {
        let stop = stop_at_every_split(Direction::ClientToServer, b"GET /admin/users HTTP/1.1\r\n\r\n");
        assert_eq!(
            stop,
            Some(Stop::Respond { data: b"HTTP/1.1 403 Forbidden\r\n\r\n".to_vec(), reason: "admin path".into() })
        );
        let stop = stop_at_every_split(Direction::ServerToClient, b"hello SSH-2.0-libssh_0.1\r\n");
        assert_eq!(stop, Some(Stop::Close("matched `SSH-2.0-libssh_0.1`".into())));
    }

    #[test]
    fn other_streams_pass_unchanged() {
        let stream = b"GET /index HTTP/1.1\r\nReferer: /GET /admin\r\n\r\n";
        let run = check_hook_splits(&deny(), Direction::ClientToServer, stream);
        assert_eq!((run.output.as_slice(), run.stop), (&stream[..], None), "`^` anchors at the stream's start");
        let run = check_hook_splits(&deny(), Direction::ServerToClient, b"GET /admin");
        assert_eq!(run.stop, None, "that rule is for the client's direction");
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        let err = |c: &str| Deny::new(c).err().unwrap_or_default();
        assert!(err(r#"{"rules":[{"regex":"("}]}"#).starts_with("rules[0]: key `regex`:"));
        assert!(err(r#"{"rules":[{"literal":""}]}"#).contains("needs one of"));
        assert!(err(r#"{"rules":[],"size":3}"#).contains("unknown key `size`"));
        assert!(err(r#"{"rules":[],"window":0}"#).contains("`window` must be"));
    }
}
