//! The `epoll` set of one loop and the readiness of its sockets.

use rustix::buffer::spare_capacity;
use rustix::event::epoll::{self, CreateFlags, Event, EventData, EventFlags};
use slab::Slab;
use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// The `epoll` data of the loop's `eventfd`.
const WAKE_DATA: u64 = u64::MAX;
/// Events taken per `epoll_wait`.
const EVENTS: usize = 256;

/// Readiness bits of a socket.
pub(crate) const READ: u8 = 1;
pub(crate) const WRITE: u8 = 2;
pub(crate) const READ_CLOSED: u8 = 4;
pub(crate) const WRITE_CLOSED: u8 = 8;
pub(crate) const ERROR: u8 = 16;

/// The bits that end a wait for `mask`: a reader also wakes for the
/// peer's FIN, both for errors.
fn wanted(mask: u8) -> u8 {
    mask | ERROR | if mask & READ != 0 { READ_CLOSED } else { 0 } | if mask & WRITE != 0 { WRITE_CLOSED } else { 0 }
}

struct Slot {
    generation: u32,
    ready: u8,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

pub(crate) struct Reactor {
    epoll: OwnedFd,
    slots: RefCell<Slab<Slot>>,
    generation: Cell<u32>,
    events: RefCell<Vec<Event>>,
}

/// A socket's place in the reactor.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Token {
    key: usize,
    generation: u32,
}

impl Reactor {
    pub fn new(wake_fd: &OwnedFd) -> io::Result<Self> {
        let epoll = epoll::create(CreateFlags::CLOEXEC)?;
        epoll::add(&epoll, wake_fd, EventData::new_u64(WAKE_DATA), EventFlags::IN | EventFlags::ET)?;
        Ok(Self {
            epoll,
            slots: RefCell::new(Slab::new()),
            generation: Cell::new(0),
            events: RefCell::new(Vec::with_capacity(EVENTS)),
        })
    }

    /// Add a socket, edge-triggered for reading and writing. It counts as
    /// ready for nothing until the loop's next look at its sockets: adding a
    /// socket that has bytes waiting, or room to send, raises that event at
    /// once. (Counting a fresh socket as readable costs a read that finds
    /// nothing on every backend connection, whose reply comes later.)
    pub fn register(&self, fd: BorrowedFd<'_>) -> io::Result<Token> {
        self.add(fd, EventFlags::IN | EventFlags::OUT | EventFlags::RDHUP | EventFlags::ET)
    }

    /// Add a listening socket, edge-triggered for reading, with
    /// `EPOLLEXCLUSIVE`: when the loops of several workers watch one shared
    /// socket, a new connection wakes one loop that is waiting instead of
    /// all of them (the event still reaches the ones that are busy, which
    /// find the queue empty or take what the first one left).
    pub fn register_listener(&self, fd: BorrowedFd<'_>) -> io::Result<Token> {
        self.add(fd, EventFlags::IN | EventFlags::ET | EventFlags::EXCLUSIVE)
    }

    fn add(&self, fd: BorrowedFd<'_>, flags: EventFlags) -> io::Result<Token> {
        let generation = self.generation.get().wrapping_add(1);
        self.generation.set(generation);
        let key = self.slots.borrow_mut().insert(Slot { generation, ready: 0, reader: None, writer: None });
        let data = EventData::new_u64(key as u64 | (u64::from(generation) << 32));
        if let Err(err) = epoll::add(&self.epoll, fd, data, flags) {
            self.slots.borrow_mut().remove(key);
            return Err(err.into());
        }
        Ok(Token { key, generation })
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.slots.borrow().len()
    }

    /// Forget a socket that is about to be closed. No `epoll_ctl`: closing
    /// the last descriptor of a socket takes it out of every `epoll` set.
    pub fn forget(&self, token: Token) {
        let mut slots = self.slots.borrow_mut();
        if slots.get(token.key).is_some_and(|s| s.generation == token.generation) {
            slots.remove(token.key);
        }
    }

    /// Whether the socket may be ready for `mask` (see [`Self::poll_ready`]).
    pub fn is_ready(&self, token: Token, mask: u8) -> bool {
        let slots = self.slots.borrow();
        let Some(slot) = slots.get(token.key).filter(|s| s.generation == token.generation) else { return true };
        slot.ready & wanted(mask) != 0
    }

    /// The readiness among `mask` (closed and error bits always count), or
    /// `Pending` with the task's waker kept as the socket's reader (when
    /// `mask` has [`READ`]) or writer.
    pub fn poll_ready(&self, token: Token, mask: u8, cx: &mut Context<'_>) -> Poll<u8> {
        let mut slots = self.slots.borrow_mut();
        let Some(slot) = slots.get_mut(token.key).filter(|s| s.generation == token.generation) else {
            return Poll::Ready(ERROR | READ_CLOSED | WRITE_CLOSED);
        };
        if slot.ready & wanted(mask) != 0 {
            return Poll::Ready(slot.ready);
        }
        let keep = |held: &mut Option<Waker>| match held {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => *held = Some(cx.waker().clone()),
        };
        if mask & READ != 0 {
            keep(&mut slot.reader);
        }
        if mask & WRITE != 0 {
            keep(&mut slot.writer);
        }
        Poll::Pending
    }

    /// The socket said "would block" for `bits` ([`READ`] and/or
    /// [`WRITE`]): wait for its next event. Closed and error bits stay.
    pub fn clear(&self, token: Token, bits: u8) {
        if let Some(slot) = self.slots.borrow_mut().get_mut(token.key).filter(|s| s.generation == token.generation) {
            slot.ready &= !(bits & (READ | WRITE));
        }
    }

    /// Wait up to `wait` (`None`: no limit) for events and wake the tasks
    /// they concern. `Ok(true)` when the loop's `eventfd` was written.
    pub fn poll(&self, wait: Option<Duration>) -> io::Result<bool> {
        let timeout = wait.map(|d| rustix::event::Timespec {
            tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: i64::from(d.subsec_nanos()),
        });
        let mut events = self.events.borrow_mut();
        events.clear();
        match epoll::wait(&self.epoll, spare_capacity(&mut *events), timeout.as_ref()) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => return Ok(false),
            Err(err) => return Err(err.into()),
        }
        let mut mail = false;
        for event in events.iter() {
            let (flags, data) = (event.flags, event.data.u64());
            if data == WAKE_DATA {
                mail = true;
                continue;
            }
            let token = Token { key: (data & u64::from(u32::MAX)) as usize, generation: (data >> 32) as u32 };
            let mut bits = 0;
            if flags.intersects(EventFlags::IN | EventFlags::PRI) {
                bits |= READ;
            }
            if flags.contains(EventFlags::OUT) {
                bits |= WRITE;
            }
            if flags.contains(EventFlags::RDHUP) {
                bits |= READ | READ_CLOSED;
            }
            if flags.contains(EventFlags::HUP) {
                bits |= READ | WRITE | READ_CLOSED | WRITE_CLOSED;
            }
            if flags.contains(EventFlags::ERR) {
                bits |= READ | WRITE | ERROR;
            }
            let (reader, writer) = {
                let mut slots = self.slots.borrow_mut();
                let Some(slot) = slots.get_mut(token.key).filter(|s| s.generation == token.generation) else {
                    continue;
                };
                slot.ready |= bits;
                let reader = if bits & (READ | ERROR) != 0 { slot.reader.take() } else { None };
                let writer = if bits & (WRITE | WRITE_CLOSED | ERROR) != 0 { slot.writer.take() } else { None };
                (reader, writer)
            };
            if let Some(w) = reader {
                w.wake();
            }
            if let Some(w) = writer {
                w.wake();
            }
        }
        Ok(mail)
    }

    /// Reset the loop's `eventfd` after it woke the loop.
    pub fn drain_wake_fd(&self, wake_fd: &OwnedFd) {
        let mut count = [0u8; 8];
        let _ = rustix::io::read(wake_fd.as_fd(), &mut count);
    }
}
