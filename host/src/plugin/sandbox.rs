//! Every limit a plugin runs under, in one place, and the words a failure is
//! reported in.
//!
//! - **Imports**: what a plugin file may call is decided per import when it
//!   loads ([`super::imports`]); the granted WASI functions answer at once
//!   and touch nothing ([`super::wasi`]).
//! - **Memory**: [`MemoryCap`] refuses any linear memory or table growth past
//!   `plugins.limits.memory`; the guest's allocator then fails and traps.
//! - **Time**: a call still running `plugins.limits.call_timeout` after it
//!   started is watched on its thread's CPU clock from then on. It is
//!   interrupted and blamed ([`Cause::Time`]) once it has used another
//!   `call_timeout` of CPU time, which only a plugin that really computes
//!   can do; a call whose thread does not get that CPU within
//!   [`STARVED_AFTER`] budgets is interrupted without blame
//!   ([`Cause::Overload`]): the machine is busy, the plugin is not at fault.
//!   The [`super::watchdog`] thread makes a running call look at the clock.
//! - **Output**: a verdict is checked against [`MAX_ALPN`], [`MAX_ATTRIBUTES`],
//!   [`MAX_STRING`] and [`MAX_OUTPUT`] while it still lies in the guest's
//!   memory, before anything is copied out ([`Bounds`]).
//! - **Log**: each line (from `host.log`, stdout or stderr) is cut to
//!   [`LOG_MAX_BYTES`], and each plugin may log [`LOG_LINES_PER_SEC`] lines a
//!   second; the rest are counted and reported.

use super::bindings::refractium::plugin::types::Level;
use refractium_plugin_sdk::crypto::native as crypto;
use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use wasmtime::{ResourceLimiter, UpdateDeadline};

/// Longest log line accepted from a plugin, in bytes.
pub const LOG_MAX_BYTES: usize = 1024;
/// Log lines a plugin may write per second.
pub const LOG_LINES_PER_SEC: u64 = 50;
/// Most ALPN entries a verdict may carry.
pub const MAX_ALPN: usize = 64;
/// Most attributes a verdict may carry.
pub const MAX_ATTRIBUTES: usize = 64;
/// Longest string of a verdict (protocol, SNI, an ALPN entry, an attribute's
/// key or value), in bytes; also of `init`'s name and version.
pub const MAX_STRING: usize = 1024;
/// Most bytes of strings a verdict may carry in all.
pub const MAX_OUTPUT: usize = 16 << 10;
/// A call whose thread has not had the CPU to use its budget this many
/// budgets after it started is interrupted without blame.
pub const STARVED_AFTER: u64 = 10;

/// Why a plugin call failed. The label is the `cause` of the metrics and of
/// the log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cause {
    /// It trapped (a panic, an abort, an out-of-bounds access, ...).
    Trap,
    /// It used its whole time budget of CPU time after its deadline.
    Time,
    /// It was interrupted because its thread did not get the CPU: not its fault.
    Overload,
    /// It ran into its memory cap.
    Memory,
    /// Its answer exceeded the output bounds or broke the canonical ABI.
    Output,
    /// It called an import refractium does not grant.
    Refused,
    /// No instance could be made (instantiation or `init` failed).
    Instantiate,
}

impl Cause {
    pub const ALL: [Cause; 7] =
        [Cause::Trap, Cause::Time, Cause::Overload, Cause::Memory, Cause::Output, Cause::Refused, Cause::Instantiate];

    pub fn label(self) -> &'static str {
        match self {
            Cause::Trap => "trap",
            Cause::Time => "time",
            Cause::Overload => "overload",
            Cause::Memory => "memory",
            Cause::Output => "output",
            Cause::Refused => "refused",
            Cause::Instantiate => "instantiate",
        }
    }

    /// Whether the failure counts against the plugin (toward disabling it).
    pub fn blames_plugin(self) -> bool {
        self != Cause::Overload
    }
}

/// A failed plugin call: why, in words an operator can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub cause: Cause,
    pub detail: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

/// A verdict (or `init`'s answer) that exceeds the output bounds.
#[derive(Debug)]
pub struct TooLarge(pub String);

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "its answer is too large: {}", self.0)
    }
}

impl std::error::Error for TooLarge {}

/// The output bounds of one answer, checked piece by piece before each piece
/// is copied out of the guest.
#[derive(Debug, Default)]
pub struct Bounds {
    total: usize,
}

impl Bounds {
    /// A list of `len` entries of `what`, at most `max`.
    pub fn count(what: &str, len: usize, max: usize) -> Result<(), TooLarge> {
        if len > max {
            return Err(TooLarge(format!("{len} {what} (at most {max})")));
        }
        Ok(())
    }

    /// A string of `len` bytes: within [`MAX_STRING`], and within
    /// [`MAX_OUTPUT`] with those before it.
    pub fn string(&mut self, what: &str, len: usize) -> Result<(), TooLarge> {
        if len > MAX_STRING {
            return Err(TooLarge(format!("a {what} of {len} bytes (at most {MAX_STRING})")));
        }
        self.total += len;
        if self.total > MAX_OUTPUT {
            return Err(TooLarge(format!("over {} bytes of strings (at most {MAX_OUTPUT})", self.total)));
        }
        Ok(())
    }
}

/// Per-store state: what a plugin instance can reach, and its limits.
pub struct HostState {
    /// The memory cap, and whether the guest ran into it.
    pub cap: MemoryCap,
    /// The plugin's log budget, shared by all its instances.
    log: Arc<LogBudget>,
    /// The plugin's name, to tag its log lines.
    plugin: Arc<str>,
    /// When the running call must next look at its clocks
    /// (`clock::now_ns`): see [`HostState::on_epoch`].
    pub deadline: u64,
    /// The running call's time budget and how it is spending it.
    call: CallClock,
    /// What the guest wrote to stdout and stderr that is not a whole line yet.
    console: [Vec<u8>; 2],
    /// A built-in's memory and allocator, looked up once when it is
    /// instantiated, for the imports that return bytes ([`super::direct`]).
    pub guest: Option<super::direct::Guest>,
}

/// The time accounting of one call.
#[derive(Debug, Default, Clone, Copy)]
struct CallClock {
    budget_ns: u64,
    started_ns: u64,
    /// The thread's CPU time when the wall-clock budget ran out.
    cpu_from: Option<u64>,
    /// Set when the call was interrupted: whether it had the CPU.
    overrun: Option<Cause>,
}

impl HostState {
    pub fn new(plugin: Arc<str>, memory: u64, log: Arc<LogBudget>) -> Self {
        HostState {
            cap: MemoryCap { limit: usize::try_from(memory).unwrap_or(usize::MAX), hit: false, size: 0 },
            log,
            plugin,
            deadline: 0,
            call: CallClock::default(),
            console: [Vec::new(), Vec::new()],
            guest: None,
        }
    }

    /// A call with `budget` starts now; its first look at the clock is due
    /// at `deadline` (`clock::now_ns`).
    pub fn begin_call(&mut self, budget: Duration, deadline: u64) {
        let budget_ns = crate::clock::ns(budget).max(1);
        self.deadline = deadline;
        self.call =
            CallClock { budget_ns, started_ns: deadline.saturating_sub(budget_ns), cpu_from: None, overrun: None };
    }

    /// What a call answers when the epoch advanced: go on until the next
    /// look, or be interrupted (see the module's doc). The next look is set
    /// in `deadline` and announced to the watchdog.
    pub fn on_epoch(&mut self) -> UpdateDeadline {
        let now = crate::clock::now_ns();
        if now < self.deadline {
            return UpdateDeadline::Continue(1);
        }
        let call = &mut self.call;
        let cpu = thread_cpu_ns();
        let starved_at = call.started_ns.saturating_add(call.budget_ns.saturating_mul(STARVED_AFTER));
        let next = match call.cpu_from {
            None => {
                // The wall-clock budget is spent: from now on the call's
                // CPU time is what counts. It cannot use a budget of it
                // sooner than a budget from now.
                call.cpu_from = Some(cpu);
                now.saturating_add(call.budget_ns)
            }
            Some(from) => {
                let used = cpu.saturating_sub(from);
                if used >= call.budget_ns {
                    call.overrun = Some(Cause::Time);
                    return UpdateDeadline::Interrupt;
                }
                if now >= starved_at {
                    call.overrun = Some(Cause::Overload);
                    return UpdateDeadline::Interrupt;
                }
                now.saturating_add(call.budget_ns - used)
            }
        };
        self.deadline = next.min(starved_at.max(now + 1));
        super::watchdog::postpone(self.deadline);
        UpdateDeadline::Continue(1)
    }

    /// Why the call that ended with `err` failed.
    pub fn failure(&self, err: &wasmtime::Error, memory: u64) -> Failure {
        let budget = humantime::format_duration(Duration::from_nanos(self.call.budget_ns));
        let (cause, detail) = if self.cap.hit {
            (Cause::Memory, format!("exceeded its memory cap of {memory} bytes"))
        } else if err.downcast_ref::<wasmtime::PoolConcurrencyLimitError>().is_some() {
            // Every instance slot of the process is taken (a flood of
            // hooked connections, say): not the plugin's doing.
            (Cause::Overload, format!("no instance could be made: {err}"))
        } else if let Some(refused) = err.downcast_ref::<super::imports::Refused>() {
            (Cause::Refused, refused.to_string())
        } else if let Some(large) = err.downcast_ref::<TooLarge>() {
            (Cause::Output, large.to_string())
        } else {
            match (err.downcast_ref::<wasmtime::Trap>(), self.call.overrun) {
                (Some(wasmtime::Trap::Interrupt), Some(Cause::Overload)) => (
                    Cause::Overload,
                    format!(
                        "interrupted after {} without getting {budget} of CPU time: the machine is overloaded; not counted against the plugin",
                        humantime::format_duration(Duration::from_millis(
                            (self.call.budget_ns.saturating_mul(STARVED_AFTER)) / 1_000_000
                        ))
                    ),
                ),
                (Some(wasmtime::Trap::Interrupt), _) => (
                    Cause::Time,
                    format!("exceeded its time budget of {budget} (and used {budget} of CPU time after it)"),
                ),
                (Some(trap), _) => (Cause::Trap, format!("trapped: {trap}")),
                (None, _) => (Cause::Output, format!("failed: {err:#}")),
            }
        };
        Failure { cause, detail }
    }

    /// Write a log line for the plugin at `level`, if its rate limit lets
    /// one through now; `message` is asked for only then (a line nobody
    /// will see is never read out of the guest).
    pub fn log_with<'m>(&self, level: Level, message: impl FnOnce() -> Option<Cow<'m, str>>) {
        let Some(dropped) = self.log.take() else { return };
        let plugin = &*self.plugin;
        if dropped > 0 {
            tracing::warn!(plugin, dropped, "plugin log lines dropped (rate limit {LOG_LINES_PER_SEC}/s)");
        }
        let Some(message) = message() else { return };
        let cut = truncate(&message, LOG_MAX_BYTES);
        let truncated = cut.len() < message.len();
        let cut = crate::logging::escape(cut);
        match level {
            Level::Trace => tracing::trace!(plugin, truncated, "{cut}"),
            Level::Debug => tracing::debug!(plugin, truncated, "{cut}"),
            Level::Info => tracing::info!(plugin, truncated, "{cut}"),
            Level::Warn => tracing::warn!(plugin, truncated, "{cut}"),
            Level::Error => tracing::error!(plugin, truncated, "{cut}"),
        }
    }

    /// `host.log` with a message already in the host.
    pub fn log(&self, level: Level, message: &str) {
        self.log_with(level, || Some(Cow::Borrowed(message)));
    }

    /// The first bytes (at most a log line's worth) of `len` bytes written
    /// to stdout (`stream` 1) or stderr (2): whole lines go to the log, at
    /// INFO and WARN; an unfinished one waits for its end, or for the end of
    /// the call ([`HostState::console_flush`]).
    pub fn console_write(&mut self, stream: u32, bytes: &[u8], len: usize) {
        let Some(buffer) = self.console_buffer(stream) else { return };
        let room = (LOG_MAX_BYTES + 1).saturating_sub(buffer.len());
        buffer.extend_from_slice(&bytes[..bytes.len().min(room)]);
        if len > room && !buffer.ends_with(b"\n") {
            // The rest of an over-long line is dropped; its start is logged.
            buffer.push(b'\n');
        }
        if let Some(end) = buffer.iter().rposition(|&b| b == b'\n') {
            let lines: Vec<u8> = buffer.drain(..=end).collect();
            self.console_emit(stream, &lines);
        }
    }

    /// Log what stdout and stderr hold, finished lines or not: at the end of
    /// every call.
    pub fn console_flush(&mut self) {
        for stream in [super::wasi::STDOUT, super::wasi::STDERR] {
            if let Some(buffer) = self.console_buffer(stream)
                && !buffer.is_empty()
            {
                let held = std::mem::take(buffer);
                self.console_emit(stream, &held);
            }
        }
    }

    fn console_buffer(&mut self, stream: u32) -> Option<&mut Vec<u8>> {
        match stream {
            super::wasi::STDOUT => Some(&mut self.console[0]),
            super::wasi::STDERR => Some(&mut self.console[1]),
            _ => None,
        }
    }

    fn console_emit(&self, stream: u32, text: &[u8]) {
        let level = if stream == super::wasi::STDERR { Level::Warn } else { Level::Info };
        for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            self.log_with(level, || Some(String::from_utf8_lossy(line)));
        }
    }
}

/// CPU time this thread has used, in ns (0 if the clock cannot be read).
fn thread_cpu_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    u64::try_from(t.tv_sec).unwrap_or(0).saturating_mul(1_000_000_000).saturating_add(t.tv_nsec as u64)
}

/// Refuses memory and table growth past a byte limit.
pub struct MemoryCap {
    limit: usize,
    /// Set when a growth was refused: the cause of the trap that follows.
    pub hit: bool,
    /// The largest linear memory the instance has, in bytes.
    pub size: usize,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.hit = true;
            return Ok(false);
        }
        self.size = self.size.max(desired);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        // Table elements are pointer-sized; count them against the same cap.
        if desired.saturating_mul(8) > self.limit {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }
}

/// A per-plugin rate limit on log lines: a fixed one-second window.
#[derive(Default)]
pub struct LogBudget {
    /// The current window (seconds since the epoch) and lines used in it,
    /// packed as `window << 32 | used`.
    state: AtomicU64,
    /// Lines dropped since the last line that got through.
    dropped: AtomicU64,
}

impl LogBudget {
    /// Whether one more line may be written now; if so, how many were dropped
    /// before it.
    fn take(&self) -> Option<u64> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) & 0xffff_ffff;
        let mut current = self.state.load(Ordering::Relaxed);
        loop {
            let (window, used) = (current >> 32, current & 0xffff_ffff);
            let next = if window == now { now << 32 | (used + 1) } else { now << 32 | 1 };
            if window == now && used >= LOG_LINES_PER_SEC {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            match self.state.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Some(self.dropped.swap(0, Ordering::Relaxed)),
                Err(seen) => current = seen,
            }
        }
    }
}

/// Cut `message` to at most `max` bytes on a character boundary.
pub fn truncate(message: &str, max: usize) -> &str {
    if message.len() <= max {
        return message;
    }
    let mut end = max;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

impl super::bindings::refractium::plugin::types::Host for HostState {}

/// The `crypto` interface: the SDK's native implementation, which a plugin
/// compiled natively for its tests runs too, so both give the same answers.
impl super::bindings::refractium::plugin::crypto::Host for HostState {
    fn hkdf_sha256_extract(&mut self, salt: Vec<u8>, ikm: Vec<u8>) -> Vec<u8> {
        crypto::hkdf_sha256_extract(&salt, &ikm).to_vec()
    }

    fn hkdf_sha256_expand(&mut self, prk: Vec<u8>, info: Vec<u8>, len: u32) -> Option<Vec<u8>> {
        crypto::hkdf_sha256_expand(&prk, &info, len as usize)
    }

    fn aes128_ecb_encrypt(&mut self, key: Vec<u8>, blocks: Vec<u8>) -> Option<Vec<u8>> {
        crypto::aes128_ecb_encrypt(&key, &blocks)
    }

    fn aes128_gcm_open(&mut self, key: Vec<u8>, nonce: Vec<u8>, aad: Vec<u8>, sealed: Vec<u8>) -> Option<Vec<u8>> {
        crypto::aes128_gcm_open(&key, &nonce, &aad, &sealed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("hello", 10), "hello");
    }

    #[test]
    fn log_budget_caps_lines_per_window() {
        let budget = LogBudget::default();
        let allowed = (0..LOG_LINES_PER_SEC * 3).filter(|_| budget.take().is_some()).count() as u64;
        // The window may roll over once during the loop.
        assert!((LOG_LINES_PER_SEC..=LOG_LINES_PER_SEC * 2).contains(&allowed), "{allowed}");
    }

    #[test]
    fn bounds_refuse_long_strings_too_many_entries_and_too_much_in_all() {
        assert!(Bounds::count("attributes", MAX_ATTRIBUTES, MAX_ATTRIBUTES).is_ok());
        let err = Bounds::count("attributes", 100_000, MAX_ATTRIBUTES).expect_err("too many");
        assert!(err.to_string().contains("100000 attributes (at most 64)"), "{err}");
        let mut bounds = Bounds::default();
        assert!(bounds.string("protocol", MAX_STRING).is_ok());
        assert!(bounds.string("value", MAX_STRING + 1).is_err());
        let mut bounds = Bounds::default();
        let fits = (0..MAX_OUTPUT / MAX_STRING).all(|_| bounds.string("value", MAX_STRING).is_ok());
        assert!(fits && bounds.string("value", 1).is_err(), "the sum is bounded too");
    }

    /// A call that had the CPU for its whole budget after its deadline is
    /// blamed; one whose thread never got it is let go without blame.
    #[test]
    fn a_call_is_blamed_for_cpu_time_only() {
        let budget = Duration::from_millis(5);
        let mut state = HostState::new("t".into(), 1 << 20, Arc::default());
        state.begin_call(budget, crate::clock::now_ns() + crate::clock::ns(budget));
        let spin_until = |state: &mut HostState| loop {
            if let UpdateDeadline::Interrupt = state.on_epoch() {
                return;
            }
            std::hint::spin_loop();
        };
        spin_until(&mut state);
        assert_eq!(state.call.overrun, Some(Cause::Time));

        let mut state = HostState::new("t".into(), 1 << 20, Arc::default());
        state.begin_call(budget, crate::clock::now_ns() + crate::clock::ns(budget));
        let started = std::time::Instant::now();
        loop {
            // Sleeping: the thread uses no CPU, as a starved one would not.
            if let UpdateDeadline::Interrupt = state.on_epoch() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
            assert!(started.elapsed() < Duration::from_secs(10), "never interrupted");
        }
        assert_eq!(state.call.overrun, Some(Cause::Overload));
        assert!(started.elapsed() >= budget * STARVED_AFTER as u32);
    }
}
