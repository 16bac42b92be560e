//! Listeners: bind sockets with a deep accept backlog, accept connections,
//! enforce `limits.max_connections` and `limits.max_connections_per_ip`
//! before anything else (a refused connection costs one accept and one
//! close), and hand each connection to [`crate::proxy`] with the snapshot in
//! force. On shutdown: stop accepting, let open connections finish for up to
//! `limits.drain_timeout`, then return.

use crate::evloop;
use crate::limits::Limits;
use crate::proxy;
use crate::snapshot::Snapshot;
use arc_swap::ArcSwap;
use socket2::{Domain, Protocol, Socket, Type};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Accept backlog: deep enough for bursts of thousands of connects.
pub const BACKLOG: i32 = 4096;

/// A non-blocking socket bound to `addr` with SO_REUSEADDR (and
/// `SO_REUSEPORT` when several workers share the address; the kernel then
/// spreads new connections, or UDP clients, over their sockets).
fn bound_socket(addr: SocketAddr, ty: Type, protocol: Protocol, reuse_port: bool) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), ty, Some(protocol))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// Bind a TCP listening socket with a deep accept backlog. `TCP_NODELAY` is
/// set on the listener because Linux copies it into every accepted socket:
/// one system call per listener instead of one per connection.
pub fn bind(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
    let socket = bound_socket(addr, Type::STREAM, Protocol::TCP, reuse_port)?;
    socket.set_tcp_nodelay(true)?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Receive buffer asked for a UDP listener. The kernel's default (about
/// 208 KiB) overflows within a burst of a flood, and it then drops the
/// datagrams of established sessions with the flood's; the kernel caps what
/// it grants at `net.core.rmem_max`.
pub const UDP_RECEIVE_BUFFER: usize = 4 << 20;

/// Bind a UDP socket, with a receive buffer of [`UDP_RECEIVE_BUFFER`] or
/// as much as the kernel allows.
pub fn bind_udp(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::UdpSocket> {
    let socket = bound_socket(addr, Type::DGRAM, Protocol::UDP, reuse_port)?;
    if let Err(err) = socket.set_recv_buffer_size(UDP_RECEIVE_BUFFER) {
        tracing::debug!(%addr, error = %err, "cannot enlarge the UDP receive buffer; keeping the default");
    }
    Ok(socket.into())
}

/// A bound socket and the listener (config name) it belongs to.
pub struct Bound {
    pub name: String,
    /// The configured socket this belongs to (shared by every worker's copy).
    pub key: SocketKey,
    pub socket: Socket2,
    /// Whether this copy logs the `listening` line (one copy per socket).
    pub announce: bool,
}

/// One configured socket: listener name, configured address, transport.
pub type SocketKey = (String, SocketAddr, bool);

/// The sockets of the listeners in the config, as keys.
pub fn socket_keys(config: &crate::config::Config) -> Vec<SocketKey> {
    config
        .listeners
        .iter()
        .flat_map(|l| l.bind.iter().map(|&a| (l.name.clone(), a, l.transport == crate::config::Transport::Udp)))
        .collect()
}

/// A bound TCP listening socket or UDP socket.
pub enum Socket2 {
    Tcp(std::net::TcpListener),
    Udp(std::net::UdpSocket),
}

/// Bind every address of every listener in the snapshot's config, once per
/// worker: `result[w]` holds worker `w`'s sockets. With more than one
/// worker the sockets of one address share it with `SO_REUSEPORT` and the
/// kernel spreads new connections over them; port 0 is resolved by the first
/// bind and reused by the others.
///
/// A socket systemd passed is one socket whatever the number of workers. A
/// TCP one is shared by every worker: each accepted connection is whole on
/// the worker that accepted it. A UDP one is served by a single worker:
/// workers sharing it would each receive some of a client's datagrams and
/// each start a session of their own for it (a client's traffic split over
/// several upstream ports), where `SO_REUSEPORT` sends all of a client's
/// datagrams to one socket by a hash of its address. Several passed UDP
/// sockets go to the workers in turn.
pub fn bind_all(snapshot: &Snapshot, workers: usize) -> anyhow::Result<Vec<Vec<Bound>>> {
    bind_keys(&socket_keys(&snapshot.config), workers)
}

/// Bind these sockets once per worker (see [`bind_all`]).
pub fn bind_keys(keys: &[SocketKey], workers: usize) -> anyhow::Result<Vec<Vec<Bound>>> {
    let workers = workers.max(1);
    let mut per_worker: Vec<Vec<Bound>> = (0..workers).map(|_| Vec::new()).collect();
    let mut passed_udp = 0usize;
    for key in keys {
        let (name, addr, udp) = (&key.0, key.1, key.2);
        let cannot = |e: std::io::Error| anyhow::anyhow!("listener `{name}`: cannot bind {addr}: {e}");
        let open = |addr: SocketAddr, reuse: bool| -> std::io::Result<Socket2> {
            if udp { bind_udp(addr, reuse).map(Socket2::Udp) } else { bind(addr, reuse).map(Socket2::Tcp) }
        };
        if let Some(passed) = crate::systemd::passed(addr, udp) {
            // systemd's socket, shared by every worker.
            let passed = passed.map_err(cannot)?;
            if udp {
                // One worker, so that one client is one session (see above).
                let w = passed_udp % workers;
                passed_udp += 1;
                if let Some(sockets) = per_worker.get_mut(w) {
                    let socket = Socket2::Udp(passed.into());
                    sockets.push(Bound { name: name.clone(), key: key.clone(), socket, announce: true });
                }
                continue;
            }
            passed.set_tcp_nodelay(true).map_err(cannot)?;
            for (w, sockets) in per_worker.iter_mut().enumerate() {
                let socket = Socket2::Tcp(passed.try_clone().map_err(cannot)?.into());
                sockets.push(Bound { name: name.clone(), key: key.clone(), socket, announce: w == 0 });
            }
            continue;
        }
        let first = open(addr, workers > 1).map_err(cannot)?;
        let actual = match &first {
            Socket2::Tcp(s) => s.local_addr(),
            Socket2::Udp(s) => s.local_addr(),
        }
        .map_err(cannot)?;
        let mut first = Some(first);
        for (w, sockets) in per_worker.iter_mut().enumerate() {
            let socket = match first.take() {
                Some(socket) => socket,
                None => open(actual, true).map_err(cannot)?,
            };
            sockets.push(Bound { name: name.clone(), key: key.clone(), socket, announce: w == 0 });
        }
    }
    Ok(per_worker)
}

/// What the workers share.
#[derive(Clone)]
struct Shared {
    state: Arc<ArcSwap<Snapshot>>,
    limits: Arc<Limits>,
    /// Every connection task of every worker.
    tracker: TaskTracker,
    /// Every accept loop: each owns its listening socket, closed when the
    /// loop returns.
    accepting: TaskTracker,
    /// Cancelled to stop accepting.
    stop: CancellationToken,
    /// Cancelled when draining is over: workers then stop their event loops.
    done: CancellationToken,
    /// Set when a worker thread ended before `done`.
    lost: crate::supervise::Lost,
    udp_limits: Arc<Limits>,
    /// Each worker's event loop, to start accepting on sockets a reload adds.
    workers: Arc<std::sync::Mutex<Vec<Option<evloop::Handle>>>>,
    /// Each worker's tokio runtime for its UDP sockets, started on first use.
    udp_workers: Arc<std::sync::Mutex<Vec<Option<tokio::runtime::Handle>>>>,
    /// The threads of the UDP runtimes, joined at the end.
    udp_threads: Arc<std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>>,
    /// The sockets accepting now, each with the token that stops it.
    sockets: Arc<std::sync::Mutex<Vec<(SocketKey, CancellationToken)>>>,
}

static CONTROL: std::sync::OnceLock<Shared> = std::sync::OnceLock::new();

/// Set while the listeners accept: from the first snapshot in force and
/// every socket bound until draining starts (`GET /ready`).
static SERVING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether the proxy is serving: started, and not draining.
pub fn serving() -> bool {
    SERVING.load(std::sync::atomic::Ordering::Relaxed)
}

/// Open TCP connections and UDP sessions, all listeners together.
pub fn open_counts() -> (usize, usize) {
    CONTROL.get().map_or((0, 0), |s| (s.limits.open(), s.udp_limits.open()))
}

/// Accept on every bound socket until `shutdown` resolves, then drain.
///
/// Each set of TCP sockets in `bound` gets a thread of its own running an
/// [`evloop`], so a connection lives its whole life on the thread that
/// accepted it; each set of UDP sockets, a thread running a tokio runtime.
/// The calling runtime waits for `shutdown`, then drains.
pub async fn serve(
    state: Arc<ArcSwap<Snapshot>>,
    bound: Vec<Vec<Bound>>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let shared = Shared {
        state,
        limits: Arc::new(Limits::new("connection", "limits.max_connections", "limits.max_connections_per_ip")),
        tracker: TaskTracker::new(),
        accepting: TaskTracker::new(),
        stop: CancellationToken::new(),
        done: CancellationToken::new(),
        lost: crate::supervise::Lost::default(),
        udp_limits: Arc::new(Limits::new("udp session", "udp.max_sessions", "udp.max_sessions_per_ip")),
        workers: Arc::new(std::sync::Mutex::new(vec![None; bound.len().max(1)])),
        udp_workers: Arc::new(std::sync::Mutex::new(vec![None; bound.len().max(1)])),
        udp_threads: Arc::default(),
        sockets: Arc::default(),
    };
    let _ = CONTROL.set(shared.clone());
    let mut threads = Vec::new();
    let mut udp_loops = Vec::new();
    for (i, set) in bound.into_iter().enumerate() {
        let (tcp, udp): (Vec<Bound>, Vec<Bound>) = set.into_iter().partition(|b| matches!(b.socket, Socket2::Tcp(_)));
        if !udp.is_empty() {
            let runtime = udp_worker(&shared, i)?;
            udp_loops.extend(start_udp(udp, &shared, &runtime));
        }
        let worker = shared.clone();
        let (handle, thread) = start_thread(
            format!("refractium-worker-{i}"),
            &shared,
            worker_loop,
            evloop::Runtime::handle,
            move |runtime| {
                runtime.block_on(async move {
                    start_tcp(tcp, &worker);
                    // Keep running this worker's connections until draining ends.
                    worker.done.cancelled().await;
                });
            },
        )?;
        if let Ok(mut workers) = shared.workers.lock()
            && let Some(slot) = workers.get_mut(i)
        {
            *slot = Some(handle);
        }
        threads.push(thread);
    }
    crate::health::start(&shared.state.load());
    crate::resolve::start(&shared.state.load());
    SERVING.store(true, std::sync::atomic::Ordering::Relaxed);
    crate::systemd::ready();
    tokio::select! {
        () = shutdown => {}
        () = shared.lost.token.cancelled() => {}
    }
    SERVING.store(false, std::sync::atomic::Ordering::Relaxed);
    crate::systemd::stopping();
    shared.stop.cancel();
    shared.state.load().health_stop.cancel();
    for l in udp_loops {
        let _ = l.await;
    }
    // The accept loops return on their own threads; once they have, the
    // listening sockets are closed and new clients are refused.
    shared.accepting.close();
    if tokio::time::timeout(Duration::from_secs(5), shared.accepting.wait()).await.is_err() {
        tracing::warn!("a listener did not stop accepting within 5 s");
    }
    shared.tracker.close();
    let drain = shared.state.load().config.limits.drain_timeout;
    let open = shared.limits.open();
    if open > 0 {
        tracing::info!(open, drain = %humantime::format_duration(drain), "stopped accepting; waiting for open connections");
    }
    if tokio::time::timeout(drain, shared.tracker.wait()).await.is_err() {
        tracing::warn!(open = shared.limits.open(), "drain timeout reached; closing the remaining connections");
    }
    shared.done.cancel();
    let udp_threads = shared.udp_threads.lock().map(|mut t| std::mem::take(&mut *t)).unwrap_or_default();
    for thread in threads.into_iter().chain(udp_threads) {
        let _ = thread.join();
    }
    if let Some(thread) = shared.lost.which() {
        anyhow::bail!("worker thread {thread} ended unexpectedly; stopped rather than serve without it");
    }
    tracing::info!("shut down");
    Ok(())
}

/// The event loop of one worker thread.
///
/// Before it sleeps the worker yields its core once. A socket write usually
/// woke the peer on this very core (the kernel places a woken task beside
/// its waker); yielding lets that peer run now, and when it answers at once
/// (a nearby backend) the answer is waiting when the worker polls, so it
/// does not go to sleep and get woken again. With nothing else runnable the
/// yield returns at once. At concurrency 1 it took the proxy's CPU per
/// connection from 64-71 to 63-66 µs and its rate up 4-12 % in three sets of
/// alternating rounds (docs/performance.md); at 16 and 64 connections in
/// flight it is within noise.
pub fn worker_loop() -> std::io::Result<evloop::Runtime> {
    evloop::Builder::new().yield_before_sleep(true).build()
}

impl Shared {
    /// The token that stops the socket `key` (all workers' copies): made on
    /// first use, a child of the shutdown token.
    fn token_for(&self, key: &SocketKey) -> CancellationToken {
        let Ok(mut sockets) = self.sockets.lock() else { return self.stop.child_token() };
        if let Some((_, token)) = sockets.iter().find(|(k, _)| k == key) {
            return token.clone();
        }
        let token = self.stop.child_token();
        sockets.push((key.clone(), token.clone()));
        token
    }
}

/// Sockets a reload binds before its snapshot goes in force, and those it
/// stops after.
pub struct SocketChange {
    added: Vec<Vec<Bound>>,
    removed: Vec<SocketKey>,
}

/// Bind the sockets `new` adds to the running ones (an `Err` rejects the
/// reload and changes nothing). Nothing accepts on them until
/// [`SocketChange::commit`].
pub fn prepare(new: &crate::config::Config) -> anyhow::Result<SocketChange> {
    let Some(shared) = CONTROL.get() else {
        anyhow::bail!("{}: no running listeners to change", new.file.display());
    };
    let running: Vec<SocketKey> =
        shared.sockets.lock().map(|s| s.iter().map(|(k, _)| k.clone()).collect()).unwrap_or_default();
    let wanted = socket_keys(new);
    let added: Vec<SocketKey> = wanted.iter().filter(|k| !running.contains(k)).cloned().collect();
    let removed: Vec<SocketKey> = running.into_iter().filter(|k| !wanted.contains(k)).collect();
    let workers = shared.workers.lock().map(|h| h.len()).unwrap_or(1);
    let added = bind_keys(&added, workers)?;
    Ok(SocketChange { added, removed })
}

impl SocketChange {
    /// Start accepting on the added sockets (on every worker) and stop the
    /// removed ones; their open connections finish on their own.
    pub fn commit(self) {
        let Some(shared) = CONTROL.get() else { return };
        let workers: Vec<Option<evloop::Handle>> = shared.workers.lock().map(|h| h.clone()).unwrap_or_default();
        for (w, set) in self.added.into_iter().enumerate() {
            let (tcp, udp): (Vec<Bound>, Vec<Bound>) =
                set.into_iter().partition(|b| matches!(b.socket, Socket2::Tcp(_)));
            if !udp.is_empty() {
                match udp_worker(shared, w) {
                    Ok(runtime) => drop(start_udp(udp, shared, &runtime)),
                    Err(err) => tracing::error!(error = %err, "cannot start a UDP worker; its sockets stay unserved"),
                }
            }
            let Some(Some(worker)) = workers.get(w) else { continue };
            let shared = shared.clone();
            worker.spawn(move || async move { start_tcp(tcp, &shared) });
        }
        if let Ok(mut sockets) = shared.sockets.lock() {
            sockets.retain(|(key, token)| {
                let stop = self.removed.contains(key);
                if stop {
                    token.cancel();
                    tracing::info!(listener = %key.0, addr = %key.1, "listener stopped; its open connections finish");
                }
                !stop
            });
        }
    }
}

/// Spawn an accept loop per TCP socket on this thread's event loop.
fn start_tcp(set: Vec<Bound>, shared: &Shared) {
    for b in set {
        let Socket2::Tcp(socket) = b.socket else { continue };
        let announce = b.announce;
        let name = b.name;
        let stop = shared.token_for(&b.key);
        let Some(listener) = registered(&name, evloop::TcpListener::from_std(socket)) else { continue };
        if announce && let Ok(addr) = listener.local_addr() {
            tracing::info!(listener = %name, %addr, transport = "tcp", "listening");
        }
        evloop::spawn(shared.accepting.track_future(accept_loop(name, listener, shared.clone(), stop)));
    }
}

/// The tokio runtime that serves worker `i`'s UDP sockets, on a thread of
/// its own (`refractium-udp-i`), started the first time the worker has a
/// UDP socket: the sessions' upstream sockets and timers are tokio's.
fn udp_worker(shared: &Shared, i: usize) -> anyhow::Result<tokio::runtime::Handle> {
    let mut workers = shared.udp_workers.lock().map_err(|_| anyhow::anyhow!("UDP workers' lock poisoned"))?;
    if let Some(Some(handle)) = workers.get(i) {
        return Ok(handle.clone());
    }
    let done = shared.done.clone();
    let (handle, thread) = start_thread(
        format!("refractium-udp-{i}"),
        shared,
        udp_runtime,
        |runtime: &tokio::runtime::Runtime| runtime.handle().clone(),
        move |runtime| runtime.block_on(done.cancelled()),
    )?;
    if let Some(slot) = workers.get_mut(i) {
        *slot = Some(handle.clone());
    }
    if let Ok(mut threads) = shared.udp_threads.lock() {
        threads.push(thread);
    }
    Ok(handle)
}

/// Start a thread called `name` that builds its runtime with `build` and
/// then `run`s on it; answer what `handle` takes from the runtime for other
/// threads, once it is built, or why it could not be.
fn start_thread<R: 'static, H: Send + 'static>(
    name: String,
    shared: &Shared,
    build: fn() -> std::io::Result<R>,
    handle: fn(&R) -> H,
    run: impl FnOnce(R) + Send + 'static,
) -> anyhow::Result<(H, std::thread::JoinHandle<()>)> {
    let (give, started) = std::sync::mpsc::channel();
    let (thread_name, done, lost) = (name.clone(), shared.done.clone(), shared.lost.clone());
    let thread = std::thread::Builder::new().name(name.clone()).spawn(move || {
        let runtime = match build() {
            Ok(runtime) => runtime,
            Err(err) => {
                let _ = give.send(Err(err));
                return;
            }
        };
        let _ = give.send(Ok(handle(&runtime)));
        let _lifeline = crate::supervise::Lifeline::new(thread_name, done, lost);
        run(runtime);
    })?;
    let handle = started
        .recv()
        .map_err(|_| anyhow::anyhow!("{name} ended before it started"))?
        .map_err(|e| anyhow::anyhow!("cannot start {name}: {e}"))?;
    Ok((handle, thread))
}

/// A socket registered with this thread's event loop, or `None` with the
/// reason logged.
fn registered<T>(listener: &str, result: std::io::Result<T>) -> Option<T> {
    result.map_err(|err| tracing::error!(listener, error = %err, "cannot register a socket")).ok()
}

/// Spawn a session loop per UDP socket on `runtime`.
fn start_udp(set: Vec<Bound>, shared: &Shared, runtime: &tokio::runtime::Handle) -> Vec<tokio::task::JoinHandle<()>> {
    let _guard = runtime.enter();
    let mut loops = Vec::new();
    for b in set {
        let Socket2::Udp(socket) = b.socket else { continue };
        let announce = b.announce;
        let name = b.name;
        let stop = shared.token_for(&b.key);
        let Some(socket) = registered(&name, tokio::net::UdpSocket::from_std(socket)) else { continue };
        if announce && let Ok(addr) = socket.local_addr() {
            tracing::info!(listener = %name, %addr, transport = "udp", "listening");
        }
        loops.push(tokio::spawn(crate::udp::run(crate::udp::UdpListener::new(
            name.into(),
            socket,
            shared.state.clone(),
            shared.udp_limits.clone(),
            shared.tracker.clone(),
            stop,
        ))));
    }
    loops
}

/// Let the tasks that are ready now run before the caller goes on. Unlike
/// `yield_now`, which waits for the event loop to look at its sockets first
/// (one more `epoll_wait`), this puts the task at the back of the run queue.
async fn after_ready_tasks() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return std::task::Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await;
}

async fn accept_loop(name: String, listener: evloop::TcpListener, shared: Shared, stop: CancellationToken) {
    let Shared { state, limits, tracker, .. } = shared;
    let name: Arc<str> = name.into();
    let bound_to = listener.local_addr().ok();
    let metrics = crate::metrics::TcpListenerMetrics::new(&name);
    let mut in_a_row = 0usize;
    // Registered with the token from its first poll on, for as long as the
    // loop runs.
    let mut stopped = std::pin::pin!(stop.clone().cancelled_owned());
    loop {
        // Empty the accept queue before serving what was accepted: the
        // runtime's budget would otherwise stop this loop after 128 accepts
        // to run those connections' tasks, the queue would drain only as
        // fast as connections are served, and a burst larger than the
        // backlog (a restart under load) would overflow it: the kernel drops
        // the SYNs and those clients wait a second to retry. Accepting costs
        // a few µs; serving waits for the queue to be empty, or for
        // `BACKLOG` accepts in a row.
        //
        // Except for the first connection of a wake-up, which is served
        // at once: most wake-ups bring one connection, and the accept that
        // finds the queue empty then happens while its backend works
        // rather than before its first bytes go out.
        if in_a_row >= BACKLOG as usize {
            in_a_row = 0;
            evloop::yield_to_io().await;
        } else if in_a_row == 1 {
            after_ready_tasks().await;
        }
        // The token is looked at only when the queue is empty: a lock each
        // time, but not one per connection under load.
        if stop.is_cancelled() {
            return;
        }
        let mut waited = false;
        let accepted = std::future::poll_fn(|cx| {
            let polled = listener.poll_accept(cx);
            if polled.is_pending() {
                waited = true;
                if stopped.as_mut().poll(cx).is_ready() {
                    return std::task::Poll::Ready(None);
                }
            }
            polled.map(Some)
        })
        .await;
        in_a_row = if waited { 1 } else { in_a_row + 1 };
        let Some(accepted) = accepted else { return };
        let (stream, client) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                // Out of file descriptors and the like: pause briefly
                // instead of spinning on the error; the connection waits in
                // the queue and is accepted once a descriptor is free.
                static LAST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                if crate::clock::first_this_second(&LAST) {
                    let hint = if crate::limits::local_shortage(&err) {
                        "; new connections wait in the queue until descriptors are free (raise the open-file limit)"
                    } else {
                        ""
                    };
                    tracing::warn!(listener = %name, error = %err, "accept failed{hint} (logged at most once a second)");
                }
                evloop::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let snapshot = state.load_full();
        let l = &snapshot.config.limits;
        // A load balancer's connections are counted per client once its
        // PROXY header names the client.
        let behind = snapshot.listeners.get(&*name).and_then(|p| p.accept_proxy.as_ref());
        let per_ip = match behind {
            Some(lb) if lb.trusts(client.ip()) => usize::MAX,
            _ => l.max_connections_per_ip,
        };
        let key = crate::limits::host_key(client.ip(), l.ipv6_prefix);
        let mut admitted = match limits.admit(key, l.max_connections, per_ip) {
            Ok(admitted) => admitted,
            Err(limit) => {
                metrics.refused(limit);
                limits.warn_refused(limit, client);
                drop(stream);
                continue;
            }
        };
        let name = name.clone();
        metrics.accepted.inc();
        let open = crate::metrics::Held::new(&metrics.open);
        evloop::spawn(tracker.track_future(async move {
            // A listener bound to one address knows the local address of
            // every connection; a wildcard one asks the socket.
            let local = match bound_to {
                Some(addr) if !addr.ip().is_unspecified() => addr,
                _ => stream.local_addr().unwrap_or(client),
            };
            // The connection's state (≈ 1.9 KB) goes to the heap once, here:
            // spawned inline, it would be copied whole at each layer the
            // task passes through on its way into the runtime. The box is
            // taken first so that the future is built in it: `Box::pin(f)`
            // builds `f` on the stack, then copies all of it over.
            let state = Box::new_uninit();
            let at = proxy::Accepted { listener: &name, client, local, admitted: &mut admitted };
            Box::into_pin(Box::write(state, proxy::handle(snapshot, stream, at))).await;
            drop((open, admitted));
        }));
    }
}

/// The single-threaded tokio runtime of the main thread: configuration,
/// signals, reloads, health checks and the admin endpoint.
pub fn main_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()
}

/// The single-threaded tokio runtime of a worker's UDP sockets. Like the
/// TCP workers' loops it yields its core before it sleeps (see
/// [`worker_loop`]).
fn udp_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().on_thread_park(std::thread::yield_now).build()
}

#[cfg(test)]
mod udp_buffer_tests {
    use super::*;

    /// A UDP listener gets the receive buffer it asks for, up to what the
    /// kernel allows (`net.core.rmem_max`; Linux reports twice the size set).
    #[test]
    fn a_udp_listener_has_a_large_receive_buffer() {
        let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .expect("net.core.rmem_max");
        let socket = bind_udp("127.0.0.1:0".parse().expect("addr"), false).expect("bind");
        let got = socket2::SockRef::from(&socket).recv_buffer_size().expect("SO_RCVBUF");
        assert!(got >= UDP_RECEIVE_BUFFER.min(rmem_max), "receive buffer {got} bytes (rmem_max {rmem_max})");
    }
}
