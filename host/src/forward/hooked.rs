//! Forwarding through a route's hooks.
//!
//! Each chunk read from one side passes through the route's hooks in order
//! (what one forwards is what the next one gets) before it is written to
//! the other side; when a side has finished sending, each hook's `on-end`
//! runs (its output passing through the hooks after it) and what comes out
//! is written before the half-close is passed on. A side is not read while
//! what its last chunk became has not been written (backpressure end to
//! end), and what one hook call may hand back is bounded
//! ([`crate::plugin::hook::COPY_LIMIT`]), so a hook that multiplies its
//! input grows a connection's memory by a bounded amount.
//!
//! When the first hook of a direction is called directly (its core module:
//! [`crate::plugin::direct::hook`]), a chunk is read from the socket
//! straight into its memory, and what the last hook forwards is written
//! from where it lies; only what the socket does not take at once is
//! copied out to wait.
//!
//! A hook that answers (`respond`) has its bytes written back to the side
//! the chunk came from, and the connection is closed; so is one that says
//! `close`, or whose call fails. Only the connection the hook was on ends:
//! every connection has its own hook instances ([`crate::plugin::hook`]).

use super::idle::Idle;
use super::{Counters, Side, write_all};
use crate::config::OnHookFailure;
use crate::evloop::Interest;
use crate::evloop::TcpStream;
use crate::plugin::hook::{Action, Direction, HookPlugin, Session};
use crate::plugin::{Detection, Failure, detector::Peer};
use socket2::SockRef;
use std::borrow::Cow;
use std::cell::RefCell;
use std::io::{self, ErrorKind};
use std::net::Shutdown;
use std::sync::Arc;
use std::time::Duration;

/// Most bytes read from a side as one chunk. Under bulk traffic reads fill
/// it, so that one read, one hook call and one write move this much: with a
/// quarter of it, bulk through a hook fell behind a plain relay (the
/// "With hooks" of docs/performance.md).
pub const CHUNK: usize = 256 * 1024;

/// A chunk at least this large makes the next one be read straight into
/// the first hook's memory, when it is called directly.
const IN_PLACE_FROM: usize = 16 * 1024;

thread_local! {
    /// Each worker thread's buffer for the chunk being read.
    static CHUNK_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; CHUNK]);
}

/// The hooks of one route, in order, and what a connection does when one
/// cannot be had.
#[derive(Debug)]
pub struct RouteHooks {
    pub hooks: Vec<Arc<HookPlugin>>,
    /// Hooks of the route still compiling: none can start yet.
    pub compiling: Vec<String>,
    pub on_failure: OnHookFailure,
}

/// Why a hook ended a connection.
#[derive(Debug)]
pub enum Stop {
    /// It answered `data` to the side the chunk came from.
    Respond { hook: String, data: Vec<u8>, reason: String },
    /// It closed the connection.
    Close { hook: String, reason: String },
    /// Its call failed.
    Failed { hook: String, failure: Failure },
}

impl Stop {
    /// What the access log says.
    pub fn text(&self) -> String {
        match self {
            Stop::Respond { hook, reason, .. } | Stop::Close { hook, reason } => format!("hook {hook}: {reason}"),
            Stop::Failed { hook, failure } => {
                format!("hook {hook} failed ({}): {}", failure.cause.label(), failure.detail)
            }
        }
    }
}

/// One connection's sessions of its route's hooks.
pub struct HookChain {
    sessions: Vec<Link>,
}

/// What [`HookChain::data_read`] read (how many bytes) and what the last
/// hook forwarded.
pub type ChainRead<'a> = (usize, Result<Cow<'a, [u8]>, Stop>);

/// One hook's session in a chain, and the directions it has passed.
struct Link {
    session: Session,
    /// By [`Direction::slot`]: the hook said `pass` for that direction, or
    /// is not called for it.
    passed: [bool; 2],
    /// The hook's name, for a [`Stop`].
    name: Arc<str>,
}

impl HookChain {
    /// Open a session of every hook of `route` for a new connection. A hook
    /// that is disabled, or whose session cannot be opened, closes the
    /// connection (the `Err` says why), unless the route bypasses it.
    pub fn open(
        hooks: &RouteHooks,
        peer: &Peer,
        detection: Option<&Detection>,
        route: &str,
    ) -> Result<HookChain, String> {
        let none = Detection::default();
        let detection = detection.unwrap_or(&none);
        if let (Some(name), OnHookFailure::Close) = (hooks.compiling.first(), hooks.on_failure) {
            return Err(format!("hook {name} is still compiling"));
        }
        let mut sessions = Vec::with_capacity(hooks.hooks.len());
        for hook in &hooks.hooks {
            let opened = if hook.is_disabled() {
                Err(format!("hook {} is disabled after repeated failures", hook.name()))
            } else {
                hook.open(peer, detection, route)
                    .map_err(|f| Stop::Failed { hook: hook.name().into(), failure: f }.text())
            };
            match (opened, hooks.on_failure) {
                (Ok(session), _) => {
                    // A direction the hook is not called for starts passed.
                    let passed = [Direction::ClientToServer, Direction::ServerToClient].map(|d| !hook.watches(d));
                    sessions.push(Link { name: session.shared_name(), session, passed });
                }
                (Err(why), OnHookFailure::Bypass) => {
                    tracing::debug!(hook = hook.name(), route, reason = &*why, "hook bypassed");
                }
                (Err(why), OnHookFailure::Close) => return Err(why),
            }
        }
        Ok(HookChain { sessions })
    }

    /// Whether every hook has passed `direction` (or there is none): its
    /// bytes may go through unchanged, without the chain.
    pub fn passed(&self, direction: Direction) -> bool {
        self.sessions.iter().all(|link| link.passed[direction.slot()])
    }

    /// Pass a chunk from one side through every hook that has not passed
    /// its direction; what the last one forwards, which may lie in its
    /// memory until the chain's next call.
    pub fn data<'a>(&'a mut self, direction: Direction, chunk: &'a [u8]) -> Result<Cow<'a, [u8]>, Stop> {
        let active = self.sessions.iter_mut().filter(|link| !link.passed[direction.slot()]);
        through(active, direction, Cow::Borrowed(chunk))
    }

    /// Whether the first hook a chunk travelling `direction` goes to can
    /// have it read straight into its memory ([`Self::data_read`]).
    pub fn reads_in_place(&self, direction: Direction) -> bool {
        let mut active = self.sessions.iter().filter(|link| !link.passed[direction.slot()]);
        active.next().is_some_and(|link| link.session.reads_in_place())
    }

    /// [`Self::data`] on a chunk of at most `len` bytes that `read` puts
    /// straight into the first hook's memory (see
    /// [`Session::on_data_read`]): how many bytes it read, and what the last
    /// hook forwards. `None` when the first hook does not read in place; the
    /// read's error, when it fails or reads nothing.
    pub fn data_read<'a>(
        &'a mut self,
        direction: Direction,
        len: usize,
        read: impl FnOnce(&mut [u8]) -> io::Result<usize>,
    ) -> Option<io::Result<ChainRead<'a>>> {
        let mut active = self.sessions.iter_mut().filter(|link| !link.passed[direction.slot()]);
        let first = active.next()?;
        let (n, answer) = match first.session.on_data_read(direction, len, read)? {
            Ok(read) => read,
            Err(err) => return Some(Err(err)),
        };
        let out = forwarded(&mut first.passed, &first.name, direction, answer)
            .and_then(|carry| through(active, direction, carry));
        Some(Ok((n, out)))
    }

    /// That side has finished sending: the last words of every hook that
    /// has not passed it, each passed through the hooks after it.
    pub fn end(&mut self, direction: Direction) -> Result<Vec<u8>, Stop> {
        let mut carry = Vec::new();
        for link in &mut self.sessions {
            if link.passed[direction.slot()] {
                continue;
            }
            let mut out = Vec::new();
            if !carry.is_empty() {
                let answer = link.session.on_data(direction, &carry);
                out = forwarded(&mut link.passed, &link.name, direction, answer)?;
            }
            if !link.passed[direction.slot()] {
                let answer = link.session.on_end(direction);
                out.extend(forwarded(&mut link.passed, &link.name, direction, answer)?);
            }
            carry = out;
        }
        Ok(carry)
    }
}

/// Pass `carry` through the hooks `links` in order; what the last one
/// forwards.
fn through<'a>(
    links: impl Iterator<Item = &'a mut Link>,
    direction: Direction,
    mut carry: Cow<'a, [u8]>,
) -> Result<Cow<'a, [u8]>, Stop> {
    for link in links {
        if carry.is_empty() {
            // Held back: the hooks after this one see nothing this time.
            break;
        }
        let answer = link.session.on_data_in_place(direction, &carry);
        carry = forwarded(&mut link.passed, &link.name, direction, answer)?;
    }
    Ok(carry)
}

/// The bytes a hook (`name`, which has passed the directions `passed`)
/// forwarded, or how it stopped the connection.
fn forwarded<B>(
    passed: &mut [bool; 2],
    name: &str,
    direction: Direction,
    answer: Result<Action<B>, Failure>,
) -> Result<B, Stop> {
    let hook = || name.to_string();
    match answer {
        Ok(Action::Forward(bytes)) => Ok(bytes),
        Ok(Action::Pass(bytes)) => {
            passed[direction.slot()] = true;
            Ok(bytes)
        }
        Ok(Action::Respond { data, reason }) => Err(Stop::Respond { hook: hook(), data, reason }),
        Ok(Action::Close(reason)) => Err(Stop::Close { hook: hook(), reason }),
        Err(failure) => Err(Stop::Failed { hook: hook(), failure }),
    }
}

/// How a hooked relay ended.
#[derive(Debug)]
pub enum End {
    /// Both sides closed.
    Closed,
    /// Nothing moved for the idle timeout.
    Idle,
    /// A read or write failed.
    Failed(Side, io::Error),
    /// A hook ended it.
    Hook(Stop),
}

impl End {
    /// What the access log says.
    pub fn into_text(self) -> Cow<'static, str> {
        match self {
            End::Closed => "closed".into(),
            End::Idle => "idle timeout".into(),
            End::Failed(side, err) => format!("{side} error: {err}").into(),
            End::Hook(stop) => stop.text().into(),
        }
    }
}

/// Why a direction stopped early.
enum Halt {
    Io(Side, io::Error),
    Hook(Stop),
}

/// Send a hook's answer back on `to` and say nothing more on it.
pub async fn respond(to: &TcpStream, data: &[u8]) {
    if write_all(to, data).await.is_ok() {
        let _ = SockRef::from(to).shutdown(Shutdown::Write);
    }
}

/// Relay between `client` and `server` through `chain` until both sides
/// have closed, a hook ends the connection, or it idles out.
pub async fn relay(
    client: &TcpStream,
    server: &TcpStream,
    idle: Duration,
    counters: &Counters,
    chain: HookChain,
) -> End {
    let idle = Idle::watch(idle);
    let chain = RefCell::new(chain);
    let (up, down) = super::directions(client, server, counters, &idle);
    let up = pump(up, Direction::ClientToServer, &chain);
    let down = pump(down, Direction::ServerToClient, &chain);
    let (up, down) = (std::pin::pin!(up), std::pin::pin!(down));
    let both = std::pin::pin!(async { tokio::try_join!(up, down) });
    tokio::select! {
        biased;
        result = both => match result {
            Ok(_) => End::Closed,
            Err(Halt::Io(side, err)) => End::Failed(side, err),
            Err(Halt::Hook(stop)) => End::Hook(stop),
        },
        () = idle.expired() => End::Idle,
    }
}

/// One direction: read a chunk, pass it through the hooks, write what comes
/// out, and only then read again; at the end, the hooks' last words and the
/// half-close. Once every hook has passed the direction, the rest is
/// relayed as an unhooked route's (copied, then spliced).
async fn pump(way: super::Direction<'_>, direction: Direction, chain: &RefCell<HookChain>) -> Result<(), Halt> {
    let (from, to) = (way.from, way.to);
    // The last chunk was large: the next is read in place if it can be.
    let mut large = false;
    loop {
        if chain.borrow().passed(direction) {
            return Box::pin(way.pump()).await.map_err(|(side, err)| Halt::Io(side, err));
        }
        let ready = from.ready(Interest::READABLE).await.map_err(|e| Halt::Io(way.from_side, e))?;
        // No await from the read to the hooks' answer: the chunk is never
        // part of the task's state, and the chain is never borrowed across
        // an await (the other direction uses it too).
        let read = CHUNK_BUF.with(|cell| {
            let mut chain = chain.borrow_mut();
            // Once chunks come large, the bytes waiting are read straight
            // into the first hook's memory when it can take them there
            // (asking how many there are costs a system call, which a small
            // chunk's copy does not repay); else, and when nothing is
            // waiting (the end, or a wake-up with nothing to read), into
            // the thread's buffer.
            let queued = match large && chain.reads_in_place(direction) {
                true => rustix::io::ioctl_fionread(from).map_or(0, |n| usize::try_from(n).unwrap_or(CHUNK)),
                false => 0,
            };
            let mut buf = cell.borrow_mut();
            let (out, last) = if queued > 0 {
                let len = queued.min(CHUNK);
                let Some(read) = chain.data_read(direction, len, |area| from.try_read(area)) else {
                    return Err(Halt::Io(way.from_side, io::Error::other("a hook lost its instance")));
                };
                let (n, out) = match read {
                    Ok(read) => read,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
                    Err(e) if e.kind() == ErrorKind::UnexpectedEof => (0, Ok(Cow::Borrowed(&[][..]))),
                    Err(e) => return Err(Halt::Io(way.from_side, e)),
                };
                way.record(n);
                large = n >= IN_PLACE_FROM;
                // As below: this read emptied the socket of a sender that
                // had finished.
                (out, n == 0 || (ready.is_read_closed() && !ready.is_error() && n == queued))
            } else {
                let len = buf.len().min(CHUNK);
                let chunk = &mut buf[..len];
                let n = match from.try_read(chunk) {
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
                    Err(e) => return Err(Halt::Io(way.from_side, e)),
                };
                // The sender had finished and this read emptied the socket:
                // its end comes next, and is handled with this chunk (see
                // `super::Direction::copy_pump`).
                let last = n == 0 || (ready.is_read_closed() && !ready.is_error() && n < len);
                large = n >= IN_PLACE_FROM;
                let out = if n == 0 {
                    Ok(Cow::Borrowed(&[][..]))
                } else {
                    way.record(n);
                    chain.data(direction, &chunk[..n])
                };
                (out, last)
            };
            let out = match out {
                Ok(out) if last => {
                    let mut out = out.into_owned();
                    chain.end(direction).map(|more| {
                        out.extend(more);
                        Cow::Owned(out)
                    })
                }
                out => out,
            };
            // What the socket takes now is written from where the hooks
            // left it (for a hook called directly, its memory); the rest is
            // copied out to wait for the socket. The last bytes wait
            // (`MSG_MORE`) for the half-close that follows at once, so that
            // they and the FIN go out together.
            let out = match out {
                Ok(out) if out.is_empty() => Ok((Vec::new(), false)),
                Ok(out) => {
                    let sent = match super::send(to, &out, last) {
                        Ok(n) => n,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => 0,
                        Err(e) => return Err(Halt::Io(way.to_side, e)),
                    };
                    Ok((out.get(sent..).unwrap_or_default().to_vec(), true))
                }
                Err(stop) => Err(stop),
            };
            Ok(Some((out, last)))
        })?;
        let Some((out, ended)) = read else { continue };
        let (rest, wrote) = match out {
            Ok(out) => out,
            Err(Stop::Respond { hook, data, reason }) => {
                respond(from, &data).await;
                return Err(Halt::Hook(Stop::Respond { hook, data: Vec::new(), reason }));
            }
            Err(stop) => return Err(Halt::Hook(stop)),
        };
        write_all(to, &rest).await.map_err(|e| Halt::Io(way.to_side, e))?;
        if wrote {
            way.idle.touch();
        }
        if ended {
            return way.half_close().map_err(|(side, err)| Halt::Io(side, err));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hook still compiling cannot start: the route's `on_hook_failure`
    /// decides, as for a disabled hook.
    #[test]
    fn a_compiling_hook_closes_or_is_bypassed_as_the_route_says() {
        let peer = Peer::new("192.0.2.1:5000", "192.0.2.2:443", "edge", false);
        let route = |on_failure| RouteHooks { hooks: Vec::new(), compiling: vec!["slow".into()], on_failure };
        let closed = HookChain::open(&route(OnHookFailure::Close), &peer, None, "web").err();
        assert_eq!(closed.as_deref(), Some("hook slow is still compiling"));
        let bypassed = HookChain::open(&route(OnHookFailure::Bypass), &peer, None, "web").expect("bypassed");
        assert!(bypassed.passed(Direction::ClientToServer) && bypassed.passed(Direction::ServerToClient));
    }
}
