//! A pool whose first server misbehaves, beside a good one: it black-holes
//! SYNs, resets each connection, ends it at once, or reads a byte now and
//! then and never answers. For each, what ordinary clients get, what the
//! access log and the metrics say, and that the proxy gives back every
//! connection and descriptor afterwards.
//!
//! Only a connect that fails is retried and marks the server down (a reset
//! that beats the proxy's first bytes fails the connect). A server that
//! accepts and then misbehaves has taken the client's bytes: its clients
//! are closed without an answer (at once, or at `idle_timeout`), and the
//! server stays up: neither the retry nor the passive check sees it.

use crate::support::*;
use serde_json::Value;
use socket2::{Domain, Socket, Type};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Ordinary clients sent through the pool, one after another.
const CLIENTS: usize = 8;
/// Descriptors the proxy may hold above its baseline once the load is over
/// (a scrape's admin connection still closing, a worker's first lazily
/// made object).
const FD_MARGIN: usize = 4;

/// How the pool's bad server misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Misbehaviour {
    /// Listens, never accepts, and its accept queue is full: new SYNs are
    /// dropped and a connect hangs.
    BlackHole,
    /// Accepts and closes with `SO_LINGER` 0: a reset.
    Reset,
    /// Accepts and ends its side at once (a FIN), reading nothing.
    Fin,
    /// Accepts, reads a byte every 100 ms, never answers.
    SlowReader,
}

/// A misbehaving server on 127.0.0.1; it stops misbehaving when dropped.
struct BadServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// Sockets it keeps open: the black hole's listener and the connections
    /// filling its queue, or the connections it ended its side of.
    held: Arc<Mutex<Vec<Socket>>>,
}

impl BadServer {
    fn start(kind: Misbehaviour) -> BadServer {
        let stop = Arc::new(AtomicBool::new(false));
        let held = Arc::new(Mutex::new(Vec::new()));
        if kind == Misbehaviour::BlackHole {
            let (addr, sockets) = black_hole();
            held.lock().expect("held").extend(sockets);
            return BadServer { addr, stop, held };
        }
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the bad server");
        let addr = listener.local_addr().expect("address");
        let (s, h) = (stop.clone(), held.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                match kind {
                    Misbehaviour::Reset => {
                        let socket = Socket::from(conn);
                        let _ = socket.set_linger(Some(Duration::ZERO));
                    }
                    // A close with the client's bytes unread would send a
                    // reset, the case above: end the sending side only.
                    Misbehaviour::Fin => {
                        let _ = conn.shutdown(Shutdown::Write);
                        h.lock().expect("held").push(Socket::from(conn));
                    }
                    Misbehaviour::SlowReader => {
                        let s = s.clone();
                        thread::spawn(move || read_slowly(conn, &s));
                    }
                    Misbehaviour::BlackHole => {}
                }
            }
        });
        BadServer { addr, stop, held }
    }
}

impl Drop for BadServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.held.lock().map(|mut h| h.clear()).ok();
    }
}

/// A listening socket (backlog 0) whose accept queue the test fills with
/// connections of its own until a connect hangs; its address, and the
/// sockets to keep open.
fn black_hole() -> (SocketAddr, Vec<Socket>) {
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    listener.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).expect("bind the black hole");
    listener.listen(0).expect("listen");
    let addr = listener.local_addr().expect("address").as_socket().expect("an IP address");
    let mut held = vec![listener];
    for _ in 0..8 {
        let probe = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        match probe.connect_timeout(&addr.into(), Duration::from_millis(300)) {
            Ok(()) => held.push(probe),
            Err(e) if e.kind() == ErrorKind::TimedOut || e.kind() == ErrorKind::WouldBlock => return (addr, held),
            Err(e) => panic!("connect to the black hole: {e}"),
        }
    }
    panic!("the black hole's queue took 8 connections and is still not full");
}

/// Read a byte every 100 ms, answer nothing, until the peer closes or the
/// server stops (at most 60 s).
fn read_slowly(mut conn: TcpStream, stop: &AtomicBool) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
    for _ in 0..600 {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        thread::sleep(Duration::from_millis(100));
        match conn.read(&mut [0u8; 1]) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {}
            Err(_) => return,
        }
    }
}

/// A proxy whose HTTP route `web` balances over `[bad, good]`. Host
/// `direct` goes to the good server alone, host `alone` to the bad one.
fn start(bad: &BadServer, good: &Backend, idle: &str) -> Proxy {
    let (bad, good) = (bad.addr, good.addr);
    Proxy::start(&format!(
        r#"
listeners:
  - name: edge
    bind: 127.0.0.1:0
    detectors: [http]
routes:
  - name: direct
    match: {{ protocol: http, attributes: {{ host: direct }} }}
    to: direct
  - name: alone
    match: {{ protocol: http, attributes: {{ host: alone }} }}
    to: alone
  - name: web
    match: {{ protocol: http }}
    to: web
backends:
  web: {{ servers: [{bad}, {good}], retries: 1, connect_timeout: 500ms }}
  direct: {{ servers: [{good}] }}
  alone: {{ servers: [{bad}], retries: 1, connect_timeout: 500ms }}
limits: {{ max_connections_per_ip: 100000, idle_timeout: {idle} }}
admin: {{ bind: 127.0.0.1:0 }}
"#
    ))
}

/// What one client got.
struct Answer {
    /// Its own address, as the access log names it.
    client: String,
    body: String,
    /// The proxy closed the connection (rather than the client giving up
    /// after 20 s).
    closed: bool,
}

fn get(proxy: &Proxy, host: &str) -> Answer {
    let mut c = TcpStream::connect(proxy.addr("edge")).expect("connect");
    let client = c.local_addr().expect("client address").to_string();
    write!(c, "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").expect("write");
    c.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let mut got = Vec::new();
    let closed = match c.read_to_end(&mut got) {
        Ok(_) => true,
        Err(e) => e.kind() == ErrorKind::ConnectionReset,
    };
    Answer { client, body: String::from_utf8_lossy(&got).into_owned(), closed }
}

/// `n` clients of `host`, one after another, each with its access-log line.
fn clients(proxy: &Proxy, host: &str, n: usize) -> Vec<(Answer, Value)> {
    let before = proxy.access().len();
    let answers: Vec<Answer> = (0..n).map(|_| get(proxy, host)).collect();
    let lines = proxy.wait_access(before + n);
    answers
        .into_iter()
        .map(|a| {
            let line = lines.iter().rev().find(|l| l["client"] == a.client.as_str()).cloned();
            let line = line.unwrap_or_else(|| panic!("no access line for client {}: {lines:?}", a.client));
            (a, line)
        })
        .collect()
}

fn open_fds(proxy: &Proxy) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", proxy.pid())).expect("/proc/PID/fd").count()
}

/// A few clients through the good server alone (so every worker has
/// served one), then the proxy's descriptor count.
fn baseline(proxy: &Proxy) -> usize {
    for (a, line) in clients(proxy, "direct", 4) {
        assert!(a.body.ends_with("web"), "warm-up: {:?}, {line}", a.body);
    }
    proxy.metric("refractium_tcp_connections_open");
    open_fds(proxy)
}

/// After the load: no connection open, none to the bad server, and the
/// proxy's descriptors back to their baseline.
fn assert_nothing_leaks(proxy: &Proxy, bad: &BadServer, baseline: usize) {
    proxy.wait_metric(20, "refractium_tcp_connections_open", |n| n == 0);
    proxy.wait_metric(20, &server("refractium_server_active_connections", "web", bad.addr), |n| n == 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = open_fds(proxy);
        if now <= baseline + FD_MARGIN {
            break;
        }
        assert!(Instant::now() < deadline, "the proxy holds {now} descriptors, {baseline} before the load");
        thread::sleep(Duration::from_millis(50));
    }
}

/// A server family's series, e.g. `refractium_server_up{backend="web",server="127.0.0.1:80"}`.
fn server(family: &str, backend: &str, addr: SocketAddr) -> String {
    format!("{family}{{backend=\"{backend}\",server=\"{addr}\"}}")
}

fn outcomes(route: &str, outcome: &str) -> String {
    format!(
        "refractium_tcp_connections_total{{listener=\"edge\",outcome=\"{outcome}\",protocol=\"http\",route=\"{route}\"}}"
    )
}

#[test]
fn a_server_that_black_holes_syns_is_timed_out_and_the_retry_reaches_the_good_one() {
    let bad = BadServer::start(Misbehaviour::BlackHole);
    let good = Backend::start(Reply::Http("web"));
    let proxy = start(&bad, &good, "30s");
    let fds = baseline(&proxy);
    for (a, line) in clients(&proxy, "x", CLIENTS) {
        assert!(a.closed && a.body.ends_with("web"), "a client got {:?}: {line}", a.body);
        assert_eq!(line["backend"], good.addr.to_string().as_str(), "{line}");
        assert_eq!(line["close"], "closed", "{line}");
    }
    // The first connect hung until the pool's connect timeout; the server
    // is down, and tried last from then on.
    let down = proxy.wait_log(10, |v| v["message"] == "backend server marked down" && v["pool"] == "web");
    assert_eq!(down["server"], bad.addr.to_string().as_str(), "{down}");
    assert!(down["error"].as_str().is_some_and(|e| e.contains("connect timed out after 500ms")), "{down}");
    assert!(proxy.metric(&server("refractium_server_connect_failures_total", "web", bad.addr)) >= 1);
    assert_eq!(proxy.metric(&server("refractium_server_up", "web", bad.addr)), 0);
    assert_eq!(proxy.metric(&server("refractium_server_up", "web", good.addr)), 1);
    assert_eq!(proxy.metric(&server("refractium_server_connect_failures_total", "web", good.addr)), 0);
    assert_eq!(proxy.metric(&outcomes("web", "routed")), CLIENTS as u64, "every client was served");
    assert_eq!(proxy.metric(&outcomes("web", "backend_failed")), 0);

    // A pool with nothing but the black hole: the client is closed with no
    // answer once the connect timed out, and the line says why.
    let (a, line) = clients(&proxy, "alone", 1).pop().expect("one client");
    assert!(a.closed && a.body.is_empty(), "{:?}: {line}", a.body);
    assert_eq!(line["backend"], "-", "{line}");
    let close = line["close"].as_str().unwrap_or_default();
    assert!(close.starts_with("no backend of pool `alone` accepted the connection"), "{line}");
    assert!(close.contains("connect timed out after 500ms"), "{line}");
    assert_eq!(proxy.metric(&outcomes("alone", "backend_failed")), 1);
    assert!(proxy.metric(&server("refractium_server_connect_failures_total", "alone", bad.addr)) >= 1);
    assert_nothing_leaks(&proxy, &bad, fds);
    crate::report::row(
        "a server that black-holes SYNs",
        &format!("{CLIENTS} clients, round robin over it and a good server, `retries: 1`, `connect_timeout` 500 ms"),
        "timed the connect out, retried on the good server, marked the bad one down; no connection or descriptor left open",
        &format!(
            "nothing: all {CLIENTS} served (a client of a pool with only that server is closed after the timeout)"
        ),
    );
}

/// `CLIENTS` clients through a pool whose bad server accepts and then
/// misbehaves; checks what is common to these servers and returns the
/// access-log lines of the clients the bad server got.
fn misbehaves_after_accepting(kind: Misbehaviour, idle: &str) -> Vec<Value> {
    let bad = BadServer::start(kind);
    let good = Backend::start(Reply::Http("web"));
    let proxy = start(&bad, &good, idle);
    let fds = baseline(&proxy);
    let mut got_bad = Vec::new();
    for (a, line) in clients(&proxy, "x", CLIENTS) {
        assert!(a.closed, "{kind:?}: a client was left hanging: {line}");
        if line["backend"] == good.addr.to_string().as_str() {
            assert!(a.body.ends_with("web"), "{kind:?}: {:?}: {line}", a.body);
            assert_eq!(line["close"], "closed", "{line}");
        } else {
            assert_eq!(line["backend"], bad.addr.to_string().as_str(), "{line}");
            assert_eq!(a.body, "", "{kind:?}: the bad server's client got bytes: {line}");
            assert_eq!(line["bytes_down"], 0, "{line}");
            got_bad.push(line);
        }
    }
    // No client failed for want of a server, and a connect that succeeded
    // marks nothing down. (A reset can beat the proxy's first bytes, which
    // then fail the connect: retried, and the server down from then on.)
    let failures = proxy.metric(&server("refractium_server_connect_failures_total", "web", bad.addr));
    let up = proxy.metric(&server("refractium_server_up", "web", bad.addr));
    if kind == Misbehaviour::Reset {
        assert!(got_bad.len() + failures as usize >= 1, "no client met the bad server");
        assert_eq!(up, u64::from(failures == 0), "up only while no connect to it failed");
    } else {
        assert!(!got_bad.is_empty(), "{kind:?}: round robin never picked the bad server");
        assert_eq!((failures, up), (0, 1), "{kind:?}: a connect that succeeded marks nothing down");
    }
    assert_eq!(proxy.metric(&outcomes("web", "routed")), CLIENTS as u64);
    assert_eq!(proxy.metric(&outcomes("web", "backend_failed")), 0);
    assert_nothing_leaks(&proxy, &bad, fds);
    let what = match kind {
        Misbehaviour::Reset => "a server that resets each connection it accepts",
        Misbehaviour::Fin => "a server that accepts and closes without reading",
        Misbehaviour::SlowReader => "a server that reads a byte every 100 ms and never answers",
        Misbehaviour::BlackHole => "a server that black-holes SYNs",
    };
    let served = CLIENTS - got_bad.len();
    crate::report::row(
        what,
        &format!("{CLIENTS} clients, round robin over it and a good server, `retries: 1`, `idle_timeout` {idle}"),
        &format!(
            "{failures} connects to it failed and were retried; {served} clients served; no connection or descriptor left open"
        ),
        &if got_bad.is_empty() {
            "nothing".to_string()
        } else {
            format!(
                "{} of {CLIENTS} clients sent to it got no answer (closed promptly or at the idle timeout; not retried once connected)",
                got_bad.len()
            )
        },
    );
    got_bad
}

#[test]
fn a_server_that_resets_on_accept_is_retried_or_fails_its_client_at_once() {
    for line in misbehaves_after_accepting(Misbehaviour::Reset, "30s") {
        let close = line["close"].as_str().unwrap_or_default();
        assert!(close.starts_with("server error"), "{line}");
        assert!(line["duration_ms"].as_u64().is_some_and(|ms| ms < 10_000), "{line}");
    }
}

#[test]
fn a_server_that_closes_at_once_ends_its_clients_without_an_answer() {
    for line in misbehaves_after_accepting(Misbehaviour::Fin, "30s") {
        assert_eq!(line["close"], "closed", "{line}");
        assert!(line["duration_ms"].as_u64().is_some_and(|ms| ms < 10_000), "{line}");
    }
}

#[test]
fn a_server_that_reads_slowly_and_never_answers_is_cut_at_the_idle_timeout() {
    for line in misbehaves_after_accepting(Misbehaviour::SlowReader, "1s") {
        assert_eq!(line["close"], "idle timeout", "{line}");
        assert!(line["duration_ms"].as_u64().is_some_and(|ms| ms >= 900), "{line}");
    }
}
