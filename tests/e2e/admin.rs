//! The admin listener: `GET /status`, `POST /reload`, `GET /metrics`, driven
//! with curl as an operator would.

use crate::support::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

fn admin_addr(proxy: &Proxy) -> String {
    let line = proxy.wait_log(10, |v| v["message"] == "admin listening");
    line["addr"].as_str().expect("admin addr").to_string()
}

#[test]
fn status_reload_and_metrics_over_http() {
    if !have("curl") {
        return;
    }
    let a = Backend::start(Reply::Record("a"));
    let b = Backend::start(Reply::Record("b"));
    // Only POST /reload reloads (no file watcher): the counts below are exact.
    let yaml = |to: &str| {
        format!(
            "listeners:\n  - name: edge\n    bind: 127.0.0.1:0\n    detectors: [http]\n    default: web\nroutes:\n  - name: web\n    to: {to}\nbackends:\n  a: {{ servers: [{}] }}\n  b: {{ servers: [{}] }}\nadmin: {{ bind: 127.0.0.1:0 }}\nreload: {{ watch: false }}\n",
            a.addr, b.addr
        )
    };
    let proxy = Proxy::start(&yaml("a"));
    let admin = admin_addr(&proxy);
    let curl = |args: &[&str]| run_cmd(Command::new("curl").args(["-sS", "-m", "10"]).args(args), 15);

    let (ok, out, err) = curl(&[&format!("http://{admin}/status")]);
    assert!(ok, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).expect("status is JSON");
    assert_eq!(status["listeners"][0]["name"], "edge");
    assert_eq!(status["routes"][0]["to"], "a");
    assert!(
        status["plugins"].as_array().is_some_and(|p| p.iter().any(|p| p["name"] == "http" && p["hash"].is_string()))
    );
    assert!(status["last_reload"].is_null());

    // Traffic shows in the metrics.
    let mut c = TcpStream::connect(proxy.addr("edge")).expect("connect");
    c.write_all(b"hello").expect("write");
    c.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut reply = String::new();
    let _ = c.read_to_string(&mut reply);
    assert_eq!(reply, "a\n");
    let (_, metrics, _) = curl(&[&format!("http://{admin}/metrics")]);
    assert!(metrics.lines().any(|l| l == "refractium_tcp_connections_accepted_total 1"), "{metrics}");

    // A rejected reload says why, and is counted; an accepted one applies.
    std::fs::write(proxy.dir.path().join("refractium.yaml"), yaml("nowhere")).expect("write");
    let (_, out, _) = curl(&["-X", "POST", &format!("http://{admin}/reload")]);
    let answer: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(answer["ok"], false);
    assert!(answer["error"].as_str().is_some_and(|e| e.contains("routes[0].to")), "{answer}");
    std::fs::write(proxy.dir.path().join("refractium.yaml"), yaml("b")).expect("write");
    let (_, out, _) = curl(&["-X", "POST", &format!("http://{admin}/reload")]);
    assert_eq!(out, r#"{"ok":true}"#);
    let (_, out, _) = curl(&[&format!("http://{admin}/status")]);
    let status: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(status["routes"][0]["to"], "b");
    assert_eq!(status["last_reload"]["ok"], true);
    let (_, metrics, _) = curl(&[&format!("http://{admin}/metrics")]);
    assert!(metrics.lines().any(|l| l == "refractium_reloads_total 1"), "{metrics}");
    assert!(metrics.lines().any(|l| l == "refractium_reload_failures_total 1"), "{metrics}");
    let (_, out, _) = curl(&["-o", "/dev/null", "-w", "%{http_code}", &format!("http://{admin}/nope")]);
    assert_eq!(out, "404");
}
