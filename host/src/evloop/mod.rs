//! refractium's own event loop, for the threads that serve connections.
//!
//! One loop per thread: a run queue of tasks, an `epoll` instance that every
//! socket of the thread is registered with once (edge-triggered, for reading
//! and writing), and the thread's timers. It does what the per-connection
//! path needs and nothing more, and it is cheaper there than tokio's
//! current-thread runtime:
//!
//! - a socket leaves the `epoll` set when it is closed (the kernel removes
//!   it with the last reference to the socket), not with an `epoll_ctl`
//!   call first;
//! - a task's waker is one shared allocation; waking it on its own thread
//!   pushes its key on a queue, with no lock and no atomic read-modify-write
//!   besides the "already queued" flag;
//! - the clock is read only when a timer is pending.
//!
//! A minimal proxy (accept, read, connect, relay, close), written once on
//! tokio and once on a plain `epoll` loop, made 4,305 and 4,753
//! connections/s at concurrency 1 in alternating rounds on the benchmark
//! machine, with 13.6 and 2 µs of user and 125 and 108 µs of system CPU per
//! connection.
//!
//! Tasks are not `Send`: they live and die on the thread that spawned them.
//! Other threads reach a loop through its [`Handle`] (spawn, and wakers,
//! which work from anywhere): they leave a message in its inbox and write
//! its `eventfd`, which is in the same `epoll` set.
//!
//! A socket has one reader and one writer: a second task waiting for the
//! same readiness of the same socket replaces the first one's waker.

mod net;
mod reactor;
mod time;

pub use net::{Interest, Ready, TcpListener, TcpStream};
pub use time::{Elapsed, Sleep, sleep, sleep_until, timeout, timeout_at};

use reactor::Reactor;
use slab::Slab;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

type LocalFuture = Pin<Box<dyn Future<Output = ()>>>;
type RemoteSpawn = Box<dyn FnOnce() -> LocalFuture + Send>;

/// Task polls between two looks at the sockets while tasks stay ready.
const BUDGET: usize = 128;

thread_local! {
    /// The loop running on this thread, if any.
    static CURRENT: RefCell<Option<Rc<Core>>> = const { RefCell::new(None) };
    /// Tasks ready to run on this thread: (slab key, generation).
    static READY: RefCell<VecDeque<(usize, u32)>> = const { RefCell::new(VecDeque::new()) };
    /// The address of the running loop's [`Shared`], to tell local wakes
    /// from remote ones.
    static HERE: Cell<usize> = const { Cell::new(0) };
    /// Set while a task that panicked is being dropped.
    static DROPPING_PANICKED: Cell<bool> = const { Cell::new(false) };
}

/// Whether the caller runs because a task panicked: the panic unwinds, or
/// the loop drops the task that panicked. What a task holds can tell a
/// crash from an orderly end (the access log says `internal error`).
pub fn unwinding() -> bool {
    std::thread::panicking() || DROPPING_PANICKED.with(Cell::get)
}

/// What other threads may touch.
struct Shared {
    inbox: Mutex<Vec<Mail>>,
    /// Written to wake the loop; registered in its `epoll` set.
    wake_fd: OwnedFd,
}

enum Mail {
    Wake(usize, u32),
    Spawn(RemoteSpawn),
}

impl Shared {
    fn post(&self, mail: Mail) {
        if let Ok(mut inbox) = self.inbox.lock() {
            inbox.push(mail);
        }
        self.kick();
    }

    /// Wake the loop from another thread.
    fn kick(&self) {
        // An eventfd write fails only when the counter would overflow, and
        // then the loop is awake anyway.
        let _ = rustix::io::write(&self.wake_fd, &1u64.to_ne_bytes());
    }

    fn is_here(self: &Arc<Self>) -> bool {
        HERE.with(Cell::get) == Arc::as_ptr(self) as usize
    }
}

/// The waker of one task.
struct TaskWaker {
    key: usize,
    generation: u32,
    /// Set while the task is in a run queue, so it is queued once.
    queued: AtomicBool,
    shared: Arc<Shared>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        if self.shared.is_here() {
            READY.with(|r| r.borrow_mut().push_back((self.key, self.generation)));
        } else {
            self.shared.post(Mail::Wake(self.key, self.generation));
        }
    }
}

struct Task {
    /// `None` while it is being polled.
    future: Option<LocalFuture>,
    waker: Waker,
    cell: Arc<TaskWaker>,
}

/// The state of one loop, shared by its thread's sockets and timers.
pub(crate) struct Core {
    shared: Arc<Shared>,
    tasks: RefCell<Slab<Task>>,
    generation: Cell<u32>,
    pub(crate) reactor: Reactor,
    pub(crate) timers: time::Timers,
    /// Wakers of tasks waiting for the next look at the sockets.
    deferred: RefCell<Vec<Waker>>,
    /// Yield the core before sleeping (see [`Builder::yield_before_sleep`]).
    yield_before_sleep: bool,
}

/// The running loop of this thread. Panics outside one: sockets and timers
/// of this module are made on a loop's thread.
pub(crate) fn core() -> Rc<Core> {
    try_core().expect("an evloop socket or timer used outside a running evloop")
}

/// Whether this thread is running a loop.
pub fn in_loop() -> bool {
    CURRENT.with(|c| c.borrow().is_some())
}

pub(crate) fn try_core() -> Option<Rc<Core>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Run `future` on this thread's loop, beside the task that calls this.
///
/// # Panics
/// Outside a running loop.
pub fn spawn(future: impl Future<Output = ()> + 'static) {
    core().spawn(Box::pin(future));
}

/// Let every task that is ready run, and the loop look at its sockets once,
/// before the caller goes on.
pub async fn yield_to_io() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        match try_core() {
            Some(core) => core.deferred.borrow_mut().push(cx.waker().clone()),
            None => cx.waker().wake_by_ref(),
        }
        Poll::Pending
    })
    .await;
}

impl Core {
    #[cfg(test)]
    fn reactor_is_empty_but_for(&self, sockets: usize) -> bool {
        self.reactor.len() == sockets
    }

    fn spawn(&self, future: LocalFuture) {
        let generation = self.generation.get().wrapping_add(1);
        self.generation.set(generation);
        let mut tasks = self.tasks.borrow_mut();
        let entry = tasks.vacant_entry();
        let key = entry.key();
        let cell = Arc::new(TaskWaker { key, generation, queued: AtomicBool::new(true), shared: self.shared.clone() });
        entry.insert(Task { future: Some(future), waker: Waker::from(cell.clone()), cell });
        READY.with(|r| r.borrow_mut().push_back((key, generation)));
    }

    fn poll_task(&self, key: usize, generation: u32) {
        let (mut future, waker) = {
            let mut tasks = self.tasks.borrow_mut();
            let Some(task) = tasks.get_mut(key) else { return };
            if task.cell.generation != generation {
                return;
            }
            let Some(future) = task.future.take() else { return };
            task.cell.queued.store(false, Ordering::Release);
            (future, task.waker.clone())
        };
        // A task that panics is dropped, as tokio drops it, and the loop
        // goes on serving the thread's other connections. The panic itself
        // was logged by the process's panic hook (`crate::cli`).
        let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            future.as_mut().poll(&mut Context::from_waker(&waker)).is_ready()
        }));
        if let Ok(done) = polled
            && !done
        {
            if let Some(task) = self.tasks.borrow_mut().get_mut(key) {
                task.future = Some(future);
            }
            return;
        }
        let panicked = polled.is_err();
        let task = self.tasks.borrow_mut().try_remove(key);
        // Dropped outside the borrow: a task's end may end others'. What a
        // task that panicked held is released here, and can tell (see
        // [`unwinding`]).
        DROPPING_PANICKED.with(|p| p.set(panicked));
        let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop((task, future))));
        DROPPING_PANICKED.with(|p| p.set(false));
        if dropped.is_err() {
            tracing::error!("a task's state panicked while it was dropped");
        }
    }

    fn read_mail(&self) {
        let mail = match self.shared.inbox.lock() {
            Ok(mut inbox) if !inbox.is_empty() => std::mem::take(&mut *inbox),
            _ => return,
        };
        for m in mail {
            match m {
                Mail::Wake(key, generation) => READY.with(|r| r.borrow_mut().push_back((key, generation))),
                Mail::Spawn(make) => self.spawn(make()),
            }
        }
    }

    /// Run the ready tasks (up to [`BUDGET`]), then look at the sockets:
    /// without waiting when work is left, else until an event or the next
    /// timer.
    fn turn(&self, main_woken: &AtomicBool) {
        for _ in 0..BUDGET {
            let Some((key, generation)) = READY.with(|r| r.borrow_mut().pop_front()) else { break };
            self.poll_task(key, generation);
            if main_woken.load(Ordering::Acquire) {
                break;
            }
        }
        let busy = main_woken.load(Ordering::Acquire)
            || READY.with(|r| !r.borrow().is_empty())
            || !self.deferred.borrow().is_empty();
        let wait = if busy { Some(Duration::ZERO) } else { self.timers.until_next() };
        if wait != Some(Duration::ZERO) && self.yield_before_sleep {
            std::thread::yield_now();
        }
        match self.reactor.poll(wait) {
            Ok(true) => {
                self.reactor.drain_wake_fd(&self.shared.wake_fd);
                self.read_mail();
            }
            Ok(false) => {}
            Err(err) => tracing::error!(error = %err, "epoll_wait failed"),
        }
        self.timers.fire();
        let deferred = std::mem::take(&mut *self.deferred.borrow_mut());
        for waker in deferred {
            waker.wake();
        }
    }
}

/// Settings of a loop.
#[derive(Debug, Clone, Default)]
pub struct Builder {
    yield_before_sleep: bool,
}

impl Builder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Yield the core once before sleeping in `epoll_wait`: a socket write
    /// usually woke the peer on this very core, and when the peer answers at
    /// once the answer is there before the loop would sleep.
    pub fn yield_before_sleep(mut self, yes: bool) -> Self {
        self.yield_before_sleep = yes;
        self
    }

    pub fn build(self) -> std::io::Result<Runtime> {
        let wake_fd =
            rustix::event::eventfd(0, rustix::event::EventfdFlags::NONBLOCK | rustix::event::EventfdFlags::CLOEXEC)?;
        let reactor = Reactor::new(&wake_fd)?;
        let shared = Arc::new(Shared { inbox: Mutex::new(Vec::new()), wake_fd });
        let core = Rc::new(Core {
            shared,
            tasks: RefCell::new(Slab::new()),
            generation: Cell::new(0),
            reactor,
            timers: time::Timers::default(),
            deferred: RefCell::new(Vec::new()),
            yield_before_sleep: self.yield_before_sleep,
        });
        Ok(Runtime { core })
    }
}

/// One thread's loop.
pub struct Runtime {
    core: Rc<Core>,
}

/// How other threads reach a loop.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl Handle {
    /// Make a future with `make` on the loop's thread and run it there.
    pub fn spawn<F, M>(&self, make: M)
    where
        M: FnOnce() -> F + Send + 'static,
        F: Future<Output = ()> + 'static,
    {
        self.shared.post(Mail::Spawn(Box::new(move || Box::pin(make()))));
    }
}

/// The waker of the future given to [`Runtime::block_on`].
struct MainWaker {
    woken: AtomicBool,
    shared: Arc<Shared>,
}

impl Wake for MainWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.woken.swap(true, Ordering::AcqRel) && !self.shared.is_here() {
            self.shared.kick();
        }
    }
}

/// Sets this thread's running loop for as long as it lives.
struct Enter {
    previous: Option<Rc<Core>>,
    previous_here: usize,
}

impl Enter {
    fn new(core: &Rc<Core>) -> Self {
        let previous = CURRENT.with(|c| c.borrow_mut().replace(core.clone()));
        let previous_here = HERE.with(|h| h.replace(Arc::as_ptr(&core.shared) as usize));
        Self { previous, previous_here }
    }
}

impl Drop for Enter {
    fn drop(&mut self) {
        CURRENT.with(|c| *c.borrow_mut() = self.previous.take());
        HERE.with(|h| h.set(self.previous_here));
    }
}

impl Runtime {
    pub fn handle(&self) -> Handle {
        Handle { shared: self.core.shared.clone() }
    }

    /// Run the loop until `future` completes; tasks it spawned that are
    /// still running stay in the loop for the next `block_on`.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        let _enter = Enter::new(&self.core);
        let main = Arc::new(MainWaker { woken: AtomicBool::new(true), shared: self.core.shared.clone() });
        let waker = Waker::from(main.clone());
        let mut future = pin!(future);
        loop {
            if main.woken.swap(false, Ordering::AcqRel)
                && let Poll::Ready(out) = future.as_mut().poll(&mut Context::from_waker(&waker))
            {
                return out;
            }
            self.core.turn(&main.woken);
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // Tasks hold sockets that point back at the loop: drop them with
        // the loop in place, then the loop.
        let _enter = Enter::new(&self.core);
        let tasks = std::mem::take(&mut *self.core.tasks.borrow_mut());
        drop(tasks);
        READY.with(|r| r.borrow_mut().clear());
    }
}

#[cfg(test)]
mod tests;
