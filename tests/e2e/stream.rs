//! Forwarding and connection handling: byte-exact relays with half-close,
//! accept limits, retries to the next server, graceful shutdown.

use crate::support::*;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

fn echo_proxy(extra: &str) -> (Proxy, Backend) {
    let echo = Backend::start(Reply::Echo);
    let yaml = format!(
        r#"
listeners:
  - name: edge
    bind: 127.0.0.1:0
    detectors: [http, ssh]
    detect: {{ timeout: 2s }}
    default: echo
routes:
  - name: http
    match: {{ protocol: http }}
    to: echo
  - name: echo
    to: echo
backends:
  echo: {{ servers: [{echo}], connect_timeout: 1s }}
{extra}
"#,
        echo = echo.addr
    );
    (Proxy::start(&yaml), echo)
}

/// A config with one listener, `edge`, that detects nothing and sends every
/// connection to the backend `name`, whose definition is `backend` (YAML).
fn pass_through(name: &str, backend: &str) -> String {
    format!(
        "\
listeners:
  - name: edge
    bind: 127.0.0.1:0
    detectors: []
    default: {name}
routes:
  - name: {name}
    to: {name}
backends:
  {name}: {backend}
"
    )
}

#[test]
fn large_transfer_is_byte_exact_with_half_close() {
    let (proxy, _echo) = echo_proxy("");
    let mut client = TcpStream::connect(proxy.addr("edge")).expect("connect");
    let mut payload = b"POST /upload HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    payload.extend((0..4_000_000u32).map(|i| (i % 251) as u8));
    let mut writer = client.try_clone().expect("clone");
    let sent = payload.clone();
    let t = std::thread::spawn(move || {
        writer.write_all(&sent).expect("write");
        // Half-close: the echo backend sees EOF, finishes echoing, closes.
        writer.shutdown(Shutdown::Write).expect("shutdown");
    });
    client.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let mut back = Vec::new();
    client.read_to_end(&mut back).expect("read to end");
    t.join().expect("writer");
    assert_eq!(back.len(), payload.len());
    assert!(back == payload, "echoed bytes differ");
    let access = proxy.wait_access(1);
    assert_eq!(access[0]["bytes_up"].as_u64(), Some(payload.len() as u64));
    assert_eq!(access[0]["bytes_down"].as_u64(), Some(payload.len() as u64));
    assert_eq!(access[0]["close"], "closed");
}

/// A server that answers and closes while the client still has its side
/// open (most short exchanges): the reply's last bytes are held for the FIN
/// that follows them (`MSG_MORE`), so they must still arrive, whole, followed
/// by the end of stream.
#[test]
fn a_reply_and_its_end_reach_a_client_whose_side_is_open() {
    let body = "the whole body, then the end of stream";
    let web = Backend::start(Reply::Http(body));
    let yaml = format!(
        "listeners:\n  - name: edge\n    bind: 127.0.0.1:0\n    detectors: [http]\n    default: web\nroutes:\n  - name: web\n    match: {{ protocol: http }}\n    to: web\nbackends:\n  web: {{ servers: [{}] }}\n",
        web.addr
    );
    let proxy = Proxy::start(&yaml);
    for i in 0..20 {
        let mut client = TcpStream::connect(proxy.addr("edge")).expect("connect");
        client.write_all(format!("GET /{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).expect("write");
        client.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).expect("the reply, then end of stream");
        let reply = String::from_utf8_lossy(&reply);
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n") && reply.ends_with(body), "{reply:?}");
    }
    let access = proxy.wait_access(20);
    assert!(access.iter().all(|a| a["close"] == "closed"), "{access:?}");
}

/// The same when the client had half-closed first: the server's end of
/// stream ends the relay, and the close of the client's socket is what
/// carries the held last bytes.
#[test]
fn a_short_echo_after_the_client_half_closed_arrives_whole() {
    let (proxy, _echo) = echo_proxy("");
    for i in 0..20 {
        let mut client = TcpStream::connect(proxy.addr("edge")).expect("connect");
        let sent = format!("GET /{i} HTTP/1.1\r\n\r\nand some bytes after the head");
        client.write_all(sent.as_bytes()).expect("write");
        client.shutdown(Shutdown::Write).expect("half-close");
        client.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let mut back = Vec::new();
        client.read_to_end(&mut back).expect("the echo, then end of stream");
        assert_eq!(String::from_utf8_lossy(&back), sent);
    }
}

/// A server that answers and then resets instead of closing: its reply is
/// relayed, and the access log says the server failed, not that it closed.
/// The reset usually arrives before the proxy reads the reply, with the same
/// readiness that a FIN brings; only the error in it tells them apart.
#[test]
fn a_reset_after_the_last_bytes_is_logged_as_a_server_error() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let server_addr = listener.local_addr().expect("addr");
    let server = std::thread::spawn(move || {
        for _ in 0..5 {
            let (mut conn, _) = listener.accept().expect("accept");
            let mut buf = [0u8; 256];
            let _ = conn.read(&mut buf).expect("request");
            conn.write_all(b"partial reply").expect("reply");
            // Linger 0: the close sends a reset.
            socket2::SockRef::from(&conn).set_linger(Some(Duration::ZERO)).expect("linger");
        }
    });
    let proxy = Proxy::start(&pass_through("resets", &format!("{{ servers: [{server_addr}], connect_timeout: 1s }}")));
    for _ in 0..5 {
        let mut client = TcpStream::connect(proxy.addr("edge")).expect("connect");
        client.write_all(b"hello").expect("write");
        client.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        // The reply, then an end of stream or a reset: either way, no hang.
        let mut back = Vec::new();
        let _ = client.read_to_end(&mut back);
    }
    server.join().expect("server");
    let access = proxy.wait_access(5);
    for a in &access {
        let close = a["close"].as_str().unwrap_or_default();
        assert!(close.starts_with("server error"), "a reset logged as {close:?}: {access:?}");
    }
}

#[test]
fn per_ip_limit_refuses_extra_connections() {
    let (proxy, echo) = echo_proxy("limits: { max_connections: 100, max_connections_per_ip: 2 }");
    let addr = proxy.addr("edge");
    let mut held = Vec::new();
    for i in 0..2 {
        let mut c = TcpStream::connect(addr).expect("connect");
        c.write_all(format!("GET /{i} HTTP/1.1\r\n\r\n").as_bytes()).expect("write");
        held.push(c);
    }
    echo.wait_seen(2);
    let mut third = TcpStream::connect(addr).expect("connect is accepted by the kernel");
    third.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let _ = third.write_all(b"GET /3 HTTP/1.1\r\n\r\n");
    let mut buf = [0u8; 16];
    let n = third.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the third connection is closed at once");
    assert_eq!(echo.seen().len(), 2);
    proxy.wait_log(5, |v| v["limit"] == "limits.max_connections_per_ip");
    drop(held);
}

#[test]
fn a_dead_server_is_skipped_for_the_next_one() {
    let echo = Backend::start(Reply::Echo);
    // A port with nobody listening.
    let dead = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let backend = format!("{{ servers: [{dead}, {echo}], retries: 1, connect_timeout: 1s }}", echo = echo.addr);
    let proxy = Proxy::start(&pass_through("echo", &backend));
    for _ in 0..3 {
        let mut c = TcpStream::connect(proxy.addr("edge")).expect("connect");
        c.write_all(b"ping").expect("write");
        c.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).expect("echo through the live server");
        assert_eq!(&buf, b"ping");
    }
    proxy.wait_log(5, |v| v["message"] == "backend server marked down");
}

/// The first bytes go out with the connect when the handshake is already
/// done; when it is not (here: the server's accept queue is full, so its
/// kernel drops the SYN and the handshake waits for the retransmit a second
/// later) they must still arrive, whole and first.
#[test]
fn first_bytes_reach_a_server_whose_handshake_is_late() {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.bind(&"127.0.0.1:0".parse::<SocketAddr>().expect("addr").into()).expect("bind");
    sock.listen(0).expect("listen");
    let server: TcpListener = sock.into();
    let addr = server.local_addr().expect("addr");
    // One connection nobody accepts fills a backlog of 0.
    let filler = TcpStream::connect(addr).expect("filler connect");
    let yaml = format!(
        r#"
listeners:
  - name: edge
    bind: 127.0.0.1:0
    detectors: [http]
    default: web
routes:
  - name: web
    match: {{ protocol: http }}
    to: web
backends:
  web: {{ servers: [{addr}], connect_timeout: 10s }}
"#
    );
    let proxy = Proxy::start(&yaml);
    let mut client = TcpStream::connect(proxy.addr("edge")).expect("connect");
    let request = b"GET /late HTTP/1.1\r\nHost: late.example\r\n\r\n";
    client.write_all(request).expect("write");
    // Let the proxy's SYN be dropped (its socket then waits in SYN-SENT for
    // the retransmit), then make room.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !syn_sent_to(addr) {
        assert!(std::time::Instant::now() < deadline, "the proxy never connected to {addr}:\n{}", proxy.output());
        std::thread::sleep(Duration::from_millis(10));
    }
    let (first, _) = server.accept().expect("accept filler");
    drop((first, filler));
    server.set_nonblocking(false).expect("blocking");
    let (mut conn, _) = server.accept().expect("the proxy's connection arrives after the retransmit");
    conn.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut got = vec![0u8; request.len()];
    conn.read_exact(&mut got).expect("the first bytes");
    assert_eq!(got, request);
    conn.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").expect("reply");
    drop(conn);
    assert!(reply(&mut client).starts_with("HTTP/1.1 204"));
}

/// Whether a socket of this machine waits for the answer to its SYN to
/// `addr` (IPv4), by `/proc/net/tcp`.
fn syn_sent_to(addr: SocketAddr) -> bool {
    const SYN_SENT: &str = "02";
    let SocketAddr::V4(v4) = addr else { return false };
    // The kernel prints the address as the number its bytes make in memory.
    let want = format!("{:08X}:{:04X}", u32::from_ne_bytes(v4.ip().octets()), v4.port());
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(2) == Some(&want.as_str()) && fields.get(3) == Some(&SYN_SENT)
    })
}

#[test]
fn sigterm_drains_open_connections_and_stops_accepting() {
    let (mut proxy, echo) = echo_proxy("");
    let addr = proxy.addr("edge");
    let mut open = TcpStream::connect(addr).expect("connect");
    open.write_all(b"GET / HTTP/1.1\r\n\r\n").expect("write");
    echo.wait_seen(1);
    let pid = proxy.pid();
    let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    proxy.wait_log(5, |v| v["message"].as_str().is_some_and(|m| m.contains("stopped accepting")));
    // The open connection still works.
    open.write_all(b"still here").expect("write after SIGTERM");
    open.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut buf = vec![0u8; 18 + 10];
    open.read_exact(&mut buf).expect("echo after SIGTERM");
    assert!(buf.ends_with(b"still here"));
    // New connections are refused.
    proxy.wait_refused(addr);
    drop(open);
    let status = proxy.terminate(10).expect("exits once the last connection ends");
    assert!(status.success(), "{status:?}");
}

#[test]
fn active_health_checks_mark_servers_down_and_up() {
    let echo = Backend::start(Reply::Echo);
    // Reserve a port, free it: the server there is down until we listen again.
    let later = TcpListener::bind("127.0.0.1:0").expect("bind");
    let later_addr = later.local_addr().expect("addr");
    drop(later);
    let backend = format!(
        "{{ servers: [{later_addr}, {echo}], health: {{ interval: 100ms, timeout: 500ms, rise: 1, fall: 2 }} }}",
        echo = echo.addr
    );
    let proxy = Proxy::start(&pass_through("echo", &backend));
    proxy.wait_log(10, |v| v["message"] == "health check: server is down" && v["server"] == later_addr.to_string());
    // Down servers are tried last: the echo server answers every time.
    for _ in 0..4 {
        let mut c = TcpStream::connect(proxy.addr("edge")).expect("connect");
        c.write_all(b"ping").expect("write");
        c.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).expect("echo");
    }
    let _back = TcpListener::bind(later_addr).expect("listen again on the freed port");
    proxy.wait_log(10, |v| v["message"] == "health check: server is up" && v["server"] == later_addr.to_string());
}

#[test]
fn idle_connections_are_closed_after_idle_timeout() {
    let (proxy, echo) = echo_proxy("limits: { idle_timeout: 300ms }");
    let mut c = TcpStream::connect(proxy.addr("edge")).expect("connect");
    c.write_all(b"GET / HTTP/1.1\r\n\r\n").expect("write");
    echo.wait_seen(1);
    c.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut back = Vec::new();
    // The echo comes back, then the proxy closes the silent connection.
    let _ = c.read_to_end(&mut back);
    assert_eq!(back, b"GET / HTTP/1.1\r\n\r\n");
    let access = proxy.wait_access(1);
    assert_eq!(access[0]["close"], "idle timeout");
}

#[test]
fn each_listener_has_its_own_detectors_and_routes() {
    let ssh = Backend::start(Reply::Record("ssh"));
    let web = Backend::start(Reply::Record("web"));
    let other = Backend::start(Reply::Record("other"));
    let yaml = format!(
        r#"
listeners:
  - name: only-ssh
    bind: 127.0.0.1:0
    detectors: [ssh]
    default: other
  - name: only-http
    bind: [127.0.0.1:0, 127.0.0.1:0]
    detectors: [http]
    default: other
routes:
  - name: ssh
    match: {{ protocol: ssh }}
    to: ssh
  - name: http
    match: {{ protocol: http }}
    to: web
  - name: other
    to: other
backends:
  ssh: {{ servers: [{ssh}] }}
  web: {{ servers: [{web}] }}
  other: {{ servers: [{other}] }}
"#,
        ssh = ssh.addr,
        web = web.addr,
        other = other.addr
    );
    let proxy = Proxy::start(&yaml);
    let send = |listener: &str, data: &[u8]| proxy.exchange(listener, data);
    assert_eq!(send("only-ssh", b"SSH-2.0-x\r\n"), "ssh\n");
    // The HTTP listener does not run the ssh detector, and vice versa.
    assert_eq!(send("only-http", b"SSH-2.0-x\r\n"), "other\n");
    assert_eq!(send("only-ssh", b"GET / HTTP/1.1\r\n\r\n"), "other\n");
    assert_eq!(send("only-http", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), "web\n");
    // Both addresses of the second listener serve.
    let both = proxy.logs_where(|v| v["message"] == "listening" && v["listener"] == "only-http");
    assert_eq!(both.len(), 2);
}
