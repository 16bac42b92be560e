//! What one plugin file costs the proxy, whatever language it was written
//! in: its size, its compile time, what loading it costs (link,
//! pre-instantiate, a first instance and `init`), a detect call on a TLS
//! ClientHello, a new hook session, a short HTTP connection through a hook
//! (session, request, response, end, close: the calls the proxy makes for
//! each), and a hook's throughput on 256-KiB chunks from the client. One
//! table row per file; `builtin:NAME` measures a built-in plugin.

use anyhow::{Context as _, Result};
use refractium::config::Config;
use refractium::plugin::detector::{Detect as _, DetectorPlugin, Peer};
use refractium::plugin::hook::{Action, Direction, HookPlugin};
use refractium::plugin::{Detection, PluginSet, cache};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long each repeated measurement runs at most.
const BUDGET: Duration = Duration::from_secs(1);
/// The chunk a hooked connection reads at once.
const CHUNK: usize = 256 << 10;

pub fn run(files: &[PathBuf]) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    println!(
        "| file | size | compile | load (link, instance, init) | detect, 517-B ClientHello | new hook session | short HTTP conn through the hook (open / request / response / end / close) | hook, 256-KiB chunks |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for file in files {
        if let Some(name) = file.to_str().and_then(|f| f.strip_prefix("builtin:")) {
            let row = builtin(&rt, name).with_context(|| format!("measuring the built-in {name}"))?;
            println!("{row}");
            continue;
        }
        let row = measure(&rt, file).with_context(|| format!("measuring {}", file.display()))?;
        println!("{row}");
    }
    Ok(())
}

fn measure(rt: &tokio::runtime::Runtime, file: &Path) -> Result<String> {
    let bytes = std::fs::read(file)?;
    let name = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    // Compiled here, into this process's memory only (no cache directory):
    // every later load takes it from there.
    let started = Instant::now();
    let _ = cache::compile::<wasmtime::component::Component>(|| Ok(&bytes[..]), &cache::hash(&bytes), None)?;
    let compile = started.elapsed();

    let dir = tempfile_dir()?;
    std::fs::write(dir.join(format!("{name}.wasm")), &bytes)?;
    let mut config = Config::default();
    config.plugins.limits.call_timeout = Duration::from_secs(1);
    let empty = config.clone();
    config.plugins.dir = Some(dir.clone());
    // Loading the built-ins alone, and with the file: the difference of the
    // best of each is the file's own load.
    let (mut base, mut with, mut set) = (Duration::MAX, Duration::MAX, None);
    for _ in 0..8 {
        let t = Instant::now();
        rt.block_on(PluginSet::load(&empty))?;
        base = base.min(t.elapsed());
        let t = Instant::now();
        let loaded = rt.block_on(PluginSet::load(&config))?;
        with = with.min(t.elapsed());
        set = Some(loaded);
    }
    let best = with.saturating_sub(base);
    let set = set.context("loaded")?;
    if let Some(skipped) = set.skipped.first() {
        anyhow::bail!("it does not load: {}", skipped.reason);
    }
    // The detector as loaded, and through its component alone.
    let detect = match set.detector(&name) {
        Some(d) if d.calls_directly() => {
            config.plugins.direct_calls = false;
            let component = rt.block_on(PluginSet::load(&config))?;
            let through = component.detector(&name).context("loaded through its component")?;
            Some(format!("{} direct, {} component", ns(detect_cost(d)), ns(detect_cost(through))))
        }
        Some(d) => Some(format!("{} component", ns(detect_cost(d)))),
        None => None,
    };
    let (session, short, throughput) = match set.hook(&name) {
        Some(hook) => hook_cells(hook)?,
        None => (None, None, None),
    };
    let _ = std::fs::remove_dir_all(&dir);
    let dash = || "–".to_string();
    Ok(format!(
        "| {} | {} | {} | {} | {} | {} | {} | {} |",
        file.display(),
        size(bytes.len()),
        duration(compile),
        duration(best),
        detect.unwrap_or_else(dash),
        session.map(duration).unwrap_or_else(dash),
        short.unwrap_or_else(dash),
        throughput.unwrap_or_else(dash),
    ))
}

/// The row of a plugin built into the proxy: no file, nothing to compile or
/// load beyond what every start does.
fn builtin(rt: &tokio::runtime::Runtime, name: &str) -> Result<String> {
    let mut config = Config::default();
    config.plugins.limits.call_timeout = Duration::from_secs(1);
    let set = rt.block_on(PluginSet::load(&config))?;
    let detect = set.detector(name).map(|d| detect_cost(d));
    let (session, short, throughput) = match set.hook(name) {
        Some(hook) => hook_cells(hook)?,
        None if detect.is_none() => anyhow::bail!("no built-in plugin is called {name}"),
        None => (None, None, None),
    };
    let dash = || "–".to_string();
    Ok(format!(
        "| {name} (built in) | – | – | – | {} | {} | {} | {} |",
        detect.map(ns).unwrap_or_else(dash),
        session.map(duration).unwrap_or_else(dash),
        short.unwrap_or_else(dash),
        throughput.unwrap_or_else(dash),
    ))
}

/// Nanoseconds of one detect call of `d` on a TLS ClientHello.
fn detect_cost(d: &DetectorPlugin) -> u128 {
    let hello = crate::hello::client_hello("bench.example");
    let peer = Peer::new("127.0.0.1:40000", "127.0.0.1:443", "bench", false);
    per_call(|| {
        let _ = std::hint::black_box(d.detect(std::hint::black_box(&hello), &peer));
    })
}

type HookCells = (Option<Duration>, Option<String>, Option<String>);

/// A hook's cells: what a new session costs, what the calls of a short HTTP
/// connection cost, and its throughput.
fn hook_cells(hook: &Arc<HookPlugin>) -> Result<HookCells> {
    let peer = Peer::new("127.0.0.1:40000", "127.0.0.1:443", "bench", false);
    let detection = Detection::default();
    // Sessions kept open, so each one needs an instance of its own.
    let mut open = Vec::new();
    let started = Instant::now();
    while open.len() < 50 && started.elapsed() < BUDGET {
        open.push(hook.open(&peer, &detection, "bench").map_err(|f| anyhow::anyhow!("{f}"))?);
    }
    let session_cost = started.elapsed() / open.len().max(1) as u32;
    drop(open);
    let mut session = hook.open(&peer, &detection, "bench").map_err(|f| anyhow::anyhow!("{f}"))?;
    let chunk: Vec<u8> = (0..CHUNK).map(|i| b"refractium hook throughput\r\n"[i % 28]).collect();
    let (mut moved, mut stopped) = (0usize, None);
    let started = Instant::now();
    while started.elapsed() < BUDGET && moved < (4 << 30) {
        match session.on_data(Direction::ClientToServer, &chunk) {
            Ok(Action::Forward(out)) => moved += out.len().max(chunk.len()),
            Ok(Action::Pass(_)) => {
                stopped = Some("passes client bytes".to_string());
                break;
            }
            Ok(Action::Respond { .. } | Action::Close(_)) => {
                stopped = Some("closes".to_string());
                break;
            }
            Err(failure) => {
                stopped = Some(format!("failed after {:.1} MB: {failure}", moved as f64 / 1e6));
                break;
            }
        }
    }
    let rate = stopped.unwrap_or_else(|| format!("{:.2} GB/s", moved as f64 / started.elapsed().as_secs_f64() / 1e9));
    let short = short_conn(hook)?;
    Ok((Some(session_cost), Some(short), Some(rate)))
}

/// Mean µs of each call a short HTTP connection through `hook` makes, as
/// the proxy makes them: the session, the request, the response, the
/// client's end, the close (the session's drop, which keeps the instance).
fn short_conn(hook: &Arc<HookPlugin>) -> Result<String> {
    let peer = Peer::new("127.0.0.1:40000", "127.0.0.1:443", "bench", false);
    let detection = Detection { protocol: "http".into(), ..Detection::default() };
    let request = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n";
    let mut spent = [Duration::ZERO; 5];
    let mut n = 0u32;
    let started = Instant::now();
    while n < 200_000 && started.elapsed() < BUDGET {
        let t0 = Instant::now();
        let mut session = hook.open(&peer, &detection, "bench").map_err(|f| anyhow::anyhow!("{f}"))?;
        let t1 = Instant::now();
        let _ = std::hint::black_box(session.on_data(Direction::ClientToServer, request));
        let t2 = Instant::now();
        let _ = std::hint::black_box(session.on_data(Direction::ServerToClient, crate::backend::HTTP_RESPONSE));
        let t3 = Instant::now();
        let _ = std::hint::black_box(session.on_end(Direction::ClientToServer));
        let t4 = Instant::now();
        drop(session);
        let t5 = Instant::now();
        for (slot, (a, b)) in spent.iter_mut().zip([(t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5)]) {
            *slot += b - a;
        }
        n += 1;
    }
    let us = |d: Duration| d.as_secs_f64() * 1e6 / f64::from(n.max(1));
    let total: Duration = spent.iter().sum();
    Ok(format!("{:.2} µs ({})", us(total), spent.map(|d| format!("{:.2}", us(d))).join(" / ")))
}

/// ns per call of `f`, in a loop of at most [`BUDGET`] after a warm-up.
fn per_call(mut f: impl FnMut()) -> u128 {
    for _ in 0..200 {
        f();
    }
    let started = Instant::now();
    let mut n = 0u32;
    while n < 1_000_000 && started.elapsed() < BUDGET {
        for _ in 0..100 {
            f();
        }
        n += 100;
    }
    started.elapsed().as_nanos() / u128::from(n)
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("refractium-bench-plugin-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn size(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MB", b as f64 / 1e6),
        b if b >= 10_000 => format!("{} KB", b / 1000),
        b => format!("{b} B"),
    }
}

fn duration(d: Duration) -> String {
    match d.as_micros() {
        us if us >= 10_000 => format!("{} ms", us / 1000),
        us if us >= 1_000 => format!("{:.1} ms", us as f64 / 1000.0),
        us => format!("{us} µs"),
    }
}

fn ns(n: u128) -> String {
    if n >= 10_000 { format!("{} µs", n / 1000) } else { format!("{:.2} µs", n as f64 / 1000.0) }
}
