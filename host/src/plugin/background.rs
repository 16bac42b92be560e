//! Heavy plugin files — a JavaScript or Python runtime is megabytes of code
//! that takes seconds to compile — are compiled on a thread of their own
//! while the proxy runs without them: the start, and reloads of unrelated
//! changes, do not wait. When one is compiled, [`compiled`] wakes the
//! reload task, and the next snapshot has it (from the compile cache, so a
//! restart does not compile it again).
//!
//! Only a running proxy compiles in the background ([`enable`]); the CLI's
//! one-shot commands, which need the plugin to answer, wait for it.

use super::cache;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;
use wasmtime::component::Component;

/// A plugin file at least this large, with no compiled artifact in the
/// cache, is compiled in the background.
pub const HEAVY: usize = 1 << 20;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Compiles that have not succeeded, by the plugin's hash.
static JOBS: Mutex<Option<HashMap<String, Job>>> = Mutex::new(None);

enum Job {
    Running { since: SystemTime },
    Failed(String),
}

/// Woken each time a background compile ends.
pub fn compiled() -> &'static tokio::sync::Notify {
    static DONE: std::sync::OnceLock<tokio::sync::Notify> = std::sync::OnceLock::new();
    DONE.get_or_init(tokio::sync::Notify::new)
}

/// From now on, heavy plugin files are compiled in the background.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// What loading a plugin file's component gave.
pub enum Ready {
    Now(Component),
    /// It is being compiled in the background, since then.
    Compiling(SystemTime),
}

/// The compiled component of plugin `name` (`bytes`, whose hash is `hash`),
/// now if it is light, cached, or background compiles are off; else a
/// background compile is started (once) and `Compiling` returned. A
/// background compile that failed is an error here, until the file changes.
pub fn component(name: &str, bytes: &[u8], hash: &str, dir: Option<PathBuf>) -> anyhow::Result<Ready> {
    if !ENABLED.load(Ordering::Relaxed) || bytes.len() < HEAVY {
        return Ok(Ready::Now(cache::compile(|| Ok(bytes), hash, dir.as_deref())?));
    }
    if let Some(component) = cache::cached::<Component>(hash, dir.as_deref()) {
        return Ok(Ready::Now(component));
    }
    let mut jobs = JOBS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let jobs = jobs.get_or_insert_with(HashMap::new);
    match jobs.get(hash) {
        Some(Job::Running { since }) => return Ok(Ready::Compiling(*since)),
        Some(Job::Failed(why)) => anyhow::bail!("{why}"),
        None => {}
    }
    let since = SystemTime::now();
    let (name, key, bytes) = (name.to_string(), hash.to_string(), bytes.to_vec());
    let spawned = std::thread::Builder::new().name("refractium-compile".into()).spawn(move || {
        let started = std::time::Instant::now();
        let result = cache::compile::<Component>(|| Ok(&bytes[..]), &key, dir.as_deref());
        let outcome = match result {
            Ok(_) => {
                tracing::info!(
                    plugin = %name,
                    took_ms = crate::clock::ms(started.elapsed()),
                    "plugin compiled in the background; reloading to bring it in"
                );
                None
            }
            Err(err) => {
                let why = format!("{err:#}");
                tracing::error!(plugin = %name, reason = why.as_str(), "plugin failed to compile in the background");
                Some(Job::Failed(why))
            }
        };
        {
            let mut jobs = JOBS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let jobs = jobs.get_or_insert_with(HashMap::new);
            match outcome {
                Some(failed) => jobs.insert(key, failed),
                None => jobs.remove(&key),
            };
        }
        compiled().notify_one();
    });
    match spawned {
        Ok(_) => {
            jobs.insert(hash.to_string(), Job::Running { since });
            Ok(Ready::Compiling(since))
        }
        Err(err) => anyhow::bail!("cannot start a thread to compile it: {err}"),
    }
}
