//! Helpers for a detector's and a hook's native tests.
//!
//! A hook should show that its output does not depend on where the network
//! split the stream: [`check_hook_splits`] runs it over the whole stream,
//! over every split in two and one byte at a time, and compares; a single
//! run is [`run_hook`].
//!
//! Every detector should show three things, whatever its protocol:
//!
//! - it does not claim other protocols' first bytes: loop over
//!   [`other_protocols_except`] (or [`other_protocols`]) and expect
//!   [`Verdict::NoMatch`];
//! - its verdicts keep the host's contract on any input, checked by
//!   [`check_verdict`] (or [`check_need_more`] with a tighter bound, and
//!   [`check_datagram_verdict`] where it never waits), typically from a
//!   property test over arbitrary and mutated bytes;
//! - a valid first flight is waited for while it arrives:
//!   [`check_prefixes`] and [`check_prefixes_until`] over TCP,
//!   [`check_datagram_prefixes`] over UDP, where a datagram is whole.
//!
//! ```ignore
//! use refractium_plugin_sdk::testing::{check_verdict, other_protocols_except};
//!
//! #[test]
//! fn other_protocols_do_not_match() {
//!     for (name, bytes) in other_protocols_except("gopher") {
//!         assert_eq!(run(&bytes), Verdict::NoMatch, "{name}");
//!     }
//! }
//!
//! proptest! {
//!     #[test]
//!     fn arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..300)) {
//!         check_verdict(&data, &run(&data)).map_err(TestCaseError::fail)?;
//!     }
//! }
//! ```
//!
//! The helpers that look at one verdict return `Err` with a message, so
//! they fit in a property test body (`map_err(TestCaseError::fail)?`) or an
//! `assert_eq!(…, Ok(()))`; those that walk the prefixes of a capture panic
//! like `assert!` does. The module has no dependencies and costs nothing in
//! a plugin that does not call it.

use crate::hook::{Action, Direction, Hook};
use crate::{Detection, Detector, Peer, Transport, Verdict};

/// How a hook stopped a stream, besides what it forwarded first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// It answered the sender and closed.
    Respond { data: Vec<u8>, reason: String },
    /// It closed.
    Close(String),
}

/// What a hook made of one direction of a stream: the bytes it forwarded,
/// and how it stopped the stream if it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookRun {
    pub output: Vec<u8>,
    pub stop: Option<Stop>,
}

/// Run a fresh session of `hook` (opened for a test peer, a detection of
/// protocol `test` and route `test`) over `chunks` sent in `direction`, then
/// end that side, as the proxy would: once the hook answers
/// [`Action::Pass`], or from the start in a direction [`Hook::DIRECTIONS`]
/// leaves out, the rest goes to the output without calling it.
pub fn run_hook<H: Hook>(hook: &H, direction: Direction, chunks: &[&[u8]]) -> HookRun {
    let mut session = hook.open(&Peer::test(Transport::Tcp), &Detection::new("test"), "test");
    let mut output = Vec::new();
    let mut passed = !H::DIRECTIONS.includes(direction);
    let actions = chunks.iter().map(|c| Some(c.to_vec())).chain([None]);
    for chunk in actions {
        let action = match chunk {
            Some(data) if passed => Action::Forward(data),
            None if passed => break,
            Some(data) => hook.on_data(&mut session, direction, data),
            None => hook.on_end(&mut session, direction),
        };
        match action {
            Action::Forward(data) => output.extend_from_slice(&data),
            Action::Pass(data) => {
                output.extend_from_slice(&data);
                passed = true;
            }
            Action::Respond { data, reason } => return HookRun { output, stop: Some(Stop::Respond { data, reason }) },
            Action::Close(reason) => return HookRun { output, stop: Some(Stop::Close(reason)) },
        }
    }
    HookRun { output, stop: None }
}

/// Run `hook` over `stream` in `direction` as one chunk, split in two at
/// every position, and one byte at a time, and panic (like `assert!`) when
/// any run differs from the first; answer that run.
pub fn check_hook_splits<H: Hook>(hook: &H, direction: Direction, stream: &[u8]) -> HookRun {
    let whole = run_hook(hook, direction, &[stream]);
    for at in 0..=stream.len() {
        let (head, tail) = stream.split_at(at);
        let split = run_hook(hook, direction, &[head, tail]);
        assert_eq!(split, whole, "split after byte {at} of {}", stream.len());
    }
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(run_hook(hook, direction, &bytes), whole, "one byte at a time");
    whole
}

/// Bytes from hex text, as test vectors and captures are written; anything
/// but hex digits (spaces, line breaks) is ignored. Panics on an odd count.
pub fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    assert!(digits.len().is_multiple_of(2), "an odd number of hex digits");
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).expect("ascii"), 16).expect("hex"))
        .collect()
}

/// The largest `NeedMore(n)` the host honours.
pub const MAX_NEED_MORE: usize = 65536;

/// An OpenSSL TLS 1.3 ClientHello record (`testdata/openssl_client_hello.bin`).
pub const TLS_CLIENT_HELLO: &[u8] = include_bytes!("testdata/openssl_client_hello.bin");

/// A DNS query for `example.com` A (id 0x1234, RD), as sent over UDP.
pub const DNS_QUERY: &[u8] = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01";

/// Realistic first flights of common protocols, named by protocol.
///
/// Stream protocols' first bytes (`http`, `http2`, `tls`, `ssh`,
/// `dns-tcp`, `postgres`, `rdp`, `xmpp`, `openvpn`, `redis`, `socks4`,
/// `socks5`, `mqtt`), datagrams (`dns`, `quic`, `openvpn-udp`,
/// `openvpn-udp-v3`, `wireguard`), and 64 zero bytes (`zeros`). A name
/// followed by `-` is a variant of the same protocol. Most are captured from
/// real clients (see `testdata/README.md`); the short ones are written by
/// hand after the protocols' specifications.
pub fn other_protocols() -> Vec<(&'static str, Vec<u8>)> {
    let mut dns_tcp = u16::try_from(DNS_QUERY.len()).unwrap_or(u16::MAX).to_be_bytes().to_vec();
    dns_tcp.extend_from_slice(DNS_QUERY);
    // A QUIC v1 Initial's first bytes, padded as clients do (hand-made).
    let mut quic = b"\xc3\x00\x00\x00\x01\x08\x83\x94\xc8\xf0\x3e\x51\x57\x08\x00\x00\x44\x9e".to_vec();
    quic.resize(1200, 0);
    vec![
        ("http", b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n".to_vec()),
        ("http2", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec()),
        ("tls", TLS_CLIENT_HELLO.to_vec()),
        ("ssh", b"SSH-2.0-OpenSSH_9.2\r\n".to_vec()),
        ("dns", DNS_QUERY.to_vec()),
        ("dns-tcp", dns_tcp),
        ("quic", quic),
        ("postgres", include_bytes!("testdata/postgres_psql15_startup.bin").to_vec()),
        ("rdp", include_bytes!("testdata/rdp_xfreerdp2_default.bin").to_vec()),
        ("xmpp", include_bytes!("testdata/xmpp_slixmpp_client.bin").to_vec()),
        ("openvpn", include_bytes!("testdata/openvpn_tcp_plain.bin").to_vec()),
        ("openvpn-udp", include_bytes!("testdata/openvpn_udp_tlsauth512.bin").to_vec()),
        ("openvpn-udp-v3", include_bytes!("testdata/openvpn_udp_tlscryptv2.bin").to_vec()),
        ("wireguard", include_bytes!("testdata/wireguard_go_initiation.bin").to_vec()),
        ("redis", b"*1\r\n$4\r\nPING\r\n".to_vec()),
        ("socks4", b"\x04\x01\x1f\x90\x7f\x00\x00\x01\x00".to_vec()),
        ("socks5", b"\x05\x02\x00\x01".to_vec()),
        ("mqtt", b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00".to_vec()),
        ("zeros", vec![0; 64]),
    ]
}

/// [`other_protocols`] without `own` and its variants (`own-…`): what a
/// detector of `own` must refuse.
pub fn other_protocols_except(own: &str) -> Vec<(&'static str, Vec<u8>)> {
    other_protocols()
        .into_iter()
        .filter(|(name, _)| *name != own && !name.strip_prefix(own).is_some_and(|rest| rest.starts_with('-')))
        .collect()
}

/// The host's contract for a verdict on `data`: `NeedMore(n)` asks for
/// more than is there (`n == 0` meaning "some more"), at most
/// [`MAX_NEED_MORE`].
pub fn check_verdict(data: &[u8], verdict: &Verdict) -> Result<(), String> {
    check_need_more(data, verdict, true, MAX_NEED_MORE)
}

/// Like [`check_verdict`] with a detector's own bound: `NeedMore(n)` has
/// `data.len() < n <= max`, or `n == 0` when `zero_ok`.
pub fn check_need_more(data: &[u8], verdict: &Verdict, zero_ok: bool, max: usize) -> Result<(), String> {
    match *verdict {
        Verdict::NeedMore(0) if zero_ok => Ok(()),
        Verdict::NeedMore(n) if n > data.len() && n <= max => Ok(()),
        Verdict::NeedMore(n) => Err(format!("NeedMore({n}) for {} bytes (at most {max})", data.len())),
        Verdict::Matched(_) | Verdict::NoMatch => Ok(()),
    }
}

/// A datagram is whole: a detector never asks for more of it.
pub fn check_datagram_verdict(data: &[u8], verdict: &Verdict) -> Result<(), String> {
    match verdict {
        Verdict::NeedMore(n) => Err(format!("NeedMore({n}) for a datagram of {} bytes", data.len())),
        Verdict::Matched(_) | Verdict::NoMatch => Ok(()),
    }
}

/// A match is of `protocol`.
pub fn check_protocol(verdict: &Verdict, protocol: &str) -> Result<(), String> {
    match verdict {
        Verdict::Matched(d) if d.protocol != protocol => Err(format!("matched {:?}, not {protocol:?}", d.protocol)),
        _ => Ok(()),
    }
}

/// Every strict prefix of `data`, a valid first flight, gives `NeedMore(0)`
/// or `NeedMore(n)` with `len < n <= data.len()`, and `data` itself matches.
#[track_caller]
pub fn check_prefixes<D: Detector>(detector: &D, data: &[u8], peer: &Peer) {
    check_prefixes_until(detector, data, data.len(), peer);
}

/// Every prefix of `data` shorter than `end` (where the detector has seen
/// enough) gives `NeedMore(0)` or `NeedMore(n)` with `len < n <= end`; every
/// prefix from `end` to the whole of `data` matches.
#[track_caller]
pub fn check_prefixes_until<D: Detector>(detector: &D, data: &[u8], end: usize, peer: &Peer) {
    walk_prefixes(detector, data, end, peer, true);
}

/// Like [`check_prefixes_until`] for a detector that always says how many
/// bytes it wants: `NeedMore(0)` is refused.
#[track_caller]
pub fn check_counted_prefixes_until<D: Detector>(detector: &D, data: &[u8], end: usize, peer: &Peer) {
    walk_prefixes(detector, data, end, peer, false);
}

#[track_caller]
fn walk_prefixes<D: Detector>(detector: &D, data: &[u8], end: usize, peer: &Peer, zero_ok: bool) {
    assert!(end <= data.len(), "end {end} past the {} bytes", data.len());
    for len in 0..=data.len() {
        let prefix = data.get(..len).unwrap_or(data);
        let verdict = detector.detect(prefix, peer);
        if len < end {
            match verdict {
                Verdict::NeedMore(_) => {
                    if let Err(e) = check_need_more(prefix, &verdict, zero_ok, end) {
                        panic!("prefix {len} of {end}: {e}");
                    }
                }
                other => panic!("prefix {len} of {end}: {other:?}, not NeedMore"),
            }
        } else {
            assert!(verdict.is_match(), "prefix {len} (from {end} on): {verdict:?}, not a match");
        }
    }
}

/// Every strict prefix of `data`, a valid datagram, is refused: a shorter
/// datagram is not a truncated one.
#[track_caller]
pub fn check_datagram_prefixes<D: Detector>(detector: &D, data: &[u8], peer: &Peer) {
    for len in 0..data.len() {
        let prefix = data.get(..len).unwrap_or(data);
        assert_eq!(detector.detect(prefix, peer), Verdict::NoMatch, "prefix {len} of {}", data.len());
    }
}

/// `data` with `byte` XORed into it at each `(at, byte)` of `flips`, `at`
/// taken modulo the length: a valid capture mutated by a property test's
/// `vec((any::<usize>(), any::<u8>()), 0..4)`.
pub fn flipped(data: &[u8], flips: &[(usize, u8)]) -> Vec<u8> {
    let mut out = data.to_vec();
    for &(at, byte) in flips {
        if let Some(b) = at.checked_rem(out.len()).and_then(|i| out.get_mut(i)) {
            *b ^= byte;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Detection, Transport};

    /// Matches a line ending in `\n` over TCP, any datagram starting with `!`.
    struct Lines;

    impl Detector for Lines {
        const NAME: &'static str = "lines";
        const VERSION: &'static str = "0";

        fn new(_config: &str) -> Result<Self, String> {
            Ok(Lines)
        }

        fn detect(&self, data: &[u8], peer: &Peer) -> Verdict {
            match peer.transport {
                Transport::Udp if data.len() > 1 && data.first() == Some(&b'!') => {
                    Verdict::Matched(Detection::new("lines"))
                }
                Transport::Udp => Verdict::NoMatch,
                Transport::Tcp if data.contains(&b'\n') => Verdict::Matched(Detection::new("lines")),
                Transport::Tcp => Verdict::NeedMore(0),
            }
        }
    }

    #[test]
    fn the_list_names_each_protocol_once() {
        let all = other_protocols();
        for (i, (name, bytes)) in all.iter().enumerate() {
            assert!(!bytes.is_empty(), "{name}");
            assert!(all.iter().skip(i + 1).all(|(other, _)| other != name), "{name} twice");
        }
        assert_eq!(all.iter().find(|(n, _)| *n == "dns-tcp").map(|(_, b)| b.len()), Some(DNS_QUERY.len() + 2));
    }

    #[test]
    fn except_drops_the_protocol_and_its_variants() {
        let names: Vec<_> = other_protocols_except("openvpn").into_iter().map(|(n, _)| n).collect();
        assert!(!names.iter().any(|n| n.starts_with("openvpn")));
        assert!(names.contains(&"dns-tcp"));
        let names: Vec<_> = other_protocols_except("http").into_iter().map(|(n, _)| n).collect();
        assert!(names.contains(&"http2") && !names.contains(&"http"));
    }

    #[test]
    fn verdict_bounds() {
        let data = [0u8; 10];
        assert!(check_verdict(&data, &Verdict::NeedMore(0)).is_ok());
        assert!(check_verdict(&data, &Verdict::NeedMore(11)).is_ok());
        assert!(check_verdict(&data, &Verdict::NeedMore(10)).is_err());
        assert!(check_verdict(&data, &Verdict::NeedMore(MAX_NEED_MORE + 1)).is_err());
        assert!(check_verdict(&data, &Verdict::NoMatch).is_ok());
        assert!(check_need_more(&data, &Verdict::NeedMore(0), false, 64).is_err());
        assert!(check_need_more(&data, &Verdict::NeedMore(65), true, 64).is_err());
        assert!(check_datagram_verdict(&data, &Verdict::NeedMore(11)).is_err());
        assert!(check_protocol(&Verdict::Matched(Detection::new("a")), "a").is_ok());
        assert!(check_protocol(&Verdict::Matched(Detection::new("a")), "b").is_err());
    }

    #[test]
    fn flips_wrap_around() {
        assert_eq!(flipped(b"abc", &[(4, 0x20), (0, 0)]), b"aBc");
        assert_eq!(flipped(b"", &[(4, 0x20)]), b"");
    }

    #[test]
    fn prefixes() {
        check_prefixes(&Lines, b"hello\n", &Peer::test(Transport::Tcp));
        check_prefixes_until(&Lines, b"hi\nmore", 3, &Peer::test(Transport::Tcp));
        check_datagram_prefixes(&Lines, b"x!", &Peer::test(Transport::Udp));
    }

    #[test]
    #[should_panic(expected = "not NeedMore")]
    fn prefixes_catch_an_early_match() {
        check_prefixes(&Lines, b"a\nb\n", &Peer::test(Transport::Tcp));
    }

    #[test]
    #[should_panic(expected = "NeedMore(0)")]
    fn counted_prefixes_refuse_zero() {
        check_counted_prefixes_until(&Lines, b"hello\n", 6, &Peer::test(Transport::Tcp));
    }
}
