use super::*;
use proptest::prelude::*;
use refractium_plugin_sdk::testing::{Stop, check_hook_splits, run_hook};

fn hook(config: &str) -> HttpHeaders {
    HttpHeaders::new(config).expect("config")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const ADDED: &str = "X-Forwarded-For: 127.0.0.1\r\nX-Real-IP: 127.0.0.1\r\nForwarded: for=127.0.0.1\r\n";

#[test]
fn every_request_of_a_keep_alive_stream_is_rewritten_however_it_is_split() {
    let stream = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\nX-Debug: 1\r\n\r\nHEAD /c HTTP/1.1\r\nHost: x\r\n\r\n";
    let run = check_hook_splits(
        &hook(r#"{"set":{"Host":"inside"},"add":{"Via":"1.1 r"},"remove":["x-debug"]}"#),
        Direction::ClientToServer,
        stream,
    );
    let one = |line: &str| format!("{line}\r\nHost: inside\r\nVia: 1.1 r\r\n{ADDED}\r\n");
    assert_eq!(text(&run.output), [one("GET /a HTTP/1.1"), one("GET /b HTTP/1.1"), one("HEAD /c HTTP/1.1")].concat());
}

#[test]
fn bodies_pass_unchanged_even_when_they_look_like_requests() {
    let body = "a\r\n\r\nGET /evil HTTP/1.1\r\nHost: y\r\n\r\n";
    let stream = format!(
        "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}GET /next HTTP/1.1\r\n\r\n",
        body.len()
    );
    let run = check_hook_splits(&hook("null"), Direction::ClientToServer, stream.as_bytes());
    let want = format!(
        "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n{ADDED}\r\n{body}GET /next HTTP/1.1\r\n{ADDED}\r\n",
        body.len()
    );
    assert_eq!(text(&run.output), want);
}

#[test]
fn chunked_bodies_and_their_trailers_pass_unchanged() {
    // The second chunk (16 bytes) holds a blank line and a request line.
    let body = "5;ext=1\r\nhello\r\n10\r\n\r\n\r\nGET / HTTP/1\r\n0\r\nX-Trailer: t\r\n\r\n";
    let stream = format!("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{body}GET /next HTTP/1.1\r\n\r\n");
    let run = check_hook_splits(&hook("null"), Direction::ClientToServer, stream.as_bytes());
    let want =
        format!("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n{ADDED}\r\n{body}GET /next HTTP/1.1\r\n{ADDED}\r\n");
    assert_eq!(text(&run.output), want);
}

#[test]
fn an_upgrade_ends_the_rewriting() {
    let stream = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\r\nGET /not-http HTTP/1.1\r\n\r\n";
    let run = check_hook_splits(&hook(r#"{"real_ip":false,"forwarded":false}"#), Direction::ClientToServer, stream);
    let want = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nX-Forwarded-For: 127.0.0.1\r\n\r\nGET /not-http HTTP/1.1\r\n\r\n";
    assert_eq!(text(&run.output), want);
}

#[test]
fn the_client_is_appended_to_forwarding_headers_already_there() {
    let stream =
        b"GET / HTTP/1.1\r\nX-Forwarded-For: 10.0.0.1\r\nX-Real-IP: 10.0.0.9\r\nForwarded: for=10.0.0.1\r\n\r\n";
    let run = run_hook(&hook("null"), Direction::ClientToServer, &[stream]);
    let want = "GET / HTTP/1.1\r\nX-Forwarded-For: 10.0.0.1, 127.0.0.1\r\nForwarded: for=10.0.0.1, for=127.0.0.1\r\nX-Real-IP: 127.0.0.1\r\n\r\n";
    assert_eq!(text(&run.output), want);
    // With two of a name, to the last one only.
    let stream = b"GET / HTTP/1.1\r\nx-forwarded-for: 10.0.0.1\r\nHost: h\r\nX-Forwarded-For: 10.0.0.2\r\n\r\n";
    let run = run_hook(&hook(r#"{"real_ip":false,"forwarded":false}"#), Direction::ClientToServer, &[stream]);
    let want = "GET / HTTP/1.1\r\nx-forwarded-for: 10.0.0.1\r\nHost: h\r\nX-Forwarded-For: 10.0.0.2, 127.0.0.1\r\n\r\n";
    assert_eq!(text(&run.output), want);
}

#[test]
fn the_client_address_is_taken_as_the_host_writes_it() {
    let of = |addr: &str| Client::of(addr).map(|c| (c.ip().to_string(), c.forwarded));
    assert_eq!(of("192.0.2.7:40000"), Some(("192.0.2.7".into(), "for=192.0.2.7".into())));
    assert_eq!(of("[2001:db8::1]:443"), Some(("2001:db8::1".into(), "for=\"[2001:db8::1]\"".into())));
    assert_eq!(of("[fe80::1%2]:443"), Some(("fe80::1".into(), "for=\"[fe80::1]\"".into())));
    assert_eq!(of("0.0.0.0:0"), Some(("0.0.0.0".into(), "for=0.0.0.0".into())));
    assert_eq!(of("255.255.255.255:65535"), Some(("255.255.255.255".into(), "for=255.255.255.255".into())));
    for bad in [
        "",
        "192.0.2.7",
        "[192.0.2.7]:1",
        "2001:db8::1:443",
        "host:80",
        "256.0.0.1:80",
        "01.2.3.4:80",
        "1.2.3:80",
        "1.2.3.4.5:80",
        "1..3.4:80",
        "1.2.3.4 :80",
        "[]:80",
    ] {
        assert_eq!(of(bad), None, "{bad}");
    }
}

#[test]
fn a_request_it_cannot_follow_is_answered_400() {
    for bad in [
        &b"GET / HTTP/1.1\r\nHost x\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ] {
        let run = run_hook(&hook("null"), Direction::ClientToServer, &[bad]);
        assert!(
            matches!(&run.stop, Some(Stop::Respond { data, .. }) if data.starts_with(b"HTTP/1.1 400")),
            "{}: {run:?}",
            text(bad)
        );
    }
    // The server's direction passes whatever it is.
    let run = run_hook(&hook("null"), Direction::ServerToClient, &[b"\x00 not http"]);
    assert_eq!((run.output.as_slice(), run.stop), (&b"\x00 not http"[..], None));
}

#[test]
fn configs_are_checked() {
    let err = |c: &str| HttpHeaders::new(c).err().unwrap_or_default();
    assert!(err(r#"{"sett":{}}"#).contains("unknown key `sett`"));
    assert!(err(r#"{"set":{"Bad Name":"x"}}"#).contains("not a header name"));
    assert!(err(r#"{"add":{"X":"a\r\nInjected: 1"}}"#).contains("line break"));
    assert!(err(r#"{"real_ip":"yes"}"#).contains("true or false"));
}

proptest! {
    /// Any stream of well-framed requests with arbitrary bodies comes out
    /// the same however it is split.
    #[test]
    fn splits_never_change_the_output(bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..30), 1..4)) {
        let mut stream = Vec::new();
        for body in &bodies {
            stream.extend_from_slice(format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes());
            stream.extend_from_slice(body);
        }
        let run = check_hook_splits(&hook("null"), Direction::ClientToServer, &stream);
        prop_assert!(run.stop.is_none());
        for body in &bodies {
            prop_assert!(run.output.windows(body.len().max(1)).any(|w| body.is_empty() || w == body.as_slice()));
        }
    }
}

/// A head with bare LF line ends is not taken for a whole head where the
/// chunk happens to hold it all: it waits for CRLFCRLF however it is split,
/// and what never completes passes at the end as it came.
#[test]
fn bare_line_feeds_are_held_however_the_stream_is_split() {
    let stream = b"GET / HTTP/1.1\nHost: a\n\nrest";
    let run = check_hook_splits(&hook("null"), Direction::ClientToServer, stream);
    assert_eq!((run.output.as_slice(), run.stop), (&stream[..], None));
    // CRLFCRLF later in the stream ends that head, which then is malformed.
    let stream = b"GET / HTTP/1.1\nHost: a\n\nGET / HTTP/1.1\r\n\r\n";
    let run = check_hook_splits(&hook("null"), Direction::ClientToServer, stream);
    assert!(matches!(&run.stop, Some(Stop::Respond { data, .. }) if data.starts_with(b"HTTP/1.1 400")), "{run:?}");
}
