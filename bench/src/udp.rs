//! The UDP workload: 16 client sessions each bounce 1,200-byte datagrams off
//! an echo server (one outstanding datagram per session), for a few seconds,
//! directly and through refractium's UDP listener, in the same run. Reports
//! datagrams per second, MB/s each way, the ratio to direct, and the proxy's
//! CPU per datagram.

use crate::procs;
use anyhow::{Context, Result};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
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

/// Datagrams echoed per second with `SESSIONS` sessions for `secs`.
fn load(target: SocketAddr, secs: f64) -> Result<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for i in 0..SESSIONS {
        let (stop, count) = (stop.clone(), count.clone());
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.set_read_timeout(Some(Duration::from_millis(200)))?;
        threads.push(std::thread::spawn(move || {
            let payload = vec![(i as u8) | 0x80; SIZE];
            let mut buf = vec![0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if socket.send_to(&payload, target).is_err() {
                    continue;
                }
                if let Ok((n, _)) = socket.recv_from(&mut buf)
                    && n == SIZE
                {
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // Warm up (sessions get established), then measure.
    std::thread::sleep(Duration::from_millis(300));
    let start_count = count.load(Ordering::Relaxed);
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let done = count.load(Ordering::Relaxed) - start_count;
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    Ok(done as f64 / elapsed)
}

/// Run the UDP comparison and print a markdown table.
pub fn run(refractium: &Path, secs: f64, workers: usize) -> Result<()> {
    let echo = echo_server()?;
    let port = procs::free_port()?;
    let (mut group, dir) = procs::start_refractium(
        refractium,
        "udp",
        &format!(
            "listeners:\n  - name: udp\n    bind: 127.0.0.1:{port}\n    transport: udp\n    detectors: [quic, wireguard, dns]\n    default: echo\nroutes:\n  - name: echo\n    to: echo\nbackends:\n  echo: {{ servers: [{echo}] }}\nudp: {{ max_sessions: 100000, max_sessions_per_ip: 100000 }}\nruntime: {{ workers: {workers} }}\nlog: {{ level: warn }}\n"
        ),
    )?;
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
