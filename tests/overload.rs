//! Overload is not failure. With every core saturated by CPU hog processes
//! and 64 clients connecting without pause for a minute, under the default
//! 10 ms call budget, the built-in detectors are never blamed and never
//! disabled, and every client is routed; a plugin that really spins is
//! still interrupted and disabled meanwhile.
//!
//! A test binary of its own: cargo runs test binaries one after another, so
//! the hogs slow no other test down.

#[path = "e2e/support.rs"]
mod support;

use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use support::*;

/// How long the clients keep coming.
const RUN: Duration = Duration::from_secs(60);
const CLIENTS: usize = 64;

/// CPU hog processes, killed when dropped.
struct Hogs(Vec<Child>);

impl Hogs {
    /// Two busy shell loops per core.
    fn start() -> Hogs {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let spawn = |_| Command::new("sh").args(["-c", "while :; do :; done"]).spawn().expect("start a CPU hog");
        Hogs((0..cores * 2).map(spawn).collect())
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        for hog in &mut self.0 {
            let _ = hog.kill();
            let _ = hog.wait();
        }
    }
}

/// The value of the metric line that starts with `prefix`, 0 if absent.
fn metric(metrics: &str, prefix: &str) -> u64 {
    metrics.lines().find_map(|l| l.strip_prefix(prefix)).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

#[test]
fn an_overloaded_machine_does_not_disable_healthy_detectors() {
    let web = Backend::start(Reply::Http("web"));
    let ssh = Backend::start(Reply::Banner("SSH-2.0-backend\r\n"));
    let tls = Backend::start(Reply::Record("tls"));
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("plugins.d")).expect("mkdir");
    std::fs::copy(test_plugins_dir().join("refractium_test_spin.wasm"), dir.path().join("plugins.d/spin.wasm"))
        .expect("copy spin");
    let yaml = format!(
        r#"
listeners:
  - name: edge
    bind: 127.0.0.1:0
    detectors: [tls, http, ssh]
    detect: {{ timeout: 30s }}
  - name: spinning
    bind: 127.0.0.1:0
    detectors: [spin, http]
    default: web
routes:
  - name: tls
    match: {{ protocol: tls }}
    to: tls
  - name: http
    match: {{ protocol: http }}
    to: web
  - name: ssh
    match: {{ protocol: ssh }}
    to: ssh
  - name: web
    to: web
backends:
  web: {{ servers: [{web}] }}
  ssh: {{ servers: [{ssh}] }}
  tls: {{ servers: [{tls}] }}
admin: {{ bind: 127.0.0.1:0 }}
limits: {{ max_connections_per_ip: 1000 }}
plugins:
  dir: plugins.d
  limits: {{ call_timeout: 10ms }}
"#,
        web = web.addr,
        ssh = ssh.addr,
        tls = tls.addr
    );
    let proxy = Proxy::start_in(dir, &yaml);
    let hello = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/corpus/tls/curl-tls12.bin"))
        .expect("a captured ClientHello");
    let flights: [(&[u8], &str); 3] = [
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", "web"),
        (b"SSH-2.0-OpenSSH_9.2\r\n", "SSH-2.0-backend"),
        (&hello, "tls"),
    ];

    let hogs = Hogs::start();
    let started = Instant::now();
    let (served, wrong) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let spinning_done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        for client in 0..CLIENTS {
            let (proxy, flights, served, wrong) = (&proxy, &flights, &served, &wrong);
            scope.spawn(move || {
                let mut i = client;
                while started.elapsed() < RUN {
                    let (flight, expected) = flights[i % flights.len()];
                    i += 1;
                    let reply = proxy.exchange("edge", flight);
                    if reply.contains(expected) {
                        served.fetch_add(1, Ordering::Relaxed);
                    } else {
                        wrong.fetch_add(1, Ordering::Relaxed);
                        eprintln!("client {client}: expected {expected:?}, got {reply:?}");
                    }
                }
            });
        }
        // Meanwhile a plugin that really spins, asked over and over: it is
        // interrupted every time and, ten failures on, disabled.
        let (proxy, spinning_done) = (&proxy, &spinning_done);
        scope.spawn(move || {
            for _ in 0..15 {
                let reply = proxy.exchange("spinning", b"spin, spin, spin");
                assert!(reply.contains("web"), "{reply:?}");
            }
            spinning_done.store(true, Ordering::SeqCst);
        });
    });
    drop(hogs);

    let (served, wrong) = (served.into_inner(), wrong.into_inner());
    let metrics = proxy.admin_get("/metrics");
    let failures = |plugin: &str, cause: &str| {
        metric(&metrics, &format!("refractium_plugin_failures_total{{cause=\"{cause}\",plugin=\"{plugin}\"}} "))
    };
    eprintln!(
        "{served} connections served in {:?} with the cores saturated; overload interruptions not blamed: tls {}, http {}, ssh {}",
        started.elapsed(),
        failures("tls", "overload"),
        failures("http", "overload"),
        failures("ssh", "overload"),
    );
    assert!(spinning_done.load(Ordering::SeqCst));
    assert_eq!(wrong, 0, "every client is routed");
    assert!(served >= CLIENTS, "{served} connections in a minute");
    for builtin in ["tls", "http", "ssh"] {
        for cause in ["time", "trap", "memory", "output", "refused"] {
            assert_eq!(failures(builtin, cause), 0, "{builtin} blamed for {cause}:\n{metrics}");
        }
        assert!(metrics.contains(&format!("refractium_plugin_disabled{{plugin=\"{builtin}\"}} 0")), "{metrics}");
    }
    let disabled =
        proxy.logs_where(|v| v["level"] == "ERROR" && v["message"].as_str().is_some_and(|m| m.contains("disabled")));
    assert!(disabled.iter().all(|l| l["plugin"] == "spin"), "{disabled:?}");
    assert!(!disabled.is_empty(), "the spinning plugin was not disabled:\n{}", proxy.output());
    assert!(failures("spin", "time") >= 10, "{metrics}");
    assert!(metrics.contains("refractium_plugin_disabled{plugin=\"spin\"} 1"), "{metrics}");
}
