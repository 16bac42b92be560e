//! Slowloris: N clients, opened at a bounded rate from source addresses
//! spread over 127.1.0.0/16 (50 per address, under the per-IP limit), each
//! trickling one byte a second of a first flight that keeps detection
//! undecided (half an HTTP request line without end, half a TLS record
//! announcing a 2,000-byte hello), held until the proxy cuts them. Ordinary
//! clients run before (the baseline) and during the attack.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

use super::clients::{Ordinary, Stats};
use super::{DETECT_TIMEOUT, Outcome, Proxy, Row, Sampler, cpu_pct, metric, outcomes, pct, source};

/// Slow clients per source address.
const PER_ADDRESS: usize = 50;
/// New slow clients per second.
const OPEN_RATE: usize = 2500;
/// Ordinary clients alone, before the attack.
const BASELINE: Duration = Duration::from_secs(4);
/// A slow client not cut this long after its connect gives up (and counts
/// as not cut).
const HOLD_LIMIT: Duration = Duration::from_secs(DETECT_TIMEOUT.as_secs() + 15);

/// How one slow client ended.
enum End {
    ConnectFailed(String),
    /// The proxy closed it (`reset`: with an RST, or a write failed).
    Cut {
        connected: Instant,
        ended: Instant,
        bytes: usize,
        reset: bool,
    },
    /// The proxy answered with data: it routed it somewhere.
    Answered {
        connected: Instant,
    },
    NotCut {
        connected: Instant,
    },
}

fn flight(i: usize) -> Vec<u8> {
    if i.is_multiple_of(2) {
        let mut f = b"GET /".to_vec();
        f.resize(256, b'a');
        f
    } else {
        // Record of 2,000 bytes, hello of 1,996: fits the 4 KiB buffer,
        // so the `tls` detector waits for the rest.
        let mut f = vec![0x16, 0x03, 0x01, 0x07, 0xd0, 0x01, 0x00, 0x07, 0xcc, 0x03, 0x03];
        f.resize(256, 0x41);
        f
    }
}

async fn slow_client(i: usize, proxy: SocketAddr) -> End {
    let connect = async {
        let sock = TcpSocket::new_v4()?;
        sock.bind(SocketAddr::new(source(1, i / PER_ADDRESS).into(), 0))?;
        sock.connect(proxy).await
    };
    let mut s = match tokio::time::timeout(Duration::from_secs(15), connect).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return End::ConnectFailed(e.to_string()),
        Err(_) => return End::ConnectFailed("connect timed out".into()),
    };
    let connected = Instant::now();
    let flight = flight(i);
    let mut buf = [0u8; 256];
    for (sent, byte) in flight.iter().enumerate() {
        if connected.elapsed() > HOLD_LIMIT {
            break;
        }
        if s.write_all(std::slice::from_ref(byte)).await.is_err() {
            return End::Cut { connected, ended: Instant::now(), bytes: sent, reset: true };
        }
        match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
            Err(_) => {}
            Ok(Ok(0)) => return End::Cut { connected, ended: Instant::now(), bytes: sent + 1, reset: false },
            Ok(Ok(_)) => return End::Answered { connected },
            Ok(Err(_)) => return End::Cut { connected, ended: Instant::now(), bytes: sent + 1, reset: true },
        }
    }
    End::NotCut { connected }
}

/// Open `n` slow clients at [`OPEN_RATE`] and wait for each to end.
async fn attack(n: usize, proxy: SocketAddr) -> Vec<End> {
    let start = tokio::time::Instant::now();
    let batch = OPEN_RATE / 100;
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        if i % batch == 0 {
            tokio::time::sleep_until(start + Duration::from_millis((i / batch) as u64 * 10)).await;
        }
        tasks.push(tokio::spawn(slow_client(i, proxy)));
    }
    let mut ends = Vec::with_capacity(n);
    for t in tasks {
        ends.push(t.await.unwrap_or_else(|e| End::ConnectFailed(format!("task: {e}"))));
    }
    ends
}

pub fn run(binary: &Path, n: usize) -> Result<Outcome> {
    let mut proxy = Proxy::start(binary, "slowloris", crate::udp::echo_server()?)?;
    let pid = proxy.group.pid;
    let sampler = Sampler::start(pid);
    // Baseline: ordinary clients alone.
    std::thread::sleep(Duration::from_secs(1));
    let base_from = Instant::now();
    let baseline = Ordinary::run_for(proxy.tcp, BASELINE);
    let base_to = Instant::now();
    let rss_before = crate::procs::rss_kib(pid);

    let ordinary = Ordinary::start(proxy.tcp);
    let attack_from = Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let ends = rt.block_on(attack(n, proxy.tcp));
    let attack_to = Instant::now();
    let during = ordinary.stop();
    std::thread::sleep(Duration::from_secs(2));
    let samples = sampler.stop();
    let rss_after = crate::procs::rss_kib(pid);
    proxy.alive()?;
    let metrics = proxy.metrics()?;
    drop(rt);

    // Tally the ends.
    let (mut cut_ms, mut resets, mut connect_failed, mut answered, mut not_cut) = (Vec::new(), 0, 0, 0, 0);
    let mut bytes = Vec::new();
    let mut first_failure = None;
    let (mut all_connected, mut first_cut, mut last_cut) = (attack_from, None::<Instant>, attack_from);
    for e in &ends {
        match e {
            End::ConnectFailed(why) => {
                connect_failed += 1;
                first_failure.get_or_insert_with(|| why.clone());
            }
            End::Cut { connected, ended, bytes: b, reset } => {
                all_connected = all_connected.max(*connected);
                first_cut = Some(first_cut.map_or(*ended, |f| f.min(*ended)));
                last_cut = last_cut.max(*ended);
                cut_ms.push((*ended - *connected).as_millis() as u64);
                bytes.push(*b);
                resets += usize::from(*reset);
            }
            End::Answered { connected } => {
                all_connected = all_connected.max(*connected);
                answered += 1;
            }
            End::NotCut { connected } => {
                all_connected = all_connected.max(*connected);
                not_cut += 1;
            }
        }
    }
    cut_ms.sort_unstable();
    bytes.sort_unstable();
    let cut = cut_ms.len();
    let first_cut = first_cut.unwrap_or(attack_to);
    let peak = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let cpu_base = cpu_pct(&samples, base_from, base_to);
    let cpu_open = cpu_pct(&samples, attack_from, all_connected);
    let cpu_hold = cpu_pct(&samples, all_connected, first_cut);
    let cpu_cut = cpu_pct(&samples, first_cut, last_cut);
    let timeouts = metric(&metrics, "refractium_tcp_connections_total", r#"outcome="timeout""#);
    let refused = metric(&metrics, "refractium_tcp_connections_refused_total", "");
    let t = DETECT_TIMEOUT.as_secs_f64() * 1000.0;
    let early = cut_ms.iter().filter(|&&ms| (ms as f64) < t - 250.0).count();

    let mut md = String::new();
    let _ = writeln!(md, "## Slowloris: {n} clients trickling a byte a second into detection\n");
    let _ = writeln!(
        md,
        "{n} clients opened at {OPEN_RATE}/s from {} source addresses in 127.1.0.0/16 ({PER_ADDRESS} each), \
         each sending one byte a second of a first flight that keeps detection undecided (half `GET /aaa…` \
         without end of line, half a TLS record header announcing a 2,000-byte ClientHello); `detect.timeout` \
         {} s, no `default` route. Ordinary clients: 2 threads, a `GET` each every 25 ms from 127.0.0.1, \
         {:.0} s alone first (baseline), then during the whole attack ({:.1} s).\n",
        n.div_ceil(PER_ADDRESS),
        DETECT_TIMEOUT.as_secs(),
        BASELINE.as_secs_f64(),
        (attack_to - attack_from).as_secs_f64(),
    );
    let _ = writeln!(md, "| figure | value |\n|---|---|");
    let _ = writeln!(
        md,
        "| slow clients cut by the proxy | {cut} of {n} ({resets} of them with a reset or a failed write) |"
    );
    let _ = writeln!(
        md,
        "| connect to cut, ms (detect.timeout {:.0}) | min {} · p1 {} · p50 {} · p99 {} · max {} |",
        t,
        pct(&cut_ms, 0.0),
        pct(&cut_ms, 0.01),
        pct(&cut_ms, 0.5),
        pct(&cut_ms, 0.99),
        pct(&cut_ms, 1.0)
    );
    let _ = writeln!(md, "| cut more than 250 ms before the timeout | {early} |");
    let _ = writeln!(md, "| bytes each had sent when cut | p50 {} · max {} |", pct(&bytes, 0.5), pct(&bytes, 1.0));
    let _ = writeln!(
        md,
        "| not connected · answered instead of cut · still open after {} s | {connect_failed} · {answered} · {not_cut}{} |",
        HOLD_LIMIT.as_secs(),
        first_failure.map(|f| format!(" (first connect failure: {f})")).unwrap_or_default()
    );
    let _ = writeln!(
        md,
        "| proxy's own count | {timeouts} ended with outcome `timeout`; {refused} refused by a limit; all outcomes: {} |",
        outcomes(&metrics)
    );
    let _ = writeln!(
        md,
        "| proxy RSS, KiB | before {rss_before} · peak {peak} (+{} KiB, {:.1} KiB per slow client) · 2 s after the last cut {rss_after} |",
        peak.saturating_sub(rss_before),
        peak.saturating_sub(rss_before) as f64 / n as f64
    );
    let _ = writeln!(
        md,
        "| proxy CPU, % of one core | baseline (ordinary only) {cpu_base:.1} · opening the slow clients ({:.1} s) {cpu_open:.1} · all {n} held and trickling ({:.1} s) {cpu_hold:.1} · cutting them ({:.1} s) {cpu_cut:.1} |",
        (all_connected - attack_from).as_secs_f64(),
        first_cut.saturating_duration_since(all_connected).as_secs_f64(),
        (last_cut.saturating_duration_since(first_cut)).as_secs_f64(),
    );
    let _ = writeln!(md, "| ordinary clients, baseline | {} |", baseline.brief());
    let _ = writeln!(md, "| ordinary clients, during the attack | {} |", during.brief());
    if let Some(e) = during.first_error.as_ref().or(baseline.first_error.as_ref()) {
        let _ = writeln!(md, "\nFirst ordinary failure: {e}");
    }
    let row = Row {
        scenario: format!("slowloris: {n} clients trickling into detection"),
        load: format!(
            "{n} clients opened at {OPEN_RATE}/s, a byte a second each, from {} addresses; `detect.timeout` {} s",
            n.div_ceil(PER_ADDRESS),
            DETECT_TIMEOUT.as_secs()
        ),
        did: format!(
            "cut {cut} of {n} at {:.1}–{:.1} s after connect (p50 {:.1} s), {timeouts} counted as `timeout`; \
             RSS {} → peak {} → {} MiB; CPU {cpu_hold:.1} % of a core while all were held",
            pct(&cut_ms, 0.0) as f64 / 1000.0,
            pct(&cut_ms, 1.0) as f64 / 1000.0,
            pct(&cut_ms, 0.5) as f64 / 1000.0,
            mib(rss_before),
            mib(peak),
            mib(rss_after)
        ),
        lost: lost(&baseline, &during),
    };
    Ok(Outcome { row, section: md })
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// What ordinary clients lost during an attack, against their baseline.
pub fn lost(baseline: &Stats, during: &Stats) -> String {
    let head = if during.failed == 0 {
        "nothing".to_string()
    } else {
        format!("{} of {} requests failed", during.failed, during.ok + during.failed)
    };
    format!(
        "{head}: {} served, p50 {:.2} ms / p99 {:.2} ms (baseline {:.2} / {:.2})",
        during.ok,
        during.p_ms(0.5),
        during.p_ms(0.99),
        baseline.p_ms(0.5),
        baseline.p_ms(0.99)
    )
}
