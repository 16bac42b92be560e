//! The hostile-traffic scenarios of `tests/hostile` at full size, against
//! the real binary: 10,000 slowloris clients trickling into detection, a
//! flood of random bytes from many source ports, and a UDP flood from many
//! source ports. Each scenario gets a fresh proxy (so its memory figures
//! start clean) with realistic limits, measures ordinary clients before and
//! during the attack, and prints a markdown section; `--out` also writes
//! the summary table. Loopback only; every loop is bounded in count and time.

mod clients;
mod flood;
mod slowloris;
mod udp_flood;

use std::fmt::Write as _;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::procs;
use crate::soak::{admin, metric_where};

/// `detect.timeout` of the edge listener: long enough that 10,000 slow
/// clients opened at a bounded rate are all held at once.
pub const DETECT_TIMEOUT: Duration = Duration::from_secs(10);
/// `limits.max_connections_per_ip` (the default); attackers spread over
/// 127.0.0.0/8 to stay under it, ordinary clients come from 127.0.0.1.
pub const PER_IP: usize = 100;
/// `limits.max_connections`: room for the slowloris clients and the rest.
pub const MAX_CONNECTIONS: usize = 20_000;
/// `udp.max_sessions` and `udp.max_sessions_per_ip`.
pub const MAX_SESSIONS: u64 = 1000;
pub const SESSIONS_PER_IP: u64 = 100;

pub struct Opts {
    pub refractium: PathBuf,
    pub only: Vec<String>,
    pub secs: f64,
    pub slow: usize,
    pub out: Option<PathBuf>,
}

/// One line of the summary table.
pub struct Row {
    pub scenario: String,
    pub load: String,
    pub did: String,
    pub lost: String,
}

/// What a scenario returns: its summary row and its markdown section.
pub struct Outcome {
    pub row: Row,
    pub section: String,
}

const SCENARIOS: [&str; 3] = ["slowloris", "flood", "udp"];

pub fn run(opts: &Opts, nofile: u64) -> Result<()> {
    for o in &opts.only {
        if !SCENARIOS.contains(&o.as_str()) {
            bail!("unknown scenario `{o}` (known: {})", SCENARIOS.join(", "));
        }
    }
    if !opts.refractium.is_file() {
        bail!("no refractium binary at {} (build it first)", opts.refractium.display());
    }
    let secs = Duration::from_secs_f64(opts.secs.clamp(1.0, 60.0));
    let slow = opts.slow.clamp(1, 15_000);
    let wanted = |s: &str| opts.only.is_empty() || opts.only.iter().any(|o| o == s);
    let mut outcomes = Vec::new();
    let mut died = Vec::new();
    for name in SCENARIOS.into_iter().filter(|s| wanted(s)) {
        eprintln!("hostile: {name} …");
        let result = match name {
            "slowloris" => slowloris::run(&opts.refractium, slow),
            "flood" => flood::run(&opts.refractium, secs),
            _ => udp_flood::run(&opts.refractium, secs),
        };
        match result {
            Ok(o) => {
                println!("{}", o.section);
                outcomes.push(o);
            }
            Err(e) => {
                let msg = format!("{name}: {e:#}");
                eprintln!("hostile: {msg}");
                died.push(msg);
            }
        }
    }
    let md = report(&outcomes, &died, nofile);
    if let Some(out) = &opts.out {
        fs::write(out, &md).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("hostile: wrote {}", out.display());
    }
    if !died.is_empty() {
        bail!("{} scenario(s) could not finish: {}", died.len(), died.join("; "));
    }
    Ok(())
}

fn report(outcomes: &[Outcome], failed: &[String], nofile: u64) -> String {
    let mut md = String::from("# Hostile traffic at full size\n\n");
    let _ = writeln!(
        md,
        "Written by `refractium-bench hostile --out bench/results/hostile.md` on {}, {} cores, load average at \
         start {}, fd limit {nofile}. The real binary (release build) on loopback, a fresh process per scenario, \
         config: `detect: {{ max_bytes: 4096, timeout: {}s }}`, `limits: {{ max_connections: {MAX_CONNECTIONS}, \
         max_connections_per_ip: {PER_IP} }}`, `udp: {{ max_sessions: {MAX_SESSIONS}, max_sessions_per_ip: \
         {SESSIONS_PER_IP} }}`, two workers (one per core). The load generator, the backends and the proxy share \
         the cores. The CI-sized suite is `tests/hostile` (`docs/hostile.md`).\n",
        procs::sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        procs::sh("nproc", &[]),
        procs::load_average(),
        DETECT_TIMEOUT.as_secs(),
    );
    md += "| scenario | load | what the proxy did | what ordinary clients lost |\n| --- | --- | --- | --- |\n";
    for o in outcomes {
        let r = &o.row;
        let _ = writeln!(md, "| {} | {} | {} | {} |", r.scenario, r.load, r.did, r.lost);
    }
    for f in failed {
        let _ = writeln!(md, "| {f} | | did not finish | |");
    }
    for o in outcomes {
        md += "\n";
        md += &o.section;
    }
    md
}

/// Ports and backends of one proxy under test.
pub struct Proxy {
    pub group: procs::Group,
    dir: PathBuf,
    pub tcp: SocketAddr,
    pub udp: SocketAddr,
    pub admin: SocketAddr,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Proxy {
    /// Start the bench's HTTP backend, `dns` as the UDP backend, and the
    /// proxy in front of both; wait until it routes HTTP.
    pub fn start(binary: &Path, tag: &str, dns: SocketAddr) -> Result<Proxy> {
        let web: SocketAddr = ([127, 0, 0, 1], procs::free_port()?).into();
        std::thread::spawn(move || crate::backend::serve(web, false));
        let (tcp, udp, admin) = (procs::free_port()?, procs::free_port()?, procs::free_port()?);
        let yaml = format!(
            "listeners:
  - name: edge
    bind: 127.0.0.1:{tcp}
    detect: {{ max_bytes: 4096, timeout: {timeout}s }}
  - name: dns
    bind: 127.0.0.1:{udp}
    transport: udp
    detectors: [dns]
routes:
  - name: http
    match: {{ protocol: http }}
    to: web
  - name: dns
    match: {{ protocol: dns }}
    to: dns
backends:
  web: {{ servers: [{web}] }}
  dns: {{ servers: [{dns}] }}
limits: {{ max_connections: {MAX_CONNECTIONS}, max_connections_per_ip: {PER_IP} }}
udp: {{ session_timeout: 30s, max_sessions: {MAX_SESSIONS}, max_sessions_per_ip: {SESSIONS_PER_IP} }}
admin: {{ bind: 127.0.0.1:{admin} }}
log: {{ level: warn }}
",
            timeout = DETECT_TIMEOUT.as_secs()
        );
        let (mut group, dir) = procs::start_refractium(binary, &format!("hostile-{tag}"), &yaml)?;
        let tcp: SocketAddr = ([127, 0, 0, 1], tcp).into();
        procs::wait_ready(&mut group, tcp, Duration::from_secs(30))?;
        Ok(Proxy { group, dir, tcp, udp: ([127, 0, 0, 1], udp).into(), admin: ([127, 0, 0, 1], admin).into() })
    }

    /// The proxy's `/metrics` text.
    pub fn metrics(&self) -> Result<String> {
        let (status, body) = admin(self.admin, "GET", "/metrics")?;
        if !status.contains(" 200") {
            bail!("GET /metrics: {status}");
        }
        Ok(body)
    }

    /// Fail with the log's last lines if the proxy has exited.
    pub fn alive(&mut self) -> Result<()> {
        self.group.check_alive()
    }
}

/// Sum of `name` over the label sets containing `labels`.
pub fn metric(text: &str, name: &str, labels: &str) -> u64 {
    metric_where(text, name, labels)
}

/// `refractium_tcp_connections_total` by outcome for the edge listener,
/// as "n outcome, …" for the outcomes that occur.
pub fn outcomes(text: &str) -> String {
    let mut parts = Vec::new();
    for o in ["routed", "default", "timeout", "no_route", "refused", "client_error", "backend_failed", "shutdown"] {
        let n = metric(text, "refractium_tcp_connections_total", &format!(r#"outcome="{o}""#));
        if n > 0 {
            parts.push(format!("{n} `{o}`"));
        }
    }
    if parts.is_empty() { "none".into() } else { parts.join(", ") }
}

/// Source address number `i` in 127.`net`.0.0/16 (never .0 or .255).
pub fn source(net: u8, i: usize) -> Ipv4Addr {
    let i = i % (256 * 254);
    Ipv4Addr::new(127, net, (i / 254) as u8, (i % 254 + 1) as u8)
}

/// One reading of the proxy process.
#[derive(Clone, Copy)]
pub struct Reading {
    pub at: Instant,
    pub cpu: f64,
    pub rss_kib: u64,
}

/// Reads the proxy's CPU time and RSS every 200 ms until stopped.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Reading>>,
}

impl Sampler {
    pub fn start(pid: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut out = Vec::new();
            // Bounded: at most 10 minutes of samples.
            while !flag.load(Ordering::Relaxed) && out.len() < 3000 {
                out.push(Reading { at: Instant::now(), cpu: procs::cpu_secs(pid), rss_kib: procs::rss_kib(pid) });
                std::thread::sleep(Duration::from_millis(200));
            }
            out
        });
        Sampler { stop, thread }
    }

    pub fn stop(self) -> Vec<Reading> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// The proxy's CPU as % of one core between two instants, from samples.
pub fn cpu_pct(samples: &[Reading], from: Instant, to: Instant) -> f64 {
    let a = samples.iter().find(|s| s.at >= from);
    let b = samples.iter().rev().find(|s| s.at <= to);
    match (a, b) {
        (Some(a), Some(b)) if b.at > a.at => (b.cpu - a.cpu) * 100.0 / (b.at - a.at).as_secs_f64(),
        _ => f64::NAN,
    }
}

/// RSS at the first sample, the peak, and at the last sample, in MiB.
pub fn rss_mib(samples: &[Reading]) -> String {
    let mib = |k: u64| k as f64 / 1024.0;
    let first = samples.first().map_or(0, |s| s.rss_kib);
    let last = samples.last().map_or(0, |s| s.rss_kib);
    let peak = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    format!("{:.1} → peak {:.1} → {:.1} MiB", mib(first), mib(peak), mib(last))
}

/// The kernel's count of UDP datagrams dropped because a socket's receive
/// buffer was full (`RcvbufErrors` in /proc/net/snmp; the whole machine).
pub fn udp_rcvbuf_errors() -> u64 {
    let text = fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut lines = text.lines().filter(|l| l.starts_with("Udp: "));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else { return 0 };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// The `p` quantile of sorted values.
pub fn pct<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}
