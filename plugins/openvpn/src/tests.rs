//! Tests on hard resets captured from OpenVPN 2.6.14 (Debian 12) over TCP
//! and UDP, with no wrapping, tls-auth (SHA1, SHA256, SHA512), tls-crypt and
//! tls-crypt-v2 (see `testdata/README.md`); hand-made variants; and other
//! protocols' bytes.

use super::*;
use proptest::prelude::*;
use refractium_plugin_sdk::testing::{
    MAX_NEED_MORE, check_datagram_prefixes, check_datagram_verdict, check_need_more, check_protocol, flipped,
    other_protocols_except,
};

const TCP: [(&[u8], &str); 6] = [
    (include_bytes!("../testdata/tcp_plain.bin"), "none"),
    (include_bytes!("../testdata/tcp_tlsauth.bin"), "tls-auth"),
    (include_bytes!("../testdata/tcp_tlsauth256.bin"), "tls-auth"),
    (include_bytes!("../testdata/tcp_tlsauth512.bin"), "tls-auth"),
    (include_bytes!("../testdata/tcp_tlscrypt.bin"), "tls-crypt"),
    (include_bytes!("../testdata/tcp_tlscryptv2.bin"), "tls-crypt-v2"),
];
const UDP: [(&[u8], &str); 7] = [
    (include_bytes!("../testdata/udp_plain.bin"), "none"),
    (include_bytes!("../testdata/udp_tlsauth.bin"), "tls-auth"),
    (include_bytes!("../testdata/udp_tlsauth_retransmit.bin"), "tls-auth"),
    (include_bytes!("../testdata/udp_tlsauth256.bin"), "tls-auth"),
    (include_bytes!("../testdata/udp_tlsauth512.bin"), "tls-auth"),
    (include_bytes!("../testdata/udp_tlscrypt.bin"), "tls-crypt"),
    (include_bytes!("../testdata/udp_tlscryptv2.bin"), "tls-crypt-v2"),
];

fn run(data: &[u8], transport: Transport) -> Verdict {
    Openvpn::new("null").expect("openvpn detector").detect(data, &Peer::test(transport))
}

fn tcp(data: &[u8]) -> Verdict {
    run(data, Transport::Tcp)
}

fn udp(data: &[u8]) -> Verdict {
    run(data, Transport::Udp)
}

fn attrs(verdict: &Verdict) -> Vec<(&str, &str)> {
    let detection = verdict.detection().expect("matched");
    assert_eq!(detection.protocol, "openvpn");
    detection.attributes.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn opcode(packet: &[u8]) -> &'static str {
    if packet[0] == 0x50 { "hard-reset-client-v3" } else { "hard-reset-client-v2" }
}

/// The first packet of a TCP capture, without its length prefix.
fn first_packet(capture: &[u8]) -> &[u8] {
    let len = usize::from(u16::from_be_bytes([capture[0], capture[1]]));
    &capture[2..2 + len]
}

/// A packet wrapped in a TCP length prefix.
fn framed(packet: &[u8]) -> Vec<u8> {
    let mut out = u16::try_from(packet.len()).expect("small").to_be_bytes().to_vec();
    out.extend_from_slice(packet);
    out
}

#[test]
fn tcp_captures() {
    for (capture, wrapping) in TCP {
        let packet = first_packet(capture);
        let expected = [("opcode", opcode(packet)), ("wrapping", wrapping)];
        // The capture holds the reset and its retransmission.
        assert_eq!(attrs(&tcp(capture)), expected, "{wrapping}");
        assert_eq!(attrs(&tcp(&framed(packet))), expected, "{wrapping}");
    }
}

#[test]
fn udp_captures() {
    for (datagram, wrapping) in UDP {
        assert_eq!(attrs(&udp(datagram)), [("opcode", opcode(datagram)), ("wrapping", wrapping)], "{wrapping}");
        // The same bytes are not a TCP stream (no length prefix).
        assert_eq!(tcp(datagram), Verdict::NoMatch, "{wrapping}");
    }
}

#[test]
fn every_tcp_prefix_waits_for_the_whole_packet() {
    for (capture, wrapping) in TCP {
        let end = first_packet(capture).len() + 2;
        for len in 0..end {
            let want = if len < 2 { 2 } else { end };
            assert_eq!(tcp(&capture[..len]), Verdict::NeedMore(want), "prefix {len} of {wrapping}");
        }
        for len in end..=capture.len() {
            assert!(tcp(&capture[..len]).is_match(), "prefix {len} of {wrapping}");
        }
    }
}

#[test]
fn udp_decides_on_the_first_datagram() {
    // A datagram is whole: a shorter one is not a reset, never "need more".
    for (datagram, _) in UDP {
        check_datagram_prefixes(&Openvpn, datagram, &Peer::test(Transport::Udp));
    }
}

#[test]
fn legacy_v1_over_udp_only() {
    // Hand-made: OpenVPN 2.5+ cannot send key-method 1 resets any more, so
    // this is the captured V2 datagram with the V1 opcode byte.
    let (plain, _) = UDP[0];
    let mut v1 = plain.to_vec();
    v1[0] = OP_V1 << 3;
    assert_eq!(attrs(&udp(&v1)), [("opcode", "hard-reset-client-v1"), ("wrapping", "none")]);
    let (tls_auth, _) = UDP[1];
    let mut v1 = tls_auth.to_vec();
    v1[0] = OP_V1 << 3;
    assert_eq!(attrs(&udp(&v1)), [("opcode", "hard-reset-client-v1"), ("wrapping", "tls-auth")]);
    assert_eq!(tcp(&framed(&v1)), Verdict::NoMatch);
    // tls-crypt was never used with V1.
    let (crypt, _) = UDP[5];
    let mut v1 = crypt.to_vec();
    v1[0] = OP_V1 << 3;
    assert_eq!(udp(&v1), Verdict::NoMatch);
}

/// The captured UDP datagram `index` with byte `at` set to `value`.
fn patched(index: usize, at: usize, value: u8) -> Vec<u8> {
    let mut packet = UDP[index].0.to_vec();
    packet[at] = value;
    packet
}

#[test]
fn malformed_resets_do_not_match() {
    let mut cases = vec![
        ("server reset", patched(0, 0, 8 << 3)),
        ("soft reset", patched(0, 0, 3 << 3)),
        ("key id 1", patched(0, 0, (OP_V2 << 3) | 1)),
        ("ack array", patched(0, 9, 1)),
        ("message packet-id", patched(0, 13, 1)),
        ("tls-auth packet-id 0", patched(1, 32, 0)),
        ("tls-auth packet-id 256", patched(1, 31, 1)),
        ("tls-auth time 1970", patched(1, 33, 0)),
        ("tls-auth time 2050", patched(1, 33, 0x98)),
        ("tls-auth ack array", patched(1, 37, 1)),
        ("tls-crypt packet-id 0", patched(5, 12, 0)),
        ("tls-crypt-v2 packet-id 0", patched(6, 12, 0)),
        ("tls-crypt-v2 marker 0x0e", patched(6, 9, 0x0e)),
        ("tls-crypt-v2 key too long", patched(6, 351, 0x2c)),
        ("tls-crypt-v2 key too short", patched(6, 352, 0x20)),
        ("tls-crypt-v2 time", patched(6, 13, 0)),
    ];
    let mut zero_sid = UDP[0].0.to_vec();
    zero_sid[1..9].fill(0);
    cases.push(("zero session id", zero_sid));
    let mut longer = UDP[0].0.to_vec();
    longer.push(0);
    cases.push(("payload after a plain reset", longer));
    let mut shorter = UDP[4].0.to_vec();
    shorter.truncate(shorter.len() - 1);
    cases.push(("tls-auth of no known digest size", shorter));
    for (name, packet) in cases {
        assert_eq!(udp(&packet), Verdict::NoMatch, "udp: {name}");
        assert_eq!(tcp(&framed(&packet)), Verdict::NoMatch, "tcp: {name}");
    }
    // A tls-crypt-v2 reset without OpenVPN 2.6's marker (older clients).
    let older = patched(6, 9, 0);
    assert_eq!(attrs(&udp(&older)), [("opcode", "hard-reset-client-v3"), ("wrapping", "tls-crypt-v2")]);
}

#[test]
fn tcp_refuses_early() {
    // Lengths that no layout has, or that disagree with the opcode.
    for case in [&b"\x06"[..], b"\x00\x0f", b"\x00\x36\x50", b"\x01\x61\x38", b"\x00\x0e\x39"] {
        assert_eq!(tcp(case), Verdict::NoMatch, "{case:02x?}");
    }
    assert_eq!(tcp(b"\x00\x0e\x38"), Verdict::NeedMore(16));
}

#[test]
fn other_protocols_do_not_match() {
    for (name, bytes) in other_protocols_except("openvpn") {
        assert_eq!(tcp(&bytes), Verdict::NoMatch, "tcp: {name}");
        assert_eq!(udp(&bytes), Verdict::NoMatch, "udp: {name}");
        // Refused by the length and opcode, within three bytes.
        assert_eq!(tcp(&bytes[..3]), Verdict::NoMatch, "tcp: {name} first bytes");
    }
}

fn check_invariants(data: &[u8]) {
    let verdict = tcp(data);
    assert_eq!(check_need_more(data, &verdict, false, MAX_NEED_MORE).and(check_protocol(&verdict, "openvpn")), Ok(()));
    let verdict = udp(data);
    assert_eq!(check_datagram_verdict(data, &verdict).and(check_protocol(&verdict, "openvpn")), Ok(()));
}

proptest! {
    #[test]
    fn arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        check_invariants(&data);
    }

    #[test]
    fn reset_like(op in prop_oneof![Just(0x08u8), Just(0x38), Just(0x50)], len in prop_oneof![Just(14usize), Just(42), Just(54), Just(86), 0usize..1400], seed in any::<u64>()) {
        // The opcode byte and length right, the rest pseudo-random: matches
        // only by the rarest chance, and must never panic.
        let mut data = vec![op];
        let mut x = seed | 1;
        while data.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            data.push(x.to_le_bytes()[0]);
        }
        check_invariants(&data);
        check_invariants(&framed(&data));
    }

    #[test]
    fn flipped_captures(tcp_side in any::<bool>(), which in 0usize..7, cut in 0usize..800, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4)) {
        let capture = if tcp_side { TCP[which % TCP.len()].0 } else { UDP[which].0 };
        let mut data = flipped(capture, &flips);
        data.truncate(cut);
        check_invariants(&data);
    }
}
