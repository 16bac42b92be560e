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

/// Network namespaces for transparent proxying over IPv6, removed when
/// dropped: client (fd77:1::2) — proxy (fd77:1::1 | fd77:2::1) — server
/// (fd77:2::2), with the proxy's rules as docs/operations.md writes them.
struct Net6 {
    names: Vec<String>,
    server: Option<std::process::Child>,
}

impl Net6 {
    fn new() -> Net6 {
        let id = std::process::id();
        let (c, p, s) = (format!("rfx{id}c6"), format!("rfx{id}p6"), format!("rfx{id}s6"));
        let net = Net6 { names: vec![c.clone(), p.clone(), s.clone()], server: None };
        for ns in &net.names {
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        // `nodad`: usable at once, without duplicate address detection.
        ip(&["-n", &c, "link", "add", "c0", "type", "veth", "peer", "name", "p0", "netns", &p]);
        ip(&["-n", &c, "addr", "add", "fd77:1::2/64", "dev", "c0", "nodad"]);
        ip(&["-n", &c, "link", "set", "c0", "up"]);
        ip(&["-n", &c, "-6", "route", "add", "default", "via", "fd77:1::1"]);
        ip(&["-n", &p, "addr", "add", "fd77:1::1/64", "dev", "p0", "nodad"]);
        ip(&["-n", &p, "link", "set", "p0", "up"]);
        ip(&["-n", &p, "link", "add", "p1", "type", "veth", "peer", "name", "s0", "netns", &s]);
        ip(&["-n", &p, "addr", "add", "fd77:2::1/64", "dev", "p1", "nodad"]);
        ip(&["-n", &p, "link", "set", "p1", "up"]);
        ip(&["-n", &s, "addr", "add", "fd77:2::2/64", "dev", "s0", "nodad"]);
        ip(&["-n", &s, "link", "set", "s0", "up"]);
        // The server's route to the clients goes via the proxy.
        ip(&["-n", &s, "-6", "route", "add", "default", "via", "fd77:2::1"]);
        // docs/operations.md, "Transparent proxying", for IPv6.
        ip(&["-n", &p, "-6", "rule", "add", "iif", "p1", "lookup", "100"]);
        ip(&["-n", &p, "-6", "route", "add", "local", "::/0", "dev", "lo", "table", "100"]);
        net
    }

    /// An HTTP server on [fd77:2::2]:8080 answering with the address the
    /// connection came from.
    fn start_server(&mut self) {
        const SERVER: &str = r#"
import socket
s = socket.socket(socket.AF_INET6)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("fd77:2::2", 8080))
s.listen(16)
while True:
    c, peer = s.accept()
    c.settimeout(5)
    try:
        c.recv(4096)
        body = peer[0].encode()
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
    except OSError:
        pass
    c.close()
"#;
        let child = std::process::Command::new("ip")
            .args(["netns", "exec", &self.names[2], "python3", "-c", SERVER])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start the server");
        self.server = Some(child);
    }

    /// `curl` from the client's namespace, with this Host header.
    fn get(&self, host: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (ok, out, err) = run_cmd(
                std::process::Command::new("ip")
                    .args(["netns", "exec", &self.names[0], "curl", "-s", "-g", "-m", "5", "-H"])
                    .arg(format!("Host: {host}"))
                    .arg("http://[fd77:1::1]:8443/"),
                15,
            );
            if ok {
                return out;
            }
            assert!(std::time::Instant::now() < deadline, "curl failed: {out}{err}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Net6 {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.kill();
            let _ = server.wait();
        }
        for ns in &self.names {
            let _ = std::process::Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

#[test]
fn transparent_proxying_over_ipv6_with_the_documented_rules() {
    if !is_root() {
        return missing("root (CAP_NET_ADMIN and CAP_SYS_ADMIN), to make network namespaces");
    }
    if !(have("ip") && have("python3") && have("curl")) {
        return;
    }
    let mut net = Net6::new();
    net.start_server();
    let yaml = r#"
listeners:
  - name: edge
    bind: "[fd77:1::1]:8443"
    detectors: [http]
routes:
  - name: transparent
    match: { protocol: http, attributes: { host: transparent } }
    to: transparent
  - name: plain
    match: { protocol: http }
    to: plain
backends:
  transparent: { servers: ["[fd77:2::2]:8080"], source: client }
  plain: { servers: ["[fd77:2::2]:8080"] }
"#;
    let proxy_ns = net.names[1].clone();
    let proxy = Proxy::start_with(tempfile::tempdir().expect("tempdir"), yaml, |file| {
        let mut run = std::process::Command::new("ip");
        run.args(["netns", "exec", &proxy_ns])
            .arg(bin())
            .args(["run", "-c"])
            .arg(file)
            .stdin(std::process::Stdio::null());
        run
    });
    assert_eq!(net.get("plain"), "fd77:2::1", "without source: client the server sees the proxy");
    assert_eq!(net.get("transparent"), "fd77:1::2", "with source: client it sees the client:\n{}", proxy.output());
    let log = proxy.wait_access(2);
    assert!(log.iter().all(|l| l["close"] == "closed"), "{log:?}");
}
