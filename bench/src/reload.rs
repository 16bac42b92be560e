//! The reload workload: how long `POST /reload` takes to put a new snapshot
//! in force (the built-in plugins, compiled artifacts cached), and the rate
//! of new connections while reloads keep landing, as a ratio to the rate
//! without reloads, in the same run.

use crate::procs;
use anyhow::{Context, Result};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A backend that answers every connection with one line and closes.
fn backend() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 512];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    Ok(addr)
}

/// Send `text` on a new connection and read the answer to its end.
pub(crate) fn request(addr: SocketAddr, text: &[u8]) -> Result<Vec<u8>> {
    let mut c = TcpStream::connect(addr)?;
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    c.write_all(text)?;
    let mut out = Vec::new();
    c.read_to_end(&mut out)?;
    Ok(out)
}

/// Connections per second from 4 client threads for `secs`, optionally
/// while another thread reloads every 50 ms. Returns (rate, failures).
fn rate(proxy: SocketAddr, admin: SocketAddr, secs: f64, reloading: bool) -> (f64, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut threads = Vec::new();
    for _ in 0..4 {
        let (stop, done, failed) = (stop.clone(), done.clone(), failed.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match request(proxy, b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n") {
                    Ok(r) if r.ends_with(b"ok") => done.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    if reloading {
        let stop = stop.clone();
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = request(admin, b"POST /reload HTTP/1.1\r\nHost: a\r\n\r\n");
                std::thread::sleep(Duration::from_millis(50));
            }
        }));
    }
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    for t in threads {
        let _ = t.join();
    }
    (done.load(Ordering::Relaxed) as f64 / elapsed, failed.load(Ordering::Relaxed))
}

/// Run the reload benchmark and print a markdown table.
pub fn run(refractium: &Path, secs: f64) -> Result<()> {
    let backend = backend()?;
    let (port, admin_port) = (procs::free_port()?, procs::free_port()?);
    let (mut group, dir) = procs::start_refractium(
        refractium,
        "reload",
        &format!(
            "listeners:\n  - name: web\n    bind: 127.0.0.1:{port}\n    default: web\nroutes:\n  - name: http\n    match: {{ protocol: http }}\n    to: web\n  - name: web\n    to: web\nbackends:\n  web: {{ servers: [{backend}] }}\nadmin: {{ bind: 127.0.0.1:{admin_port} }}\nreload: {{ watch: false }}\nlimits: {{ max_connections: 100000, max_connections_per_ip: 100000 }}\nlog: {{ level: warn }}\n"
        ),
    )?;
    let (proxy, admin): (SocketAddr, SocketAddr) = (([127, 0, 0, 1], port).into(), ([127, 0, 0, 1], admin_port).into());
    procs::wait_ready(&mut group, proxy, Duration::from_secs(15))?;
    // Reload latency: POST /reload answers once the new snapshot is in force.
    let mut times = Vec::new();
    for _ in 0..20 {
        let start = Instant::now();
        let answer = request(admin, b"POST /reload HTTP/1.1\r\nHost: a\r\n\r\n").context("POST /reload")?;
        times.push(start.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(answer.ends_with(br#"{"ok":true}"#), "reload failed: {}", String::from_utf8_lossy(&answer));
    }
    times.sort_by(f64::total_cmp);
    println!(
        "| reload (POST /reload → new snapshot in force), 20 reloads | p50 {:.1} ms | max {:.1} ms |",
        times[10], times[19]
    );
    println!("|---|---:|---:|");
    for round in 1..=3 {
        let (quiet, f1) = rate(proxy, admin, secs, false);
        let (storm, f2) = rate(proxy, admin, secs, true);
        println!(
            "| round {round}: connections/s without / during a reload every 50 ms | {quiet:.0} / {storm:.0} ({:.2}×) | failed {} / {} |",
            storm / quiet.max(1.0),
            f1,
            f2
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
