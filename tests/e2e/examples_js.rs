//! The JavaScript example plugins of `plugins/examples/js`, and the projects
//! `refractium new … --lang js` writes: each is built with npm as its
//! README says, and recognised by the CLI and a live proxy.
//!
//! The componentizer is the one `npm ci` installs in `plugins/examples/js`
//! (`.ci/run` does); the tests do not reach the npm registry: a project's
//! `npm ci` is `--offline`, from npm's cache. A JavaScript plugin is 1.6 MB
//! of QuickJS that a debug build of the proxy takes tens of seconds to
//! compile: each file is compiled once, by the first command that loads
//! it, into the shared compile cache, before a proxy starts on it.

use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/examples/js")
}

/// Are npm and the componentizer of the examples installed? When one is
/// not, [`missing`] says so (and fails the test in CI).
fn toolchain() -> bool {
    if !(have("node") && have("npm")) {
        return false;
    }
    let componentizer = examples_dir().join("node_modules/.bin/componentize-qjs");
    if !componentizer.exists() {
        missing(&format!("{} is not installed (`npm ci` in plugins/examples/js)", componentizer.display()));
        return false;
    }
    true
}

/// `npm ARGS` in `dir`; what it printed.
fn npm(dir: &Path, args: &[&str]) -> String {
    let (ok, out, err) = run_cmd(Command::new("npm").args(args).current_dir(dir), 180);
    assert!(ok, "npm {} in {}:\n{out}\n{err}", args.join(" "), dir.display());
    out
}

/// Load `files` with `refractium check`, which compiles them into the
/// shared cache (once: later loads find them there) and says whether the
/// proxy would load them; what it printed.
fn compile(files: &[PathBuf]) -> String {
    let started = std::time::Instant::now();
    let (ok, out, err) =
        run_cmd(Command::new(bin()).arg("check").args(files).env("REFRACTIUM_CACHE_DIR", cache_dir()), 600);
    assert!(ok, "refractium check:\n{out}\n{err}");
    eprintln!("refractium check (compiling {} files): {:.1?}", files.len(), started.elapsed());
    out
}

/// The two examples, built by `npm run build` as the README says, once per
/// test run: the tests share the files, which are compiled once (a build
/// of the same source differs in its random seeds, and so in its hash).
fn examples() -> &'static [(&'static str, Vec<u8>)] {
    static BUILT: OnceLock<Vec<(&'static str, Vec<u8>)>> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = examples_dir();
        let names = ["js-hello", "js-swapcase"];
        for name in names {
            let _ = std::fs::remove_file(dir.join(format!("{name}.wasm")));
        }
        let started = std::time::Instant::now();
        npm(&dir, &["run", "build"]);
        eprintln!("npm run build (both examples): {:.1?}", started.elapsed());
        let files: Vec<PathBuf> = names.iter().map(|name| dir.join(format!("{name}.wasm"))).collect();
        let checked = compile(&files);
        assert!(checked.contains("the proxy would load it as the detector `js-hello`"), "{checked}");
        assert!(checked.contains("the proxy would load it as the hook `js-swapcase`"), "{checked}");
        names
            .iter()
            .zip(&files)
            .map(|(name, file)| (*name, std::fs::read(file).expect("npm run build wrote the component")))
            .collect()
    })
}

/// A directory with `plugins.d` holding `plugins` (name, component) and
/// `refractium.yaml` holding `config`, for the CLI and then a proxy.
fn plugins_dir(plugins: &[(&str, Vec<u8>)], config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("plugins.d")).expect("mkdir");
    for (name, wasm) in plugins {
        std::fs::write(dir.path().join(format!("plugins.d/{name}.wasm")), wasm).expect("write");
    }
    std::fs::write(dir.path().join("refractium.yaml"), config).expect("config");
    dir
}

/// `refractium detect` on each of `captures` (written into `dir`): the
/// protocol found in each, `null` for none.
fn detect(dir: &Path, captures: &[(&str, &[u8])]) -> serde_json::Value {
    for (file, bytes) in captures {
        std::fs::write(dir.join(file), bytes).expect("capture");
    }
    let (ok, out, err) = run_cmd(
        Command::new(bin())
            .args(["detect", "-c", "refractium.yaml"])
            .args(captures.iter().map(|(file, _)| file))
            .current_dir(dir)
            .env("REFRACTIUM_CACHE_DIR", cache_dir()),
        600,
    );
    assert!(ok, "{err}");
    out.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("one JSON object per file")["protocol"].clone())
        .collect()
}

/// `refractium hook NAME --direction DIRECTION` on `chunks`, successive
/// chunks of one side: its JSON.
fn hook(dir: &Path, name: &str, direction: &str, chunks: &[&[u8]]) -> serde_json::Value {
    let mut files = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let file = format!("chunk{i}.bin");
        std::fs::write(dir.join(&file), chunk).expect("chunk");
        files.push(file);
    }
    let (ok, out, err) = run_cmd(
        Command::new(bin())
            .args(["hook", name, "--direction", direction, "-c", "refractium.yaml"])
            .args(&files)
            .current_dir(dir)
            .env("REFRACTIUM_CACHE_DIR", cache_dir()),
        600,
    );
    assert!(ok, "{err}");
    serde_json::from_str(out.trim()).expect("one JSON object")
}

#[test]
fn the_js_detector_is_recognised_by_the_cli_and_routes_live_traffic() {
    if !toolchain() {
        return;
    }
    let hello = examples().iter().find(|(name, _)| *name == "js-hello").expect("built").clone();
    let (a, b) = (Backend::start(Reply::Record("a")), Backend::start(Reply::Record("b")));
    let config = protocol_config("js-hello", "", &a, &b, "");
    let dir = plugins_dir(&[hello], &config);

    // `refractium detect`: the greeting, something else, and a start of the
    // greeting, which is waited for and so finds nothing in a file.
    let found = detect(
        dir.path(),
        &[("hello.bin", b"HELO-JS me\n"), ("get.bin", b"GET / HTTP/1.1\r\n\r\n"), ("start.bin", b"HELO")],
    );
    assert_eq!(found, serde_json::json!(["js-hello", "http", null]));

    // Live: the protocol goes to `b`, the rest to `a`; a client that sends
    // `HEL` and then the rest is waited for.
    let proxy = Proxy::start_in(dir, &config);
    assert_eq!(proxy.exchange("edge", b"HELO-JS me\n"), "b\n", "{}", proxy.output());
    assert_eq!(proxy.exchange("edge", b"something else\n"), "a\n");
    let mut c = std::net::TcpStream::connect(proxy.addr("edge")).expect("connect");
    use std::io::Write;
    c.write_all(b"HEL").expect("write");
    std::thread::sleep(std::time::Duration::from_millis(100));
    c.write_all(b"O-JS later\n").expect("write");
    let _ = c.shutdown(std::net::Shutdown::Write);
    assert_eq!(reply(&mut c), "b\n");
}

#[test]
fn the_js_hook_rewrites_what_clients_send_on_a_live_route() {
    if !toolchain() {
        return;
    }
    let plugins = examples().to_vec();
    let (a, echo) = (Backend::start(Reply::Record("a")), Backend::start(Reply::Echo));
    let config = protocol_config("js-hello", "\n    hooks: [js-swapcase]", &a, &echo, "");
    let dir = plugins_dir(&plugins, &config);

    // `refractium hook`: the case of the client's letters swapped, chunk by
    // chunk; the server's bytes passed at their first chunk.
    let up = hook(dir.path(), "js-swapcase", "client-to-server", &[b"Hello, Wo", b"rld 42\n"]);
    assert_eq!(up["output"], "hELLO, wORLD 42\n", "{up}");
    let down = hook(dir.path(), "js-swapcase", "server-to-client", &[b"Hello, ", b"World 42\n"]);
    assert_eq!((&down["output"], &down["steps"][0]["action"]), (&"Hello, World 42\n".into(), &"pass".into()), "{down}");

    // Live: the server gets (and echoes) what the hook made of the request,
    // greeting included; at the client's end the hook logs through
    // `host.log` what it did.
    let proxy = Proxy::start_in(dir, &config);
    assert_eq!(proxy.exchange_eof("edge", b"HELO-JS knock knock\n"), "helo-js KNOCK KNOCK\n", "{}", proxy.output());
    proxy.wait_log(10, |v| v["plugin"] == "js-swapcase" && v["message"] == "rewrote 20 bytes");
    assert_eq!(proxy.exchange("edge", b"something else\n"), "a\n", "the other route has no hook");
}

/// The componentizer a project's `package.json` pins.
fn pinned(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("package.json")).expect("package.json");
    let manifest: serde_json::Value = serde_json::from_str(&text).expect("package.json is JSON");
    manifest["devDependencies"]["componentize-qjs"].clone()
}

/// `refractium new detector|hook NAME --lang js` writes projects that build
/// as they are, whose native tests pass, and whose plugins the CLI and a
/// proxy recognise.
#[test]
fn js_projects_from_refractium_new_build_and_are_recognised() {
    if !toolchain() {
        return;
    }
    let projects = tempfile::tempdir().expect("tempdir");
    let mut plugins = Vec::new();
    for (kind, name) in [("detector", "knock-js"), ("hook", "tally-js")] {
        let dir = projects.path().join(name);
        let (ok, out, err) =
            run_cmd(Command::new(bin()).args(["new", kind, name, "--lang", "js", "--dir"]).arg(&dir), 30);
        assert!(ok, "refractium new {kind}: {out}\n{err}");
        let marked = std::fs::read_to_string(dir.join("logic.js")).expect("logic.js");
        assert!(marked.contains("FILL THIS IN"), "{marked}");
        assert!(dir.join("wit/plugin.wit").is_file(), "the project carries the WIT");
        assert_eq!(pinned(&dir), pinned(&examples_dir()), "the project pins the examples' componentizer");

        // As its README says: install, the native test, the component; the
        // install from npm's cache, which the examples' `npm ci` filled.
        let (ok, out, err) =
            run_cmd(Command::new("npm").args(["ci", "--offline", "--no-audit", "--no-fund"]).current_dir(&dir), 180);
        if !ok {
            missing(&format!("npm's cache lacks the componentizer (`npm ci` in plugins/examples/js): {out}\n{err}"));
            return;
        }
        let tested = npm(&dir, &["test"]);
        assert!(tested.contains("fail 0") && !tested.contains("pass 0"), "{tested}");
        npm(&dir, &["run", "build"]);
        plugins.push((name, std::fs::read(dir.join(format!("{name}.wasm"))).expect("npm run build wrote it")));
    }

    let (a, echo) = (Backend::start(Reply::Record("a")), Backend::start(Reply::Echo));
    let config = protocol_config("knock-js", "\n    hooks: [tally-js]", &a, &echo, "");
    let dir = plugins_dir(&plugins, &config);
    compile(&[dir.path().join("plugins.d/knock-js.wasm"), dir.path().join("plugins.d/tally-js.wasm")]);
    let found = detect(dir.path(), &[("knock.bin", b"KNOCK-JS hello\r\n"), ("get.bin", b"GET / HTTP/1.1\r\n\r\n")]);
    assert_eq!(found, serde_json::json!(["knock-js", "http"]));

    // The hook forwards the client's bytes as they are and passes the
    // server's.
    let up = hook(dir.path(), "tally-js", "client-to-server", &[b"hello, server\r\n"]);
    assert_eq!((&up["output"], &up["steps"][0]["action"]), (&"hello, server\r\n".into(), &"forward".into()), "{up}");
    let down = hook(dir.path(), "tally-js", "server-to-client", &[b"hello, client\r\n"]);
    assert_eq!((&down["output"], &down["steps"][0]["action"]), (&"hello, client\r\n".into(), &"pass".into()), "{down}");

    // Live: the detector's route runs the hook; the rest goes to `a`.
    let proxy = Proxy::start_in(dir, &config);
    assert_eq!(proxy.exchange_eof("edge", b"KNOCK-JS hi\n"), "KNOCK-JS hi\n", "{}", proxy.output());
    assert_eq!(proxy.exchange("edge", b"KNOCK hi\n"), "a\n");
}
