//! File descriptors: the open-file limit is raised at start, `check` warns
//! when it cannot hold the configured limits, and running out pauses
//! accepting without blaming any backend.

use crate::support::*;
use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

fn config(backend: &Backend, limits: &str) -> String {
    config_with(backend, "", limits)
}

/// [`config`] with `web_extra` in backend `web`'s entry (a `health` key).
fn config_with(backend: &Backend, web_extra: &str, limits: &str) -> String {
    format!(
        r#"
listeners:
  - name: edge
    bind: 127.0.0.1:0
    detectors: [http]
    detect: {{ timeout: 30s }}
routes:
  - name: web
    match: {{ protocol: http }}
    to: web
backends:
  web: {{ servers: [{}]{web_extra} }}
runtime: {{ workers: 1 }}
{limits}
"#,
        backend.addr
    )
}

/// `refractium ARGS… -c FILE` under `ulimit -n LIMIT` (soft and hard).
fn under_limit(limit: u32, args: &str, file: &std::path::Path) -> Command {
    let mut sh = Command::new("sh");
    sh.arg("-c").arg(format!(r#"ulimit -n {limit} && exec "$0" {args} -c "$1""#)).arg(bin()).arg(file);
    sh
}

#[test]
fn check_warns_when_the_open_file_limit_cannot_hold_the_limits() {
    let backend = Backend::start(Reply::Http("web"));
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("refractium.yaml");
    std::fs::write(&file, config(&backend, "limits: { max_connections: 10000 }")).expect("write");
    let (ok, out, err) = run_cmd(under_limit(256, "check", &file).env("REFRACTIUM_CACHE_DIR", cache_dir()), 120);
    assert!(ok, "a warning is not an error: {out}{err}");
    let want = "warning: the open-file limit (256) cannot hold limits.max_connections (10000, two descriptors each) \
                and udp.max_sessions (10000): 30064 needed";
    assert!(out.contains(want), "{out}");

    std::fs::write(&file, config(&backend, "limits: { max_connections: 50 }\nudp: { max_sessions: 10 }"))
        .expect("write");
    let (ok, out, err) = run_cmd(under_limit(256, "check", &file).env("REFRACTIUM_CACHE_DIR", cache_dir()), 120);
    assert!(ok && !out.contains("open-file limit"), "{out}{err}");
}

#[test]
fn out_of_descriptors_the_proxy_pauses_accepting_blames_no_backend_and_recovers() {
    let backend = Backend::start(Reply::Http("web"));
    // Health checks every 50 ms, down after one failure: a check that
    // fails for this host's shortage must not count against the server.
    let health = ", health: { interval: 50ms, timeout: 1s, rise: 1, fall: 1 }";
    let yaml = config_with(&backend, health, "limits: { max_connections: 1000 }");
    let proxy = Proxy::start_with(tempfile::tempdir().expect("tempdir"), &yaml, |file| {
        let mut run = under_limit(96, "run", file);
        run.stdin(Stdio::null());
        run
    });
    proxy
        .wait_log(10, |v| v["message"].as_str().is_some_and(|m| m.starts_with("the open-file limit (96) cannot hold")));
    // Clients that stay in detection, each holding a descriptor, until the
    // proxy has none left; the rest wait in the accept queue.
    let addr = proxy.addr("edge");
    let mut held = Vec::new();
    for _ in 0..150 {
        let mut c = TcpStream::connect(addr).expect("connect (the queue takes it)");
        c.write_all(b"GET / HTTP/1.1\r\n").expect("write");
        held.push(c);
    }
    let warned = proxy.wait_log(20, |v| v["message"].as_str().is_some_and(|m| m.starts_with("accept failed;")));
    assert!(warned["error"].as_str().is_some_and(|e| e.contains("Too many open files")), "{warned}");
    // Out of descriptors for half a second: some ten health checks meet the
    // shortage.
    std::thread::sleep(Duration::from_millis(500));

    // Finishing requests now needs a backend descriptor each: a client is
    // served, or closed for this host's shortage, never for the server's.
    // The five finish at once: a descriptor one of them frees goes to the
    // next, or to the accept queue within 10 ms, so some meet the shortage.
    let mut finishing: Vec<TcpStream> = held.drain(..5).collect();
    for c in &mut finishing {
        c.write_all(b"Host: x\r\nConnection: close\r\n\r\n").expect("write");
    }
    let served = finishing.iter_mut().map(reply).filter(|r| r.ends_with("web")).count();
    let shortage =
        |v: &serde_json::Value| v["close"].as_str().is_some_and(|c| c.contains("this host: Too many open files"));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while served + proxy.logs_where(shortage).len() < 5 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let short = proxy.logs_where(shortage);
    assert_eq!(served + short.len(), 5, "each finished client is served or closed for the shortage: {short:?}");
    assert!(!short.is_empty(), "no client met the shortage: the test proves nothing:\n{}", proxy.output());

    // Released, the proxy serves again by itself.
    drop(held);
    let mut recovered = false;
    for _ in 0..100 {
        let mut c = TcpStream::connect(addr).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("write");
        if reply(&mut c).ends_with("web") {
            recovered = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(recovered, "not serving after the descriptors were freed:\n{}", proxy.output());
    assert!(proxy.logs_where(|v| v["message"] == "backend server marked down").is_empty(), "{}", proxy.output());
    assert!(
        proxy.logs_where(|v| v["message"] == "health check: server is down").is_empty(),
        "a health check blamed the server for this host's shortage:\n{}",
        proxy.output()
    );
    let warnings = proxy.logs_where(|v| v["message"].as_str().is_some_and(|m| m.starts_with("accept failed;")));
    assert!(warnings.len() <= 1 + 20, "at most one warning a second: {}", warnings.len());
}

#[test]
fn the_soft_open_file_limit_is_raised_to_the_hard_one() {
    let backend = Backend::start(Reply::Http("web"));
    let yaml = config(&backend, "limits: { max_connections: 100 }");
    let proxy = Proxy::start_with(tempfile::tempdir().expect("tempdir"), &yaml, |file| {
        let mut sh = Command::new("sh");
        sh.arg("-c")
            .arg(r#"ulimit -Sn 128 && ulimit -Hn 4096 && exec "$0" run -c "$1""#)
            .arg(bin())
            .arg(file)
            .stdin(Stdio::null());
        sh
    });
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", proxy.pid())).expect("/proc/PID/limits");
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("the open-file line");
    assert_eq!(line.split_whitespace().collect::<Vec<_>>()[3..5], ["4096", "4096"], "{line}");
}
