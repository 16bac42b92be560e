//! Detector `{{name}}`: routes match it with `match: { protocol: {{name}} }`.

use refractium_plugin_sdk::{Detection, Detector, Peer, Verdict};

pub struct {{Type}};

impl Detector for {{Type}} {
    const NAME: &'static str = "{{name}}";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    /// `config` is the YAML's `plugins.config.{{name}}` as JSON, or `null`.
    fn new(_config: &str) -> Result<Self, String> {
        Ok({{Type}})
    }

    /// Fill this in. `data` is every byte the client sent so far, from the
    /// first. Answer `NeedMore(0)` while the bytes could still become your
    /// protocol, `NoMatch` as soon as they cannot. This one matches clients
    /// that start with `{{NAME}} `.
    fn detect(&self, data: &[u8], _peer: &Peer) -> Verdict {
        const GREETING: &[u8] = b"{{NAME}} ";
        let n = data.len().min(GREETING.len());
        if data[..n] != GREETING[..n] {
            Verdict::NoMatch
        } else if n < GREETING.len() {
            Verdict::NeedMore(0)
        } else {
            Verdict::Matched(Detection::new("{{name}}"))
        }
    }
}

refractium_plugin_sdk::export_detector!({{Type}});

#[cfg(test)]
mod tests {
    use super::*;
    use refractium_plugin_sdk::Transport;
    use refractium_plugin_sdk::testing::{check_prefixes, other_protocols};

    fn run(data: &[u8]) -> Verdict {
        {{Type}}::new("null").expect("config").detect(data, &Peer::test(Transport::Tcp))
    }

    #[test]
    fn its_first_bytes_match_and_are_waited_for() {
        assert!(run(b"{{NAME}} hello\r\n").is_match());
        let detector = {{Type}}::new("null").expect("config");
        // Every shorter start is waited for; the whole greeting matches.
        check_prefixes(&detector, b"{{NAME}} ", &Peer::test(Transport::Tcp));
    }

    #[test]
    fn other_protocols_do_not_match() {
        for (name, bytes) in other_protocols() {
            assert_eq!(run(&bytes), Verdict::NoMatch, "{name}");
        }
    }
}
