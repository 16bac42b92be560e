//! Tests on bytes captured from psql 15.18 (libpq 15, Debian 12), see
//! `testdata/README.md`, hand-made variants, and other protocols' bytes.

use super::*;
use proptest::prelude::*;
use refractium_plugin_sdk::testing::{check_protocol, check_verdict, flipped, other_protocols_except};

const STARTUP: &[u8] = include_bytes!("../testdata/psql15_startup.bin");
const SSL: &[u8] = include_bytes!("../testdata/psql15_sslrequest.bin");
const GSSENC: &[u8] = include_bytes!("../testdata/psql15_gssencrequest.bin");
const CANCEL: &[u8] = include_bytes!("../testdata/psql15_cancelrequest.bin");
const CAPTURES: [&[u8]; 4] = [STARTUP, SSL, GSSENC, CANCEL];

fn run(data: &[u8]) -> Verdict {
    Postgres::new("null").expect("postgres detector").detect(data, &Peer::test(Transport::Tcp))
}

fn attrs(verdict: &Verdict) -> Vec<(&str, &str)> {
    let detection = verdict.detection().expect("matched");
    assert_eq!(detection.protocol, "postgres");
    detection.attributes.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// A StartupMessage with `code` and the given parameters.
fn startup_message(code: u32, params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    framed(code, &body)
}

fn framed(code: u32, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(8 + body.len()).expect("small");
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(body);
    out
}

#[test]
fn psql_startup() {
    let verdict = run(STARTUP);
    assert_eq!(
        attrs(&verdict),
        [
            ("request", "startup"),
            ("protocol", "3.0"),
            ("user", "alice"),
            ("database", "shop"),
            ("application_name", "psql")
        ]
    );
}

#[test]
fn psql_requests() {
    assert_eq!(attrs(&run(SSL)), [("request", "ssl")]);
    assert_eq!(attrs(&run(GSSENC)), [("request", "gssenc")]);
    assert_eq!(attrs(&run(CANCEL)), [("request", "cancel")]);
}

#[test]
fn every_prefix_waits_for_the_whole_message() {
    for capture in CAPTURES {
        for len in 0..capture.len() {
            let want = if len < 8 { 8 } else { capture.len() };
            assert_eq!(run(&capture[..len]), Verdict::NeedMore(want), "prefix {len} of {capture:02x?}");
        }
        assert!(run(capture).is_match());
    }
}

#[test]
fn bytes_after_the_message_are_not_looked_at() {
    let mut data = STARTUP.to_vec();
    data.extend_from_slice(b"p\0\0\0\x0bsecret\0");
    assert_eq!(run(&data), run(STARTUP));
}

#[test]
fn newer_protocols_and_longer_cancel_keys() {
    // Protocol 3.2 (PostgreSQL 18) with a protocol extension option.
    let msg = startup_message(0x0003_0002, &[("user", "bob"), ("_pq_.test", "x"), ("database", "db")]);
    assert_eq!(attrs(&run(&msg)), [("request", "startup"), ("protocol", "3.2"), ("user", "bob"), ("database", "db")]);
    // Protocol 3.2 cancel keys are up to 256 bytes.
    let mut cancel = framed(CANCEL_REQUEST, &[7; 4 + 32]);
    assert_eq!(attrs(&run(&cancel)), [("request", "cancel")]);
    cancel = framed(CANCEL_REQUEST, &[7; 4 + 257]);
    assert_eq!(run(&cancel), Verdict::NoMatch);
}

#[test]
fn malformed_startups_do_not_match() {
    let v3 = PROTOCOL_3_0;
    let cases: Vec<Vec<u8>> = vec![
        startup_message(v3, &[("database", "shop")]),       // no user
        startup_message(v3, &[("user", "")]),               // empty user
        startup_message(0x0002_0000, &[("user", "alice")]), // protocol 2
        startup_message(0x0003_0003, &[("user", "alice")]), // unknown minor
        startup_message(0x0004_0000, &[("user", "alice")]), // protocol 4
        startup_message(v3, &[("us er", "alice")]),         // key not a token
        framed(v3, b"user\0alice\0"),                       // no terminator
        framed(v3, b"user\0alice\0db\0\0"),                 // odd string count
        framed(v3, b"user\0alice\0\0x"),                    // bytes after the terminator
        framed(v3, b"user\0alice\0\0\0"),                   // two terminators
        framed(v3, b"\0"),                                  // empty list
        framed(SSL_REQUEST, b"\0\0\0\0"),                   // SSLRequest of length 12
        framed(GSSENC_REQUEST, b"x"),                       // GSSENCRequest of length 9
        framed(CANCEL_REQUEST, b"\0\0\0\x01"),              // CancelRequest of length 12
        vec![0, 0, 0, 7, 0, 3, 0, 0],                       // length below 8
        vec![0, 0, 0x27, 0x11, 0, 3, 0, 0],                 // length above 10000
    ];
    for case in cases {
        assert_eq!(run(&case), Verdict::NoMatch, "{case:02x?}");
    }
}

#[test]
fn refuses_early() {
    // The length's high bytes, then the code, refuse as soon as they differ.
    for case in
        [&b"\x01"[..], b"\0\x01", b"\0\0\x28", b"\0\0\0\x07\x00", b"\0\0\0\x08\x00\x03", b"\0\0\0\x10\x04\xd2\x16\x2f"]
    {
        assert_eq!(run(case), Verdict::NoMatch, "{case:02x?}");
    }
    assert_eq!(run(b"\0\0\0\x08\x04"), Verdict::NeedMore(8));
}

#[test]
fn udp_is_refused() {
    let pg = Postgres::new("null").expect("postgres detector");
    assert_eq!(pg.detect(STARTUP, &Peer::test(Transport::Udp)), Verdict::NoMatch);
}

#[test]
fn other_protocols_do_not_match() {
    for (name, bytes) in other_protocols_except("postgres") {
        assert_eq!(run(&bytes), Verdict::NoMatch, "{name}");
        // Most are refused on their first byte.
        if !matches!(name, "dns-tcp" | "openvpn" | "zeros") {
            assert_eq!(run(&bytes[..1]), Verdict::NoMatch, "{name} first byte");
        }
    }
}

fn check_invariants(data: &[u8]) {
    let verdict = run(data);
    assert_eq!(check_verdict(data, &verdict).and(check_protocol(&verdict, "postgres")), Ok(()));
}

proptest! {
    #[test]
    fn arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        check_invariants(&data);
    }

    #[test]
    fn flipped_captures(which in 0..CAPTURES.len(), cut in 0usize..80, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4)) {
        let mut data = flipped(CAPTURES[which], &flips);
        data.truncate(cut);
        check_invariants(&data);
    }

    #[test]
    fn startup_like(len in 0u32..12000, minor in 0u32..4, body in proptest::collection::vec(prop_oneof![Just(0u8), any::<u8>()], 0..64)) {
        let mut data = len.to_be_bytes().to_vec();
        data.extend_from_slice(&(0x0003_0000 | minor).to_be_bytes());
        data.extend_from_slice(&body);
        check_invariants(&data);
    }
}
