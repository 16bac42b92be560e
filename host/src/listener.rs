//! Listeners: bind sockets with a deep accept backlog, accept connections,
//! enforce `limits.max_connections` and `limits.max_connections_per_ip`
//! before anything else (a refused connection costs one accept and one
//! close), and hand each connection to [`crate::proxy`] with the snapshot in
//! force. On shutdown: stop accepting, let open connections finish for up to
//! `limits.drain_timeout`, then return.

use crate::proxy;
use crate::snapshot::Snapshot;
use arc_swap::ArcSwap;
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Accept backlog: deep enough for bursts of thousands of connects.
pub const BACKLOG: i32 = 4096;

/// Bind a TCP listening socket (SO_REUSEADDR, non-blocking, deep backlog).
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// A listening socket and the listener (config name) it belongs to.
pub struct Bound {
    pub name: String,
    pub listener: std::net::TcpListener,
}

/// Bind every address of every TCP listener in the snapshot's config.
pub fn bind_all(snapshot: &Snapshot) -> anyhow::Result<Vec<Bound>> {
    let mut bound = Vec::new();
    for l in &snapshot.config.listeners {
        for &addr in &l.bind {
            let listener = bind(addr).map_err(|e| anyhow::anyhow!("listener `{}`: cannot bind {addr}: {e}", l.name))?;
            bound.push(Bound { name: l.name.clone(), listener });
        }
    }
    Ok(bound)
}

/// Open-connection counters for the accept limits.
#[derive(Default)]
pub struct Limits {
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    last_warning: AtomicU64,
}

/// One admitted connection; releases its place in the limits when dropped.
pub struct Admitted {
    limits: Arc<Limits>,
    ip: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.limits.total.fetch_sub(1, Ordering::Relaxed);
        if let Ok(mut map) = self.limits.per_ip.lock()
            && let Some(n) = map.get_mut(&self.ip)
        {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

impl Limits {
    /// Admit a connection from `ip`, or say which limit refuses it.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, max_total: usize, max_per_ip: usize) -> Result<Admitted, &'static str> {
        if self.total.fetch_add(1, Ordering::Relaxed) >= max_total {
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err("limits.max_connections");
        }
        let Ok(mut map) = self.per_ip.lock() else {
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err("limits.max_connections_per_ip");
        };
        let n = map.entry(ip).or_insert(0);
        if *n >= max_per_ip {
            drop(map);
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err("limits.max_connections_per_ip");
        }
        *n += 1;
        Ok(Admitted { limits: self.clone(), ip })
    }

    /// Open connections right now.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Log a refusal at most once a second.
    fn warn_refused(&self, limit: &str, client: SocketAddr) {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        if self.last_warning.swap(now, Ordering::Relaxed) != now {
            tracing::warn!(client = %client, limit, "connection refused: limit reached (logged at most once a second)");
        }
    }
}

/// Accept on every bound socket until `shutdown` resolves, then drain.
pub async fn serve(
    state: Arc<ArcSwap<Snapshot>>,
    bound: Vec<Bound>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let tracker = TaskTracker::new();
    let stop = CancellationToken::new();
    let limits = Arc::new(Limits::default());
    {
        let snapshot = state.load();
        let checked: Vec<_> = snapshot
            .config
            .backends
            .iter()
            .filter_map(|(name, b)| Some((snapshot.pools.get(name)?.clone(), b.health.clone()?)))
            .collect();
        crate::health::spawn(&checked, &stop);
    }
    let mut accept_loops = Vec::new();
    for b in bound {
        let listener = TcpListener::from_std(b.listener)?;
        let addr = listener.local_addr()?;
        tracing::info!(listener = %b.name, %addr, "listening");
        accept_loops.push(tokio::spawn(accept_loop(
            b.name,
            listener,
            state.clone(),
            limits.clone(),
            tracker.clone(),
            stop.clone(),
        )));
    }
    shutdown.await;
    stop.cancel();
    for l in accept_loops {
        let _ = l.await;
    }
    tracker.close();
    let drain = state.load().config.limits.drain_timeout;
    let open = limits.open();
    if open > 0 {
        tracing::info!(open, drain = %humantime::format_duration(drain), "stopped accepting; waiting for open connections");
    }
    if tokio::time::timeout(drain, tracker.wait()).await.is_err() {
        tracing::warn!(open = limits.open(), "drain timeout reached; closing the remaining connections");
    }
    tracing::info!("shut down");
    Ok(())
}

async fn accept_loop(
    name: String,
    listener: TcpListener,
    state: Arc<ArcSwap<Snapshot>>,
    limits: Arc<Limits>,
    tracker: TaskTracker,
    stop: CancellationToken,
) {
    let name: Arc<str> = name.into();
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, client) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                // Out of file descriptors and the like: back off briefly
                // instead of spinning on the error.
                tracing::warn!(listener = %name, error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let snapshot = state.load_full();
        let l = &snapshot.config.limits;
        let admitted = match limits.admit(client.ip(), l.max_connections, l.max_connections_per_ip) {
            Ok(admitted) => admitted,
            Err(limit) => {
                limits.warn_refused(limit, client);
                drop(stream);
                continue;
            }
        };
        let name = name.clone();
        tracker.spawn(async move {
            proxy::handle(snapshot, &name, stream, client).await;
            drop(admitted);
        });
    }
}
