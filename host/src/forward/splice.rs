//! Zero-copy forwarding on Linux: bytes move socket → pipe → socket with
//! `splice(2)` and never enter user space.
//!
//! A direction holds a pipe only while bytes are in flight: before it waits
//! for its socket it hands the (empty) pipe back to a small per-thread pool,
//! so an idle connection holds no pipe and no buffer, and a busy one reuses a
//! pipe without a system call to create it. When no pipe can be had (file
//! descriptors exhausted) the caller falls back to copying.

use rustix::pipe::{PipeFlags, SpliceFlags, pipe_with, splice};
use std::cell::RefCell;
use std::io::{self, ErrorKind};
use std::os::fd::OwnedFd;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Empty pipes kept per worker thread.
const POOL_MAX: usize = 32;
/// Most bytes moved by one `splice` call.
const CHUNK: usize = 1 << 20;

/// A pipe and how many bytes sit in it.
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Bytes spliced in and not yet spliced out.
    pub pending: usize,
}

thread_local! {
    static POOL: RefCell<Vec<(OwnedFd, OwnedFd)>> = const { RefCell::new(Vec::new()) };
}

impl Pipe {
    /// An empty pipe from the pool, or a new one.
    pub fn take() -> io::Result<Pipe> {
        if let Some((read, write)) = POOL.with(|p| p.borrow_mut().pop()) {
            return Ok(Pipe { read, write, pending: 0 });
        }
        let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        Ok(Pipe { read, write, pending: 0 })
    }

    /// Hand an empty pipe back to the pool (a pipe with bytes in it is closed).
    pub fn give_back(self) {
        if self.pending != 0 {
            return;
        }
        POOL.with(|p| {
            let mut pool = p.borrow_mut();
            if pool.len() < POOL_MAX {
                pool.push((self.read, self.write));
            }
        });
    }

    /// Move what `from` has into the pipe. `Ok(0)` is end of stream;
    /// `WouldBlock` means `from` has nothing now.
    pub fn fill(&mut self, from: &TcpStream) -> io::Result<usize> {
        let n = from.try_io(Interest::READABLE, || {
            splice(from, None, &self.write, None, CHUNK, SpliceFlags::MOVE | SpliceFlags::NONBLOCK).map_err(Into::into)
        })?;
        self.pending += n;
        Ok(n)
    }

    /// Move bytes from the pipe to `to`, as many as it takes now.
    pub fn drain(&mut self, to: &TcpStream) -> io::Result<usize> {
        let n = to.try_io(Interest::WRITABLE, || {
            splice(&self.read, None, to, None, self.pending, SpliceFlags::MOVE | SpliceFlags::NONBLOCK)
                .map_err(Into::into)
        })?;
        self.pending -= n;
        Ok(n)
    }
}

/// Whether an error only means "not now".
pub fn would_block(err: &io::Error) -> bool {
    err.kind() == ErrorKind::WouldBlock
}
