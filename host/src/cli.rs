//! The `refractium` command line: `run`, `check`, `detect`, `hook`, `plugins`.

use crate::config::{self, Config};
use crate::detect::{self, Outcome};
use crate::listener;
use crate::plugin::PluginSet;
use crate::plugin::detector::{Detect, Peer};
use crate::snapshot::Snapshot;
use anyhow::Context as _;
use arc_swap::ArcSwap;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// Print a line to stdout; a closed stdout (`refractium plugins | head`)
/// ends the command quietly instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(err) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if err.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            eprintln!("refractium: cannot write to stdout: {err}");
            std::process::exit(1);
        }
    }};
}

/// The default config file, relative to the working directory.
pub const DEFAULT_CONFIG: &str = "config/refractium.yaml";

#[derive(Parser)]
#[command(
    name = "refractium",
    version,
    about = "One port, many services: a protocol-detecting proxy with WebAssembly plugins"
)]
struct Cli {
    /// Config file.
    #[arg(short, long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Run,
    /// Load and validate the config and plugins, print what would run; or,
    /// given plugin files, say what each one is and what is wrong with it.
    Check {
        /// Plugin files (`*.wasm`) to check on their own, without a config
        /// (with `-c`, `init` gets the file's `plugins.config` entry).
        files: Vec<PathBuf>,
    },
    /// Run the detectors on captured first bytes; print one JSON object per file.
    Detect {
        /// Transport whose detectors to run.
        #[arg(long, value_enum, default_value_t = TransportArg::Tcp)]
        transport: TransportArg,
        /// The files are successive reads of one client: print one object for all.
        #[arg(long)]
        flight: bool,
        /// Files holding captured first bytes.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run a hook over files as successive chunks of one side of a
    /// connection; print what the other side would receive and the actions.
    Hook {
        /// The hook's name (a plugin file of the plugins directory).
        name: String,
        /// Which way the chunks travel.
        #[arg(long, value_enum, default_value_t = DirectionArg::ClientToServer)]
        direction: DirectionArg,
        /// The protocol the session is told detection found.
        #[arg(long, default_value = "")]
        protocol: String,
        /// Files holding the chunks, in order.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// List the loaded plugins.
    Plugins,
    /// Start a plugin project: a detector or a hook that builds as it is,
    /// with the one function to fill in, a test and build instructions.
    New {
        /// What the plugin exports.
        #[arg(value_enum)]
        kind: KindArg,
        /// The plugin's name (lower-case letters, digits, `-`).
        name: String,
        /// The language of the project.
        #[arg(long, value_enum, default_value_t = LangArg::Rust)]
        lang: LangArg,
        /// Where to write it (default: a directory named after the plugin).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The plugin SDK's directory (default: the one of the source tree
        /// this binary was built from).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum KindArg {
    Detector,
    Hook,
}

#[derive(Clone, Copy, ValueEnum)]
enum LangArg {
    Rust,
    C,
    Js,
    Python,
}

#[derive(Clone, Copy, ValueEnum)]
enum DirectionArg {
    ClientToServer,
    ServerToClient,
}

#[derive(Clone, Copy, ValueEnum)]
enum TransportArg {
    Tcp,
    Udp,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Run) {
        Command::Run => run(cli.config.as_deref()),
        Command::Check { files } if files.is_empty() => check(cli.config.as_deref()),
        Command::Check { files } => check_files(cli.config.as_deref(), &files),
        Command::Detect { transport, flight, files } => detect_files(cli.config.as_deref(), transport, flight, &files),
        Command::Hook { name, direction, protocol, files } => {
            run_hook(cli.config.as_deref(), &name, direction, protocol, &files)
        }
        Command::Plugins => plugins(cli.config.as_deref()),
        Command::New { kind, name, lang, dir, sdk } => new_plugin(kind, lang, &name, dir, sdk.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("refractium: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    let path = path.unwrap_or(Path::new(DEFAULT_CONFIG));
    Ok(config::load(path)?)
}

fn run(path: Option<&Path>) -> anyhow::Result<()> {
    let config = load_config(path)?;
    crate::logging::init(&config.log.level, config.log.format);
    crate::logging::log_panics();
    let file = config.file.display().to_string();
    let config_path = config.file.clone();
    let workers = config.runtime.resolved_workers();
    let nofile = crate::limits::raise_nofile();
    if let Some(warning) = crate::limits::nofile_warning(&config, nofile) {
        tracing::warn!("{warning}");
    }
    // This thread runs signals, reloads, health checks and the admin endpoint;
    // `listener::serve` starts the worker threads.
    let runtime = listener::main_runtime().context("starting the runtime")?;
    crate::plugin::background::enable();
    runtime.block_on(async {
        for (addr, udp) in crate::systemd::take_passed()? {
            let transport = if udp { "udp" } else { "tcp" };
            tracing::info!(%addr, transport, "socket passed by systemd");
        }
        let snapshot = Snapshot::build(config).await?;
        for u in crate::resolve::resolve_now(&snapshot).await {
            tracing::warn!(key = %u.key, error = %u.error, "server name does not resolve; retrying in the background");
        }
        for addr in crate::systemd::unused(&snapshot.config) {
            tracing::warn!(%addr, "systemd passed a socket that no listener uses (its address and transport must match a listener's bind)");
        }
        let bound = listener::bind_all(&snapshot, workers)?;
        let admin = match &snapshot.config.admin {
            Some(admin) => Some(
                listener::bind(admin.bind, false)
                    .and_then(tokio::net::TcpListener::from_std)
                    .map_err(|e| anyhow::anyhow!("admin: cannot bind {}: {e}", admin.bind))?,
            ),
            None => None,
        };
        tracing::info!(config = %file, workers, detectors = snapshot.plugins.detectors.len(), "refractium started");
        let state = Arc::new(ArcSwap::from_pointee(snapshot));
        tokio::spawn(crate::reload::on_sighup(config_path.clone(), state.clone()));
        tokio::spawn(crate::reload::on_plugin_compiled(config_path.clone(), state.clone()));
        tokio::spawn(crate::systemd::report_status());
        if state.load().config.reload.watch
            && let Err(err) = crate::reload::watch(config_path.clone(), state.clone())
        {
            tracing::warn!(error = %err, "cannot watch the config file and plugins directory; reload with SIGHUP");
        }
        let admin_stop = tokio_util::sync::CancellationToken::new();
        if let Some(admin) = admin {
            tokio::spawn(crate::admin::serve(admin, state.clone(), config_path, admin_stop.clone()));
        }
        let _stop_admin = admin_stop.drop_guard();
        listener::serve(state, bound, shutdown_signal()).await
    })
}

/// A single-threaded runtime for the one-shot commands.
fn local_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(err) => {
            tracing::warn!(error = %err, "cannot listen for SIGTERM; only SIGINT stops the proxy");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received; shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
    }
}

fn check(path: Option<&Path>) -> anyhow::Result<()> {
    let config = load_config(path)?;
    // Warnings met while building (an engine fallback, a plugin's trouble)
    // go to stderr as `run` would log them; the report goes to stdout.
    crate::logging::init("warn", config.log.format);
    let runtime = local_runtime()?;
    let snapshot = runtime.block_on(Snapshot::build(config))?;
    let unresolved = runtime.block_on(crate::resolve::resolve_now(&snapshot));
    if !unresolved.is_empty() {
        for u in &unresolved {
            say!("{}: {}: {}", snapshot.config.file.display(), u.key, u.error);
        }
        anyhow::bail!("{} server name(s) do not resolve", unresolved.len());
    }
    let c = &snapshot.config;
    say!("config {} is valid", c.file.display());
    if let Some(warning) = crate::limits::nofile_warning(c, crate::limits::nofile_hard()) {
        say!("warning: {warning}");
    }
    for l in &c.listeners {
        let plan = &snapshot.listeners[&l.name];
        let binds: Vec<String> = l.bind.iter().map(ToString::to_string).collect();
        let detectors: Vec<&str> = plan.detectors.iter().map(|d| d.name()).collect();
        say!(
            "listener {} on {} ({}): detectors [{}], default {}, on_timeout {}",
            l.name,
            binds.join(", "),
            l.transport,
            detectors.join(", "),
            l.default.as_deref().unwrap_or("(close)"),
            l.on_timeout.as_deref().unwrap_or("(close)"),
        );
    }
    for r in &c.routes {
        let how = match &r.r#match {
            Some(m) => describe(m),
            None => "reached by name only".into(),
        };
        say!("route {} -> {}: {how}", r.name, r.to);
    }
    for (name, b) in &c.backends {
        let servers: Vec<String> = b.servers.iter().map(ToString::to_string).collect();
        say!("backend {name}: {} ({})", servers.join(", "), b.balance);
        if let Some(pool) = snapshot.pools.get(name).filter(|p| p.has_names()) {
            let now: Vec<String> = pool.members().servers.iter().map(|s| s.addr.to_string()).collect();
            say!("  resolved now: {}", now.join(", "));
        }
    }
    print_plugins(&snapshot.plugins);
    if !snapshot.plugins.skipped.is_empty() {
        anyhow::bail!("{} plugin file(s) failed to load", snapshot.plugins.skipped.len());
    }
    Ok(())
}

/// `check FILE.wasm...`: each plugin file on its own, as the loader would
/// take it; fails when some file would not load.
fn check_files(path: Option<&Path>, files: &[PathBuf]) -> anyhow::Result<()> {
    let config = match path {
        Some(path) => load_config(Some(path))?,
        None => Config::default(),
    };
    crate::logging::init("warn", config.log.format);
    let mut failed = 0;
    for (i, file) in files.iter().enumerate() {
        if i > 0 {
            say!("");
        }
        let report = crate::plugin::inspect::check_file(file, &config, path.is_some());
        for line in &report.lines {
            say!("{line}");
        }
        failed += usize::from(report.problems > 0);
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} plugin file(s) would not load", files.len());
    }
    Ok(())
}

/// A route's match conditions, as `check` prints them.
fn describe(m: &config::Match) -> String {
    let mut parts = Vec::new();
    if let Some(p) = &m.protocol {
        parts.push(format!("protocol {p}"));
    }
    if let Some(sni) = &m.sni {
        parts.push(format!("sni {sni}"));
    }
    if !m.alpn.is_empty() {
        parts.push(format!("alpn any of [{}]", m.alpn.join(", ")));
    }
    if !m.client.is_empty() {
        let nets: Vec<String> = m.client.iter().map(ToString::to_string).collect();
        parts.push(format!("client in [{}]", nets.join(", ")));
    }
    for (k, v) in &m.attributes {
        parts.push(format!("{k} {v}"));
    }
    if parts.is_empty() { "matches every detected connection".into() } else { parts.join(" and ") }
}

fn plugins(path: Option<&Path>) -> anyhow::Result<()> {
    let config = config_or_default(path)?;
    crate::logging::init("warn", config.log.format);
    let plugins = local_runtime()?.block_on(PluginSet::load(&config))?;
    print_plugins(&plugins);
    Ok(())
}

fn print_plugins(plugins: &PluginSet) {
    say!("{:<12} {:<10} {:<9} {:<8} {:<14} source", "name", "version", "kind", "serves", "hash");
    for d in &plugins.detectors {
        let serves = match (d.serves_tcp, d.serves_udp) {
            (true, true) => "tcp,udp",
            (true, false) => "tcp",
            (false, true) => "udp",
            (false, false) => "-",
        };
        say!(
            "{:<12} {:<10} {:<9} {:<8} {:<14} {}",
            d.name(),
            d.info.version,
            "detector",
            serves,
            &d.hash[..12],
            d.source
        );
        if !d.refused.is_empty() {
            say!("  {} imports, and a call to them fails: {}", d.name(), d.refused.join(", "));
        }
    }
    for h in &plugins.hooks {
        say!(
            "{:<12} {:<10} {:<9} {:<8} {:<14} {}",
            h.name(),
            h.info.version,
            "hook",
            "tcp,udp",
            &h.hash[..12],
            h.source
        );
        if !h.refused.is_empty() {
            say!("  {} imports, and a call to them fails: {}", h.name(), h.refused.join(", "));
        }
        if let Some(why) = h.component_reason() {
            say!("  {} is called through its component (slower than directly): {why}", h.name());
        }
        use crate::plugin::hook::Direction;
        match (h.watches(Direction::ClientToServer), h.watches(Direction::ServerToClient)) {
            (true, false) => say!("  {} is called for client-to-server only", h.name()),
            (false, true) => say!("  {} is called for server-to-client only", h.name()),
            _ => {}
        }
    }
    for s in &plugins.skipped {
        say!("skipped {}: {}", s.path.display(), s.reason);
    }
}

/// `-c FILE`, else `config/refractium.yaml` when it exists, else the defaults
/// (built-in plugins only).
fn config_or_default(path: Option<&Path>) -> anyhow::Result<Config> {
    match path {
        Some(path) => Ok(config::load(path)?),
        None if Path::new(DEFAULT_CONFIG).exists() => Ok(config::load(Path::new(DEFAULT_CONFIG))?),
        None => Ok(Config::default()),
    }
}

/// `refractium new`: write the project and say what to do next.
fn new_plugin(
    kind: KindArg,
    lang: LangArg,
    name: &str,
    dir: Option<PathBuf>,
    sdk: Option<&Path>,
) -> anyhow::Result<()> {
    use crate::scaffold::{Kind, Lang, create};
    let kind = match kind {
        KindArg::Detector => Kind::Detector,
        KindArg::Hook => Kind::Hook,
    };
    let lang = match lang {
        LangArg::Rust => Lang::Rust,
        LangArg::C => Lang::C,
        LangArg::Js => Lang::Js,
        LangArg::Python => Lang::Python,
    };
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    let files = create(kind, lang, name, &dir, sdk)?;
    for file in &files {
        say!("wrote {}", file.display());
    }
    let function = match (kind, lang) {
        (Kind::Detector, _) => "detect",
        (Kind::Hook, Lang::Js) => "onData",
        (Kind::Hook, _) => "on_data",
    };
    say!("next: fill in `{function}` in {}, then build it as its README.md says", dir.display());
    Ok(())
}

/// `refractium hook`: one JSON object with each step (a file's chunk, then
/// the side's end), what the hook forwarded at each, everything the other
/// side would receive, and how the hook stopped the stream if it did.
fn run_hook(
    path: Option<&Path>,
    name: &str,
    direction: DirectionArg,
    protocol: String,
    files: &[PathBuf],
) -> anyhow::Result<()> {
    use crate::plugin::hook::{Action, Direction};
    crate::logging::init("warn", config::LogFormat::Text);
    let config = config_or_default(path)?;
    let plugins = local_runtime()?.block_on(PluginSet::load(&config))?;
    let Some(hook) = plugins.hook(name) else {
        let loaded: Vec<&str> = plugins.hooks.iter().map(|h| h.name()).collect();
        anyhow::bail!("no hook plugin named `{name}` (loaded: {})", loaded.join(", "));
    };
    let peer = Peer::new("127.0.0.1:40000", "127.0.0.1:443", "hook", false);
    let detection = crate::plugin::Detection { protocol, ..Default::default() };
    let mut session = hook.open(&peer, &detection, "hook").map_err(|f| anyhow::anyhow!("the session failed: {f}"))?;
    let (direction, label) = match direction {
        DirectionArg::ClientToServer => (Direction::ClientToServer, "client-to-server"),
        DirectionArg::ServerToClient => (Direction::ServerToClient, "server-to-client"),
    };
    let (mut steps, mut output, mut stop) = (Vec::new(), Vec::<u8>::new(), serde_json::Value::Null);
    // A direction the hook is not called for passes unchanged from the start.
    let called = hook.watches(direction);
    let mut passed = !called;
    let inputs = files.iter().map(Some).chain([None]);
    for input in inputs {
        let (label_in, answer) = match input {
            Some(file) => {
                let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
                let label = file.display().to_string();
                if passed {
                    // Passed on unchanged, without the hook.
                    output.extend_from_slice(&bytes);
                    continue;
                }
                (label, session.on_data(direction, &bytes))
            }
            None if passed => break,
            None => ("end".to_string(), session.on_end(direction)),
        };
        let step = match answer {
            Ok(Action::Forward(data)) => {
                output.extend_from_slice(&data);
                serde_json::json!({"input": label_in, "action": "forward", "data": String::from_utf8_lossy(&data)})
            }
            Ok(Action::Pass(data)) => {
                output.extend_from_slice(&data);
                passed = true;
                serde_json::json!({"input": label_in, "action": "pass", "data": String::from_utf8_lossy(&data)})
            }
            Ok(Action::Respond { data, reason }) => {
                stop = serde_json::json!({"respond": String::from_utf8_lossy(&data), "reason": reason});
                serde_json::json!({"input": label_in, "action": "respond", "data": String::from_utf8_lossy(&data), "reason": reason})
            }
            Ok(Action::Close(reason)) => {
                stop = serde_json::json!({"close": reason});
                serde_json::json!({"input": label_in, "action": "close", "reason": reason})
            }
            Err(failure) => {
                stop = serde_json::json!({"failed": failure.cause.label(), "detail": failure.detail});
                serde_json::json!({"input": label_in, "action": "failed", "cause": failure.cause.label(), "detail": failure.detail})
            }
        };
        let stopped = !stop.is_null();
        steps.push(step);
        if stopped {
            break;
        }
    }
    say!(
        "{}",
        serde_json::json!({
            "hook": name,
            "direction": label,
            "called": called,
            "steps": steps,
            "output": String::from_utf8_lossy(&output),
            "stop": stop,
        })
    );
    Ok(())
}

fn detect_files(path: Option<&Path>, transport: TransportArg, flight: bool, files: &[PathBuf]) -> anyhow::Result<()> {
    crate::logging::init("warn", config::LogFormat::Text);
    let config = config_or_default(path)?;
    let runtime = local_runtime()?;
    let plugins = runtime.block_on(PluginSet::load(&config))?;
    let udp = matches!(transport, TransportArg::Udp);
    let detectors: Vec<Arc<dyn Detect>> =
        plugins.detectors_for(udp).into_iter().map(|d| d as Arc<dyn Detect>).collect();
    let peer = Peer::new("127.0.0.1:40000", "127.0.0.1:443", "detect", udp);
    let mut inputs = Vec::new();
    for file in files {
        inputs.push(std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?);
    }
    let max_bytes = 1 << 20;
    let run = |chunks: Vec<&[u8]>| -> anyhow::Result<Option<crate::plugin::Detection>> {
        let mut reader = tokio_test_reader(chunks);
        let detected = runtime.block_on(detect::detect(
            &mut reader,
            Vec::new(),
            &detectors,
            &peer,
            max_bytes,
            std::time::Duration::from_secs(3600),
        ))?;
        Ok(match detected.outcome {
            Outcome::Matched { detection, .. } => Some(detection),
            _ => None,
        })
    };
    if flight {
        let detection = run(inputs.iter().map(Vec::as_slice).collect())?;
        let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        say!("{}", json_line(serde_json::json!(names), detection.as_ref()));
    } else {
        for (file, bytes) in files.iter().zip(&inputs) {
            let detection = run(vec![bytes.as_slice()])?;
            say!("{}", json_line(serde_json::json!(file.display().to_string()), detection.as_ref()));
        }
    }
    Ok(())
}

/// A reader that yields each chunk as one read, then end of stream.
fn tokio_test_reader(chunks: Vec<&[u8]>) -> impl tokio::io::AsyncRead + Unpin + '_ {
    ChunkReader { chunks: chunks.into_iter().filter(|c| !c.is_empty()).collect(), pos: 0 }
}

struct ChunkReader<'a> {
    chunks: std::collections::VecDeque<&'a [u8]>,
    pos: usize,
}

impl tokio::io::AsyncRead for ChunkReader<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let pos = self.pos;
        if let Some(chunk) = self.chunks.front().copied() {
            let n = (chunk.len() - pos).min(buf.remaining());
            buf.put_slice(&chunk[pos..pos + n]);
            if pos + n == chunk.len() {
                self.chunks.pop_front();
                self.pos = 0;
            } else {
                self.pos = pos + n;
            }
        }
        std::task::Poll::Ready(Ok(()))
    }
}

fn json_line(file: serde_json::Value, detection: Option<&crate::plugin::Detection>) -> serde_json::Value {
    let attributes: serde_json::Map<String, serde_json::Value> = detection
        .map(|d| d.attributes.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect())
        .unwrap_or_default();
    serde_json::json!({
        "file": file,
        "protocol": detection.map(|d| d.protocol.clone()),
        "sni": detection.and_then(|d| d.sni.clone()),
        "alpn": detection.map(|d| d.alpn.clone()).unwrap_or_default(),
        "attributes": attributes,
    })
}
