//! Built-in `pattern` detector: protocols the operator describes in the
//! config, as fixed bytes, alternatives of fixed bytes, hex bytes or regular
//! expressions. One plugin serves any number of them.
//!
//! # Config schema (`plugins.config.pattern`)
//!
//! ```yaml
//! plugins:
//!   config:
//!     pattern:
//!       rules:                          # tried in order; absent, null or [] = never matches
//!         - protocol: gopher            # required: the protocol name to report (non-empty)
//!           prefix: "/"                 # the data starts with these bytes (at `offset`)
//!           min_length: 3               # optional: never match before this many bytes (default 0)
//!         - protocol: myproto
//!           hex: "de ad be ef"          # bytes in hex, whitespace allowed anywhere
//!           offset: 4                   # optional, prefix/prefixes/hex only: where the bytes start (default 0)
//!         - protocol: irc
//!           regex: '^(NICK|USER|PASS|CAP) [^\r\n]*\r\n'
//!           max_length: 512             # optional, regex only: bytes the regex looks at (default 1024, 1..=16384)
//!           transport: tcp              # optional: tcp | udp | any (default any)
//!         - protocol: zmq
//!           prefixes: ['\xff\x00\x00\x00\x00\x00\x00\x00\x01\x7f']   # alternatives; any one matches
//!           attributes: { kind: zeromq }   # optional: reported on a match (text, numbers, booleans)
//! ```
//!
//! Each rule has exactly one of `prefix`, `prefixes`, `hex`, `regex`. Any other
//! key is an error, and so is a key given as `null`.
//!
//! **Bytes in text** (`prefix`, `prefixes`, `regex`): `prefix` understands the
//! escapes `\r \n \t \0 \\ \xNN`; any other `\` is an error. Each other
//! character is one byte: characters U+0000 to U+00FF stand for the byte of
//! the same value, so `"\xff"` in a double-quoted YAML string (which YAML
//! turns into the character U+00FF) and `'\xff'` in a single-quoted one give
//! the same byte 0xFF. Characters above U+00FF are an error: write UTF-8 text
//! as its bytes (`\xc3\xa9` for `é`). The same holds for characters in a
//! `regex`, which is otherwise passed to the regex crate as written.
//!
//! **Regular expressions** use the syntax of the `regex` crate over bytes,
//! with Unicode mode off: `.` and classes match single bytes, `\xNN` is a
//! byte, `\w \d \s \b` and `(?i)` are ASCII. The regex runs on the first
//! `max_length` bytes; it matches anywhere unless anchored with `^` (and `$`
//! means "the end of the bytes received so far", so avoid it). A regex that
//! matches zero bytes would match every client and is refused.
//!
//! **Verdict.** The first rule (in order) that matches wins, reported as
//! `protocol` with the attribute `rule` (the rule's index, from 0) plus the
//! rule's `attributes`. A rule whose `transport` is not the listener's is
//! skipped. If no rule matches, the plugin waits (`need-more`) while any rule
//! still could, and otherwise answers `no-match`. When to wait is described in
//! [`rules`]; in short: fixed bytes wait for `offset + length` bytes while
//! the bytes seen agree; a regex anchored with `^` waits while the bytes seen
//! could still begin a match, an unanchored one waits until it has seen
//! `max_length` bytes; `min_length` delays a match, never a certain
//! `no-match`. Rules of a different transport, and a later rule that matches
//! while an earlier one is still waiting, do not wait for each other.
//!
//! Config errors name the rule by index and protocol, and the key:
//! `` rules[2] (protocol "irc"): key `max_length`: must be a whole number from 1 to 16384, found 20000 ``.

mod config;
pub mod rules;

use refractium_plugin_sdk::{Detection, Detector, Peer, Verdict};
use rules::{Decision, Rule};

/// The `pattern` detector: the rules of its config, in order.
pub struct Pattern {
    rules: Vec<Rule>,
}

impl Pattern {
    /// The rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
}

impl Detector for Pattern {
    const NAME: &'static str = "pattern";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn new(config: &str) -> Result<Self, String> {
        Ok(Pattern { rules: config::parse(config)? })
    }

    fn detect(&self, data: &[u8], peer: &Peer) -> Verdict {
        // Some(0) once a rule waits without knowing for how long.
        let mut wait: Option<usize> = None;
        for (index, rule) in self.rules.iter().enumerate() {
            if !rule.serves(peer.transport) {
                continue;
            }
            match rule.decide(data) {
                Decision::Match => return Verdict::Matched(detection(index, rule)),
                Decision::NeedMore(n) => {
                    wait = Some(match wait {
                        None => n,
                        Some(0) => 0,
                        Some(_) if n == 0 => 0,
                        Some(m) => m.min(n),
                    });
                }
                Decision::NoMatch => {}
            }
        }
        wait.map_or(Verdict::NoMatch, Verdict::NeedMore)
    }
}

fn detection(index: usize, rule: &Rule) -> Detection {
    let mut detection = Detection::new(rule.protocol.as_str()).attr("rule", index.to_string());
    for (key, value) in &rule.attributes {
        detection = detection.attr(key.as_str(), value.as_str());
    }
    detection
}

refractium_plugin_sdk::export_detector!(Pattern);

#[cfg(test)]
mod tests;
