//! The C example plugins of `plugins/examples/c`, and the projects
//! `refractium new … --lang c` writes: each is built with its Makefile, as
//! its README says, and recognised by the CLI and a live proxy.

use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Are the tools a C plugin's Makefile runs on the PATH? When one is not,
/// [`have`] says so (and fails the test in CI).
fn toolchain() -> bool {
    ["make", "clang-19", "wit-bindgen", "wasm-tools"].into_iter().all(have)
}

/// `make TARGET` in `dir` with its output in `build`; what it printed.
fn make(dir: &Path, build: &Path, target: &str) -> String {
    let (ok, out, err) =
        run_cmd(Command::new("make").arg("-C").arg(dir).arg(format!("BUILD={}", build.display())).arg(target), 180);
    assert!(ok, "make {target} in {}:\n{out}\n{err}", dir.display());
    out
}

/// `build/NAME.wasm` of the examples, built as their README says.
fn example(build: &Path, name: &str) -> Vec<u8> {
    let wasm = build.join(format!("{name}.wasm"));
    make(&workspace().join("plugins/examples/c"), build, &wasm.display().to_string());
    std::fs::read(&wasm).expect("make wrote the component")
}

/// A proxy on `config` in a new directory whose `plugins.d` holds `plugins`
/// (name, component).
fn proxy_with(plugins: &[(&str, Vec<u8>)], config: &str) -> Proxy {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("plugins.d")).expect("mkdir");
    for (name, wasm) in plugins {
        std::fs::write(dir.path().join(format!("plugins.d/{name}.wasm")), wasm).expect("write");
    }
    Proxy::start_in(dir, config)
}

/// `refractium detect` on each of `captures` (written into the proxy's
/// directory): the protocol found in each, `null` for none.
fn detect(proxy: &Proxy, captures: &[(&str, &[u8])]) -> Vec<serde_json::Value> {
    let dir = proxy.dir.path();
    for (file, bytes) in captures {
        std::fs::write(dir.join(file), bytes).expect("capture");
    }
    let (ok, out, err) = run_cmd(
        Command::new(bin())
            .args(["detect", "-c"])
            .arg(dir.join("refractium.yaml"))
            .args(captures.iter().map(|(file, _)| file))
            .current_dir(dir)
            .env("REFRACTIUM_CACHE_DIR", cache_dir()),
        60,
    );
    assert!(ok, "{err}");
    out.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("one JSON object per file")["protocol"].clone())
        .collect()
}

/// `refractium hook NAME --direction DIRECTION` on one chunk: its JSON.
fn hook(proxy: &Proxy, name: &str, direction: &str, chunk: &[u8]) -> serde_json::Value {
    let file = proxy.dir.path().join("chunk.bin");
    std::fs::write(&file, chunk).expect("chunk");
    let (ok, out, err) = run_cmd(
        Command::new(bin())
            .args(["hook", name, "--direction", direction, "-c"])
            .arg(proxy.dir.path().join("refractium.yaml"))
            .arg(&file)
            .env("REFRACTIUM_CACHE_DIR", cache_dir()),
        60,
    );
    assert!(ok, "{err}");
    serde_json::from_str(out.trim()).expect("one JSON object")
}

#[test]
fn the_c_detector_is_recognised_by_the_cli_and_routes_live_traffic() {
    if !toolchain() {
        return;
    }
    let build = tempfile::tempdir().expect("tempdir");
    let wasm = example(build.path(), "c-hello");
    let (a, b) = (Backend::start(Reply::Record("a")), Backend::start(Reply::Record("b")));
    let proxy = proxy_with(&[("c-hello", wasm)], &protocol_config("c-hello", "", &a, &b, ""));

    // `refractium detect`: the greeting, something else, and a start of the
    // greeting, which is waited for and so finds nothing in a file.
    let found = detect(
        &proxy,
        &[("hello.bin", b"HELO-C me\n"), ("get.bin", b"GET / HTTP/1.1\r\n\r\n"), ("start.bin", b"HELO")],
    );
    assert_eq!(serde_json::Value::from(found), serde_json::json!(["c-hello", "http", null]));

    // Live: the protocol goes to `b`, the rest to `a`; a client that sends
    // `HEL` and then the rest is waited for.
    assert_eq!(proxy.exchange("edge", b"HELO-C me\n"), "b\n");
    assert_eq!(proxy.exchange("edge", b"something else\n"), "a\n");
    let mut c = std::net::TcpStream::connect(proxy.addr("edge")).expect("connect");
    use std::io::Write;
    c.write_all(b"HEL").expect("write");
    std::thread::sleep(std::time::Duration::from_millis(100));
    c.write_all(b"O-C later\n").expect("write");
    let _ = c.shutdown(std::net::Shutdown::Write);
    assert_eq!(reply(&mut c), "b\n");
}

#[test]
fn the_c_hook_rewrites_what_clients_send_on_a_live_route() {
    if !toolchain() {
        return;
    }
    let build = tempfile::tempdir().expect("tempdir");
    let plugins = [("c-hello", example(build.path(), "c-hello")), ("c-rot13", example(build.path(), "c-rot13"))];
    let (a, echo) = (Backend::start(Reply::Record("a")), Backend::start(Reply::Echo));
    let proxy = proxy_with(&plugins, &protocol_config("c-hello", "\n    hooks: [c-rot13]", &a, &echo, ""));

    // `refractium hook`: the client's letters turned by 13; the server's
    // bytes passed at their first chunk.
    let up = hook(&proxy, "c-rot13", "client-to-server", b"Hello, World 42\n");
    assert_eq!(up["output"], "Uryyb, Jbeyq 42\n", "{up}");
    let down = hook(&proxy, "c-rot13", "server-to-client", b"Hello, World 42\n");
    assert_eq!((&down["output"], &down["steps"][0]["action"]), (&"Hello, World 42\n".into(), &"pass".into()), "{down}");

    // Live: the server gets (and echoes) what the hook made of the request,
    // greeting included; the hook logs what it did through `host.log`.
    assert_eq!(proxy.exchange_eof("edge", b"HELO-C knock knock\n"), "URYB-P xabpx xabpx\n");
    proxy.wait_log(10, |v| v["plugin"] == "c-rot13" && v["message"] == "rewrote 19 bytes");
    assert_eq!(proxy.exchange("edge", b"something else\n"), "a\n", "the other route has no hook");
}

/// `refractium new detector|hook NAME --lang c` writes projects that build
/// as they are, whose native tests pass, and whose plugins the CLI and a
/// proxy recognise.
#[test]
fn c_projects_from_refractium_new_build_and_are_recognised() {
    if !(toolchain() && have("cc")) {
        return;
    }
    let projects = tempfile::tempdir().expect("tempdir");
    let mut plugins = Vec::new();
    for (kind, name) in [("detector", "knock-c"), ("hook", "tally-c")] {
        let dir = projects.path().join(name);
        let (ok, out, err) =
            run_cmd(Command::new(bin()).args(["new", kind, name, "--lang", "c", "--dir"]).arg(&dir), 30);
        assert!(ok, "refractium new {kind}: {out}\n{err}");
        let marked = std::fs::read_to_string(dir.join("src/plugin.c")).expect("src/plugin.c");
        assert!(marked.contains("FILL THIS IN"), "{marked}");
        // As its README says: the native test, then the component.
        let build = dir.join("build");
        let tested = make(&dir, &build, "test");
        assert!(tested.contains(" passed, 0 failed"), "{tested}");
        make(&dir, &build, "all");
        plugins.push((name, std::fs::read(build.join(format!("{name}.wasm"))).expect("make wrote the component")));
    }

    let (a, echo) = (Backend::start(Reply::Record("a")), Backend::start(Reply::Echo));
    let proxy = proxy_with(&plugins, &protocol_config("knock-c", "\n    hooks: [tally-c]", &a, &echo, ""));
    let found = detect(&proxy, &[("knock.bin", b"KNOCK-C hello\r\n"), ("get.bin", b"GET / HTTP/1.1\r\n\r\n")]);
    assert_eq!(serde_json::Value::from(found), serde_json::json!(["knock-c", "http"]));

    // The hook forwards the client's bytes as they are and passes the
    // server's.
    let up = hook(&proxy, "tally-c", "client-to-server", b"hello, server\r\n");
    assert_eq!((&up["output"], &up["steps"][0]["action"]), (&"hello, server\r\n".into(), &"forward".into()), "{up}");
    let down = hook(&proxy, "tally-c", "server-to-client", b"hello, client\r\n");
    assert_eq!((&down["output"], &down["steps"][0]["action"]), (&"hello, client\r\n".into(), &"pass".into()), "{down}");

    // Live: the detector's route runs the hook; the rest goes to `a`.
    assert_eq!(proxy.exchange_eof("edge", b"KNOCK-C hi\n"), "KNOCK-C hi\n");
    assert_eq!(proxy.exchange("edge", b"KNOCK hi\n"), "a\n");
}
