//! Timers of one loop: an ordered map from deadline to waker. A timer is
//! in the map only while a task waits on it, so a timeout around work that
//! is done at once costs no timer at all.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

#[derive(Default)]
pub(crate) struct Timers {
    map: RefCell<BTreeMap<(Instant, u64), Waker>>,
    next_id: Cell<u64>,
}

impl Timers {
    /// How long until the earliest timer (zero when it has passed), or
    /// `None` without timers.
    pub fn until_next(&self) -> Option<Duration> {
        let map = self.map.borrow();
        let (&(deadline, _), _) = map.first_key_value()?;
        Some(deadline.saturating_duration_since(Instant::now()))
    }

    /// Wake the tasks whose timers have passed.
    pub fn fire(&self) {
        if self.map.borrow().is_empty() {
            return;
        }
        let now = Instant::now();
        loop {
            let waker = {
                let mut map = self.map.borrow_mut();
                match map.first_entry() {
                    Some(entry) if entry.key().0 <= now => entry.remove(),
                    _ => break,
                }
            };
            waker.wake();
        }
    }

    fn set(&self, deadline: Instant, id: Option<u64>, waker: &Waker) -> u64 {
        let mut map = self.map.borrow_mut();
        let id = match id {
            Some(id) => id,
            None => {
                let id = self.next_id.get().wrapping_add(1);
                self.next_id.set(id);
                id
            }
        };
        match map.get_mut(&(deadline, id)) {
            Some(held) if held.will_wake(waker) => {}
            Some(held) => *held = waker.clone(),
            None => {
                map.insert((deadline, id), waker.clone());
            }
        }
        id
    }

    fn cancel(&self, deadline: Instant, id: u64) {
        self.map.borrow_mut().remove(&(deadline, id));
    }
}

/// Resolves at a deadline.
pub struct Sleep {
    deadline: Instant,
    id: Option<u64>,
}

impl Sleep {
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            return Poll::Ready(());
        }
        let core = super::core();
        let id = core.timers.set(self.deadline, self.id, cx.waker());
        self.id = Some(id);
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(id) = self.id
            && let Some(core) = super::try_core()
        {
            core.timers.cancel(self.deadline, id);
        }
    }
}

pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep { deadline, id: None }
}

pub fn sleep(duration: Duration) -> Sleep {
    sleep_until(Instant::now() + duration)
}

/// The deadline of a [`timeout`] passed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

impl std::fmt::Display for Elapsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

impl std::error::Error for Elapsed {}

/// `future`'s output, or [`Elapsed`] if `deadline` passes first. The
/// future is polled first, so work that is done at once never arms a timer.
pub async fn timeout_at<F: Future>(deadline: Instant, future: F) -> Result<F::Output, Elapsed> {
    let mut future = pin!(future);
    let mut sleep = sleep_until(deadline);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = future.as_mut().poll(cx) {
            return Poll::Ready(Ok(out));
        }
        Pin::new(&mut sleep).poll(cx).map(|()| Err(Elapsed))
    })
    .await
}

/// `future`'s output, or [`Elapsed`] if `duration` passes first, counted
/// from the first time the future is not ready (the clock is not read for
/// work that is done at once).
pub async fn timeout<F: Future>(duration: Duration, future: F) -> Result<F::Output, Elapsed> {
    let mut future = pin!(future);
    let mut timer: Option<Sleep> = None;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = future.as_mut().poll(cx) {
            return Poll::Ready(Ok(out));
        }
        let timer = timer.get_or_insert_with(|| sleep(duration));
        Pin::new(timer).poll(cx).map(|()| Err(Elapsed))
    })
    .await
}
