//! Ordinary clients: short HTTP connections from 127.0.0.1 at a fixed pace,
//! each checked against the backend's answer and timed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

use crate::backend::HTTP_RESPONSE;

/// Pause between two ordinary requests of one client thread.
const PACE: Duration = Duration::from_millis(25);
/// Ordinary client threads.
const THREADS: usize = 2;
/// Connect, write and read each give up after this long.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// At most this many requests per thread in one run.
const CAP: usize = 20_000;

/// What the ordinary clients saw.
#[derive(Default)]
pub struct Stats {
    pub ok: usize,
    pub failed: usize,
    /// Sorted latencies of the successful requests, in µs.
    pub lat_us: Vec<u64>,
    pub first_error: Option<String>,
    pub secs: f64,
}

impl Stats {
    pub fn p_ms(&self, p: f64) -> f64 {
        super::pct(&self.lat_us, p) as f64 / 1000.0
    }

    /// "N ok, p50 x ms, p99 y ms, max z ms".
    pub fn brief(&self) -> String {
        format!(
            "{} ok{}, p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms",
            self.ok,
            if self.failed > 0 { format!(", **{} failed**", self.failed) } else { String::new() },
            self.p_ms(0.5),
            self.p_ms(0.99),
            self.lat_us.last().copied().unwrap_or(0) as f64 / 1000.0
        )
    }
}

/// Ordinary clients running until [`Ordinary::stop`].
pub struct Ordinary {
    stop: Arc<AtomicBool>,
    started: Instant,
    threads: Vec<std::thread::JoinHandle<Stats>>,
}

impl Ordinary {
    pub fn start(proxy: SocketAddr) -> Ordinary {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..THREADS)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut st = Stats::default();
                    for _ in 0..CAP {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let t0 = Instant::now();
                        match get(proxy) {
                            Ok(()) => {
                                st.ok += 1;
                                st.lat_us.push(t0.elapsed().as_micros() as u64);
                            }
                            Err(e) => {
                                st.failed += 1;
                                st.first_error.get_or_insert_with(|| format!("{e:#}"));
                            }
                        }
                        std::thread::sleep(PACE);
                    }
                    st
                })
            })
            .collect();
        Ordinary { stop, started: Instant::now(), threads }
    }

    pub fn stop(self) -> Stats {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Stats::default();
        for t in self.threads {
            let st = t.join().unwrap_or_default();
            all.ok += st.ok;
            all.failed += st.failed;
            all.lat_us.extend(st.lat_us);
            if all.first_error.is_none() {
                all.first_error = st.first_error;
            }
        }
        all.lat_us.sort_unstable();
        all.secs = self.started.elapsed().as_secs_f64();
        all
    }

    /// Run for `d`, then stop.
    pub fn run_for(proxy: SocketAddr, d: Duration) -> Stats {
        let o = Ordinary::start(proxy);
        std::thread::sleep(d);
        o.stop()
    }
}

/// One `GET`, read to EOF, checked.
pub fn get(proxy: SocketAddr) -> Result<()> {
    let mut s = TcpStream::connect_timeout(&proxy, IO_TIMEOUT).context("connect")?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    s.write_all(b"GET /ordinary HTTP/1.1\r\nHost: bench\r\n\r\n").context("write")?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).context("read")?;
    ensure!(reply == HTTP_RESPONSE, "reply {:?}", String::from_utf8_lossy(&reply[..reply.len().min(40)]));
    Ok(())
}
