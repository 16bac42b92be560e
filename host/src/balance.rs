//! Backend pools: pick a server by the pool's policy and connect to it,
//! trying the next server on failure (at most `retries` more times).
//!
//! A server whose connect fails is marked down (passive check) and tried last
//! until a connect to it succeeds again; [`crate::health`] adds active checks
//! for pools that ask for them.

use crate::config::{Backend, Balance};
use crate::evloop::TcpStream;
use socket2::{Domain, Protocol, Socket, Type};
use std::io::{self, ErrorKind, IoSlice};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// One backend server and what the balancer knows about it.
#[derive(Debug)]
pub struct Server {
    pub addr: SocketAddr,
    /// Connections currently open to it.
    active: AtomicUsize,
    /// False after a failed connect, true again after a successful one.
    up: AtomicBool,
}

impl Server {
    /// Whether checks consider the server up.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Mark the server up or down.
    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
    }
}

/// Servers in the order to try them, by index: inline for pools of up to
/// eight servers, so picking one allocates nothing.
pub type Order = smallvec::SmallVec<[usize; 8]>;

/// A backend pool of one snapshot.
#[derive(Debug)]
pub struct Pool {
    pub name: String,
    pub servers: Vec<Server>,
    policy: Balance,
    pub connect_timeout: Duration,
    retries: u32,
    next: AtomicUsize,
    pub proxy_protocol: crate::config::ProxyProtocol,
}

/// A connected backend; counts as active on its server until dropped.
pub struct Connected<'a> {
    pub stream: TcpStream,
    pub server: &'a Server,
    /// How many bytes of `first` went out with the connect.
    pub sent: usize,
}

impl Drop for Connected<'_> {
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
    pub fn new(name: &str, backend: &Backend) -> Self {
        Pool {
            name: name.to_string(),
            servers: backend
                .servers
                .iter()
                .map(|&addr| Server { addr, active: AtomicUsize::new(0), up: AtomicBool::new(true) })
                .collect(),
            policy: backend.balance,
            connect_timeout: backend.connect_timeout,
            retries: backend.retries,
            next: AtomicUsize::new(0),
            proxy_protocol: backend.proxy_protocol,
        }
    }

    /// The order in which to try servers for this client: the policy's pick
    /// first, then the others; servers marked down go last.
    pub fn order(&self, client: IpAddr) -> Order {
        let n = self.servers.len();
        if n == 0 {
            return Order::new();
        }
        let first = match self.policy {
            Balance::RoundRobin => self.next.fetch_add(1, Ordering::Relaxed) % n,
            Balance::Random => rand::random_range(0..n),
            Balance::LeastConn => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..n)
                    .map(|i| (start + i) % n)
                    .min_by_key(|&i| self.servers[i].active.load(Ordering::Relaxed))
                    .unwrap_or(0)
            }
            Balance::HashClientIp => {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                client.hash(&mut h);
                (h.finish() % n as u64) as usize
            }
        };
        let mut order: Order = (0..n).map(|i| (first + i) % n).collect();
        order.sort_by_key(|&i| !self.servers[i].up.load(Ordering::Relaxed));
        order
    }

    /// Connect to a server, trying the next one on failure, and send it as
    /// much of `first` (the bytes the client sent during detection, after a
    /// PROXY header if any) as the socket takes at once; `Connected::sent`
    /// says how much that was.
    pub async fn connect(&self, client: IpAddr, first: &[IoSlice<'_>]) -> Result<Connected<'_>, ConnectError> {
        let order = self.order(client);
        let attempts = order.len().min(self.retries as usize + 1);
        let mut last = None;
        for &i in order.iter().take(attempts) {
            let server = &self.servers[i];
            let carry_ack = server.active.load(Ordering::Relaxed) >= BUSY;
            match crate::evloop::timeout(self.connect_timeout, connect_sending(server.addr, first, carry_ack)).await {
                Ok(Ok((stream, sent))) => {
                    if !server.up.swap(true, Ordering::Relaxed) {
                        tracing::info!(pool = %self.name, server = %server.addr, "backend server accepts connections again");
                    }
                    server.active.fetch_add(1, Ordering::Relaxed);
                    return Ok(Connected { stream, server, sent });
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
            if server.up.swap(false, Ordering::Relaxed) {
                let error = last.as_deref().unwrap_or_default();
                tracing::warn!(pool = %self.name, server = %server.addr, error, "backend server marked down");
            }
        }
        let last = last.unwrap_or_else(|| "pool has no servers".into());
        Err(ConnectError { pool: self.name.clone(), attempts, last })
    }
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
async fn connect_sending(addr: SocketAddr, first: &[IoSlice<'_>], carry_ack: bool) -> io::Result<(TcpStream, usize)> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM.nonblocking().cloexec(), Some(Protocol::TCP))?;
    socket.set_tcp_nodelay(true)?;
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
            let (stream, sent) = connect_sending(addr, &[IoSlice::new(first)], carry_ack).await.expect("connect");
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
            servers: vec![listener.local_addr().expect("address")],
            balance: Balance::RoundRobin,
            health: None,
            proxy_protocol: crate::config::ProxyProtocol::None,
            connect_timeout: Duration::from_secs(5),
            retries: 0,
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
}
