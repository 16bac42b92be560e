//! `GET /metrics` as Prometheus sees it: the text passes `promtool check
//! metrics`, its labels say what happened to each connection, and a real
//! Prometheus server scraping the proxy answers queries that move while
//! traffic flows.

use crate::support::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

fn config(web: &Backend) -> String {
    format!(
        r#"
listeners:
  - name: edge
    bind: 127.0.0.1:0
    detectors: [tls, http, ssh]
    detect: {{ timeout: 2s }}
routes:
  - name: web
    match: {{ protocol: http }}
    to: web
  - name: shell
    match: {{ protocol: ssh }}
    to: nowhere
backends:
  web: {{ servers: [{}] }}
  nowhere: {{ servers: [127.0.0.1:1], retries: 0 }}
admin: {{ bind: 127.0.0.1:0 }}
"#,
        web.addr
    )
}

/// The value of one series in `text`, 0 if absent.
fn series(text: &str, line: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(line)?.strip_prefix(' ')?.parse().ok()).unwrap_or(0.0)
}

#[test]
fn connections_are_labelled_by_listener_protocol_route_and_outcome_and_promtool_accepts_the_text() {
    let web = Backend::start(Reply::Http("web"));
    let proxy = Proxy::start(&config(&web));
    for _ in 0..3 {
        assert!(proxy.exchange("edge", GET).ends_with("web"));
    }
    // An SSH client whose pool cannot be reached, and bytes nobody knows.
    let _ = proxy.exchange("edge", b"SSH-2.0-OpenSSH_9.2\r\n");
    let _ = proxy.exchange("edge", b"\x00\x01garbage that no detector claims\r\n");
    proxy.wait_access(5);
    // The gauge is let go just after the access line is written.
    proxy.wait_metric(10, r#"refractium_tcp_connections_open{listener="edge"}"#, |open| open == 0);
    let text = proxy.admin_get("/metrics");
    let total = |labels: &str| series(&text, &format!("refractium_tcp_connections_total{{{labels}}}"));
    assert_eq!(total(r#"listener="edge",outcome="routed",protocol="http",route="web""#), 3.0, "{text}");
    assert_eq!(total(r#"listener="edge",outcome="backend_failed",protocol="ssh",route="shell""#), 1.0, "{text}");
    assert_eq!(total(r#"listener="edge",outcome="no_route",protocol="-",route="-""#), 1.0, "{text}");
    assert_eq!(series(&text, r#"refractium_tcp_connections_accepted_total{listener="edge"}"#), 5.0, "{text}");
    assert_eq!(series(&text, r#"refractium_tcp_connections_open{listener="edge"}"#), 0.0, "{text}");
    assert_eq!(series(&text, r#"refractium_route_bytes_total{direction="up",route="web"}"#), 3.0 * GET.len() as f64);
    assert!(series(&text, r#"refractium_route_bytes_total{direction="down",route="web"}"#) > 0.0, "{text}");
    assert_eq!(series(&text, r#"refractium_detection_seconds_count{listener="edge"}"#), 5.0, "{text}");
    assert_eq!(series(&text, r#"refractium_backend_connect_seconds_count{backend="web"}"#), 3.0, "{text}");
    let server = |name: &str, backend: &str, addr: &str| {
        series(&text, &format!("{name}{{backend=\"{backend}\",server=\"{addr}\"}}"))
    };
    assert_eq!(server("refractium_server_up", "web", &web.addr.to_string()), 1.0, "{text}");
    assert_eq!(server("refractium_server_up", "nowhere", "127.0.0.1:1"), 0.0, "{text}");
    assert_eq!(server("refractium_server_connect_failures_total", "nowhere", "127.0.0.1:1"), 1.0, "{text}");
    assert!(series(&text, r#"refractium_plugin_calls_total{plugin="http"}"#) >= 3.0, "{text}");
    assert!(text.contains("refractium_config_info{hash=\""), "{text}");
    // Client-controlled values are never labels.
    assert!(!text.contains("client=") && !text.contains("sni="), "{text}");

    if !have("promtool") {
        return;
    }
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    check.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write to promtool");
    let out = check.wait_with_output().expect("promtool output");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics: {said}\n{text}");
}

/// A Prometheus server on loopback, scraping one target every second.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("prometheus.yml");
        let yaml = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: refractium\n    static_configs:\n      - targets: ['{target}']\n"
        );
        std::fs::write(&config, yaml).expect("write prometheus.yml");
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        let prometheus = Prometheus { child, port, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while prometheus.get("/-/ready").is_none_or(|(status, _)| status != 200) {
            assert!(Instant::now() < deadline, "prometheus did not become ready on port {port}");
            thread::sleep(Duration::from_millis(200));
        }
        prometheus
    }

    /// Status and body of a GET on its HTTP API, `None` if it does not answer.
    fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut c = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        c.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        write!(c, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut out = String::new();
        c.read_to_string(&mut out).ok()?;
        let (head, body) = out.split_once("\r\n\r\n")?;
        let status = head.split(' ').nth(1)?.parse().ok()?;
        Some((status, body.to_string()))
    }

    /// The value of an instant query that returns one number, `None` when
    /// it returns nothing (yet).
    fn query(&self, promql: &str) -> Option<f64> {
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let (_, body) = self.get(&format!("/api/v1/query?query={encoded}"))?;
        let v: Value = serde_json::from_str(&body).ok()?;
        v["data"]["result"].get(0)?["value"][1].as_str()?.parse().ok()
    }

    /// Wait (at most `secs`) until `promql` has a value satisfying `pred`.
    fn wait(&self, secs: u64, promql: &str, pred: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let value = self.query(promql);
            if let Some(v) = value.filter(|v| pred(*v)) {
                return v;
            }
            assert!(Instant::now() < deadline, "{promql} is {value:?} after {secs} s");
            thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_real_prometheus_scrapes_the_proxy_while_traffic_flows() {
    if !have("prometheus") {
        return;
    }
    let web = Backend::start(Reply::Http("web"));
    let proxy = Proxy::start(&config(&web));
    let admin = proxy.wait_log(10, |v| v["message"] == "admin listening");
    let admin = admin["addr"].as_str().expect("admin addr").to_string();
    let prometheus = Prometheus::start(&admin);

    // Clients keep coming while the queries run (bounded: at most 3 minutes).
    let stop = Arc::new(AtomicBool::new(false));
    let edge = proxy.addr("edge");
    let traffic = {
        let stop = stop.clone();
        thread::spawn(move || {
            let started = Instant::now();
            let mut served = 0u64;
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(180) {
                if let Ok(mut c) = TcpStream::connect(edge) {
                    let _ = c.write_all(GET);
                    let _ = c.read_to_end(&mut Vec::new());
                    served += 1;
                }
                thread::sleep(Duration::from_millis(20));
            }
            served
        })
    };
    let routed = r#"sum(refractium_tcp_connections_total{job="refractium",route="web",outcome="routed"})"#;
    let first = prometheus.wait(60, routed, |v| v > 0.0);
    // Later scrapes see more: the counter moves with the traffic.
    let later = prometheus.wait(60, routed, |v| v > first);
    assert!(later > first);
    let rate = prometheus.wait(60, r#"sum(rate(refractium_tcp_connections_total{route="web"}[5s]))"#, |v| v > 0.0);
    assert!(rate > 0.0);
    let up = format!(r#"refractium_server_up{{backend="web",server="{}"}}"#, web.addr);
    assert_eq!(prometheus.wait(30, &up, |_| true), 1.0);
    let p99 =
        r#"histogram_quantile(0.99, sum by (le) (rate(refractium_detection_seconds_bucket{listener="edge"}[10s])))"#;
    let p99 = prometheus.wait(60, p99, f64::is_finite);
    assert!(p99 > 0.0 && p99 <= 2.0, "detection p99 {p99} s");
    stop.store(true, Ordering::Relaxed);
    let served = traffic.join().expect("traffic");
    assert!(served as f64 >= later, "{served} served, Prometheus saw {later}");
}
