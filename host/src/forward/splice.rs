//! Zero-copy forwarding on Linux: bytes move socket → pipe → socket with
//! `splice(2)` and never enter user space.
//!
//! A direction holds a pipe only while bytes are in flight: before it waits
//! for its socket it hands the (empty) pipe back to a small per-thread pool,
//! so an idle connection holds no pipe and no buffer, and a busy one reuses a
//! pipe without a system call to create it. When no pipe can be had (file
//! descriptors exhausted) the caller falls back to copying.
//!
//! The first [`BIG_PIPES`] pipes of the process are enlarged to [`PIPE_SIZE`]:
//! a 1 MiB pipe moves a bulk transfer in a quarter as many calls as the
//! default 64 KiB one, which on loopback took a single proxied connection
//! from 0.47× to 0.6× a direct one at less than two thirds of the CPU. Their
//! number is bounded because the kernel counts pipe pages per user
//! (`fs.pipe-user-pages-soft`, 64 MiB by default) and shrinks every new pipe
//! of a user past that limit; 16 MiB leaves room for everyone else.

use crate::evloop::{Interest, TcpStream};
use rustix::pipe::{PipeFlags, SpliceFlags, pipe_with, splice};
use std::cell::RefCell;
use std::io::{self, ErrorKind};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Empty pipes kept per worker thread.
const POOL_MAX: usize = 32;
/// Capacity asked for the first [`BIG_PIPES`] pipes (the kernel's default
/// is 64 KiB).
const PIPE_SIZE: usize = 1 << 20;
/// Enlarged pipes open at once in the process, pooled or in use.
const BIG_PIPES: usize = 16;
/// Most bytes moved by one `splice` call.
const CHUNK: usize = 1 << 20;

/// Enlarged pipes open now.
static BIG_OPEN: AtomicUsize = AtomicUsize::new(0);

/// The two ends of a pipe; an enlarged one gives its place back when closed.
struct Ends {
    read: OwnedFd,
    write: OwnedFd,
    big: bool,
}

impl Ends {
    fn new() -> io::Result<Ends> {
        let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        let big =
            BIG_OPEN.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < BIG_PIPES).then_some(n + 1)).is_ok()
                && match rustix::pipe::fcntl_setpipe_size(&write, PIPE_SIZE) {
                    Ok(_) => true,
                    Err(_) => {
                        BIG_OPEN.fetch_sub(1, Ordering::Relaxed);
                        false
                    }
                };
        Ok(Ends { read, write, big })
    }
}

impl Drop for Ends {
    fn drop(&mut self) {
        if self.big {
            BIG_OPEN.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A pipe and how many bytes sit in it.
pub struct Pipe {
    ends: Ends,
    /// Bytes spliced in and not yet spliced out.
    pub pending: usize,
}

thread_local! {
    static POOL: RefCell<Vec<Ends>> = const { RefCell::new(Vec::new()) };
}

impl Pipe {
    /// An empty pipe from the pool, or a new one.
    pub fn take() -> io::Result<Pipe> {
        let ends = match POOL.with(|p| p.borrow_mut().pop()) {
            Some(ends) => ends,
            None => Ends::new()?,
        };
        Ok(Pipe { ends, pending: 0 })
    }

    /// Hand an empty pipe back to the pool (a pipe with bytes in it is closed).
    pub fn give_back(self) {
        if self.pending != 0 {
            return;
        }
        POOL.with(|p| {
            let mut pool = p.borrow_mut();
            if pool.len() < POOL_MAX {
                pool.push(self.ends);
            }
        });
    }

    /// Move what `from` has into the pipe. `Ok(0)` is end of stream;
    /// `WouldBlock` means `from` has nothing now.
    pub fn fill(&mut self, from: &TcpStream) -> io::Result<usize> {
        let n = from.try_io(Interest::READABLE, || {
            splice(from, None, &self.ends.write, None, CHUNK, SpliceFlags::MOVE | SpliceFlags::NONBLOCK)
                .map_err(Into::into)
        })?;
        self.pending += n;
        Ok(n)
    }

    /// Move bytes from the pipe to `to`, as many as it takes now.
    pub fn drain(&mut self, to: &TcpStream) -> io::Result<usize> {
        let n = to.try_io(Interest::WRITABLE, || {
            splice(&self.ends.read, None, to, None, self.pending, SpliceFlags::MOVE | SpliceFlags::NONBLOCK)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// At most `BIG_PIPES` pipes are enlarged at once, each to `PIPE_SIZE`;
    /// closing them makes room for new ones.
    #[test]
    fn enlarged_pipes_are_bounded() {
        let pipes: Vec<Ends> = (0..BIG_PIPES + 4).map(|_| Ends::new().expect("pipe")).collect();
        let big: Vec<&Ends> = pipes.iter().filter(|e| e.big).collect();
        assert!(!big.is_empty() && big.len() <= BIG_PIPES, "{} enlarged", big.len());
        for ends in &big {
            assert_eq!(rustix::pipe::fcntl_getpipe_size(&ends.write).expect("size"), PIPE_SIZE);
        }
        let small = pipes.iter().find(|e| !e.big).expect("a pipe past the budget");
        assert!(rustix::pipe::fcntl_getpipe_size(&small.write).expect("size") < PIPE_SIZE);
        drop(pipes);
        assert!(Ends::new().expect("pipe").big, "closing enlarged pipes frees their places");
    }
}
