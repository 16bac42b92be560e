//! Process-wide counters, served in the Prometheus text format by the admin
//! listener's `GET /metrics`. Plain atomics: counting costs one relaxed add.
//! Per plugin (by name, which the operator chose): failed calls by cause,
//! and whether it is disabled now ([`plugin`]).

use crate::plugin::sandbox::Cause;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

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

/// One unit of a gauge, held from [`Held::new`] until dropped (however the
/// holder ends, a panic included).
pub struct Held(&'static Counter);

impl Held {
    pub fn new(gauge: &'static Counter) -> Self {
        gauge.inc();
        Held(gauge)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.dec();
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
pub static RELOADS: Counter = Counter::new("refractium_reloads_total", "Reloads put in force.", false);
pub static RELOAD_FAILURES: Counter =
    Counter::new("refractium_reload_failures_total", "Reloads rejected (the old configuration stayed).", false);

const ALL: [&Counter; 11] = [
    &TCP_ACCEPTED,
    &TCP_REFUSED,
    &TCP_OPEN,
    &UDP_SESSIONS,
    &UDP_SESSIONS_OPEN,
    &UDP_REFUSED,
    &UDP_DROPPED,
    &UDP_DATAGRAMS_UP,
    &UDP_DATAGRAMS_DOWN,
    &RELOADS,
    &RELOAD_FAILURES,
];

/// The counters of one plugin, shared by every instance of it that any
/// snapshot loads.
#[derive(Default)]
pub struct PluginCounters {
    failures: [AtomicU64; Cause::ALL.len()],
    /// [`crate::clock::now_ms`] until which the plugin is disabled (0: it
    /// is not).
    pub disabled_until: AtomicU64,
    /// Set once the plugin has been loaded as a hook: its hook counters are
    /// shown.
    pub is_hook: std::sync::atomic::AtomicBool,
    /// Hook sessions opened (one per hooked connection).
    pub sessions: AtomicU64,
    /// Hook calls (`on-data`, `on-end`) that answered.
    pub calls: AtomicU64,
    /// Bytes handed to the hook, and bytes it forwarded.
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Connections the hook ended by answering or closing.
    pub closes: AtomicU64,
}

impl PluginCounters {
    /// Count one failed call.
    pub fn failed(&self, cause: Cause) {
        self.failures[cause as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Failed calls of that cause so far.
    pub fn failures(&self, cause: Cause) -> u64 {
        self.failures[cause as usize].load(Ordering::Relaxed)
    }
}

fn plugins() -> &'static Mutex<BTreeMap<String, Arc<PluginCounters>>> {
    static PLUGINS: OnceLock<Mutex<BTreeMap<String, Arc<PluginCounters>>>> = OnceLock::new();
    PLUGINS.get_or_init(Mutex::default)
}

/// The counters of the plugin called `name`.
pub fn plugin(name: &str) -> Arc<PluginCounters> {
    let mut map = plugins().lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    map.entry(name.to_string()).or_default().clone()
}

/// A label value as the text format writes it.
fn escaped(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Every counter in the Prometheus text exposition format.
pub fn render() -> String {
    let mut out = String::new();
    for c in ALL {
        let kind = if c.gauge { "gauge" } else { "counter" };
        let _ = writeln!(out, "# HELP {} {}\n# TYPE {} {kind}\n{} {}", c.name, c.help, c.name, c.name, c.get());
    }
    let plugins: Vec<(String, Arc<PluginCounters>)> = {
        let map = plugins().lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        map.iter().map(|(name, counters)| (escaped(name), counters.clone())).collect()
    };
    let _ = writeln!(
        out,
        "# HELP refractium_plugin_failures_total Plugin calls that failed, by plugin and cause (trap, time, overload, memory, output, refused, instantiate).\n# TYPE refractium_plugin_failures_total counter"
    );
    for (name, counters) in &plugins {
        for cause in Cause::ALL {
            let n = counters.failures(cause);
            let _ =
                writeln!(out, "refractium_plugin_failures_total{{plugin=\"{name}\",cause=\"{}\"}} {n}", cause.label());
        }
    }
    let _ = writeln!(
        out,
        "# HELP refractium_plugin_disabled Whether the plugin is disabled now after failing again and again (1) or not (0).\n# TYPE refractium_plugin_disabled gauge"
    );
    let now = crate::clock::now_ms();
    for (name, counters) in &plugins {
        let until = counters.disabled_until.load(Ordering::Relaxed);
        let _ = writeln!(out, "refractium_plugin_disabled{{plugin=\"{name}\"}} {}", u8::from(until > now));
    }
    let hooks: Vec<&(String, Arc<PluginCounters>)> =
        plugins.iter().filter(|(_, c)| c.is_hook.load(Ordering::Relaxed)).collect();
    type Field = fn(&PluginCounters) -> &AtomicU64;
    let families: [(&str, &str, Field); 5] = [
        ("refractium_hook_sessions_total", "Hook sessions opened, one per hooked connection.", |c| &c.sessions),
        ("refractium_hook_calls_total", "Hook calls (on-data, on-end) that answered.", |c| &c.calls),
        ("refractium_hook_bytes_in_total", "Bytes handed to the hook.", |c| &c.bytes_in),
        ("refractium_hook_bytes_out_total", "Bytes the hook forwarded.", |c| &c.bytes_out),
        ("refractium_hook_closes_total", "Connections the hook ended by answering or closing.", |c| &c.closes),
    ];
    for (metric, help, field) in families {
        let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} counter");
        for (name, counters) in &hooks {
            let _ = writeln!(out, "{metric}{{hook=\"{name}\"}} {}", field(counters).load(Ordering::Relaxed));
        }
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
        assert_eq!(text.lines().filter(|l| l.starts_with("# HELP")).count(), ALL.len() + 7);
    }

    #[test]
    fn plugin_failures_are_counted_by_plugin_and_cause() {
        let counters = plugin("metrics-test \"odd\" name");
        counters.failed(Cause::Refused);
        counters.failed(Cause::Refused);
        counters.failed(Cause::Time);
        let text = render();
        let line = |cause: &str| {
            format!("refractium_plugin_failures_total{{plugin=\"metrics-test \\\"odd\\\" name\",cause=\"{cause}\"}} ")
        };
        assert!(text.contains(&format!("{}2\n", line("refused"))), "{text}");
        assert!(text.contains(&format!("{}1\n", line("time"))), "{text}");
        assert!(text.contains(&format!("{}0\n", line("memory"))), "{text}");
        assert!(text.contains("refractium_plugin_disabled{plugin=\"metrics-test \\\"odd\\\" name\"} 0\n"), "{text}");
    }
}
