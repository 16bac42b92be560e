//! Tests on messages captured from `dig` and `nsupdate` (BIND 9.18.49), the
//! RFC 9001 QUIC Initial, and hand-made edge cases.

use super::*;
use proptest::prelude::*;
use refractium_plugin_sdk::testing::{
    check_counted_prefixes_until, check_datagram_prefixes, check_datagram_verdict, check_verdict, flipped, hex,
    other_protocols_except,
};

const UDP_A: &[u8] = include_bytes!("../testdata/dns_udp_a.bin");
const UDP_AAAA_NOEDNS: &[u8] = include_bytes!("../testdata/dns_udp_aaaa_noedns.bin");
const UDP_HTTPS_COOKIE: &[u8] = include_bytes!("../testdata/dns_udp_https_cookie.bin");
const UDP_ROOT_NS: &[u8] = include_bytes!("../testdata/dns_udp_root_ns.bin");
const UDP_TSIG: &[u8] = include_bytes!("../testdata/dns_udp_tsig.bin");
const UDP_UPDATE: &[u8] = include_bytes!("../testdata/dns_udp_update.bin");
const TCP_MX: &[u8] = include_bytes!("../testdata/dns_tcp_mx.bin");
const TCP_AXFR_TSIG: &[u8] = include_bytes!("../testdata/dns_tcp_axfr_tsig.bin");

fn detect(data: &[u8], transport: Transport) -> Verdict {
    Dns::new("null").expect("dns detector").detect(data, &Peer::test(transport))
}

fn udp(data: &[u8]) -> Verdict {
    detect(data, Transport::Udp)
}

fn tcp(data: &[u8]) -> Verdict {
    detect(data, Transport::Tcp)
}

/// `(qname, qtype)` of a match, or a panic naming the verdict.
fn question(verdict: &Verdict) -> (Option<&str>, Option<&str>) {
    match verdict {
        Verdict::Matched(d) => {
            assert_eq!((d.protocol.as_str(), d.sni.as_deref(), d.alpn.len()), ("dns", None, 0));
            (d.attribute("qname"), d.attribute("qtype"))
        }
        other => panic!("expected a match, got {other:?}"),
    }
}

fn with_prefix(message: &[u8]) -> Vec<u8> {
    let len = u16::try_from(message.len()).expect("fits u16");
    [&len.to_be_bytes()[..], message].concat()
}

#[test]
fn dig_udp_queries() {
    assert_eq!(question(&udp(UDP_A)), (Some("example.com"), Some("A")));
    assert_eq!(question(&udp(UDP_AAAA_NOEDNS)), (Some("www.example.org"), Some("AAAA")));
    assert_eq!(question(&udp(UDP_HTTPS_COOKIE)), (Some("cloudflare.com"), Some("HTTPS")));
    assert_eq!(question(&udp(UDP_ROOT_NS)), (Some("."), Some("NS")));
    assert_eq!(question(&udp(UDP_TSIG)), (Some("example.org"), Some("TXT")));
}

#[test]
fn nsupdate_update() {
    // Zone section example.test SOA, one update record with a compressed name.
    assert_eq!(question(&udp(UDP_UPDATE)), (Some("example.test"), Some("SOA")));
}

#[test]
fn dig_tcp_queries_byte_by_byte() {
    for (capture, expected) in [(TCP_MX, ("example.net", "MX")), (TCP_AXFR_TSIG, ("example.com", "AXFR"))] {
        check_counted_prefixes_until(&Dns, capture, capture.len(), &Peer::test(Transport::Tcp));
        assert_eq!(question(&tcp(capture)), (Some(expected.0), Some(expected.1)));
        // A pipelined second query does not change the answer.
        let two = [capture, capture].concat();
        assert_eq!(question(&tcp(&two)), (Some(expected.0), Some(expected.1)));
    }
    // Once the length is read, the whole message is waited for.
    assert_eq!(tcp(&TCP_MX[..20]), Verdict::NeedMore(TCP_MX.len()));
}

#[test]
fn udp_captures_over_tcp_and_back() {
    assert_eq!(question(&tcp(&with_prefix(UDP_TSIG))), (Some("example.org"), Some("TXT")));
    assert_eq!(question(&udp(&TCP_MX[2..])), (Some("example.net"), Some("MX")));
}

#[test]
fn truncated_or_extended_datagrams_do_not_match() {
    for capture in [UDP_A, UDP_AAAA_NOEDNS, UDP_HTTPS_COOKIE, UDP_ROOT_NS, UDP_TSIG, UDP_UPDATE] {
        check_datagram_prefixes(&Dns, capture, &Peer::test(Transport::Udp));
        let mut longer = capture.to_vec();
        longer.push(0);
        assert_eq!(udp(&longer), Verdict::NoMatch);
    }
}

#[test]
fn tcp_length_must_agree() {
    let mut short = TCP_MX.to_vec();
    short[1] -= 1; // claims one byte less: the OPT record overruns it
    assert_eq!(tcp(&short), Verdict::NoMatch);
    let mut long = TCP_MX.to_vec();
    long[1] += 1; // one byte more than the records: garbage after them
    long.push(0);
    assert_eq!(tcp(&long), Verdict::NoMatch);
    assert_eq!(tcp(&[0, 11]), Verdict::NoMatch);
    assert_eq!(tcp(&[0]), Verdict::NeedMore(2));
}

/// A query for `example.com` A with the given header fields.
fn query(flags: [u8; 2], counts: [u16; 4], tail: &[u8]) -> Vec<u8> {
    let mut m = vec![0x12, 0x34, flags[0], flags[1]];
    for count in counts {
        m.extend(count.to_be_bytes());
    }
    m.extend(b"\x07example\x03com\x00\x00\x01\x00\x01");
    m.extend(tail);
    m
}

#[test]
fn header_rules() {
    let ok = |flags, counts, tail: &[u8]| udp(&query(flags, counts, tail)).is_match();
    assert!(ok([0x01, 0x00], [1, 0, 0, 0], b""));
    assert!(ok([0x00, 0xb0], [1, 0, 0, 0], b"")); // RA, AD, CD tolerated
    assert!(!ok([0x81, 0x80], [1, 0, 0, 0], b"")); // a response
    assert!(!ok([0x09, 0x00], [1, 0, 0, 0], b"")); // opcode 1 (IQUERY)
    assert!(!ok([0x19, 0x00], [1, 0, 0, 0], b"")); // opcode 3
    assert!(!ok([0x03, 0x00], [1, 0, 0, 0], b"")); // TC
    assert!(!ok([0x05, 0x00], [1, 0, 0, 0], b"")); // AA in a QUERY
    assert!(!ok([0x01, 0x40], [1, 0, 0, 0], b"")); // Z
    assert!(!ok([0x01, 0x03], [1, 0, 0, 0], b"")); // RCODE
    assert!(!ok([0x01, 0x00], [2, 0, 0, 0], b"\x07example\x03com\x00\x00\x01\x00\x01"));
    assert!(!ok([0x01, 0x00], [0, 0, 0, 0], b"")); // QUERY without question
    assert!(!ok([0x01, 0x00], [1, 0, 0, 3], b""));
    // An answer in a QUERY, even a well-formed one.
    assert!(!ok([0x01, 0x00], [1, 1, 0, 0], b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\x7f\x00\x00\x01"));
    // NOTIFY (AA set) with the zone's SOA serial as an answer, pointer to the question.
    let soa = b"\xc0\x0c\x00\x06\x00\x01\x00\x00\x0e\x10\x00\x16\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";
    let mut notify = query([0x24, 0x00], [1, 1, 0, 0], soa);
    notify[0x1a] = 6; // QTYPE SOA
    assert_eq!(question(&udp(&notify)), (Some("example.com"), Some("SOA")));
    // STATUS with no question at all.
    let status = query([0x10, 0x00], [0, 0, 0, 0], b"");
    assert_eq!(question(&udp(&status[..12])), (None, None));
}

#[test]
fn question_rules() {
    let q = |name: &[u8], tail: &[u8]| {
        let mut m = vec![0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        m.extend(name);
        m.extend(tail);
        udp(&m)
    };
    assert_eq!(question(&q(b"\x03WwW\x02Ex\x00", b"\x00\x0f\x00\x03")), (Some("www.ex"), Some("MX")));
    assert_eq!(question(&q(b"\x04a.b\\\x00", b"\x12\x34\x00\x01")), (Some("a\\046b\\092"), Some("4660")));
    assert_eq!(question(&q(b"\x01\x07\x00", b"\x00\x10\x00\xff")), (Some("\\007"), Some("TXT")));
    assert_eq!(q(b"\x03www\x00", b"\x00\x00\x00\x01"), Verdict::NoMatch); // QTYPE 0
    assert_eq!(q(b"\x03www\x00", b"\x00\x01\x00\x02"), Verdict::NoMatch); // class CS
    assert_eq!(q(b"\x03www\x00", b"\x00\x01\x00\xfe"), Verdict::NoMatch); // class NONE
    assert_eq!(q(b"\xc0\x0c", b"\x00\x01\x00\x01"), Verdict::NoMatch); // pointer
    assert_eq!(q(b"\x41www\x00", b"\x00\x01\x00\x01"), Verdict::NoMatch); // extended label
    let long_label = [&[64u8][..], &[b'a'; 64], b"\x00"].concat();
    assert_eq!(q(&long_label, b"\x00\x01\x00\x01"), Verdict::NoMatch);
    // Names up to 255 bytes on the wire: 4 labels of 63 and one of 1 = 255.
    let name = |last: usize| {
        let mut n = Vec::new();
        for _ in 0..3 {
            n.push(63);
            n.extend([b'a'; 63]);
        }
        n.push(u8::try_from(last).expect("small"));
        n.extend(vec![b'b'; last]);
        n.push(0);
        n
    };
    assert!(q(&name(61), b"\x00\x01\x00\x01").is_match());
    assert_eq!(q(&name(62), b"\x00\x01\x00\x01"), Verdict::NoMatch);
}

#[test]
fn additional_records() {
    // EDNS version 1, and an extended RCODE, are refused; so are two OPTs.
    let mut v1 = UDP_A.to_vec();
    v1[0x23] = 1;
    assert_eq!(udp(&v1), Verdict::NoMatch);
    let mut ext = UDP_A.to_vec();
    ext[0x22] = 1;
    assert_eq!(udp(&ext), Verdict::NoMatch);
    let opt = &UDP_ROOT_NS[0x11..];
    let mut two = UDP_ROOT_NS.to_vec();
    two[11] = 2;
    two.extend(opt);
    assert_eq!(udp(&two), Verdict::NoMatch);
    // An option overrunning the OPT record.
    let mut bad = UDP_A.to_vec();
    bad[0x2b] += 1;
    assert_eq!(udp(&bad), Verdict::NoMatch);
    // TSIG must come last: swap it in front of the OPT.
    let (head, rest) = UDP_TSIG.split_at(0x1d);
    let (opt, tsig) = rest.split_at(0x17);
    let swapped = [head, tsig, opt].concat();
    assert_eq!(udp(&swapped), Verdict::NoMatch);
    // An A record as additional data in a query.
    let mut glue = query([1, 0], [1, 0, 0, 1], b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\x7f\x00\x00\x01");
    assert_eq!(udp(&glue), Verdict::NoMatch);
    glue[2] = 0x28; // ... is fine in an UPDATE (with an SOA zone)
    glue[0x1a] = 6;
    assert!(udp(&glue).is_match());
}

#[test]
fn compression_pointers_must_point_back() {
    // UPDATE record names: at the zone (ok), at itself, forward, into the header.
    let update = |ptr: [u8; 2]| {
        let mut m = query([0x28, 0], [1, 0, 1, 0], &ptr);
        m[0x1a] = 6;
        m.extend(b"\x00\x01\x00\xff\x00\x00\x00\x00\x00\x00");
        udp(&m)
    };
    assert!(update([0xc0, 0x0c]).is_match());
    assert!(update([0xc0, 0x14]).is_match()); // "com"
    assert_eq!(update([0xc0, 0x1d]), Verdict::NoMatch);
    assert_eq!(update([0xc0, 0x30]), Verdict::NoMatch);
    assert_eq!(update([0xc0, 0x04]), Verdict::NoMatch);
    assert_eq!(update([0x80, 0x0c]), Verdict::NoMatch);
    // A chain: a name pointing at a name that points at the zone.
    let mut m = query([0x28, 0], [1, 0, 2, 0], b"\x04host\xc0\x0c\x00\x01\x00\xff\x00\x00\x00\x00\x00\x00");
    m[0x1a] = 6;
    m.extend(b"\x03www\xc0\x1d\x00\x01\x00\xff\x00\x00\x00\x00\x00\x00");
    assert!(udp(&m).is_match());
    // Loops: a label followed by a pointer back to it, and a pointer to a pointer to itself.
    for looping in [&b"\x01x\xc0\x1d"[..], b"\xc0\x1f\xc0\x1d"] {
        let mut m = query([0x28, 0], [1, 0, 1, 0], looping);
        m[0x1a] = 6;
        m.extend(b"\x00\x01\x00\xff\x00\x00\x00\x00\x00\x00");
        assert_eq!(udp(&m), Verdict::NoMatch, "{looping:?}");
    }
}

#[test]
fn long_tcp_update_matches_on_its_question() {
    // An UPDATE too long to wait for: it matches once the zone is read.
    let mut m = query([0x28, 0], [1, 0, 200, 0], b"");
    m[0x1a] = 6;
    let record = b"\x04host\xc0\x0c\x00\x10\x00\x01\x00\x00\x01\x2c\x00\x0a\x09abcdefghi";
    for _ in 0..200 {
        m.extend(record);
    }
    let framed = with_prefix(&m);
    assert!(framed.len() > TCP_WAIT);
    for len in 0..16 {
        assert!(matches!(tcp(&framed[..len]), Verdict::NeedMore(n) if n > len && n <= 64), "prefix {len}");
    }
    assert_eq!(question(&tcp(&framed[..40])), (Some("example.com"), Some("SOA")));
    assert!(tcp(&framed).is_match());
    assert!(udp(&m).is_match());
}

#[test]
fn other_protocols_do_not_match() {
    for (name, bytes) in other_protocols_except("dns") {
        assert_eq!(udp(&bytes), Verdict::NoMatch, "udp: {name}");
        // Over TCP a few short first flights read as a length prefix and
        // are waited for; the text protocols are refused at once.
        if matches!(name, "http" | "http2" | "ssh" | "tls" | "redis") {
            assert_eq!(tcp(&bytes), Verdict::NoMatch, "tcp: {name}");
        } else {
            assert!(!tcp(&bytes).is_match(), "tcp: {name}");
        }
    }
    let quic = hex(include_str!("../testdata/quic_rfc9001_a2_client_initial.hex"));
    assert_eq!(quic.len(), 1200);
    assert_eq!(udp(&quic), Verdict::NoMatch);
    // WireGuard handshake initiation: type 1, then sender index and keys.
    let mut wg = vec![1, 0, 0, 0, 0x3f, 0x12, 0x9a, 0x51];
    wg.extend((0u8..140).map(|i| i.wrapping_mul(37)));
    assert_eq!(udp(&wg), Verdict::NoMatch);
    // OpenVPN P_CONTROL_HARD_RESET_CLIENT_V2 without tls-auth.
    let ovpn = hex("38 a1b2c3d4e5f60718 00 00000000");
    assert_eq!(udp(&ovpn), Verdict::NoMatch);
}

fn valid_inputs() -> Vec<(Vec<u8>, Transport)> {
    let mut inputs: Vec<_> = [UDP_A, UDP_AAAA_NOEDNS, UDP_HTTPS_COOKIE, UDP_ROOT_NS, UDP_TSIG, UDP_UPDATE]
        .iter()
        .map(|c| (c.to_vec(), Transport::Udp))
        .collect();
    inputs.extend([TCP_MX, TCP_AXFR_TSIG].iter().map(|c| (c.to_vec(), Transport::Tcp)));
    inputs
}

fn check(data: &[u8], transport: Transport) -> Result<(), TestCaseError> {
    let verdict = detect(data, transport);
    match transport {
        Transport::Tcp => check_verdict(data, &verdict),
        Transport::Udp => check_datagram_verdict(data, &verdict),
    }
    .map_err(TestCaseError::fail)
}

proptest! {
    #[test]
    fn arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..600), is_tcp in any::<bool>()) {
        check(&data, if is_tcp { Transport::Tcp } else { Transport::Udp })?;
    }

    #[test]
    fn mutated_captures(index in 0usize..8, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
                        cut in any::<usize>()) {
        let (data, transport) = valid_inputs().swap_remove(index);
        let data = flipped(&data, &flips);
        let cut = cut % (data.len() + 1);
        check(&data[..cut], transport)?;
        check(&data, transport)?;
    }
}
