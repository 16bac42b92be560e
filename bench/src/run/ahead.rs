//! (h) Plugin files ahead of `http`: short HTTP connections at concurrency
//! 16 through refractium (one worker) with 0, 10 and 30 plugin files listed
//! before `http` in the listener's `detectors`, for a file written with the
//! SDK (the test plugin `spin`) and one without (the hand-written WAT
//! detector `wat-hi` of `plugins/examples/wat`). Both answer `no-match` to an
//! HTTP request, so the rows show what asking them costs a connection. Each
//! configuration is a refractium of its own, started for these rows, and
//! takes its turn in each round with direct as the other cells do.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::cells::{self, Plan, Target};
use crate::procs::{self, Group};
use crate::report::Samples;

/// The sample key of every cell of these rows.
pub const KEY: &str = "ahead16";
/// Plugin files ahead of `http`, besides 0.
pub const COUNTS: [usize; 2] = [10, 30];
/// Columns: direct, 0 files, then 10 and 30 files of each kind in turn.
pub const COLUMNS: [&str; 4] = ["direct", "0 files", "10 files", "30 files"];

/// A kind of plugin file, and its columns in the samples.
pub struct Kind {
    pub label: &'static str,
    /// For the round-by-round line.
    pub short: &'static str,
    /// Sample columns of its 10 and 30 files.
    pub cols: [usize; 2],
}

/// What the rows need: the samples (column 0 direct, 1 no file, then each
/// kind's), the kinds that ran, and why any did not.
pub struct Outcome {
    pub samples: Samples,
    pub kinds: Vec<Kind>,
    pub notes: Vec<String>,
}

const SDK: &str = "SDK: test plugin `spin` (Rust)";
const NO_SDK: &str = "no SDK: `wat-hi` (WAT, bump allocator)";

/// Find or build the two plugin files, start a refractium for each count,
/// run the cells. `bin` is refractium; `backend` the HTTP backend.
pub async fn run(plan: &Plan, bin: &Path, backend: SocketAddr, dir: &Path) -> Outcome {
    let mut out = Outcome { samples: Samples::default(), kinds: Vec::new(), notes: Vec::new() };
    let dir = dir.join("ahead");
    let mut files: Vec<(&'static str, PathBuf)> = Vec::new();
    match sdk_plugin(bin) {
        Some(f) => files.push((SDK, f)),
        None => out.notes.push(format!(
            "{SDK}: skipped, no {} next to the refractium binary (`cargo build -p refractium` builds it)",
            SPIN
        )),
    }
    match wat_plugin(&dir) {
        Ok(f) => files.push((NO_SDK, f)),
        Err(e) => out.notes.push(format!("{NO_SDK}: skipped, {e:#}")),
    }
    if files.is_empty() {
        return out;
    }

    // Column 0 is direct; 1 the listener without plugin files.
    const NAMES: [&str; 5] = ["0 files", "10 SDK", "30 SDK", "10 no-SDK", "30 no-SDK"];
    let mut groups: Vec<Group> = Vec::new();
    let mut targets = vec![Target { name: "direct", addr: backend, pid: None, pss_start: None, skip: &[] }];
    let mut cols = vec![0];
    let mut configs: Vec<(usize, Option<&Path>, usize)> = vec![(1, None, 0)];
    for (label, file) in &files {
        for (j, n) in COUNTS.iter().enumerate() {
            configs.push((first_col(label) + j, Some(file.as_path()), *n));
        }
    }
    for (col, file, n) in configs {
        let name = NAMES[col - 1];
        match start(bin, &dir, name, file, n, backend) {
            Ok((group, addr)) => {
                eprintln!("plugin files ahead of http, {name}: listening on {addr}");
                targets.push(Target { name, addr, pid: Some(group.pid), pss_start: None, skip: &[] });
                cols.push(col);
                groups.push(group);
            }
            Err(e) => {
                eprintln!("plugin files ahead of http, {name}: skipped ({e:#})");
                out.notes.push(format!("{name}: failed to start: {e:#}"));
            }
        }
    }
    for (label, _) in &files {
        let first = first_col(label);
        if cols.contains(&first) || cols.contains(&(first + 1)) {
            let short = if *label == SDK { "SDK" } else { "no SDK" };
            out.kinds.push(Kind { label, short, cols: [first, first + 1] });
        }
    }
    let cells = [(KEY.to_string(), 16, cells::http_exchange())];
    cells::short_rounds(plan, &targets, &cols, &cells, &mut out.samples).await;
    for g in &mut groups {
        if let Err(e) = g.check_alive() {
            out.notes.push(format!("{e:#}"));
        }
    }
    out
}

/// The column of 10 files of a kind; 30 files is the next.
fn first_col(label: &str) -> usize {
    if label == SDK { 2 } else { 4 }
}

/// The file name of the SDK plugin in the test build's output.
const SPIN: &str = "refractium_test_spin.wasm";

/// The test plugin `spin` (written with the SDK; it wants `spin`, turns down
/// any other first byte), which `cargo build -p refractium` leaves next to
/// the binary (`target/release/refractium`), as the hook of the
/// `refractium+identity` column.
fn sdk_plugin(bin: &Path) -> Option<PathBuf> {
    let target = bin.parent()?.parent()?;
    let file = target.join("wasm-plugins/wasm32-wasip2/plugin").join(SPIN);
    file.is_file().then_some(file)
}

/// `wat-hi` built from `plugins/examples/wat/hi.wat` into `dir`, as its
/// README builds it with `wasm-tools` (parse, embed the world, make the
/// component), here with the libraries `wasm-tools` is made of.
fn wat_plugin(dir: &Path) -> Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let source = root.join("plugins/examples/wat/hi.wat");
    let mut core = wat::parse_file(&source).with_context(|| format!("parsing {}", source.display()))?;
    let mut resolve = wit_parser::Resolve::default();
    let (package, _) = resolve.push_dir(root.join("wit")).context("reading wit/")?;
    let world = resolve.select_world(&[package], Some("detector-plugin")).context("world detector-plugin")?;
    wit_component::embed_component_metadata(&mut core, &resolve, world, wit_component::StringEncoding::UTF8, false)
        .context("embedding the world")?;
    let wasm = wit_component::ComponentEncoder::default()
        .module(&core)
        .context("the core module")?
        .validate(true)
        .encode()
        .context("making the component")?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = dir.join("wat-hi.wasm");
    fs::write(&file, wasm).with_context(|| format!("writing {}", file.display()))?;
    Ok(file)
}

/// Start refractium with `n` copies of `file` (`p01` … in `detectors`) before
/// `http`, one worker; wait until it proxies.
fn start(
    bin: &Path,
    dir: &Path,
    name: &str,
    file: Option<&Path>,
    n: usize,
    backend: SocketAddr,
) -> Result<(Group, SocketAddr)> {
    let here = dir.join(name.replace(' ', "-"));
    let plugins = here.join("plugins.d");
    fs::create_dir_all(&plugins).with_context(|| format!("creating {}", plugins.display()))?;
    let mut list = String::new();
    if let Some(file) = file {
        for i in 1..=n {
            fs::copy(file, plugins.join(format!("p{i:02}.wasm")))
                .with_context(|| format!("copying {}", file.display()))?;
            list += &format!("p{i:02}, ");
        }
    }
    let port = procs::free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let conf = here.join("refractium.yaml");
    let yaml = format!(
        "\
listeners:
  - name: edge
    bind: {addr}
    detectors: [{list}http]
    detect: {{ timeout: 3s }}
routes:
  - name: web
    match: {{ protocol: http }}
    to: web
backends:
  web: {{ servers: [{backend}] }}
plugins: {{ dir: plugins.d, cache_dir: {cache:?} }}
limits: {{ max_connections: 100000, max_connections_per_ip: 100000, idle_timeout: 10m }}
runtime: {{ workers: 1 }}
log: {{ level: warn }}
",
        cache = dir.join("cache").display().to_string(),
    );
    fs::write(&conf, yaml).with_context(|| format!("writing {}", conf.display()))?;
    let mut cmd = Command::new(bin);
    cmd.arg("run").arg("-c").arg(&conf).current_dir(&here);
    let mut group = Group::spawn("refractium", cmd, Some(here.join("refractium.log")))?;
    // The first start compiles the plugin file; later ones find it cached.
    procs::wait_ready(&mut group, addr, Duration::from_secs(60))?;
    Ok((group, addr))
}
