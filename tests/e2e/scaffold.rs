//! `refractium new`: the projects it writes pass their own tests, build for
//! `wasm32-wasip2` as they are, and route live traffic when dropped into a
//! running proxy's plugins directory, without a restart.

use crate::support::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// `cargo` as the test suite was built with, clear of the outer build's
/// flags; the projects share one target directory under the workspace's, so
/// that a second run builds nothing again.
pub fn cargo(project: &Path, args: &[&str]) {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/scaffolds");
    let mut cmd = Command::new(option_env!("CARGO").unwrap_or("cargo"));
    cmd.args(args).current_dir(project).env("CARGO_TARGET_DIR", &target);
    for var in
        ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER", "CARGO_BUILD_TARGET"]
    {
        cmd.env_remove(var);
    }
    let (ok, out, err) = run_cmd(&mut cmd, 900);
    assert!(ok, "cargo {args:?} in {}:\n{out}\n{err}", project.display());
}

fn new(kind: &str, name: &str, dir: &Path) {
    let (ok, out, err) = run_cmd(Command::new(bin()).args(["new", kind, name, "--dir"]).arg(dir), 30);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("next: fill in"), "{out}");
}

#[test]
fn a_new_detector_and_hook_route_live_traffic_without_a_restart() {
    let work = tempfile::tempdir().expect("tempdir");
    let (detector, hook) = (work.path().join("knock"), work.path().join("tally"));
    new("detector", "knock", &detector);
    new("hook", "tally", &hook);
    // A name that cannot be a plugin's, and a directory already used.
    let (ok, _, err) = run_cmd(Command::new(bin()).args(["new", "hook", "Tally"]).current_dir(work.path()), 30);
    assert!(!ok && err.contains("not a plugin name"), "{err}");
    let (ok, _, err) = run_cmd(Command::new(bin()).args(["new", "hook", "tally", "--dir"]).arg(&hook), 30);
    assert!(!ok && err.contains("not empty"), "{err}");

    for project in [&detector, &hook] {
        cargo(project, &["test", "--quiet"]);
        cargo(project, &["build", "--release", "--target", "wasm32-wasip2", "--quiet"]);
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/scaffolds/wasm32-wasip2/release");

    let (a, b) = (Backend::start(Reply::Record("a")), Backend::start(Reply::Record("b")));
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("plugins.d")).expect("mkdir");
    let admin = "admin: { bind: 127.0.0.1:0 }\nlog: { level: \"info,refractium=debug\", format: json }";
    let proxy = Proxy::start_in(dir, &protocol_config("knock", "", &a, &b, admin));
    assert_eq!(proxy.exchange("edge", b"KNOCK knock\r\n"), "a\n", "nothing knows the protocol yet");

    // Drop both in, list the hook on the route, and reload.
    let plugins = proxy.dir.path().join("plugins.d");
    std::fs::copy(built.join("knock.wasm"), plugins.join("knock.wasm")).expect("copy detector");
    std::fs::copy(built.join("tally.wasm"), plugins.join("tally.wasm")).expect("copy hook");
    let config_file = proxy.dir.path().join("refractium.yaml");
    let text = std::fs::read_to_string(&config_file).expect("config");
    let hooked = text.replace("match: { protocol: knock }", "match: { protocol: knock }\n    hooks: [tally]");
    assert_ne!(text, hooked, "the route is in the config as written");
    std::fs::write(&config_file, hooked).expect("write config");
    let _ = Command::new("kill").args(["-HUP", &proxy.pid().to_string()]).status();
    let start = Instant::now();
    loop {
        let got = proxy.exchange("edge", b"KNOCK knock\r\n");
        if got == "b\n" {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "still `{got}`; output:\n{}", proxy.output());
        std::thread::sleep(Duration::from_millis(50));
    }
    let line = proxy.wait_log(10, |v| v["target"] == "refractium::access" && v["route"] == "knock");
    assert_eq!(line["protocol"], "knock", "{line}");
    let metrics = proxy.admin_get("/metrics");
    assert!(metrics.lines().any(|l| l.starts_with("refractium_hook_sessions_total{hook=\"tally\"} ")), "{metrics}");
}
