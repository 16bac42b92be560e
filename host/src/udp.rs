//! UDP listeners: one session per client address.
//!
//! The first datagram of a new client starts a session in detection: its
//! datagrams are held (at most [`MAX_HELD`], and `detect.max_bytes` in all)
//! and the listener's detectors look at their concatenation after each one,
//! until a verdict or `detect.timeout`. Then the session is routed and
//! balanced as a TCP connection would be, gets its own upstream socket
//! connected to the chosen server, and the held datagrams go out first, in
//! order. Later datagrams of the client follow the session without
//! detection; replies come back from the listener's socket. A session ends
//! after `udp.session_timeout` without a datagram either way.
//! `udp.max_sessions` and `udp.max_sessions_per_ip` bound the state: a new
//! client past them is dropped (logged at most once a second) while
//! existing sessions go on.
//!
//! The upstream socket is connected, so the kernel drops replies from any
//! other address. Datagrams of any size up to 64 KiB are carried whole.

use crate::detect::{Outcome, Progress};
use crate::limits::{Admitted, Limits};
use crate::plugin::Detection;
use crate::plugin::detector::Peer;
use crate::proxy::choose_route;
use crate::snapshot::Snapshot;
use arc_swap::ArcSwap;
use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Datagrams held per client while detection runs.
pub const MAX_HELD: usize = 16;
/// Largest datagram carried.
const MAX_DATAGRAM: usize = 65_536;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; MAX_DATAGRAM]);
}

/// Count a dropped datagram: empty, from a client over the limits, or not
/// taken by the upstream socket.
fn dropped() {
    crate::metrics::UDP_DROPPED.inc();
}

/// A client whose datagrams are still being looked at.
struct Detecting {
    /// The session's place in `udp.max_sessions`, released when it ends.
    admitted: Admitted,
    /// The session in the metrics, until it ends.
    gauge: SessionGauge,
    snapshot: Arc<Snapshot>,
    started: Instant,
    deadline: Instant,
    /// The held datagrams, concatenated, and where each one ends.
    data: Vec<u8>,
    ends: Vec<usize>,
    progress: Progress,
    peer: Peer,
}

/// A routed session.
struct Live {
    upstream: Arc<UdpSocket>,
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    datagrams_up: AtomicU64,
    bytes_up: AtomicU64,
    datagrams_down: AtomicU64,
    bytes_down: AtomicU64,
    /// [`crate::clock::now_ms`] at the session's last datagram.
    last: AtomicU64,
}

enum Session {
    Detecting(Box<Detecting>),
    Live(Live),
}

/// Serve one bound UDP socket until `stop`; sessions run on `tracker`.
pub async fn serve(
    name: Arc<str>,
    socket: UdpSocket,
    state: Arc<ArcSwap<Snapshot>>,
    limits: Arc<Limits>,
    tracker: TaskTracker,
    stop: CancellationToken,
) {
    let socket = Arc::new(socket);
    let local = socket.local_addr().ok();
    let sessions: Arc<Mutex<HashMap<SocketAddr, Session>>> = Arc::default();
    let mut deadlines: BinaryHeap<Reverse<(Instant, SocketAddr)>> = BinaryHeap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let next = deadlines.peek().map(|Reverse((at, _))| *at);
        let (n, client) = tokio::select! {
            () = stop.cancelled() => return,
            () = sleep_until(next) => {
                expire(&name, &socket, &sessions, &mut deadlines, &tracker, &stop).await;
                continue;
            }
            received = socket.recv_from(&mut buf) => match received {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::debug!(listener = %name, error = %err, "udp receive failed");
                    continue;
                }
            },
        };
        if n == 0 {
            dropped();
            continue;
        }
        let datagram = &buf[..n];
        // One look at the session table: an established session takes the
        // fast path; a client in detection is taken out while its detectors
        // run (this loop is the only one that puts it back).
        let found = {
            let Ok(mut map) = sessions.lock() else { continue };
            match map.get(&client) {
                Some(Session::Live(live)) => {
                    send_up(&live.upstream, &live.counters, datagram);
                    continue;
                }
                Some(Session::Detecting(_)) => map.remove(&client),
                None => None,
            }
        };
        let mut detecting = match found {
            Some(Session::Detecting(d)) => d,
            Some(Session::Live(_)) => continue,
            None => {
                let snapshot = state.load_full();
                let udp = &snapshot.config.udp;
                let admitted = match limits.admit(client.ip(), udp.max_sessions, udp.max_sessions_per_ip) {
                    Ok(admitted) => admitted,
                    Err(limit) => {
                        dropped();
                        crate::metrics::UDP_REFUSED.inc();
                        limits.warn_refused(limit, client);
                        continue;
                    }
                };
                let Some(plan) = snapshot.listeners.get(&*name) else { continue };
                let now = Instant::now();
                let deadline = now + plan.timeout;
                deadlines.push(Reverse((deadline, client)));
                let peer = Peer::of(client, local, name.clone(), true).wanting(snapshot.routes.wanted().clone());
                let progress = Progress::new(plan.detectors.len());
                Box::new(Detecting {
                    admitted,
                    gauge: SessionGauge::open(),
                    snapshot,
                    started: now,
                    deadline,
                    data: Vec::new(),
                    ends: Vec::new(),
                    progress,
                    peer,
                })
            }
        };
        let Some(plan) = detecting.snapshot.listeners.get(&*name) else { continue };
        // Held bytes stay under `detect.max_bytes` plus the datagram at hand.
        detecting.data.extend_from_slice(datagram);
        detecting.ends.push(detecting.data.len());
        let outcome = if plan.detectors.is_empty() {
            Some(Outcome::Unknown)
        } else {
            let detectors = plan.detectors.clone();
            match detecting.progress.step(&detectors, &detecting.data, &detecting.peer).await {
                Some(outcome) => Some(outcome),
                None if detecting.ends.len() >= MAX_HELD || detecting.data.len() >= plan.max_bytes => {
                    Some(Outcome::Full)
                }
                None => None,
            }
        };
        match outcome {
            None => {
                if let Ok(mut map) = sessions.lock() {
                    map.insert(client, Session::Detecting(detecting));
                }
            }
            Some(outcome) => {
                establish(&name, &socket, &sessions, client, *detecting, outcome, &tracker, &stop).await;
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// End detection for every client whose `detect.timeout` has passed.
async fn expire(
    name: &Arc<str>,
    socket: &Arc<UdpSocket>,
    sessions: &Arc<Mutex<HashMap<SocketAddr, Session>>>,
    deadlines: &mut BinaryHeap<Reverse<(Instant, SocketAddr)>>,
    tracker: &TaskTracker,
    stop: &CancellationToken,
) {
    let now = Instant::now();
    while let Some(Reverse((at, client))) = deadlines.peek().copied() {
        if at > now {
            break;
        }
        deadlines.pop();
        let detecting = match sessions.lock() {
            Ok(mut map) => match map.get(&client) {
                Some(Session::Detecting(d)) if d.deadline <= now => match map.remove(&client) {
                    Some(Session::Detecting(d)) => Some(d),
                    _ => None,
                },
                _ => None,
            },
            Err(_) => None,
        };
        if let Some(detecting) = detecting {
            establish(name, socket, sessions, client, *detecting, Outcome::TimedOut, tracker, stop).await;
        }
    }
}

/// Route a client whose detection is over, and start its session (or drop it).
#[allow(clippy::too_many_arguments)]
async fn establish(
    name: &Arc<str>,
    socket: &Arc<UdpSocket>,
    sessions: &Arc<Mutex<HashMap<SocketAddr, Session>>>,
    client: SocketAddr,
    detecting: Detecting,
    outcome: Outcome,
    tracker: &TaskTracker,
    stop: &CancellationToken,
) {
    let snapshot = detecting.snapshot.clone();
    let Some(plan) = snapshot.listeners.get(&**name) else { return };
    let (route, detection) = choose_route(&snapshot, plan, outcome, detecting.data.is_empty(), client);
    let log = SessionLog { listener: name.clone(), client, detection, started: detecting.started };
    let route = match route {
        Ok(route) => route,
        Err(why) => {
            log.write(None, None, &Counters::default(), &why);
            return;
        }
    };
    let route_name = route.name.clone();
    let server = snapshot.pools.get(&route.pool).and_then(|pool| {
        let order = pool.order(client.ip());
        order.first().and_then(|&i| pool.servers.get(i)).map(|s| s.addr)
    });
    let Some(server) = server else {
        log.write(Some(&route_name), None, &Counters::default(), "route's pool has no server");
        return;
    };
    let upstream = match connect_upstream(server).await {
        Ok(upstream) => Arc::new(upstream),
        Err(err) => {
            log.write(Some(&route_name), Some(server), &Counters::default(), &format!("upstream socket: {err}"));
            return;
        }
    };
    let counters = Arc::new(Counters::default());
    // The held datagrams first, in order.
    let mut start = 0;
    for &end in &detecting.ends {
        if let Some(datagram) = detecting.data.get(start..end) {
            send_up(&upstream, &counters, datagram);
        }
        start = end;
    }
    if let Ok(mut map) = sessions.lock() {
        map.insert(client, Session::Live(Live { upstream: upstream.clone(), counters: counters.clone() }));
    }
    let timeout = snapshot.config.udp.session_timeout;
    let (socket, sessions, stop) = (socket.clone(), sessions.clone(), stop.clone());
    let (admitted, gauge) = (detecting.admitted, detecting.gauge);
    tracker.spawn(async move {
        let why = relay_down(&upstream, &socket, client, &counters, timeout, &stop).await;
        if let Ok(mut map) = sessions.lock() {
            map.remove(&client);
        }
        drop((admitted, gauge));
        log.write(Some(&route_name), Some(server), &counters, why);
    });
}

async fn connect_upstream(server: SocketAddr) -> std::io::Result<UdpSocket> {
    let local: SocketAddr = if server.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(server).await?;
    Ok(socket)
}

/// Send without waiting: a UDP socket whose buffer is full drops the
/// datagram, as the network would. (The plain system call, not tokio's
/// `try_send`, whose cached readiness says "not yet" on a fresh socket.)
fn send_up(upstream: &UdpSocket, counters: &Counters, datagram: &[u8]) {
    match socket2::SockRef::from(upstream).send(datagram) {
        Ok(_) => {
            crate::metrics::UDP_DATAGRAMS_UP.inc();
            counters.datagrams_up.fetch_add(1, Ordering::Relaxed);
            counters.bytes_up.fetch_add(datagram.len() as u64, Ordering::Relaxed);
        }
        Err(_) => dropped(),
    }
    touch(counters);
}

fn touch(counters: &Counters) {
    // One process-wide clock, so both directions agree.
    counters.last.store(crate::clock::now_ms(), Ordering::Relaxed);
}

/// Carry the server's replies back to the client until the session idles out.
async fn relay_down(
    upstream: &UdpSocket,
    socket: &UdpSocket,
    client: SocketAddr,
    counters: &Counters,
    timeout: Duration,
    stop: &CancellationToken,
) -> &'static str {
    loop {
        let Some(wait) = crate::clock::left(counters.last.load(Ordering::Relaxed), timeout) else {
            return "idle timeout";
        };
        tokio::select! {
            () = stop.cancelled() => return "shutdown",
            () = tokio::time::sleep(wait) => continue,
            ready = upstream.readable() => {
                if let Err(err) = ready {
                    tracing::debug!(error = %err, "udp upstream failed");
                    return "upstream error";
                }
            }
        }
        let sent = SCRATCH.with(|cell| {
            let mut buf = cell.borrow_mut();
            match upstream.try_recv(&mut buf) {
                Ok(n) => Some(
                    socket2::SockRef::from(socket).send_to(buf.get(..n).unwrap_or_default(), &client.into()).map(|_| n),
                ),
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => None,
                // ICMP port unreachable from the server shows up here.
                Err(err) => Some(Err(err)),
            }
        });
        match sent {
            None => {}
            Some(Ok(n)) => {
                crate::metrics::UDP_DATAGRAMS_DOWN.inc();
                counters.datagrams_down.fetch_add(1, Ordering::Relaxed);
                counters.bytes_down.fetch_add(n as u64, Ordering::Relaxed);
                touch(counters);
            }
            Some(Err(err)) if err.kind() == std::io::ErrorKind::ConnectionRefused => {
                // The server is not listening (yet): keep the session, the
                // client may retry.
            }
            Some(Err(err)) if err.kind() == std::io::ErrorKind::WouldBlock => {}
            Some(Err(err)) => tracing::debug!(error = %err, "udp reply not delivered"),
        }
    }
}

/// The access-log line of a UDP session.
struct SessionLog {
    listener: Arc<str>,
    client: SocketAddr,
    detection: Option<Detection>,
    started: Instant,
}

impl SessionLog {
    fn write(&self, route: Option<&str>, backend: Option<SocketAddr>, c: &Counters, end: &str) {
        let d = self.detection.as_ref();
        tracing::info!(
            target: "refractium::access",
            client = %self.client,
            listener = &*self.listener,
            transport = "udp",
            protocol = d.map(|d| d.protocol.as_str()).unwrap_or("-"),
            sni = d.and_then(|d| d.sni.as_deref()).unwrap_or("-"),
            alpn = %d.map(|d| d.alpn.join(",")).unwrap_or_default(),
            route = route.unwrap_or("-"),
            backend = %backend.map(|b| b.to_string()).unwrap_or_else(|| "-".into()),
            datagrams_up = c.datagrams_up.load(Ordering::Relaxed),
            bytes_up = c.bytes_up.load(Ordering::Relaxed),
            datagrams_down = c.datagrams_down.load(Ordering::Relaxed),
            bytes_down = c.bytes_down.load(Ordering::Relaxed),
            duration_ms = crate::clock::ms(self.started.elapsed()),
            close = end,
        );
    }
}

/// Counts an open UDP session from admission to its end (gauge + total).
struct SessionGauge;

impl SessionGauge {
    fn open() -> Self {
        crate::metrics::UDP_SESSIONS.inc();
        crate::metrics::UDP_SESSIONS_OPEN.inc();
        SessionGauge
    }
}

impl Drop for SessionGauge {
    fn drop(&mut self) {
        crate::metrics::UDP_SESSIONS_OPEN.dec();
    }
}
