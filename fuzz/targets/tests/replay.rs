//! Every fuzz target over its committed corpus (`fuzz/corpus/<target>/`),
//! on stable Rust, as part of `cargo test --workspace`: the inputs the
//! fuzzer kept, the seeds, and every crash it found (see
//! `docs/fuzzing.md`). A target without a corpus directory, or with an
//! empty one, fails.
//!
//! `fuzz/open/<target>/` holds crashes whose fix is not in yet: each must
//! still fail its target, so that the fix is noticed and the input moved
//! into the corpus, where it must pass.

use refractium_fuzz_targets::{TARGETS, Target, detect_loop, detectors};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("fuzz/targets is inside fuzz/").to_path_buf()
}

fn target(name: &str) -> &'static Target {
    TARGETS.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("no fuzz target `{name}`"))
}

/// The files of `dir`, sorted.
fn files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir)?;
    let mut files: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_file()).collect();
    files.sort();
    Ok(files)
}

/// Run `target` on the file's bytes: `Err` with the panic's message.
fn run(target: &Target, file: &Path) -> Result<(), String> {
    let input = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    catch_unwind(AssertUnwindSafe(|| (target.run)(&input))).map_err(|panic| {
        let why = panic.downcast_ref::<String>().map(String::as_str).or_else(|| panic.downcast_ref::<&str>().copied());
        why.unwrap_or("(a panic without a message)").to_string()
    })
}

/// Run every file of the target's corpus; fail with the files that panicked.
fn replay(name: &str) {
    let target = target(name);
    let dir = fuzz_dir().join("corpus").join(name);
    let files = files(&dir).unwrap_or_else(|e| panic!("corpus of `{name}` ({}): {e}", dir.display()));
    assert!(!files.is_empty(), "the corpus of `{name}` ({}) is empty", dir.display());
    let failed: Vec<String> = files
        .iter()
        .filter_map(|file| run(target, file).err().map(|why| format!("{}: {why}", file.display())))
        .collect();
    assert!(failed.is_empty(), "`{name}` failed on {} of {} inputs:\n{}", failed.len(), files.len(), failed.join("\n"));
}

/// The crashes in `fuzz/open/` still crash; a fixed one belongs in the corpus.
#[test]
fn open_crashes_still_fail() {
    let open = fuzz_dir().join("open");
    let Ok(dirs) = subdirectories(&open) else { return };
    for dir in dirs {
        let name = dir.file_name().and_then(|n| n.to_str()).expect("a target's name");
        let target = target(name);
        for file in files(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            assert!(
                run(target, &file).is_err(),
                "{} passes now: move it to fuzz/corpus/{name}/ (docs/fuzzing.md)",
                file.display()
            );
        }
    }
}

/// The directories of `dir`.
fn subdirectories(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    Ok(std::fs::read_dir(dir)?.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_dir()).collect())
}

macro_rules! replay_tests {
    ($($name:ident),* $(,)?) => {
        $(#[test] fn $name() { replay(stringify!($name)); })*
        const REPLAYED: &[&str] = &[$(stringify!($name)),*];
    };
}

replay_tests!(
    tls,
    http,
    http2,
    ssh,
    dns,
    socks4,
    socks5,
    postgres,
    redis,
    mqtt,
    openvpn,
    wireguard,
    quic,
    xmpp,
    rdp,
    pattern,
    pattern_config,
    detect_loop,
    config,
    proxy_header,
);

/// Each target is replayed here, and has its libFuzzer binary in
/// `fuzz/fuzz_targets/` declared in `fuzz/Cargo.toml`.
#[test]
fn every_target_is_replayed_and_built() {
    let names: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
    assert_eq!(names, REPLAYED, "TARGETS and the replay tests differ");
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz/Cargo.toml");
    for name in names {
        let source = fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"));
        let text = std::fs::read_to_string(&source).unwrap_or_else(|e| panic!("{}: {e}", source.display()));
        let call = format!("refractium_fuzz_targets::{}(data)", target(name).path);
        assert!(text.contains(&call), "{} does not call {call}", source.display());
        assert!(manifest.contains(&format!("name = \"{name}\"")), "fuzz/Cargo.toml has no [[bin]] `{name}`");
    }
}

/// The detector targets' table of transports is the host's.
#[test]
fn builtin_table_is_the_hosts() {
    let (tcp, udp) = detect_loop::builtins();
    let names: Vec<&str> = detectors::BUILTINS.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, refractium::plugin::loader::builtin_names());
    for (name, serves) in detectors::BUILTINS {
        let in_set = |set: &[std::sync::Arc<refractium::plugin::DetectorPlugin>]| {
            set.iter().any(|d| refractium::plugin::detector::Detect::name(&**d) == *name)
        };
        assert_eq!((in_set(tcp), in_set(udp)), (serves.tcp, serves.udp), "`{name}`");
    }
}
