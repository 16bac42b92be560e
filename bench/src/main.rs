//! `refractium-bench`: compares, in one run, a direct loopback connection with
//! refractium, HAProxy (`option splice-auto`) and nginx `stream` on the same
//! backend. `backend` is the server process every workload talks to; `run`
//! starts the backend and each proxy found, runs the workloads interleaved
//! (median of a few short rounds per cell) and prints a markdown table of
//! figures and ratios to direct. See `bench/README.md`.

mod backend;
mod cells;
mod detectors;
mod hello;
mod hostile;
mod instructions;
mod load;
mod plugin;
mod procs;
mod proxies;
mod reload;
mod report;
mod rows;
mod run;
mod soak;
mod trickle;
mod udp;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "refractium-bench", about = "Benchmark refractium against direct, HAProxy and nginx")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve every workload (GET, TLS hello, SINK, SRCE, IDLE) on one port.
    Backend {
        #[arg(long, default_value = "127.0.0.1:0")]
        bind: SocketAddr,
        /// Print the bound port on stdout once listening.
        #[arg(long)]
        print_port: bool,
    },
    /// Micro benchmark of the built-in detectors: native Rust vs through Wasm.
    Detectors {
        /// Time single calls, each after writing this many KiB of other
        /// memory (caches as a proxy finds them after sleeping), instead of
        /// calls in a tight loop.
        #[arg(long, value_name = "KIB", num_args = 0..=1, default_missing_value = "4096")]
        cold: Option<usize>,
        /// Only these detectors (comma list, e.g. `quic,tls`); default: all.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// What plugin files cost, one table row each: size, compile, load,
    /// a detect call, a new hook session, hook throughput.
    Plugin {
        /// Plugin files (`NAME.wasm`, as in a plugins directory).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Reload latency, and the connection rate during a reload storm.
    Reload {
        /// The refractium binary.
        #[arg(long, default_value = "target/release/refractium")]
        refractium: PathBuf,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 3.0)]
        secs: f64,
    },
    /// Detection CPU per connection for a 1 and a 4 KiB first flight sent
    /// whole and one byte per write: flat per byte, not growing with the
    /// square of the bytes.
    Trickle {
        /// The refractium binary.
        #[arg(long, default_value = "target/release/refractium")]
        refractium: PathBuf,
    },
    /// UDP: 16 sessions bouncing 1,200-byte datagrams, direct vs through refractium.
    Udp {
        /// The refractium binary.
        #[arg(long, default_value = "target/release/refractium")]
        refractium: PathBuf,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 3.0)]
        secs: f64,
        /// refractium's `runtime.workers` (0, its default: one per core).
        #[arg(long, default_value_t = 0)]
        workers: usize,
    },
    /// Soak: the real binary under mixed and hostile traffic, reloads and
    /// plugin swaps for N minutes; fails if fds, RSS, connections or UDP
    /// sessions do not come back, or if an ordinary client failed.
    Soak {
        /// Minutes of load (fractional allowed, e.g. 0.5).
        #[arg(long, default_value_t = 5.0)]
        minutes: f64,
        /// The refractium binary.
        #[arg(long, default_value = "target/release/refractium")]
        refractium: PathBuf,
    },
    /// Hostile traffic at full size against the real binary: 10,000
    /// slowloris clients, a random-bytes flood, a UDP flood.
    Hostile {
        /// The refractium binary.
        #[arg(long, default_value = "target/release/refractium")]
        refractium: PathBuf,
        /// Comma list of scenarios (slowloris, flood, udp); default: all.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Seconds of each flood.
        #[arg(long, default_value_t = 10.0)]
        secs: f64,
        /// Slowloris clients.
        #[arg(long, default_value_t = 10_000)]
        slow: usize,
        /// Also write the report (summary table and sections) to this file.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// One cell of (b) or (c) against any address, for profiling a proxy by hand
    /// (`perf record -p …` while it runs): prints rate, p50/p99 and errors.
    Short {
        /// Where to connect: a proxy in front of `refractium-bench backend`.
        #[arg(long)]
        to: SocketAddr,
        /// Connections in flight.
        #[arg(long, default_value_t = 16)]
        conc: usize,
        /// Seconds to run.
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
        /// Send a TLS ClientHello (SNI bench.example) instead of an HTTP GET.
        #[arg(long)]
        tls: bool,
        /// Also print the CPU this process (and its children) used per connection.
        #[arg(long)]
        pid: Option<u32>,
    },
    /// User-space instructions per short connection at concurrency 1, for
    /// refractium and each peer installed, counted by callgrind (needs
    /// valgrind): a figure the machine's load does not move.
    Instructions {
        /// The refractium binary.
        #[arg(long, default_value = "target/release/refractium")]
        refractium: PathBuf,
        /// Seconds of counted connections per proxy.
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
    },
    /// Start the backend and the proxies, run the workloads, print the table.
    Run {
        /// The refractium binary (default: target/release/refractium if present).
        #[arg(long)]
        refractium: Option<PathBuf>,
        /// Smoke run: 1-s cells, 500 instead of 5,000 connections.
        #[arg(long)]
        quick: bool,
        /// Comma list of workloads (bulk, short, tls, tls-default, hold,
        /// idle, udp, plugins) and/or targets (direct, refractium, haproxy,
        /// nginx); default: all.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Also write the markdown report to this file.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Rounds per cell, 1 to 32 (default 3; the median is reported).
        #[arg(long)]
        rounds: Option<usize>,
        /// Seconds per timed cell (default 3, or 1 with --quick).
        #[arg(long)]
        secs: Option<f64>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Backend { bind, print_port } => {
            raise_nofile()?;
            backend::serve(bind, print_port)
        }
        Cmd::Detectors { cold, only } => detectors::run(cold, &only),
        Cmd::Instructions { refractium, secs } => {
            let nofile = raise_nofile()?;
            instructions::run(&refractium, secs, nofile)
        }
        Cmd::Reload { refractium, secs } => reload::run(&refractium, secs),
        Cmd::Trickle { refractium } => {
            raise_nofile()?;
            trickle::run(&refractium)
        }
        Cmd::Plugin { files } => plugin::run(&files),
        Cmd::Udp { refractium, secs, workers } => udp::run(&refractium, secs, workers),
        Cmd::Soak { minutes, refractium } => {
            raise_nofile()?;
            let outcome = soak::run(&refractium, minutes)?;
            println!("{}", outcome.markdown);
            if !outcome.passed {
                bail!("the soak failed (see the summary above)");
            }
            Ok(())
        }
        Cmd::Hostile { refractium, only, secs, slow, out } => {
            let nofile = raise_nofile()?;
            hostile::run(&hostile::Opts { refractium, only, secs, slow, out }, nofile)
        }
        Cmd::Short { to, conc, secs, tls, pid } => {
            raise_nofile()?;
            let ex = if tls { cells::tls_exchange() } else { cells::http_exchange() };
            let rt = tokio::runtime::Runtime::new()?;
            let cpu0 = pid.map(procs::cpu_secs);
            let r = rt.block_on(load::short(to, conc.max(1), Duration::from_secs_f64(secs.clamp(0.1, 600.0)), ex));
            let cpu = match (pid, cpu0) {
                (Some(p), Some(c0)) => {
                    format!(" · {:.1} µs CPU per conn", (procs::cpu_secs(p) - c0) * 1e6 / r.ok.max(1) as f64)
                }
                _ => String::new(),
            };
            println!(
                "{:.0} conns/s · p50 {:.3} ms · p99 {:.3} ms · {} ok · {} errors{cpu}",
                r.rate(),
                r.pct_ms(0.5),
                r.pct_ms(0.99),
                r.ok,
                r.errors
            );
            Ok(())
        }
        Cmd::Run { refractium, quick, only, out, rounds, secs } => {
            let limit = raise_nofile()?;
            run::run(run::Opts { refractium, quick, only, out, rounds, secs, nofile: limit })
        }
    }
}

/// Raise the soft RLIMIT_NOFILE to the hard limit; returns the new limit.
#[allow(unsafe_code)]
fn raise_nofile() -> Result<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read or write the struct we own.
    let ok = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && {
            lim.rlim_cur = lim.rlim_max.min(1 << 20);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0
        }
    };
    if !ok {
        bail!("cannot raise RLIMIT_NOFILE: {}", std::io::Error::last_os_error());
    }
    Ok(lim.rlim_cur)
}
