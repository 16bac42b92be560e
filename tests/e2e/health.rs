//! Active health checks honour their counts: a server is marked down only
//! after `fall` failed checks in a row, and up again only after `rise`
//! good ones; while it is marked down, clients go to the other servers
//! even though it accepts again.

use crate::support::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// What a connection to a [`Switchable`] server turned out to be.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// Closed without a byte: a health check (a TCP connect).
    Check,
    /// Sent bytes: a client, through the proxy.
    Client,
}

/// A server on a fixed address that can be stopped (its port then refuses
/// connections) and started again. It notes each connection in the order
/// it accepted them, and answers `name` to a client.
struct Switchable {
    addr: SocketAddr,
    name: &'static str,
    /// Each connection since the last start, in accept order; `None` until
    /// it is known what it was.
    conns: Arc<Mutex<Vec<Option<Kind>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Switchable {
    fn start(name: &'static str) -> Switchable {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut server = Switchable {
            addr: listener.local_addr().expect("address"),
            name,
            conns: Arc::default(),
            stop: Arc::default(),
            thread: None,
        };
        server.serve(listener);
        server
    }

    /// Listen again on the same port, with a fresh list of connections.
    fn restart(&mut self) {
        // Linux lets a listener rebind at once (std sets SO_REUSEADDR).
        let listener = TcpListener::bind(self.addr).expect("listen again on the same port");
        self.conns = Arc::default();
        self.stop = Arc::default();
        self.serve(listener);
    }

    fn serve(&mut self, listener: TcpListener) {
        listener.set_nonblocking(true).expect("non-blocking");
        let (conns, stop, name) = (self.conns.clone(), self.stop.clone(), self.name);
        self.thread = Some(thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let conn = match listener.accept() {
                    Ok((conn, _)) => conn,
                    Err(_) => {
                        thread::sleep(Duration::from_millis(2));
                        continue;
                    }
                };
                let index = {
                    let mut conns = conns.lock().expect("conns");
                    conns.push(None);
                    conns.len() - 1
                };
                let conns = conns.clone();
                thread::spawn(move || {
                    let kind = answer(conn, name);
                    conns.lock().expect("conns")[index] = Some(kind);
                });
            }
        }));
    }

    /// Stop listening: connects to the port are refused from now on.
    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the accept thread");
        }
    }

    /// The connections so far, in accept order (`None`: still open).
    fn conns(&self) -> Vec<Option<Kind>> {
        self.conns.lock().expect("conns").clone()
    }

    /// Wait (at most 10 s) until `n` health checks have connected.
    fn wait_checks(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.conns().iter().filter(|k| **k == Some(Kind::Check)).count() < n {
            assert!(Instant::now() < deadline, "fewer than {n} health checks reached {}", self.addr);
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Switchable {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Read what comes: nothing means a check; bytes, a client to answer.
fn answer(mut conn: TcpStream, name: &str) -> Kind {
    conn.set_nonblocking(false).expect("blocking");
    conn.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut buf = [0u8; 256];
    match conn.read(&mut buf) {
        Ok(n) if n > 0 => {
            let _ = conn.write_all(format!("{name}\n").as_bytes());
            Kind::Client
        }
        _ => Kind::Check,
    }
}

const INTERVAL: Duration = Duration::from_millis(200);
const RISE: usize = 4;
const FALL: u32 = 4;

#[test]
fn a_server_falls_after_fall_failed_checks_and_rises_after_rise_good_ones() {
    let mut a = Switchable::start("a");
    let b = Backend::start(Reply::Record("b"));
    let yaml = format!(
        "\
listeners:
  - name: edge
    bind: 127.0.0.1:0
    detectors: []
    default: web
routes:
  - name: web
    to: web
backends:
  web:
    servers: [{a}, {b}]
    retries: 1
    health: {{ interval: {interval}ms, timeout: 1s, rise: {RISE}, fall: {FALL} }}
",
        a = a.addr,
        b = b.addr,
        interval = INTERVAL.as_millis()
    );
    let proxy = Proxy::start(&yaml);
    let server = a.addr.to_string();
    a.wait_checks(2);

    // Fall: no client connects meanwhile, so only the checks can mark it.
    let stopped = Instant::now();
    a.stop();
    let down = proxy.wait_log(20, |v| v["message"] == "health check: server is down" && v["server"] == server);
    let took = stopped.elapsed();
    // `fall` failures are `fall - 1` intervals apart; allow one interval for
    // a first check whose turn came just before the stop.
    assert!(took >= INTERVAL * (FALL - 2), "marked down {took:?} after the stop, with fall: {FALL}: {down}");
    assert!(proxy.logs_where(|v| v["message"] == "backend server marked down").is_empty(), "a client connected");

    // Rise: it accepts again, but stays marked down until `rise` checks
    // succeeded; clients meanwhile go to `b`.
    a.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut to_b = 0;
    while proxy.exchange_eof("edge", b"who?") != "a\n" {
        to_b += 1;
        assert!(Instant::now() < deadline, "a never served again; output:\n{}", proxy.output());
        thread::sleep(Duration::from_millis(20));
    }
    proxy.wait_log(5, |v| v["message"] == "health check: server is up" && v["server"] == server);
    // Its accept queue is in order: `rise` checks connected before the
    // first client it was given.
    let conns = a.conns();
    let first_client = conns.iter().position(|k| *k == Some(Kind::Client)).expect("the client a answered");
    assert!(first_client >= RISE, "a client reached it after {first_client} good checks, with rise: {RISE}: {conns:?}");
    eprintln!("{to_b} clients went to b while a was rising");
}
