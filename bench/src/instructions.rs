//! `instructions`: the user-space instructions each proxy executes per
//! short HTTP connection at concurrency 1, counted by callgrind (refractium
//! also with the built-in `http-headers` hook on its HTTP route). Unlike a
//! rate or a CPU time, the count does not move with the machine's load or
//! with where the kernel places the three processes, so a change of a few
//! hundred instructions shows from one run to the next. It counts user space
//! only (the kernel's share, ≈ 48 µs of the ≈ 65 µs a connection costs a
//! proxy here, is the same for all three, see docs/performance.md), and nothing of
//! how cold the caches are.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cells::http_exchange;
use crate::proxies::{self, Hook, Kind};
use crate::run::{TempDir, start_backend};
use crate::{load, procs};

/// How long a proxy may take to start under callgrind: a minute or two for
/// refractium, which compiles its plugins again (without room for the
/// pooling allocator under callgrind, its engine settings differ).
const READY: Duration = Duration::from_secs(600);
/// Connections before counting: caches, pools, the JIT's first calls.
const WARM_UP: Duration = Duration::from_secs(2);

pub fn run(refractium: &Path, secs: f64, nofile: u64) -> Result<()> {
    for tool in ["valgrind", "callgrind_control"] {
        if procs::which(tool).is_none() {
            bail!("{tool} is not installed (Debian: apt-get install valgrind)");
        }
    }
    let dir = std::env::temp_dir().join(format!("refractium-instructions-{}", std::process::id()));
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = TempDir(dir);
    let (mut backend_group, backend) = start_backend(&tmp.0)?;
    // The wrapper runs in the proxy's directory: hand it an absolute path.
    let refractium =
        fs::canonicalize(refractium).with_context(|| format!("no refractium binary at {}", refractium.display()))?;
    // Unhooked, and with the built-in `http-headers` on its HTTP route: the
    // difference is what a hooked connection costs in user space.
    let mut kinds = vec![Kind::Refractium(refractium.clone()), Kind::Hooked(refractium, Hook::HttpHeaders)];
    kinds.extend(procs::which("nginx").map(Kind::Nginx));
    kinds.extend(procs::which("haproxy").map(Kind::Haproxy));
    let rt = tokio::runtime::Runtime::new()?;
    let secs = Duration::from_secs_f64(secs.clamp(1.0, 120.0));
    println!("| proxy | connections counted | user-space instructions per connection |");
    println!("|---|---:|---:|");
    for kind in kinds {
        let name = kind.name();
        let out = tmp.0.join(format!("{name}.callgrind"));
        let wrap =
            ["valgrind".to_string(), "--tool=callgrind".into(), format!("--callgrind-out-file={}", out.display())];
        eprintln!("{name}: starting under callgrind");
        let proxy = match proxies::start_with(&kind, backend.port(), &tmp.0, nofile, &wrap, READY) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("{name}: not measured: {e:#}");
                continue;
            }
        };
        let pid = proxy.group.pid;
        rt.block_on(load::short(proxy.addr, 1, WARM_UP, http_exchange()));
        control(pid, "-z")?;
        let r = rt.block_on(load::short(proxy.addr, 1, secs, http_exchange()));
        control(pid, "-d")?;
        let total = summary(&PathBuf::from(format!("{}.1", out.display())))?;
        if r.ok == 0 {
            bail!("{name}: no connection succeeded ({} errors)", r.errors);
        }
        println!("| {name} | {} | {} |", r.ok, total / r.ok);
        drop(proxy);
    }
    backend_group.check_alive().context("the backend died during the run")?;
    Ok(())
}

/// Send `callgrind_control` its `flag` (`-z` zero the counters, `-d` dump them).
fn control(pid: u32, flag: &str) -> Result<()> {
    let status = Command::new("callgrind_control")
        .arg(flag)
        .arg(pid.to_string())
        .stdout(std::process::Stdio::null())
        .status()
        .context("running callgrind_control")?;
    if !status.success() {
        bail!("callgrind_control {flag} {pid} failed ({status})");
    }
    Ok(())
}

/// The instruction total of a callgrind dump, waiting for it to be written.
fn summary(dump: &Path) -> Result<u64> {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let text = fs::read_to_string(dump).unwrap_or_default();
        if let Some(n) = text.lines().find_map(|l| l.strip_prefix("summary:")) {
            return n.trim().parse().with_context(|| format!("{}: summary {n:?}", dump.display()));
        }
        if Instant::now() > until {
            bail!("{}: no callgrind summary after 30 s", dump.display());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
