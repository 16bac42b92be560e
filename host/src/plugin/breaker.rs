//! The breaker of one plugin: its failures counted in the metrics by cause,
//! and the failures that blame it ([`Cause::blames_plugin`]) counted in a
//! row; [`DISABLE_AFTER`] of them disable it for [`DISABLED_FOR`] (an
//! `ERROR` line says so). A disabled detector answers `no-match` without a
//! call; a disabled hook's routes close new connections or bypass it.

use super::sandbox::Cause;
use crate::metrics::PluginCounters;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Failures in a row after which a plugin is disabled for a while.
pub const DISABLE_AFTER: u32 = 10;
/// How long a disabled plugin stays disabled before it is tried again.
pub const DISABLED_FOR: Duration = Duration::from_secs(60);

/// What the breaker guards: it words the `ERROR` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A detector, whose calls fail.
    Detector,
    /// A hook, whose connections fail.
    Hook,
}

pub struct Breaker {
    plugin: Arc<str>,
    kind: Kind,
    counters: Arc<PluginCounters>,
    /// Failures that blame the plugin since its last success.
    in_a_row: AtomicU32,
}

impl Breaker {
    /// The breaker of a plugin loaded afresh (a start, a reload): enabled.
    pub fn new(plugin: Arc<str>, kind: Kind) -> Self {
        let counters = crate::metrics::plugin(&plugin);
        counters.disabled_until.store(0, Ordering::Relaxed);
        if kind == Kind::Hook {
            counters.is_hook.store(true, Ordering::Relaxed);
        }
        Breaker { plugin, kind, counters, in_a_row: AtomicU32::new(0) }
    }

    /// The plugin's counters in the metrics.
    pub fn counters(&self) -> &PluginCounters {
        &self.counters
    }

    /// Whether the plugin is disabled now.
    pub fn is_disabled(&self) -> bool {
        // A plugin that never failed has no time to compare with.
        let until = self.counters.disabled_until.load(Ordering::Relaxed);
        until != 0 && until > crate::clock::now_ms()
    }

    /// A call (or connection) went well.
    pub fn succeeded(&self) {
        self.in_a_row.store(0, Ordering::Relaxed);
    }

    /// Count a failure of this cause, and disable the plugin when it is the
    /// last of [`DISABLE_AFTER`] in a row that blame it.
    pub fn failed(&self, cause: Cause) {
        self.counters.failed(cause);
        if !cause.blames_plugin() {
            return;
        }
        let failures = self.in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < DISABLE_AFTER {
            return;
        }
        self.in_a_row.store(0, Ordering::Relaxed);
        let until = crate::clock::now_ms().saturating_add(crate::clock::ms(DISABLED_FOR));
        self.counters.disabled_until.store(until, Ordering::Relaxed);
        let (what, unit) = match self.kind {
            Kind::Detector => ("plugin", "calls"),
            Kind::Hook => ("hook", "connections"),
        };
        let secs = DISABLED_FOR.as_secs();
        let plugin = &*self.plugin;
        tracing::error!(plugin, failures, "{what} disabled for {secs}s after {failures} failed {unit} in a row");
    }
}
