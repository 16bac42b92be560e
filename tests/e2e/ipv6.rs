//! IPv6: listeners on IPv6 and on both families, IPv6 clients in routes,
//! logs and PROXY headers, and per-IP limits that count an IPv6 client by
//! its network (`limits.ipv6_prefix`).

use crate::support::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

fn have_ipv6_loopback() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

#[test]
fn one_listener_on_both_families_routes_ipv6_clients_by_their_address() {
    if !have_ipv6_loopback() {
        return missing("IPv6 on the loopback interface (::1)");
    }
    let (a, b) = (Backend::start(Reply::Http("a")), Backend::start(Reply::Http("b")));
    let proxy = Proxy::start(&format!(
        r#"
listeners:
  - name: edge
    bind: [127.0.0.1:0, "[::1]:0"]
    detectors: [http]
routes:
  - name: v6
    match: {{ protocol: http, client: "::1/128" }}
    to: a
  - name: v4
    match: {{ protocol: http }}
    to: b
backends:
  a: {{ servers: [{}], proxy_protocol: v1 }}
  b: {{ servers: [{}] }}
"#,
        a.addr, b.addr
    ));
    let addrs: Vec<SocketAddr> = proxy
        .logs_where(|v| v["message"] == "listening" && v["listener"] == "edge")
        .iter()
        .filter_map(|v| v["addr"].as_str()?.parse().ok())
        .collect();
    let v6 = addrs.iter().find(|a| a.is_ipv6()).expect("an IPv6 listening address");
    let v4 = addrs.iter().find(|a| a.is_ipv4()).expect("an IPv4 listening address");

    let mut c = TcpStream::connect(v6).expect("connect over IPv6");
    c.write_all(GET).expect("write");
    assert!(reply(&mut c).ends_with("a"));
    let seen = String::from_utf8_lossy(&a.wait_seen(1)[0]).to_string();
    assert!(
        seen.starts_with(&format!("PROXY TCP6 ::1 ::1 {} {}\r\n", c.local_addr().expect("addr").port(), v6.port())),
        "{seen}"
    );
    drop(c);
    let mut c = TcpStream::connect(v4).expect("connect over IPv4");
    c.write_all(GET).expect("write");
    assert!(reply(&mut c).ends_with("b"));
    drop(c);

    let log = proxy.wait_access(2);
    let v6_line = log.iter().find(|l| l["route"] == "v6").expect("the IPv6 client's line");
    assert!(v6_line["client"].as_str().is_some_and(|c| c.starts_with("[::1]:")), "{v6_line}");
}

#[test]
fn per_ip_limits_count_an_ipv6_client_by_its_network() {
    let backend = Backend::start(Reply::Http("web"));
    let proxy = Proxy::start(&format!(
        r#"
listeners:
  - name: edge
    bind: 127.0.0.1:0
    detectors: [http]
    accept_proxy: {{ from: [127.0.0.2] }}
routes:
  - name: web
    match: {{ protocol: http }}
    to: web
backends:
  web: {{ servers: [{}] }}
limits: {{ max_connections_per_ip: 1, ipv6_prefix: 64 }}
runtime: {{ workers: 1 }}
"#,
        backend.addr
    ));
    // IPv6 clients as a load balancer names them (the loopback interface
    // has one IPv6 address only). A served client that keeps its side open
    // still holds its place under the limit.
    let send = |client: &str, request: &[u8]| {
        let mut c = connect_from([127, 0, 0, 2].into(), proxy.addr("edge"));
        c.write_all(&[format!("PROXY TCP6 {client} 2001:db8::443 40000 443\r\n").as_bytes(), request].concat())
            .expect("write");
        c.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        c
    };
    let mut first = send("2001:db8:1:2::a", GET);
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.ends_with(b"web") {
        match first.read(&mut buf) {
            Ok(n) if n > 0 => answer.extend_from_slice(&buf[..n]),
            other => panic!("the first client was not served: {other:?}, {answer:?}"),
        }
    }
    // Another address of the same /64 is the same host: refused.
    let mut same = send("2001:db8:1:2:ffff::b", GET);
    assert_eq!(reply(&mut same), "", "a second address in the same /64 was not refused");
    let line = proxy.wait_log(10, |v| v["close"] == "refused: limits.max_connections_per_ip");
    assert_eq!(line["client"], "[2001:db8:1:2:ffff::b]:40000");
    // The next /64 is another host.
    assert!(reply(&mut send("2001:db8:1:3::a", GET)).ends_with("web"));
    drop(first);
}
