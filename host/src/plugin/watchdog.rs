//! Per-call time budgets (`plugins.limits.call_timeout`), enforced by one
//! `refractium-watchdog` thread for every plugin call in the process.
//!
//! A call announces its deadline ([`Call::start`]) in a slot its thread owns.
//! The watchdog sleeps until the earliest deadline it knows of, or at most
//! the smallest budget in use (so it learns of calls started while it
//! slept before any of them can be due), and when a deadline has passed it
//! advances the engine's epoch. Every call runs with its store's epoch
//! deadline at the next epoch, so advancing it makes each running call
//! consult its store's callback (`HostState::on_epoch`): a call past its
//! own deadline looks at its clocks and either traps with
//! `Trap::Interrupt` or says when it wants to look again ([`postpone`]);
//! any other carries on.
//!
//! So a call is interrupted within the watchdog's wake-up latency of its
//! deadline, never before it, and while calls are being made the thread
//! wakes about once per budget rather than on a fixed fast tick; with no
//! call for `QUIET` (200 ms) it parks and costs nothing.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::Thread;
use std::time::Duration;
use wasmtime::Engine;

use crate::clock;

/// Time without any plugin call after which the watchdog parks.
const QUIET: Duration = Duration::from_millis(200);
/// How soon the watchdog looks again at a call it has already interrupted
/// but that has not ended yet (it may be in a host function).
const RECHECK: Duration = Duration::from_millis(1);
/// Bounds of the watchdog's sleep between two looks.
const POLL_MIN: Duration = Duration::from_millis(1);
const POLL_MAX: Duration = Duration::from_millis(50);

/// The calls in progress on one thread: normally none or one; more only
/// while an async call waits and another runs. One word, changed atomically:
/// the number of calls in the top [`COUNT_BITS`] bits, and below them a time
/// no later than the deadline of any of them, in µs of `clock::now_ns`
/// rounded up (0 when there is no call): what the watchdog reads. While
/// calls overlap it keeps the earliest deadline any of them had, which may
/// have ended: the watchdog then advances the epoch early, and the calls'
/// callbacks find they have time left.
struct Slot(AtomicU64);

const COUNT_BITS: u32 = 16;
/// 2^48 µs, 8.9 years: later deadlines read as that, so as already due, and
/// the watchdog then advances the epoch every [`RECHECK`] while calls run
/// (each call's callback still holds it to its own deadline).
const TIME_MASK: u64 = (1 << (64 - COUNT_BITS)) - 1;
const ONE_CALL: u64 = 1 << (64 - COUNT_BITS);
/// More calls than the pooling allocator has instances for.
const MAX_CALLS: u64 = (1 << COUNT_BITS) - 1;

impl Slot {
    /// Replace (calls, earliest) with `change` of them, atomically.
    fn update(&self, change: impl Fn(u64, u64) -> (u64, u64)) {
        let step = |word: u64| {
            let (calls, earliest) = change(word >> (64 - COUNT_BITS), word & TIME_MASK);
            Some((calls << (64 - COUNT_BITS)) | earliest.min(TIME_MASK))
        };
        // `step` always answers, so this cannot fail.
        let _ = self.0.fetch_update(Ordering::SeqCst, Ordering::SeqCst, step);
    }

    /// One more call, due at `deadline_us`.
    fn start(&self, deadline_us: u64) {
        self.update(|calls, earliest| {
            let earliest = if calls == 0 { deadline_us } else { earliest.min(deadline_us) };
            ((calls + 1).min(MAX_CALLS), earliest)
        });
    }

    /// One call fewer.
    fn end(&self) {
        self.update(|calls, earliest| match calls {
            0 | 1 => (0, 0),
            n => (n - 1, earliest),
        });
    }

    /// The earliest deadline of the calls in progress, in µs; `None` without any.
    fn earliest_us(&self) -> Option<u64> {
        let word = self.0.load(Ordering::SeqCst);
        (word >= ONE_CALL).then_some(word & TIME_MASK)
    }
}

struct Watchdog {
    /// Every thread's slot; a slot whose thread ended is reused.
    slots: Mutex<Slots>,
    thread: OnceLock<Thread>,
    /// When the watchdog will look next (`clock::now_ns`).
    next_look: AtomicU64,
    /// The smallest budget a call has asked for, in ns.
    min_budget: AtomicU64,
    /// A call started since the watchdog last looked.
    started: AtomicBool,
    /// The watchdog is parked (or about to park).
    parked: AtomicBool,
}

#[derive(Default)]
struct Slots {
    all: Vec<&'static Slot>,
    free: Vec<&'static Slot>,
}

fn watchdog() -> &'static Watchdog {
    static WATCHDOG: OnceLock<Watchdog> = OnceLock::new();
    WATCHDOG.get_or_init(|| Watchdog {
        slots: Mutex::default(),
        thread: OnceLock::new(),
        next_look: AtomicU64::new(0),
        min_budget: AtomicU64::new(u64::MAX),
        started: AtomicBool::new(false),
        parked: AtomicBool::new(false),
    })
}

/// A thread's claim on a slot, given back when the thread ends.
struct Owned(&'static Slot);

impl Owned {
    fn claim() -> Owned {
        let mut slots = watchdog().slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let slot = slots.free.pop().unwrap_or_else(|| {
            let slot: &'static Slot = Box::leak(Box::new(Slot(AtomicU64::new(0))));
            slots.all.push(slot);
            slot
        });
        Owned(slot)
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        // A call still counted here was moved to another thread; the slot
        // keeps it until it ends, and is reused only once empty.
        if self.0.earliest_us().is_none()
            && let Ok(mut slots) = watchdog().slots.lock()
        {
            slots.free.push(self.0);
        }
    }
}

thread_local! {
    static SLOT: Owned = Owned::claim();
}

/// A plugin call in progress, from [`Call::start`] to its drop.
pub struct Call {
    slot: &'static Slot,
    deadline: u64,
}

impl Call {
    /// Announce a call that may run for `budget`, starting now. Put
    /// [`Call::deadline`] in the store's state before calling.
    pub fn start(engine: &Engine, budget: Duration) -> Call {
        let dog = watchdog();
        let budget_ns = u64::try_from(budget.as_nanos()).unwrap_or(u64::MAX).max(1);
        if budget_ns < dog.min_budget.load(Ordering::Relaxed) {
            dog.min_budget.fetch_min(budget_ns, Ordering::SeqCst);
        }
        let deadline = clock::now_ns().saturating_add(budget_ns);
        let slot = SLOT.with(|owned| owned.0);
        slot.start(deadline.div_ceil(1000));
        if !dog.started.load(Ordering::Relaxed) {
            dog.started.store(true, Ordering::SeqCst);
        }
        let thread = dog.thread.get_or_init(|| spawn(engine.clone()));
        // Parked, or sleeping past this deadline (a smaller budget than any
        // before): wake it so it plans for this call.
        if dog.parked.load(Ordering::SeqCst) || deadline < dog.next_look.load(Ordering::SeqCst) {
            thread.unpark();
        }
        Call { slot, deadline }
    }

    /// When the call is out of time (`clock::now_ns`).
    pub fn deadline(&self) -> u64 {
        self.deadline
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.slot.end();
    }
}

/// The call running on this thread will next need to look at its clocks at
/// `deadline` (`clock::now_ns`), later than it announced: the watchdog
/// advances the epoch for it then (with overlapping calls on the thread, the
/// earliest deadline of any of them stays, as [`Slot`] says).
pub fn postpone(deadline: u64) {
    SLOT.with(|owned| {
        owned.0.update(|calls, earliest| if calls == 1 { (1, deadline.div_ceil(1000)) } else { (calls, earliest) })
    });
    let dog = watchdog();
    if let Some(thread) = dog.thread.get()
        && deadline < dog.next_look.load(Ordering::SeqCst)
    {
        thread.unpark();
    }
}

fn spawn(engine: Engine) -> Thread {
    match std::thread::Builder::new().name("refractium-watchdog".into()).spawn(move || watch(&engine)) {
        Ok(handle) => handle.thread().clone(),
        // Without it a looping plugin would hold its worker forever: refuse
        // to run plugins at all rather than run them without a budget.
        Err(err) => panic!("cannot start the plugin watchdog thread: {err}"),
    }
}

fn watch(engine: &Engine) {
    let dog = watchdog();
    let mut quiet_since: Option<u64> = None;
    loop {
        let now = clock::now_ns();
        let earliest = {
            let slots = dog.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            slots.all.iter().filter_map(|s| s.earliest_us()).min().map(|us| us.saturating_mul(1000))
        };
        let poll = Duration::from_nanos(dog.min_budget.load(Ordering::SeqCst)).clamp(POLL_MIN, POLL_MAX);
        let mut next = now.saturating_add(clock::ns(poll));
        match earliest {
            Some(due) if due <= now => {
                engine.increment_epoch();
                next = next.min(now.saturating_add(clock::ns(RECHECK)));
            }
            Some(due) => next = next.min(due),
            None => {}
        }
        if dog.started.swap(false, Ordering::SeqCst) || earliest.is_some() {
            quiet_since = None;
        } else if now.saturating_sub(*quiet_since.get_or_insert(now)) >= clock::ns(QUIET) {
            dog.parked.store(true, Ordering::SeqCst);
            // A call that started before it could see `parked` is seen here.
            while !dog.started.load(Ordering::SeqCst) {
                std::thread::park();
            }
            dog.parked.store(false, Ordering::SeqCst);
            quiet_since = None;
            continue;
        }
        dog.next_look.store(next, Ordering::SeqCst);
        std::thread::park_timeout(Duration::from_nanos(next.saturating_sub(now)));
    }
}

#[cfg(test)]
mod tests {
    use super::{Slot, TIME_MASK};
    use crate::plugin::PluginSet;
    use crate::plugin::detector::{Detect, Peer, Verdict};
    use std::time::{Duration, Instant};

    /// Calls that overlap on one thread, ending in either order: the slot
    /// never shows a time later than a call still in progress, and shows
    /// none once all have ended.
    #[test]
    fn a_slot_keeps_the_earliest_deadline_of_overlapping_calls() {
        let slot = Slot(Default::default());
        let start = |d| slot.start(d);
        let end = || slot.end();
        assert_eq!(slot.earliest_us(), None);
        start(500);
        start(300);
        assert_eq!(slot.earliest_us(), Some(300));
        end(); // either of them: 300 stays, which is no later than 500
        assert_eq!(slot.earliest_us(), Some(300));
        start(200);
        assert_eq!(slot.earliest_us(), Some(200));
        end();
        end();
        assert_eq!(slot.earliest_us(), None);
        start(u64::MAX);
        assert_eq!(slot.earliest_us(), Some(TIME_MASK));
        end();
        assert_eq!(slot.earliest_us(), None);
    }

    /// `spin` loops forever on `spin`: each call fails once it has run for
    /// its budget and then used a budget of CPU time, so never before two
    /// budgets of wall time, and having used at least one budget of CPU
    /// time, but not much more than two (what it may use before its
    /// deadline, the budget after it, and the watchdog's latency). CPU time
    /// is what is bounded: on a loaded machine the wall time stretches with
    /// the share of CPU the thread gets. A call that finishes in time on the
    /// same plugin goes on.
    #[tokio::test]
    async fn a_looping_call_ends_at_its_deadline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plugins = dir.path().join("plugins.d");
        std::fs::create_dir(&plugins).expect("mkdir");
        let built = std::path::Path::new(env!("REFRACTIUM_TEST_PLUGINS_DIR")).join("refractium_test_spin.wasm");
        std::fs::copy(built, plugins.join("spin.wasm")).expect("copy spin");
        let yaml = format!(
            "listeners:\n  - name: edge\n    bind: 127.0.0.1:0\n    detectors: [spin]\n    default: web\nroutes:\n  - name: web\n    to: web\nbackends:\n  web: {{ servers: [127.0.0.1:1] }}\nplugins:\n  dir: {}\n  limits: {{ call_timeout: 30ms }}\n",
            plugins.display()
        );
        let config = crate::config::parse(&yaml, &dir.path().join("t.yaml")).expect("config");
        let set = PluginSet::load(&config).await.expect("plugins load");
        let spin = set.detector("spin").expect("spin loaded");
        let peer = Peer::new("127.0.0.1:1", "127.0.0.1:2", "edge", false);
        let budget = Duration::from_millis(30);
        let cpu = || {
            let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
            Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
        };
        for _ in 0..5 {
            let (start, cpu_start) = (Instant::now(), cpu());
            let failure = spin.detect(b"spin", &peer).expect_err("the call is interrupted");
            let (took, used) = (start.elapsed(), cpu() - cpu_start);
            eprintln!("spin interrupted after {took:?} ({used:?} of CPU) with a {budget:?} budget");
            assert_eq!(failure.cause, crate::plugin::Cause::Time, "{failure:?}");
            assert!(took >= budget * 2, "interrupted before its budget: {took:?}");
            assert!(used >= budget, "blamed without having used its budget of CPU: {used:?}");
            assert!(used < budget * 2 + Duration::from_millis(100), "interrupted late: {used:?} of CPU");
            assert!(took < Duration::from_secs(10), "interrupted late: {took:?}");
            assert_eq!(spin.detect(b"sp", &peer), Ok(Verdict::NeedMore(4)));
        }
    }
}
