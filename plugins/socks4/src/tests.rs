//! Tests on requests captured from curl 7.88.1 (`-x socks4://`,
//! `socks4://alice@`, `socks4a://`) and hand-made edge cases.

use super::*;
use proptest::prelude::*;
use refractium_plugin_sdk::Transport;
use refractium_plugin_sdk::testing::{check_prefixes, check_verdict, flipped, other_protocols_except};

const PLAIN: &[u8] = include_bytes!("../testdata/socks4.bin");
const USER: &[u8] = include_bytes!("../testdata/socks4_user.bin");
const SOCKS4A: &[u8] = include_bytes!("../testdata/socks4a.bin");

fn detect(data: &[u8]) -> Verdict {
    Socks4::new("null").expect("socks4 detector").detect(data, &Peer::test(Transport::Tcp))
}

fn attrs(data: &[u8]) -> (String, String, String) {
    match detect(data) {
        Verdict::Matched(d) => {
            assert_eq!((d.protocol.as_str(), d.attributes.len()), ("socks4", 3));
            let get = |k| d.attribute(k).expect("attribute").to_string();
            (get("version"), get("command"), get("dest"))
        }
        other => panic!("{data:?}: expected a match, got {other:?}"),
    }
}

fn owned(v: &str, c: &str, d: &str) -> (String, String, String) {
    (v.to_string(), c.to_string(), d.to_string())
}

#[test]
fn curl_requests() {
    assert_eq!(attrs(PLAIN), owned("4", "connect", "127.0.0.1:8080"));
    assert_eq!(attrs(USER), owned("4", "connect", "10.1.2.3:8080"));
    assert_eq!(attrs(SOCKS4A), owned("4a", "connect", "www.example.com:80"));
}

#[test]
fn every_prefix_waits() {
    for capture in [PLAIN, USER, SOCKS4A] {
        check_prefixes(&Socks4, capture, &Peer::test(Transport::Tcp));
    }
}

#[test]
fn bind_and_socks4a_forms() {
    assert_eq!(attrs(b"\x04\x02\x00\x00\xc0\x00\x02\x01\x00"), owned("4", "bind", "192.0.2.1:0"));
    assert_eq!(
        attrs(b"\x04\x01\x01\xbb\x00\x00\x00\xffbob\x00DB.Example\x00"),
        owned("4a", "connect", "db.example:443")
    );
    assert_eq!(attrs(b"\x04\x01\x00\x16\x00\x00\x00\x01\x00::1\x00"), owned("4a", "connect", "[::1]:22"));
    // A 255-byte user id is the longest accepted.
    let mut long = PLAIN[..8].to_vec();
    long.extend([b'u'; MAX_FIELD]);
    assert_eq!(detect(&long), Verdict::NeedMore(0));
    long.push(0);
    assert!(detect(&long).is_match());
    // Bytes after the request do not matter.
    assert!(detect(&[SOCKS4A, b"GET / HTTP/1.1\r\n"].concat()).is_match());
}

#[test]
fn invalid_requests() {
    let mut too_long = PLAIN[..8].to_vec();
    too_long.extend([b'u'; MAX_FIELD + 1]);
    let mut long_host = SOCKS4A[..9].to_vec();
    long_host.extend([b'h'; MAX_FIELD + 1]);
    let cases: &[&[u8]] = &[
        b"\x04\x03\x1f\x90\x7f\x00\x00\x01\x00",        // command 3 (UDP) is SOCKS5 only
        b"\x04\x00",                                    // command 0
        b"\x04\x01\x00\x00\x7f\x00\x00\x01\x00",        // CONNECT to port 0
        b"\x04\x01\x00\x50\x00\x00\x00\x00\x00",        // 0.0.0.0
        b"\x04\x01\x00\x50\x7f\x00\x00\x01ab\ncd",      // control byte in the user id
        b"\x04\x01\x00\x50\x00\x00\x00\x07\x00\x00",    // 4a with an empty host
        b"\x04\x01\x00\x50\x00\x00\x00\x07\x00a b\x00", // space in a host
        b"\x05\x01\x00",
        b"\x03\x01",
        &too_long,
        &long_host,
    ];
    for case in cases {
        assert_eq!(detect(case), Verdict::NoMatch, "{case:?}");
    }
}

#[test]
fn other_protocols_do_not_match() {
    for (name, bytes) in other_protocols_except("socks4") {
        assert_eq!(detect(&bytes), Verdict::NoMatch, "{name}");
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..600), start4 in any::<bool>()) {
        let mut data = data;
        if start4 && data.len() >= 2 {
            data[0] = 4;
            data[1] = 1;
        }
        let verdict = detect(&data);
        check_verdict(&data, &verdict).map_err(TestCaseError::fail)?;
        if matches!(verdict, Verdict::NeedMore(_)) {
            prop_assert!(data.len() <= FIXED + 2 * (MAX_FIELD + 1));
        }
    }

    #[test]
    fn mutated_captures(index in 0usize..3, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
                        cut in any::<usize>()) {
        let data = flipped([PLAIN, USER, SOCKS4A][index], &flips);
        let data = &data[..cut % (data.len() + 1)];
        check_verdict(data, &detect(data)).map_err(TestCaseError::fail)?;
    }
}
