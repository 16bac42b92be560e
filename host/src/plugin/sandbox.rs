//! Every limit a plugin runs under, in one place.
//!
//! - **Capabilities**: an empty WASI context (no preopened directories, no
//!   environment, no arguments, no sockets, no clocks beyond what WASI always
//!   provides) plus the `host` interface, whose only function is `log`.
//! - **Memory**: [`MemoryCap`] refuses any linear memory or table growth past
//!   `plugins.limits.memory`; the guest's allocator then fails and traps.
//! - **Time**: every call gets a deadline `plugins.limits.call_timeout` ahead;
//!   a guest still running then is interrupted (a trap) by the
//!   [`super::watchdog`], within its wake-up latency, never before.
//! - **Log**: each message is cut to [`LOG_MAX_BYTES`], and each plugin may log
//!   [`LOG_LINES_PER_SEC`] lines a second; the rest are counted and reported.

use super::bindings::refractium::plugin::{host, types::Level};
use refractium_plugin_sdk::crypto::native as crypto;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Longest log message accepted from a plugin, in bytes.
pub const LOG_MAX_BYTES: usize = 1024;
/// Log lines a plugin may write per second.
pub const LOG_LINES_PER_SEC: u64 = 50;

/// Per-store state: what a plugin instance can reach.
pub struct HostState {
    /// Empty WASI context required by `wasm32-wasip2` guests; grants nothing.
    wasi: WasiCtx,
    /// Resource table for WASI handles (streams the guest never gets to use).
    table: ResourceTable,
    /// The memory cap, and whether the guest ran into it.
    pub cap: MemoryCap,
    /// The plugin's log budget, shared by all its instances.
    log: Arc<LogBudget>,
    /// The plugin's name, to tag its log lines.
    plugin: Arc<str>,
    /// When the call under way is out of time (`clock::now_ns`): see
    /// [`super::watchdog`].
    pub deadline: u64,
    /// A built-in's memory and allocator, looked up once when it is
    /// instantiated, for the imports that return bytes ([`super::direct`]).
    pub guest: Option<super::direct::Guest>,
}

impl HostState {
    pub fn new(plugin: Arc<str>, memory: u64, log: Arc<LogBudget>) -> Self {
        HostState {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            cap: MemoryCap { limit: usize::try_from(memory).unwrap_or(usize::MAX), hit: false },
            log,
            plugin,
            deadline: 0,
            guest: None,
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// Refuses memory and table growth past a byte limit.
pub struct MemoryCap {
    limit: usize,
    /// Set when a growth was refused: the cause of the trap that follows.
    pub hit: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.hit = true;
            return Ok(false);
        }
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
fn truncate(message: &str, max: usize) -> &str {
    if message.len() <= max {
        return message;
    }
    let mut end = max;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

impl host::Host for HostState {
    fn log(&mut self, level: Level, message: String) {
        let Some(dropped) = self.log.take() else { return };
        let plugin = &*self.plugin;
        if dropped > 0 {
            tracing::warn!(plugin, dropped, "plugin log lines dropped (rate limit {LOG_LINES_PER_SEC}/s)");
        }
        let cut = truncate(&message, LOG_MAX_BYTES);
        let truncated = cut.len() < message.len();
        match level {
            Level::Trace => tracing::trace!(plugin, truncated, "{cut}"),
            Level::Debug => tracing::debug!(plugin, truncated, "{cut}"),
            Level::Info => tracing::info!(plugin, truncated, "{cut}"),
            Level::Warn => tracing::warn!(plugin, truncated, "{cut}"),
            Level::Error => tracing::error!(plugin, truncated, "{cut}"),
        }
    }
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
}
