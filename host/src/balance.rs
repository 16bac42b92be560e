//! Backend pools: pick a server by the pool's policy and connect to it,
//! trying the next server on failure (at most `retries` more times).
//!
//! A server whose connect fails is marked down (passive check) and tried last
//! until a connect to it succeeds again; [`crate::health`] adds active checks
//! for pools that ask for them.
//!
//! A pool's servers ([`Members`]) are replaced whole when names it lists
//! resolve to other addresses ([`crate::resolve`]); a server that stays keeps
//! its state (the same [`Server`]), one that goes gets no new connections
//! while the open ones (which hold it) finish. Weights give a server its
//! share of new connections: round robin walks a sequence in which each
//! server appears as often as its weight, spread out; random and the client
//! hash pick from it; least-connections compares open connections per unit
//! of weight.

use crate::config::{Backend, Balance, ServerSpec, SourceAddr};
use crate::evloop::TcpStream;
use arc_swap::ArcSwap;
use socket2::{Domain, Protocol, Socket, Type};
use std::io::{self, ErrorKind, IoSlice};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

/// One backend server and what the balancer knows about it.
#[derive(Debug)]
pub struct Server {
    pub addr: SocketAddr,
    /// Its share of new connections (1 to 256). A new answer from DNS may
    /// change it ([`crate::resolve`]); the pool's [`Members`] are then
    /// rebuilt for the new shares, and the server keeps its state.
    weight: AtomicU32,
    /// Connections currently open to it.
    active: AtomicUsize,
    /// False after a failed connect, true again after a successful one.
    up: AtomicBool,
    /// Active health checks in a row that passed, and that failed.
    pub(crate) checks_passed: AtomicU32,
    pub(crate) checks_failed: AtomicU32,
    /// Connects to it that failed or timed out.
    connect_failures: std::sync::atomic::AtomicU64,
}

impl Server {
    pub fn new(addr: SocketAddr, weight: u32) -> Self {
        Server {
            addr,
            weight: AtomicU32::new(weight.max(1)),
            active: AtomicUsize::new(0),
            up: AtomicBool::new(true),
            checks_passed: AtomicU32::new(0),
            checks_failed: AtomicU32::new(0),
            connect_failures: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Its share of new connections.
    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// Change its share; it takes effect in [`Members`] made after.
    pub fn set_weight(&self, weight: u32) {
        self.weight.store(weight.max(1), Ordering::Relaxed);
    }

    /// Whether checks consider the server up.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Mark the server up or down.
    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
    }

    /// Connections open to it now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Connects to it that failed or timed out so far.
    pub fn connect_failures(&self) -> u64 {
        self.connect_failures.load(Ordering::Relaxed)
    }
}

/// Servers in the order to try them, by index: inline for pools of up to
/// eight servers, so picking one allocates nothing.
pub type Order = smallvec::SmallVec<[usize; 8]>;

/// A pool's servers at one moment.
#[derive(Debug, Default)]
pub struct Members {
    pub servers: Vec<Arc<Server>>,
    /// Server indices, each as often as its weight, spread out (smooth
    /// weighted round robin); `0..n` when the weights are equal.
    ring: Vec<u32>,
}

impl Members {
    pub fn new(servers: Vec<Arc<Server>>) -> Self {
        let ring = weighted_ring(&servers.iter().map(|s| s.weight()).collect::<Vec<_>>());
        Members { servers, ring }
    }

    /// The server at `addr`, if it is a member.
    pub fn find(&self, addr: SocketAddr) -> Option<&Arc<Server>> {
        self.servers.iter().find(|s| s.addr == addr)
    }
}

/// The interleaved sequence of server indices for these weights: over one
/// turn each index appears as often as its weight, and no server gets two
/// in a row when another could take one (nginx's smooth weighted round
/// robin).
fn weighted_ring(weights: &[u32]) -> Vec<u32> {
    let n = u32::try_from(weights.len()).unwrap_or(u32::MAX);
    if weights.windows(2).all(|w| w[0] == w[1]) {
        return (0..n).collect();
    }
    let gcd = weights.iter().fold(0, |g, &w| gcd(g, w)).max(1);
    let weights: Vec<i64> = weights.iter().map(|&w| i64::from(w / gcd)).collect();
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut ring = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            current[i] += w;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        ring.push(u32::try_from(best).unwrap_or(0));
    }
    ring
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// A backend pool of one snapshot.
#[derive(Debug)]
pub struct Pool {
    pub name: String,
    /// What the config lists: addresses, and names to resolve.
    pub specs: Vec<ServerSpec>,
    members: ArcSwap<Members>,
    policy: Balance,
    pub connect_timeout: Duration,
    retries: u32,
    next: AtomicUsize,
    pub proxy_protocol: crate::config::ProxyProtocol,
    /// The address connections leave from.
    pub source: SourceAddr,
    /// The last answer for each entry found by DNS (by entry), kept when a
    /// later lookup fails.
    answers: std::sync::Mutex<Answers>,
    /// When the names are due to be resolved again.
    next_refresh: std::sync::Mutex<Option<std::time::Instant>>,
    /// How long connects take, in the metrics.
    pub connect_seconds: prometheus::Histogram,
}

/// Per `servers` entry: the addresses and weights its name last resolved
/// to; `None` for a fixed address or a name not resolved yet.
pub type Answers = Vec<Option<Vec<(SocketAddr, u32)>>>;

/// A connected backend; counts as active on its server until dropped.
pub struct Connected {
    pub stream: TcpStream,
    pub server: Arc<Server>,
    /// How many bytes of `first` went out with the connect.
    pub sent: usize,
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.server.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Every server of the pool failed.
#[derive(Debug, thiserror::Error)]
#[error("no backend of pool `{pool}` accepted the connection ({attempts} tried; last: {last})")]
pub struct ConnectError {
    pub pool: String,
    pub attempts: usize,
    pub last: String,
}

impl Pool {
    /// A pool of the backend's fixed addresses; its names join when
    /// [`crate::resolve`] has resolved them.
    pub fn new(name: &str, backend: &Backend) -> Self {
        let fixed = backend
            .servers
            .iter()
            .filter_map(|spec| match spec {
                ServerSpec::Addr { addr, weight } => Some(Arc::new(Server::new(*addr, *weight))),
                _ => None,
            })
            .collect();
        Pool {
            name: name.to_string(),
            specs: backend.servers.clone(),
            members: ArcSwap::from_pointee(Members::new(fixed)),
            policy: backend.balance,
            connect_timeout: backend.connect_timeout,
            retries: backend.retries,
            next: AtomicUsize::new(0),
            proxy_protocol: backend.proxy_protocol,
            source: backend.source,
            answers: std::sync::Mutex::new(vec![None; backend.servers.len()]),
            next_refresh: std::sync::Mutex::new(None),
            connect_seconds: crate::metrics::connect(name),
        }
    }

    /// The names' last answers, by entry.
    pub fn answers(&self) -> Answers {
        self.answers.lock().map(|a| a.clone()).unwrap_or_default()
    }

    pub fn set_answers(&self, answers: Answers) {
        if let Ok(mut a) = self.answers.lock() {
            *a = answers;
        }
    }

    /// Whether every name has had an answer.
    pub fn all_answered(&self) -> bool {
        let answers = self.answers();
        self.specs.iter().enumerate().all(|(i, spec)| !spec.is_name() || answers.get(i).is_some_and(Option::is_some))
    }

    /// When the names are due to be resolved again, if known.
    pub fn next_refresh(&self) -> Option<std::time::Instant> {
        self.next_refresh.lock().ok().and_then(|n| *n)
    }

    pub fn set_next_refresh(&self, at: std::time::Instant) {
        if let Ok(mut n) = self.next_refresh.lock() {
            *n = Some(at);
        }
    }

    /// The servers now.
    pub fn members(&self) -> Arc<Members> {
        self.members.load_full()
    }

    /// Replace the servers (new connections take the new ones).
    pub fn set_members(&self, members: Members) {
        self.members.store(Arc::new(members));
    }

    /// Whether some servers are found by DNS.
    pub fn has_names(&self) -> bool {
        self.specs.iter().any(ServerSpec::is_name)
    }

    /// The order in which to try `members` for this client: the policy's
    /// pick first, then the others; servers marked down go last.
    pub fn order(&self, members: &Members, client: IpAddr) -> Order {
        let servers = &members.servers;
        let n = servers.len();
        if n == 0 || members.ring.is_empty() {
            return Order::new();
        }
        let from_ring = |i: usize| members.ring[i % members.ring.len()] as usize;
        let first = match self.policy {
            Balance::RoundRobin => from_ring(self.next.fetch_add(1, Ordering::Relaxed)),
            Balance::Random => from_ring(rand::random_range(0..members.ring.len())),
            Balance::LeastConn => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                // Fewest open connections per unit of weight: a/wa < b/wb.
                let load = |i: usize| (servers[i].active() as u64, u64::from(servers[i].weight()));
                (0..n)
                    .map(|i| (start + i) % n)
                    .min_by(|&a, &b| {
                        let ((ca, wa), (cb, wb)) = (load(a), load(b));
                        (ca * wb).cmp(&(cb * wa))
                    })
                    .unwrap_or(0)
            }
            Balance::HashClientIp => {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                client.hash(&mut h);
                from_ring((h.finish() % members.ring.len() as u64) as usize)
            }
        };
        let mut order: Order = (0..n).map(|i| (first + i) % n).collect();
        order.sort_by_key(|&i| !servers[i].is_up());
        order
    }

    /// Connect to a server, trying the next one on failure, and send it as
    /// much of `first` (the bytes the client sent during detection, after a
    /// PROXY header if any) as the socket takes at once; `Connected::sent`
    /// says how much that was.
    pub async fn connect(&self, client: IpAddr, first: &[IoSlice<'_>]) -> Result<Connected, ConnectError> {
        let members = self.members();
        let order = self.order(&members, client);
        let attempts = order.len().min(self.retries as usize + 1);
        let mut last = None;
        for &i in order.iter().take(attempts) {
            let server = &members.servers[i];
            let carry_ack = server.active() >= BUSY;
            let from = (self.source == SourceAddr::Client).then_some(client);
            let socket = match open_socket(server.addr, from) {
                Ok(socket) => socket,
                Err(err) => {
                    // This host cannot make the connection: no server is to blame.
                    let last = format!("this host: {err}");
                    return Err(ConnectError { pool: self.name.clone(), attempts: 0, last });
                }
            };
            let connecting = connect_sending(socket, server.addr, first, carry_ack);
            match crate::evloop::timeout(self.connect_timeout, connecting).await {
                Ok(Ok((stream, sent))) => {
                    if !server.up.swap(true, Ordering::Relaxed) {
                        tracing::info!(pool = %self.name, server = %server.addr, "backend server accepts connections again");
                    }
                    server.active.fetch_add(1, Ordering::Relaxed);
                    return Ok(Connected { stream, server: server.clone(), sent });
                }
                Ok(Err(err)) if crate::limits::local_shortage(&err) => {
                    // Not the server's fault: it stays up, and no other
                    // server would do better.
                    let last = format!("this host: {err}");
                    return Err(ConnectError { pool: self.name.clone(), attempts: 0, last });
                }
                Ok(Err(err)) => last = Some(format!("{}: {err}", server.addr)),
                Err(_) => last = Some(format!("{}: connect timed out after {:?}", server.addr, self.connect_timeout)),
            }
            server.connect_failures.fetch_add(1, Ordering::Relaxed);
            if server.up.swap(false, Ordering::Relaxed) {
                let error = last.as_deref().unwrap_or_default();
                tracing::warn!(pool = %self.name, server = %server.addr, error, "backend server marked down");
            }
        }
        let last = last.unwrap_or_else(|| {
            if self.has_names() {
                "the pool has no servers: its names have not resolved to any address yet".into()
            } else {
                "pool has no servers".into()
            }
        });
        Err(ConnectError { pool: self.name.clone(), attempts, last })
    }
}

/// A socket for a connection to `addr`, leaving from `from` when given
/// (transparent proxying: the client's address, which need not be one of
/// this host's). Its errors are this host's, never the server's.
fn open_socket(addr: SocketAddr, from: Option<IpAddr>) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM.nonblocking().cloexec(), Some(Protocol::TCP))?;
    socket.set_tcp_nodelay(true)?;
    if let Some(from) = from {
        let from = match (from.to_canonical(), addr) {
            (IpAddr::V4(v4), SocketAddr::V6(_)) => IpAddr::V6(v4.to_ipv6_mapped()),
            (ip, _) => ip,
        };
        let denied = |e: io::Error| {
            let hint = if e.kind() == ErrorKind::PermissionDenied { " (needs CAP_NET_ADMIN)" } else { "" };
            io::Error::new(e.kind(), format!("cannot leave from the client's address {from}{hint}: {e}"))
        };
        match (from, addr) {
            (IpAddr::V4(_), SocketAddr::V4(_)) => socket.set_ip_transparent_v4(true).map_err(denied)?,
            (IpAddr::V6(_), SocketAddr::V6(_)) => socket.set_ip_transparent_v6(true).map_err(denied)?,
            _ => {
                let why = format!("an IPv6 client cannot reach the IPv4 server {addr} from its own address");
                return Err(io::Error::new(ErrorKind::Unsupported, why));
            }
        }
        socket.bind(&SocketAddr::new(from, 0).into()).map_err(denied)?;
    }
    Ok(socket)
}

/// Connections of ours open to a server from which on it counts as busy,
/// and a new connection's first bytes carry the handshake's last ACK (see
/// [`connect_sending`]). With one open, a server may be idle: under a
/// single client the previous connection is often still closing.
const BUSY: usize = 2;

/// Open a connection to `addr` and send what of `first` the socket takes.
///
/// A non-blocking `connect` says "in progress"; instead of waiting for the
/// socket to turn writable and asking it for its error (an event-loop turn
/// and a `getsockopt`), the first bytes are sent right away. On a nearby
/// server the handshake is usually done by then and the send succeeds, which
/// proves the connection; while the handshake is still going on Linux says
/// "would block" and we wait as usual; a refused or unreachable server
/// answers the send with its error.
///
/// With `carry_ack` and bytes to send, the handshake's last ACK is left to
/// ride on them ([`crate::sockopt::ack_handshake_with_data`]): one packet
/// fewer, and the server is woken once for the connection and its first
/// bytes. That is for a busy server, which is awake anyway. An idle server
/// on the same host is better woken by the ACK at once: it accepts while
/// the bytes are on their way, which at one client at a time made
/// connections about 5 % faster. Without bytes the ACK always goes at once,
/// so a server that speaks first sees the connection now.
async fn connect_sending(
    socket: Socket,
    addr: SocketAddr,
    first: &[IoSlice<'_>],
    carry_ack: bool,
) -> io::Result<(TcpStream, usize)> {
    let nothing = first.iter().all(|part| part.is_empty());
    if carry_ack && !nothing {
        // Best effort: without it the handshake ends with its own ACK.
        crate::sockopt::ack_handshake_with_data(&socket).ok();
    }
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let sent = if nothing {
        0
    } else {
        match socket.send_vectored(first) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        }
    };
    let stream = TcpStream::from_std(std::net::TcpStream::from(socket))?;
    if sent == 0 {
        stream.writable().await?;
        if let Some(err) = stream.take_error()? {
            return Err(err);
        }
    }
    Ok((stream, sent))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evloop;
    use crate::sockopt::segments_sent;
    use std::io::Read;

    fn run<T>(test: impl std::future::Future<Output = T>) -> T {
        evloop::Builder::new().build().expect("an event loop").block_on(test)
    }

    /// Write what the connect left unsent of `first`, then count the
    /// segments the connecting side has sent (before the server accepts).
    async fn finish(stream: &TcpStream, first: &[u8], sent: usize) -> u32 {
        crate::forward::write_all(stream, &first[sent..]).await.expect("write the rest");
        segments_sent(stream).expect("TCP_INFO")
    }

    /// Connect to a fresh loopback listener with `first`; the segments sent
    /// once it is all written, and what the server read.
    fn connect_and_count(first: &[u8], carry_ack: bool) -> (u32, Vec<u8>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let (stream, segments) = run(async {
            let socket = open_socket(addr, None).expect("socket");
            let (stream, sent) =
                connect_sending(socket, addr, &[IoSlice::new(first)], carry_ack).await.expect("connect");
            let segments = finish(&stream, first, sent).await;
            (stream, segments)
        });
        let (mut server, _) = listener.accept().expect("accept");
        let mut got = vec![0; first.len()];
        server.read_exact(&mut got).expect("read");
        drop(stream);
        (segments, got)
    }

    const REQUEST: &[u8] = b"GET / HTTP/1.1\r\n\r\n";

    #[test]
    fn first_bytes_can_carry_the_last_ack_of_the_handshake() {
        // SYN, then the request with the ACK on it: no ACK of its own.
        let (segments, got) = connect_and_count(REQUEST, true);
        assert_eq!(got, REQUEST);
        assert_eq!(segments, 2, "SYN and data; a third segment is a bare handshake ACK");
        // Not asked to: SYN, ACK, data.
        assert_eq!(connect_and_count(REQUEST, false).0, 3);
    }

    #[test]
    fn without_bytes_the_handshake_ends_at_once() {
        // A server that speaks first must see the connection without waiting
        // for a delayed ACK: SYN and ACK are both sent before connect returns.
        let (segments, _) = connect_and_count(b"", true);
        assert_eq!(segments, 2, "SYN and ACK");
    }

    #[test]
    fn the_ack_rides_on_the_bytes_once_the_server_is_busy() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let backend = Backend {
            servers: vec![ServerSpec::Addr { addr: listener.local_addr().expect("address"), weight: 1 }],
            connect_timeout: Duration::from_secs(5),
            retries: 0,
            ..Backend::default()
        };
        let pool = Pool::new("web", &backend);
        let client: IpAddr = [127, 0, 0, 1].into();
        let first = [IoSlice::new(REQUEST)];
        let segments = run(async {
            let mut open = Vec::new();
            let mut segments = Vec::new();
            for _ in 0..=BUSY {
                let connected = pool.connect(client, &first).await.expect("connect");
                segments.push(finish(&connected.stream, REQUEST, connected.sent).await);
                // Kept open, so that the server counts as busy.
                open.push(connected);
            }
            segments
        });
        // Idle (0 and 1 open): the ACK goes at once. Busy (2 open): it rides.
        assert_eq!(segments, [3, 3, 2]);
    }

    #[test]
    fn weights_spread_a_turn_in_proportion_and_interleaved() {
        assert_eq!(weighted_ring(&[1, 1, 1]), [0, 1, 2]);
        assert_eq!(weighted_ring(&[2, 2]), [0, 1]);
        let ring = weighted_ring(&[5, 1, 1]);
        assert_eq!(ring, [0, 0, 1, 0, 2, 0, 0]);
        let ring = weighted_ring(&[3, 1]);
        assert_eq!(ring.iter().filter(|&&i| i == 0).count(), 3);
        assert!(ring.windows(2).all(|w| w[0] != 1 || w[1] != 1));
    }

    #[test]
    fn round_robin_and_least_conn_follow_the_weights() {
        let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let backend = Backend {
            servers: vec![ServerSpec::Addr { addr: addr(1), weight: 3 }, ServerSpec::Addr { addr: addr(2), weight: 1 }],
            ..Backend::default()
        };
        let pool = Pool::new("web", &backend);
        let members = pool.members();
        let client: IpAddr = [127, 0, 0, 1].into();
        let firsts: Vec<usize> = (0..8).map(|_| pool.order(&members, client)[0]).collect();
        assert_eq!(firsts.iter().filter(|&&i| i == 0).count(), 6, "{firsts:?}");

        let least = Pool::new("web", &Backend { balance: Balance::LeastConn, ..backend });
        let members = least.members();
        // Two open on the weight-3 server and one on the weight-1 one: 2/3 < 1/1.
        members.servers[0].active.store(2, Ordering::Relaxed);
        members.servers[1].active.store(1, Ordering::Relaxed);
        assert_eq!(least.order(&members, client)[0], 0);
        members.servers[0].active.store(4, Ordering::Relaxed);
        assert_eq!(least.order(&members, client)[0], 1, "4/3 > 1/1");
    }
}
