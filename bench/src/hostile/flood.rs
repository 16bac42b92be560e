//! A flood of random bytes: tasks that each loop connect (from a source
//! address spread over 127.2.0.0/16, a new source port every time), send
//! 64 random bytes, and wait for the proxy to close, as fast as the machine
//! allows for `secs`. Ordinary clients run before and during it.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

use super::clients::{self, Ordinary};
use super::slowloris::lost;
use super::{Outcome, Proxy, Row, Sampler, cpu_pct, metric, outcomes, rss_mib, source};

/// Flood connections in flight.
const IN_FLIGHT: usize = 256;
/// Source addresses the flood comes from (2 connections in flight each).
const ADDRESSES: usize = 128;
/// A flood connection the proxy has not closed after this long is
/// dropped by the client and counted as held.
const WAIT_CLOSE: Duration = Duration::from_secs(2);
/// Per task, at most this many connections.
const CAP: u64 = 1_000_000;
const BASELINE: Duration = Duration::from_secs(3);

#[derive(Default)]
struct Tally {
    closed: AtomicU64,
    reset: AtomicU64,
    held: AtomicU64,
    connect_failed: AtomicU64,
}

async fn flooder(task: usize, proxy: SocketAddr, until: tokio::time::Instant, tally: Arc<Tally>) {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (task as u64).wrapping_mul(0x2545_f491_4f6c_dd1d);
    let mut buf = [0u8; 256];
    for n in 0..CAP {
        if tokio::time::Instant::now() >= until {
            break;
        }
        let src = source(2, (task + n as usize * IN_FLIGHT) % ADDRESSES);
        let connect = async {
            let sock = TcpSocket::new_v4()?;
            sock.bind(SocketAddr::new(src.into(), 0))?;
            sock.connect(proxy).await
        };
        let mut s = match tokio::time::timeout(Duration::from_secs(2), connect).await {
            Ok(Ok(s)) => s,
            _ => {
                tally.connect_failed.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let mut bytes = [0u8; 64];
        for b in bytes.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        if s.write_all(&bytes).await.is_err() {
            tally.reset.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let end = tokio::time::timeout(WAIT_CLOSE, async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) => return true,
                    Ok(_) => {}
                    Err(_) => return false,
                }
            }
        })
        .await;
        match end {
            Ok(true) => &tally.closed,
            Ok(false) => &tally.reset,
            Err(_) => &tally.held,
        }
        .fetch_add(1, Ordering::Relaxed);
    }
}

pub fn run(binary: &Path, secs: Duration) -> Result<Outcome> {
    let mut proxy = Proxy::start(binary, "flood", crate::udp::echo_server()?)?;
    let pid = proxy.group.pid;
    std::thread::sleep(Duration::from_secs(1));
    let sampler = Sampler::start(pid);
    let baseline = Ordinary::run_for(proxy.tcp, BASELINE);
    let before = proxy.metrics()?;

    let ordinary = Ordinary::start(proxy.tcp);
    let tally = Arc::new(Tally::default());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let from = Instant::now();
    rt.block_on(async {
        let until = tokio::time::Instant::now() + secs;
        let tasks: Vec<_> = (0..IN_FLIGHT).map(|t| tokio::spawn(flooder(t, proxy.tcp, until, tally.clone()))).collect();
        for t in tasks {
            let _ = t.await;
        }
    });
    let to = Instant::now();
    let during = ordinary.stop();
    drop(rt);
    std::thread::sleep(Duration::from_secs(1));
    let samples = sampler.stop();
    proxy.alive()?;
    let after_ok = clients::get(proxy.tcp).is_ok();
    let metrics = proxy.metrics()?;

    let secs_run = (to - from).as_secs_f64();
    let [closed, reset, held, connect_failed] =
        [&tally.closed, &tally.reset, &tally.held, &tally.connect_failed].map(|a| a.load(Ordering::Relaxed));
    let flood = closed + reset + held;
    // Over the flood's window: the tail only waits for the last ones in flight.
    let rate = flood as f64 / secs.as_secs_f64();
    let accepted = metric(&metrics, "refractium_tcp_connections_accepted_total", "").saturating_sub(metric(
        &before,
        "refractium_tcp_connections_accepted_total",
        "",
    ));
    let refused = metric(&metrics, "refractium_tcp_connections_refused_total", "");
    let no_route = metric(&metrics, "refractium_tcp_connections_total", r#"outcome="no_route""#);
    let cpu = cpu_pct(&samples, from, to);
    let open_after = metric(&metrics, "refractium_tcp_connections_open", "");

    let mut md = String::new();
    let _ = writeln!(md, "## A flood of random bytes for {:.0} s\n", secs.as_secs_f64());
    let _ = writeln!(
        md,
        "{IN_FLIGHT} flood connections in flight from {ADDRESSES} source addresses in 127.2.0.0/16 (a new source \
         port each time), each sending 64 random bytes and waiting up to {} s for the proxy to close, new ones started \
         for {:.0} s; ordinary clients as in the slowloris scenario, {:.0} s alone first and then until the last \
         flood connection ended.\n",
        WAIT_CLOSE.as_secs(),
        secs.as_secs_f64(),
        BASELINE.as_secs_f64()
    );
    let _ = writeln!(md, "| figure | value |\n|---|---|");
    let _ = writeln!(
        md,
        "| flood connections | {flood} started in {:.0} s = **{rate:.0}/s** (the last ended {secs_run:.1} s after the first): {closed} closed by the proxy, {reset} reset, \
         {held} still open after {} s (dropped by the client); {connect_failed} connects failed |",
        secs.as_secs_f64(),
        WAIT_CLOSE.as_secs()
    );
    let _ = writeln!(
        md,
        "| proxy's counters (`/metrics`) | {accepted} accepted during the flood; {refused} refused by a limit; \
         outcomes since start: {}; {open_after} open 1 s after |",
        outcomes(&metrics)
    );
    let _ = writeln!(md, "| proxy CPU during the flood | {cpu:.0} % of one core |");
    let _ = writeln!(md, "| proxy RSS (baseline → flood → 1 s after) | {} |", rss_mib(&samples));
    let _ = writeln!(md, "| proxy still up, serving after the flood | {} |", if after_ok { "yes" } else { "**no**" });
    let _ = writeln!(md, "| ordinary clients, baseline | {} |", baseline.brief());
    let _ = writeln!(md, "| ordinary clients, during the flood | {} |", during.brief());
    if let Some(e) = during.first_error.as_ref().or(baseline.first_error.as_ref()) {
        let _ = writeln!(md, "\nFirst ordinary failure: {e}");
    }
    let row = Row {
        scenario: "a flood of random bytes".into(),
        load: format!(
            "{flood} connections of 64 random bytes in {:.0} s ({rate:.0}/s), {IN_FLIGHT} in flight from {ADDRESSES} addresses",
            secs.as_secs_f64()
        ),
        did: format!(
            "closed {no_route} as `no_route`, {held} held until the client gave up after {} s, {refused} refused; \
             {cpu:.0} % of a core; {} after",
            WAIT_CLOSE.as_secs(),
            if after_ok { "up and serving" } else { "**not serving**" }
        ),
        lost: lost(&baseline, &during),
    };
    Ok(Outcome { row, section: md })
}
