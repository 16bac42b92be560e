//! Compiled plugins, cached in memory and on disk.
//!
//! Key: the SHA-256 of the plugin's bytes, under a directory named by the
//! engine fingerprint (wasmtime version + engine settings). A component whose
//! bytes did not change is never compiled twice by one process, nor by the
//! next process that uses the same cache directory. A built-in is compiled
//! as its core module ([`super::direct`]): the same key, its own file
//! (`HASH.core.cwasm`).
//!
//! Neither grows without bound: the memory cache keeps only what the last
//! plugin set loaded ([`retain`]), and on disk an artifact is touched when it
//! is used and removed once unused for [`MAX_AGE`] (checked whenever a new
//! one is written), with whole directories of older engine fingerprints.
//!
//! An artifact is native code the process maps and runs, so the cache is
//! trusted only as far as the proxy's own user: directories are created
//! private (0700), and a file is used only when it, its directory and the
//! cache directory belong to the proxy's user and nobody else may write
//! them ([`trusted`]). Otherwise it is ignored with a warning and the
//! plugin compiled afresh.

use super::engine;
use anyhow::Context as _;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};
use wasmtime::Module;
use wasmtime::component::Component;

/// What is compiled: a component, or a built-in's core module.
pub trait Artifact: Clone + Sized + 'static {
    /// File name suffix in the cache directory.
    const SUFFIX: &'static str;
    /// The compiled artifacts this process keeps in memory.
    fn memo() -> &'static Mutex<HashMap<String, Self>>;
    fn compile(bytes: &[u8]) -> wasmtime::Result<Self>;
    fn serialize(&self) -> wasmtime::Result<Vec<u8>>;
    /// # Safety
    /// `file` must hold what [`Artifact::serialize`] wrote with a compatible
    /// engine (see [`load`]).
    #[allow(unsafe_code)]
    unsafe fn deserialize_file(file: &Path) -> wasmtime::Result<Self>;
}

/// `Component` and `Module` have the same compile/serialize API: one impl
/// for both.
macro_rules! artifact {
    ($ty:ident, $suffix:literal) => {
        impl Artifact for $ty {
            const SUFFIX: &'static str = $suffix;
            fn memo() -> &'static Mutex<HashMap<String, Self>> {
                static MEMO: OnceLock<Mutex<HashMap<String, $ty>>> = OnceLock::new();
                MEMO.get_or_init(Default::default)
            }
            fn compile(bytes: &[u8]) -> wasmtime::Result<Self> {
                $ty::new(engine::engine(), bytes)
            }
            fn serialize(&self) -> wasmtime::Result<Vec<u8>> {
                $ty::serialize(self)
            }
            #[allow(unsafe_code)]
            unsafe fn deserialize_file(file: &Path) -> wasmtime::Result<Self> {
                // SAFETY: passed on from the caller.
                unsafe { $ty::deserialize_file(engine::engine(), file) }
            }
        }
    };
}

artifact!(Component, "cwasm");
artifact!(Module, "core.cwasm");

/// Artifacts on disk unused for this long are removed.
pub const MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

/// Hex SHA-256 of `bytes`.
pub fn hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The default on-disk cache: `$REFRACTIUM_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/refractium`, else `$HOME/.cache/refractium`.
pub fn default_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("REFRACTIUM_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(dir).join("refractium"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache").join("refractium"))
}

/// The compiled artifact of the plugin whose hash is `hash`, if this
/// process or the cache directory `dir` has it.
pub fn cached<A: Artifact>(hash: &str, dir: Option<&Path>) -> Option<A> {
    let memo = A::memo();
    if let Some(compiled) = memo.lock().ok().and_then(|m| m.get(hash).cloned()) {
        return Some(compiled);
    }
    let file = artifact_file::<A>(hash, dir)?;
    let root = dir?;
    let compiled = match trusted(&file, root) {
        Ok(()) => load::<A>(&file)?,
        Err(why) => {
            if file.exists() {
                tracing::warn!(file = %file.display(), reason = %why, "ignoring a compiled plugin in the cache; compiling it afresh");
            }
            return None;
        }
    };
    if let Ok(mut m) = memo.lock() {
        m.insert(hash.to_string(), compiled.clone());
    }
    Some(compiled)
}

/// Where `dir` keeps the artifact of the plugin whose hash is `hash`.
fn artifact_file<A: Artifact>(hash: &str, dir: Option<&Path>) -> Option<PathBuf> {
    dir.map(|d| d.join(engine::fingerprint()).join(format!("{hash}.{}", A::SUFFIX)))
}

/// The compiled artifact for the bytes `source` gives (of a plugin whose
/// hash is `hash`), from memory, from `dir`, or freshly compiled (and then
/// stored in both). `source` runs only when compiling.
pub fn compile<'b, A: Artifact>(
    source: impl FnOnce() -> anyhow::Result<&'b [u8]>,
    hash: &str,
    dir: Option<&Path>,
) -> anyhow::Result<A> {
    if let Some(compiled) = cached::<A>(hash, dir) {
        return Ok(compiled);
    }
    let compiled = A::compile(source()?).map_err(anyhow::Error::from).context("compiling the plugin")?;
    if let (Some(file), Some(root)) = (artifact_file::<A>(hash, dir), dir) {
        match store(&compiled, &file) {
            Ok(()) => prune(root, MAX_AGE),
            Err(err) => {
                tracing::debug!(file = %file.display(), error = %err, "cannot write compiled plugin to the cache");
            }
        }
    }
    if let Ok(mut m) = A::memo().lock() {
        m.insert(hash.to_string(), compiled.clone());
    }
    Ok(compiled)
}

/// Load a cached artifact; `None` (and a debug line) when absent or unusable.
#[allow(unsafe_code)]
fn load<A: Artifact>(file: &Path) -> Option<A> {
    if !file.exists() {
        return None;
    }
    // SAFETY: `deserialize_file` trusts the file to be an artifact produced by
    // `Artifact::serialize` of a compatible engine. Only this module writes
    // into the cache directory, under a subdirectory named by this engine's
    // fingerprint (wasmtime version + settings); the caller checked that no
    // other user can have written the file or its directories (`trusted`),
    // and wasmtime checks the artifact's header against the engine.
    match unsafe { A::deserialize_file(file) } {
        Ok(compiled) => {
            // Used now: not a candidate for pruning.
            let _ = std::fs::File::options().write(true).open(file).and_then(|f| f.set_modified(SystemTime::now()));
            Some(compiled)
        }
        Err(err) => {
            tracing::debug!(file = %file.display(), error = %err, "ignoring unusable cached plugin");
            None
        }
    }
}

fn store<A: Artifact>(compiled: &A, file: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    let dir = file.parent().context("cache file has no directory")?;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let bytes = compiled.serialize()?;
    let tmp = dir.join(format!(".{}.{}.tmp", std::process::id(), rand::random::<u64>()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, file)?;
    Ok(())
}

/// Whether the cached `file` under the cache directory `root` may be run:
/// the file and every directory from it up to `root` are owned by this
/// process's user, writable by nobody else, and not symbolic links.
pub fn trusted(file: &Path, root: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt as _;
    let me = rustix::process::geteuid().as_raw();
    let mut path = Some(file);
    while let Some(p) = path {
        let meta = std::fs::symlink_metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
        if meta.file_type().is_symlink() {
            return Err(format!("{} is a symbolic link", p.display()));
        }
        if meta.uid() != me {
            return Err(format!("{} belongs to uid {}, not to this process's uid {me}", p.display(), meta.uid()));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(format!("{} is writable by other users (mode {:o})", p.display(), meta.mode() & 0o777));
        }
        if p == root {
            break;
        }
        path = p.parent();
    }
    Ok(())
}

/// Keep in memory only the compiled plugins whose hashes are in `keep` (the
/// set just loaded); the others are found on disk again if ever needed.
pub fn retain(keep: &HashSet<&str>) {
    fn retain_in<A: Artifact>(keep: &HashSet<&str>) {
        if let Ok(mut memo) = A::memo().lock() {
            memo.retain(|hash, _| keep.contains(hash.as_str()));
        }
    }
    retain_in::<Component>(keep);
    retain_in::<Module>(keep);
}

/// Remove artifacts under `root` not used for `max_age`, and directories of
/// other engine fingerprints left empty by that. Only what this module
/// writes is touched (`wasmtime-*` directories, `*.cwasm` and `*.tmp`
/// files in them), whatever else `plugins.cache_dir` holds. Errors are
/// ignored: another process may be pruning the same directory.
pub fn prune(root: &Path, max_age: Duration) {
    let Ok(fingerprints) = std::fs::read_dir(root) else { return };
    let now = SystemTime::now();
    let is_fingerprint =
        |p: &PathBuf| p.is_dir() && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("wasmtime-"));
    let is_artifact = |p: &PathBuf| p.extension().is_some_and(|e| e == "cwasm" || e == "tmp");
    for dir in fingerprints.filter_map(Result::ok).map(|e| e.path()).filter(is_fingerprint) {
        let Ok(files) = std::fs::read_dir(&dir) else { continue };
        for file in files.filter_map(Result::ok).filter(|f| is_artifact(&f.path())) {
            let old = file
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > max_age);
            if old {
                let _ = std::fs::remove_file(file.path());
            }
        }
        // Only succeeds when empty; the current fingerprint's directory is
        // recreated by the next store anyway.
        let _ = std::fs::remove_dir(&dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    /// Whether a core module imports the `crypto` interface (`quic` does,
    /// `http` does not): tells which of the two was loaded.
    fn imports_crypto(module: &Module) -> bool {
        module.imports().any(|i| i.module().starts_with("refractium:plugin/crypto"))
    }

    /// Plant `http`'s compiled code under `quic`'s name (a new `key` each
    /// time, past the in-memory cache), set `mode`, and load `quic`.
    fn load_planted(root: &Path, key: &str, mode: u32) -> Module {
        let bytes = |name: &str| {
            let found = super::super::loader::builtin::BUILTINS.iter().find(|b| b.0 == name);
            found.expect("built-in").2
        };
        let http: Module =
            compile(|| super::super::direct::main_module(bytes("http")), &format!("{key}-http"), Some(root))
                .expect("compile http");
        assert!(!imports_crypto(&http));
        let dir = root.join(engine::fingerprint());
        let planted = dir.join(format!("{key}-quic.core.cwasm"));
        std::fs::copy(dir.join(format!("{key}-http.core.cwasm")), &planted).expect("plant");
        std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(mode)).expect("chmod");
        compile(|| super::super::direct::main_module(bytes("quic")), &format!("{key}-quic"), Some(root))
            .expect("compile quic")
    }

    /// Compiled code in the cache runs only when nobody but the proxy's
    /// user can have put it there: a file others may write, in a directory
    /// others may write, or of another owner is ignored and the plugin
    /// compiled afresh.
    #[test]
    fn a_planted_artifact_runs_only_from_a_private_cache() {
        let root = tempfile::tempdir().expect("tempdir");
        let root = root.path().join("cache");
        // Trusted: the proxy's own file, read-only to others, is used (so
        // the planted code would run: what the checks below prevent).
        assert!(!imports_crypto(&load_planted(&root, "own", 0o644)));
        let dir = root.join(engine::fingerprint());
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!((mode(&root), mode(&dir)), (0o700, 0o700), "directories are created private");
        // A file anyone may write: ignored.
        assert!(imports_crypto(&load_planted(&root, "world-writable", 0o666)));
        // A directory others may write: ignored.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        assert!(imports_crypto(&load_planted(&root, "open-dir", 0o644)));
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        // Another user's file (only root can make one): ignored.
        if rustix::process::geteuid().is_root() {
            let file = dir.join("other-quic.core.cwasm");
            let _ = load_planted(&root, "other-first", 0o644);
            std::fs::copy(dir.join("other-first-http.core.cwasm"), &file).expect("plant");
            std::os::unix::fs::chown(&file, Some(65534), Some(65534)).expect("chown");
            let err = trusted(&file, &root).expect_err("another user's file");
            assert!(err.contains("belongs to uid 65534"), "{err}");
        }
        // The fresh artifact replaced the planted one, private again.
        let healed = dir.join("world-writable-quic.core.cwasm");
        assert_eq!(trusted(&healed, &root), Ok(()));
        std::fs::set_permissions(&healed, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        let err = trusted(&healed, &root).expect_err("writable");
        assert!(err.contains("writable by other users (mode 666)"), "{err}");
    }

    /// Artifacts unused for longer than the limit go, with the directory
    /// they leave empty; recently used ones stay.
    #[test]
    fn prune_removes_what_was_not_used_for_long() {
        let root = tempfile::tempdir().expect("tempdir");
        let (old_dir, cur_dir) = (root.path().join("wasmtime-1-old"), root.path().join("wasmtime-2-cur"));
        let other = root.path().join("someone-else");
        for dir in [&old_dir, &cur_dir, &other] {
            std::fs::create_dir_all(dir).expect("mkdir");
        }
        let long_ago = SystemTime::now() - 2 * MAX_AGE;
        for (path, when) in [
            (old_dir.join("a.cwasm"), long_ago),
            (cur_dir.join("b.cwasm"), long_ago),
            (cur_dir.join("c.cwasm"), SystemTime::now()),
            (cur_dir.join("notes.txt"), long_ago),
            (other.join("d.cwasm"), long_ago),
        ] {
            std::fs::write(&path, b"x").expect("write");
            std::fs::File::options().write(true).open(&path).and_then(|f| f.set_modified(when)).expect("mtime");
        }
        prune(root.path(), MAX_AGE);
        assert!(!old_dir.exists(), "an emptied fingerprint directory is removed");
        assert!(!cur_dir.join("b.cwasm").exists(), "an artifact unused for long is removed");
        assert!(cur_dir.join("c.cwasm").exists(), "a recently used artifact stays");
        assert!(cur_dir.join("notes.txt").exists() && other.join("d.cwasm").exists(), "files not ours stay");
    }
}
