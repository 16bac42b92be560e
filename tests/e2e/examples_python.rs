//! The Python example plugins of `plugins/examples/python`, built as their
//! README says, through `refractium detect`, `refractium hook` and a live
//! proxy; and the projects `refractium new --lang python` writes, built as
//! their README says and recognised.
//!
//! `componentize-py` must be on the PATH (`.ci/run` installs it in
//! `target/ci-venv`). A Python component is 18 MB of WebAssembly, which the
//! debug build of refractium compiles for about two minutes when it first
//! loads it (a release build, in 6 s). The compile cache keeps the result by
//! the file's content, but componentize-py's output differs from one build
//! of the same source to the next; so the tests keep each file they built
//! in `target/python-plugins/`, under a hash of everything it was built
//! from, and build (and compile) again only when one of those changes.

use crate::support::*;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Hash the files under `root` (their paths relative to it, and their
/// bytes), leaving out bytecode, virtual environments and built files.
fn hash_tree(root: &Path, path: &Path, hasher: &mut DefaultHasher) {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> =
            std::fs::read_dir(path).expect("read dir").map(|e| e.expect("dir entry").path()).collect();
        entries.sort();
        for entry in entries {
            let name = entry.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if !(name == "__pycache__" || name == ".venv" || name.ends_with(".wasm")) {
                hash_tree(root, &entry, hasher);
            }
        }
    } else {
        path.strip_prefix(root).unwrap_or(path).hash(hasher);
        std::fs::read(path).expect("read input").hash(hasher);
    }
}

/// `name.wasm`, built by `build` into the path it is given, or kept from
/// an earlier build of the same `inputs` with the same componentize-py.
fn built(name: &str, inputs: &[&Path], build: impl FnOnce(&Path)) -> PathBuf {
    let (ok, version, err) = run_cmd(Command::new("componentize-py").arg("--version"), 60);
    assert!(ok, "componentize-py --version: {err}");
    let mut hasher = DefaultHasher::new();
    version.hash(&mut hasher);
    for input in inputs {
        hash_tree(input, input, &mut hasher);
    }
    let dir = workspace().join("target/python-plugins").join(format!("{:016x}", hasher.finish()));
    let file = dir.join(format!("{name}.wasm"));
    if !file.is_file() {
        std::fs::create_dir_all(&dir).expect("mkdir target/python-plugins");
        let partial = dir.join(format!("{name}.wasm.{}", std::process::id()));
        let start = Instant::now();
        build(&partial);
        let size = std::fs::metadata(&partial).expect("the build wrote the file").len();
        eprintln!("built {name}.wasm ({size} bytes) in {:.1} s", start.elapsed().as_secs_f64());
        std::fs::rename(&partial, &file).expect("keep the build");
    }
    file
}

/// The README's command, `componentize-py -d ../../../wit -w WORLD
/// componentize -p DIR MODULE -o OUT` in `plugins/examples/python`, run on
/// a copy of the tree: componentize-py writes bytecode beside the sources,
/// and a change under `plugins/` makes cargo run the host's build script
/// again.
fn componentize(world: &str, dir: &str, module: &str, out: &Path) {
    let copy = tempfile::tempdir().expect("tempdir");
    let examples = copy.path().join("plugins/examples/python");
    std::fs::create_dir_all(copy.path().join("wit")).expect("mkdir");
    std::fs::create_dir_all(examples.join(dir)).expect("mkdir");
    for (from, to) in [
        (workspace().join("wit"), copy.path().join("wit")),
        (workspace().join("plugins/examples/python").join(dir), examples.join(dir)),
    ] {
        for entry in std::fs::read_dir(&from).expect("read dir") {
            let path = entry.expect("dir entry").path();
            if path.is_file() {
                std::fs::copy(&path, to.join(path.file_name().expect("a file name"))).expect("copy");
            }
        }
    }
    let (ok, stdout, err) = run_cmd(
        Command::new("componentize-py")
            .args(["-d", "../../../wit", "-w", world, "componentize", "-p", dir, module, "-o"])
            .arg(out)
            .current_dir(&examples),
        600,
    );
    assert!(ok, "componentize-py {dir}: {stdout}\n{err}");
}

/// `refractium ARGS -c DIR/refractium.yaml FILES` in `dir`, with the
/// shared compile cache; its stdout. The first load of a Python component
/// compiles it, hence the long limit.
fn refractium(dir: &Path, args: &[&str], files: &[&str]) -> String {
    let start = Instant::now();
    let (ok, out, err) = run_cmd(
        Command::new(bin())
            .args(args)
            .arg("-c")
            .arg(dir.join("refractium.yaml"))
            .args(files)
            .current_dir(dir)
            .env("REFRACTIUM_CACHE_DIR", cache_dir()),
        900,
    );
    assert!(ok, "refractium {args:?}: {out}\n{err}");
    eprintln!("refractium {args:?}: {:.1} s", start.elapsed().as_secs_f64());
    out
}

/// `refractium detect` on each capture: the protocol found (`null` if none).
fn detect(dir: &Path, captures: &[(&str, &[u8])]) -> Vec<serde_json::Value> {
    for (file, bytes) in captures {
        std::fs::write(dir.join(file), bytes).expect("capture");
    }
    let files: Vec<&str> = captures.iter().map(|(file, _)| *file).collect();
    let out = refractium(dir, &["detect"], &files);
    let verdicts: Vec<serde_json::Value> =
        out.lines().map(|l| serde_json::from_str(l).expect("one JSON object per file")).collect();
    assert_eq!(verdicts.len(), captures.len(), "{out}");
    verdicts.iter().map(|v| v["protocol"].clone()).collect()
}

/// `refractium hook NAME --direction DIRECTION` on chunks: its JSON report.
fn hook(dir: &Path, name: &str, direction: &str, chunks: &[&[u8]]) -> serde_json::Value {
    let mut files = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let file = format!("chunk{i}.bin");
        std::fs::write(dir.join(&file), chunk).expect("chunk");
        files.push(file);
    }
    let files: Vec<&str> = files.iter().map(String::as_str).collect();
    let out = refractium(dir, &["hook", name, "--direction", direction], &files);
    serde_json::from_str(out.trim()).expect("one JSON object")
}

#[test]
fn the_python_examples_detect_rewrite_and_route_live_traffic() {
    if !have("componentize-py") {
        return;
    }
    let (wit, examples) = (workspace().join("wit"), workspace().join("plugins/examples/python"));
    let hello = built("py-hello", &[&wit, &examples.join("hello")], |out| {
        componentize("detector-plugin", "hello", "detector", out)
    });
    let swapcase = built("py-swapcase", &[&wit, &examples.join("swapcase")], |out| {
        componentize("hook-plugin", "swapcase", "hook", out)
    });

    let (a, echo) = (Backend::start(Reply::Record("a")), Backend::start(Reply::Echo));
    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = dir.path().join("plugins.d");
    std::fs::create_dir(&plugins).expect("mkdir");
    std::fs::copy(&hello, plugins.join("py-hello.wasm")).expect("copy detector");
    std::fs::copy(&swapcase, plugins.join("py-swapcase.wasm")).expect("copy hook");
    // The CLI first, on the config the proxy gets below: it compiles both
    // files into the cache, where the proxy then finds them.
    let yaml = protocol_config("py-hello", "\n    hooks: [py-swapcase]", &a, &echo, "");
    std::fs::write(dir.path().join("refractium.yaml"), &yaml).expect("config");

    // `refractium detect`: the greeting, a start of it, and something else.
    let found = detect(
        dir.path(),
        &[("ping.bin", b"HELO-PY there\n"), ("part.bin", b"HELO-P"), ("get.bin", b"GET / HTTP/1.1\r\n\r\n")],
    );
    assert_eq!(found, ["py-hello".into(), serde_json::Value::Null, "http".into()]);

    // `refractium hook`: the client's letters swapped, however split; the
    // server's bytes passed at the first chunk.
    let up = hook(dir.path(), "py-swapcase", "client-to-server", &[b"Hello, Wor", b"ld 42\n"]);
    assert_eq!(up["output"], "hELLO, wORLD 42\n", "{up}");
    let down = hook(dir.path(), "py-swapcase", "server-to-client", &[b"Hello, World\n", b"more\n"]);
    assert_eq!(down["steps"][0]["action"], "pass", "{down}");
    assert_eq!(down["output"], "Hello, World\nmore\n", "{down}");

    // Live: the greeting's route has the hook and the echo backend; a client
    // that sends a start of the greeting first is waited for.
    let start = Instant::now();
    let proxy = Proxy::start_in(dir, &yaml);
    eprintln!("the proxy listened after {:.1} s", start.elapsed().as_secs_f64());
    assert_eq!(proxy.exchange_eof("edge", b"HELO-PY knock knock\n"), "helo-py KNOCK KNOCK\n", "{}", proxy.output());
    let mut c = std::net::TcpStream::connect(proxy.addr("edge")).expect("connect");
    use std::io::Write;
    c.write_all(b"HELO").expect("write");
    std::thread::sleep(std::time::Duration::from_millis(100));
    c.write_all(b"-PY Later\n").expect("write");
    let _ = c.shutdown(std::net::Shutdown::Write);
    assert_eq!(reply(&mut c), "helo-py lATER\n");
    assert_eq!(proxy.exchange("edge", b"Something else\n"), "a\n", "the other route has no hook");
    let line = proxy.wait_log(10, |v| v["target"] == "refractium::access" && v["route"] == "py-hello");
    assert_eq!(line["protocol"], "py-hello", "{line}");
}

#[test]
fn python_projects_from_refractium_new_build_and_are_recognised() {
    if !have("componentize-py") || !have("python3") {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("proxy");
    std::fs::create_dir_all(dir.join("plugins.d")).expect("mkdir");
    for (kind, name) in [("detector", "knock-py"), ("hook", "tally-py")] {
        let project = work.path().join(name);
        let (ok, out, err) =
            run_cmd(Command::new(bin()).args(["new", kind, name, "--lang", "python", "--dir"]).arg(&project), 30);
        assert!(ok && out.contains("next: fill in"), "{out}\n{err}");
        assert!(project.join("wit/plugin.wit").is_file(), "{out}");
        // Its own tests, natively, as its README says.
        let (ok, out, err) = run_cmd(Command::new("python3").args(["-m", "unittest"]).current_dir(&project), 60);
        assert!(ok && err.contains("\nOK"), "python3 -m unittest in {name}: {out}\n{err}");
        let wasm = built(name, &[&project], |out| {
            let (ok, stdout, err) = run_cmd(Command::new("sh").arg("build.sh").current_dir(&project), 600);
            assert!(ok, "sh build.sh in {name}: {stdout}\n{err}");
            std::fs::copy(project.join(format!("{name}.wasm")), out).expect("build.sh wrote NAME.wasm");
        });
        std::fs::copy(wasm, dir.join(format!("plugins.d/{name}.wasm"))).expect("copy");
    }
    let yaml = r#"
listeners:
  - name: edge
    bind: 127.0.0.1:0
routes:
  - name: fallback
    to: a
backends:
  a: { servers: ["127.0.0.1:9"] }
plugins: { dir: plugins.d, limits: { call_timeout: 1s } }
"#;
    std::fs::write(dir.join("refractium.yaml"), yaml).expect("config");

    let found = detect(
        &dir,
        &[("knock.bin", b"KNOCK-PY hello\r\n"), ("part.bin", b"KNOCK"), ("get.bin", b"GET / HTTP/1.1\r\n\r\n")],
    );
    assert_eq!(found, ["knock-py".into(), serde_json::Value::Null, "http".into()]);
    let up = hook(&dir, "tally-py", "client-to-server", &[b"hello, ", b"server\r\n"]);
    assert_eq!(up["output"], "hello, server\r\n", "{up}");
    assert_eq!(up["steps"][0]["action"], "forward", "{up}");
    let down = hook(&dir, "tally-py", "server-to-client", &[b"welcome\r\n"]);
    assert_eq!((&down["output"], &down["steps"][0]["action"]), (&"welcome\r\n".into(), &"pass".into()), "{down}");
}
