//! Built-in `ssh` detector: the client's identification string
//! `SSH-protoversion-softwareversion SP comments CR LF` (RFC 4253 §4.2), for
//! protocol 2.0 and the compatibility version 1.99. Attributes: `version`
//! (`2.0`, `1.99`) and, once the line is complete, `software` (e.g.
//! `OpenSSH_9.6p1`). It waits for the line end up to [`MAX_LINE`] bytes, then
//! matches without `software`. SSH-1-only clients do not match.

use refractium_plugin_sdk::{Detection, Detector, Peer, Verdict};

/// Longest identification line, CR LF included (RFC 4253 §4.2).
pub const MAX_LINE: usize = 255;

/// Accepted starts of the identification line, with their version.
const PREFIXES: &[(&[u8], &str)] = &[(b"SSH-2.0-", "2.0"), (b"SSH-1.99-", "1.99")];

pub struct Ssh;

impl Detector for Ssh {
    const NAME: &'static str = "ssh";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn new(_config: &str) -> Result<Self, String> {
        Ok(Ssh)
    }

    fn detect(&self, data: &[u8], _peer: &Peer) -> Verdict {
        let Some(&(prefix, version)) = PREFIXES.iter().find(|(p, _)| data.starts_with(p)) else {
            // Still a prefix of one of them: the shortest length that can tell.
            let need = PREFIXES.iter().filter(|(p, _)| p.starts_with(data)).map(|(p, _)| p.len()).min();
            return need.map_or(Verdict::NoMatch, Verdict::NeedMore);
        };
        let rest = data.get(prefix.len()..).unwrap_or_default();
        let detection = Detection::new("ssh").attr("version", version);
        match rest.iter().position(|&b| b == b'\n') {
            Some(end) => match software(rest.get(..end).unwrap_or_default()) {
                Some(software) => Verdict::Matched(detection.attr("software", software)),
                None => Verdict::Matched(detection),
            },
            None if data.len() < MAX_LINE => Verdict::NeedMore(0),
            None => Verdict::Matched(detection),
        }
    }
}

/// The softwareversion token: up to the first space or CR; printable ASCII.
fn software(line: &[u8]) -> Option<String> {
    let end = line.iter().position(|&b| b == b' ' || b == b'\r').unwrap_or(line.len());
    let token = line.get(..end)?;
    if token.is_empty() || !token.iter().all(u8::is_ascii_graphic) {
        return None;
    }
    Some(token.iter().map(|&b| char::from(b)).collect())
}

refractium_plugin_sdk::export_detector!(Ssh);

#[cfg(test)]
mod tests {
    use super::*;
    use refractium_plugin_sdk::Transport;

    fn detect(data: &[u8]) -> Verdict {
        let ssh = Ssh::new("null").expect("ssh detector");
        ssh.detect(data, &Peer::test(Transport::Tcp))
    }

    #[test]
    fn openssh_byte_by_byte() {
        let line = b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n";
        for len in 0..8 {
            assert_eq!(detect(&line[..len]), Verdict::NeedMore(8), "prefix {len}");
        }
        for len in 8..line.len() - 1 {
            assert_eq!(detect(&line[..len]), Verdict::NeedMore(0), "prefix {len}");
        }
        let expected = Detection::new("ssh").attr("version", "2.0").attr("software", "OpenSSH_9.6p1");
        assert_eq!(detect(line), Verdict::Matched(expected.clone()));
        // The client's first packet may follow in the same read.
        let mut more = line.to_vec();
        more.extend([0, 0, 5, 0xdc, 4, 20]);
        assert_eq!(detect(&more), Verdict::Matched(expected));
    }

    #[test]
    fn compat_version_and_bare_lf() {
        assert_eq!(detect(b"SSH-1.9"), Verdict::NeedMore(9));
        let d = detect(b"SSH-1.99-PuTTY_Release_0.81\n");
        let d = d.detection().expect("matched");
        assert_eq!((d.attribute("version"), d.attribute("software")), (Some("1.99"), Some("PuTTY_Release_0.81")));
    }

    #[test]
    fn long_or_odd_lines_match_without_software() {
        let mut line = b"SSH-2.0-".to_vec();
        line.resize(MAX_LINE, b'x');
        assert_eq!(detect(&line[..MAX_LINE - 1]), Verdict::NeedMore(0));
        let d = detect(&line);
        assert_eq!(d.detection().map(|d| d.attributes.len()), Some(1));
        let d = detect(b"SSH-2.0-\r\n");
        assert_eq!(d.detection().and_then(|d| d.attribute("software")), None);
    }

    #[test]
    fn other_bytes_do_not_match() {
        let cases: &[&[u8]] = &[b"SSH-1.5-old\r\n", b"SSH-2.1-x", b"ssh-2.0-x", b"GET / HTTP/1.1", b"\x16\x03", b"S\n"];
        for case in cases {
            assert_eq!(detect(case), Verdict::NoMatch, "{case:?}");
        }
    }
}
