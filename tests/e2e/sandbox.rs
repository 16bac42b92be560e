//! Broken plugins: one loops forever, one traps, one eats memory. Each
//! misbehaving call ends as no-match, the log names the plugin and the cause,
//! and every other protocol keeps being routed.

use crate::support::*;
use std::time::{Duration, Instant};

fn broken_proxy() -> (Proxy, Backend, Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = dir.path().join("plugins.d");
    std::fs::create_dir(&plugins).expect("mkdir");
    for name in ["spin", "trap", "hog", "chatty"] {
        let built = test_plugins_dir().join(format!("refractium_test_{name}.wasm"));
        std::fs::copy(&built, plugins.join(format!("{name}.wasm"))).expect("copy test plugin");
    }
    let web = Backend::start(Reply::Http("web"));
    let fallback = Backend::start(Reply::Record("fallback"));
    let yaml = format!(
        r#"
listeners:
  - name: edge
    bind: 127.0.0.1:0
    detectors: [spin, trap, hog, chatty, http]
    detect: {{ timeout: 5s }}
    default: fallback
routes:
  - name: http
    match: {{ protocol: http }}
    to: web
  - name: fallback
    to: fallback
backends:
  web: {{ servers: [{web}] }}
  fallback: {{ servers: [{fallback}] }}
plugins:
  dir: plugins.d
  limits: {{ memory: 4MiB, call_timeout: 100ms }}
"#,
        web = web.addr,
        fallback = fallback.addr
    );
    (Proxy::start_in(dir, &yaml), web, fallback)
}

#[test]
fn looping_trapping_and_hungry_plugins_cannot_stop_routing() {
    let (proxy, web, fallback) = broken_proxy();
    for (trigger, plugin, cause) in [
        (&b"spin and spin"[..], "spin", "time budget"),
        (b"trap me", "trap", "trapped"),
        (b"hog! all the memory", "hog", "memory cap"),
    ] {
        let started = Instant::now();
        let reply = proxy.exchange("edge", trigger);
        assert_eq!(reply, "fallback\n", "{plugin}: the connection still goes to the default route");
        assert!(started.elapsed() < Duration::from_secs(5), "{plugin}: took {:?}", started.elapsed());
        let line = proxy
            .wait_log(10, |v| v["plugin"] == plugin && v["message"].as_str().is_some_and(|m| m.contains("failed")));
        assert!(line["cause"].as_str().is_some_and(|c| c.contains(cause)), "{plugin}: {line}");
        // HTTP, behind the broken detectors, still works every time.
        let reply = proxy.exchange("edge", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(reply.ends_with("web"), "{plugin}: {reply}");
    }
    assert_eq!(fallback.seen().len(), 3);
    assert_eq!(web.seen().len(), 3);
}

#[test]
fn a_plugin_that_keeps_failing_is_disabled_and_reported() {
    let (proxy, _web, fallback) = broken_proxy();
    for _ in 0..10 {
        assert_eq!(proxy.exchange("edge", b"trap trap"), "fallback\n");
    }
    let line =
        proxy.wait_log(10, |v| v["plugin"] == "trap" && v["message"].as_str().is_some_and(|m| m.contains("disabled")));
    assert_eq!(line["level"], "ERROR");
    // Disabled: the trigger no longer reaches the plugin, so no new failure.
    let failures = proxy.logs_where(|v| v["plugin"] == "trap" && v["cause"].is_string()).len();
    assert_eq!(proxy.exchange("edge", b"trap again"), "fallback\n");
    assert_eq!(proxy.logs_where(|v| v["plugin"] == "trap" && v["cause"].is_string()).len(), failures);
    assert_eq!(fallback.seen().len(), 11);
}

#[test]
fn a_chatty_plugin_is_truncated_and_rate_limited() {
    let (proxy, _web, fallback) = broken_proxy();
    assert_eq!(proxy.exchange("edge", b"chat chat"), "fallback\n");
    assert_eq!(proxy.exchange("edge", b"chat again"), "fallback\n");
    // 20,000 calls to `log` with 4 KiB each reach the log as at most 50 a
    // second, each cut to 1 KiB.
    let lines =
        proxy.logs_where(|v| v["plugin"] == "chatty" && v["message"].as_str().is_some_and(|m| m.starts_with("chatty")));
    assert!(!lines.is_empty() && lines.len() <= 100, "{} lines", lines.len());
    assert!(lines.iter().all(|l| l["message"].as_str().is_some_and(|m| m.len() <= 1024) && l["truncated"] == true));
    assert_eq!(fallback.seen().len(), 2);
}

#[test]
fn a_plugin_gets_no_files_no_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = dir.path().join("plugins.d");
    std::fs::create_dir(&plugins).expect("mkdir");
    std::fs::copy(test_plugins_dir().join("refractium_test_snoop.wasm"), plugins.join("snoop.wasm")).expect("copy");
    let cfg = dir.path().join("c.yaml");
    std::fs::write(
        &cfg,
        "listeners:\n  - name: edge\n    bind: 127.0.0.1:0\n    default: web\nroutes:\n  - name: web\n    to: web\nbackends:\n  web: { servers: [127.0.0.1:1] }\nplugins: { dir: plugins.d }\n",
    )
    .expect("write");
    let input = dir.path().join("snoop.bin");
    std::fs::write(&input, b"snoop around").expect("write");
    let (ok, out, err) = run_cmd(
        std::process::Command::new(bin())
            .args(["detect", "-c"])
            .arg(&cfg)
            .arg(&input)
            .env("REFRACTIUM_CACHE_DIR", cache_dir())
            .env("SECRET_TOKEN", "hunter2"),
        120,
    );
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(v["protocol"], "snoop", "{out}");
    assert!(v["attributes"]["file"].as_str().is_some_and(|f| f.starts_with("denied")), "{out}");
    assert_eq!(v["attributes"]["env"], "0", "{out}");
    assert_eq!(v["attributes"]["args"], "0", "{out}");
}
