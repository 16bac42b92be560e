//! Built-in `http2` detector: the cleartext prior-knowledge client
//! connection preface `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n` (RFC 9113 §3.4).
//! A prefix of it needs 24 bytes; anything else does not match. The
//! detection has no attributes (`h2c` via `Upgrade:` is plain `http`).

use refractium_plugin_sdk::{Detection, Detector, Peer, Verdict};

/// The client connection preface.
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub struct Http2;

impl Detector for Http2 {
    const NAME: &'static str = "http2";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn new(_config: &str) -> Result<Self, String> {
        Ok(Http2)
    }

    fn detect(&self, data: &[u8], _peer: &Peer) -> Verdict {
        let seen = data.len().min(PREFACE.len());
        if data.get(..seen) != PREFACE.get(..seen) {
            Verdict::NoMatch
        } else if seen < PREFACE.len() {
            Verdict::NeedMore(PREFACE.len())
        } else {
            Verdict::Matched(Detection::new("http2"))
        }
    }
}

refractium_plugin_sdk::export_detector!(Http2);

#[cfg(test)]
mod tests {
    use super::*;
    use refractium_plugin_sdk::Transport;

    fn detect(data: &[u8]) -> Verdict {
        let http2 = Http2::new("null").expect("http2 detector");
        http2.detect(data, &Peer::test(Transport::Tcp))
    }

    #[test]
    fn preface_byte_by_byte() {
        for len in 0..PREFACE.len() {
            assert_eq!(detect(&PREFACE[..len]), Verdict::NeedMore(24), "prefix {len}");
        }
        assert_eq!(detect(PREFACE), Verdict::Matched(Detection::new("http2")));
    }

    #[test]
    fn preface_with_settings_frame() {
        let mut data = PREFACE.to_vec();
        data.extend([0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100]);
        assert!(detect(&data).is_match());
    }

    #[test]
    fn other_bytes_do_not_match() {
        let cases: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\n\r\n",
            b"PRI * HTTP/1.1\r\n",
            b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n",
            b"\x16\x03\x01",
            b"pri",
        ];
        for case in cases {
            assert_eq!(detect(case), Verdict::NoMatch, "{case:?}");
        }
    }
}
