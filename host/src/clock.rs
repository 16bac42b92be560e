//! The process-wide clock of the timeouts that are looked at rather than
//! armed as timers: relay and UDP-session idleness, the back-off of a
//! failing plugin, and plugin call deadlines. Such a deadline fits an `AtomicU64`, so a
//! hot path stamps it with one store and another thread can read it.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Milliseconds since the first use of this clock in the process (rounded
/// down; monotonic).
pub fn now_ms() -> u64 {
    ms(base().elapsed())
}

/// Whether this is the first call this second for `last` (the second of
/// the previous call): for warnings logged at most once a second.
pub fn first_this_second(last: &std::sync::atomic::AtomicU64) -> bool {
    let second = now_ms() / 1000 + 1;
    last.swap(second, std::sync::atomic::Ordering::Relaxed) != second
}

/// Nanoseconds since the same start as [`now_ms`].
pub fn now_ns() -> u64 {
    ns(base().elapsed())
}

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// `d` in whole milliseconds (rounded down, saturating).
pub fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `d` in nanoseconds (saturating).
pub fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Whether at least `limit` has passed since the stamp `since` (from
/// [`now_ms`]). Both readings are rounded down, so one more millisecond than
/// `limit` is asked of them: the answer is never early.
pub fn passed(since: u64, limit: Duration) -> bool {
    left(since, limit).is_none()
}

/// How long until [`passed`] turns true for `since` and `limit` if nothing
/// stamps again meanwhile; `None` once it has.
pub fn left(since: u64, limit: Duration) -> Option<Duration> {
    let wanted = ms(limit).saturating_add(1);
    let waited = now_ms().saturating_sub(since);
    (waited < wanted).then(|| Duration::from_millis(wanted - waited))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passed_is_never_early() {
        let stamp = now_ms();
        let start = Instant::now();
        let limit = Duration::from_millis(30);
        while !passed(stamp, limit) {
            assert!(start.elapsed() < Duration::from_secs(5), "the clock stopped");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(start.elapsed() >= limit, "passed after {:?}", start.elapsed());
        assert!(!passed(now_ms(), Duration::from_secs(60)));
    }
}
