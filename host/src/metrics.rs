//! Process-wide metrics, served in the Prometheus text format by the admin
//! listener's `GET /metrics` (the `prometheus` crate encodes them).
//!
//! Label values are bounded: listener, route, backend and server come from
//! the configuration, plugin and hook names from the plugins directory,
//! protocols from the loaded detectors and the routes' matches (anything
//! else is `other`), and outcome, reason, direction and cause are fixed
//! words. No client address or SNI value is ever a label.
//!
//! The data path holds handles resolved once (per listener, pool or
//! plugin), so most counting is one relaxed atomic add; a finished
//! connection costs one labelled lookup. What the snapshot in force knows
//! (servers' health and connections, plugins disabled, the config's hash)
//! is read when `/metrics` is asked for.

use crate::balance::Pool;
use crate::plugin::sandbox::Cause;
use crate::snapshot::{NameMap, Snapshot};
use prometheus::core::Collector;
use prometheus::{
    Encoder as _, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Latencies from tens of microseconds (a connect on loopback) to the
/// longest detection timeouts, in seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0,
];
/// Plugin calls: a microsecond to the longest call budgets, in seconds.
const CALL_BUCKETS: &[f64] = &[
    0.000_001,
    0.000_002_5,
    0.000_005,
    0.000_01,
    0.000_025,
    0.000_05,
    0.000_1,
    0.000_25,
    0.000_5,
    0.001,
    0.005,
    0.025,
    0.1,
];

/// How a TCP connection ended, as the `outcome` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Outcome {
    /// Detected, routed by a route's match, and relayed.
    Routed,
    /// Relayed on the listener's `default` or `on_timeout` route.
    Default,
    /// Detection ran out of time and the listener had no route for it.
    Timeout,
    /// No route for what was detected (or for unrecognised bytes).
    NoRoute,
    /// Refused by a limit or a load balancer's missing PROXY header.
    Refused,
    /// No server of the route's pool could be reached.
    BackendFailed,
    /// The client failed or left before it was routed.
    ClientError,
    /// A hook closed the connection or answered and closed it.
    HookClosed,
    /// The proxy shut down (or an internal error ended it) first.
    #[default]
    Shutdown,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Routed => "routed",
            Outcome::Default => "default",
            Outcome::Timeout => "timeout",
            Outcome::NoRoute => "no_route",
            Outcome::Refused => "refused",
            Outcome::BackendFailed => "backend_failed",
            Outcome::ClientError => "client_error",
            Outcome::HookClosed => "hook_closed",
            Outcome::Shutdown => "shutdown",
        }
    }
}

/// Every family registered for the life of the process.
struct Families {
    registry: Registry,
    tcp_accepted: IntCounterVec,
    tcp_refused: IntCounterVec,
    tcp_open: IntGaugeVec,
    tcp_connections: IntCounterVec,
    route_bytes: IntCounterVec,
    detection: HistogramVec,
    connect: HistogramVec,
    udp_sessions: IntCounterVec,
    udp_open: IntGaugeVec,
    udp_refused: IntCounterVec,
    udp_datagrams: IntCounterVec,
    udp_dropped: IntCounterVec,
    reloads: IntCounterVec,
    plugin_calls: IntCounterVec,
    plugin_call_seconds: HistogramVec,
}

/// Registers `metric` and hands it back. The names are this file's
/// constants, so a refusal is a mistake here: it is logged, and the
/// metric counts without being served.
fn registered<M: Collector + Clone + 'static>(registry: &Registry, metric: prometheus::Result<M>) -> M {
    match metric {
        Ok(metric) => {
            if let Err(err) = registry.register(Box::new(metric.clone())) {
                tracing::error!(error = %err, "a metric could not be registered");
            }
            metric
        }
        // Only an invalid name or label does this; the names are literals.
        Err(err) => unreachable_metric(&err),
    }
}

#[cold]
fn unreachable_metric(err: &prometheus::Error) -> ! {
    panic!("invalid metric definition: {err}")
}

fn counters(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    registered(r, IntCounterVec::new(Opts::new(name, help), labels))
}

fn gauges(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    registered(r, IntGaugeVec::new(Opts::new(name, help), labels))
}

fn histograms(r: &Registry, name: &str, help: &str, buckets: &[f64], labels: &[&str]) -> HistogramVec {
    registered(r, HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels))
}

fn families() -> &'static Families {
    static FAMILIES: OnceLock<Families> = OnceLock::new();
    FAMILIES.get_or_init(|| {
        let r = Registry::new();
        Families {
            tcp_accepted: counters(
                &r,
                "refractium_tcp_connections_accepted_total",
                "TCP connections admitted past the limits, by listener.",
                &["listener"],
            ),
            tcp_refused: counters(
                &r,
                "refractium_tcp_connections_refused_total",
                "TCP connections refused by a connection limit, by listener and limit (max_connections, max_connections_per_ip).",
                &["listener", "reason"],
            ),
            tcp_open: gauges(&r, "refractium_tcp_connections_open", "TCP connections open now, by listener.", &["listener"]),
            tcp_connections: counters(
                &r,
                "refractium_tcp_connections_total",
                "TCP connections that ended, by listener, detected protocol, route and outcome (routed, default, timeout, no_route, refused, backend_failed, client_error, hook_closed, shutdown).",
                &["listener", "protocol", "route", "outcome"],
            ),
            route_bytes: counters(
                &r,
                "refractium_route_bytes_total",
                "Bytes relayed on a route's TCP connections, counted when each ends, by direction (up: client to server, down: server to client).",
                &["route", "direction"],
            ),
            detection: histograms(
                &r,
                "refractium_detection_seconds",
                "Time from a TCP connection's arrival to the detectors' verdict, by listener.",
                LATENCY_BUCKETS,
                &["listener"],
            ),
            connect: histograms(
                &r,
                "refractium_backend_connect_seconds",
                "Time to connect to a server of the pool, retries included, by backend pool.",
                LATENCY_BUCKETS,
                &["backend"],
            ),
            udp_sessions: counters(&r, "refractium_udp_sessions_total", "UDP sessions started, by listener.", &["listener"]),
            udp_open: gauges(
                &r,
                "refractium_udp_sessions_open",
                "UDP sessions open now (in detection or routed), by listener.",
                &["listener"],
            ),
            udp_refused: counters(
                &r,
                "refractium_udp_sessions_refused_total",
                "Datagrams from clients without a session dropped by a session limit (one per datagram, not per client), by listener.",
                &["listener"],
            ),
            udp_datagrams: counters(
                &r,
                "refractium_udp_datagrams_total",
                "Datagrams forwarded, by listener and direction (up: client to server, down: server to client).",
                &["listener", "direction"],
            ),
            udp_dropped: counters(
                &r,
                "refractium_udp_datagrams_dropped_total",
                "Datagrams dropped: empty, from refused clients, without a valid PROXY header, or not taken by a socket.",
                &["listener"],
            ),
            reloads: counters(
                &r,
                "refractium_reloads_total",
                "Reloads tried, by outcome (ok: put in force; failed: rejected, the old configuration stayed).",
                &["outcome"],
            ),
            plugin_calls: counters(
                &r,
                "refractium_plugin_calls_total",
                "Detector calls into a plugin's sandbox (calls a prefilter or a disabled plugin spared are not counted).",
                &["plugin"],
            ),
            plugin_call_seconds: histograms(
                &r,
                "refractium_plugin_call_seconds",
                "Time of a detector call into a plugin's sandbox, by plugin.",
                CALL_BUCKETS,
                &["plugin"],
            ),
            registry: r,
        }
    })
}

/// One unit of a gauge, held from [`Held::new`] until dropped (however the
/// holder ends, a panic included).
pub struct Held(IntGauge);

impl Held {
    pub fn new(gauge: &IntGauge) -> Self {
        gauge.inc();
        Held(gauge.clone())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The counters of one TCP listener, resolved when its accept loop starts.
pub struct TcpListenerMetrics {
    name: String,
    pub accepted: IntCounter,
    pub open: IntGauge,
}

impl TcpListenerMetrics {
    pub fn new(listener: &str) -> Self {
        let f = families();
        TcpListenerMetrics {
            name: listener.to_string(),
            accepted: f.tcp_accepted.with_label_values(&[listener]),
            open: f.tcp_open.with_label_values(&[listener]),
        }
    }

    /// Count a refusal by the limit whose config key is `limit`.
    pub fn refused(&self, limit: &str) {
        refused(&self.name, limit);
    }
}

/// Count a TCP connection of `listener` refused by the limit `limit` (its
/// config key, e.g. `limits.max_connections`).
pub fn refused(listener: &str, limit: &str) {
    let reason = limit.rsplit('.').next().unwrap_or(limit);
    families().tcp_refused.with_label_values(&[listener, reason]).inc();
}

/// The detection-time histogram of a listener.
pub fn detection(listener: &str) -> Histogram {
    families().detection.with_label_values(&[listener])
}

/// The connect-time histogram of a backend pool.
pub fn connect(backend: &str) -> Histogram {
    families().connect.with_label_values(&[backend])
}

/// Count a TCP connection that ended.
pub fn connection_ended(listener: &str, protocol: &str, route: Option<&str>, outcome: Outcome) {
    families().tcp_connections.with_label_values(&[listener, protocol, route.unwrap_or("-"), outcome.label()]).inc();
}

/// The byte counters of one route, resolved when its snapshot is built.
#[derive(Debug, Clone)]
pub struct RouteBytes {
    up: IntCounter,
    down: IntCounter,
}

impl RouteBytes {
    pub fn new(route: &str) -> Self {
        let f = families();
        RouteBytes {
            up: f.route_bytes.with_label_values(&[route, "up"]),
            down: f.route_bytes.with_label_values(&[route, "down"]),
        }
    }

    /// Count the bytes of a connection that ended.
    pub fn add(&self, up: u64, down: u64) {
        if up > 0 {
            self.up.inc_by(up);
        }
        if down > 0 {
            self.down.inc_by(down);
        }
    }
}

/// The counters of one UDP listener, resolved when it is set up.
pub struct UdpMetrics {
    pub sessions: IntCounter,
    pub open: IntGauge,
    pub refused: IntCounter,
    pub up: IntCounter,
    pub down: IntCounter,
    pub dropped: IntCounter,
}

impl UdpMetrics {
    pub fn new(listener: &str) -> Self {
        let f = families();
        UdpMetrics {
            sessions: f.udp_sessions.with_label_values(&[listener]),
            open: f.udp_open.with_label_values(&[listener]),
            refused: f.udp_refused.with_label_values(&[listener]),
            up: f.udp_datagrams.with_label_values(&[listener, "up"]),
            down: f.udp_datagrams.with_label_values(&[listener, "down"]),
            dropped: f.udp_dropped.with_label_values(&[listener]),
        }
    }
}

/// Count a reload tried.
pub fn reloaded(ok: bool) {
    families().reloads.with_label_values(&[if ok { "ok" } else { "failed" }]).inc();
}

/// The counters of one plugin, shared by every instance of it that any
/// snapshot loads.
pub struct PluginCounters {
    failures: [AtomicU64; Cause::ALL.len()],
    /// [`crate::clock::now_ms`] until which the plugin is disabled (0: it
    /// is not).
    pub disabled_until: AtomicU64,
    /// Set once the plugin has been loaded as a hook: its hook counters are
    /// shown.
    pub is_hook: std::sync::atomic::AtomicBool,
    /// Detector calls into the sandbox, and how long they took.
    pub detector_calls: IntCounter,
    pub call_seconds: Histogram,
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
    fn new(name: &str) -> Self {
        let f = families();
        PluginCounters {
            failures: Default::default(),
            disabled_until: AtomicU64::new(0),
            is_hook: Default::default(),
            detector_calls: f.plugin_calls.with_label_values(&[name]),
            call_seconds: f.plugin_call_seconds.with_label_values(&[name]),
            sessions: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            closes: AtomicU64::new(0),
        }
    }

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
    map.entry(name.to_string()).or_insert_with(|| Arc::new(PluginCounters::new(name))).clone()
}

/// The families read off the snapshot in force (its pools and its
/// config's hash) and the plugins' counters when `/metrics` is asked for.
fn scraped(pools: &NameMap<Arc<Pool>>, config_hash: &str) -> Registry {
    let r = Registry::new();
    let up = gauges(
        &r,
        "refractium_server_up",
        "Whether a backend server is taken as up (1) or down (0).",
        &["backend", "server"],
    );
    let active = gauges(
        &r,
        "refractium_server_active_connections",
        "Connections open to a backend server now.",
        &["backend", "server"],
    );
    let failed = counters(
        &r,
        "refractium_server_connect_failures_total",
        "Connects to a backend server that failed or timed out (since it joined the pool).",
        &["backend", "server"],
    );
    for (name, pool) in pools {
        for server in &pool.members().servers {
            let labels = [name.as_str(), &server.addr.to_string()];
            up.with_label_values(&labels).set(i64::from(server.is_up()));
            active.with_label_values(&labels).set(i64::try_from(server.active()).unwrap_or(i64::MAX));
            failed.with_label_values(&labels).inc_by(server.connect_failures());
        }
    }
    let config = gauges(
        &r,
        "refractium_config_info",
        "The configuration in force: 1, labelled with its file's SHA-256 (first 16 hex digits).",
        &["hash"],
    );
    config.with_label_values(&[config_hash]).set(1);

    let failures = counters(
        &r,
        "refractium_plugin_failures_total",
        "Plugin calls that failed, by plugin and cause (trap, time, overload, memory, output, refused, instantiate).",
        &["plugin", "cause"],
    );
    let disabled = gauges(
        &r,
        "refractium_plugin_disabled",
        "Whether the plugin is disabled now after failing again and again (1) or not (0).",
        &["plugin"],
    );
    let hook_families = [
        counters(&r, "refractium_hook_sessions_total", "Hook sessions opened, one per hooked connection.", &["hook"]),
        counters(&r, "refractium_hook_calls_total", "Hook calls (on-data, on-end) that answered.", &["hook"]),
        counters(&r, "refractium_hook_bytes_in_total", "Bytes handed to the hook.", &["hook"]),
        counters(&r, "refractium_hook_bytes_out_total", "Bytes the hook forwarded.", &["hook"]),
        counters(&r, "refractium_hook_closes_total", "Connections the hook ended by answering or closing.", &["hook"]),
    ];
    let plugins: Vec<(String, Arc<PluginCounters>)> = {
        let map = plugins().lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        map.iter().map(|(name, counters)| (name.clone(), counters.clone())).collect()
    };
    let now = crate::clock::now_ms();
    for (name, c) in &plugins {
        for cause in Cause::ALL {
            failures.with_label_values(&[name.as_str(), cause.label()]).inc_by(c.failures(cause));
        }
        disabled.with_label_values(&[name.as_str()]).set(i64::from(c.disabled_until.load(Ordering::Relaxed) > now));
        if c.is_hook.load(Ordering::Relaxed) {
            let values = [&c.sessions, &c.calls, &c.bytes_in, &c.bytes_out, &c.closes];
            for (family, value) in hook_families.iter().zip(values) {
                family.with_label_values(&[name.as_str()]).inc_by(value.load(Ordering::Relaxed));
            }
        }
    }
    r
}

/// Every metric in the Prometheus text exposition format (0.0.4).
pub fn render(snapshot: &Snapshot) -> String {
    render_parts(&snapshot.pools, &snapshot.config.hash)
}

fn render_parts(pools: &NameMap<Arc<Pool>>, config_hash: &str) -> String {
    let mut all = families().registry.gather();
    all.extend(scraped(pools, config_hash).gather());
    all.sort_by(|a, b| a.name().cmp(b.name()));
    let mut out = Vec::new();
    if let Err(err) = TextEncoder::new().encode(&all, &mut out) {
        tracing::error!(error = %err, "metrics could not be encoded");
    }
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered() -> String {
        render_parts(&NameMap::default(), "")
    }

    #[test]
    fn families_have_help_type_and_labels() {
        reloaded(true);
        let m = TcpListenerMetrics::new("metrics-test");
        m.accepted.inc();
        let _open = Held::new(&m.open);
        m.refused("limits.max_connections_per_ip");
        connection_ended("metrics-test", "http", Some("web"), Outcome::Routed);
        RouteBytes::new("web").add(10, 20);
        let text = rendered();
        assert!(text.contains("# TYPE refractium_reloads_total counter\n"), "{text}");
        assert!(text.contains("refractium_reloads_total{outcome=\"ok\"} "), "{text}");
        assert!(text.contains("refractium_tcp_connections_open{listener=\"metrics-test\"} 1\n"), "{text}");
        assert!(
            text.contains("refractium_tcp_connections_refused_total{listener=\"metrics-test\",reason=\"max_connections_per_ip\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "refractium_tcp_connections_total{listener=\"metrics-test\",outcome=\"routed\",protocol=\"http\",route=\"web\"} 1\n"
            ),
            "{text}"
        );
        assert!(text.contains("refractium_route_bytes_total{direction=\"down\",route=\"web\"} 20\n"), "{text}");
        assert!(text.contains("refractium_config_info{hash=\"\"} 1\n"), "{text}");
        // Each family once, with its help.
        let families: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).collect();
        let mut unique = families.clone();
        unique.dedup();
        assert_eq!(families.len(), unique.len(), "{text}");
        assert_eq!(text.lines().filter(|l| l.starts_with("# HELP")).count(), families.len());
    }

    #[test]
    fn plugin_failures_are_counted_by_plugin_and_cause() {
        let counters = plugin("metrics-test \"odd\" name");
        counters.failed(Cause::Refused);
        counters.failed(Cause::Refused);
        counters.failed(Cause::Time);
        let text = rendered();
        let line = |cause: &str| {
            format!("refractium_plugin_failures_total{{cause=\"{cause}\",plugin=\"metrics-test \\\"odd\\\" name\"}} ")
        };
        assert!(text.contains(&format!("{}2\n", line("refused"))), "{text}");
        assert!(text.contains(&format!("{}1\n", line("time"))), "{text}");
        assert!(text.contains(&format!("{}0\n", line("memory"))), "{text}");
        assert!(text.contains("refractium_plugin_disabled{plugin=\"metrics-test \\\"odd\\\" name\"} 0\n"), "{text}");
    }
}
