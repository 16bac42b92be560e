//! Child processes and what `/proc` says about them: starting the backend and
//! the proxies in their own process groups (stopped as a group on drop), free
//! loopback ports, and the CPU time, RSS and PSS of a process together with
//! all its descendants (nginx's master and workers count as one proxy).

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A child process in its own process group, stopped (group-wide) on drop.
pub struct Group {
    pub name: String,
    pub pid: u32,
    child: Child,
    log: Option<PathBuf>,
}

impl Group {
    /// Spawn `cmd` as the leader of a new process group, stderr to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: Option<PathBuf>) -> Result<Group> {
        cmd.process_group(0).stdin(Stdio::null());
        if let Some(path) = &log {
            let f = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
            cmd.stdout(f.try_clone().context("dup log")?).stderr(f);
        }
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        Ok(Group { name: name.to_string(), pid: child.id(), child, log })
    }

    /// Take the child's stdout (when it was piped).
    pub fn stdout_line(&mut self, wait: Duration) -> Result<String> {
        let out = self.child.stdout.take().context("stdout not piped")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let res = BufReader::new(out).read_line(&mut line).map(|_| line);
            let _ = tx.send(res);
        });
        let line = rx
            .recv_timeout(wait)
            .with_context(|| format!("{} printed nothing", self.name))?
            .context("reading child stdout")?;
        Ok(line.trim().to_string())
    }

    /// Fail if the process has exited, quoting the end of its log.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait().context("try_wait")? {
            bail!("{} exited ({status}): {}", self.name, self.log_tail());
        }
        Ok(())
    }

    /// The last lines of the child's log, on one line.
    pub fn log_tail(&self) -> String {
        let Some(path) = &self.log else {
            return String::new();
        };
        let text = fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(4)..].join(" | ")
    }

    fn signal(&self, sig: &str) {
        // Our own process group, by id.
        let _ = Command::new("kill").args([sig, "--", &format!("-{}", self.pid)]).stderr(Stdio::null()).status();
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.signal("-TERM");
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                // The leader is gone; make sure workers follow.
                self.signal("-KILL");
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.signal("-KILL");
        let _ = self.child.wait();
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding a probe port")?;
    Ok(l.local_addr().context("probe local_addr")?.port())
}

/// Wait until `addr` answers a `GET` with a 200 (so it proxies, not just accepts).
pub fn wait_ready(group: &mut Group, addr: SocketAddr, limit: Duration) -> Result<()> {
    let until = Instant::now() + limit;
    let mut last = String::from("never tried");
    while Instant::now() < until {
        group.check_alive()?;
        match probe(addr) {
            Ok(()) => return Ok(()),
            Err(e) => last = format!("{e:#}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{} not ready on {addr} after {limit:?}: {last}; log: {}", group.name, group.log_tail())
}

fn probe(addr: SocketAddr) -> Result<()> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(4)))?;
    s.write_all(b"GET /ready HTTP/1.1\r\nHost: bench\r\n\r\n")?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply)?;
    if !reply.starts_with(b"HTTP/1.1 200") {
        bail!("reply {:?}", String::from_utf8_lossy(&reply[..reply.len().min(40)]));
    }
    Ok(())
}

/// `root` and all its descendants, from the ppid of every `/proc/*/stat`.
fn tree(root: u32) -> Vec<(u32, Vec<String>)> {
    let mut stats = HashMap::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(f) = read_stat(pid) {
                stats.insert(pid, f);
            }
        }
    }
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        if let Some(f) = stats.get(&p) {
            out.push((p, f.clone()));
        }
        for (c, f) in &stats {
            if f.get(1).and_then(|s| s.parse::<u32>().ok()) == Some(p) && *c != p {
                todo.push(*c);
            }
        }
    }
    out
}

/// The fields of `/proc/PID/stat` after the `(comm)`: [0] state, [1] ppid, …
fn read_stat(pid: u32) -> Option<Vec<String>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Clock ticks per second for `/proc/PID/stat` times.
fn clk_tck() -> f64 {
    static TCK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// User + system CPU seconds of `root` and its descendants.
pub fn cpu_secs(root: u32) -> f64 {
    let ticks: u64 = tree(root)
        .iter()
        .map(|(_, f)| {
            let t = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
            t(11) + t(12)
        })
        .sum();
    ticks as f64 / clk_tck()
}

fn sum_kib(root: u32, file: &str, key: &str) -> u64 {
    tree(root)
        .iter()
        .filter_map(|(pid, _)| fs::read_to_string(format!("/proc/{pid}/{file}")).ok())
        .flat_map(|text| {
            text.lines()
                .filter(|l| l.starts_with(key))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// Proportional set size in KiB of `root` and its descendants.
pub fn pss_kib(root: u32) -> u64 {
    sum_kib(root, "smaps_rollup", "Pss:")
}

/// Resident set size in KiB of `root` and its descendants.
pub fn rss_kib(root: u32) -> u64 {
    sum_kib(root, "status", "VmRSS:")
}

/// Threads of `root` and its descendants.
pub fn threads(root: u32) -> u64 {
    sum_kib(root, "status", "Threads:")
}

/// Find an executable by name in `PATH` and the sbin directories.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// First line a command prints (stdout or stderr), for version strings.
pub fn first_line(cmd: &Path, arg: &str) -> String {
    Command::new(cmd)
        .arg(arg)
        .output()
        .map(|o| {
            let text = [o.stdout, o.stderr].concat();
            String::from_utf8_lossy(&text).lines().next().unwrap_or("").trim().to_string()
        })
        .unwrap_or_default()
}

/// Start `refractium run` on `yaml`, written to a fresh temp dir named after
/// `tag` (its log goes there too); returns the process group and the dir,
/// which the caller removes when done.
pub fn start_refractium(binary: &Path, tag: &str, yaml: &str) -> Result<(Group, PathBuf)> {
    let binary = fs::canonicalize(binary).unwrap_or_else(|_| binary.to_path_buf());
    let dir = std::env::temp_dir().join(format!("refractium-bench-{tag}-{}", std::process::id()));
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let conf = dir.join(format!("{tag}.yaml"));
    fs::write(&conf, yaml).with_context(|| format!("writing {}", conf.display()))?;
    let mut cmd = Command::new(&binary);
    cmd.arg("run").arg("-c").arg(&conf);
    let group = Group::spawn("refractium", cmd, Some(dir.join("refractium.log")))?;
    Ok((group, dir))
}

/// What `cmd args` prints, trimmed; empty when it cannot run.
pub fn sh(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// The 1-, 5- and 15-minute load averages, as `/proc/loadavg` gives them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}
