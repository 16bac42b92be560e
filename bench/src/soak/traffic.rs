//! The soak's clients: one thread per kind of traffic, each at a modest
//! fixed pace until told to stop, every socket operation under a timeout.
//! Ordinary clients (HTTP, TLS, SSH, DNS) check the answer they get back;
//! hostile ones (garbage, slowloris, the trapping plugin) only count what
//! happened to them. Also the two small backends the bench's own backend
//! does not cover: an SSH-like server that answers a banner, and a UDP echo.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::backend::{HTTP_RESPONSE, TLS_REPLY_LEN};
use crate::hello;

/// What the SSH-like backend sends once it has read the client's banner.
const SSH_SERVER_BANNER: &[u8] = b"SSH-2.0-soak-backend\r\n";
/// Every connect, read and write of a client gives up after this long.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// First failure messages kept for the report.
const KEEP_ERRORS: usize = 8;

/// The kinds of traffic, in report order.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Http,
    Tls,
    Ssh,
    Dns,
    Garbage,
    Slowloris,
    Trap,
}

impl Kind {
    pub const ALL: [Kind; 7] =
        [Kind::Http, Kind::Tls, Kind::Ssh, Kind::Dns, Kind::Garbage, Kind::Slowloris, Kind::Trap];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Http => "HTTP GET (tcp)",
            Kind::Tls => "TLS ClientHello by SNI (tcp)",
            Kind::Ssh => "SSH banner (tcp)",
            Kind::Dns => "DNS query (udp, one session each)",
            Kind::Garbage => "garbage bytes (tcp, hostile)",
            Kind::Slowloris => "slowloris, 1 byte / 250 ms for 10 s (tcp, hostile)",
            Kind::Trap => "`trap…` into the trapping plugin (tcp, hostile)",
        }
    }

    /// Hostile clients may be cut off; only ordinary ones must succeed.
    pub fn hostile(self) -> bool {
        matches!(self, Kind::Garbage | Kind::Slowloris | Kind::Trap)
    }

    /// Pause between two attempts of one client thread.
    fn pace(self) -> Duration {
        Duration::from_millis(match self {
            Kind::Http => 40,
            Kind::Tls | Kind::Dns => 100,
            Kind::Ssh | Kind::Garbage => 200,
            Kind::Slowloris => 100,
            Kind::Trap => 400,
        })
    }
}

/// Outcome counters shared by the client threads.
#[derive(Default)]
pub struct Tally {
    ok: [AtomicU64; 7],
    failed: [AtomicU64; 7],
    errors: Mutex<Vec<String>>,
}

impl Tally {
    fn index(kind: Kind) -> usize {
        Kind::ALL.iter().position(|k| *k == kind).unwrap_or(0)
    }

    fn record(&self, kind: Kind, outcome: Result<()>) {
        let i = Self::index(kind);
        match outcome {
            Ok(()) => self.ok[i].fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                if let Ok(mut errors) = self.errors.lock()
                    && errors.len() < KEEP_ERRORS
                    && !kind.hostile()
                {
                    errors.push(format!("{}: {e:#}", kind.name()));
                }
                self.failed[i].fetch_add(1, Ordering::Relaxed)
            }
        };
    }

    /// (ok, failed) for one kind.
    pub fn get(&self, kind: Kind) -> (u64, u64) {
        let i = Self::index(kind);
        (self.ok[i].load(Ordering::Relaxed), self.failed[i].load(Ordering::Relaxed))
    }

    /// The first failures of ordinary clients.
    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

/// Where the clients connect.
#[derive(Clone, Copy)]
pub struct Targets {
    pub tcp: SocketAddr,
    pub udp: SocketAddr,
}

/// One exchange of `kind`; `Ok` when the answer is the expected one (for
/// hostile kinds: when the proxy ended the connection without an error).
pub fn once(kind: Kind, to: Targets, n: u64, stop: &AtomicBool) -> Result<()> {
    match kind {
        Kind::Http => {
            let reply = exchange(to.tcp, b"GET /soak HTTP/1.1\r\nHost: soak\r\n\r\n")?;
            ensure!(reply == HTTP_RESPONSE, "reply {:?}", String::from_utf8_lossy(&reply));
        }
        Kind::Tls => {
            let sni = if n.is_multiple_of(2) { "a.soak.test" } else { "b.soak.test" };
            let reply = exchange(to.tcp, &hello::client_hello(sni))?;
            ensure!(reply == [0x42; TLS_REPLY_LEN], "{} bytes back for SNI {sni}", reply.len());
        }
        Kind::Ssh => {
            let mut s = connect(to.tcp)?;
            s.write_all(b"SSH-2.0-soak-client\r\n").context("write banner")?;
            let mut line = Vec::new();
            BufReader::new(&s).read_until(b'\n', &mut line).context("read banner")?;
            ensure!(line == SSH_SERVER_BANNER, "banner {:?}", String::from_utf8_lossy(&line));
        }
        Kind::Dns => {
            let sock = UdpSocket::bind("127.0.0.1:0").context("bind UDP client")?;
            sock.set_read_timeout(Some(IO_TIMEOUT))?;
            let query = dns_query(n as u16);
            sock.send_to(&query, to.udp).context("send query")?;
            let mut buf = [0u8; 512];
            let (len, _) = sock.recv_from(&mut buf).context("no answer")?;
            ensure!(buf[..len] == query[..], "answer of {len} bytes is not the echo");
        }
        Kind::Garbage => {
            let junk: Vec<u8> = (0..64u64).map(|i| (0xff ^ (i.wrapping_mul(31) ^ n)) as u8 | 0x80).collect();
            exchange(to.tcp, &junk)?;
        }
        Kind::Trap => {
            exchange(to.tcp, format!("trap number {n}").as_bytes())?;
        }
        Kind::Slowloris => {
            let mut s = connect(to.tcp)?;
            let head = b"GET /slow HTTP/1.1\r\nX-Slow: 1\r\n";
            let until = Instant::now() + Duration::from_secs(10);
            for (i, b) in head.iter().cycle().enumerate() {
                if Instant::now() >= until || stop.load(Ordering::Relaxed) || i > 200 {
                    break;
                }
                if s.write_all(&[*b]).is_err() {
                    bail!("cut off after {i} bytes");
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        }
    }
    Ok(())
}

fn connect(to: SocketAddr) -> Result<TcpStream> {
    let s = TcpStream::connect_timeout(&to, IO_TIMEOUT).context("connect")?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

/// Send `data`, half-close, read to EOF.
fn exchange(to: SocketAddr, data: &[u8]) -> Result<Vec<u8>> {
    let mut s = connect(to)?;
    s.write_all(data).context("write")?;
    s.shutdown(Shutdown::Write).context("half-close")?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).context("read to EOF")?;
    Ok(reply)
}

/// A standard query for `soak.test A` with the given id.
fn dns_query(id: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    q.extend_from_slice(b"\x04soak\x04test\x00\x00\x01\x00\x01");
    q
}

/// Start one thread per kind (three for slowloris); they run until `stop`
/// or `hard_stop`, whichever comes first.
pub fn start(
    kinds: &[Kind],
    to: Targets,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    hard_stop: Instant,
) -> Vec<std::thread::JoinHandle<()>> {
    let mut threads = Vec::new();
    for &kind in kinds {
        let copies = if kind == Kind::Slowloris { 3 } else { 1 };
        for copy in 0..copies {
            let (tally, stop) = (tally.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                let mut n = copy;
                while !stop.load(Ordering::Relaxed) && Instant::now() < hard_stop {
                    tally.record(kind, once(kind, to, n, &stop));
                    n += copies;
                    std::thread::sleep(kind.pace());
                }
            }));
        }
    }
    threads
}

/// A TCP server that reads a banner line and answers with its own, then
/// waits for the client to close; returns its address.
pub fn ssh_backend() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding the SSH-like backend")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            std::thread::spawn(move || {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(15)));
                let mut reader = BufReader::new(&conn);
                let mut line = Vec::new();
                if reader.read_until(b'\n', &mut line).is_ok() && line.starts_with(b"SSH-") {
                    let _ = (&conn).write_all(SSH_SERVER_BANNER);
                    let _ = reader.read_to_end(&mut line);
                }
            });
        }
    });
    Ok(addr)
}
