//! A proxy's connections from admission to shutdown: `limits.max_connections`
//! refuses the connection past the limit and admits again once one ends;
//! SIGINT, like SIGTERM, stops accepting and lets open connections finish.

use crate::support::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// An echo backend and a proxy that sends every connection to it; `extra`
/// goes at the top level of the config.
fn echo_proxy(extra: &str) -> (Proxy, Backend) {
    let echo = Backend::start(Reply::Echo);
    let yaml = format!(
        "\
listeners:
  - name: edge
    bind: 127.0.0.1:0
    detectors: []
    default: echo
routes:
  - name: echo
    to: echo
backends:
  echo: {{ servers: [{echo}] }}
{extra}
",
        echo = echo.addr
    );
    (Proxy::start(&yaml), echo)
}

/// A connection through the proxy that has had `word` echoed back: it is
/// admitted and served.
fn served(proxy: &Proxy, word: &str) -> TcpStream {
    let mut c = TcpStream::connect(proxy.addr("edge")).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    c.write_all(word.as_bytes()).expect("write");
    let mut back = vec![0u8; word.len()];
    c.read_exact(&mut back).unwrap_or_else(|e| panic!("no echo of {word:?}: {e}; output:\n{}", proxy.output()));
    assert_eq!(back, word.as_bytes());
    c
}

#[test]
fn max_connections_refuses_the_one_past_the_limit_until_one_ends() {
    let (proxy, echo) =
        echo_proxy("limits: { max_connections: 3, max_connections_per_ip: 100 }\nadmin: { bind: 127.0.0.1:0 }");
    let mut held: Vec<TcpStream> = (0..3).map(|i| served(&proxy, &format!("held {i}"))).collect();
    // The fourth: the kernel completes its handshake, the proxy closes it
    // at once, and the server never hears of it.
    let mut fourth = TcpStream::connect(proxy.addr("edge")).expect("connect is accepted by the kernel");
    fourth.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let _ = fourth.write_all(b"one too many");
    let mut buf = [0u8; 64];
    assert_eq!(fourth.read(&mut buf).unwrap_or(0), 0, "the connection past the limit is closed without an answer");
    let line = proxy.wait_log(5, |v| v["limit"] == "limits.max_connections");
    assert_eq!(line["level"], "WARN", "{line}");
    assert_eq!(proxy.metric("refractium_tcp_connections_refused_total"), 1);
    assert_eq!(echo.seen().len(), 3, "the server saw only the admitted ones");
    // The three still work.
    for (i, c) in held.iter_mut().enumerate() {
        c.write_all(b"!").expect("write");
        let mut one = [0u8; 1];
        c.read_exact(&mut one).unwrap_or_else(|e| panic!("held connection {i}: {e}"));
    }
    // One ends; once the proxy has let it go, a new one is served.
    drop(held.pop());
    proxy.wait_metric(10, "refractium_tcp_connections_open", |open| open == 2);
    let _again = served(&proxy, "room again");
    assert_eq!(echo.wait_seen(4).len(), 4);
    assert_eq!(proxy.metric("refractium_tcp_connections_refused_total"), 1);
}

#[test]
fn sigint_drains_open_connections_and_stops_accepting() {
    let (mut proxy, _echo) = echo_proxy("");
    let addr = proxy.addr("edge");
    let mut open = served(&proxy, "before");
    let me = open.local_addr().expect("client address").to_string();
    proxy.signal("INT");
    proxy.wait_log(5, |v| v["message"] == "SIGINT received; shutting down");
    proxy.wait_log(5, |v| v["message"].as_str().is_some_and(|m| m.contains("stopped accepting")));
    // New connections are refused; the open one carries on.
    proxy.wait_refused(addr);
    open.write_all(b"still here").expect("write after SIGINT");
    let mut back = [0u8; 10];
    open.read_exact(&mut back).expect("echo after SIGINT");
    assert_eq!(&back, b"still here");
    assert!(proxy.wait_exit(1).is_none(), "exited with a connection still open");
    // Its end ends the proxy, cleanly.
    drop(open);
    let status = proxy.wait_exit(10).expect("exits once the last connection ends");
    assert!(status.success(), "{status:?}");
    let line = proxy.wait_log(5, |v| v["target"] == "refractium::access" && v["client"] == me.as_str());
    assert_eq!((&line["close"], &line["bytes_up"]), (&"closed".into(), &16.into()), "{line}");
}

/// Past `limits.drain_timeout`, a connection that does not end is cut and
/// the proxy exits anyway.
#[test]
fn sigint_cuts_what_is_still_open_after_the_drain_timeout() {
    let (mut proxy, _echo) = echo_proxy("limits: { drain_timeout: 1s }");
    let mut open = served(&proxy, "lingering");
    proxy.signal("INT");
    let status = proxy.wait_exit(20).expect("exits after the drain timeout");
    assert!(status.success(), "{status:?}");
    proxy.wait_log(5, |v| v["message"] == "drain timeout reached; closing the remaining connections");
    // The client sees its connection end.
    let mut rest = Vec::new();
    let _ = open.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{rest:?}");
}
