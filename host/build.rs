//! Builds the built-in detector and hook plugins (and the deliberately broken plugins
//! the sandbox tests use) for `wasm32-wasip2`, and writes `builtins.rs` into
//! `OUT_DIR`, which embeds the built-in ones in the `refractium` binary.
//!
//! The plugins are built by a nested `cargo build` with its own target
//! directory (`target/wasm-plugins`), because the outer build holds the lock
//! on `target/`. When the `wasm32-wasip2` target is missing from the
//! toolchain it is added with `rustup target add` first: a
//! `rust-toolchain.toml` alone does not do that when the toolchain is already
//! installed.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";
const PROFILE: &str = "plugin";

/// Built-in detectors: (name, package, serves TCP, serves UDP), in the
/// documented default order: cheap, strict detectors first, so that a loose
/// one (a length prefix, an inline command) only sees bytes no strict one
/// claimed.
const BUILTINS: &[(&str, &str, bool, bool)] = &[
    ("tls", "refractium-detector-tls", true, false),
    ("http2", "refractium-detector-http2", true, false),
    ("http", "refractium-detector-http", true, false),
    ("ssh", "refractium-detector-ssh", true, false),
    ("quic", "refractium-detector-quic", false, true),
    ("wireguard", "refractium-detector-wireguard", false, true),
    ("postgres", "refractium-detector-postgres", true, false),
    ("mqtt", "refractium-detector-mqtt", true, false),
    ("rdp", "refractium-detector-rdp", true, false),
    ("xmpp", "refractium-detector-xmpp", true, false),
    ("socks5", "refractium-detector-socks5", true, false),
    ("socks4", "refractium-detector-socks4", true, false),
    ("redis", "refractium-detector-redis", true, false),
    ("dns", "refractium-detector-dns", true, true),
    ("openvpn", "refractium-detector-openvpn", true, true),
    ("pattern", "refractium-detector-pattern", true, true),
];

/// Built-in hooks: (name, package). They are loaded as components, like a
/// plugin file, and a file of the same name replaces one.
const BUILTIN_HOOKS: &[(&str, &str)] = &[
    ("http-headers", "refractium-hook-http-headers"),
    ("deny", "refractium-hook-deny"),
    ("rewrite", "refractium-hook-rewrite"),
];

/// Plugins built only for the test suite: (name, package).
const TEST_PLUGINS: &[(&str, &str)] = &[
    ("spin", "refractium-test-spin"),
    ("trap", "refractium-test-trap"),
    ("hog", "refractium-test-hog"),
    ("chatty", "refractium-test-chatty"),
    ("snoop", "refractium-test-snoop"),
    ("intruder", "refractium-test-intruder"),
    ("flood", "refractium-test-flood"),
    ("testhook", "refractium-test-testhook"),
];

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir.parent().expect("host/ lives inside the workspace").to_path_buf();
    for dir in ["wit", "plugin-sdk", "tests/plugins", "host/templates"] {
        println!("cargo:rerun-if-changed={}", workspace.join(dir).display());
    }
    // The built-in plugins, not `plugins/examples`: building an example in
    // place must not rebuild the host.
    let plugins = std::fs::read_dir(workspace.join("plugins")).expect("plugins/ is readable");
    for entry in plugins.flatten().filter(|e| e.file_name() != "examples") {
        println!("cargo:rerun-if-changed={}", entry.path().display());
    }
    println!("cargo:rerun-if-changed={}", workspace.join("Cargo.lock").display());
    println!("cargo:rerun-if-env-changed=REFRACTIUM_SKIP_TARGET_INSTALL");

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    ensure_target();

    let target_dir = workspace.join("target").join("wasm-plugins");
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&workspace)
        .args(["build", "--target", TARGET, "--profile", PROFILE, "--target-dir"])
        .arg(&target_dir);
    let packages =
        BUILTINS.iter().map(|b| b.1).chain(BUILTIN_HOOKS.iter().map(|h| h.1)).chain(TEST_PLUGINS.iter().map(|t| t.1));
    for package in packages {
        cmd.args(["-p", package]);
    }
    // The outer build's flags and wrappers (clippy-driver, coverage, the
    // host's RUSTFLAGS) must not leak into the guest build.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
    ] {
        cmd.env_remove(var);
    }
    // A small stack lets a plugin run under a memory cap well below 1 MiB.
    cmd.env("CARGO_ENCODED_RUSTFLAGS", "-Clink-arg=-zstack-size=65536");
    let status = cmd.status().expect("could not run cargo to build the built-in plugins");
    if !status.success() {
        panic!("building the built-in plugins for {TARGET} failed (see the output above)");
    }

    let out_wasm = target_dir.join(TARGET).join(PROFILE);
    let mut src = String::from(
        "/// Built-in plugins embedded in the binary: (name, package, wasm bytes, serves TCP, serves UDP),\n\
         /// in the default detector order.\n\
         pub const BUILTINS: &[(&str, &str, &[u8], bool, bool)] = &[\n",
    );
    for (name, package, tcp, udp) in BUILTINS {
        let file = wasm_file(&out_wasm, package);
        let path = file.display().to_string();
        src.push_str(&format!("    ({name:?}, {package:?}, include_bytes!({path:?}), {tcp}, {udp}),\n"));
    }
    src.push_str("];\n");
    src.push_str(
        "/// Built-in hooks embedded in the binary: (name, package, wasm bytes).\n\
         pub const BUILTIN_HOOKS: &[(&str, &str, &[u8])] = &[\n",
    );
    for (name, package) in BUILTIN_HOOKS {
        let path = wasm_file(&out_wasm, package).display().to_string();
        src.push_str(&format!("    ({name:?}, {package:?}, include_bytes!({path:?})),\n"));
    }
    src.push_str("];\n");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out_dir.join("builtins.rs"), src).expect("write builtins.rs");

    // Tests find the broken plugins here.
    println!("cargo:rustc-env=REFRACTIUM_TEST_PLUGINS_DIR={}", out_wasm.display());
}

fn wasm_file(dir: &Path, package: &str) -> PathBuf {
    let file = dir.join(format!("{}.wasm", package.replace('-', "_")));
    assert!(file.exists(), "expected plugin artifact {} to exist", file.display());
    file
}

/// Add the wasm32-wasip2 target when the active toolchain lacks it.
fn ensure_target() {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if sysroot.as_ref().is_some_and(|s| s.join("lib/rustlib").join(TARGET).exists()) {
        return;
    }
    if env::var_os("REFRACTIUM_SKIP_TARGET_INSTALL").is_some() {
        return;
    }
    println!("cargo:warning=installing the {TARGET} target with rustup (needed to build the built-in plugins)");
    let status = Command::new("rustup").args(["target", "add", TARGET]).status();
    match status {
        Ok(s) if s.success() => {}
        other => panic!(
            "the {TARGET} target is missing and `rustup target add {TARGET}` failed ({other:?}); \
             install it by hand and build again"
        ),
    }
}
