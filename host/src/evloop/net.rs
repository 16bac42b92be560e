//! TCP sockets on a loop: the readiness calls of tokio's sockets, with the
//! same names, over the loop's reactor.

use super::Core;
use super::reactor::{ERROR, READ, READ_CLOSED, Token, WRITE, WRITE_CLOSED};
use rustix::net::{RecvFlags, SendFlags};
use std::io::{self, ErrorKind};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What a task waits for. An error on the socket ends a wait for either.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interest(u8);

impl Interest {
    pub const READABLE: Interest = Interest(READ);
    pub const WRITABLE: Interest = Interest(WRITE);
}

/// A socket's readiness when a wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ready(u8);

impl Ready {
    pub fn is_readable(self) -> bool {
        self.0 & (READ | READ_CLOSED) != 0
    }
    pub fn is_writable(self) -> bool {
        self.0 & (WRITE | WRITE_CLOSED) != 0
    }
    /// The peer has sent its FIN (or the connection is gone).
    pub fn is_read_closed(self) -> bool {
        self.0 & READ_CLOSED != 0
    }
    pub fn is_write_closed(self) -> bool {
        self.0 & WRITE_CLOSED != 0
    }
    pub fn is_error(self) -> bool {
        self.0 & ERROR != 0
    }
}

/// A descriptor in the loop's reactor; forgotten there when dropped,
/// before the descriptor itself closes.
struct Registered {
    core: Rc<Core>,
    token: Token,
}

impl Registered {
    fn new(fd: BorrowedFd<'_>) -> io::Result<Self> {
        let core = super::core();
        let token = core.reactor.register(fd)?;
        Ok(Self { core, token })
    }

    fn listener(fd: BorrowedFd<'_>) -> io::Result<Self> {
        let core = super::core();
        let token = core.reactor.register_listener(fd)?;
        Ok(Self { core, token })
    }

    fn poll_ready(&self, interest: Interest, cx: &mut Context<'_>) -> Poll<Ready> {
        self.core.reactor.poll_ready(self.token, interest.0, cx).map(Ready)
    }

    /// Run `f` if the socket may be ready for `interest`; a "would block"
    /// from it makes the loop wait for the socket's next event.
    fn try_io<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        if !self.core.reactor.is_ready(self.token, interest.0) {
            return Err(ErrorKind::WouldBlock.into());
        }
        let result = f();
        if matches!(&result, Err(e) if e.kind() == ErrorKind::WouldBlock) {
            self.core.reactor.clear(self.token, interest.0);
        }
        result
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.core.reactor.forget(self.token);
    }
}

/// A connected TCP socket on a loop.
pub struct TcpStream {
    // Declared first: forgotten by the reactor before the socket closes.
    reg: Registered,
    std: std::net::TcpStream,
}

impl TcpStream {
    /// Put a non-blocking socket on this thread's loop.
    pub fn from_std(std: std::net::TcpStream) -> io::Result<Self> {
        Ok(Self { reg: Registered::new(std.as_fd())?, std })
    }

    pub fn poll_ready(&self, interest: Interest, cx: &mut Context<'_>) -> Poll<io::Result<Ready>> {
        self.reg.poll_ready(interest, cx).map(Ok)
    }

    pub async fn ready(&self, interest: Interest) -> io::Result<Ready> {
        std::future::poll_fn(|cx| self.poll_ready(interest, cx)).await
    }

    pub async fn readable(&self) -> io::Result<()> {
        self.ready(Interest::READABLE).await.map(drop)
    }

    pub async fn writable(&self) -> io::Result<()> {
        self.ready(Interest::WRITABLE).await.map(drop)
    }

    pub fn try_io<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        self.reg.try_io(interest, f)
    }

    /// The socket has nothing to read until its next event (a read that
    /// took less than it asked for emptied it): the next wait for
    /// readability waits, instead of trying a read that would block.
    pub fn clear_readable(&self) {
        self.reg.core.reactor.clear(self.reg.token, READ);
    }

    /// Read what the socket has. `recv` is made directly (rustix), not
    /// through libc, whose wrapper marks every call a cancellation point:
    /// work a proxy that never cancels threads pays on each read and write.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.reg.try_io(Interest::READABLE, || Ok(rustix::net::recv(&self.std, buf, RecvFlags::empty())?.0))
    }

    /// Write what the socket takes (`send` without `SIGPIPE`, as std's write does).
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        self.reg.try_io(Interest::WRITABLE, || Ok(rustix::net::send(&self.std, buf, SendFlags::NOSIGNAL)?))
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.std.local_addr()
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.std.peer_addr()
    }

    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.std.set_nodelay(on)
    }

    /// The socket's pending error (`SO_ERROR`), if any.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.std.take_error()
    }
}

impl AsFd for TcpStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.std.as_fd()
    }
}

impl AsyncRead for TcpStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.reg.poll_ready(Interest::READABLE, cx));
            match self.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.reg.poll_ready(Interest::WRITABLE, cx));
            match self.try_write(buf) {
                Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.std.shutdown(Shutdown::Write))
    }
}

/// A listening TCP socket on a loop.
pub struct TcpListener {
    reg: Registered,
    std: std::net::TcpListener,
}

impl TcpListener {
    /// Put a non-blocking listening socket on this thread's loop.
    pub fn from_std(std: std::net::TcpListener) -> io::Result<Self> {
        Ok(Self { reg: Registered::listener(std.as_fd())?, std })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.std.local_addr()
    }

    /// Accept a connection: its socket (non-blocking, on this loop) and the
    /// client's address.
    pub fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(TcpStream, SocketAddr)>> {
        loop {
            ready!(self.reg.poll_ready(Interest::READABLE, cx));
            let flags = rustix::net::SocketFlags::NONBLOCK | rustix::net::SocketFlags::CLOEXEC;
            match self
                .reg
                .try_io(Interest::READABLE, || rustix::net::acceptfrom_with(&self.std, flags).map_err(io::Error::from))
            {
                Ok((fd, addr)) => {
                    let std = std::net::TcpStream::from(fd);
                    let client = match addr.and_then(|a| SocketAddr::try_from(a).ok()) {
                        Some(client) => client,
                        None => match std.peer_addr() {
                            Ok(client) => client,
                            Err(e) => return Poll::Ready(Err(e)),
                        },
                    };
                    return Poll::Ready(TcpStream::from_std(std).map(|s| (s, client)));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        std::future::poll_fn(|cx| self.poll_accept(cx)).await
    }
}
