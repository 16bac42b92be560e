//! The `run` subcommand: decide what to run, start the backend and every
//! proxy that is installed and starts (skipping, with the reason, any that is
//! absent or fails), run the workloads of [`crate::cells`], then the rows
//! that need proxies configured otherwise (each started for them, after the
//! others: (c) with default worker counts, (g) UDP, (h) plugin files ahead
//! of `http`), then assemble the markdown report, print it and write it to
//! `--out`.

mod ahead;

pub use ahead::{KEY as AHEAD_KEY, Kind as AheadKind};

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::cells::{self, Cell, Plan, Target};
use crate::procs::{self, Group};
use crate::proxies::{self, HTTP_HEADERS, Hook, IDENTITY, Kind, Proxy};
use crate::report::{Samples, Table};
use crate::udp::UdpProxy;

/// Options of `run`, from the command line.
pub struct Opts {
    pub refractium: Option<PathBuf>,
    pub quick: bool,
    pub only: Vec<String>,
    pub out: Option<PathBuf>,
    pub rounds: Option<usize>,
    pub secs: Option<f64>,
    pub nofile: u64,
}

const WORKLOADS: [&str; 8] = ["bulk", "short", "tls", "tls-default", "hold", "idle", "udp", "plugins"];
const PROXIES: [&str; 5] = ["refractium", IDENTITY, HTTP_HEADERS, "haproxy", "nginx"];

/// A temp dir removed on drop.
pub struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub fn run(opts: Opts) -> Result<()> {
    for item in &opts.only {
        if !WORKLOADS.contains(&item.as_str()) && !PROXIES.contains(&item.as_str()) && item != "direct" {
            bail!("--only: unknown item {item:?} (workloads {WORKLOADS:?}, targets direct, {PROXIES:?})");
        }
    }
    let picked = |set: &[&str], all_if_none: bool| -> Vec<String> {
        let chosen: Vec<String> = opts.only.iter().filter(|i| set.contains(&i.as_str())).cloned().collect();
        if chosen.is_empty() && all_if_none { set.iter().map(|s| s.to_string()).collect() } else { chosen }
    };
    let workloads = picked(&WORKLOADS, true);
    let proxies_wanted = picked(&PROXIES, !opts.only.iter().any(|i| i == "direct"));
    let secs = opts.secs.unwrap_or(if opts.quick { 1.0 } else { 3.0 });
    if !(0.05..=60.0).contains(&secs) {
        bail!("--secs must be within 0.05..=60");
    }
    let rounds = opts.rounds.unwrap_or(3);
    if !(1..=32).contains(&rounds) {
        bail!("--rounds must be within 1..=32");
    }
    let plan = Plan {
        cell: Duration::from_secs_f64(secs),
        rounds,
        hold_n: if opts.quick { 500 } else { 2000 },
        hold_window: Duration::from_secs(if opts.quick { 2 } else { 5 }),
        idle_n: if opts.quick { 500 } else { 5000 },
        workloads,
    };

    let dir = std::env::temp_dir().join(format!("refractium-bench-{}", std::process::id()));
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = TempDir(dir);

    let (mut backend_group, backend) = start_backend(&tmp.0)?;
    eprintln!("backend listening on {backend}");

    let mut skipped = Vec::new();
    let mut running: Vec<Proxy> = Vec::new();
    // The unhooked proxies that started, for the rows that start them again.
    let mut plain: Vec<Kind> = Vec::new();
    for name in &proxies_wanted {
        let refractium = opts
            .refractium
            .clone()
            .or_else(|| Some(PathBuf::from("target/release/refractium")))
            .filter(|p| p.is_file())
            // The proxy runs in a temp dir: make a relative path absolute.
            .map(|p| std::fs::canonicalize(&p).unwrap_or(p));
        let kind = match name.as_str() {
            "refractium" => refractium.map(Kind::Refractium),
            IDENTITY => refractium.and_then(|bin| {
                let hook = proxies::identity_hook(&bin);
                if hook.is_none() {
                    eprintln!("{name}: no testhook next to {} (cargo build -p refractium builds it)", bin.display());
                }
                hook.map(|hook| Kind::Hooked(bin, Hook::Identity(hook)))
            }),
            HTTP_HEADERS => refractium.map(|bin| Kind::Hooked(bin, Hook::HttpHeaders)),
            "haproxy" => procs::which("haproxy").map(Kind::Haproxy),
            _ => procs::which("nginx").map(Kind::Nginx),
        };
        let Some(kind) = kind else {
            eprintln!("{name}: skipped (binary not found)");
            skipped.push(format!("{name}: binary not found"));
            continue;
        };
        match proxies::start(&kind, backend.port(), &tmp.0, opts.nofile) {
            Ok(p) => {
                eprintln!("{name}: listening on {} ({})", p.addr, p.version);
                running.push(p);
                if !matches!(kind, Kind::Hooked(..)) {
                    plain.push(kind);
                }
            }
            Err(e) => {
                eprintln!("{name}: skipped (failed to start: {e:#})");
                skipped.push(format!("{name}: failed to start: {e:#}"));
            }
        }
    }

    let mut targets = vec![Target { name: "direct", addr: backend, pid: None, pss_start: None, skip: &[] }];
    targets.extend(running.iter().map(|p| Target {
        name: p.name,
        addr: p.addr,
        pid: Some(p.group.pid),
        pss_start: Some(procs::pss_kib(p.group.pid)),
        skip: skipped_cells(p.name),
    }));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("building the load runtime")?;
    let mut samples = Samples::default();
    rt.block_on(cells::run_all(&plan, &targets, backend, &mut samples));
    let mut notes = Vec::new();
    if plan.has("tls-default") {
        let dir = tmp.0.join("default-workers");
        rt.block_on(default_workers(&plan, &plain, &targets, backend, &dir, opts.nofile, &mut samples, &mut notes));
    }
    let ahead = match plain.iter().find_map(|k| if let Kind::Refractium(bin) = k { Some(bin) } else { None }) {
        Some(bin) if plan.has("plugins") => Some(rt.block_on(ahead::run(&plan, bin, backend, &tmp.0))),
        _ => None,
    };
    drop(rt);
    if plan.has("udp") {
        udp_rows(&plan, &plain, &targets, &tmp.0.join("udp"), opts.nofile, &mut samples, &mut notes)?;
    }
    backend_group.check_alive().context("the backend died during the run")?;

    let names: Vec<&str> = targets.iter().map(|t| t.name).collect();
    let mut table = Table::new(&names);
    crate::rows::rows(&plan, &targets, &samples, &mut table);
    let tally = [crate::rows::tally(&plan, &targets, &samples), crate::rows::hooked_tally(&targets, &samples)]
        .into_iter()
        .flatten()
        .collect::<String>();
    let tally = (!tally.is_empty()).then_some(tally);
    let mut report = render(&plan, &opts, &running, &skipped, &notes, &table, tally.as_deref());
    if let Some(ahead) = &ahead {
        report += &ahead_section(&plan, ahead);
    } else if plan.has("plugins") {
        report += "\n## (h) Plugin files ahead of http\n\nskipped: no refractium (not selected, not found, or it did not start)\n";
    }
    println!("{report}");
    if let Some(out) = &opts.out {
        if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        fs::write(out, &report).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("wrote {}", out.display());
    }
    drop(running);
    drop(backend_group);
    Ok(())
}

/// The cells a target sits out: the hooked ones run only what their hook
/// sees (bulk, short and idle connections through the identity hook; HTTP
/// bulk and short connections through `http-headers`), and only refractium
/// unhooked runs HTTP bulk beside them (the peers relay it as plain bulk).
fn skipped_cells(name: &str) -> &'static [Cell] {
    match name {
        "refractium" => &[],
        IDENTITY => &[Cell::HttpBulk, Cell::Tls, Cell::Hold],
        HTTP_HEADERS => &[Cell::Bulk, Cell::Tls, Cell::Hold, Cell::Idle],
        _ => &[Cell::HttpBulk],
    }
}

/// Start `refractium-bench backend` and read the port it prints.
pub fn start_backend(dir: &Path) -> Result<(Group, SocketAddr)> {
    let exe = std::env::current_exe().context("locating refractium-bench")?;
    let mut cmd = Command::new(exe);
    cmd.args(["backend", "--bind", "127.0.0.1:0", "--print-port"]);
    cmd.stdout(Stdio::piped());
    cmd.stderr(fs::File::create(dir.join("backend.log")).context("backend log")?);
    let mut group = Group::spawn("backend", cmd, None)?;
    let line = group.stdout_line(Duration::from_secs(10))?;
    let port: u16 = line.parse().with_context(|| format!("backend printed {line:?}"))?;
    Ok((group, SocketAddr::from(([127, 0, 0, 1], port))))
}

fn render(
    plan: &Plan,
    opts: &Opts,
    running: &[Proxy],
    skipped: &[String],
    notes: &[String],
    table: &Table,
    tally: Option<&str>,
) -> String {
    let mut out = String::from("# refractium benchmark\n\n");
    out += &format!(
        "- when: {} · kernel {} · {} cores · load average at start {}\n",
        procs::sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        procs::sh("uname", &["-r"]),
        procs::sh("nproc", &[]),
        procs::load_average(),
    );
    out += &format!(
        "- plan: {}{:.1} s cells, median of {} rounds, {} holders, {} idle connections, fd limit {}\n",
        if opts.quick { "quick, " } else { "" },
        plan.cell.as_secs_f64(),
        plan.rounds,
        plan.hold_n,
        plan.idle_n,
        opts.nofile,
    );
    for p in running {
        out += &format!("- {}: {}\n", p.name, p.version);
    }
    for s in skipped {
        out += &format!("- skipped {s}\n");
    }
    for n in notes {
        out += &format!("- {n}\n");
    }
    out += "- cells: figure (ratio to direct); load generator, backend and proxy share the cores: \
            ratios move ±0.15 run to run, compare only within one run\n\n";
    out += &table.markdown();
    if let Some(tally) = tally {
        out += "\n";
        out += tally;
    }
    out
}

/// (c) at concurrency 16 and 64 through each proxy with its default worker
/// count ([`proxies::Workers::Default`]), each started again for these
/// rows, with direct in the same rounds; recorded in the columns of the
/// one-worker proxies (`tlsd16`, `tlsd64`).
#[allow(clippy::too_many_arguments)]
async fn default_workers(
    plan: &Plan,
    plain: &[Kind],
    targets: &[Target],
    backend: SocketAddr,
    dir: &Path,
    nofile: u64,
    samples: &mut Samples,
    notes: &mut Vec<String>,
) {
    if let Err(e) = fs::create_dir_all(dir) {
        notes.push(format!("(c) default workers: skipped, creating {}: {e}", dir.display()));
        return;
    }
    let mut started = Vec::new();
    let mut local = vec![Target { name: "direct", addr: backend, pid: None, pss_start: None, skip: &[] }];
    let mut cols = vec![0];
    for kind in plain {
        let Some(col) = targets.iter().position(|t| t.name == kind.name()) else { continue };
        match proxies::start_default_workers(kind, backend.port(), dir, nofile) {
            Ok(p) => {
                eprintln!("{} (default workers): listening on {}", p.name, p.addr);
                local.push(Target { name: p.name, addr: p.addr, pid: Some(p.group.pid), pss_start: None, skip: &[] });
                cols.push(col);
                started.push(p);
            }
            Err(e) => {
                eprintln!("{} (default workers): skipped ({e:#})", kind.name());
                notes.push(format!("(c) default workers: {} failed to start: {e:#}", kind.name()));
            }
        }
    }
    let threads: Vec<String> = started.iter().map(|p| format!("{} {}", p.name, procs::threads(p.group.pid))).collect();
    if !threads.is_empty() {
        notes.push(format!(
            "(c) default workers: refractium without `runtime.workers` (one per core), HAProxy without `nbthread`, \
             nginx `worker_processes auto`; threads (nginx: processes) at start: {}",
            threads.join(", ")
        ));
    }
    let tls = cells::tls_exchange();
    let cells = [("tlsd16".to_string(), 16, tls.clone()), ("tlsd64".to_string(), 64, tls)];
    cells::short_rounds(plan, &local, &cols, &cells, samples).await;
    drop(started);
}

/// (g): the UDP cells, direct to an echo server and through refractium's
/// UDP listener and nginx `stream` UDP, each started for these rows with
/// one worker; recorded in the proxies' columns (`udp1`, `udp8`).
fn udp_rows(
    plan: &Plan,
    plain: &[Kind],
    targets: &[Target],
    dir: &Path,
    nofile: u64,
    samples: &mut Samples,
    notes: &mut Vec<String>,
) -> Result<()> {
    let echo = crate::udp::echo_server()?;
    let mut groups = Vec::new();
    let mut local = vec![Target { name: "direct", addr: echo, pid: None, pss_start: None, skip: &[] }];
    let mut cols = vec![0];
    for kind in plain {
        let (proxy, name) = match kind {
            Kind::Refractium(bin) => (UdpProxy::Refractium(bin.clone()), "refractium"),
            Kind::Nginx(bin) => (UdpProxy::Nginx(bin.clone()), "nginx"),
            _ => continue,
        };
        let Some(col) = targets.iter().position(|t| t.name == name) else { continue };
        match crate::udp::start_proxy(&proxy, echo, &dir.join(name), nofile) {
            Ok((group, addr, _)) => {
                eprintln!("{name} (UDP): listening on {addr}");
                local.push(Target { name, addr, pid: Some(group.pid), pss_start: None, skip: &[] });
                cols.push(col);
                groups.push(group);
            }
            Err(e) => {
                eprintln!("{name} (UDP): skipped ({e:#})");
                notes.push(format!("(g) UDP: {name} failed to start: {e:#}"));
            }
        }
    }
    crate::udp::cells(plan, &local, &cols, samples);
    for g in &mut groups {
        if let Err(e) = g.check_alive() {
            notes.push(format!("(g) UDP: {e:#}"));
        }
    }
    Ok(())
}

/// The markdown of (h): its own table (columns: direct, 0, 10 and 30 files),
/// the round-by-round line against 0 files and why anything was skipped.
fn ahead_section(plan: &Plan, ahead: &ahead::Outcome) -> String {
    let mut out = String::from("\n## (h) Plugin files ahead of http\n\n");
    out += &format!(
        "Short HTTP connections at c=16 through refractium (one worker) with 0, 10 and 30 plugin files in the \
         listener's `detectors` before `http`, each answering `no-match` to HTTP; cells: figure (ratio to direct), \
         and for 10 and 30 files the median over the {} rounds of the ratio to 0 files in the same round. Targets \
         (issue 29): 10 files ≥ 0.95×, 30 files ≥ 0.90× of 0 files.\n\n",
        plan.rounds
    );
    for n in &ahead.notes {
        out += &format!("- {n}\n");
    }
    if !ahead.notes.is_empty() {
        out += "\n";
    }
    if ahead.kinds.is_empty() {
        return out;
    }
    let mut table = Table::new(&ahead::COLUMNS);
    crate::rows::ahead_rows(&ahead.kinds, &ahead.samples, &mut table);
    out += &table.markdown();
    if let Some(line) = crate::rows::ahead_tally(&ahead.kinds, &ahead.samples) {
        out += "\n";
        out += &line;
    }
    out
}
