//! `listeners[].accept_proxy`: connections from a load balancer start with a
//! PROXY header whose addresses refractium uses in place of the balancer's.

use crate::support::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Listener `edge` trusts the balancer at 127.0.0.2; clients from
/// 192.0.2.0/24 reach backend `a` (which gets a PROXY v1 header of its own),
/// other HTTP clients `b`.
fn start(extra: &str) -> (Proxy, Backend, Backend) {
    let (a, b) = (Backend::start(Reply::Http("a")), Backend::start(Reply::Http("b")));
    let yaml = format!(
        r#"
listeners:
  - name: edge
    bind: 127.0.0.1:0
    detect: {{ timeout: 1s }}
    accept_proxy: {{ from: [127.0.0.2/32, "::ffff:127.0.0.3"] }}
routes:
  - name: inside
    match: {{ protocol: http, client: 192.0.2.0/24 }}
    to: a
  - name: outside
    match: {{ protocol: http }}
    to: b
backends:
  a: {{ servers: [{}], proxy_protocol: v1 }}
  b: {{ servers: [{}] }}
{extra}
"#,
        a.addr, b.addr
    );
    (Proxy::start(&yaml), a, b)
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

fn v1(client: &str, local: &str) -> Vec<u8> {
    let (c, l): (SocketAddr, SocketAddr) = (client.parse().expect("client"), local.parse().expect("local"));
    format!("PROXY TCP4 {} {} {} {}\r\n", c.ip(), l.ip(), c.port(), l.port()).into_bytes()
}

fn v2(client: &str, local: &str) -> Vec<u8> {
    let (c, l): (SocketAddr, SocketAddr) = (client.parse().expect("client"), local.parse().expect("local"));
    let (SocketAddr::V4(c), SocketAddr::V4(l)) = (c, l) else { panic!("IPv4 only here") };
    let mut h = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    h.extend_from_slice(&c.ip().octets());
    h.extend_from_slice(&l.ip().octets());
    h.extend_from_slice(&c.port().to_be_bytes());
    h.extend_from_slice(&l.port().to_be_bytes());
    h
}

/// Send `bytes` from `from`, then the rest of the exchange; the reply.
fn send_from(proxy: &Proxy, from: &str, bytes: &[u8]) -> String {
    let mut c = connect_from(from.parse().expect("source address"), proxy.addr("edge"));
    c.write_all(bytes).expect("write");
    reply(&mut c)
}

#[test]
fn the_carried_client_is_routed_logged_and_passed_on_and_the_header_is_stripped() {
    let (proxy, a, b) = start("");
    for (i, header) in
        [v1("192.0.2.7:40001", "198.51.100.1:443"), v2("192.0.2.7:40002", "198.51.100.1:443")].into_iter().enumerate()
    {
        // The header and the request in one write, and the header alone first.
        let mut c = connect_from([127, 0, 0, 2].into(), proxy.addr("edge"));
        if i == 0 {
            c.write_all(&[header.as_slice(), GET].concat()).expect("write");
        } else {
            c.write_all(&header[..9]).expect("write");
            std::thread::sleep(Duration::from_millis(50));
            c.write_all(&header[9..]).expect("write");
            c.write_all(GET).expect("write");
        }
        assert!(reply(&mut c).ends_with("a"), "header {i} did not reach backend a");
        let seen = a.wait_seen(i + 1);
        let want = [v1(&format!("192.0.2.7:4000{}", i + 1), "198.51.100.1:443"), GET.to_vec()].concat();
        assert_eq!(String::from_utf8_lossy(&seen[i]), String::from_utf8_lossy(&want));
    }
    let log = proxy.wait_access(2);
    let clients: Vec<_> = log.iter().map(|l| l["client"].as_str().unwrap_or("").to_string()).collect();
    assert_eq!(clients, ["192.0.2.7:40001", "192.0.2.7:40002"], "{log:?}");
    assert!(b.seen().is_empty());

    // The balancer's own health check (v2 LOCAL) keeps the connection's addresses.
    let local = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";
    assert!(send_from(&proxy, "127.0.0.2", &[&local[..], GET].concat()).ends_with("b"));
    assert_eq!(b.wait_seen(1)[0], GET, "the LOCAL header must be stripped");
    let log = proxy.wait_access(3);
    assert!(log[2]["client"].as_str().is_some_and(|c| c.starts_with("127.0.0.2:")), "{:?}", log[2]);
}

#[test]
fn an_untrusted_source_is_served_as_it_comes_and_cannot_forge_a_header() {
    let (proxy, a, b) = start("");
    // A plain client: its own address, no header expected.
    assert!(send_from(&proxy, "127.0.0.1", GET).ends_with("b"));
    // A header from an untrusted source is not believed: it is the client's
    // first bytes, which no detector recognises, and there is no default.
    let forged = [v1("192.0.2.7:40000", "198.51.100.1:443"), GET.to_vec()].concat();
    assert_eq!(send_from(&proxy, "127.0.0.1", &forged), "");
    let log = proxy.wait_access(2);
    let (plain, forged): (Vec<_>, Vec<_>) = log.iter().partition(|l| l["route"] == "outside");
    assert!(plain[0]["client"].as_str().is_some_and(|c| c.starts_with("127.0.0.1:")), "{log:?}");
    assert_eq!(forged[0]["close"], "unrecognised bytes, and the listener has no route for it", "{log:?}");
    assert!(a.seen().is_empty());
    assert_eq!(b.seen().len(), 1);
}

#[test]
fn a_balancer_connection_without_a_valid_header_is_closed_and_logged() {
    let (proxy, a, b) = start("");
    let mut oversized = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\xff\xff".to_vec();
    oversized.extend(std::iter::repeat_n(0u8, 4096));
    let cases: [(&str, Vec<u8>, bool, &str); 6] = [
        ("no header", GET.to_vec(), false, "no PROXY header"),
        ("a lying v1 header", b"PROXY TCP4 1.2.3.4 5.6.7.8 80\r\n".to_vec(), false, "bad PROXY v1 header"),
        ("a bad v2 version", b"\r\n\r\n\0\r\nQUIT\n\x31\x11\x00\x0c".to_vec(), false, "bad PROXY v2 header"),
        ("an oversized v2 header", oversized, false, "more than the 4096 accepted"),
        (
            "a truncated header, then the end",
            v2("192.0.2.7:1", "198.51.100.1:443")[..20].to_vec(),
            true,
            "closed in the middle",
        ),
        (
            "a truncated header, then silence",
            v1("192.0.2.7:1", "198.51.100.1:443")[..20].to_vec(),
            false,
            "incomplete at the detection timeout",
        ),
    ];
    for (i, (what, bytes, end, why)) in cases.iter().enumerate() {
        let mut c = connect_from([127, 0, 0, 2].into(), proxy.addr("edge"));
        c.write_all(bytes).expect("write");
        if *end {
            c.shutdown(std::net::Shutdown::Write).expect("shutdown");
        }
        let mut rest = Vec::new();
        c.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let _ = c.read_to_end(&mut rest);
        assert!(rest.is_empty(), "{what}: got {rest:?}");
        let log = proxy.wait_access(i + 1);
        let close = log[i]["close"].as_str().unwrap_or_default();
        assert!(close.contains(why), "{what}: close={close:?}");
        let warned = proxy.logs_where(|v| {
            v["level"] == "WARN" && v["balancer"].as_str().is_some_and(|b| b.starts_with("127.0.0.2:"))
        });
        assert_eq!(warned.len(), i + 1, "{what}: one warning each");
    }
    assert!(a.seen().is_empty() && b.seen().is_empty(), "nothing reaches a backend");
    // The balancer's next good connection is served.
    let good = [v2("192.0.2.8:5000", "198.51.100.1:443"), GET.to_vec()].concat();
    assert!(send_from(&proxy, "127.0.0.2", &good).ends_with("a"));
}

#[test]
fn per_ip_limits_count_the_carried_client() {
    let (proxy, _a, _b) = start("limits: { max_connections_per_ip: 1 }\nruntime: { workers: 1 }");
    let hold = |client: &str| {
        let mut c = connect_from([127, 0, 0, 2].into(), proxy.addr("edge"));
        // A header and a request head that is not finished: the connection
        // stays in detection.
        c.write_all(&[v1(client, "198.51.100.1:443"), b"GET / HTTP/1.1\r\n".to_vec()].concat()).expect("write");
        c
    };
    let finish = |mut c: TcpStream| {
        c.write_all(b"Host: x\r\nConnection: close\r\n\r\n").expect("write");
        reply(&mut c)
    };
    let first = hold("192.0.2.7:1");
    let other = hold("192.0.2.8:1");
    // Another connection of 192.0.2.7 is refused once the first one's
    // header is read (bounded retries: it is read at once on an idle proxy).
    let mut refused = false;
    let mut extra = Vec::new();
    for _ in 0..50 {
        let mut c = hold("192.0.2.7:2");
        c.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
        let mut buf = [0u8; 16];
        if matches!(c.read(&mut buf), Ok(0)) {
            refused = true;
            break;
        }
        extra.push(c);
    }
    assert!(refused, "a second connection of the same carried client was not refused");
    let line = proxy.wait_log(10, |v| v["limit"] == "limits.max_connections_per_ip");
    assert_eq!(line["client"], "192.0.2.7:2", "{line}");
    proxy.wait_log(10, |v| v["close"] == "refused: limits.max_connections_per_ip" && v["client"] == "192.0.2.7:2");
    // Both clients behind the one balancer were served.
    assert!(finish(other).ends_with("a"));
    assert!(finish(first).ends_with("a"));
}

#[test]
fn udp_datagrams_from_a_balancer_carry_a_v2_header_that_is_stripped() {
    use crate::udp_backend::*;
    let (a, b) = (UdpBackend::start(echo), UdpBackend::start(echo));
    let proxy = Proxy::start(&format!(
        r#"
listeners:
  - name: edge
    bind: 127.0.0.1:0
    transport: udp
    detectors: [dns]
    detect: {{ timeout: 1s }}
    accept_proxy: {{ from: [127.0.0.2] }}
routes:
  - name: inside
    match: {{ protocol: dns, client: 192.0.2.0/24 }}
    to: a
  - name: outside
    match: {{ protocol: dns }}
    to: b
backends:
  a: {{ servers: [{}] }}
  b: {{ servers: [{}] }}
udp: {{ session_timeout: 300ms }}
"#,
        a.addr, b.addr
    ));
    let edge = proxy.addr("edge");
    let socket_from = |ip: &str| {
        let s = std::net::UdpSocket::bind((ip, 0)).expect("bind");
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        s
    };
    let mut header = v2("192.0.2.7:40000", "198.51.100.1:53");
    header[13] = 0x12; // AF_INET, DGRAM
    let balancer = socket_from("127.0.0.2");
    let mut buf = [0u8; 2048];
    for id in [1, 2] {
        balancer.send_to(&[header.as_slice(), &dns_query(id)].concat(), edge).expect("send");
        let (n, _) = balancer.recv_from(&mut buf).expect("the reply comes back to the balancer");
        assert_eq!(&buf[..n], dns_query(id), "the reply is the server's datagram");
    }
    let seen = a.wait_seen(2);
    assert_eq!((seen[0].1.clone(), seen[1].1.clone()), (dns_query(1), dns_query(2)), "headers are stripped");

    // Without a header the balancer's datagram is dropped, with a warning;
    // an untrusted source is served as it comes.
    let headless = socket_from("127.0.0.2");
    headless.send_to(&dns_query(3), edge).expect("send");
    proxy.wait_log(10, |v| {
        v["level"] == "WARN" && v["message"].as_str().is_some_and(|m| m.contains("datagram dropped"))
    });
    let direct = socket_from("127.0.0.1");
    direct.send_to(&dns_query(4), edge).expect("send");
    let (n, _) = direct.recv_from(&mut buf).expect("reply");
    assert_eq!(&buf[..n], dns_query(4));
    assert_eq!(b.wait_seen(1)[0].1, dns_query(4));
    assert_eq!(a.seen().len(), 2);
    // The sessions' lines are written as they end.
    let log = proxy.wait_access(2);
    let inside = log.iter().find(|l| l["route"] == "inside").expect("the balancer's session is logged");
    assert_eq!((&inside["client"], &inside["datagrams_up"]), (&"192.0.2.7:40000".into(), &2.into()), "{log:?}");
}

#[test]
fn behind_a_real_haproxy_sending_proxy_v2_the_client_address_is_used_everywhere() {
    use crate::haproxy::{Haproxy, PREAMBLE};
    if !Haproxy::installed() {
        return;
    }
    let (a, b) = (Backend::start(Reply::Http("a")), Backend::start(Reply::Http("b")));
    let proxy = Proxy::start(&format!(
        r#"
listeners:
  - name: edge
    bind: 127.0.0.1:0
    detectors: [http]
    accept_proxy: {{ from: [127.0.0.1] }}
routes:
  - name: inside
    match: {{ protocol: http, client: 127.0.0.9 }}
    to: a
  - name: outside
    match: {{ protocol: http }}
    to: b
backends:
  a: {{ servers: [{}], proxy_protocol: v1 }}
  b: {{ servers: [{}] }}
limits: {{ max_connections_per_ip: 1 }}
"#,
        a.addr, b.addr
    ));
    let port = free_port();
    let haproxy = Haproxy::start(
        &format!(
            "{PREAMBLE}\
frontend public
    mode tcp
    bind 127.0.0.1:{port}
    default_backend refractium
backend refractium
    mode tcp
    server edge {} send-proxy-v2
",
            proxy.addr("edge")
        ),
        &[port],
    );
    let front: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut inside = connect_from([127, 0, 0, 9].into(), front);
    let inside_port = inside.local_addr().expect("addr").port();
    inside.write_all(GET).expect("write");
    assert!(reply(&mut inside).ends_with("a"), "haproxy output:\n{}", haproxy.output());
    drop(inside);
    // The server gets the client's address, and the address it connected
    // to (HAProxy's frontend), in refractium's own PROXY header.
    let seen = String::from_utf8_lossy(&a.wait_seen(1)[0]).to_string();
    assert!(seen.starts_with(&format!("PROXY TCP4 127.0.0.9 127.0.0.1 {inside_port} {port}\r\nGET / ")), "{seen}");
    // Other clients behind the same HAProxy are other clients: their own
    // route, and their own places under the per-IP limit of 1, at once.
    let mut outside = connect_from([127, 0, 0, 10].into(), front);
    let mut held = connect_from([127, 0, 0, 11].into(), front);
    held.write_all(b"GET / HTTP/1.1\r\n").expect("write");
    outside.write_all(GET).expect("write");
    assert!(reply(&mut outside).ends_with("b"));
    drop((outside, held));
    let count = |prefix: &str| {
        proxy.access().iter().filter(|l| l["client"].as_str().is_some_and(|c| c.starts_with(prefix))).count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while count("127.0.0.9:") < 1 || count("127.0.0.10:") < 1 || count("127.0.0.11:") < 1 {
        assert!(std::time::Instant::now() < deadline, "missing access lines:\n{}", proxy.output());
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = proxy.access();
    let clients: Vec<&str> = log.iter().filter_map(|l| l["client"].as_str()).collect();
    assert!(clients.contains(&format!("127.0.0.9:{inside_port}").as_str()), "{clients:?}");
    // (Besides these, the line of the connection with which the test waited
    // for HAProxy's port, from 127.0.0.1.)
    for ip in ["127.0.0.9:", "127.0.0.10:", "127.0.0.11:"] {
        assert_eq!(clients.iter().filter(|c| c.starts_with(ip)).count(), 1, "{clients:?}");
    }
    assert!(proxy.logs_where(|v| v["limit"].is_string()).is_empty(), "no client was refused");
}

#[test]
fn the_documented_haproxy_config_sends_clients_and_takes_a_draining_copy_out() {
    use crate::haproxy::Haproxy;
    if !Haproxy::installed() {
        return;
    }
    let web = Backend::start(Reply::Http("web"));
    let proxy = Proxy::start(&format!(
        r#"
listeners:
  - name: edge
    bind: 127.0.0.1:0
    detectors: [http]
    accept_proxy: {{ from: [127.0.0.1] }}
routes:
  - name: web
    match: {{ protocol: http }}
    to: web
backends:
  web: {{ servers: [{}] }}
limits: {{ drain_timeout: 20s }}
admin: {{ bind: 127.0.0.1:0 }}
"#,
        web.addr
    ));
    // docs/operations.md's haproxy.cfg as it is written, with the test's
    // addresses in place of the example's (and checks every 200 ms rather
    // than 2 s, for the test's sake).
    let docs = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operations.md"))
        .expect("docs/operations.md");
    let block = docs.split("```haproxy\n").nth(1).and_then(|rest| rest.split("```").next());
    let mut config = block.expect("an haproxy block in docs/operations.md").to_string();
    let edge = proxy.addr("edge");
    let admin = proxy.wait_log(10, |v| v["message"] == "admin listening");
    let admin: SocketAddr = admin["addr"].as_str().and_then(|a| a.parse().ok()).expect("admin address");
    let port = free_port();
    for (from, to) in [
        ("bind :443", format!("bind 127.0.0.1:{port}")),
        ("10.0.1.11:443", edge.to_string()),
        ("10.0.1.12:443", edge.to_string()),
        ("port 9901", format!("port {}", admin.port())),
        ("inter 2s", "inter 200ms".to_string()),
    ] {
        assert!(config.contains(from), "the documented haproxy.cfg has no `{from}`:\n{config}");
        config = config.replace(from, &to);
    }
    // HAProxy's log on its stderr, to see what its checks find.
    let config = format!(
        "global\n    log stderr format raw local0 info\n{}",
        config.replacen("defaults\n", "defaults\n    log global\n", 1)
    );
    let haproxy = Haproxy::start(&config, &[port]);

    // A client reaches the backend, under its own address.
    let front: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut client = connect_from([127, 0, 0, 9].into(), front);
    let client_port = client.local_addr().expect("addr").port();
    client.write_all(GET).expect("write");
    assert!(reply(&mut client).ends_with("web"), "haproxy output:\n{}", haproxy.output());
    drop(client);
    let want = format!("127.0.0.9:{client_port}");
    proxy.wait_log(10, |v| v["target"] == "refractium::access" && v["client"] == want.as_str());

    // A copy that drains (a client still holds it) answers 503 on /ready:
    // the check takes it out of the balancer.
    let mut held = connect_from([127, 0, 0, 10].into(), front);
    held.write_all(b"GET / HTTP/1.1\r\n").expect("write");
    proxy.wait_metric(10, "refractium_tcp_connections_open", |open| open >= 1);
    assert!(!haproxy.output().contains("is DOWN"), "{}", haproxy.output());
    proxy.signal("TERM");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !(haproxy.output().contains("refractium/r1 is DOWN") && haproxy.output().contains("refractium/r2 is DOWN")) {
        assert!(std::time::Instant::now() < deadline, "the check did not take the copy out:\n{}", haproxy.output());
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = haproxy.output();
    assert!(output.contains("r1 is DOWN, reason: Layer7 wrong status, code: 503"), "{output}");
    drop(held);
}
