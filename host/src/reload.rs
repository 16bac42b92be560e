//! Reload: re-read the config file and the plugins directory, build a
//! complete new snapshot off the data path, and swap it in with one atomic
//! store. New connections and UDP sessions take the new snapshot; open ones
//! finish on the one they started with (they hold an `Arc` to it, and with it
//! their plugin instances). A snapshot that fails to build is rejected with a
//! log line that says what is wrong, and the old one stays in force.
//!
//! Triggered by a change to the config file or the plugins directory
//! (`reload.watch`, debounced), `SIGHUP`, `POST /reload` on the admin
//! listener, or a plugin file compiled in the background. Sockets of unchanged listeners are kept (no gap in accept);
//! added ones are bound before the swap (a bind failure rejects the
//! reload) and start accepting after it; removed ones stop accepting and
//! their connections finish. A changed worker count needs a restart. Health
//! state of servers that did not change is carried over.

use crate::config::{self, Config};
use crate::snapshot::Snapshot;
use anyhow::Context as _;
use arc_swap::ArcSwap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Build a snapshot from `path` and put it in force.
pub async fn reload(path: &Path, state: &ArcSwap<Snapshot>) -> anyhow::Result<()> {
    let started = Instant::now();
    let config = config::load(path)?;
    let old = state.load_full();
    same_workers(&old.config, &config)?;
    let snapshot = build_off_path(config).await?;
    let sockets = crate::listener::prepare(&snapshot.config)?;
    snapshot.inherit_health(&old);
    for u in crate::resolve::resolve_now(&snapshot).await {
        tracing::warn!(key = %u.key, error = %u.error, "server name does not resolve; retrying in the background");
    }
    let snapshot = Arc::new(snapshot);
    state.store(snapshot.clone());
    sockets.commit();
    old.health_stop.cancel();
    crate::health::start(&snapshot);
    crate::resolve::start(&snapshot);
    tracing::info!(
        config = %path.display(),
        detectors = snapshot.plugins.detectors.len(),
        routes = snapshot.config.routes.len(),
        took_ms = crate::clock::ms(started.elapsed()),
        "reload: new configuration in force"
    );
    Ok(())
}

/// Build the snapshot on a thread of its own (plugin loading compiles and
/// instantiates), so no worker stops serving connections meanwhile.
async fn build_off_path(config: Config) -> anyhow::Result<Snapshot> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name("refractium-reload".into()).spawn(move || {
        let built = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the reload runtime")
            .and_then(|rt| rt.block_on(Snapshot::build(config)));
        let _ = tx.send(built);
    })?;
    rx.await.context("the reload thread ended without an answer")?
}

/// Refuse a config that changes the number of workers.
fn same_workers(old: &Config, new: &Config) -> anyhow::Result<()> {
    if old.runtime.workers != new.runtime.workers {
        anyhow::bail!("{}: runtime.workers changed; restart refractium to apply it", new.file.display());
    }
    Ok(())
}

/// Reload on every `SIGHUP`, until the process ends.
pub async fn on_sighup(path: PathBuf, state: Arc<ArcSwap<Snapshot>>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(hup) => hup,
        Err(err) => {
            tracing::warn!(error = %err, "cannot listen for SIGHUP; reload is unavailable");
            return;
        }
    };
    while hup.recv().await.is_some() {
        let _ = trigger(&path, &state, "SIGHUP").await;
    }
}

/// Reload each time a plugin file compiled in the background is ready
/// ([`crate::plugin::background`]), until the process ends.
pub async fn on_plugin_compiled(path: PathBuf, state: Arc<ArcSwap<Snapshot>>) {
    loop {
        crate::plugin::background::compiled().notified().await;
        let _ = trigger(&path, &state, "plugin compiled").await;
    }
}

/// The outcome of the last reload: when, and the error if it was rejected.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub at: std::time::SystemTime,
    pub via: &'static str,
    pub error: Option<String>,
}

/// How many reload outcomes [`history`] keeps.
pub const HISTORY: usize = 10;

/// The last [`HISTORY`] outcomes, newest first.
static RECENT: std::sync::Mutex<std::collections::VecDeque<Outcome>> =
    std::sync::Mutex::new(std::collections::VecDeque::new());

/// The last reload's outcome, if any reload was tried.
pub fn last() -> Option<Outcome> {
    RECENT.lock().ok().and_then(|recent| recent.front().cloned())
}

/// The outcomes of the last [`HISTORY`] reloads, newest first.
pub fn history() -> Vec<Outcome> {
    RECENT.lock().map(|recent| recent.iter().cloned().collect()).unwrap_or_default()
}

/// Put `outcome` in front of `recent`, forgetting the oldest past [`HISTORY`].
fn remember(recent: &mut std::collections::VecDeque<Outcome>, outcome: Outcome) {
    recent.push_front(outcome);
    recent.truncate(HISTORY);
}

/// Reload (asked for `via` a signal or the admin API), log and record the
/// outcome, count it; `Err` carries the message of a rejected reload.
pub async fn trigger(path: &Path, state: &ArcSwap<Snapshot>, via: &'static str) -> Result<(), String> {
    tracing::info!(config = %path.display(), via, "reloading");
    crate::systemd::reloading();
    let result = reload(path, state).await.map_err(|err| format!("{err:#}"));
    match &result {
        Ok(()) => crate::metrics::reloaded(true),
        Err(error) => {
            crate::metrics::reloaded(false);
            tracing::error!(error = %error, via, "reload rejected; the previous configuration stays in force");
        }
    }
    if let Ok(mut recent) = RECENT.lock() {
        remember(&mut recent, Outcome { at: std::time::SystemTime::now(), via, error: result.clone().err() });
    }
    crate::systemd::ready();
    result
}

/// Reload when the config file or a `*.wasm` file of the plugins directory
/// changes (`reload.watch`). Events are debounced: the reload runs once
/// they have been quiet for [`DEBOUNCE`], so an editor that writes through a
/// temporary file and a rename, or a `.wasm` still being copied, causes one
/// reload of the finished file. The watcher follows directories (the config
/// file's and the plugins directory), so replaced files are seen too.
///
/// A config file reached through a symbolic link is watched both where the
/// link is and where it points. A mounted Kubernetes ConfigMap is updated by
/// swapping the `..data` link in the mounted directory (every file there is
/// a link through it): that rename counts as a change of the config and of
/// the plugins in that directory.
pub fn watch(path: PathBuf, state: Arc<ArcSwap<Snapshot>>) -> anyhow::Result<()> {
    use notify::{RecursiveMode, Watcher as _};
    let config = state.load().config.clone();
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let config_file = absolute(&path);
    let config_dir = config_file.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
    let resolved = std::fs::canonicalize(&path).ok().filter(|r| *r != config_file);
    let plugins_dir = config.plugins.dir.as_deref().map(absolute);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let (watched_file, watched_resolved, watched_plugins) =
        (config_file.clone(), resolved.clone(), plugins_dir.clone());
    let config_parent = config_dir.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event.kind.is_access() {
            return;
        }
        let swapped = |p: &Path, dir: &Path| p.parent() == Some(dir) && p.file_name().is_some_and(|n| n == "..data");
        let relevant = event.paths.iter().any(|p| {
            p == &watched_file
                || watched_resolved.as_ref() == Some(p)
                || swapped(p, &config_parent)
                || watched_plugins.as_ref().is_some_and(|dir| {
                    swapped(p, dir) || (p.parent() == Some(dir.as_path()) && p.extension().is_some_and(|e| e == "wasm"))
                })
        });
        if relevant {
            let _ = tx.send(());
        }
    })?;
    if let Some(target_dir) = resolved.as_deref().and_then(Path::parent).filter(|d| *d != config_dir)
        && let Err(err) = watcher.watch(target_dir, RecursiveMode::NonRecursive)
    {
        tracing::debug!(dir = %target_dir.display(), error = %err, "cannot watch the config link's target directory");
    }
    watcher.watch(&config_dir, RecursiveMode::NonRecursive)?;
    if let Some(dir) = &plugins_dir {
        if dir.is_dir() {
            watcher.watch(dir, RecursiveMode::NonRecursive)?;
        } else {
            tracing::warn!(dir = %dir.display(), "plugins directory does not exist; not watched");
        }
    }
    tokio::spawn(async move {
        // The watcher lives as long as this task.
        let _watcher = watcher;
        while rx.recv().await.is_some() {
            // Debounce: wait until the events stop for a moment.
            loop {
                match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_quiet) => break,
                }
            }
            let _ = trigger(&path, &state, "file change").await;
        }
    });
    Ok(())
}

/// How long file events must be quiet before a watch-triggered reload.
pub const DEBOUNCE: std::time::Duration = std::time::Duration::from_millis(200);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_history_keeps_the_newest_ten_newest_first() {
        let mut recent = std::collections::VecDeque::new();
        for n in 0..HISTORY + 3 {
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(n as u64);
            remember(&mut recent, Outcome { at, via: "SIGHUP", error: None });
        }
        let secs: Vec<u64> = recent
            .iter()
            .map(|o| o.at.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0))
            .collect();
        assert_eq!(secs, (3..HISTORY as u64 + 3).rev().collect::<Vec<_>>());
    }
}
