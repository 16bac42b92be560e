//! The example plugins of `plugins/examples`: each is built as its README
//! says and routes live traffic.

use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A component from a core module in WebAssembly text that exports `world`
/// of `wit/`: `wasm-tools parse`, `component embed`, `component new`.
fn component_from_wat(file: &Path, world: &str) -> Vec<u8> {
    let mut core = wat::parse_file(file).expect("the example parses");
    let mut resolve = wit_parser::Resolve::default();
    let (package, _) = resolve.push_dir(workspace().join("wit")).expect("wit/");
    let world = resolve.select_world(&[package], Some(world)).expect("world");
    wit_component::embed_component_metadata(&mut core, &resolve, world, wit_component::StringEncoding::UTF8, false)
        .expect("embed");
    wit_component::ComponentEncoder::default()
        .module(&core)
        .expect("module")
        .validate(true)
        .encode()
        .expect("a valid component")
}

#[test]
fn the_wat_detector_is_recognised_by_the_cli_and_routes_live_traffic() {
    let wasm = component_from_wat(&workspace().join("plugins/examples/wat/hi.wat"), "detector-plugin");
    let (a, b) = (Backend::start(Reply::Record("a")), Backend::start(Reply::Record("b")));
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("plugins.d")).expect("mkdir");
    std::fs::write(dir.path().join("plugins.d/wat-hi.wasm"), &wasm).expect("write");
    let proxy = Proxy::start_in(dir, &protocol_config("wat-hi", "", &a, &b, ""));

    // `refractium detect`: the greeting, and something else.
    let captures = proxy.dir.path();
    for (file, bytes) in [("ping.bin", &b"WAT! me\n"[..]), ("get.bin", b"GET / HTTP/1.1\r\n\r\n")] {
        std::fs::write(captures.join(file), bytes).expect("capture");
    }
    let (ok, out, err) = run_cmd(
        Command::new(bin())
            .args(["detect", "-c"])
            .arg(captures.join("refractium.yaml"))
            .args(["ping.bin", "get.bin"])
            .current_dir(captures)
            .env("REFRACTIUM_CACHE_DIR", cache_dir()),
        60,
    );
    assert!(ok, "{err}");
    let verdicts: Vec<serde_json::Value> =
        out.lines().map(|l| serde_json::from_str(l).expect("one JSON object per file")).collect();
    assert_eq!(verdicts[0]["protocol"], "wat-hi", "{out}");
    assert_eq!(verdicts[1]["protocol"], "http", "{out}");

    // Live: the protocol goes to `b`, the rest to `a`; a client that sends
    // `WA` and then the rest is waited for.
    assert_eq!(proxy.exchange("edge", b"WAT! me\n"), "b\n");
    assert_eq!(proxy.exchange("edge", b"something else\n"), "a\n");
    let mut c = std::net::TcpStream::connect(proxy.addr("edge")).expect("connect");
    use std::io::{Read, Write};
    c.write_all(b"WA").expect("write");
    std::thread::sleep(std::time::Duration::from_millis(100));
    c.write_all(b"T! later\n").expect("write");
    let _ = c.shutdown(std::net::Shutdown::Write);
    let mut got = String::new();
    c.read_to_string(&mut got).expect("read");
    assert_eq!(got, "b\n");
}

#[test]
fn the_wat_hook_rewrites_what_clients_send_on_a_live_route() {
    let examples = workspace().join("plugins/examples/wat");
    let (a, echo) = (Backend::start(Reply::Record("a")), Backend::start(Reply::Echo));
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("plugins.d")).expect("mkdir");
    for (file, world, name) in [("hi.wat", "detector-plugin", "wat-hi"), ("upper.wat", "hook-plugin", "wat-upper")] {
        let wasm = component_from_wat(&examples.join(file), world);
        std::fs::write(dir.path().join(format!("plugins.d/{name}.wasm")), wasm).expect("write");
    }
    let proxy = Proxy::start_in(dir, &protocol_config("wat-hi", "\n    hooks: [wat-upper]", &a, &echo, ""));

    // `refractium hook`: the client's letters upper-cased; the server's passed.
    let chunk = proxy.dir.path().join("chunk.bin");
    std::fs::write(&chunk, b"hello, World 42\n").expect("chunk");
    let hook = |direction: &str| {
        let (ok, out, err) = run_cmd(
            Command::new(bin())
                .args(["hook", "wat-upper", "--direction", direction, "-c"])
                .arg(proxy.dir.path().join("refractium.yaml"))
                .arg(&chunk)
                .env("REFRACTIUM_CACHE_DIR", cache_dir()),
            60,
        );
        assert!(ok, "{err}");
        serde_json::from_str::<serde_json::Value>(out.trim()).expect("one JSON object")
    };
    let up = hook("client-to-server");
    assert_eq!(up["output"], "HELLO, WORLD 42\n", "{up}");
    let down = hook("server-to-client");
    assert_eq!((&down["output"], &down["steps"][0]["action"]), (&"hello, World 42\n".into(), &"pass".into()), "{down}");

    // Live: the server gets (and echoes) what the hook made of the request.
    assert_eq!(proxy.exchange_eof("edge", b"WAT! knock knock\n"), "WAT! KNOCK KNOCK\n");
    assert_eq!(proxy.exchange("edge", b"something else\n"), "a\n", "the other route has no hook");
}

/// `bytes` with a custom section of `size` bytes appended: as large as a
/// JavaScript or Python runtime, and as valid as before. The section starts
/// with `nonce`, so the file is new to the compile cache.
fn padded(mut bytes: Vec<u8>, size: usize, nonce: &[u8]) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            out.push(if n == 0 { byte } else { byte | 0x80 });
            if n == 0 {
                break;
            }
        }
    }
    let name = b"padding";
    let mut body = Vec::new();
    leb(name.len(), &mut body);
    body.extend_from_slice(name);
    body.extend_from_slice(nonce);
    body.resize(body.len() + size, 0);
    bytes.push(0);
    leb(body.len(), &mut bytes);
    bytes.extend_from_slice(&body);
    bytes
}

/// A plugin file of megabytes that is not in the compile cache is compiled
/// while the proxy serves without it: the proxy starts, `/status` lists it
/// as compiling until it joins, and then it detects and hooks; a restart
/// finds it compiled in the cache.
#[test]
fn a_large_plugin_file_compiles_in_the_background_and_joins_when_ready() {
    let examples = workspace().join("plugins/examples/wat");
    let (a, echo) = (Backend::start(Reply::Record("a")), Backend::start(Reply::Echo));
    // New to the shared compile cache (whose built-ins spare the proxy a
    // start of many seconds), and the same for the restart.
    let nonce = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
    let start = || {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("plugins.d")).expect("mkdir");
        for (file, world, name) in [("hi.wat", "detector-plugin", "wat-hi"), ("upper.wat", "hook-plugin", "wat-upper")]
        {
            let wasm = padded(component_from_wat(&examples.join(file), world), 3 << 20, nonce.as_bytes());
            std::fs::write(dir.path().join(format!("plugins.d/{name}.wasm")), wasm).expect("write");
        }
        let yaml = format!(
            r#"
listeners:
  - name: edge
    bind: 127.0.0.1:0
    detectors: [wat-hi, http]
    detect: {{ timeout: 2s }}
    default: fallback
routes:
  - name: wat-hi
    match: {{ protocol: wat-hi }}
    hooks: [wat-upper]
    to: echo
  - name: fallback
    to: a
backends:
  a: {{ servers: [{a}] }}
  echo: {{ servers: [{echo}] }}
admin: {{ bind: 127.0.0.1:0 }}
plugins: {{ dir: plugins.d, limits: {{ call_timeout: 1s }} }}
"#,
            a = a.addr,
            echo = echo.addr,
        );
        Proxy::start_in(dir, &yaml)
    };

    let proxy = start();
    for name in ["wat-hi", "wat-upper"] {
        proxy.wait_log(10, |v| v["plugin"] == name && v["message"].as_str().is_some_and(|m| m.contains("background")));
    }
    // Until they join, the listener detects without `wat-hi` and its route
    // cannot start its hook; either way, other clients are served.
    let status: serde_json::Value = serde_json::from_str(&proxy.admin_get("/status")).expect("status JSON");
    let compiling: Vec<&str> =
        status["compiling_plugins"].as_array().into_iter().flatten().filter_map(|c| c["name"].as_str()).collect();
    let joined = |name: &str| {
        !proxy
            .logs_where(|v| v["plugin"] == name && v["message"].as_str().is_some_and(|m| m.contains("compiled in the")))
            .is_empty()
    };
    for name in ["wat-hi", "wat-upper"] {
        assert!(compiling.contains(&name) || joined(name), "{name}: {status}\n{}", proxy.output());
    }
    assert_eq!(proxy.exchange("edge", b"hello there\n"), "a\n", "{}", proxy.output());

    // Each compile ends with a reload that brings it in.
    for name in ["wat-hi", "wat-upper"] {
        proxy.wait_log(120, |v| {
            v["plugin"] == name && v["message"].as_str().is_some_and(|m| m.contains("compiled in the"))
        });
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let status: serde_json::Value = serde_json::from_str(&proxy.admin_get("/status")).expect("status JSON");
        let loaded = status["plugins"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["name"] == "wat-hi" || p["name"] == "wat-upper");
        if loaded.count() == 2 && status["compiling_plugins"].as_array().is_some_and(|c| c.is_empty()) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never joined: {status}\n{}", proxy.output());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(proxy.exchange_eof("edge", b"WAT! joined\n"), "WAT! JOINED\n");
    drop(proxy);

    // A restart takes both from the cache: nothing to compile, routed at once.
    let again = start();
    assert_eq!(again.exchange_eof("edge", b"WAT! cached\n"), "WAT! CACHED\n");
    assert!(again.logs_where(|v| v["message"].as_str().is_some_and(|m| m.contains("background"))).is_empty());
}

/// The Rust example, one component that is a detector and a hook, built as
/// its README says: its own tests, then `wasm32-wasip2`.
#[test]
fn the_rust_example_detects_rewrites_and_routes_live_traffic() {
    let project = workspace().join("plugins/examples/rust");
    crate::scaffold::cargo(&project, &["test", "--quiet"]);
    crate::scaffold::cargo(&project, &["build", "--release", "--target", "wasm32-wasip2", "--quiet"]);
    let built = workspace().join("target/scaffolds/wasm32-wasip2/release/rs_hello.wasm");
    let (a, echo) = (Backend::start(Reply::Record("a")), Backend::start(Reply::Echo));
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("plugins.d")).expect("mkdir");
    std::fs::copy(&built, dir.path().join("plugins.d/rs-hello.wasm")).expect("copy the plugin");
    let proxy = Proxy::start_in(dir, &protocol_config("rs-hello", "\n    hooks: [rs-hello]", &a, &echo, ""));

    let files = proxy.dir.path();
    std::fs::write(files.join("hello.bin"), b"HELO-RS Knock, knock\n").expect("capture");
    std::fs::write(files.join("get.bin"), b"GET / HTTP/1.1\r\n\r\n").expect("capture");
    let config = files.join("refractium.yaml");
    let run = |args: &[&str]| {
        let (ok, out, err) = run_cmd(
            Command::new(bin())
                .args(args)
                .arg("-c")
                .arg(&config)
                .current_dir(files)
                .env("REFRACTIUM_CACHE_DIR", cache_dir()),
            60,
        );
        assert!(ok, "{err}");
        out
    };
    let out = run(&["detect", "hello.bin", "get.bin"]);
    let verdicts: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).expect("JSON")).collect();
    assert_eq!((&verdicts[0]["protocol"], &verdicts[1]["protocol"]), (&"rs-hello".into(), &"http".into()), "{out}");
    let out = run(&["hook", "rs-hello", "hello.bin"]);
    let hooked: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(hooked["output"], "helo-rs kNOCK, KNOCK\n", "{out}");

    assert_eq!(proxy.exchange_eof("edge", b"HELO-RS Knock, knock\n"), "helo-rs kNOCK, KNOCK\n");
    proxy.wait_log(10, |v| v["plugin"] == "rs-hello" && v["message"] == "rewrote 16 letters");
    assert_eq!(proxy.exchange("edge", b"something else\n"), "a\n");
}
