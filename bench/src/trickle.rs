//! Detection work against the size of a trickled first flight: the proxy's
//! CPU per connection for a TLS record of 1 and 4 KiB sent whole and sent
//! one byte per write (each byte read on its own), so that a cost growing
//! with the square of the bytes would show (4 KiB trickled would cost 16
//! times 1 KiB trickled rather than 4).

use crate::procs;
use crate::reload::request;
use anyhow::Result;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

/// A TLS handshake record of `len` bytes in all whose hello is filler: the
/// `tls` detector waits for the whole record, the others rule it out on the
/// first byte, and nothing matches it in the end.
fn record(len: usize) -> Vec<u8> {
    let body = len - 5;
    let hello = body - 4;
    let mut r = vec![0x16, 0x03, 0x01, (body >> 8) as u8, body as u8, 0x01, 0x00, (hello >> 8) as u8, hello as u8];
    r.resize(len, 0x41);
    r
}

/// A backend that reads a whole TLS record (as its header says; anything
/// else, one read), answers
/// one line and closes: it never closes on unread bytes, which would reset
/// the connection before its answer reaches the client.
fn backend() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut got = Vec::new();
                let mut buf = [0u8; 8192];
                let whole = |got: &[u8]| match got {
                    [0x16, _, _, hi, lo, ..] => got.len() >= 5 + usize::from(u16::from_be_bytes([*hi, *lo])),
                    // The readiness probe's GET, or anything else: one read.
                    [first, ..] => *first != 0x16,
                    [] => false,
                };
                while !whole(&got) {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
            });
        }
    });
    Ok(addr)
}

/// Send `flight` on a new connection (whole, or a byte per write with
/// `gap` between writes), then read the backend's answer.
fn send(proxy: SocketAddr, flight: &[u8], gap: Option<Duration>) -> Result<bool> {
    let Some(gap) = gap else {
        return Ok(request(proxy, flight)?.ends_with(b"ok"));
    };
    let mut c = TcpStream::connect(proxy)?;
    c.set_nodelay(true)?;
    c.set_read_timeout(Some(Duration::from_secs(30)))?;
    for byte in flight {
        c.write_all(std::slice::from_ref(byte))?;
        std::thread::sleep(gap);
    }
    let mut out = Vec::new();
    c.read_to_end(&mut out)?;
    Ok(out.ends_with(b"ok"))
}

/// `conns` connections, `parallel` at a time; the proxy's CPU per
/// connection in µs, and how many were answered.
fn cell(
    pid: u32,
    proxy: SocketAddr,
    flight: &[u8],
    gap: Option<Duration>,
    conns: usize,
    parallel: usize,
) -> (f64, usize) {
    let cpu0 = procs::cpu_secs(pid);
    let per_thread = conns.div_ceil(parallel);
    let answered: usize = std::thread::scope(|s| {
        let threads: Vec<_> = (0..parallel)
            .map(|_| s.spawn(|| (0..per_thread).filter(|_| send(proxy, flight, gap).unwrap_or(false)).count()))
            .collect();
        threads.into_iter().map(|t| t.join().unwrap_or(0)).sum()
    });
    let cpu = (procs::cpu_secs(pid) - cpu0) * 1e6 / (per_thread * parallel) as f64;
    (cpu, answered)
}

pub fn run(refractium: &Path) -> Result<()> {
    let backend = backend()?;
    let port = procs::free_port()?;
    let (mut group, dir) = procs::start_refractium(
        refractium,
        "trickle",
        &format!(
            "listeners:\n  - name: edge\n    bind: 127.0.0.1:{port}\n    detect: {{ max_bytes: 8192, timeout: 60s }}\n    default: web\nroutes:\n  - name: http\n    match: {{ protocol: http }}\n    to: web\n  - name: web\n    to: web\nbackends:\n  web: {{ servers: [{backend}] }}\nruntime: {{ workers: 1 }}\nlimits: {{ max_connections: 100000, max_connections_per_ip: 100000 }}\nlog: {{ level: warn }}\n"
        ),
    )?;
    let proxy: SocketAddr = ([127, 0, 0, 1], port).into();
    procs::wait_ready(&mut group, proxy, Duration::from_secs(15))?;
    let pid = group.pid;
    let gap = Some(Duration::from_micros(200));
    println!("| first flight | sent | connections | proxy CPU µs per conn | µs per byte |");
    println!("|---|---|---:|---:|---:|");
    for size in [1024, 4096] {
        let flight = record(size);
        for (how, gap, conns, parallel) in [("whole", None, 4000, 4), ("a byte per write", gap, 32, 8)] {
            let started = Instant::now();
            let (cpu, answered) = cell(pid, proxy, &flight, gap, conns, parallel);
            anyhow::ensure!(answered > 0, "no connection answered ({how}, {size} B)");
            println!(
                "| TLS record, {} KiB | {how} | {answered} in {:.1} s | {cpu:.1} | {:.3} |",
                size / 1024,
                started.elapsed().as_secs_f64(),
                cpu / size as f64
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
