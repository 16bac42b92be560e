//! Tests on stream headers captured from slixmpp 1.17.0 and sendxmpp 1.24
//! (Net::XMPP), see `testdata/README.md`, hand-made headers, and other
//! protocols' bytes.

use super::*;
use proptest::prelude::*;
use refractium_plugin_sdk::testing::{check_protocol, check_verdict, flipped, other_protocols_except};

const SLIXMPP: &[u8] = include_bytes!("../testdata/slixmpp_client.bin");
const SENDXMPP: &[u8] = include_bytes!("../testdata/sendxmpp_client.bin");
/// RFC 6120 §9.1.1 (server-to-server), as its example writes it.
const S2S: &[u8] = b"<?xml version='1.0'?>\n<stream:stream\n    from='im.example.com'\n    id='g4qSvGvBxJ+xeAd7QKezOQJFFlw='\n    to='example.net'\n    version='1.0'\n    xml:lang='en'\n    xmlns='jabber:server'\n    xmlns:stream='http://etherx.jabber.org/streams'>";
/// XEP-0114 component handshake header.
const COMPONENT: &[u8] = b"<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='plays.shakespeare.lit'>";
const VALID: [&[u8]; 4] = [SLIXMPP, SENDXMPP, S2S, COMPONENT];

fn run(data: &[u8]) -> Verdict {
    Xmpp::new("null").expect("xmpp detector").detect(data, &Peer::test(Transport::Tcp))
}

fn attrs(verdict: &Verdict) -> Vec<(&str, &str)> {
    let detection = verdict.detection().expect("matched");
    assert_eq!(detection.protocol, "xmpp");
    detection.attributes.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

#[test]
fn real_clients() {
    assert_eq!(attrs(&run(SLIXMPP)), [("ns", "client"), ("to", "example.test"), ("version", "1.0")]);
    assert_eq!(attrs(&run(SENDXMPP)), [("ns", "client"), ("to", "127.0.0.1"), ("version", "1.0")]);
}

#[test]
fn servers_and_components() {
    assert_eq!(attrs(&run(S2S)), [("ns", "server"), ("to", "example.net"), ("version", "1.0")]);
    assert_eq!(attrs(&run(COMPONENT)), [("ns", "component"), ("to", "plays.shakespeare.lit")]);
}

#[test]
fn every_prefix_waits_for_the_end_of_the_tag() {
    for header in VALID {
        for len in 0..header.len() {
            assert_eq!(
                run(&header[..len]),
                Verdict::NeedMore(0),
                "prefix {len} of {}",
                String::from_utf8_lossy(header)
            );
        }
        assert!(run(header).is_match());
        // What the client sends next (after the server's header) is not looked at.
        let mut more = header.to_vec();
        more.extend_from_slice(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        assert_eq!(run(&more), run(header));
    }
}

#[test]
fn accepted_variants() {
    type Case<'a> = (&'a [u8], &'a [(&'a str, &'a str)]);
    let cases: &[Case] = &[
        // BOM, leading whitespace, double quotes, spaces around `=`.
        (
            b"\xEF\xBB\xBF\n<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<stream:stream xmlns = \"jabber:client\" xmlns:stream=\"http://etherx.jabber.org/streams\" to=\"a&amp;b.example\" >",
            &[("ns", "client"), ("to", "a&b.example")],
        ),
        // Unprefixed stream element, content namespace bound to a prefix.
        (
            b"<stream xmlns='http://etherx.jabber.org/streams' xmlns:c='jabber:client' to='example.org' version='1.0'>",
            &[("ns", "client"), ("to", "example.org"), ("version", "1.0")],
        ),
        // A `>` inside an attribute value does not end the tag.
        (
            b"<stream:stream id='a>b' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
            &[("ns", "client")],
        ),
    ];
    for (header, expected) in cases {
        assert_eq!(attrs(&run(header)), *expected, "{}", String::from_utf8_lossy(header));
    }
}

#[test]
fn malformed_headers_do_not_match() {
    let streams = "xmlns:stream='http://etherx.jabber.org/streams'";
    let cases = [
        "<stream:stream xmlns='jabber:client'>".to_string(), // no streams namespace
        format!("<stream:stream {streams}>"),                // no content namespace
        format!("<stream:stream xmlns='jabber:iq:roster' {streams}>"),
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/stream'>".to_string(),
        format!("<stream:stream xmlns='jabber:client' {streams}/>"), // self-closing
        format!("<stream:stream xmlns='jabber:client'{streams}>"),   // no space between attributes
        format!("<stream:stream xmlns='jabber:client' {streams} to='a' to='b'>"), // attribute twice
        format!("<stream:stream xmlns=jabber:client {streams}>"),    // unquoted
        format!("<stream:stream xmlns='jabber:client' {streams} to='a<b'>"), // `<` in a value
        format!("<stream xmlns='jabber:client' {streams}>"),         // unprefixed, wrong default namespace
        "<x:stream xmlns='jabber:client' xmlns:x='http://etherx.jabber.org/streams'>".to_string(),
        format!("<streams:stream xmlns='jabber:client' {streams}>"),
        format!("<stream:streamx xmlns='jabber:client' {streams}>"),
        format!("<?xml?><stream:stream xmlns='jabber:client' {streams}>"),
        format!("<?xmlversion='1.0'?><stream:stream xmlns='jabber:client' {streams}>"),
        format!("<?xml version='1.0'?><?xml version='1.0'?><stream:stream xmlns='jabber:client' {streams}>"),
        "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='example.com' version='1.0'/>".to_string(),
        "<policy-file-request/>\0".to_string(),
        format!("{}<stream:stream xmlns='jabber:client' {streams}>", " ".repeat(MAX_SPACE + 1)),
    ];
    for case in cases {
        assert_eq!(run(case.as_bytes()), Verdict::NoMatch, "{case}");
    }
}

#[test]
fn waiting_is_bounded() {
    let mut header = b"<stream:stream xmlns='jabber:client' id='".to_vec();
    header.resize(MAX_HEADER - 1, b'a');
    assert_eq!(run(&header), Verdict::NeedMore(0));
    header.push(b'a');
    assert_eq!(run(&header), Verdict::NoMatch);
    header.extend_from_slice(b"' xmlns:stream='http://etherx.jabber.org/streams'>");
    assert_eq!(run(&header), Verdict::NoMatch);
}

#[test]
fn udp_is_refused() {
    let xmpp = Xmpp::new("null").expect("xmpp detector");
    assert_eq!(xmpp.detect(SLIXMPP, &Peer::test(Transport::Udp)), Verdict::NoMatch);
}

/// Other protocols' first bytes, and text that starts like XML.
fn others() -> Vec<(&'static str, Vec<u8>)> {
    let mut others = other_protocols_except("xmpp");
    others.extend([
        (
            "http-post",
            b"POST /http-bind HTTP/1.1\r\n\r\n<body rid='1' xmlns='http://jabber.org/protocol/httpbind'/>".to_vec(),
        ),
        ("html", b"<html><body>hi</body></html>".to_vec()),
        ("spaces", vec![b' '; 200]),
    ]);
    others
}

#[test]
fn other_protocols_do_not_match() {
    for (name, bytes) in others() {
        assert_eq!(run(&bytes), Verdict::NoMatch, "{name}");
        let fast = if name == "html" {
            2
        } else if name == "spaces" {
            MAX_SPACE + 1
        } else {
            1
        };
        assert_eq!(run(&bytes[..fast]), Verdict::NoMatch, "{name} first bytes");
    }
}

fn check_invariants(data: &[u8]) {
    let verdict = run(data);
    assert_eq!(check_verdict(data, &verdict).and(check_protocol(&verdict, "xmpp")), Ok(()));
}

proptest! {
    #[test]
    fn arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        check_invariants(&data);
    }

    #[test]
    fn xml_like_text(data in "[<?>a-z:= '\"/\n]{0,200}") {
        check_invariants(data.as_bytes());
        let mut header = b"<stream:stream ".to_vec();
        header.extend_from_slice(data.as_bytes());
        check_invariants(&header);
    }

    #[test]
    fn flipped_headers(which in 0..VALID.len(), cut in 0usize..400, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4)) {
        let mut data = flipped(VALID[which], &flips);
        data.truncate(cut);
        check_invariants(&data);
    }
}
