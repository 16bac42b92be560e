//! The report rows, built from the medians the workloads of [`crate::cells`]
//! collected: throughput-like figures get their ratio to direct (column 0),
//! proxy-only figures (CPU, memory) show `–` for direct.

use std::time::Duration;

use crate::cells::{CONCURRENCY, INFLIGHT, Plan, Target};
use crate::report::{Samples, Table, err_cell, num};

/// A cell with the median and its ratio to direct (column 0).
fn ratio_cell(s: &Samples, key: &str, i: usize, unit: &str) -> String {
    match s.median(key, i) {
        Some(v) => match s.median(key, 0).filter(|d| i > 0 && *d > 0.0) {
            Some(d) => format!("{}{unit} ({:.2}×)", num(v), v / d),
            None => format!("{}{unit}", num(v)),
        },
        None => s.error(key, i).map(err_cell).unwrap_or_else(|| "–".into()),
    }
}

/// Several medians joined by ` / `, `–` where missing.
fn multi(s: &Samples, keys: &[&str], i: usize) -> String {
    let parts: Vec<String> = keys.iter().map(|k| s.median(k, i).map(num).unwrap_or_else(|| "–".into())).collect();
    if parts.iter().all(|p| p == "–") {
        return "–".into();
    }
    parts.join(" / ")
}

pub fn rows(plan: &Plan, targets: &[Target], s: &Samples, table: &mut Table) {
    let each = |f: &dyn Fn(usize, &Target) -> String| -> Vec<String> {
        targets.iter().enumerate().map(|(i, t)| f(i, t)).collect()
    };
    let proxy_only = |t: &Target, text: String| if t.pid.is_some() { text } else { "–".into() };
    if plan.has("bulk") {
        table.row("(a) bulk, 1 conn, client→server", each(&|i, _| ratio_cell(s, "bulk.up", i, " GB/s")));
        table.row("(a) bulk, 1 conn, server→client", each(&|i, _| ratio_cell(s, "bulk.down", i, " GB/s")));
        table.row(
            "(a) proxy CPU s per GB (c→s / s→c)",
            each(&|i, t| proxy_only(t, multi(s, &["bulk.up.cpu", "bulk.down.cpu"], i))),
        );
        table.row("(a) HTTP bulk, chunked POST, c→s", each(&|i, _| ratio_cell(s, "hbulk.up", i, " GB/s")));
        table.row("(a) HTTP bulk, GET response, s→c", each(&|i, _| ratio_cell(s, "hbulk.down", i, " GB/s")));
        table.row(
            "(a) HTTP bulk proxy CPU s per GB (c→s / s→c)",
            each(&|i, t| proxy_only(t, multi(s, &["hbulk.up.cpu", "hbulk.down.cpu"], i))),
        );
    }
    let short_row = |table: &mut Table, key: &str, label: &str| {
        let cells = each(&|i, _| {
            let mut c = ratio_cell(s, key, i, "/s");
            if s.median(key, i).is_some() {
                c += &format!(" · {} ms", multi(s, &[&format!("{key}.p50"), &format!("{key}.p99")], i));
            }
            match s.sum(&format!("{key}.err"), i) {
                Some(e) if e > 0.0 => c + &format!(" · {e:.0} err"),
                _ => c,
            }
        });
        table.row(label, cells);
    };
    if plan.has("short") {
        for c in CONCURRENCY {
            short_row(table, &format!("short{c}"), &format!("(b) short HTTP conns, c={c} (p50 / p99)"));
        }
        table.row(
            "(b) proxy CPU µs per conn, c=1 / 16 / 64",
            each(&|i, t| proxy_only(t, multi(s, &["short1.cpu", "short16.cpu", "short64.cpu"], i))),
        );
    }
    if plan.has("tls") {
        short_row(table, "tls16", "(c) TLS hello by SNI, c=16 (p50 / p99)");
        table.row("(c) proxy CPU µs per TLS conn", each(&|i, t| proxy_only(t, multi(s, &["tls16.cpu"], i))));
    }
    if plan.has("tls-default") {
        for c in [16, 64] {
            short_row(table, &format!("tlsd{c}"), &format!("(c) TLS hello by SNI, c={c}, default workers (p50 / p99)"));
        }
        table.row(
            "(c) proxy CPU µs per TLS conn, default workers, c=16 / 64",
            each(&|i, t| proxy_only(t, multi(s, &["tlsd16.cpu", "tlsd64.cpu"], i))),
        );
    }
    if plan.has("hold") {
        let first = Duration::from_secs(2).min(plan.hold_window).as_secs();
        table.row(
            &format!(
                "(d) CPU % of a core, {} clients hold 1 B (first {first} s / {} s)",
                plan.hold_n,
                plan.hold_window.as_secs()
            ),
            each(&|i, t| match s.error("hold", i) {
                Some(e) if t.pid.is_some() => err_cell(e),
                _ => proxy_only(t, multi(s, &["hold.early", "hold.full"], i)),
            }),
        );
        table.row("(d) proxy RSS MiB while they hold", each(&|i, t| proxy_only(t, multi(s, &["hold.rss"], i))));
    }
    if plan.has("idle") {
        table.row(
            &format!("(e) proxy PSS KiB per idle proxied conn ({})", plan.idle_n),
            each(&|i, t| match s.median("idle.kib", i) {
                Some(v) => num(v),
                None => {
                    proxy_only(t, s.error("idle.kib", i).or(s.error("idle", i)).map(err_cell).unwrap_or("–".into()))
                }
            }),
        );
        table.row(
            &format!("(f) s to open {} conns, {INFLIGHT} in flight", plan.idle_n),
            each(&|i, _| ratio_cell(s, "open", i, " s")),
        );
    }
    if plan.has("udp") {
        let udp_row = |table: &mut Table, key: &str, label: &str| {
            let cells = each(&|i, _| match s.sum(&format!("{key}.lost"), i) {
                Some(l) if l > 0.0 => ratio_cell(s, key, i, "/s") + &format!(" · {l:.0} lost"),
                _ => ratio_cell(s, key, i, "/s"),
            });
            table.row(label, cells);
        };
        udp_row(table, "udp1", "(g) UDP echoes, 16 sessions, ping-pong");
        udp_row(table, "udp8", "(g) UDP echoes, 16 sessions × 8 in flight");
        table.row(
            "(g) proxy CPU µs per datagram relayed, ping-pong / 8 in flight",
            each(&|i, t| proxy_only(t, multi(s, &["udp1.cpu", "udp8.cpu"], i))),
        );
    }
}

/// The rows of (h), one pair per kind of plugin file: the rate with 0, 10
/// and 30 files (ratio to direct; for 10 and 30 also the median of the
/// ratio to 0 files round by round), then the proxy CPU per connection.
pub fn ahead_rows(kinds: &[crate::run::AheadKind], s: &Samples, table: &mut Table) {
    use crate::run::AHEAD_KEY as KEY;
    let cpu = format!("{KEY}.cpu");
    for k in kinds {
        let cols = [0, 1, k.cols[0], k.cols[1]];
        let rate: Vec<String> = cols
            .iter()
            .enumerate()
            .map(|(j, &i)| {
                let c = ratio_cell(s, KEY, i, "/s");
                match s.round_ratios(KEY, i, &[1]).and_then(|r| crate::report::median(&r)) {
                    Some(r) if j >= 2 => format!("{c} · {r:.2}× of 0 files"),
                    _ => c,
                }
            })
            .collect();
        table.row(&format!("(h) {}, c=16", k.label), rate);
        let cpu: Vec<String> = cols.iter().map(|&i| if i == 0 { "–".into() } else { multi(s, &[&cpu], i) }).collect();
        table.row(&format!("(h) proxy CPU µs per conn, {}", k.label), cpu);
    }
}

/// (h) round by round: each count of each kind against 0 files, the median
/// ratio (lowest–highest) and whether it meets issue 29's target (10 files
/// ≥ 0.95×, 30 files ≥ 0.90×).
pub fn ahead_tally(kinds: &[crate::run::AheadKind], s: &Samples) -> Option<String> {
    use crate::run::AHEAD_KEY as KEY;
    let parts: Vec<String> = kinds
        .iter()
        .flat_map(|k| [(k, 10, k.cols[0], 0.95), (k, 30, k.cols[1], 0.90)])
        .filter_map(|(k, n, i, target)| {
            let ratios = s.round_ratios(KEY, i, &[1])?;
            let (low, high) = ratios.iter().fold((f64::MAX, f64::MIN), |(l, h), &r| (l.min(r), h.max(r)));
            let mid = crate::report::median(&ratios)?;
            let verdict = if mid >= target { "met" } else { "missed" };
            Some(format!("{} {n} files {mid:.2}× ({low:.2}–{high:.2}), target {verdict}", k.short))
        })
        .collect();
    (!parts.is_empty()).then(|| {
        format!(
            "- plugin files against 0 files, round by round (median of the ratio, lowest–highest): {}\n",
            parts.join(" · ")
        )
    })
}

/// refractium against the better peer, round by round, on the lines where a
/// higher figure is better: in how many rounds it was ahead, and the median
/// and range of its figure divided by the better peer's. Medians taken per
/// target across rounds mix the machine's slow swings (±0.15 of a ratio) into
/// the comparison; ratios within a round, whose cells ran back to back, do
/// not. `None` without refractium and at least one peer.
pub fn tally(plan: &Plan, targets: &[Target], s: &Samples) -> Option<String> {
    let me = targets.iter().position(|t| t.name == "refractium")?;
    let peers: Vec<usize> = (1..targets.len()).filter(|&i| ["haproxy", "nginx"].contains(&targets[i].name)).collect();
    if peers.is_empty() {
        return None;
    }
    // (sample key, label) of each rate row the run has.
    let mut rows: Vec<(String, String)> = Vec::new();
    if plan.has("bulk") {
        rows.push(("bulk.up".into(), "bulk c→s".into()));
        rows.push(("bulk.down".into(), "bulk s→c".into()));
    }
    if plan.has("short") {
        rows.extend(CONCURRENCY.iter().map(|c| (format!("short{c}"), format!("c={c}"))));
    }
    if plan.has("tls") {
        rows.push(("tls16".into(), "TLS c=16".into()));
    }
    if plan.has("tls-default") {
        rows.push(("tlsd16".into(), "TLS c=16 default workers".into()));
        rows.push(("tlsd64".into(), "TLS c=64 default workers".into()));
    }
    if plan.has("udp") {
        rows.push(("udp1".into(), "UDP ping-pong".into()));
        rows.push(("udp8".into(), "UDP 8 in flight".into()));
    }
    let parts: Vec<String> = rows
        .iter()
        .filter_map(|(key, label)| {
            // The peers that ran this row (HAProxy relays no UDP).
            let peers: Vec<usize> =
                peers.iter().copied().filter(|&p| s.sum(key, p).is_some() || s.error(key, p).is_some()).collect();
            if peers.is_empty() {
                return None;
            }
            let ratios = s.round_ratios(key, me, &peers)?;
            let won = ratios.iter().filter(|&&r| r > 1.0).count();
            let (low, high) = ratios.iter().fold((f64::MAX, f64::MIN), |(l, h), &r| (l.min(r), h.max(r)));
            let mid = crate::report::median(&ratios)?;
            Some(format!("{label} {won}/{n}, {mid:.2}× ({low:.2}–{high:.2})", n = ratios.len()))
        })
        .collect();
    if parts.is_empty() {
        return None;
    }
    Some(format!(
        "- refractium against the better peer, round by round (rounds ahead, median of its figure ÷ the better peer's, lowest–highest): {}\n",
        parts.join(" · ")
    ))
}

/// Each hooked refractium against refractium unhooked, round by round, on
/// the rows both ran: in the median round, the hooked figure divided by the
/// unhooked one (lowest–highest). `None` without a hooked target.
pub fn hooked_tally(targets: &[Target], s: &Samples) -> Option<String> {
    let plain = targets.iter().position(|t| t.name == "refractium")?;
    let rows = [
        ("bulk.up", "bulk c→s"),
        ("bulk.down", "bulk s→c"),
        ("hbulk.up", "HTTP bulk c→s"),
        ("hbulk.down", "HTTP bulk s→c"),
        ("short1", "c=1"),
        ("short16", "c=16"),
        ("short64", "c=64"),
    ];
    let lines: Vec<String> = targets
        .iter()
        .enumerate()
        .filter(|(_, t)| t.name.starts_with("refractium+"))
        .filter_map(|(i, t)| {
            let parts: Vec<String> = rows
                .iter()
                .filter_map(|(key, label)| {
                    let ratios = s.round_ratios(key, i, &[plain])?;
                    let (low, high) = ratios.iter().fold((f64::MAX, f64::MIN), |(l, h), &r| (l.min(r), h.max(r)));
                    let mid = crate::report::median(&ratios)?;
                    Some(format!("{label} {mid:.2}× ({low:.2}–{high:.2})"))
                })
                .collect();
            (!parts.is_empty())
                .then(|| format!("- {} against refractium unhooked, round by round: {}\n", t.name, parts.join(" · ")))
        })
        .collect();
    (!lines.is_empty()).then(|| lines.concat())
}
