//! The soak: the real refractium binary, on a config of its own, under mixed
//! traffic at a modest pace for N minutes (HTTP, TLS by SNI, SSH, DNS over
//! UDP, and hostile clients: garbage, slowloris, a trapping plugin), with a
//! config reload every 10 s and the plugin file swapped every 30 s. Every
//! second it samples the proxy's open fds, RSS and the open-connection and
//! UDP-session gauges from `/metrics`. After the load it waits, bounded, for
//! fds and gauges to come back to the baseline taken after warm-up and checks
//! RSS against a bound; it fails if any does not, or if any ordinary client
//! got a wrong answer or an error. It does not measure speed.

mod traffic;

use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::procs;
use traffic::{Kind, Tally, Targets};

/// A UDP session ends after this long without a datagram.
const SESSION_TIMEOUT_SECS: u64 = 2;
/// Open fds may end this many above the baseline (a reload may leave a
/// watcher or a cached file open).
const FD_MARGIN: u64 = 8;
/// RSS may end at most at max(baseline × 1.5, baseline + 32 MiB).
const RSS_SLACK_KIB: u64 = 32 * 1024;
/// How long the drain after the load may take, on top of the session timeout.
const DRAIN_SECS: u64 = 30;

/// The trapping test plugin as the host's build leaves it, relative to the
/// `target` directory.
const TRAP_WASM: &str = "wasm-plugins/wasm32-wasip2/plugin/refractium_test_trap.wasm";

/// What a soak found; `passed` is the verdict, `markdown` the report.
pub struct Outcome {
    pub passed: bool,
    pub markdown: String,
}

/// One reading of the proxy.
#[derive(Clone, Copy, Default)]
struct Sample {
    fds: u64,
    rss_kib: u64,
    tcp_open: u64,
    udp_open: u64,
}

/// One figure of a sample, for the report's rows.
type Reading = fn(&Sample) -> u64;

struct Ports {
    tcp: u16,
    udp: u16,
    admin: u16,
    web: SocketAddr,
    ssh: SocketAddr,
    dns: SocketAddr,
}

/// The proxy's config; `generation` changes a comment and the detect
/// timeout, so every reload builds a snapshot that differs.
fn yaml(p: &Ports, trap: bool, generation: u64) -> String {
    let detectors = if trap { "[trap, tls, http, ssh]" } else { "[tls, http, ssh]" };
    let timeout = 3 + generation % 2;
    format!(
        "# soak config, generation {generation}
listeners:
  - name: edge
    bind: 127.0.0.1:{tcp}
    detectors: {detectors}
    detect: {{ max_bytes: 4096, timeout: {timeout}s }}
    default: sink
  - name: dns
    bind: 127.0.0.1:{udp}
    transport: udp
    detectors: [dns]
    default: dns
routes:
  - name: tls-a
    match: {{ protocol: tls, sni: a.soak.test }}
    to: web
  - name: tls-b
    match: {{ protocol: tls, sni: '*.soak.test' }}
    to: web
  - name: http
    match: {{ protocol: http }}
    to: web
  - name: ssh
    match: {{ protocol: ssh }}
    to: ssh
  - name: dns
    match: {{ protocol: dns }}
    to: dns
  - name: sink
    to: web
backends:
  web: {{ servers: [{web}] }}
  ssh: {{ servers: [{ssh}] }}
  dns: {{ servers: [{dns}] }}
plugins:
  dir: plugins.d
limits: {{ max_connections: 10000, max_connections_per_ip: 10000 }}
udp: {{ session_timeout: {SESSION_TIMEOUT_SECS}s, max_sessions: 10000, max_sessions_per_ip: 10000 }}
admin: {{ bind: 127.0.0.1:{admin} }}
log: {{ level: warn, format: json }}
",
        tcp = p.tcp,
        udp = p.udp,
        admin = p.admin,
        web = p.web,
        ssh = p.ssh,
        dns = p.dns,
    )
}

/// An HTTP/1.1 request to the admin listener; returns (status line, body).
pub(crate) fn admin(addr: SocketAddr, method: &str, path: &str) -> Result<(String, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).context("connect admin")?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text).context("read admin answer")?;
    let (head, body) = text.split_once("\r\n\r\n").context("admin answer without a head")?;
    Ok((head.lines().next().unwrap_or_default().to_string(), body.to_string()))
}

/// Sum of a metric over all its label sets, from Prometheus text.
fn metric_sum(text: &str, name: &str) -> u64 {
    metric_where(text, name, "")
}

/// Sum of a metric over the label sets whose line contains `labels`.
pub(crate) fn metric_where(text: &str, name: &str, labels: &str) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#') && l.contains(labels))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn sample(pid: u32, admin_addr: SocketAddr) -> Result<Sample> {
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).context("reading the proxy's fds")?.count() as u64;
    let (status, metrics) = admin(admin_addr, "GET", "/metrics")?;
    ensure!(status.contains(" 200"), "GET /metrics: {status}");
    Ok(Sample {
        fds,
        rss_kib: procs::rss_kib(pid),
        tcp_open: metric_sum(&metrics, "refractium_tcp_connections_open"),
        udp_open: metric_sum(&metrics, "refractium_udp_sessions_open"),
    })
}

/// Put a copy of `from` in place as `dir/trap.wasm` in one rename, so the
/// watcher never reads half a file.
fn install_plugin(from: &Path, dir: &Path) -> Result<()> {
    let tmp = dir.join("trap.wasm.part");
    fs::copy(from, &tmp).with_context(|| format!("copying {}", from.display()))?;
    fs::rename(&tmp, dir.join("trap.wasm")).context("renaming the plugin into place")
}

fn find_trap(binary: &Path) -> Option<PathBuf> {
    let from_binary = fs::canonicalize(binary).ok()?.parent()?.parent()?.join(TRAP_WASM);
    [from_binary, Path::new("target").join(TRAP_WASM)].into_iter().find(|p| p.is_file())
}

/// Run the soak for `minutes` against `binary`; the report says what held.
pub fn run(binary: &Path, minutes: f64) -> Result<Outcome> {
    ensure!(binary.is_file(), "no refractium binary at {} (build it first)", binary.display());
    ensure!(minutes > 0.0 && minutes <= 24.0 * 60.0, "--minutes must be in (0, 1440]");
    let load_for = Duration::from_secs_f64(minutes * 60.0);
    let mut notes = Vec::new();
    let trap = find_trap(binary);
    if trap.is_none() {
        notes.push(format!(
            "test plugin `trap` not found (target/{TRAP_WASM}): no trapping-plugin traffic, no plugin swaps"
        ));
    }

    let web_port = procs::free_port()?;
    let web: SocketAddr = ([127, 0, 0, 1], web_port).into();
    std::thread::spawn(move || crate::backend::serve(web, false));
    let p = Ports {
        tcp: procs::free_port()?,
        udp: procs::free_port()?,
        admin: procs::free_port()?,
        web,
        ssh: traffic::ssh_backend()?,
        dns: crate::udp::echo_server()?,
    };
    // The plugins dir must hold the plugin before the proxy starts: the
    // config's first detector names it. `start_refractium` uses this dir.
    let dir = std::env::temp_dir().join(format!("refractium-bench-soak-{}", std::process::id()));
    let plugins = dir.join("plugins.d");
    fs::create_dir_all(&plugins).with_context(|| format!("creating {}", plugins.display()))?;
    if let Some(trap) = &trap {
        install_plugin(trap, &plugins)?;
    }
    let (mut group, dir) = procs::start_refractium(binary, "soak", &yaml(&p, trap.is_some(), 0))?;
    let result = soak(&mut group, &dir, &p, trap.as_deref(), load_for, notes);
    drop(group);
    let _ = fs::remove_dir_all(&dir);
    result
}

fn soak(
    group: &mut procs::Group,
    dir: &Path,
    p: &Ports,
    trap: Option<&Path>,
    load_for: Duration,
    mut notes: Vec<String>,
) -> Result<Outcome> {
    let plugins = dir.join("plugins.d");
    let to = Targets { tcp: ([127, 0, 0, 1], p.tcp).into(), udp: ([127, 0, 0, 1], p.udp).into() };
    let admin_addr: SocketAddr = ([127, 0, 0, 1], p.admin).into();
    procs::wait_ready(group, to.tcp, Duration::from_secs(30))?;

    // Warm-up: a few of each ordinary kind, then let everything close.
    let never = AtomicBool::new(false);
    for n in 0..3 {
        for kind in [Kind::Http, Kind::Tls, Kind::Ssh, Kind::Dns] {
            traffic::once(kind, to, n, &never).with_context(|| format!("warm-up {}", kind.name()))?;
        }
    }
    let base = settle(group, admin_addr, None, Duration::from_secs(10 + SESSION_TIMEOUT_SECS))?;

    let kinds: Vec<Kind> = Kind::ALL.into_iter().filter(|k| *k != Kind::Trap || trap.is_some()).collect();
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let threads = traffic::start(&kinds, to, tally.clone(), stop.clone(), start + load_for + Duration::from_secs(20));
    // Plugin swaps every 30 s, or twice in a run shorter than a minute.
    let swap_every = Duration::from_secs(30).min(load_for / 2).max(Duration::from_secs(1));
    let (mut next_reload, mut next_swap) = (Duration::from_secs(10), swap_every);
    let (mut reloads, mut reload_failures, mut swaps, mut generation) = (0u64, Vec::new(), 0u64, 0u64);
    let mut samples = Vec::new();
    let mut died = None;
    while start.elapsed() < load_for {
        std::thread::sleep(Duration::from_secs(1).min(load_for.saturating_sub(start.elapsed())));
        if let Err(e) = group.check_alive() {
            died = Some(format!("{e:#}"));
            break;
        }
        match sample(group.pid, admin_addr) {
            Ok(s) => samples.push(s),
            Err(e) => notes.push(format!("a sample failed at {:.0} s: {e:#}", start.elapsed().as_secs_f64())),
        }
        if start.elapsed() >= next_reload {
            next_reload += Duration::from_secs(10);
            generation += 1;
            reloads += 1;
            let outcome = fs::write(dir.join("soak.yaml"), yaml(p, trap.is_some(), generation))
                .context("rewriting the config")
                .and_then(|()| admin(admin_addr, "POST", "/reload"));
            match outcome {
                Ok((status, body)) if status.contains(" 200") && body.contains(r#""ok":true"#) => {}
                Ok((status, body)) => reload_failures.push(format!("reload {reloads}: {status} {body}")),
                Err(e) => reload_failures.push(format!("reload {reloads}: {e:#}")),
            }
        }
        if let Some(trap) = trap
            && start.elapsed() >= next_swap
        {
            next_swap += swap_every;
            install_plugin(trap, &plugins)?;
            swaps += 1;
        }
    }
    let loaded = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let drain_start = Instant::now();
    let end = match &died {
        Some(_) => None,
        None => Some(settle(group, admin_addr, Some(base), Duration::from_secs(DRAIN_SECS + SESSION_TIMEOUT_SECS))?),
    };
    let drained_in = drain_start.elapsed();

    // The verdict.
    let mut failures = Vec::new();
    if let Some(d) = &died {
        // The headline names the exit; the log's last lines go below the tables.
        let (exit, log) = d.split_once("): ").unwrap_or((d.as_str(), ""));
        failures.push(format!("the proxy died: {exit})"));
        notes.push(format!("the proxy's last log lines: {log}"));
    }
    let rss_bound = (base.rss_kib * 3 / 2).max(base.rss_kib + RSS_SLACK_KIB);
    if let Some(end) = end {
        if end.fds > base.fds + FD_MARGIN {
            failures.push(format!("open fds {} did not return to baseline {} (+{FD_MARGIN})", end.fds, base.fds));
        }
        if end.tcp_open > base.tcp_open {
            failures.push(format!("{} TCP connections still open (baseline {})", end.tcp_open, base.tcp_open));
        }
        if end.udp_open > base.udp_open {
            failures.push(format!("{} UDP sessions still open (baseline {})", end.udp_open, base.udp_open));
        }
        if end.rss_kib > rss_bound {
            failures.push(format!("RSS {} KiB above the bound {rss_bound} KiB", end.rss_kib));
        }
    }
    let ordinary_failed: u64 = Kind::ALL.iter().filter(|k| !k.hostile()).map(|k| tally.get(*k).1).sum();
    if ordinary_failed > 0 {
        failures.push(format!("{ordinary_failed} ordinary clients failed"));
    }
    if !reload_failures.is_empty() {
        failures.push(format!("{} reloads failed", reload_failures.len()));
    }
    // What the proxy counted itself: reloads by any trigger (the watcher
    // reloads on every rewrite too) and the trapping plugin's failures.
    let metrics = match &died {
        Some(_) => String::new(),
        None => admin(admin_addr, "GET", "/metrics").map(|(_, body)| body).unwrap_or_default(),
    };
    let reloads_ok = metric_where(&metrics, "refractium_reloads_total", r#"outcome="ok""#);
    let reloads_failed = metric_where(&metrics, "refractium_reloads_total", r#"outcome="failed""#);
    if reloads_failed > 0 {
        failures.push(format!("the proxy counted {reloads_failed} failed reloads"));
    }

    let mut md = String::new();
    let _ = writeln!(md, "## refractium soak: {:.1} minutes of load\n", loaded.as_secs_f64() / 60.0);
    let _ = writeln!(
        md,
        "**{}**\n",
        if failures.is_empty() { "PASS".to_string() } else { format!("FAIL: {}", failures.join("; ")) }
    );
    let _ = writeln!(md, "| traffic | ok | failed |\n|---|---:|---:|");
    for kind in &kinds {
        let (ok, failed) = tally.get(*kind);
        let _ = writeln!(md, "| {} | {ok} | {failed} |", kind.name());
    }
    let _ = writeln!(
        md,
        "\nConfig reloads (rewrite + `POST /reload`, every 10 s): {reloads} done, {} failed. \
         Plugin swaps (`trap.wasm` replaced by rename, every {} s): {swaps}.\n",
        reload_failures.len(),
        swap_every.as_secs()
    );
    let _ = writeln!(
        md,
        "The proxy counted {reloads_ok} reloads in force and {reloads_failed} failed (`refractium_reloads_total`, \
         any trigger: `POST /reload` and its file watcher), {} trap failures of plugin `trap` at the end \
         (`refractium_plugin_failures_total`), `trap` disabled at the end: {}.\n",
        metric_where(&metrics, "refractium_plugin_failures_total", r#"plugin="trap""#),
        metric_where(&metrics, "refractium_plugin_disabled", r#"plugin="trap""#),
    );
    let _ = writeln!(
        md,
        "| per-second sample ({} taken) | baseline | min | max | final | must end |\n|---|---:|---:|---:|---:|---|",
        samples.len()
    );
    let fin = end.unwrap_or_default();
    let rows: [(&str, Reading, String); 4] = [
        ("open fds", |s| s.fds, format!("≤ baseline + {FD_MARGIN}")),
        ("RSS (KiB)", |s| s.rss_kib, format!("≤ {rss_bound} (max of +50 %, +32 MiB)")),
        ("`refractium_tcp_connections_open`", |s| s.tcp_open, "≤ baseline".into()),
        ("`refractium_udp_sessions_open`", |s| s.udp_open, "≤ baseline".into()),
    ];
    for (name, get, bound) in rows {
        let min = samples.iter().map(get).min().unwrap_or(0);
        let max = samples.iter().map(get).max().unwrap_or(0);
        let _ = writeln!(md, "| {name} | {} | {min} | {max} | {} | {bound} |", get(&base), get(&fin));
    }
    let _ = writeln!(
        md,
        "\nBack to baseline {:.1} s after the load stopped (UDP session timeout {SESSION_TIMEOUT_SECS} s, \
         limit {} s).",
        drained_in.as_secs_f64(),
        DRAIN_SECS + SESSION_TIMEOUT_SECS
    );
    for e in tally.errors().iter().chain(&reload_failures).chain(&notes) {
        let _ = writeln!(md, "- {e}");
    }
    Ok(Outcome { passed: failures.is_empty(), markdown: md })
}

/// Sample until every figure is back at `base` (or, with no base yet, until
/// no connection or session is open); returns the last sample.
fn settle(group: &mut procs::Group, admin_addr: SocketAddr, base: Option<Sample>, limit: Duration) -> Result<Sample> {
    let until = Instant::now() + limit;
    loop {
        group.check_alive()?;
        let s = sample(group.pid, admin_addr)?;
        let done = match base {
            None => s.tcp_open == 0 && s.udp_open == 0,
            Some(b) => s.tcp_open <= b.tcp_open && s.udp_open <= b.udp_open && s.fds <= b.fds + FD_MARGIN,
        };
        if done || Instant::now() >= until {
            if base.is_none() && !done {
                bail!("no quiet moment for a baseline within {limit:?}: {} TCP, {} UDP open", s.tcp_open, s.udp_open);
            }
            return Ok(s);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-minute version for CI, against the debug build: long enough
    /// for reloads (every 10 s) and plugin swaps (every 30 s) under the
    /// mixed and hostile traffic.
    #[test]
    fn a_short_soak_leaks_nothing_and_fails_no_ordinary_client() {
        let binary = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/refractium");
        if !binary.is_file() {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "no {} in CI", binary.display());
            eprintln!("SKIP: no {} (build refractium first)", binary.display());
            return;
        }
        let outcome = run(&binary, 1.0).expect("the soak ran");
        println!("{}", outcome.markdown);
        assert!(outcome.passed, "{}", outcome.markdown);
    }

    #[test]
    fn metric_sum_adds_every_label_set() {
        let text = "# HELP x y\nrefractium_tcp_connections_open{listener=\"a\"} 2\nrefractium_tcp_connections_open{listener=\"b\"} 3\nrefractium_tcp_connections_open_total 9\n";
        assert_eq!(metric_sum(text, "refractium_tcp_connections_open"), 5);
    }
}
