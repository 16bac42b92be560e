//! Broken and hostile plugins: one loops forever, one traps, one eats
//! memory, one floods its answers, and an intruder reaches with the
//! standard library for what the sandbox does not grant (a sleep, a socket,
//! a name lookup, a file, a directory, `exit`). Each misbehaving call ends
//! as no-match, the log and the access log name the plugin and the cause,
//! `/metrics` counts it, and every ordinary connection is still routed.
//! The harmless grants (stdout into the log, an empty environment, clocks,
//! random bytes) work.

use crate::support::*;
use crate::udp_backend::*;
use std::time::{Duration, Instant};

/// Copy test plugin `built` into `dir/plugins.d` as `name.wasm`.
fn install(dir: &tempfile::TempDir, built: &str, name: &str) {
    let plugins = dir.path().join("plugins.d");
    std::fs::create_dir_all(&plugins).expect("mkdir");
    let from = test_plugins_dir().join(format!("refractium_test_{built}.wasm"));
    std::fs::copy(&from, plugins.join(format!("{name}.wasm"))).expect("copy test plugin");
}

fn broken_proxy() -> (Proxy, Backend, Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    for name in ["spin", "trap", "hog", "chatty"] {
        install(&dir, name, name);
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

/// No line of the proxy's own output speaks of a panic (a plugin's stderr,
/// logged under its name, may: that is the guest's panic, which trapped).
fn assert_no_panic(proxy: &Proxy) {
    let output = proxy.output();
    for line in output.lines() {
        let from_plugin = serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| v["plugin"].is_string());
        assert!(from_plugin || !line.to_lowercase().contains("panic"), "a panic in the log: {line}\n{output}");
    }
}

#[test]
fn looping_trapping_and_hungry_plugins_cannot_stop_routing() {
    let (proxy, web, fallback) = broken_proxy();
    for (trigger, plugin, cause, words) in [
        (&b"spin and spin"[..], "spin", "time", "time budget"),
        (b"trap me", "trap", "trap", "trapped"),
        (b"hog! all the memory", "hog", "memory", "memory cap"),
    ] {
        let started = Instant::now();
        let reply = proxy.exchange("edge", trigger);
        assert_eq!(reply, "fallback\n", "{plugin}: the connection still goes to the default route");
        assert!(started.elapsed() < Duration::from_secs(5), "{plugin}: took {:?}", started.elapsed());
        let line = proxy.wait_log(10, |v| v["plugin"] == plugin && v["cause"].is_string());
        assert_eq!(line["level"], "WARN", "{line}");
        assert_eq!(line["cause"], cause, "{plugin}: {line}");
        assert!(line["detail"].as_str().is_some_and(|d| d.contains(words)), "{plugin}: {line}");
        // The connection's access-log line says which plugin failed and why.
        let prefix = format!("{plugin} ({cause}): ");
        let access = proxy.wait_log(10, |v| {
            v["target"] == "refractium::access" && v["plugin_errors"].as_str().is_some_and(|e| e.starts_with(&prefix))
        });
        assert_eq!(access["route"], "fallback", "{access}");
        // HTTP, behind the broken detectors, still works every time.
        let reply = proxy.exchange("edge", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(reply.ends_with("web"), "{plugin}: {reply}");
    }
    assert_eq!(fallback.seen().len(), 3);
    assert_eq!(web.seen().len(), 3);
    // What the hungry plugin's allocator wrote to stderr is one log line.
    let said = proxy.wait_log(10, |v| v["plugin"] == "hog" && v["level"] == "WARN" && v["cause"].is_null());
    assert!(said["message"].as_str().is_some_and(|m| m.starts_with("memory allocation of ")), "{said}");
    assert_no_panic(&proxy);
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

/// Plugin files, like the built-ins, are not called for a TCP flight whose
/// first byte they turned down at load (`spin` and `trap` want their
/// names): HTTP requests reach `http` without a call into either.
#[test]
fn plugin_files_are_not_called_for_first_bytes_they_turn_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    install(&dir, "spin", "spin");
    install(&dir, "trap", "trap");
    let web = Backend::start(Reply::Http("web"));
    let fallback = Backend::start(Reply::Record("fallback"));
    let yaml = format!(
        "listeners:\n  - name: edge\n    bind: 127.0.0.1:0\n    detectors: [spin, trap, http]\n    default: fallback\nroutes:\n  - name: http\n    match: {{ protocol: http }}\n    to: web\n  - name: fallback\n    to: fallback\nbackends:\n  web: {{ servers: [{}] }}\n  fallback: {{ servers: [{}] }}\nplugins:\n  dir: plugins.d\nadmin: {{ bind: 127.0.0.1:0 }}\n",
        web.addr, fallback.addr
    );
    let proxy = Proxy::start_in(dir, &yaml);
    let calls = |plugin: &str| proxy.metric(&format!("refractium_plugin_calls_total{{plugin=\"{plugin}\"}}"));
    for _ in 0..20 {
        assert!(proxy.exchange("edge", b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ends_with("web"));
    }
    assert_eq!((calls("spin"), calls("trap")), (0, 0));
    assert!(calls("http") >= 20);
    // A flight starting with `s` is `spin`'s to judge, and still not `trap`'s.
    assert_eq!(proxy.exchange("edge", b"stop it\r\n"), "fallback\n");
    assert!(calls("spin") >= 1);
    assert_eq!(calls("trap"), 0);
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

/// The harmless grants, through `refractium detect`: an empty environment,
/// no arguments, no working directory; clocks that read; random seeds.
#[test]
fn a_plugin_gets_an_empty_environment_and_working_clocks() {
    let dir = tempfile::tempdir().expect("tempdir");
    install(&dir, "snoop", "snoop");
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
    let attr = |k: &str| v["attributes"][k].as_str().unwrap_or_default().to_string();
    // No working directory is given; the C library then says `/`.
    assert_eq!((attr("env"), attr("args"), attr("cwd")), ("0".into(), "0".into(), "/".into()), "{out}");
    assert_eq!(attr("random"), "true", "{out}");
    assert!(attr("wall").parse::<u64>().is_ok_and(|s| s > 1_700_000_000), "{out}");
    assert!(attr("elapsed_ns").parse::<u64>().is_ok(), "{out}");
}

/// Intruders and what each is refused: (plugin name, what it tries, the
/// import named in the failure).
const INTRUDERS: [(&str, &str, &str); 4] = [
    ("sleeper", "sleep", "wasi:clocks/monotonic-clock"),
    ("dialer", "socket", "wasi:sockets/"),
    ("resolver", "resolve", "wasi:sockets/"),
    ("quitter", "exit", "wasi:cli/exit"),
];

/// Intruders that look for files: the filesystem they are given has no
/// directories, so their C library finds nothing and nothing traps (the
/// start-up of language runtimes asks for the directories too).
const BLIND: [(&str, &str); 2] = [("reader", "read-file"), ("lister", "list-dir")];

/// A proxy with a TCP listener per intruder (`<name>` then `http`), and a
/// UDP listener with the sleeper before `dns`.
fn intruders_proxy(dns: std::net::SocketAddr, web: &Backend) -> Proxy {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut listeners = String::new();
    let mut config = String::new();
    let all = INTRUDERS.iter().map(|(name, attempt, _)| (name, attempt)).chain(BLIND.iter().map(|(n, a)| (n, a)));
    for (name, attempt) in all {
        install(&dir, "intruder", name);
        listeners.push_str(&format!(
            "  - name: {name}\n    bind: 127.0.0.1:0\n    detectors: [{name}, http]\n    default: web\n"
        ));
        config.push_str(&format!("    {name}: {{ try: {attempt} }}\n"));
    }
    let yaml = format!(
        r#"
listeners:
{listeners}  - name: dns
    bind: 127.0.0.1:0
    transport: udp
    detectors: [sleeper, dns]
routes:
  - name: http
    match: {{ protocol: http }}
    to: web
  - name: dns
    match: {{ protocol: dns }}
    to: dns
  - name: web
    to: web
backends:
  web: {{ servers: [{web}] }}
  dns: {{ servers: [{dns}] }}
admin: {{ bind: 127.0.0.1:0 }}
plugins:
  dir: plugins.d
  config:
{config}"#,
        web = web.addr,
    );
    Proxy::start_in(dir, &yaml)
}

/// Every intruder fails where the sandbox draws the line, and its listener
/// keeps serving every ordinary client: 200 HTTP connections each, and 20
/// DNS queries behind a detector that sleeps.
#[test]
fn intruders_cannot_make_ordinary_connections_fail() {
    let web = Backend::start(Reply::Http("web"));
    let dns = UdpBackend::start(dns_answer);
    let proxy = intruders_proxy(dns.addr, &web);
    std::thread::scope(|scope| {
        for name in INTRUDERS.iter().map(|i| i.0).chain(BLIND.iter().map(|b| b.0)) {
            let proxy = &proxy;
            scope.spawn(move || {
                for i in 0..200 {
                    let reply = proxy.exchange(name, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
                    assert!(reply.starts_with("HTTP/1.1 200") && reply.ends_with("web"), "{name} #{i}: {reply:?}");
                }
            });
        }
    });
    let udp = client();
    for id in 0..20u16 {
        udp.send_to(&dns_query(id), proxy.addr("dns")).expect("send query");
        let mut buf = [0u8; 512];
        let (n, _) = udp.recv_from(&mut buf).expect("a DNS answer");
        assert!(n > 12 && buf[..2] == id.to_be_bytes(), "answer to query {id}");
    }
    for (name, _, import) in INTRUDERS {
        let line = proxy.wait_log(10, |v| v["plugin"] == name && v["level"] == "WARN" && v["cause"].is_string());
        assert_eq!(line["cause"], "refused", "{name}: {line}");
        let detail = line["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(import), "{name}: {detail}");
        let prefix = format!("{name} (refused): called {import}");
        proxy.wait_log(10, |v| {
            v["target"] == "refractium::access" && v["plugin_errors"].as_str().is_some_and(|e| e.starts_with(&prefix))
        });
        // Failing on every call, it is switched off after a while.
        proxy.wait_log(10, |v| v["plugin"] == name && v["level"] == "ERROR");
    }
    let metrics = proxy.admin_get("/metrics");
    for (name, _, _) in INTRUDERS {
        let line = format!("refractium_plugin_failures_total{{cause=\"refused\",plugin=\"{name}\"}} ");
        let count = metrics.lines().find_map(|l| l.strip_prefix(&line)).unwrap_or("0");
        assert!(count.parse::<u64>().is_ok_and(|n| n >= 10), "{name}: {count}\n{metrics}");
        assert!(metrics.contains(&format!("refractium_plugin_disabled{{plugin=\"{name}\"}} 1")), "{metrics}");
    }
    for (name, attempt) in BLIND {
        let said = proxy.wait_log(10, |v| v["plugin"] == name && v["level"] == "ERROR" && v["message"].is_string());
        let message = said["message"].as_str().unwrap_or_default();
        assert!(message.starts_with(&format!("intruder: {attempt} failed:")), "{name}: {said}");
        assert!(metrics.contains(&format!("refractium_plugin_disabled{{plugin=\"{name}\"}} 0")), "{metrics}");
    }
    assert_eq!(web.seen().len(), (INTRUDERS.len() + BLIND.len()) * 200);
    assert_no_panic(&proxy);
}

/// What is granted works in place: stdout and stderr lines reach the log
/// under the plugin's name, the environment is empty, nothing fails.
#[test]
fn stdout_goes_to_the_log_and_the_environment_is_empty() {
    let web = Backend::start(Reply::Http("web"));
    let dir = tempfile::tempdir().expect("tempdir");
    install(&dir, "intruder", "printer");
    install(&dir, "intruder", "looker");
    let yaml = format!(
        r#"
listeners:
  - name: edge
    bind: 127.0.0.1:0
    detectors: [printer, looker, http]
routes:
  - name: http
    match: {{ protocol: http }}
    to: web
backends:
  web: {{ servers: [{web}] }}
plugins:
  dir: plugins.d
  config:
    printer: {{ try: stdout }}
    looker: {{ try: env }}
"#,
        web = web.addr
    );
    let proxy = Proxy::start_in(dir, &yaml);
    for _ in 0..5 {
        let reply = proxy.exchange("edge", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(reply.ends_with("web"), "{reply}");
    }
    let out = proxy.wait_log(10, |v| v["plugin"] == "printer" && v["message"] == "intruder writes to stdout");
    assert_eq!(out["level"], "INFO");
    let err = proxy.wait_log(10, |v| v["plugin"] == "printer" && v["message"] == "intruder writes to stderr");
    assert_eq!(err["level"], "WARN");
    let seen =
        proxy.wait_log(10, |v| v["plugin"] == "looker" && v["message"].as_str().is_some_and(|m| m.contains("saw")));
    assert_eq!(seen["message"], "intruder: saw 0 environment variables, 0 arguments, working directory /", "{seen}");
    assert!(proxy.logs_where(|v| v["cause"].is_string()).is_empty(), "{}", proxy.output());
    assert!(proxy.access().iter().all(|a| a["plugin_errors"] == "-"));
}

/// Answers too large to take are refused before they are copied: 100,000
/// attributes, a 10 MiB value, 100,000 values that all point at one 1 MiB
/// string. Each is a plugin failure of cause `output`; HTTP still works.
#[test]
fn oversized_answers_are_refused() {
    let web = Backend::start(Reply::Http("web"));
    let dir = tempfile::tempdir().expect("tempdir");
    let floods = ["attributes", "string", "aliased"];
    let mut listeners = String::new();
    let mut config = String::new();
    for how in floods {
        install(&dir, "flood", &format!("flood-{how}"));
        listeners.push_str(&format!(
            "  - name: {how}\n    bind: 127.0.0.1:0\n    detectors: [flood-{how}, http]\n    default: web\n"
        ));
        config.push_str(&format!("    flood-{how}: {{ flood: {how} }}\n"));
    }
    let yaml = format!(
        "listeners:\n{listeners}routes:\n  - name: http\n    match: {{ protocol: http }}\n    to: web\n  - name: web\n    to: web\nbackends:\n  web: {{ servers: [{}] }}\nplugins:\n  dir: plugins.d\n  limits: {{ memory: 64MiB, call_timeout: 1s }}\n  config:\n{config}",
        web.addr
    );
    let proxy = Proxy::start_in(dir, &yaml);
    for how in floods {
        let reply = proxy.exchange(how, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(reply.ends_with("web"), "{how}: {reply}");
        let plugin = format!("flood-{how}");
        let line = proxy.wait_log(10, |v| v["plugin"] == plugin.as_str() && v["cause"].is_string());
        assert_eq!(line["cause"], "output", "{how}: {line}");
    }
    assert_no_panic(&proxy);
}

/// A UDP detector call that takes long runs beside the socket: a client
/// whose datagram keeps `spin` busy does not hold up another client's DNS
/// query, which is answered while the first is still being looked at.
#[test]
fn a_slow_udp_detection_does_not_hold_up_other_clients() {
    let dns = UdpBackend::start(dns_answer);
    let other = UdpBackend::start(echo);
    let dir = tempfile::tempdir().expect("tempdir");
    install(&dir, "spin", "spin");
    let yaml = format!(
        r#"
listeners:
  - name: edge
    bind: 127.0.0.1:0
    transport: udp
    detectors: [spin, dns]
    default: other
routes:
  - name: dns
    match: {{ protocol: dns }}
    to: dns
  - name: other
    to: other
backends:
  dns: {{ servers: [{dns}] }}
  other: {{ servers: [{other}] }}
plugins:
  dir: plugins.d
  limits: {{ call_timeout: 1s }}
"#,
        dns = dns.addr,
        other = other.addr
    );
    let proxy = Proxy::start_in(dir, &yaml);
    let addr = proxy.addr("edge");
    // `spin` loops on this one until its budget is spent (seconds).
    let slow = client();
    slow.send_to(b"spin, spin, spin", addr).expect("send");
    std::thread::sleep(Duration::from_millis(100));
    let quick = client();
    quick.send_to(&dns_query(7), addr).expect("send query");
    let mut buf = [0u8; 512];
    let (n, _) = quick.recv_from(&mut buf).expect("the DNS answer");
    assert!(n > 12 && buf[..2] == 7u16.to_be_bytes());
    assert!(other.seen().is_empty(), "the slow client was routed before the quick one was answered");
    // The slow one is routed once its detector gives up.
    other.wait_seen(1);
    let line = proxy.wait_log(10, |v| v["plugin"] == "spin" && v["cause"].is_string());
    assert_eq!(line["cause"], "time", "{line}");
}
