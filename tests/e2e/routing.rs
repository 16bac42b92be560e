//! One port, many protocols: each reaches its own backend, identified by the
//! built-in Wasm detectors, driven by real clients.

use crate::support::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

struct Edge {
    proxy: Proxy,
    site: Backend,
    web: Backend,
    h2c: Backend,
    tls_a: Backend,
    tls_b: Backend,
    tls_h2: Backend,
    tls_other: Backend,
    ssh: Backend,
    fallback: Backend,
    silent: Backend,
}

/// A listener serving TLS (by SNI and ALPN), HTTP (by Host), h2c and SSH.
fn edge() -> Edge {
    let site = Backend::start(Reply::Http("site"));
    let web = Backend::start(Reply::Http("web"));
    let h2c = Backend::start(Reply::Record("h2c"));
    let tls_a = Backend::start(Reply::Record("tls-a"));
    let tls_b = Backend::start(Reply::Record("tls-b"));
    let tls_h2 = Backend::start(Reply::Record("tls-h2"));
    let tls_other = Backend::start(Reply::Record("tls-other"));
    let ssh = Backend::start(Reply::Banner("SSH-2.0-refractium-test-backend\r\n"));
    let fallback = Backend::start(Reply::Record("fallback"));
    let silent = Backend::start(Reply::Banner("220 server speaks first\r\n"));
    let yaml = format!(
        r#"
listeners:
  - name: edge
    bind: 127.0.0.1:0
    detectors: [tls, http2, http, ssh]
    detect: {{ max_bytes: 4096, timeout: 500ms }}
    on_timeout: server-first
    default: fallback
routes:
  - name: tls-a
    match: {{ protocol: tls, sni: "a.example.com" }}
    to: tls_a
  - name: tls-b
    match: {{ protocol: tls, sni: "*.b.example.com" }}
    to: tls_b
  - name: tls-h2
    match: {{ protocol: tls, alpn: [h2] }}
    to: tls_h2
  - name: tls-other
    match: {{ protocol: tls }}
    to: tls_other
  - name: h2c
    match: {{ protocol: http2 }}
    to: h2c
  - name: site
    match: {{ protocol: http, attributes: {{ host: "*.example.com" }} }}
    to: site
  - name: http
    match: {{ protocol: http }}
    to: web
  - name: ssh
    match: {{ protocol: ssh }}
    to: ssh
  - name: fallback
    to: fallback
  - name: server-first
    to: silent
backends:
  site: {{ servers: [{site}] }}
  web: {{ servers: [{web}] }}
  h2c: {{ servers: [{h2c}] }}
  tls_a: {{ servers: [{tls_a}] }}
  tls_b: {{ servers: [{tls_b}] }}
  tls_h2: {{ servers: [{tls_h2}] }}
  tls_other: {{ servers: [{tls_other}] }}
  ssh: {{ servers: [{ssh}] }}
  fallback: {{ servers: [{fallback}] }}
  silent: {{ servers: [{silent}] }}
"#,
        site = site.addr,
        web = web.addr,
        h2c = h2c.addr,
        tls_a = tls_a.addr,
        tls_b = tls_b.addr,
        tls_h2 = tls_h2.addr,
        tls_other = tls_other.addr,
        ssh = ssh.addr,
        fallback = fallback.addr,
        silent = silent.addr,
    );
    let proxy = Proxy::start(&yaml);
    Edge { proxy, site, web, h2c, tls_a, tls_b, tls_h2, tls_other, ssh, fallback, silent }
}

#[test]
fn curl_http_routes_by_host_header() {
    if !have("curl") {
        return;
    }
    let e = edge();
    let url = format!("http://{}/hello", e.proxy.addr("edge"));
    let (ok, body, err) =
        run_cmd(Command::new("curl").args(["-sS", "-m", "10", "-H", "Host: www.example.com", &url]), 15);
    assert!(ok, "curl failed: {err}");
    assert_eq!(body, "site");
    let (ok, body, err) = run_cmd(Command::new("curl").args(["-sS", "-m", "10", &url]), 15);
    assert!(ok, "curl failed: {err}");
    assert_eq!(body, "web");
    assert!(contains(&e.site.wait_seen(1)[0], b"GET /hello HTTP/1.1\r\n"));
    let access = e.proxy.wait_access(2);
    assert!(access.iter().any(|a| a["protocol"] == "http" && a["route"] == "site"), "{access:?}");
    assert!(
        access.iter().all(|a| a["bytes_up"].as_u64().unwrap_or(0) > 0 && a["bytes_down"].as_u64().unwrap_or(0) > 0)
    );
}

#[test]
fn curl_http2_prior_knowledge_reaches_the_h2c_backend() {
    if !have("curl") {
        return;
    }
    let e = edge();
    let url = format!("http://{}/", e.proxy.addr("edge"));
    // The test backend does not speak HTTP/2, so curl itself fails; what
    // matters is which backend received the preface.
    let _ = run_cmd(Command::new("curl").args(["-sS", "-m", "5", "--http2-prior-knowledge", &url]), 10);
    let seen = e.h2c.wait_seen(1);
    assert!(seen[0].starts_with(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), "{:?}", String::from_utf8_lossy(&seen[0]));
    assert!(e.web.seen().is_empty() && e.site.seen().is_empty());
}

fn s_client(addr: std::net::SocketAddr, extra: &[&str]) {
    let target = addr.to_string();
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &target]).args(extra);
    let _ = run_cmd(&mut cmd, 10);
}

#[test]
fn openssl_sni_reaches_two_backends() {
    if !have("openssl") {
        return;
    }
    let e = edge();
    let addr = e.proxy.addr("edge");
    s_client(addr, &["-servername", "a.example.com"]);
    s_client(addr, &["-servername", "x.b.EXAMPLE.com"]);
    s_client(addr, &["-servername", "unknown.example.org"]);
    assert!(contains(&e.tls_a.wait_seen(1)[0], b"a.example.com"));
    assert!(contains(&e.tls_b.wait_seen(1)[0], b"x.b.EXAMPLE.com"));
    assert!(contains(&e.tls_other.wait_seen(1)[0], b"unknown.example.org"));
    assert_eq!(e.tls_a.seen().len(), 1);
    let access = e.proxy.wait_access(3);
    assert!(access.iter().any(|a| a["sni"] == "a.example.com" && a["route"] == "tls-a"), "{access:?}");
    // Routing on the SNI glob is case-insensitive; the log shows the name lowercased.
    assert!(access.iter().any(|a| a["sni"] == "x.b.example.com" && a["route"] == "tls-b"), "{access:?}");
}

#[test]
fn openssl_alpn_h2_and_http11_reach_two_backends() {
    if !have("openssl") {
        return;
    }
    let e = edge();
    let addr = e.proxy.addr("edge");
    s_client(addr, &["-servername", "shop.example.org", "-alpn", "h2"]);
    s_client(addr, &["-servername", "shop.example.org", "-alpn", "http/1.1"]);
    assert!(contains(&e.tls_h2.wait_seen(1)[0], b"shop.example.org"));
    assert!(contains(&e.tls_other.wait_seen(1)[0], b"http/1.1"));
    assert_eq!(e.tls_h2.seen().len(), 1, "only the h2 client goes to the h2 pool");
}

#[test]
fn ssh_client_reaches_the_ssh_backend() {
    if !have("ssh") {
        return;
    }
    let e = edge();
    let addr = e.proxy.addr("edge");
    let _ = run_cmd(
        Command::new("ssh").args([
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=5",
            "-p",
            &addr.port().to_string(),
            "test@127.0.0.1",
            "true",
        ]),
        15,
    );
    let seen = e.ssh.wait_seen(1);
    assert!(seen[0].starts_with(b"SSH-2.0-OpenSSH"), "{:?}", String::from_utf8_lossy(&seen[0]));
    let access = e.proxy.wait_access(1);
    assert_eq!(access[0]["protocol"], "ssh");
    assert_eq!(access[0]["route"], "ssh");
}

#[test]
fn a_silent_client_reaches_on_timeout_and_hears_the_server_first() {
    let e = edge();
    let mut client = TcpStream::connect(e.proxy.addr("edge")).expect("connect");
    client.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut buf = [0u8; 64];
    let n = client.read(&mut buf).expect("banner after detect.timeout");
    assert_eq!(&buf[..n], b"220 server speaks first\r\n");
    client.write_all(b"HELO test\r\n").expect("write");
    assert_eq!(e.silent.wait_seen(1)[0], b"HELO test\r\n");
    drop(client);
    let access = e.proxy.wait_access(1);
    assert_eq!(access[0]["route"], "server-first");
}

/// The client connects and says nothing for a while: the proxy's first read
/// finds the socket empty, and the bytes sent later must still wake
/// detection (not wait for `detect.timeout` and go to `on_timeout`).
#[test]
fn a_client_that_pauses_before_its_first_bytes_is_still_detected() {
    let e = edge();
    let mut client = TcpStream::connect(e.proxy.addr("edge")).expect("connect");
    std::thread::sleep(Duration::from_millis(150));
    client.write_all(b"GET /late HTTP/1.1\r\nHost: late.example\r\n\r\n").expect("write");
    client.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let answer = reply(&mut client);
    assert!(answer.ends_with("web"), "{answer:?}");
    assert!(contains(&e.web.wait_seen(1)[0], b"GET /late HTTP/1.1\r\n"));
    drop(client);
    let access = e.proxy.wait_access(1);
    assert_eq!(access[0]["route"], "http");
    assert_eq!(access[0]["protocol"], "http");
}

#[test]
fn garbage_reaches_default_byte_exact() {
    let e = edge();
    let mut client = TcpStream::connect(e.proxy.addr("edge")).expect("connect");
    let garbage: Vec<u8> = (0..3000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    client.write_all(&garbage).expect("write");
    client.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut reply = String::new();
    let _ = client.read_to_string(&mut reply);
    assert_eq!(reply, "fallback\n");
    assert_eq!(e.fallback.wait_seen(1)[0], garbage);
    drop(client);
    let access = e.proxy.wait_access(1);
    assert_eq!(access[0]["route"], "fallback");
    assert_eq!(access[0]["protocol"], "-");
}
