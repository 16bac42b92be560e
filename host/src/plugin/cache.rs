//! Compiled plugins, cached in memory and on disk.
//!
//! Key: the SHA-256 of the plugin's bytes, under a directory named by the
//! engine fingerprint (wasmtime version + engine settings). A component whose
//! bytes did not change is never compiled twice by one process, nor by the
//! next process that uses the same cache directory.

use super::engine;
use anyhow::Context as _;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use wasmtime::component::Component;

static MEMO: OnceLock<Mutex<HashMap<String, Component>>> = OnceLock::new();

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

/// The compiled component for `bytes` (whose hash is `hash`), from memory,
/// from `dir`, or freshly compiled (and then stored in both).
pub fn compile(bytes: &[u8], hash: &str, dir: Option<&Path>) -> anyhow::Result<Component> {
    let memo = MEMO.get_or_init(Default::default);
    if let Some(component) = memo.lock().ok().and_then(|m| m.get(hash).cloned()) {
        return Ok(component);
    }
    let file = dir.map(|d| d.join(engine::fingerprint()).join(format!("{hash}.cwasm")));
    let component = match file.as_deref().and_then(load) {
        Some(component) => component,
        None => {
            let component = Component::new(engine::engine(), bytes)
                .map_err(anyhow::Error::from)
                .context("compiling the component")?;
            if let Some(file) = &file
                && let Err(err) = store(&component, file)
            {
                tracing::debug!(file = %file.display(), error = %err, "cannot write compiled plugin to the cache");
            }
            component
        }
    };
    if let Ok(mut m) = memo.lock() {
        m.insert(hash.to_string(), component.clone());
    }
    Ok(component)
}

/// Load a cached artifact; `None` (and a debug line) when absent or unusable.
#[allow(unsafe_code)]
fn load(file: &Path) -> Option<Component> {
    if !file.exists() {
        return None;
    }
    // SAFETY: `deserialize_file` trusts the file to be an artifact produced by
    // `Component::serialize` of a compatible engine. Only this module writes
    // into the cache directory, under a subdirectory named by this engine's
    // fingerprint (wasmtime version + settings), and wasmtime checks the
    // artifact's header against the engine before using it.
    match unsafe { Component::deserialize_file(engine::engine(), file) } {
        Ok(component) => Some(component),
        Err(err) => {
            tracing::debug!(file = %file.display(), error = %err, "ignoring unusable cached plugin");
            None
        }
    }
}

fn store(component: &Component, file: &Path) -> anyhow::Result<()> {
    let dir = file.parent().context("cache file has no directory")?;
    std::fs::create_dir_all(dir)?;
    let bytes = component.serialize()?;
    let tmp = dir.join(format!(".{}.{}.tmp", std::process::id(), rand::random::<u64>()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, file)?;
    Ok(())
}
