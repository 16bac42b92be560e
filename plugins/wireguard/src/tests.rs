//! Tests on handshake initiations captured from wireguard-go 0.0.20220316
//! (Debian 12, configured with wireguard-tools 1.0.20210914), see
//! `testdata/README.md`, hand-made variants, and other protocols' bytes.

use super::*;
use proptest::prelude::*;
use refractium_plugin_sdk::testing::{
    check_datagram_prefixes, check_datagram_verdict, check_protocol, flipped, other_protocols_except,
};

const INIT: &[u8] = include_bytes!("../testdata/wireguard_go_initiation.bin");
const INIT_PSK: &[u8] = include_bytes!("../testdata/wireguard_go_initiation_psk.bin");

fn run(data: &[u8], transport: Transport) -> Verdict {
    Wireguard::new("null").expect("wireguard detector").detect(data, &Peer::test(transport))
}

fn udp(data: &[u8]) -> Verdict {
    run(data, Transport::Udp)
}

fn sender(verdict: &Verdict) -> &str {
    let detection = verdict.detection().expect("matched");
    assert_eq!(detection.protocol, "wireguard");
    assert_eq!(detection.attributes.len(), 1);
    detection.attribute("sender").expect("sender")
}

fn patched(at: usize, value: u8) -> Vec<u8> {
    let mut data = INIT.to_vec();
    data[at] = value;
    data
}

#[test]
fn wireguard_go_initiations() {
    assert_eq!(INIT.len(), INITIATION_LEN);
    assert_eq!(sender(&udp(INIT)), "bc6277d4");
    assert_eq!(sender(&udp(INIT_PSK)), "2e140880");
}

#[test]
fn later_datagrams_after_the_first_are_not_looked_at() {
    let mut data = INIT.to_vec();
    data.extend_from_slice(INIT_PSK);
    assert_eq!(udp(&data), udp(INIT));
}

#[test]
fn decides_on_the_first_datagram() {
    // A datagram is whole: a shorter one is not an initiation.
    check_datagram_prefixes(&Wireguard, INIT, &Peer::test(Transport::Udp));
}

#[test]
fn tcp_is_refused() {
    assert_eq!(run(INIT, Transport::Tcp), Verdict::NoMatch);
}

#[test]
fn cookie_mac2_is_accepted() {
    // Hand-made: under load a peer repeats its initiation with mac2 set from
    // a cookie reply; our capture had none, so mac2 is filled in here.
    let mut data = INIT.to_vec();
    data[132..148].copy_from_slice(&[0x5a; 16]);
    assert_eq!(sender(&udp(&data)), "bc6277d4");
}

#[test]
fn malformed_initiations_do_not_match() {
    let mut cases = vec![
        ("response type", patched(0, 2)),
        ("cookie reply type", patched(0, 3)),
        ("transport data type", patched(0, 4)),
        ("reserved byte", patched(1, 1)),
        ("reserved byte 3", patched(3, 0x80)),
        ("non-canonical ephemeral key", patched(39, INIT[39] | 0x80)),
    ];
    let mut zero = INIT.to_vec();
    zero[8..40].fill(0);
    cases.push(("zero ephemeral key", zero));
    let mut zero = INIT.to_vec();
    zero[116..132].fill(0);
    cases.push(("zero mac1", zero));
    let mut header_only = vec![0; INITIATION_LEN];
    header_only[0] = 1;
    cases.push(("header and zeros", header_only));
    // A 92-byte handshake response (type 2) with its fields filled.
    let mut response = vec![0x77; 92];
    response[..4].copy_from_slice(&[2, 0, 0, 0]);
    cases.push(("handshake response", response));
    for (name, data) in cases {
        assert_eq!(udp(&data), Verdict::NoMatch, "{name}");
    }
}

/// A 148-byte DNS query for a long name, id 0x0100 and flags 0 (no
/// recursion wanted): its first four bytes are a WireGuard initiation's, and
/// where mac1 would be there are letters, not zeros.
fn dns_query_like_wireguard() -> Vec<u8> {
    let mut q = b"\x01\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00".to_vec();
    for label in [63, 63, 2] {
        q.push(label);
        q.extend(std::iter::repeat_n(b'a', usize::from(label)));
    }
    q.extend_from_slice(b"\x00\x00\x01\x00\x01");
    q
}

/// Other protocols' first bytes, and a DNS query that starts like an
/// initiation.
fn others() -> Vec<(&'static str, Vec<u8>)> {
    let mut others = other_protocols_except("wireguard");
    others.push(("dns-like-wireguard", dns_query_like_wireguard()));
    others.push(("zeros-200", vec![0; 200]));
    others
}

#[test]
fn other_protocols_do_not_match() {
    assert_eq!(dns_query_like_wireguard().len(), INITIATION_LEN);
    for (name, bytes) in others() {
        assert_eq!(udp(&bytes), Verdict::NoMatch, "{name}");
    }
}

fn check_invariants(data: &[u8]) {
    // Never waits, matches only datagrams.
    assert_eq!(run(data, Transport::Tcp), Verdict::NoMatch);
    let verdict = udp(data);
    assert_eq!(check_datagram_verdict(data, &verdict).and(check_protocol(&verdict, "wireguard")), Ok(()));
}

proptest! {
    #[test]
    fn arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        check_invariants(&data);
    }

    #[test]
    fn flipped_initiations(cut in 0usize..300, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4)) {
        let mut data = flipped(&[INIT, INIT_PSK].concat(), &flips);
        data.truncate(cut);
        check_invariants(&data);
    }
}
