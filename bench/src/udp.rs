//! The UDP workload: 16 client sessions each bounce 1,200-byte datagrams off
//! an echo server (one outstanding datagram per session), for a few seconds,
//! directly and through refractium's UDP listener, in the same run. Reports
//! datagrams per second, MB/s each way, the ratio to direct, and the proxy's
//! CPU per datagram. [`cells`] are the same cells for `run`, also with 8
//! datagrams in flight per session and through nginx `stream` UDP.

use crate::cells::{Plan, Target};
use crate::procs::{self, Group};
use crate::report::Samples;
use anyhow::{Context, Result, bail};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const SESSIONS: usize = 16;
const SIZE: usize = 1200;

/// A UDP echo server on its own thread; returns its address.
pub(crate) fn echo_server() -> Result<SocketAddr> {
    let socket = UdpSocket::bind("127.0.0.1:0").context("binding the UDP echo server")?;
    let addr = socket.local_addr()?;
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&buf[..n], from);
        }
    });
    Ok(addr)
}

/// Datagrams echoed per second with `SESSIONS` sessions for `secs`, one
/// outstanding datagram per session.
fn load(target: SocketAddr, secs: f64) -> Result<f64> {
    Ok(load_window(target, secs, 1, None)?.rate)
}

/// What one cell of [`load_window`] measured.
struct Echoes {
    /// Datagrams echoed per second.
    rate: f64,
    /// CPU seconds the proxy used over the measured window.
    cpu: f64,
    /// Datagrams echoed over the measured window.
    echoed: u64,
    /// Datagrams given up on over the measured window (no reply).
    lost: u64,
}

/// `SESSIONS` sessions each keep `window` datagrams in flight for a
/// 300-ms warm-up and then `secs`, counting echoes and the CPU `pid` uses
/// over the measured part. Datagrams carry a sequence number: the replies
/// of one session come back in order, so a reply past the oldest
/// outstanding one means those before it were dropped, and they are
/// replaced at once; when nothing comes back for 200 ms, the whole window is.
fn load_window(target: SocketAddr, secs: f64, window: usize, pid: Option<u32>) -> Result<Echoes> {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let lost = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for i in 0..SESSIONS {
        let (stop, count, lost) = (stop.clone(), count.clone(), lost.clone());
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.set_read_timeout(Some(Duration::from_millis(200)))?;
        threads.push(std::thread::spawn(move || {
            let mut payload = vec![(i as u8) | 0x80; SIZE];
            let mut buf = vec![0u8; 2048];
            // Sequence numbers: the next to send, the oldest outstanding.
            let (mut next, mut oldest) = (0u64, 0u64);
            let mut send = |k: u64, next: &mut u64| {
                for _ in 0..k {
                    payload[8..16].copy_from_slice(&next.to_le_bytes());
                    // A failed send is a datagram lost: the window refills.
                    let _ = socket.send_to(&payload, target);
                    *next += 1;
                }
            };
            send(window as u64, &mut next);
            while !stop.load(Ordering::Relaxed) {
                match socket.recv_from(&mut buf) {
                    Ok((n, _)) if n == SIZE => {
                        let mut seq = [0u8; 8];
                        seq.copy_from_slice(&buf[8..16]);
                        let seq = u64::from_le_bytes(seq);
                        if seq < oldest || seq >= next {
                            continue; // late or foreign: already replaced
                        }
                        count.fetch_add(1, Ordering::Relaxed);
                        lost.fetch_add(seq - oldest, Ordering::Relaxed);
                        send(seq + 1 - oldest, &mut next);
                        oldest = seq + 1;
                    }
                    Ok(_) => {}
                    Err(_) => {
                        lost.fetch_add(next - oldest, Ordering::Relaxed);
                        oldest = next;
                        send(window as u64, &mut next);
                    }
                }
            }
        }));
    }
    // Warm up (sessions get established), then measure.
    std::thread::sleep(Duration::from_millis(300));
    let (count0, lost0, cpu0) = (count.load(Ordering::Relaxed), lost.load(Ordering::Relaxed), pid.map(procs::cpu_secs));
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let echoed = count.load(Ordering::Relaxed) - count0;
    let dropped = lost.load(Ordering::Relaxed) - lost0;
    let cpu = match (pid, cpu0) {
        (Some(p), Some(c0)) => procs::cpu_secs(p) - c0,
        _ => 0.0,
    };
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    Ok(Echoes { rate: echoed as f64 / elapsed, cpu, echoed, lost: dropped })
}

/// Run the UDP comparison and print a markdown table.
pub fn run(refractium: &Path, secs: f64, workers: usize) -> Result<()> {
    let echo = echo_server()?;
    let port = procs::free_port()?;
    let (mut group, dir) = procs::start_refractium(refractium, "udp", &refractium_udp_yaml(port, echo, workers))?;
    // A UDP listener answers no probe: give it the start-up time instead.
    std::thread::sleep(Duration::from_millis(1500));
    group.check_alive()?;
    let proxy: SocketAddr = ([127, 0, 0, 1], port).into();
    println!("| run | direct dgrams/s | refractium dgrams/s | ratio | refractium CPU µs per datagram |");
    println!("|---|---:|---:|---:|---:|");
    for round in 1..=3 {
        let direct = load(echo, secs)?;
        let cpu0 = procs::cpu_secs(group.pid);
        let through = load(proxy, secs)?;
        let cpu = procs::cpu_secs(group.pid) - cpu0;
        // Each echoed datagram crosses the proxy twice.
        let per = cpu * 1e6 / (through * (secs + 0.3)).max(1.0) / 2.0;
        println!(
            "| {round} | {direct:.0} ({:.1} MB/s each way) | {through:.0} ({:.1} MB/s) | {:.2}× | {per:.1} |",
            direct * SIZE as f64 / 1e6,
            through * SIZE as f64 / 1e6,
            through / direct.max(1.0)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The UDP rows (g) of `refractium-bench run`: 16 sessions bouncing
/// 1,200-byte datagrams off an echo server, ping-pong (`udp1`) and with 8
/// in flight per session (`udp8`), directly and through each UDP proxy
/// started by [`start_proxies`], rounds taking turns as the TCP cells do.
/// Target `i` is recorded as column `cols[i]`; `KEY.cpu` is the proxy's CPU
/// per datagram relayed (an echo is two), `KEY.lost` datagrams dropped.
pub fn cells(plan: &Plan, targets: &[Target], cols: &[usize], s: &mut Samples) {
    for (key, window) in WINDOWS {
        for round in 1..=plan.rounds {
            for (i, t) in crate::cells::in_turn(targets, round) {
                let col = cols[i];
                match load_window(t.addr, plan.cell.as_secs_f64(), window, t.pid) {
                    Ok(e) if e.echoed > 0 => {
                        s.add(key, col, e.rate);
                        s.add(&format!("{key}.lost"), col, e.lost as f64);
                        if t.pid.is_some() {
                            s.add(&format!("{key}.cpu"), col, e.cpu * 1e6 / (2 * e.echoed) as f64);
                        }
                        let msg = format!("{:.0} echoes/s, {} lost, proxy CPU {:.2} s", e.rate, e.lost, e.cpu);
                        crate::cells::progress(round, key, t, &msg);
                    }
                    Ok(e) => {
                        eprintln!("  {key} {}: no echo ({} lost)", t.name, e.lost);
                        s.fail(key, col, format!("no echo, {} lost", e.lost));
                    }
                    Err(e) => {
                        eprintln!("  {key} {}: error: {e:#}", t.name);
                        s.fail(key, col, format!("{e:#}"));
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Sample keys of the UDP cells and the datagrams each session keeps in flight.
pub const WINDOWS: [(&str, usize); 2] = [("udp1", 1), ("udp8", 8)];

/// The UDP proxies the rows compare, each running one worker.
pub enum UdpProxy {
    Refractium(PathBuf),
    Nginx(PathBuf),
}

/// Start `proxy` relaying to `echo` with its files in `dir`; wait until a
/// datagram comes back through it. Returns the group, its address, its version.
pub fn start_proxy(proxy: &UdpProxy, echo: SocketAddr, dir: &Path, nofile: u64) -> Result<(Group, SocketAddr, String)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let port = procs::free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let (name, cmd, text, conf, version) = match proxy {
        UdpProxy::Refractium(bin) => {
            let conf = dir.join("refractium-udp.yaml");
            let mut cmd = Command::new(bin);
            cmd.arg("run").arg("-c").arg(&conf).current_dir(dir);
            ("refractium", cmd, refractium_udp_yaml(port, echo, 1), conf, procs::first_line(bin, "--version"))
        }
        UdpProxy::Nginx(bin) => {
            let conf = dir.join("nginx-udp.conf");
            let module = crate::proxies::nginx_stream_module(bin)?;
            let mut cmd = Command::new(bin);
            cmd.arg("-p").arg(dir).arg("-c").arg(&conf).arg("-e").arg("stderr");
            let text = crate::proxies::nginx_udp_conf(port, echo, dir, module.as_deref(), nofile);
            ("nginx", cmd, text, conf, procs::first_line(bin, "-v"))
        }
    };
    std::fs::write(&conf, text).with_context(|| format!("writing {}", conf.display()))?;
    let mut group = Group::spawn(name, cmd, Some(dir.join(format!("{name}-udp.log"))))?;
    wait_echo(&mut group, addr, Duration::from_secs(15))?;
    Ok((group, addr, version))
}

/// refractium's UDP listener sending every session to `echo` (the detectors
/// of the `udp` subcommand: none matches the bench's datagrams).
fn refractium_udp_yaml(port: u16, echo: SocketAddr, workers: usize) -> String {
    format!(
        "listeners:\n  - name: udp\n    bind: 127.0.0.1:{port}\n    transport: udp\n    detectors: [quic, wireguard, dns]\n    default: echo\nroutes:\n  - name: echo\n    to: echo\nbackends:\n  echo: {{ servers: [{echo}] }}\nudp: {{ max_sessions: 100000, max_sessions_per_ip: 100000 }}\nruntime: {{ workers: {workers} }}\nlog: {{ level: warn }}\n"
    )
}

/// Wait until a datagram sent to `addr` comes back (a UDP proxy answers no
/// connect probe).
fn wait_echo(group: &mut Group, addr: SocketAddr, limit: Duration) -> Result<()> {
    let socket = UdpSocket::bind("127.0.0.1:0").context("binding a probe socket")?;
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    let probe = [0xffu8; SIZE];
    let mut buf = [0u8; 2048];
    let until = Instant::now() + limit;
    while Instant::now() < until {
        group.check_alive()?;
        let _ = socket.send_to(&probe, addr);
        if let Ok((n, _)) = socket.recv_from(&mut buf)
            && n == SIZE
        {
            return Ok(());
        }
    }
    bail!("{} echoed nothing on {addr} after {limit:?}; log: {}", group.name, group.log_tail())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_of_datagrams_is_echoed_and_counted() {
        let echo = echo_server().expect("echo server");
        for window in [1, 8] {
            let e = load_window(echo, 0.2, window, None).expect("load");
            assert!(e.echoed > 0 && e.rate > 0.0, "window {window}: nothing echoed");
        }
    }
}
