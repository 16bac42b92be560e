//! Process-wide counters, served in the Prometheus text format by the admin
//! listener's `GET /metrics`. Plain atomics: counting costs one relaxed add.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// A counter (or gauge) with its Prometheus name and help text.
pub struct Counter {
    pub name: &'static str,
    pub help: &'static str,
    pub gauge: bool,
    value: AtomicU64,
}

impl Counter {
    const fn new(name: &'static str, help: &'static str, gauge: bool) -> Self {
        Counter { name, help, gauge, value: AtomicU64::new(0) }
    }

    /// Add one.
    pub fn inc(&self) {
        self.value.fetch_add(1, Ordering::Relaxed);
    }

    /// Take one away (gauges).
    pub fn dec(&self) {
        self.value.fetch_sub(1, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

pub static TCP_ACCEPTED: Counter =
    Counter::new("refractium_tcp_connections_accepted_total", "TCP connections admitted past the limits.", false);
pub static TCP_REFUSED: Counter =
    Counter::new("refractium_tcp_connections_refused_total", "TCP connections refused by a connection limit.", false);
pub static TCP_OPEN: Counter = Counter::new("refractium_tcp_connections_open", "TCP connections open now.", true);
pub static UDP_SESSIONS: Counter = Counter::new("refractium_udp_sessions_total", "UDP sessions started.", false);
pub static UDP_SESSIONS_OPEN: Counter =
    Counter::new("refractium_udp_sessions_open", "UDP sessions open now (in detection or routed).", true);
pub static UDP_REFUSED: Counter =
    Counter::new("refractium_udp_sessions_refused_total", "New UDP clients dropped by a session limit.", false);
pub static UDP_DROPPED: Counter = Counter::new(
    "refractium_udp_datagrams_dropped_total",
    "Datagrams dropped: empty, from refused clients, or not taken by the upstream socket.",
    false,
);
pub static UDP_DATAGRAMS_UP: Counter =
    Counter::new("refractium_udp_datagrams_up_total", "Datagrams forwarded client to server.", false);
pub static UDP_DATAGRAMS_DOWN: Counter =
    Counter::new("refractium_udp_datagrams_down_total", "Datagrams forwarded server to client.", false);
pub static PLUGIN_FAILURES: Counter = Counter::new(
    "refractium_plugin_call_failures_total",
    "Plugin calls that trapped, ran out of time or hit the memory cap.",
    false,
);
pub static RELOADS: Counter = Counter::new("refractium_reloads_total", "Reloads put in force.", false);
pub static RELOAD_FAILURES: Counter =
    Counter::new("refractium_reload_failures_total", "Reloads rejected (the old configuration stayed).", false);

const ALL: [&Counter; 12] = [
    &TCP_ACCEPTED,
    &TCP_REFUSED,
    &TCP_OPEN,
    &UDP_SESSIONS,
    &UDP_SESSIONS_OPEN,
    &UDP_REFUSED,
    &UDP_DROPPED,
    &UDP_DATAGRAMS_UP,
    &UDP_DATAGRAMS_DOWN,
    &PLUGIN_FAILURES,
    &RELOADS,
    &RELOAD_FAILURES,
];

/// Every counter in the Prometheus text exposition format.
pub fn render() -> String {
    let mut out = String::new();
    for c in ALL {
        let kind = if c.gauge { "gauge" } else { "counter" };
        let _ = writeln!(out, "# HELP {} {}\n# TYPE {} {kind}\n{} {}", c.name, c.help, c.name, c.name, c.get());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_lists_every_counter_with_help_and_type() {
        RELOADS.inc();
        let text = render();
        assert!(text.contains("# TYPE refractium_reloads_total counter\nrefractium_reloads_total "));
        assert!(text.contains("# TYPE refractium_tcp_connections_open gauge"));
        assert_eq!(text.lines().filter(|l| l.starts_with("# HELP")).count(), ALL.len());
    }
}
