//! The workloads, run target after target within each round (so the targets
//! see the same machine conditions, in an order that changes from round to
//! round: `in_turn`), and the table rows built from their medians: (a) bulk
//! on one connection, (b) short HTTP connections at concurrency 1/16/64, (c)
//! TLS hellos routed by SNI, (d) clients holding a 1-byte first flight, (e)
//! PSS per idle proxied connection and (f) the time to open that many
//! connections. Proxy CPU comes from `/proc`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::time::{sleep, timeout};

use crate::backend::{self, HTTP_RESPONSE, TLS_REPLY_LEN};
use crate::load::{self, Exchange};
use crate::procs;
use crate::report::Samples;

/// What to run and how long.
pub struct Plan {
    pub cell: Duration,
    pub rounds: usize,
    pub hold_n: usize,
    pub hold_window: Duration,
    pub idle_n: usize,
    pub workloads: Vec<String>,
}

impl Plan {
    pub fn has(&self, w: &str) -> bool {
        self.workloads.iter().any(|x| x == w)
    }
}

/// Where a workload connects, and the proxy's PID when there is one.
pub struct Target {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub pid: Option<u32>,
    /// The proxy's PSS (KiB) once started, before any workload: what (e)
    /// measures from.
    pub pss_start: Option<u64>,
    /// Cells it does not run ([`Cell`]).
    pub skip: &'static [Cell],
}

/// The kinds of cell a target may sit out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell {
    /// (a) on plain bytes.
    Bulk,
    /// (a) framed as HTTP: a chunked upload, a download with a length.
    HttpBulk,
    /// (c), (d), (e) and (f).
    Tls,
    Hold,
    Idle,
}

impl Target {
    pub fn runs(&self, cell: Cell) -> bool {
        !self.skip.contains(&cell)
    }

    fn cpu(&self) -> f64 {
        self.pid.map(procs::cpu_secs).unwrap_or(0.0)
    }
}

pub const CONCURRENCY: [usize; 3] = [1, 16, 64];
pub const INFLIGHT: usize = 256;

/// The targets of round `round` (from 1), each with its index, in the
/// order of a Williams square: over `n` rounds (`2n` when `n` is odd) every
/// target runs once in each place and right after each other target once.
/// A cell can leave the machine in a state the next one inherits (sockets in
/// TIME_WAIT, caches, the scheduler's view of who is busy); this spreads
/// that over all targets instead of handing it to the same one each round.
pub fn in_turn(targets: &[Target], round: usize) -> impl Iterator<Item = (usize, &Target)> {
    let n = targets.len();
    let k = round.saturating_sub(1);
    // 0, 1, n-1, 2, n-2, …: consecutive differences are all distinct.
    let mut first: Vec<usize> =
        (0..n).map(|j| if j % 2 == 1 { j.div_ceil(2) } else { (n - j / 2) % n.max(1) }).collect();
    if n % 2 == 1 && (k / n) % 2 == 1 {
        first.reverse();
    }
    first.into_iter().map(move |j| (j + k) % n).map(|i| (i, &targets[i]))
}

/// Extra time a timed cell may take before it is reported as timed out.
const SLACK: Duration = Duration::from_secs(30);

/// Run the workloads of `plan` against every target, in the report's order.
pub async fn run_all(plan: &Plan, targets: &[Target], backend: SocketAddr, s: &mut Samples) {
    if plan.has("bulk") {
        bulk_cells(plan, targets, s).await;
    }
    short_cells(plan, targets, s).await;
    if plan.has("hold") {
        for (i, t) in targets.iter().enumerate().filter(|(_, t)| t.pid.is_some() && t.runs(Cell::Hold)) {
            match timeout(Duration::from_secs(60), hold(plan, t, i, s)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => fail(s, "hold", i, t, e),
                Err(_) => fail(s, "hold", i, t, anyhow::anyhow!("timed out")),
            }
            sleep(Duration::from_millis(500)).await;
        }
    }
    if plan.has("idle") {
        for round in 1..=plan.rounds {
            for (i, t) in in_turn(targets, round).filter(|(_, t)| t.runs(Cell::Idle)) {
                match timeout(Duration::from_secs(90), idle(plan, t, i, backend, s)).await {
                    Ok(Ok(msg)) => progress(round, "idle", t, &msg),
                    Ok(Err(e)) => fail(s, "idle", i, t, e),
                    Err(_) => fail(s, "idle", i, t, anyhow::anyhow!("timed out")),
                }
            }
        }
    }
}

/// (a): one connection each way, proxy CPU per GB; on plain bytes (`bulk`)
/// and framed as HTTP (`hbulk`), for the targets that run each.
async fn bulk_cells(plan: &Plan, targets: &[Target], s: &mut Samples) {
    let slack = SLACK;
    for (kind, cell, http) in [("bulk", Cell::Bulk, false), ("hbulk", Cell::HttpBulk, true)] {
        for round in 1..=plan.rounds {
            for dir in ["up", "down"] {
                for (i, t) in in_turn(targets, round).filter(|(_, t)| t.runs(cell)) {
                    let c0 = t.cpu();
                    let r = match dir {
                        "up" => timeout(plan.cell + slack, load::bulk_up(t.addr, plan.cell, http)).await,
                        _ => timeout(plan.cell + slack, load::bulk_down(t.addr, plan.cell, http)).await,
                    };
                    let cpu = t.cpu() - c0;
                    let key = format!("{kind}.{dir}");
                    match flat(r) {
                        Ok(b) => {
                            s.add(&key, i, b.gbps());
                            if t.pid.is_some() {
                                s.add(&format!("{key}.cpu"), i, cpu / (b.bytes as f64 / 1e9));
                            }
                            let msg = format!(
                                "{:.2} GB/s, proxy CPU {cpu:.2} s, {:.3} s to first reply byte",
                                b.gbps(),
                                b.ttfb
                            );
                            progress(round, &key, t, &msg);
                        }
                        Err(e) => fail(s, &key, i, t, e),
                    }
                    settle().await;
                }
            }
        }
    }
}

/// The short HTTP exchange of (b): a GET answered by a 2-byte body and a close.
pub fn http_exchange() -> Exchange {
    Exchange {
        request: b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n".to_vec().into(),
        reply_prefix: b"HTTP/1.1 200".to_vec().into(),
        reply_len: HTTP_RESPONSE.len(),
    }
}

/// The TLS exchange of (c): a ClientHello for `bench.example`, 32 bytes back.
pub fn tls_exchange() -> Exchange {
    Exchange {
        request: crate::hello::client_hello("bench.example").into(),
        reply_prefix: Vec::new().into(),
        reply_len: TLS_REPLY_LEN,
    }
}

/// (b) and (c): loops of short connections, rate, latency, proxy CPU per connection.
async fn short_cells(plan: &Plan, targets: &[Target], s: &mut Samples) {
    let (http, tls) = (http_exchange(), tls_exchange());
    let mut short_cells = Vec::new();
    if plan.has("short") {
        short_cells.extend(CONCURRENCY.map(|c| (format!("short{c}"), c, http.clone())));
    }
    if plan.has("tls") {
        short_cells.push(("tls16".to_string(), 16, tls));
    }
    for (key, conc, ex) in &short_cells {
        for round in 1..=plan.rounds {
            for (i, t) in in_turn(targets, round).filter(|(_, t)| key != "tls16" || t.runs(Cell::Tls)) {
                short_cell(plan, round, key, i, t, *conc, ex, s).await;
            }
        }
    }
}

/// Cells of short connections in rounds, as (b) and (c) run them: `cells`
/// are (sample key, concurrency, exchange); target `i` of `targets` is
/// recorded as column `cols[i]`, so targets started for a few rows only
/// (other configs of the same proxies) fill the report's columns.
pub async fn short_rounds(
    plan: &Plan,
    targets: &[Target],
    cols: &[usize],
    cells: &[(String, usize, Exchange)],
    s: &mut Samples,
) {
    // These proxies have just started: a short unrecorded cell each first,
    // so that round 1 does not also measure their first connections.
    for t in targets.iter().filter(|t| t.pid.is_some()) {
        if let Some((_, conc, ex)) = cells.first() {
            let warm = plan.cell.min(Duration::from_millis(500));
            let _ = timeout(warm + SLACK, load::short(t.addr, *conc, warm, ex.clone())).await;
        }
    }
    for (key, conc, ex) in cells {
        for round in 1..=plan.rounds {
            for (i, t) in in_turn(targets, round) {
                short_cell(plan, round, key, cols[i], t, *conc, ex, s).await;
            }
        }
    }
}

/// One cell of short connections of `t` at `conc`: the rate, p50 and p99
/// latency, errors and the proxy's CPU per connection under `key`, column `i`.
#[allow(clippy::too_many_arguments)]
async fn short_cell(
    plan: &Plan,
    round: usize,
    key: &str,
    i: usize,
    t: &Target,
    conc: usize,
    ex: &Exchange,
    s: &mut Samples,
) {
    let c0 = t.cpu();
    let r = timeout(plan.cell + SLACK, load::short(t.addr, conc, plan.cell, ex.clone())).await;
    let cpu = t.cpu() - c0;
    let Ok(r) = r else {
        fail(s, key, i, t, anyhow::anyhow!("timed out"));
        return;
    };
    s.add(&format!("{key}.err"), i, r.errors as f64);
    if r.ok == 0 {
        fail(s, key, i, t, anyhow::anyhow!("{} errors, no success", r.errors));
        return;
    }
    s.add(key, i, r.rate());
    s.add(&format!("{key}.p50"), i, r.pct_ms(0.5));
    s.add(&format!("{key}.p99"), i, r.pct_ms(0.99));
    if t.pid.is_some() {
        s.add(&format!("{key}.cpu"), i, cpu * 1e6 / r.ok as f64);
    }
    let msg =
        format!("{:.0}/s p50 {:.3} ms p99 {:.3} ms, {} errors", r.rate(), r.pct_ms(0.5), r.pct_ms(0.99), r.errors);
    progress(round, key, t, &msg);
    settle().await;
}

fn flat<T>(r: Result<Result<T>, tokio::time::error::Elapsed>) -> Result<T> {
    r.map_err(|_| anyhow::anyhow!("timed out"))?
}

fn fail(s: &mut Samples, key: &str, i: usize, t: &Target, e: anyhow::Error) {
    eprintln!("  {key} {}: error: {e:#}", t.name);
    s.fail(key, i, format!("{e:#}"));
}

pub fn progress(round: usize, key: &str, t: &Target, msg: &str) {
    eprintln!("  round {round} {key:<10} {:<10} {msg}", t.name);
}

/// Let sockets close and the proxy go quiet between cells.
async fn settle() {
    sleep(Duration::from_millis(100)).await;
}

/// (d): hold `hold_n` connections that sent `G`; CPU over the first 2 s (before
/// the 3-s detect timeout) and over the whole window; RSS at the end.
async fn hold(plan: &Plan, t: &Target, i: usize, s: &mut Samples) -> Result<()> {
    let pid = t.pid.context("no proxy")?;
    let opened = load::open_many(t.addr, plan.hold_n, INFLIGHT, b"G", Duration::from_secs(20)).await;
    if opened.errors > 0 {
        s.add("hold.err", i, opened.errors as f64);
    }
    let early = Duration::from_secs(2).min(plan.hold_window);
    let (c0, t0) = (procs::cpu_secs(pid), Instant::now());
    sleep(early).await;
    let (c1, t1) = (procs::cpu_secs(pid), t0.elapsed().as_secs_f64());
    sleep(plan.hold_window.saturating_sub(early)).await;
    let (c2, t2) = (procs::cpu_secs(pid), t0.elapsed().as_secs_f64());
    let rss = procs::rss_kib(pid) as f64 / 1024.0;
    s.add("hold.early", i, 100.0 * (c1 - c0) / t1);
    s.add("hold.full", i, 100.0 * (c2 - c0) / t2);
    s.add("hold.rss", i, rss);
    progress(
        1,
        "hold",
        t,
        &format!(
            "{} held: CPU {:.1} % (first {:.0} s), {:.1} % ({:.0} s); RSS {rss:.1} MiB",
            opened.streams.len(),
            100.0 * (c1 - c0) / t1,
            t1,
            100.0 * (c2 - c0) / t2,
            t2
        ),
    );
    drop(opened);
    Ok(())
}

/// (e) + (f): open `idle_n` connections that send `IDLE`, time it, wait until
/// the backend holds them all, take the proxy's PSS over its PSS at start,
/// per connection. Not the growth during this cell: the earlier cells (2,000
/// holders, thousands of short connections) left every proxy with freed
/// memory its allocator keeps, which idle connections reuse without growing
/// (in a second round they reuse the first round's), so that growth says
/// more about the order of the cells than about a connection's cost. Over
/// the PSS at start, memory kept from earlier cells counts against the
/// proxy: an upper bound, the same for every proxy and every round.
async fn idle(plan: &Plan, t: &Target, i: usize, backend: SocketAddr, s: &mut Samples) -> Result<String> {
    // Connections a misbehaving proxy left open in an earlier cell.
    let base = timeout(Duration::from_secs(5), backend::idle_count(backend)).await.context("STAT timed out")??;
    let pss0 = t.pss_start;
    let opened = load::open_many(t.addr, plan.idle_n, INFLIGHT, b"IDLE\r\n", Duration::from_secs(30)).await;
    let n = opened.streams.len();
    let t_open = Instant::now();
    let held = wait_idle(backend, |c| c >= base + n, Duration::from_secs(15)).await;
    let routed = t_open.elapsed().as_secs_f64();
    let mut msg = format!(
        "opened {n} in {:.3} s ({} errors), all at the backend {routed:.3} s later",
        opened.secs, opened.errors
    );
    if opened.errors == 0 {
        s.add("open", i, opened.secs);
    } else {
        s.fail("open", i, format!("{} of {} failed", opened.errors, plan.idle_n));
    }
    match (held, t.pid, pss0) {
        (Ok(()), Some(pid), Some(p0)) if n > 0 => {
            let kib = (procs::pss_kib(pid) as f64 - p0 as f64) / n as f64;
            s.add("idle.kib", i, kib);
            msg += &format!(", PSS {kib:.1} KiB per connection");
        }
        (Err(e), _, _) => s.fail("idle.kib", i, format!("{e:#}")),
        _ => {}
    }
    drop(opened);
    wait_idle(backend, |c| c <= base, Duration::from_secs(15)).await?;
    sleep(Duration::from_millis(300)).await;
    Ok(msg)
}

/// Poll the backend's `STAT` until `ok(count)` or `limit` passes.
async fn wait_idle(backend: SocketAddr, ok: impl Fn(usize) -> bool, limit: Duration) -> Result<()> {
    let until = Instant::now() + limit;
    let mut last = None;
    while Instant::now() < until {
        match timeout(Duration::from_secs(2), backend::idle_count(backend)).await {
            Ok(Ok(c)) if ok(c) => return Ok(()),
            Ok(Ok(c)) => last = Some(c),
            _ => {}
        }
        sleep(Duration::from_millis(50)).await;
    }
    bail!("backend held {last:?} idle connections after {limit:?}")
}

#[cfg(test)]
mod tests {
    use super::{Target, in_turn};

    fn targets(n: usize) -> Vec<Target> {
        const NAMES: [&str; 4] = ["direct", "refractium", "haproxy", "nginx"];
        (0..n)
            .map(|i| Target { name: NAMES[i], addr: ([127, 0, 0, 1], 1).into(), pid: None, pss_start: None, skip: &[] })
            .collect()
    }

    #[test]
    fn four_targets_take_turns_in_a_williams_square() {
        let all = targets(4);
        let order = |round| in_turn(&all, round).map(|(i, t)| (i, t.name)).collect::<Vec<_>>();
        assert_eq!(order(1), [(0, "direct"), (1, "refractium"), (3, "nginx"), (2, "haproxy")]);
        assert_eq!(order(2), [(1, "refractium"), (2, "haproxy"), (0, "direct"), (3, "nginx")]);
        assert_eq!(order(5), order(1));
        balanced(4, 4);
    }

    /// Over `rounds` rounds of `n` targets, each runs once per round, and
    /// each ordered pair of targets is adjacent equally often.
    fn balanced(n: usize, rounds: usize) {
        let all = targets(n);
        let mut pairs = std::collections::HashMap::new();
        for round in 1..=rounds {
            let order: Vec<usize> = in_turn(&all, round).map(|(i, _)| i).collect();
            let mut seen = order.clone();
            seen.sort();
            assert_eq!(seen, (0..n).collect::<Vec<_>>(), "round {round}: {order:?}");
            for w in order.windows(2) {
                *pairs.entry((w[0], w[1])).or_insert(0) += 1;
            }
        }
        assert_eq!(pairs.len(), n * (n - 1), "n = {n}: {pairs:?}");
        let counts: std::collections::HashSet<_> = pairs.values().collect();
        assert_eq!(counts.len(), 1, "n = {n}: {pairs:?}");
    }

    #[test]
    fn an_odd_number_of_targets_balances_over_twice_as_many_rounds() {
        balanced(3, 6);
        balanced(2, 2);
    }

    #[test]
    fn one_target_or_none() {
        assert_eq!(in_turn(&targets(1), 3).map(|(i, _)| i).collect::<Vec<_>>(), [0]);
        assert_eq!(in_turn(&[], 2).count(), 0);
    }
}
