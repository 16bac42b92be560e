//! Tests on Connection Requests captured from xfreerdp 2.11.7 (Debian 12),
//! see `testdata/README.md`, hand-made variants, and other protocols' bytes.

use super::*;
use proptest::prelude::*;
use refractium_plugin_sdk::testing::{check_protocol, check_verdict, flipped, other_protocols_except};

const DEFAULT: &[u8] = include_bytes!("../testdata/xfreerdp2_default.bin");
const NOUSER: &[u8] = include_bytes!("../testdata/xfreerdp2_nouser.bin");
const SEC_RDP: &[u8] = include_bytes!("../testdata/xfreerdp2_sec_rdp.bin");
const SEC_TLS: &[u8] = include_bytes!("../testdata/xfreerdp2_sec_tls.bin");
const SEC_EXT: &[u8] = include_bytes!("../testdata/xfreerdp2_sec_ext.bin");
const LB_INFO: &[u8] = include_bytes!("../testdata/xfreerdp2_load_balance_info.bin");
const RESTRICTED: &[u8] = include_bytes!("../testdata/xfreerdp2_restricted_admin.bin");
const CAPTURES: [&[u8]; 7] = [DEFAULT, NOUSER, SEC_RDP, SEC_TLS, SEC_EXT, LB_INFO, RESTRICTED];

fn run(data: &[u8]) -> Verdict {
    Rdp::new("null").expect("rdp detector").detect(data, &Peer::test(Transport::Tcp))
}

fn attrs(verdict: &Verdict) -> Vec<(&str, &str)> {
    let detection = verdict.detection().expect("matched");
    assert_eq!(detection.protocol, "rdp");
    detection.attributes.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// A Connection Request around `user_data`.
fn request(user_data: &[u8]) -> Vec<u8> {
    let len = u16::try_from(FIXED + user_data.len()).expect("small");
    let mut out = vec![3, 0];
    out.extend_from_slice(&len.to_be_bytes());
    out.push(u8::try_from(len - 5).unwrap_or(0xff));
    out.extend_from_slice(&[0xe0, 0, 0, 0x12, 0x34, 0]);
    out.extend_from_slice(user_data);
    out
}

#[test]
fn xfreerdp_requests() {
    assert_eq!(attrs(&run(DEFAULT)), [("cookie", "alice"), ("protocols", "ssl,hybrid")]);
    assert_eq!(attrs(&run(NOUSER)), [("cookie", "root"), ("protocols", "ssl,hybrid")]);
    assert_eq!(attrs(&run(SEC_RDP)), [("cookie", "bob")]);
    assert_eq!(attrs(&run(SEC_TLS)), [("cookie", "carol"), ("protocols", "ssl")]);
    assert_eq!(attrs(&run(SEC_EXT)), [("cookie", "erin"), ("protocols", "ssl,hybrid,hybrid_ex")]);
    assert_eq!(
        attrs(&run(LB_INFO)),
        [("routing_token", "tsv://MS Terminal Services Plugin.1.Sessions"), ("protocols", "ssl,hybrid")]
    );
    assert_eq!(attrs(&run(RESTRICTED)), [("cookie", "gina"), ("protocols", "ssl,hybrid")]);
}

#[test]
fn every_prefix_waits_for_the_whole_tpdu() {
    for capture in CAPTURES {
        for len in 0..capture.len() {
            let want = if len < 4 { FIXED } else { capture.len() };
            assert_eq!(run(&capture[..len]), Verdict::NeedMore(want), "prefix {len} of {capture:02x?}");
        }
        assert!(run(capture).is_match());
        // The client's next bytes (none before the server answers, but the
        // detector must not care).
        let mut more = capture.to_vec();
        more.extend_from_slice(&[3, 0, 1, 0]);
        assert_eq!(run(&more), run(capture));
    }
}

#[test]
fn hand_made_requests() {
    // MS-RDPBCGR 4.1.1: cookie "eltons", standard RDP security.
    let doc =
        b"\x03\x00\x00\x2c\x27\xe0\x00\x00\x00\x00\x00Cookie: mstshash=eltons\r\n\x01\x00\x08\x00\x00\x00\x00\x00";
    assert_eq!(attrs(&run(doc)), [("cookie", "eltons"), ("protocols", "rdp")]);
    // Bare CR (old clients), bare negotiation request, routing token.
    assert_eq!(attrs(&run(&request(b""))), []);
    assert_eq!(attrs(&run(&request(b"\x01\x00\x08\x00\x03\x00\x00\x00"))), [("protocols", "ssl,hybrid")]);
    let token = request(b"Cookie: msts=3640205228.15629.0000\r\n");
    assert_eq!(attrs(&run(&token)), [("routing_token", "Cookie: msts=3640205228.15629.0000")]);
    // Correlation info.
    let mut corr = b"\x01\x08\x08\x00\x0b\x00\x00\x00\x06\x00\x24\x00".to_vec();
    corr.extend_from_slice(&[0x5a; 16]);
    corr.extend_from_slice(&[0; 16]);
    assert_eq!(attrs(&run(&request(&corr))), [("protocols", "ssl,hybrid,hybrid_ex")]);
    corr[12] = 0xf4;
    assert_eq!(run(&request(&corr)), Verdict::NoMatch);
}

#[test]
fn malformed_requests_do_not_match() {
    let good = DEFAULT.to_vec();
    let flip = |at: usize, value: u8| {
        let mut bad = good.clone();
        bad[at] = value;
        bad
    };
    let cases: Vec<Vec<u8>> = vec![
        flip(0, 2),                                       // TPKT version
        flip(1, 1),                                       // TPKT reserved
        flip(4, 0x27),                                    // LI disagrees with TPKT length
        flip(5, 0xd0),                                    // CC, not CR
        flip(5, 0xe1),                                    // credit
        flip(6, 1),                                       // DST-REF
        flip(10, 0x10),                                   // class 1
        flip(33, b'\n'),                                  // no CR LF
        flip(35, 2),                                      // negotiation response type
        flip(36, 0x10),                                   // unknown flag
        flip(37, 9),                                      // negotiation length
        flip(39, 0x23),                                   // unknown protocol bit
        request(b"\x01\x00\x08\x00\x03\x00\x00"),         // short negotiation request
        request(b"\x01\x00\x08\x00\x03\x00\x00\x00\x00"), // trailing byte
        request(b"Cookie: mstshash=a\x01b\r\n"),          // control byte in cookie
        request(b"\r\n"),                                 // empty token
        request(b"Cookie: mstshash=x"),                   // unterminated cookie
        request(b"\x01\x08\x08\x00\x03\x00\x00\x00"),     // correlation flagged, absent
        vec![3, 0, 0, 10, 5, 0xe0, 0, 0, 0, 0],           // TPKT shorter than a CR
        vec![3, 0, 1, 4],                                 // TPKT longer than a CR can be
    ];
    for case in cases {
        assert_eq!(run(&case), Verdict::NoMatch, "{case:02x?}");
    }
}

#[test]
fn udp_is_refused() {
    let rdp = Rdp::new("null").expect("rdp detector");
    assert_eq!(rdp.detect(DEFAULT, &Peer::test(Transport::Udp)), Verdict::NoMatch);
}

#[test]
fn other_protocols_do_not_match_on_the_first_byte() {
    for (name, bytes) in other_protocols_except("rdp") {
        assert_eq!(run(&bytes), Verdict::NoMatch, "{name}");
        assert_eq!(run(&bytes[..1]), Verdict::NoMatch, "{name} first byte");
    }
}

fn check_invariants(data: &[u8]) {
    let verdict = run(data);
    assert_eq!(check_verdict(data, &verdict).and(check_protocol(&verdict, "rdp")), Ok(()));
}

proptest! {
    #[test]
    fn arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        check_invariants(&data);
    }

    #[test]
    fn arbitrary_user_data(data in proptest::collection::vec(prop_oneof![any::<u8>(), Just(b'\r'), Just(b'\n'), Just(1u8)], 0..80)) {
        check_invariants(&request(&data));
    }

    #[test]
    fn flipped_captures(which in 0..CAPTURES.len(), cut in 0usize..80, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4)) {
        let mut data = flipped(CAPTURES[which], &flips);
        data.truncate(cut);
        check_invariants(&data);
    }
}
