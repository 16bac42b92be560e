//! `refractium check FILE.wasm`: what a plugin file is and what is wrong with it.

use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `refractium check [-c CONFIG] FILES...` in `dir`: (success, stdout, stderr).
fn check(dir: &Path, config: Option<&str>, files: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(bin());
    cmd.arg("check").current_dir(dir).env("REFRACTIUM_CACHE_DIR", cache_dir());
    if let Some(config) = config {
        cmd.args(["-c", config]);
    }
    run_cmd(cmd.args(files), 60)
}

/// A test plugin of the workspace, copied into `dir` as `NAME.wasm`.
fn copy_plugin(dir: &Path, package_file: &str, name: &str) {
    std::fs::copy(test_plugins_dir().join(package_file), dir.join(format!("{name}.wasm"))).expect("copy the plugin");
}

/// A component made from the core module `wat` (WebAssembly text) and the
/// world `world` of the WIT package `wit` (the text of a `plugin.wit`).
fn component(wat: &str, wit: &str, world: &str) -> Vec<u8> {
    let mut core = wat::parse_str(wat).expect("the module parses");
    let mut resolve = wit_parser::Resolve::default();
    let package = resolve.push_str("plugin.wit", wit).expect("the WIT parses");
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

fn read(path: &str) -> String {
    std::fs::read_to_string(workspace().join(path)).expect("read from the workspace")
}

/// The report of the file called `name` in the output: from its first line
/// to the blank line after it.
fn section<'a>(out: &'a str, name: &str) -> &'a str {
    let start = out.find(&format!("{name}.wasm: ")).unwrap_or_else(|| panic!("no report for {name}: {out}"));
    let rest = &out[start..];
    rest[..rest.find("\n\n").unwrap_or(rest.len())].trim_end()
}

#[test]
fn a_detector_and_a_hook_say_what_they_are_and_pass() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_plugin(dir.path(), "refractium_detector_ssh.wasm", "ssh");
    copy_plugin(dir.path(), "refractium_test_testhook.wasm", "testhook");
    let (ok, out, err) = check(dir.path(), None, &["ssh.wasm", "testhook.wasm"]);
    assert!(ok, "both load: {out}{err}");

    let ssh = section(&out, "ssh");
    assert!(ssh.contains("bytes, a WebAssembly component"), "{ssh}");
    assert!(ssh.contains("implements: world detector-plugin (a detector) of refractium:plugin@0.1.0"), "{ssh}");
    assert!(ssh.contains("wasi:cli/environment@0.2.6      stubbed harmlessly: no variables"), "{ssh}");
    assert!(ssh.contains("init(null) (no config): name `ssh`, version 0.1.0"), "{ssh}");
    assert!(ssh.contains("`ssh` is a built-in detector; in plugins.dir this file replaces it"), "{ssh}");
    assert!(ssh.ends_with("OK: the proxy would load it as the detector `ssh`"), "{ssh}");
    assert!(!ssh.contains("PROBLEM") && !ssh.contains("warning"), "{ssh}");

    let hook = section(&out, "testhook");
    assert!(hook.contains("implements: world hook-plugin (a hook) of refractium:plugin@0.1.0"), "{hook}");
    assert!(hook.contains("init(null) (no config): name `testhook`, version"), "{hook}");
    assert!(hook.ends_with("OK: the proxy would load it as the hook `testhook`"), "{hook}");
}

#[test]
fn a_core_module_and_garbage_are_told_apart_and_fail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let module = wat::parse_str(read("plugins/examples/wat/hi.wat")).expect("hi.wat parses");
    std::fs::write(dir.path().join("hi.wasm"), module).expect("write");
    std::fs::write(dir.path().join("notes.wasm"), b"these are my notes, not a plugin\n").expect("write");
    let (ok, out, err) = check(dir.path(), None, &["hi.wasm", "notes.wasm"]);
    assert!(!ok, "neither loads: {out}");
    assert!(err.contains("2 of 2 plugin file(s) would not load"), "{err}");

    let hi = section(&out, "hi");
    assert!(hi.contains("a core WebAssembly module, not a component"), "{hi}");
    assert!(hi.contains("PROBLEM: refractium loads WebAssembly components that implement wit/plugin.wit"), "{hi}");
    // It exports the detector's functions: the world to embed is named.
    assert!(hi.contains("`wasm-tools component embed wit/ --world detector-plugin hi.wasm -o embedded.wasm`"), "{hi}");
    assert!(hi.contains("`wasm-tools component new embedded.wasm -o hi.wasm`"), "{hi}");

    let notes = section(&out, "notes");
    assert!(notes.contains("33 bytes, not WebAssembly"), "{notes}");
    assert!(
        notes.contains("starts with the bytes 00 61 73 6d (`\\0asm`); this one starts with [74 68 65 73]"),
        "{notes}"
    );
}

/// `intruder` refuses to start without its config; given one, it loads,
/// and its sockets and files are named as refused at the call.
#[test]
fn an_init_that_fails_and_imports_that_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_plugin(dir.path(), "refractium_test_intruder.wasm", "intruder");
    let (ok, out, _) = check(dir.path(), None, &["intruder.wasm"]);
    assert!(!ok, "{out}");
    let report = section(&out, "intruder");
    assert!(
        report.contains(
            "PROBLEM: init(null) (no config) returned an error, so the proxy would skip the detector: \
             init refused its config: config needs `try`"
        ),
        "{report}"
    );
    assert!(
        report.contains(
            "wasi:sockets/tcp-create-socket@0.2.6  refused: the plugin loads, but a call that uses it fails \
             (\"called wasi:sockets/tcp-create-socket@0.2.6#create-tcp-socket, which refractium does not grant\")"
        ),
        "{report}"
    );
    assert!(report.contains("wasi:filesystem/preopens@0.2.6        stubbed harmlessly: no directories"), "{report}");
    assert!(report.contains("refractium:plugin/host@0.1.0          granted"), "{report}");

    // With `-c`, init gets the file's `plugins.config` entry.
    let yaml = "listeners:\n  - name: edge\n    bind: 127.0.0.1:0\n    default: web\nroutes:\n  - name: web\n    to: web\nbackends:\n  web: { servers: [127.0.0.1:1] }\nplugins:\n  config:\n    intruder: { try: socket }\n";
    std::fs::write(dir.path().join("refractium.yaml"), yaml).expect("config");
    let (ok, out, err) = check(dir.path(), Some("refractium.yaml"), &["intruder.wasm"]);
    assert!(ok, "{out}{err}");
    let report = section(&out, "intruder");
    assert!(
        report.contains(
            "init({\"try\":\"socket\"}) (plugins.config.intruder of refractium.yaml): name `intruder`, version"
        ),
        "{report}"
    );
    assert!(
        report.contains(
            "OK: the proxy would load it as the detector `intruder`; a call that reaches a refused import \
             (wasi:sockets/"
        ),
        "{report}"
    );
    assert!(report.contains("wasi:sockets/tcp-create-socket@0.2.6"), "{report}");
    assert!(
        report.contains("wasi:filesystem/types@0.2.6           granted, unreachable: every function needs a file"),
        "{report}"
    );
}

/// Built against `refractium:plugin@0.2.0`, or against a WIT of the same
/// version whose `action` lacks a case, or against none of it.
#[test]
fn another_version_a_type_mismatch_and_no_plugin_world() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wit = read("wit/plugin.wit");
    assert!(wit.contains("package refractium:plugin@0.1.0;"), "the test assumes the served version");

    let (hi, upper) = (read("plugins/examples/wat/hi.wat"), read("plugins/examples/wat/upper.wat"));
    let next = component(&hi.replace("@0.1.0", "@0.2.0"), &wit.replace("@0.1.0;", "@0.2.0;"), "detector-plugin");
    std::fs::write(dir.path().join("future.wasm"), next).expect("write");

    // `action` as it was before `pass`: three cases.
    let pass = wit.find("        /// Write these bytes on, and let the rest").expect("the pass case's comment");
    let end = pass + wit[pass..].find("pass(list<u8>),\n").expect("the pass case") + "pass(list<u8>),\n".len();
    let older = format!("{}{}", &wit[..pass], &wit[end..]);
    std::fs::write(dir.path().join("older.wasm"), component(&upper, &older, "hook-plugin")).expect("write");

    // A detector interface without `detect`.
    let start = wit.find("    /// Look at every byte the client has sent so far").expect("detect's comment");
    let end = start + wit[start..].find("-> verdict;\n").expect("detect") + "-> verdict;\n".len();
    let partial_wit = format!("{}{}", &wit[..start], &wit[end..]);
    let detect = hi.find("  ;; detect(data").expect("hi.wat's detect");
    let detect_end = hi.find("  (func (export \"cabi_post_refractium:plugin/detector@0.1.0#init\")").expect("post");
    let post = hi.find("  (func (export \"cabi_post_refractium:plugin/detector@0.1.0#detect\")").expect("post detect");
    let partial_wat = format!("{}{}{})\n", &hi[..detect], &hi[detect_end..post], "");
    std::fs::write(dir.path().join("partial.wasm"), component(&partial_wat, &partial_wit, "detector-plugin"))
        .expect("write");

    let empty = component("(module)", "package acme:nothing;\nworld empty {}\n", "empty");
    std::fs::write(dir.path().join("empty.wasm"), empty).expect("write");

    let (ok, out, err) = check(dir.path(), None, &["future.wasm", "older.wasm", "partial.wasm", "empty.wasm"]);
    assert!(!ok && err.contains("4 of 4 plugin file(s) would not load"), "{out}{err}");
    let future = section(&out, "future");
    assert!(
        future.contains(
            "PROBLEM: it exports refractium:plugin/detector@0.2.0, built against refractium:plugin 0.2.0; \
             this refractium serves refractium:plugin 0.1.0 only, so the proxy would skip this file"
        ),
        "{future}"
    );
    let older = section(&out, "older");
    assert!(older.contains("implements: world hook-plugin (a hook) of refractium:plugin@0.1.0"), "{older}");
    assert!(older.contains("PROBLEM: its hook interface does not match the one this refractium serves"), "{older}");
    assert!(
        older.contains(
            "expected variant of 4 cases, found 3 cases (in wit/plugin.wit, `action` (forward, respond, close, \
             pass) has 4 cases; the plugin's has 3)"
        ),
        "the type that differs is named: {older}"
    );
    let partial = section(&out, "partial");
    assert!(
        partial.contains(
            "PROBLEM: its detector interface does not match the one this refractium serves: it does not export \
             the refractium:plugin/detector@0.1.0 interface: instance export `refractium:plugin/detector@0.1.0` \
             does not have export `detect`"
        ),
        "{partial}"
    );
    let empty = section(&out, "empty");
    assert!(
        empty.contains(
            "PROBLEM: it implements no plugin world: it exports neither refractium:plugin/detector@0.1.0 nor \
             refractium:plugin/hook@0.1.0, so the proxy would skip it. It exports: no exports at all"
        ),
        "{empty}"
    );
}

/// A file named otherwise than the plugin says it is still loads, under
/// the file's name: the report says so.
#[test]
fn a_name_that_differs_from_the_file_is_a_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_plugin(dir.path(), "refractium_test_trap.wasm", "my-trap");
    let (ok, out, err) = check(dir.path(), None, &["my-trap.wasm"]);
    assert!(ok, "it loads: {out}{err}");
    let report = section(&out, "my-trap");
    assert!(
        report.contains("warning: init says the plugin is `trap`, but the file is named `my-trap.wasm`"),
        "{report}"
    );
    assert!(report.contains("Rename the file to `trap.wasm`"), "{report}");
    assert!(report.ends_with("OK: the proxy would load it as the detector `my-trap`"), "{report}");
}

/// An `init` that traps, and an import outside WASI and the plugin's own
/// package, which no host grants.
#[test]
fn an_init_that_traps_and_an_import_nobody_grants() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wit, hi) = (read("wit/plugin.wit"), read("plugins/examples/wat/hi.wat"));
    let init =
        "(func (export \"refractium:plugin/detector@0.1.0#init\") (param $config i32) (param $len i32) (result i32)\n";
    assert!(hi.contains(init), "the test rewrites hi.wat's init");
    let trapping = hi.replace(init, &format!("{init}    unreachable\n"));
    std::fs::write(dir.path().join("trapping.wasm"), component(&trapping, &wit, "detector-plugin")).expect("write");

    // A detector that also imports `dial`, an interface the host does not have.
    let dial_wit = wit.replace(
        "world detector-plugin {\n",
        "interface dial {\n    connect: func(host: string);\n}\n\nworld detector-plugin {\n    import dial;\n",
    );
    let dialing = hi.replacen(
        "(module\n",
        "(module\n  (import \"refractium:plugin/dial@0.1.0\" \"connect\" (func (param i32 i32)))\n",
        1,
    );
    std::fs::write(dir.path().join("dialer.wasm"), component(&dialing, &dial_wit, "detector-plugin")).expect("write");

    let (ok, out, err) = check(dir.path(), None, &["trapping.wasm", "dialer.wasm"]);
    assert!(!ok && err.contains("2 of 2 plugin file(s) would not load"), "{out}{err}");
    let trapping = section(&out, "trapping");
    assert!(
        trapping
            .contains("PROBLEM: init(null) (no config) failed, so the proxy would skip the detector: init trapped:"),
        "{trapping}"
    );
    assert!(trapping.contains("unreachable"), "{trapping}");
    let dialer = section(&out, "dialer");
    assert!(
        dialer.contains(
            "refractium:plugin/dial@0.1.0   refused: refractium grants refractium:plugin and WASI only; the proxy \
             would not load the file"
        ),
        "{dialer}"
    );
    assert!(
        dialer.contains(
            "PROBLEM: it cannot be linked, so the proxy would skip it: it imports refractium:plugin/dial@0.1.0, \
             which refractium does not grant"
        ),
        "{dialer}"
    );
    assert_eq!(dialer.matches("PROBLEM").count(), 1, "{dialer}");
}
