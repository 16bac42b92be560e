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
    assert_eq!(proxy.exchange("edge", b"WAT! knock knock\n"), "WAT! KNOCK KNOCK\n");
    assert_eq!(proxy.exchange("edge", b"something else\n"), "a\n", "the other route has no hook");
}
