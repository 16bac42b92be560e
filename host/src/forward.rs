//! Forwarding: relay bytes both ways until both sides have closed.
//!
//! A direction starts by copying: it waits for its socket to be readable,
//! reads into a scratch buffer owned by the worker thread (not by the
//! connection), and writes what it read at once; only bytes the other side
//! could not take yet are copied into a per-connection buffer, which is freed
//! as soon as it drains. Once it has moved 64 KiB it switches to `splice(2)`
//! through a pooled pipe ([`splice`]), so bulk transfers never enter user
//! space. An idle connection holds no buffer and no pipe. End of stream on
//! one side is passed on as a half-close (`shutdown(SHUT_WR)`) to the other,
//! and bytes read after that side's FIN arrived travel in the same segment
//! as the FIN passed on (see [`send`]);
//! the relay ends when both directions have ended, when either side fails, or
//! after `idle_timeout` without a byte moving either way ([`idle`]). Routes
//! with hooks take [`hooked`] instead.

pub mod hooked;
mod idle;
pub mod proxy_protocol;
mod splice;

use crate::evloop::{Interest, TcpStream};
use idle::Idle;
use socket2::SockRef;
use std::cell::RefCell;
use std::io::{self, ErrorKind};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Size of each worker thread's scratch buffer.
const SCRATCH: usize = 64 * 1024;
/// Bytes a direction copies before it switches to `splice(2)`.
const SPLICE_AFTER: u64 = 64 * 1024;

thread_local! {
    static SCRATCH_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH]);
}

/// Which side of the proxied connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Client => "client",
            Side::Server => "server",
        })
    }
}

/// Why a relay ended.
#[derive(Debug)]
pub enum End {
    /// Both sides closed their sending side.
    Closed,
    /// Nothing moved for the idle timeout.
    Idle,
    /// A read or write on one side failed.
    Failed(Side, io::Error),
}

impl End {
    /// The words for an end that has no details.
    fn fixed(&self) -> Option<&'static str> {
        match self {
            End::Closed => Some("closed"),
            End::Idle => Some("idle timeout"),
            End::Failed(..) => None,
        }
    }

    /// What the access log says, formatted only when there are details.
    pub fn into_text(self) -> std::borrow::Cow<'static, str> {
        match self.fixed() {
            Some(words) => words.into(),
            None => self.to_string().into(),
        }
    }
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Failed(side, err) => write!(f, "{side} error: {err}"),
            fixed => f.write_str(fixed.fixed().unwrap_or_default()),
        }
    }
}

/// Byte counters of one relay, readable while it runs.
#[derive(Debug, Default)]
pub struct Counters {
    /// Client to server.
    pub up: AtomicU64,
    /// Server to client.
    pub down: AtomicU64,
    /// Set by the first direction to reach end of stream.
    one_done: AtomicBool,
    /// Set when the client-to-server direction ended last: the server's FIN
    /// is left for the close of the server socket to send (see
    /// [`Direction::half_close`]).
    server_fin_left: AtomicBool,
}

impl Counters {
    /// Whether the relay ended with only the server still to be sent its
    /// FIN, which closing the server socket does: the client has been sent
    /// everything, its FIN included, and waits for nothing more.
    pub fn server_fin_left(&self) -> bool {
        self.server_fin_left.load(Ordering::Relaxed)
    }
}

/// One direction of a relay: where bytes come from and go to, and what to
/// count.
#[derive(Clone, Copy)]
struct Direction<'a> {
    from: &'a TcpStream,
    to: &'a TcpStream,
    from_side: Side,
    to_side: Side,
    moved: &'a AtomicU64,
    idle: &'a Idle,
    one_done: &'a AtomicBool,
    server_fin_left: &'a AtomicBool,
}

/// Relay between `client` and `server` until both have closed.
pub async fn relay(client: &TcpStream, server: &TcpStream, idle: Duration, counters: &Counters) -> End {
    let idle = Idle::watch(idle);
    let (up, down) = directions(client, server, counters, &idle);
    // Pinned where they are built: `try_join!` and `select!` take their
    // futures by value, and would copy each whole into their own state.
    let up = std::pin::pin!(up.pump());
    let down = std::pin::pin!(down.pump());
    let both = std::pin::pin!(async { tokio::try_join!(up, down) });
    tokio::select! {
        biased;
        result = both => match result {
            Ok(_) => End::Closed,
            Err((side, err)) => End::Failed(side, err),
        },
        () = idle.expired() => End::Idle,
    }
}

/// The two directions of a relay: client to server, server to client.
fn directions<'a>(
    client: &'a TcpStream,
    server: &'a TcpStream,
    counters: &'a Counters,
    idle: &'a Idle,
) -> (Direction<'a>, Direction<'a>) {
    let up = Direction {
        from: client,
        to: server,
        from_side: Side::Client,
        to_side: Side::Server,
        moved: &counters.up,
        idle,
        one_done: &counters.one_done,
        server_fin_left: &counters.server_fin_left,
    };
    let down = Direction {
        from: server,
        to: client,
        from_side: Side::Server,
        to_side: Side::Client,
        moved: &counters.down,
        ..up
    };
    (up, down)
}

type Failure = (Side, io::Error);

impl Direction<'_> {
    /// Count `n` bytes moved, now.
    fn record(&self, n: usize) {
        self.moved.fetch_add(n as u64, Ordering::Relaxed);
        self.idle.touch();
    }

    /// Tell the receiving side nothing more is coming. When the other
    /// direction has already ended, both sockets have been read to their end
    /// and are about to be closed, and the close sends the FIN: the
    /// `shutdown` would be one more system call for nothing.
    fn half_close(&self) -> Result<(), Failure> {
        if self.one_done.swap(true, Ordering::Relaxed) {
            if self.to_side == Side::Server {
                self.server_fin_left.store(true, Ordering::Relaxed);
            }
            return Ok(());
        }
        match SockRef::from(self.to).shutdown(Shutdown::Write) {
            Err(e) if e.kind() != ErrorKind::NotConnected => Err((self.to_side, e)),
            _ => Ok(()),
        }
    }

    /// Move bytes until end of stream on `from`: copied through the
    /// thread's scratch buffer at first, then, once the direction has moved
    /// [`SPLICE_AFTER`] bytes, with `splice(2)`. Most connections move a few
    /// hundred bytes each way, and for them two plain reads and writes are
    /// cheaper than the same number of splices through a pipe.
    async fn pump(self) -> Result<(), Failure> {
        if self.copy_pump(SPLICE_AFTER).await? == Copied::Ended {
            return Ok(());
        }
        match self.splice_pump().await? {
            Spliced::Ended => Ok(()),
            // Awaited here rather than inside `splice_pump`, so that its
            // future does not hold a second copy loop: every connection's
            // task is sized for the largest state it can be in.
            Spliced::NoPipe => self.copy_pump(u64::MAX).await.map(drop),
        }
    }

    /// Move bytes with `splice(2)` until end of stream on `from`, or say
    /// that no pipe could be had (before anything went through one).
    async fn splice_pump(self) -> Result<Spliced, Failure> {
        let (from, to) = (self.from, self.to);
        let mut pipe: Option<splice::Pipe> = None;
        loop {
            // Bytes in the pipe go out first.
            if let Some(p) = pipe.as_mut().filter(|p| p.pending > 0) {
                match p.drain(to) {
                    Ok(_) => {}
                    Err(e) if splice::would_block(&e) => to.writable().await.map_err(|e| (self.to_side, e))?,
                    Err(e) => return Err((self.to_side, e)),
                }
                continue;
            }
            let p = match pipe.as_mut() {
                Some(p) => p,
                None => match splice::Pipe::take() {
                    Ok(p) => pipe.insert(p),
                    Err(err) => {
                        tracing::debug!(error = %err, "no pipe for splice; copying instead");
                        return Ok(Spliced::NoPipe);
                    }
                },
            };
            match p.fill(from) {
                Ok(0) => {
                    if let Some(p) = pipe.take() {
                        p.give_back();
                    }
                    return self.half_close().map(|()| Spliced::Ended);
                }
                Ok(n) => self.record(n),
                Err(e) if splice::would_block(&e) => {
                    // Nothing to read: give the empty pipe back before waiting.
                    if let Some(p) = pipe.take() {
                        p.give_back();
                    }
                    from.readable().await.map_err(|e| (self.from_side, e))?;
                }
                Err(e) => return Err((self.from_side, e)),
            }
        }
    }

    /// Copy until end of stream on `from` (then [`Copied::Ended`]) or until
    /// `until` bytes have moved (then [`Copied::Enough`]).
    async fn copy_pump(self, until: u64) -> Result<Copied, Failure> {
        let (from, to) = (self.from, self.to);
        let mut moved = 0u64;
        // Bytes read that `to` has not taken yet; while there are any,
        // nothing more is read.
        let mut rest: Vec<u8> = Vec::new();
        loop {
            // One await for both kinds of wait: every connection's task is
            // as large as the largest state it can be in.
            let (stream, interest, side) = if rest.is_empty() {
                // A reset's error comes with the readiness, so that it does
                // not pass for an end of stream (see `last` below).
                (from, Interest::READABLE, self.from_side)
            } else {
                (to, Interest::WRITABLE, self.to_side)
            };
            let ready = stream.ready(interest).await.map_err(|e| (side, e))?;
            if !rest.is_empty() {
                match to.try_write(&rest) {
                    Ok(w) => drop(rest.drain(..w)),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => return Err((self.to_side, e)),
                }
                if rest.is_empty() {
                    rest = Vec::new();
                    if moved >= until {
                        return Ok(Copied::Enough);
                    }
                }
                continue;
            }
            let step = SCRATCH_BUF.with(|cell| {
                let mut buf = cell.borrow_mut();
                let n = match from.try_read(&mut buf) {
                    Ok(0) => return Ok(Step::Eof),
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(Step::Spurious),
                    Err(e) => return Err((self.from_side, e)),
                };
                // The sender had finished (its FIN was in) and this read
                // emptied the socket: end of stream comes next, and the
                // half-close that passes it on will carry these bytes. A
                // reset brings the same readiness, with an error: the next
                // read reports it.
                let last = ready.is_read_closed() && !ready.is_error() && n < buf.len();
                let mut written = 0;
                while written < n {
                    match send(to, &buf[written..n], last) {
                        Ok(w) => written += w,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => return Err((self.to_side, e)),
                    }
                }
                if written == n && last {
                    return Ok(Step::Last(n));
                }
                let rest = if written < n { buf[written..n].to_vec() } else { Vec::new() };
                Ok(Step::Moved(n, rest))
            })?;
            match step {
                Step::Eof => return self.half_close().map(|()| Copied::Ended),
                Step::Spurious => continue,
                Step::Last(n) => {
                    self.record(n);
                    return self.half_close().map(|()| Copied::Ended);
                }
                Step::Moved(n, unsent) => {
                    self.record(n);
                    moved += n as u64;
                    rest = unsent;
                    if rest.is_empty() && moved >= until {
                        return Ok(Copied::Enough);
                    }
                }
            }
        }
    }
}

/// How [`Direction::splice_pump`] stopped.
enum Spliced {
    Ended,
    NoPipe,
}

/// How [`Direction::copy_pump`] stopped.
#[derive(PartialEq, Eq)]
enum Copied {
    Ended,
    Enough,
}

enum Step {
    Eof,
    Spurious,
    Moved(usize, Vec<u8>),
    /// These bytes, all passed on, were the last: the read that took them
    /// emptied a socket whose FIN was already in, so the end of stream is
    /// known without reading it (one `recvfrom` less, as HAProxy does with
    /// `EPOLLRDHUP`).
    Last(usize),
}

/// Write what `to` takes of `data` now. With `more`, the kernel holds the
/// bytes (`MSG_MORE`) for what the caller sends next, which must follow
/// without waiting: here, always the half-close (or the close) that ends the
/// direction. The peer then gets the last bytes and the FIN in one segment
/// and wakes once for both instead of twice (a short response costs the
/// client one wake-up less).
fn send(to: &TcpStream, data: &[u8], more: bool) -> io::Result<usize> {
    if !more {
        return to.try_write(data);
    }
    to.try_io(Interest::WRITABLE, || {
        rustix::net::send(to, data, rustix::net::SendFlags::MORE | rustix::net::SendFlags::NOSIGNAL)
            .map_err(io::Error::from)
    })
}

/// Write all of `data`, waiting for the socket to drain as needed.
pub async fn write_all(to: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        to.writable().await?;
        match to.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Counters, End, relay};
    use crate::evloop::{self, TcpListener, TcpStream};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A connected pair of loopback sockets: (the far end, the proxy's end).
    async fn pair() -> (TcpStream, TcpStream) {
        let std = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        std.set_nonblocking(true).expect("non-blocking");
        let listener = TcpListener::from_std(std).expect("register");
        let far = std::net::TcpStream::connect(listener.local_addr().expect("address")).expect("connect");
        far.set_nonblocking(true).expect("non-blocking");
        let far = TcpStream::from_std(far).expect("register");
        let (near, _) = listener.accept().await.expect("accept");
        (far, near)
    }

    fn run<T>(test: impl std::future::Future<Output = T>) -> T {
        evloop::Builder::new().build().expect("an event loop").block_on(test)
    }

    async fn read_all(s: &mut TcpStream) -> Vec<u8> {
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.expect("read");
        got
    }

    /// `from` sends `bytes` and its FIN; `to` reads them to the end.
    async fn say(from: &mut TcpStream, to: &mut TcpStream, bytes: &[u8]) {
        from.write_all(bytes).await.expect("loopback I/O");
        from.shutdown().await.expect("loopback I/O");
        assert_eq!(read_all(to).await, bytes);
    }

    /// Relay one exchange in which `server_first` says which side sends
    /// its last byte and FIN first; answer what the counters say at the end.
    async fn exchange(server_first: bool) -> Counters {
        let (mut client, proxy_client) = pair().await;
        let (mut server, proxy_server) = pair().await;
        let counters = Counters::default();
        let apps = async {
            if server_first {
                say(&mut server, &mut client, b"banner").await;
                say(&mut client, &mut server, b"bye").await;
            } else {
                say(&mut client, &mut server, b"request").await;
                say(&mut server, &mut client, b"reply").await;
            }
        };
        // The relay leaves the last FIN to the close, as `proxy` does.
        let relayed = async {
            let end = relay(&proxy_client, &proxy_server, Duration::from_secs(10), &counters).await;
            drop((proxy_client, proxy_server));
            end
        };
        let ((), end) = evloop::timeout(Duration::from_secs(10), async { tokio::join!(apps, relayed) })
            .await
            .expect("the exchange ends");
        assert!(matches!(end, End::Closed), "ended with {end}");
        counters
    }

    #[test]
    fn the_server_fin_is_left_for_the_close_when_the_client_ended_last() {
        let counters = run(exchange(true));
        assert!(counters.server_fin_left());
    }

    #[test]
    fn nothing_is_left_for_the_close_to_the_server_when_it_ended_last() {
        // The client's FIN is the one the close would send: the proxy must
        // not hold it back.
        let counters = run(exchange(false));
        assert!(!counters.server_fin_left());
    }
}
