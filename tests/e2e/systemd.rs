//! systemd: readiness notifications (`Type=notify`) and socket activation,
//! with the test in the service manager's place: it listens on
//! `NOTIFY_SOCKET` and passes a listening socket as `LISTEN_FDS`.

use crate::support::*;
use crate::udp_backend::*;
use std::io::Write;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

fn config(bind: &str, backend: &Backend) -> String {
    format!(
        r#"
listeners:
  - name: edge
    bind: {bind}
    detectors: [http]
routes:
  - name: web
    match: {{ protocol: http }}
    to: web
backends:
  web: {{ servers: [{}] }}
reload: {{ watch: false }}
"#,
        backend.addr
    )
}

/// The next notification that is not only a `STATUS=` update (those also
/// come every few seconds).
fn next_state(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    for _ in 0..100 {
        let n = socket.recv(&mut buf).expect("a notification within 30 s");
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        if !text.lines().all(|l| l.starts_with("STATUS=")) {
            return text;
        }
    }
    panic!("only status updates");
}

fn status(message: &str) -> &str {
    message.lines().find_map(|l| l.strip_prefix("STATUS=")).unwrap_or_default()
}

#[test]
fn the_service_manager_hears_ready_reloading_and_stopping() {
    let backend = Backend::start(Reply::Http("web"));
    let sockets = tempfile::tempdir().expect("tempdir");
    let path = sockets.path().join("notify");
    let manager = UnixDatagram::bind(&path).expect("bind the notify socket");
    manager.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut proxy = Proxy::start_with(dir, &config("127.0.0.1:0", &backend), |file| {
        let mut run = Command::new(bin());
        run.args(["run", "-c"]).arg(file).stdin(Stdio::null()).env("NOTIFY_SOCKET", &path);
        run
    });

    let ready = next_state(&manager);
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert_eq!(status(&ready), "0 connections, 0 UDP sessions open; no reload yet");
    // Ready means serving.
    assert!(proxy.exchange("edge", GET).ends_with("web"));

    proxy.signal("HUP");
    let reloading = next_state(&manager);
    assert!(reloading.lines().any(|l| l == "RELOADING=1"), "{reloading:?}");
    let usec = reloading.lines().find_map(|l| l.strip_prefix("MONOTONIC_USEC=")).expect("MONOTONIC_USEC");
    assert!(usec.parse::<u64>().is_ok_and(|u| u > 0), "{reloading:?}");
    let after = next_state(&manager);
    assert!(after.lines().any(|l| l == "READY=1"), "{after:?}");
    assert!(status(&after).contains("(SIGHUP) in force"), "{after:?}");

    // A rejected reload is over too, and the status says so.
    let file = proxy.dir.path().join("refractium.yaml");
    std::fs::write(&file, "listeners: [").expect("break the config");
    proxy.signal("HUP");
    assert!(next_state(&manager).contains("RELOADING=1"));
    let after = next_state(&manager);
    assert!(after.lines().any(|l| l == "READY=1"), "{after:?}");
    assert!(status(&after).contains("(SIGHUP) rejected:"), "{after:?}");

    proxy.signal("TERM");
    let stopping = next_state(&manager);
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    assert!(proxy.wait_exit(30).is_some_and(|s| s.success()));
}

#[test]
fn a_socket_passed_by_systemd_is_used_and_its_queued_connections_served() {
    let backend = Backend::start(Reply::Http("web"));
    let socket = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = socket.local_addr().expect("addr");
    // A client that connected while no proxy ran waits in the socket's queue.
    let mut early = TcpStream::connect(addr).expect("connect to the queue");
    early.write_all(GET).expect("write");

    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = Proxy::start_with(dir, &config(&addr.to_string(), &backend), |file| {
        // What systemd does: the socket as descriptor 3, LISTEN_FDS=1 and
        // LISTEN_PID naming the service's own process (`exec` keeps the
        // shell's).
        let mut run = Command::new("sh");
        run.arg("-c")
            .arg(r#"LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" run -c "$1" 3<&0 0</dev/null"#)
            .arg(bin())
            .arg(file)
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(socket)));
        run
    });
    assert!(reply(&mut early).ends_with("web"), "the queued connection is served");
    assert!(proxy.exchange("edge", GET).ends_with("web"));
    let passed = proxy.wait_log(10, |v| v["message"] == "socket passed by systemd");
    assert_eq!(passed["addr"], addr.to_string());
    assert!(proxy.logs_where(|v| v["level"] == "ERROR").is_empty(), "{}", proxy.output());
}

#[test]
fn a_udp_socket_passed_by_systemd_keeps_each_client_in_one_session() {
    // Several workers share one passed socket; a client's datagrams must
    // still all go through one session (one upstream socket), as they do
    // on sockets the proxy binds itself (SO_REUSEPORT hashes each client to
    // one of them).
    let backend = UdpBackend::start(echo);
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = socket.local_addr().expect("addr");
    let yaml = format!(
        r#"
listeners:
  - name: edge
    bind: {addr}
    transport: udp
    detectors: [dns]
    detect: {{ timeout: 1s }}
    default: other
routes:
  - name: other
    to: other
backends:
  other: {{ servers: [{}] }}
runtime: {{ workers: 2 }}
reload: {{ watch: false }}
"#,
        backend.addr
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = Proxy::start_with(dir, &yaml, |file| {
        let mut run = Command::new("sh");
        run.arg("-c")
            .arg(r#"LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" run -c "$1" 3<&0 0</dev/null"#)
            .arg(bin())
            .arg(file)
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(socket)));
        run
    });
    assert_eq!(proxy.addr("edge"), addr);
    let c = client();
    let mut buf = [0u8; 64];
    // The first datagram makes the session; then bursts, which are what
    // spreads over threads that all wait on the same socket.
    c.send_to(b"\x80first", addr).expect("send");
    c.recv_from(&mut buf).expect("echo of the first datagram");
    let mut sent = 1;
    for burst in 0..13 {
        for i in 0..3 {
            c.send_to(format!("\x7f{burst}-{i}").as_bytes(), addr).expect("send");
        }
        for _ in 0..3 {
            c.recv_from(&mut buf).expect("echo");
        }
        sent += 3;
    }
    let seen = backend.wait_seen(sent);
    let sources: std::collections::HashSet<_> = seen.iter().map(|(s, _)| *s).collect();
    assert_eq!(sources.len(), 1, "one client, one session, one upstream port: {sources:?}");
    assert_eq!(proxy.logs_where(|v| v["message"] == "listening").len(), 1, "{}", proxy.output());
    assert!(proxy.logs_where(|v| v["level"] == "ERROR").is_empty(), "{}", proxy.output());
}

/// `KEY=value` lines of a unit file (comments and sections left out).
fn unit(name: &str) -> Vec<(String, String)> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/systemd").join(name);
    let text = std::fs::read_to_string(&path).expect("unit file");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn the_example_units_are_hardened_and_check_before_reloading() {
    let service = unit("refractium.service");
    let get = |key: &str| -> Vec<&str> { service.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect() };
    assert_eq!(get("Type"), ["notify"]);
    for (key, value) in [
        ("DynamicUser", "yes"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", "CAP_NET_BIND_SERVICE"),
        ("ProtectSystem", "strict"),
        ("CacheDirectory", "refractium"),
        ("Environment", "REFRACTIUM_CACHE_DIR=%C/refractium"),
    ] {
        assert_eq!(get(key), [value], "{key}");
    }
    let start = get("ExecStart");
    let config = start[0].strip_prefix("/usr/local/bin/refractium run -c ").expect("ExecStart runs refractium run -c");
    assert_eq!(
        get("ExecReload"),
        [format!("/usr/local/bin/refractium check -c {config}").as_str(), "/bin/kill -HUP $MAINPID"],
        "the config is checked before the signal"
    );
    assert!(get("ReadOnlyPaths").contains(&"/etc/refractium") && config.starts_with("/etc/refractium/"));

    let socket = unit("refractium.socket");
    let listens: Vec<_> = socket.iter().filter(|(k, _)| k.starts_with("Listen")).collect();
    assert!(!listens.is_empty());
    for (key, addr) in listens {
        assert!(addr.parse::<std::net::SocketAddr>().is_ok(), "{key}={addr}: write IP:port, as a listener's bind");
    }
}

#[test]
fn the_example_units_pass_systemd_analyze_verify() {
    // systemd-analyze reads the units as systemd would (CI installs it).
    if !have("systemd-analyze") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/systemd");
    let mut files = Vec::new();
    for name in ["refractium.socket", "refractium.service"] {
        let text = std::fs::read_to_string(source.join(name)).expect("unit file");
        // verify checks that the programs exist: the binary under test
        // stands in for the installed one.
        let text = text.replace("/usr/local/bin/refractium", bin());
        std::fs::write(dir.path().join(name), text).expect("write unit");
        files.push(dir.path().join(name));
    }
    let (ok, out, err) = run_cmd(Command::new("systemd-analyze").arg("verify").args(&files), 60);
    assert!(ok, "systemd-analyze verify failed:\n{out}{err}");
    assert_eq!(format!("{out}{err}").trim(), "", "no warnings");
}
