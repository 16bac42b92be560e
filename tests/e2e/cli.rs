//! The command line: `check` errors that name file, line and key; `detect`
//! JSON; `plugins`.

use crate::support::*;
use std::process::Command;

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

/// `refractium check -c FILE` with the shared plugin cache: (ok, stdout, stderr).
fn check(file: &std::path::Path, secs: u64) -> (bool, String, String) {
    run_cmd(Command::new(bin()).args(["check", "-c"]).arg(file).env("REFRACTIUM_CACHE_DIR", cache_dir()), secs)
}

#[test]
fn check_names_file_line_and_key_and_binds_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "bad.yaml",
        "listeners:\n  - name: edge\n    bind: 127.0.0.1:0\n    default: nowhere\nroutes:\n  - name: web\n    to: missing_pool\nbackends:\n  web: { servers: [127.0.0.1:1] }\n",
    );
    for sub in ["check", "run"] {
        let (ok, _out, err) =
            run_cmd(Command::new(bin()).args([sub, "-c"]).arg(&file).env("REFRACTIUM_CACHE_DIR", cache_dir()), 60);
        assert!(!ok, "{sub} must fail");
        let f = file.display().to_string();
        assert!(err.contains(&format!("{f}:4:")) && err.contains("listeners[0].default"), "{sub}: {err}");
        assert!(err.contains(&format!("{f}:7:")) && err.contains("routes[0].to"), "{sub}: {err}");
    }
}

#[test]
fn check_reports_an_unknown_key_and_an_unknown_detector() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file =
        write(dir.path(), "typo.yaml", "listeners:\n  - name: edge\n    bind: 127.0.0.1:0\n    detectorz: [tls]\n");
    let (ok, _, err) = check(&file, 60);
    assert!(!ok);
    assert!(err.contains(":4:") && err.contains("detectorz"), "{err}");

    let file = write(
        dir.path(),
        "nodet.yaml",
        "listeners:\n  - name: edge\n    bind: 127.0.0.1:0\n    detectors: [tls, gopher]\n    default: web\nroutes:\n  - name: web\n    to: web\nbackends:\n  web: { servers: [127.0.0.1:1] }\n",
    );
    let (ok, _, err) = check(&file, 60);
    assert!(!ok);
    assert!(err.contains(":4:") && err.contains("listeners[0].detectors[1]") && err.contains("gopher"), "{err}");
}

#[test]
fn check_names_the_line_of_a_config_a_built_in_refuses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "pattern.yaml",
        "listeners:\n  - name: edge\n    bind: 127.0.0.1:0\n    default: web\nroutes:\n  - name: web\n    to: web\nbackends:\n  web: { servers: [127.0.0.1:1] }\nplugins:\n  config:\n    pattern:\n      rules:\n        - protocol: gopher\n          prefix: \"\"\n",
    );
    let (ok, _, err) = check(&file, 60);
    assert!(!ok);
    let f = file.display().to_string();
    assert!(err.contains(&format!("{f}:12:")) && err.contains("plugins.config.pattern"), "{err}");
    assert!(err.contains("rules[0]") && err.contains("prefix"), "{err}");
}

#[test]
fn check_accepts_the_shipped_configs() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for file in ["config/refractium.yaml", "config/examples/sslh-like.yaml", "config/examples/sni-routing.yaml"] {
        let (ok, out, err) = check(&root.join(file), 120);
        assert!(ok, "{file}: {err}");
        assert!(out.contains("is valid") && out.contains("tls"), "{file}: {out}");
    }
}

#[test]
fn check_shows_the_engine_falling_back_when_address_space_is_short() {
    // Under a 32 GiB address-space limit neither plugin memory pool can be
    // reserved: `check` still validates the config, and says on stderr what
    // `run` would log, so the operator learns it before starting the proxy.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let (ok, out, err) = run_cmd(
        Command::new("sh")
            .args(["-c", "ulimit -v 33554432 && exec \"$0\" check -c \"$1\""])
            .arg(bin())
            .arg(root.join("config/refractium.yaml"))
            .env("REFRACTIUM_CACHE_DIR", cache_dir()),
        120,
    );
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("is valid"), "{out}");
    assert!(err.contains("cannot reserve 4 GiB of address space per plugin memory"), "{err}");
    assert!(err.contains("pooling allocator unavailable"), "{err}");
}

#[test]
fn detect_prints_json_per_file_and_per_flight() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hello = include_bytes!("../../plugin-sdk/src/testdata/openssl_client_hello.bin");
    let whole = write(dir.path(), "hello.bin", "");
    std::fs::write(&whole, hello).expect("write");
    let http = write(dir.path(), "http.bin", "GET / HTTP/1.1\r\nHost: Example.COM:8080\r\n\r\n");
    let junk = write(dir.path(), "junk.bin", "\u{1}\u{2}\u{3}zzz");
    let (a, b) = hello.split_at(100);
    let part1 = dir.path().join("part1.bin");
    let part2 = dir.path().join("part2.bin");
    std::fs::write(&part1, a).expect("write");
    std::fs::write(&part2, b).expect("write");

    let (ok, out, err) = run_cmd(
        Command::new(bin())
            .current_dir(dir.path())
            .arg("detect")
            .args([&whole, &http, &junk])
            .env("REFRACTIUM_CACHE_DIR", cache_dir()),
        120,
    );
    assert!(ok, "{err}");
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).expect("json line")).collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(lines[0]["protocol"], "tls");
    assert_eq!(lines[0]["sni"], "www.example.com");
    assert_eq!(lines[0]["alpn"], serde_json::json!(["h2", "http/1.1"]));
    assert_eq!(lines[1]["protocol"], "http");
    assert_eq!(lines[1]["attributes"]["host"], "example.com");
    assert_eq!(lines[2]["protocol"], serde_json::Value::Null);
    assert_eq!(lines[2]["file"], junk.display().to_string());

    // The first 100 bytes alone are not enough; the flight of both is.
    let (ok, out, _) = run_cmd(
        Command::new(bin()).current_dir(dir.path()).arg("detect").arg(&part1).env("REFRACTIUM_CACHE_DIR", cache_dir()),
        120,
    );
    assert!(ok);
    assert!(out.contains("\"protocol\":null"), "{out}");
    let (ok, out, _) = run_cmd(
        Command::new(bin())
            .current_dir(dir.path())
            .args(["detect", "--flight"])
            .args([&part1, &part2])
            .env("REFRACTIUM_CACHE_DIR", cache_dir()),
        120,
    );
    assert!(ok);
    let flight: serde_json::Value = serde_json::from_str(out.trim()).expect("one json object");
    assert_eq!(flight["sni"], "www.example.com");
}

#[test]
fn plugins_lists_the_builtins_and_a_broken_file_is_skipped_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = dir.path().join("plugins.d");
    std::fs::create_dir(&plugins).expect("mkdir");
    std::fs::write(plugins.join("broken.wasm"), b"\0asm this is not a component").expect("write");
    let cfg = write(
        dir.path(),
        "c.yaml",
        "listeners:\n  - name: edge\n    bind: 127.0.0.1:0\n    default: web\nroutes:\n  - name: web\n    to: web\nbackends:\n  web: { servers: [127.0.0.1:1] }\nplugins: { dir: plugins.d }\n",
    );
    let (ok, out, err) =
        run_cmd(Command::new(bin()).args(["plugins", "-c"]).arg(&cfg).env("REFRACTIUM_CACHE_DIR", cache_dir()), 120);
    assert!(ok, "{err}");
    for name in ["tls", "http2", "http", "ssh"] {
        assert!(out.lines().any(|l| l.starts_with(name) && l.contains("builtin")), "{name}: {out}");
    }
    assert!(out.contains("skipped") && out.contains("broken.wasm"), "{out}");
    // `check` says so and fails; `run` still starts with the others.
    let (ok, _, _) = check(&cfg, 120);
    assert!(!ok);
}

/// `refractium plugins` says when a hook file is called through its
/// component rather than its main module, and why.
#[test]
fn plugins_says_why_a_hook_file_is_called_through_its_component() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = dir.path().join("plugins.d");
    std::fs::create_dir(&plugins).expect("mkdir");
    std::fs::copy(test_plugins_dir().join("refractium_test_testhook.wasm"), plugins.join("watch.wasm"))
        .expect("copy testhook");
    let list = |direct: bool| {
        let cfg = write(
            dir.path(),
            "c.yaml",
            &format!(
                "listeners:\n  - name: edge\n    bind: 127.0.0.1:0\n    default: web\nroutes:\n  - name: web\n    to: web\nbackends:\n  web: {{ servers: [127.0.0.1:1] }}\nplugins: {{ dir: plugins.d, direct_calls: {direct} }}\n"
            ),
        );
        let (ok, out, err) = run_cmd(
            Command::new(bin()).args(["plugins", "-c"]).arg(&cfg).env("REFRACTIUM_CACHE_DIR", cache_dir()),
            120,
        );
        assert!(ok, "{err}");
        assert!(out.lines().any(|l| l.starts_with("watch") && l.contains("hook")), "{out}");
        out
    };
    let out = list(true);
    assert!(!out.contains("through its component"), "the test hook imports only what the direct path serves: {out}");
    let out = list(false);
    assert!(
        out.contains("watch is called through its component (slower than directly): `plugins.direct_calls` is off"),
        "{out}"
    );
}

/// `refractium hook` runs a hook over files as one side's chunks and says
/// what the other side would receive and what the hook did.
#[test]
fn hook_runs_a_hook_over_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = dir.path().join("plugins.d");
    std::fs::create_dir(&plugins).expect("mkdir");
    for name in ["shout", "guard"] {
        std::fs::copy(test_plugins_dir().join("refractium_test_testhook.wasm"), plugins.join(format!("{name}.wasm")))
            .expect("copy testhook");
    }
    let cfg = dir.path().join("c.yaml");
    std::fs::write(
        &cfg,
        "listeners:\n  - name: edge\n    bind: 127.0.0.1:0\n    default: web\nroutes:\n  - name: web\n    to: web\nbackends:\n  web: { servers: [127.0.0.1:1] }\nplugins:\n  dir: plugins.d\n  config:\n    shout: { mode: upper }\n    guard: { mode: deny }\n",
    )
    .expect("write config");
    let (a, b) = (dir.path().join("a.bin"), dir.path().join("b.bin"));
    std::fs::write(&a, b"hello ").expect("write");
    std::fs::write(&b, b"forbidden world").expect("write");
    let hook = |args: &[&str]| {
        let (ok, out, err) = run_cmd(
            std::process::Command::new(bin())
                .arg("hook")
                .args(args)
                .arg("-c")
                .arg(&cfg)
                .arg(&a)
                .arg(&b)
                .env("REFRACTIUM_CACHE_DIR", cache_dir()),
            120,
        );
        assert!(ok, "{err}");
        serde_json::from_str::<serde_json::Value>(out.trim()).expect("one JSON object")
    };
    let v = hook(&["shout"]);
    assert_eq!(v["output"], "HELLO FORBIDDEN WORLD", "{v}");
    assert_eq!(v["steps"].as_array().map(Vec::len), Some(3), "two chunks and the end: {v}");
    assert!(v["stop"].is_null(), "{v}");
    let v = hook(&["shout", "--direction", "server-to-client"]);
    assert_eq!(v["output"], "hello forbidden world", "{v}");
    assert_eq!(v["called"], true, "{v}");
    // `http-headers` declares it does not look at responses: it is not
    // called for them at all, and they pass unchanged.
    let v = hook(&["http-headers", "--direction", "server-to-client"]);
    assert_eq!(v["output"], "hello forbidden world", "{v}");
    assert_eq!(v["called"], false, "{v}");
    assert_eq!(v["steps"].as_array().map(Vec::len), Some(0), "{v}");
    let v = hook(&["guard"]);
    assert_eq!(v["output"], "hello ", "{v}");
    assert_eq!(v["stop"]["reason"], "forbidden word", "{v}");
    assert!(v["stop"]["respond"].as_str().is_some_and(|r| r.starts_with("HTTP/1.1 403")), "{v}");
}
