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
//!
//! The built-in detectors are asked on the socket's task; a step that would
//! call a plugin file runs on a blocking thread, so a slow plugin call
//! holds up only the client it looks at. The task that serves a socket is
//! started again if it panics ([`run`]).
//!
//! A session on a route with hooks has a task of its own that runs the
//! hooks (each in a session of its own, as on TCP): every datagram is one
//! chunk, through the hooks in order, and what the last one forwards goes
//! on as one datagram; forwarding nothing drops it. The socket's task hands
//! it the client's datagrams through a bounded queue (a full queue drops,
//! as a full socket buffer would), so a slow hook holds up only its own
//! session. `respond` sends its bytes back to the side the datagram came
//! from and ends the session, as `close` or a failed call does; `on-end`
//! is not called, datagrams having no end.

use crate::detect::{Failures, Outcome, Progress};
use crate::forward::hooked::{HookChain, Stop};
use crate::limits::{Admitted, Limits};
use crate::metrics::UdpMetrics;
use crate::plugin::Detection;
use crate::plugin::detector::Peer;
use crate::plugin::hook::Direction;
use crate::proxy::choose_route;
use crate::snapshot::Snapshot;
use arc_swap::ArcSwap;
use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Datagrams held per client while detection runs.
pub const MAX_HELD: usize = 16;
/// Largest datagram carried.
const MAX_DATAGRAM: usize = 65_536;
/// Datagrams queued for a hooked session's task.
const HOOK_QUEUE: usize = 64;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; MAX_DATAGRAM]);
}

/// Count a dropped datagram: empty, from a client over the limits, or not
/// taken by the upstream socket.
fn dropped(metrics: &UdpMetrics) {
    metrics.dropped.inc();
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
    /// `None` while a detection step runs beside the socket.
    progress: Option<Progress>,
    /// `detect.timeout` passed while a step ran.
    timed_out: bool,
    peer: Peer,
    /// The client: the datagrams' source, or the one a load balancer's
    /// PROXY header names.
    origin: SocketAddr,
    /// Whether its datagrams start with a PROXY header to strip.
    behind_proxy: bool,
}

impl Detecting {
    /// Whether the held datagrams are at their bound (count, or the
    /// listener's `detect.max_bytes`): detection ends with what is there.
    fn holds_enough(&self, listener: &str) -> bool {
        let full = self.snapshot.listeners.get(listener).is_none_or(|p| self.data.len() >= p.max_bytes);
        self.ends.len() >= MAX_HELD || full
    }
}

/// A routed session.
struct Live {
    upstream: Arc<UdpSocket>,
    counters: Arc<Counters>,
    /// The queue to its task, when its route has hooks.
    hooked: Option<tokio::sync::mpsc::Sender<Vec<u8>>>,
    /// Whether its datagrams start with a PROXY header to strip.
    behind_proxy: bool,
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

type Sessions = Arc<Mutex<HashMap<SocketAddr, Session>>>;

/// A detection step that ran beside the socket, back with its result.
struct Stepped {
    client: SocketAddr,
    progress: Progress,
    outcome: Option<Outcome>,
    /// How many held bytes it looked at.
    seen: usize,
}

/// One bound UDP socket of a listener and what serving it needs. Its
/// sessions outlive the task that serves it: a task that panics is started
/// again ([`run`]) and finds them.
#[derive(Clone)]
pub struct UdpListener {
    name: Arc<str>,
    socket: Arc<UdpSocket>,
    state: Arc<ArcSwap<Snapshot>>,
    limits: Arc<Limits>,
    tracker: TaskTracker,
    stop: CancellationToken,
    sessions: Sessions,
    metrics: Arc<UdpMetrics>,
}

impl UdpListener {
    pub fn new(
        name: Arc<str>,
        socket: UdpSocket,
        state: Arc<ArcSwap<Snapshot>>,
        limits: Arc<Limits>,
        tracker: TaskTracker,
        stop: CancellationToken,
    ) -> Self {
        let socket = Arc::new(socket);
        let metrics = Arc::new(UdpMetrics::new(&name));
        UdpListener { name, socket, state, limits, tracker, stop, sessions: Sessions::default(), metrics }
    }
}

/// Serve `listener` until its stop token is cancelled. A panic of the task
/// that serves it is logged and the task started again
/// ([`crate::supervise::restart_on_panic`]); routed sessions carry on
/// meanwhile.
pub async fn run(listener: UdpListener) {
    let name = listener.name.clone();
    let stop = listener.stop.clone();
    crate::supervise::restart_on_panic(&format!("UDP listener `{name}`"), &stop, || serve(listener.clone())).await;
}

/// Serve the socket until `stop`; sessions run on `tracker`.
async fn serve(l: UdpListener) {
    let mut deadlines: BinaryHeap<Reverse<(Instant, SocketAddr)>> = BinaryHeap::new();
    if let Ok(mut map) = l.sessions.lock() {
        // After a restart: clients in detection keep their deadlines; a step
        // that ran beside the old task is lost, so detection starts over.
        for (client, session) in map.iter_mut() {
            if let Session::Detecting(d) = session {
                deadlines.push(Reverse((d.deadline, *client)));
                if d.progress.is_none() {
                    let plan = d.snapshot.listeners.get(&*l.name);
                    let (detectors, max) = plan.map_or((0, 0), |p| (p.detectors.len(), p.max_bytes));
                    d.progress = Some(Progress::new(detectors).limit(max));
                }
            }
        }
    }
    let local = l.socket.local_addr().ok();
    let (done, mut stepped) = tokio::sync::mpsc::unbounded_channel::<Stepped>();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let next = deadlines.peek().map(|Reverse((at, _))| *at);
        let (n, client) = tokio::select! {
            () = l.stop.cancelled() => return,
            () = sleep_until(next) => {
                l.expire(&mut deadlines).await;
                continue;
            }
            Some(step) = stepped.recv() => {
                l.stepped(step, &done).await;
                continue;
            }
            received = l.socket.recv_from(&mut buf) => match received {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::debug!(listener = %l.name, error = %err, "udp receive failed");
                    continue;
                }
            },
        };
        if n == 0 {
            dropped(&l.metrics);
            continue;
        }
        let whole = &buf[..n];
        // One look at the session table: an established session takes the
        // fast path; a client in detection is taken out while its detectors
        // run (this loop is the only one that puts it back).
        let found = {
            let Ok(mut map) = l.sessions.lock() else { continue };
            match map.get_mut(&client) {
                Some(Session::Live(live)) => {
                    let Some((datagram, _)) = unwrap_proxy(whole, live.behind_proxy, &l, client) else { continue };
                    match &live.hooked {
                        None => send_up(&live.upstream, &live.counters, &l.metrics, datagram),
                        Some(queue) => {
                            if queue.try_send(datagram.to_vec()).is_err() {
                                dropped(&l.metrics);
                            }
                        }
                    }
                    continue;
                }
                Some(Session::Detecting(d)) if d.progress.is_none() => {
                    // A step runs beside the socket: hold the datagram for
                    // the next one, within the same bounds.
                    let Some((datagram, _)) = unwrap_proxy(whole, d.behind_proxy, &l, client) else { continue };
                    if d.holds_enough(&l.name) {
                        dropped(&l.metrics);
                    } else {
                        d.data.extend_from_slice(datagram);
                        d.ends.push(d.data.len());
                    }
                    continue;
                }
                Some(Session::Detecting(_)) => map.remove(&client),
                None => None,
            }
        };
        let (mut detecting, datagram) = match found {
            Some(Session::Detecting(d)) => {
                let Some((datagram, _)) = unwrap_proxy(whole, d.behind_proxy, &l, client) else { continue };
                (d, datagram)
            }
            Some(Session::Live(_)) => continue,
            None => {
                let snapshot = l.state.load_full();
                let Some(plan) = snapshot.listeners.get(&*l.name) else { continue };
                let behind_proxy = plan.accept_proxy.as_ref().is_some_and(|a| a.trusts(client.ip()));
                let Some((datagram, carried)) = unwrap_proxy(whole, behind_proxy, &l, client) else { continue };
                let (origin, local) = match carried {
                    Some(carried) => (carried.client, Some(carried.local)),
                    None => (client, local),
                };
                let udp = &snapshot.config.udp;
                let key = crate::limits::host_key(origin.ip(), snapshot.config.limits.ipv6_prefix);
                let admitted = match l.limits.admit(key, udp.max_sessions, udp.max_sessions_per_ip) {
                    Ok(admitted) => admitted,
                    Err(limit) => {
                        dropped(&l.metrics);
                        l.metrics.refused.inc();
                        l.limits.warn_refused(limit, origin);
                        continue;
                    }
                };
                let now = Instant::now();
                let deadline = now + plan.timeout;
                deadlines.push(Reverse((deadline, client)));
                let peer = Peer::of(origin, local, l.name.clone(), true).wanting(snapshot.routes.wanted().clone());
                let progress = Progress::new(plan.detectors.len()).limit(plan.max_bytes);
                let detecting = Box::new(Detecting {
                    admitted,
                    gauge: SessionGauge::open(&l.metrics),
                    snapshot,
                    started: now,
                    deadline,
                    data: Vec::new(),
                    ends: Vec::new(),
                    progress: Some(progress),
                    timed_out: false,
                    peer,
                    origin,
                    behind_proxy,
                });
                (detecting, datagram)
            }
        };
        // Held bytes stay under `detect.max_bytes` plus the datagram at hand.
        detecting.data.extend_from_slice(datagram);
        detecting.ends.push(detecting.data.len());
        l.advance(client, detecting, &done).await;
    }
}

/// A datagram from a load balancer without its PROXY header, and the
/// addresses the header carries; `None` (the datagram dropped, and a
/// warning at most once a second) when it has no valid header.
fn unwrap_proxy<'d>(
    datagram: &'d [u8],
    behind_proxy: bool,
    l: &UdpListener,
    from: SocketAddr,
) -> Option<(&'d [u8], Option<crate::accept_proxy::Carried>)> {
    if !behind_proxy {
        return Some((datagram, None));
    }
    use crate::accept_proxy::{Parsed, parse};
    let why = match parse(datagram, true) {
        Parsed::Header { len, carried } => match datagram.get(len..) {
            Some(rest) if !rest.is_empty() => return Some((rest, carried)),
            _ => "a PROXY header and nothing after it".to_string(),
        },
        Parsed::Incomplete => "a datagram shorter than its PROXY header".to_string(),
        Parsed::Invalid(why) => why,
    };
    dropped(&l.metrics);
    static LAST: AtomicU64 = AtomicU64::new(0);
    if crate::clock::first_this_second(&LAST) {
        tracing::warn!(listener = &*l.name, balancer = %from, "datagram dropped: {why} (listeners[].accept_proxy.from trusts this source; logged at most once a second)");
    }
    None
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl UdpListener {
    /// Ask the detectors about what `d` holds. Built-ins are asked in
    /// place; a step that would call a plugin file (which may use its whole
    /// budget) runs on a blocking thread, so that the socket's other
    /// clients are not kept waiting, and comes back through `done`.
    async fn advance(&self, client: SocketAddr, mut d: Box<Detecting>, done: &UnboundedSender<Stepped>) {
        let Some(mut progress) = d.progress.take() else { return };
        let Some(plan) = d.snapshot.listeners.get(&*self.name) else { return };
        if plan.detectors.is_empty() {
            d.progress = Some(progress);
            return self.establish(client, *d, Outcome::Unknown).await;
        }
        if progress.would_call_plugin_file(&plan.detectors, d.data.len()) {
            let (detectors, data, peer, done) = (plan.detectors.clone(), d.data.clone(), d.peer.clone(), done.clone());
            tokio::task::spawn_blocking(move || {
                let outcome = progress.step(&detectors, &data, &peer);
                let _ = done.send(Stepped { client, progress, outcome, seen: data.len() });
            });
            if let Ok(mut map) = self.sessions.lock() {
                map.insert(client, Session::Detecting(d));
            }
            return;
        }
        let outcome = progress.step(&plan.detectors, &d.data, &d.peer);
        self.settle(client, d, progress, outcome).await;
    }

    /// A step that ran beside the socket is back.
    async fn stepped(&self, step: Stepped, done: &UnboundedSender<Stepped>) {
        let Stepped { client, progress, outcome, seen } = step;
        let mut d = match self.sessions.lock() {
            Ok(mut map) => match map.get(&client) {
                Some(Session::Detecting(d)) if d.progress.is_none() => match map.remove(&client) {
                    Some(Session::Detecting(d)) => d,
                    _ => return,
                },
                _ => return,
            },
            Err(_) => return,
        };
        if outcome.is_none() && d.data.len() > seen && !d.timed_out {
            // Datagrams arrived meanwhile: look at them too.
            d.progress = Some(progress);
            return Box::pin(self.advance(client, d, done)).await;
        }
        self.settle(client, d, progress, outcome).await;
    }

    /// After a step: route the client if detection is over (a verdict, the
    /// held datagrams at their bound, or the timeout passed meanwhile), else
    /// wait for its next datagram.
    async fn settle(&self, client: SocketAddr, mut d: Box<Detecting>, progress: Progress, outcome: Option<Outcome>) {
        let outcome = outcome
            .or_else(|| d.holds_enough(&self.name).then_some(Outcome::Full))
            .or_else(|| d.timed_out.then_some(Outcome::TimedOut));
        d.progress = Some(progress);
        match outcome {
            None => {
                if let Ok(mut map) = self.sessions.lock() {
                    map.insert(client, Session::Detecting(d));
                }
            }
            Some(outcome) => self.establish(client, *d, outcome).await,
        }
    }

    /// End detection for every client whose `detect.timeout` has passed (a
    /// client whose step is still running is routed when it is back).
    async fn expire(&self, deadlines: &mut BinaryHeap<Reverse<(Instant, SocketAddr)>>) {
        let now = Instant::now();
        while let Some(Reverse((at, client))) = deadlines.peek().copied() {
            if at > now {
                break;
            }
            deadlines.pop();
            let detecting = match self.sessions.lock() {
                Ok(mut map) => match map.get_mut(&client) {
                    Some(Session::Detecting(d)) if d.deadline <= now && d.progress.is_none() => {
                        d.timed_out = true;
                        None
                    }
                    Some(Session::Detecting(d)) if d.deadline <= now => match map.remove(&client) {
                        Some(Session::Detecting(d)) => Some(d),
                        _ => None,
                    },
                    _ => None,
                },
                Err(_) => None,
            };
            if let Some(detecting) = detecting {
                self.establish(client, *detecting, Outcome::TimedOut).await;
            }
        }
    }

    /// Route a client whose detection is over, and start its session (or drop it).
    async fn establish(&self, client: SocketAddr, detecting: Detecting, outcome: Outcome) {
        let snapshot = detecting.snapshot.clone();
        let Some(plan) = snapshot.listeners.get(&*self.name) else { return };
        let origin = detecting.origin;
        let (route, detection) = choose_route(&snapshot, plan, outcome, detecting.data.is_empty(), origin);
        let failures = detecting.progress.map(|p| p.failures).unwrap_or_default();
        let log =
            SessionLog { listener: self.name.clone(), client: origin, detection, failures, started: detecting.started };
        let route = match route {
            Ok(route) => route,
            Err(why) => {
                log.write(None, None, &Counters::default(), &why);
                return;
            }
        };
        let route_name = route.name.clone();
        let server = snapshot.pools.get(&route.pool).and_then(|pool| {
            let members = pool.members();
            let order = pool.order(&members, origin.ip());
            order.first().and_then(|&i| members.servers.get(i)).map(|s| s.addr)
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
        let held: Vec<&[u8]> = {
            let mut start = 0;
            detecting
                .ends
                .iter()
                .filter_map(|&end| {
                    let datagram = detecting.data.get(start..end);
                    start = end;
                    datagram
                })
                .collect()
        };
        let hooks = route.hooked.then(|| snapshot.route_hooks.get(&route.name).cloned()).flatten();
        let timeout = snapshot.config.udp.session_timeout;
        let (socket, sessions, stop) = (self.socket.clone(), self.sessions.clone(), self.stop.clone());
        let metrics = self.metrics.clone();
        let (admitted, gauge) = (detecting.admitted, detecting.gauge);
        let Some(hooks) = hooks else {
            // The held datagrams first, in order.
            for datagram in held {
                send_up(&upstream, &counters, &self.metrics, datagram);
            }
            if let Ok(mut map) = self.sessions.lock() {
                let behind_proxy = detecting.behind_proxy;
                let live = Live { upstream: upstream.clone(), counters: counters.clone(), hooked: None, behind_proxy };
                map.insert(client, Session::Live(live));
            }
            self.tracker.spawn(async move {
                let why = relay_down(&upstream, &socket, client, &counters, &metrics, timeout, &stop).await;
                if let Ok(mut map) = sessions.lock() {
                    map.remove(&client);
                }
                drop((admitted, gauge));
                log.write(Some(&route_name), Some(server), &counters, why);
            });
            return;
        };
        let (queue, mut queued) = tokio::sync::mpsc::channel(HOOK_QUEUE);
        if let Ok(mut map) = self.sessions.lock() {
            let behind_proxy = detecting.behind_proxy;
            let live =
                Live { upstream: upstream.clone(), counters: counters.clone(), hooked: Some(queue), behind_proxy };
            map.insert(client, Session::Live(live));
        }
        let held: Vec<Vec<u8>> = held.into_iter().map(<[u8]>::to_vec).collect();
        let peer = detecting.peer;
        self.tracker.spawn(async move {
            let ends = Ends { upstream: &upstream, socket: &socket, client, counters: &counters, metrics: &metrics };
            let why = match HookChain::open(&hooks, &peer, log.detection.as_ref(), &route_name) {
                Ok(mut chain) => {
                    let mut why = None;
                    for datagram in held {
                        if let Err(stop) = ends.pass(&mut chain, Direction::ClientToServer, &datagram) {
                            why = Some(stop.text());
                            break;
                        }
                    }
                    match why {
                        Some(why) => why,
                        None => relay_hooked(&ends, &mut chain, &mut queued, timeout, &stop).await,
                    }
                }
                Err(why) => why,
            };
            if let Ok(mut map) = sessions.lock() {
                map.remove(&client);
            }
            drop((admitted, gauge, hooks));
            log.write(Some(&route_name), Some(server), &counters, &why);
        });
    }
}

/// The two ends of a hooked session.
struct Ends<'a> {
    upstream: &'a UdpSocket,
    socket: &'a UdpSocket,
    client: SocketAddr,
    counters: &'a Counters,
    metrics: &'a UdpMetrics,
}

impl Ends<'_> {
    /// Pass a datagram through the hooks and send what comes out on (a
    /// hook's answer back to where it came from).
    fn pass(&self, chain: &mut HookChain, direction: Direction, datagram: &[u8]) -> Result<(), Stop> {
        touch(self.counters);
        let out = chain.data(direction, datagram);
        let (out, up) = match out {
            Ok(out) => (out, direction == Direction::ClientToServer),
            Err(Stop::Respond { hook, data, reason }) => {
                let back = Stop::Respond { hook, data: Vec::new(), reason };
                let up = direction == Direction::ServerToClient;
                self.send(&data, up);
                return Err(back);
            }
            Err(stop) => return Err(stop),
        };
        self.send(&out, up);
        Ok(())
    }

    fn send(&self, datagram: &[u8], up: bool) {
        if datagram.is_empty() {
            return;
        }
        if up {
            send_up(self.upstream, self.counters, self.metrics, datagram);
        } else if send_down(self.socket, self.client, self.counters, self.metrics, datagram).is_err() {
            dropped(self.metrics);
        }
    }
}

/// Carry a hooked session both ways until it idles out or a hook ends it.
async fn relay_hooked(
    ends: &Ends<'_>,
    chain: &mut HookChain,
    queued: &mut tokio::sync::mpsc::Receiver<Vec<u8>>,
    timeout: Duration,
    stop: &CancellationToken,
) -> String {
    loop {
        let Some(wait) = crate::clock::left(ends.counters.last.load(Ordering::Relaxed), timeout) else {
            return "idle timeout".into();
        };
        let passed = tokio::select! {
            () = stop.cancelled() => return "shutdown".into(),
            () = tokio::time::sleep(wait) => continue,
            datagram = queued.recv() => match datagram {
                Some(datagram) => ends.pass(chain, Direction::ClientToServer, &datagram),
                None => return "shutdown".into(),
            },
            ready = ends.upstream.readable() => {
                if let Err(err) = ready {
                    tracing::debug!(error = %err, "udp upstream failed");
                    return "upstream error".into();
                }
                SCRATCH.with(|cell| {
                    let mut buf = cell.borrow_mut();
                    match ends.upstream.try_recv(&mut buf) {
                        Ok(n) => ends.pass(chain, Direction::ServerToClient, buf.get(..n).unwrap_or_default()),
                        Err(err) => {
                            if !matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::ConnectionRefused) {
                                tracing::debug!(error = %err, "udp reply not received");
                            }
                            Ok(())
                        }
                    }
                })
            }
        };
        if let Err(stop) = passed {
            return stop.text();
        }
    }
}

/// Send a datagram to the client from the listener's socket, and count it.
fn send_down(
    socket: &UdpSocket,
    client: SocketAddr,
    counters: &Counters,
    metrics: &UdpMetrics,
    datagram: &[u8],
) -> std::io::Result<()> {
    socket2::SockRef::from(socket).send_to(datagram, &client.into())?;
    metrics.down.inc();
    counters.datagrams_down.fetch_add(1, Ordering::Relaxed);
    counters.bytes_down.fetch_add(datagram.len() as u64, Ordering::Relaxed);
    touch(counters);
    Ok(())
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
fn send_up(upstream: &UdpSocket, counters: &Counters, metrics: &UdpMetrics, datagram: &[u8]) {
    match socket2::SockRef::from(upstream).send(datagram) {
        Ok(_) => {
            metrics.up.inc();
            counters.datagrams_up.fetch_add(1, Ordering::Relaxed);
            counters.bytes_up.fetch_add(datagram.len() as u64, Ordering::Relaxed);
        }
        Err(_) => dropped(metrics),
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
    metrics: &UdpMetrics,
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
                Ok(n) => Some(send_down(socket, client, counters, metrics, buf.get(..n).unwrap_or_default())),
                Err(err) if err.kind() == ErrorKind::WouldBlock => None,
                // ICMP port unreachable from the server shows up here.
                Err(err) => Some(Err(err)),
            }
        });
        match sent {
            None | Some(Ok(())) => {}
            Some(Err(err)) if err.kind() == ErrorKind::ConnectionRefused => {
                // The server is not listening (yet): keep the session, the
                // client may retry.
            }
            Some(Err(err)) if err.kind() == ErrorKind::WouldBlock => {}
            Some(Err(err)) => tracing::debug!(error = %err, "udp reply not delivered"),
        }
    }
}

/// The access-log line of a UDP session.
struct SessionLog {
    listener: Arc<str>,
    client: SocketAddr,
    detection: Option<Detection>,
    /// Detector calls that failed while it was looked at.
    failures: Failures,
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
            plugin_errors = %self.failures.summary(),
            close = end,
        );
    }
}

/// Counts an open UDP session from admission to its end (gauge + total).
struct SessionGauge {
    _open: crate::metrics::Held,
}

impl SessionGauge {
    fn open(metrics: &UdpMetrics) -> Self {
        metrics.sessions.inc();
        SessionGauge { _open: crate::metrics::Held::new(&metrics.open) }
    }
}
