//! Tests on greetings captured from curl 7.88.1 (`-x socks5://` and
//! `-x socks5h://user:pass@`) and hand-made edge cases.

use super::*;
use proptest::prelude::*;
use refractium_plugin_sdk::Transport;
use refractium_plugin_sdk::testing::{check_need_more, flipped, other_protocols_except};

const NOAUTH: &[u8] = include_bytes!("../testdata/socks5.bin");
const AUTH: &[u8] = include_bytes!("../testdata/socks5_auth.bin");

fn detect(data: &[u8]) -> Verdict {
    Socks5::new("null").expect("socks5 detector").detect(data, &Peer::test(Transport::Tcp))
}

fn methods(data: &[u8]) -> String {
    match detect(data) {
        Verdict::Matched(d) => {
            assert_eq!((d.protocol.as_str(), d.attributes.len()), ("socks5", 1));
            d.attribute("methods").expect("methods").to_string()
        }
        other => panic!("{data:?}: expected a match, got {other:?}"),
    }
}

#[test]
fn curl_greetings() {
    assert_eq!(methods(NOAUTH), "0,1");
    assert_eq!(methods(AUTH), "0,1,2");
}

#[test]
fn every_prefix_waits() {
    for capture in [NOAUTH, AUTH] {
        assert_eq!(detect(&capture[..0]), Verdict::NeedMore(2));
        assert_eq!(detect(&capture[..1]), Verdict::NeedMore(2));
        for len in 2..capture.len() {
            assert_eq!(detect(&capture[..len]), Verdict::NeedMore(capture.len()), "prefix {len}");
        }
    }
}

#[test]
fn method_ranges() {
    assert_eq!(methods(b"\x05\x01\x02"), "2");
    assert_eq!(methods(b"\x05\x03\x09\x80\xfe"), "9,128,254");
    let all: Vec<u8> = (0x00..=0x09).chain(0x80..=0xfe).collect();
    let greeting = [&[5, u8::try_from(all.len()).expect("fits")][..], &all].concat();
    assert_eq!(greeting.len(), 2 + 137);
    assert!(detect(&greeting).is_match());
    for bad in [&b"\x05\x00"[..], b"\x05\x01\xff", b"\x05\x01\x0a", b"\x05\x02\x00\x7f", b"\x04\x01\x00"] {
        assert_eq!(detect(bad), Verdict::NoMatch, "{bad:?}");
    }
    // A bad method is refused as soon as it arrives.
    assert_eq!(detect(b"\x05\x09\x00\x20"), Verdict::NoMatch);
}

#[test]
fn optimistic_clients() {
    // "No auth" offered, the CONNECT request follows at once.
    assert_eq!(methods(b"\x05\x01\x00\x05\x01\x00\x03\x0bexample.com\x01\xbb"), "0");
    assert_eq!(methods(b"\x05\x01\x00\x05"), "0");
    // Username/password offered, the RFC 1929 sub-negotiation follows.
    assert_eq!(methods(b"\x05\x01\x02\x01\x05alice\x03pwd"), "2");
    let refused: &[&[u8]] = &[
        b"\x05\x01\x00\x01\x05alice",          // no user/pass offered
        b"\x05\x01\x02\x05\x01\x00\x01",       // user/pass offered, no "no auth"
        b"\x05\x01\x00\x05\x04\x00\x01",       // command 4
        b"\x05\x01\x00\x05\x01\x01\x01",       // reserved byte set
        b"\x05\x01\x00\x05\x01\x00\x02",       // address type 2
        b"\x05\x01\x00\x05\x01\x00\x03\x00",   // empty domain
        b"\x05\x01\x02\x01\x00",               // empty user name
        b"\x05\x01\x00GET / HTTP/1.1\r\n\r\n", // not SOCKS after all
    ];
    for case in refused {
        assert_eq!(detect(case), Verdict::NoMatch, "{case:?}");
    }
}

#[test]
fn other_protocols_do_not_match() {
    for (name, bytes) in other_protocols_except("socks5") {
        assert_eq!(detect(&bytes), Verdict::NoMatch, "{name}");
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..300), start5 in any::<bool>()) {
        let mut data = data;
        if start5 && !data.is_empty() {
            data[0] = 5;
        }
        check_need_more(&data, &detect(&data), false, 257).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn mutated_captures(index in 0usize..2, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..3),
                        cut in any::<usize>()) {
        let data = flipped([NOAUTH, AUTH][index], &flips);
        let data = &data[..cut % (data.len() + 1)];
        check_need_more(data, &detect(data), false, 257).map_err(TestCaseError::fail)?;
    }
}
