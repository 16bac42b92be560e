//! The dashboard at `GET /` of the admin listener: a page that loads
//! nothing but itself, the `/status` fields it draws (plugin failures by
//! cause, the last reloads), and the page itself in Debian's chromium,
//! driven by the Node harness of `tests/e2e/dashboard/` (playwright-core,
//! which `.ci/run` installs with `npm ci`) while HTTP traffic flows.

use crate::support::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";

fn harness_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/e2e/dashboard")
}

/// A listener `edge` sending HTTP to the route `web` (backend `web`), with
/// an admin listener and no file watcher (only `POST /reload` reloads).
fn config(backend: &Backend, route: &str) -> String {
    format!(
        "listeners:\n  - name: edge\n    bind: 127.0.0.1:0\n    detectors: [http]\n    default: fallback\nroutes:\n  - name: web\n    match: {{ protocol: http }}\n    to: {route}\n  - name: fallback\n    to: web\nbackends:\n  web: {{ servers: [{}] }}\nadmin: {{ bind: 127.0.0.1:0 }}\nreload: {{ watch: false }}\n",
        backend.addr
    )
}

fn admin_addr(proxy: &Proxy) -> String {
    let line = proxy.wait_log(10, |v| v["message"] == "admin listening");
    line["addr"].as_str().expect("admin addr").to_string()
}

/// `request` sent to the admin listener; the whole response.
fn admin_raw(admin: &str, request: &str) -> String {
    let mut c = TcpStream::connect(admin).expect("connect admin");
    c.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    c.write_all(request.as_bytes()).expect("write");
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    out
}

/// One rejected reload (a route to a backend that does not exist), then
/// one accepted.
fn reload_twice(proxy: &Proxy, admin: &str, backend: &Backend) {
    let file = proxy.dir.path().join("refractium.yaml");
    let post = format!("POST /reload HTTP/1.1\r\nHost: {admin}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    std::fs::write(&file, config(backend, "nowhere")).expect("write config");
    let rejected = admin_raw(admin, &post);
    assert!(rejected.starts_with("HTTP/1.1 422"), "{rejected}");
    std::fs::write(&file, config(backend, "web")).expect("write config");
    let accepted = admin_raw(admin, &post);
    assert!(accepted.starts_with("HTTP/1.1 200"), "{accepted}");
}

#[test]
fn the_page_loads_nothing_else_and_status_has_what_it_draws() {
    let backend = Backend::start(Reply::Http("hello"));
    let proxy = Proxy::start(&config(&backend, "web"));
    let admin = admin_addr(&proxy);

    let page = admin_raw(&admin, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let (head, body) = page.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("Content-Type: text/html; charset=utf-8"), "{head}");
    assert!(head.contains("Content-Security-Policy: default-src 'none';"), "{head}");
    assert!(body.starts_with("<!doctype html>") && body.trim_end().ends_with("</html>"));
    // Inline CSS and JS; the only URL in it is the SVG namespace.
    for external in ["<script src", "<link rel=\"stylesheet\"", "@import", "url("] {
        assert!(!body.contains(external), "the page loads `{external}`");
    }
    let urls: Vec<&str> = body.match_indices("http").map(|(i, _)| &body[i..(i + 30).min(body.len())]).collect();
    assert!(urls.iter().all(|u| u.starts_with("http://www.w3.org/2000/svg")), "{urls:?}");
    let refused = admin_raw(&admin, "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n");
    assert!(refused.starts_with("HTTP/1.1 405"), "{refused}");

    let status: Value = serde_json::from_str(&proxy.admin_get("/status")).expect("status is JSON");
    assert_eq!(status["reloads"], serde_json::json!([]));
    let http = status["plugins"].as_array().and_then(|p| p.iter().find(|p| p["name"] == "http")).expect("http");
    let causes = ["trap", "time", "overload", "memory", "output", "refused", "instantiate"];
    for cause in causes {
        assert_eq!(http["failures"][cause], 0, "{http}");
    }
    assert_eq!(http["failures"].as_object().map(|f| f.len()), Some(causes.len()), "{http}");

    reload_twice(&proxy, &admin, &backend);
    let status: Value = serde_json::from_str(&proxy.admin_get("/status")).expect("status is JSON");
    let reloads = status["reloads"].as_array().expect("reloads");
    assert_eq!(reloads.len(), 2, "{status}");
    assert_eq!(
        (&reloads[0]["ok"], &reloads[0]["via"], &reloads[0]["error"]),
        (&true.into(), &"POST /reload".into(), &Value::Null)
    );
    assert_eq!(reloads[1]["ok"], false);
    assert!(reloads[1]["error"].as_str().is_some_and(|e| e.contains("nowhere")), "{}", reloads[1]);
    assert!(reloads[0]["at_unix"].as_u64() >= reloads[1]["at_unix"].as_u64());
    // The last reload is still shown on its own.
    assert_eq!(status["last_reload"], reloads[0]);
}

/// The numbers a read of the harness found for the route `web`.
fn route_total(read: &Value, route: &str) -> u64 {
    let rows = read["routes"].as_array().cloned().unwrap_or_default();
    let row = rows.iter().find(|r| r["route"] == route).unwrap_or_else(|| panic!("no route {route} in {read}"));
    row["total"].as_str().and_then(|t| t.parse().ok()).unwrap_or_else(|| panic!("route total in {row}"))
}

#[test]
fn the_dashboard_shows_live_traffic_in_chromium() {
    if !have("node") {
        return;
    }
    if !Path::new(CHROMIUM).exists() {
        missing(&format!("{CHROMIUM} is not installed (apt-get install chromium)"));
        return;
    }
    if !harness_dir().join("node_modules/playwright-core").is_dir() {
        missing("playwright-core is not installed (`npm ci` in tests/e2e/dashboard)");
        return;
    }
    let backend = Backend::start(Reply::Http("hello"));
    let proxy = Proxy::start(&config(&backend, "web"));
    let admin = admin_addr(&proxy);
    reload_twice(&proxy, &admin, &backend);

    // HTTP through the proxy while the page polls: bounded in count and time.
    let edge = proxy.addr("edge");
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let traffic = {
        let (stop, answered) = (stop.clone(), answered.clone());
        thread::spawn(move || {
            let started = Instant::now();
            for _ in 0..2000 {
                if stop.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(90) {
                    break;
                }
                if let Ok(mut c) = TcpStream::connect_timeout(&edge, Duration::from_secs(5)) {
                    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                    if c.write_all(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n").is_ok() && reply(&mut c).ends_with("hello") {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                }
                thread::sleep(Duration::from_millis(40));
            }
        })
    };

    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let url = format!("http://{admin}/");
    let started = Instant::now();
    let (ok, out, err) =
        run_cmd(Command::new("node").arg("harness.mjs").arg(&url).arg(&shot).arg("5").current_dir(harness_dir()), 120);
    stop.store(true, Ordering::Relaxed);
    let _ = traffic.join();
    eprintln!("harness: {:.1?}, {} requests answered meanwhile", started.elapsed(), answered.load(Ordering::Relaxed));
    let report: Value = out
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("the harness printed no JSON (ok: {ok}):\n{out}\n{err}"));
    assert!(ok && report["error"].is_null(), "the harness failed:\n{report:#}\n{err}");

    assert_eq!(report["consoleErrors"], serde_json::json!([]), "{report:#}");
    assert_eq!(report["pageErrors"], serde_json::json!([]), "{report:#}");
    assert_eq!(report["foreign"], serde_json::json!([]), "the page asked for other origins: {report:#}");
    // Escaped label values, floats, timestamps, +Inf (JSON null), a trailing
    // comma; a line that is no sample is skipped.
    let parsed = serde_json::json!([
        {"name": "refractium_x_total", "labels": {"route": "a \"quoted\" \\ name", "protocol": "http"}, "value": 12},
        {"name": "refractium_y", "labels": {}, "value": 0.25},
        {"name": "refractium_z", "labels": {"le": "+Inf"}, "value": null},
        {"name": "refractium_w", "labels": {"a": "1"}, "value": 300},
    ]);
    assert_eq!(report["parsed"], parsed);
    let (first, second) = (&report["first"], &report["second"]);
    assert_eq!(second["pollState"], "ok", "{second:#}");
    assert!(second["polls"].as_u64() > first["polls"].as_u64(), "the page did not poll again: {report:#}");

    let edge_row = second["listeners"].as_array().and_then(|l| l.iter().find(|l| l["listener"] == "edge"));
    let edge_row = edge_row.unwrap_or_else(|| panic!("no listener edge: {second:#}"));
    assert_eq!(edge_row["transport"], "tcp");
    let text = edge_row["text"].as_str().unwrap_or_default();
    // The bind address as configured, and the detector.
    assert!(text.contains("127.0.0.1:0") && text.contains("http"), "{edge_row}");

    let server = second["servers"].as_array().and_then(|s| s.iter().find(|s| s["server"] == backend.addr.to_string()));
    let server = server.unwrap_or_else(|| panic!("no server {}: {second:#}", backend.addr));
    assert_eq!((&server["backend"], &server["up"]), (&"web".into(), &"true".into()), "{server}");

    let http = second["plugins"].as_array().and_then(|p| p.iter().find(|p| p["plugin"] == "http"));
    let http = http.unwrap_or_else(|| panic!("no plugin http: {second:#}"));
    assert_eq!(
        (&http["kind"], &http["disabled"], &http["failures"]),
        (&"detector".into(), &"false".into(), &"0".into())
    );

    let reloads = second["reloads"].as_array().cloned().unwrap_or_default();
    assert_eq!(reloads.len(), 2, "{second:#}");
    assert_eq!((&reloads[0]["reloadOk"], &reloads[0]["via"]), (&"true".into(), &"POST /reload".into()));
    assert_eq!(reloads[1]["reloadOk"], "false");
    assert!(reloads[1]["text"].as_str().is_some_and(|t| t.contains("nowhere")), "{}", reloads[1]);
    assert_eq!(
        (&second["tiles"]["reloadsOk"], &second["tiles"]["reloadsFailed"]),
        (&1.into(), &1.into()),
        "{second:#}"
    );

    // The count of the route moved while traffic flowed, and shows in its chart.
    let (before, after) = (route_total(first, "web"), route_total(second, "web"));
    assert!(after > before, "the route's count did not move: {before} then {after}\n{report:#}");
    assert!(second["chartLines"]["route"].as_u64() >= Some(1), "{second:#}");
    assert!(shot.exists(), "no screenshot at {}", shot.display());
}
