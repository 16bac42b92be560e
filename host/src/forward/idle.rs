//! Idle timeouts of relayed connections, checked by one thread for all.
//!
//! A timer per connection would be armed and cancelled on every connection's
//! event loop, and when it is the loop's only timer, arming it makes the
//! loop wake itself once more (its timeout just got shorter). Instead every
//! relay registers an [`Idle`] here and records when bytes last moved; the
//! `refractium-idle` thread looks at all of them every quarter of the
//! shortest idle timeout (between 10 ms and 1 s) and wakes the relays whose
//! time is up. With no relay open for [`LINGER`] it parks, and costs nothing.

use futures_util::task::AtomicWaker;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::Poll;
use std::thread::Thread;
use std::time::{Duration, Instant};

use crate::clock;

/// How long the thread keeps sweeping after the last relay ended, so that a
/// steady trickle of short connections does not park and unpark it each time.
const LINGER: Duration = Duration::from_secs(5);
/// Bounds of the sweep interval.
const FINEST: Duration = Duration::from_millis(10);
const COARSEST: Duration = Duration::from_secs(1);

/// The idle clock of one relay.
pub struct Idle {
    /// [`clock::now_ms`] when bytes last moved.
    last_ms: AtomicU64,
    limit: Duration,
    /// Set by the sweeping thread once the limit has passed.
    expired: AtomicBool,
    /// The relay waiting for `expired`. Polling it costs two atomic
    /// operations, where a `Notify` takes a lock each time the relay's task
    /// runs.
    waker: AtomicWaker,
}

impl Idle {
    /// Start watching a relay that ends after `limit` without a byte moving.
    pub fn watch(limit: Duration) -> Arc<Idle> {
        let idle = Arc::new(Idle {
            last_ms: AtomicU64::new(clock::now_ms()),
            limit,
            expired: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        });
        registry().add(&idle);
        idle
    }

    /// Bytes moved just now.
    pub fn touch(&self) {
        self.last_ms.store(clock::now_ms(), Ordering::Relaxed);
    }

    /// Resolves once the relay has been idle for its limit.
    pub async fn expired(&self) {
        std::future::poll_fn(|cx| {
            if self.expired.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            // The sweeper may have set the flag before the waker was in place.
            if self.expired.load(Ordering::Acquire) { Poll::Ready(()) } else { Poll::Pending }
        })
        .await;
    }

    fn expire(&self) {
        self.expired.store(true, Ordering::Release);
        self.waker.wake();
    }

    fn due(&self) -> bool {
        clock::passed(self.last_ms.load(Ordering::Relaxed), self.limit)
    }
}

struct Registry {
    watched: Mutex<Vec<Weak<Idle>>>,
    thread: OnceLock<Thread>,
    parked: AtomicBool,
}

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| Registry {
        watched: Mutex::new(Vec::new()),
        thread: OnceLock::new(),
        parked: AtomicBool::new(false),
    })
}

impl Registry {
    fn add(&'static self, idle: &Arc<Idle>) {
        if let Ok(mut watched) = self.watched.lock() {
            watched.push(Arc::downgrade(idle));
        }
        let thread = self.thread.get_or_init(|| {
            match std::thread::Builder::new().name("refractium-idle".into()).spawn(move || self.sweep_forever()) {
                Ok(handle) => handle.thread().clone(),
                // Without the thread idle timeouts do not fire; the proxy
                // still works, so say so rather than refuse connections.
                Err(err) => {
                    tracing::error!(error = %err, "cannot start the idle-timeout thread; idle_timeout is not enforced");
                    std::thread::current()
                }
            }
        });
        if self.parked.load(Ordering::SeqCst) {
            thread.unpark();
        }
    }

    fn sweep_forever(&self) {
        let mut empty_since: Option<Instant> = None;
        loop {
            // Take the list out so that relays starting meanwhile never wait
            // for a sweep; put the live ones back in front of the new ones.
            let mut list = self.watched.lock().map(|mut w| std::mem::take(&mut *w)).unwrap_or_default();
            let mut finest = COARSEST;
            list.retain(|weak| {
                let Some(idle) = weak.upgrade() else { return false };
                if idle.due() {
                    idle.expire();
                    return false;
                }
                finest = finest.min(idle.limit / 4);
                true
            });
            let live = if let Ok(mut watched) = self.watched.lock() {
                list.append(&mut watched);
                *watched = list;
                watched.len()
            } else {
                return;
            };
            if live > 0 {
                empty_since = None;
            } else if empty_since.get_or_insert_with(Instant::now).elapsed() >= LINGER {
                self.parked.store(true, Ordering::SeqCst);
                // A relay that registered before it could see `parked` is seen here.
                while self.watched.lock().map(|w| w.is_empty()).unwrap_or(false) {
                    std::thread::park();
                }
                self.parked.store(false, Ordering::SeqCst);
                empty_since = None;
                continue;
            }
            std::thread::sleep(finest.max(FINEST));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A relay that moves nothing expires after its limit (within a sweep);
    /// one that keeps moving bytes does not.
    #[tokio::test]
    async fn silence_expires_activity_does_not() {
        let quiet = Idle::watch(Duration::from_millis(200));
        let busy = Idle::watch(Duration::from_millis(200));
        let start = Instant::now();
        let busy_task = {
            let busy = busy.clone();
            tokio::spawn(async move {
                for _ in 0..40 {
                    busy.touch();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        tokio::time::timeout(Duration::from_secs(5), quiet.expired()).await.expect("quiet relay expires");
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(200), "expired after {waited:?}");
        assert!(
            tokio::time::timeout(Duration::from_millis(300), busy.expired()).await.is_err(),
            "a relay moving bytes every 20 ms expired"
        );
        busy_task.await.expect("busy task");
    }
}
