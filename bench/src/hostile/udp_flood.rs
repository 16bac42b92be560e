//! A UDP flood without spoofing: DNS queries from many source ports on
//! many loopback addresses (each one a new client to the proxy), as fast
//! as one thread can send them, while a session opened before the flood
//! sends a query every 20 ms and counts its answers. Every 250 ms the
//! open-session gauge is read: it must stay at or under `udp.max_sessions`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{
    MAX_SESSIONS, Outcome, Proxy, Row, SESSIONS_PER_IP, Sampler, cpu_pct, metric, rss_mib, source, udp_rcvbuf_errors,
};

/// Flood sources: this many addresses in 127.3.0.0/16 …
const ADDRESSES: usize = 40;
/// … with this many ports each.
const PORTS: usize = 100;
/// At most this many flood datagrams per phase.
const CAP: u64 = 20_000_000;
/// The paced phase's rate, datagrams a second.
const PACED_RATE: u64 = 20_000;
/// The session opened before the flood sends every …
const LEGIT_PACE: Duration = Duration::from_millis(20);

/// A standard query for `flood.test A` with the given id.
fn query(id: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    q.extend_from_slice(b"\x05flood\x04test\x00\x00\x01\x00\x01");
    q
}

/// An echo server with a large receive buffer, so that what it drops does
/// not pass for the proxy's losses; counts what it received.
fn echo_server(received: Arc<AtomicU64>) -> Result<SocketAddr> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    sock.set_recv_buffer_size(8 << 20)?;
    sock.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    let socket: UdpSocket = sock.into();
    let addr = socket.local_addr()?;
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            received.fetch_add(1, Ordering::Relaxed);
            let _ = socket.send_to(&buf[..n], from);
        }
    });
    Ok(addr)
}

/// The session opened before the flood: when each query went out, and
/// when its echo came back.
struct Legit {
    stop: Arc<AtomicBool>,
    sent: Arc<Mutex<Vec<Instant>>>,
    echoed: Arc<Mutex<HashMap<u16, Instant>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Legit {
    fn start(proxy: SocketAddr) -> Result<Legit> {
        let sock = UdpSocket::bind("127.0.0.1:0").context("bind the session's socket")?;
        sock.connect(proxy)?;
        sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        let recv = sock.try_clone()?;
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let echoed = Arc::new(Mutex::new(HashMap::new()));
        let (s1, s2, sent1, echoed2) = (stop.clone(), stop.clone(), sent.clone(), echoed.clone());
        let sender = std::thread::spawn(move || {
            // Bounded: 60 s of queries at most.
            for id in 0..3000u16 {
                if s1.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(mut v) = sent1.lock() {
                    v.push(Instant::now());
                }
                let _ = sock.send(&query(id));
                std::thread::sleep(LEGIT_PACE);
            }
        });
        let receiver = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !s2.load(Ordering::Relaxed) {
                if let Ok(n) = recv.recv(&mut buf)
                    && n >= 2
                    && let Ok(mut e) = echoed2.lock()
                {
                    e.entry(u16::from_be_bytes([buf[0], buf[1]])).or_insert_with(Instant::now);
                }
            }
        });
        Ok(Legit { stop, sent, echoed, threads: vec![sender, receiver] })
    }

    /// Queries sent in [from, to) and how many of them were echoed.
    fn between(&self, from: Instant, to: Instant) -> (usize, usize) {
        let sent = self.sent.lock().map(|v| v.clone()).unwrap_or_default();
        let echoed = self.echoed.lock().map(|e| e.clone()).unwrap_or_default();
        let ids: Vec<u16> = (0..sent.len()).filter(|&i| sent[i] >= from && sent[i] < to).map(|i| i as u16).collect();
        (ids.len(), ids.iter().filter(|id| echoed.contains_key(id)).count())
    }

    fn echoes(&self) -> usize {
        self.echoed.lock().map(|e| e.len()).unwrap_or(0)
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

pub fn run(binary: &Path, secs: Duration) -> Result<Outcome> {
    let received = Arc::new(AtomicU64::new(0));
    let mut proxy = Proxy::start(binary, "udp", echo_server(received.clone())?)?;
    let pid = proxy.group.pid;
    let legit = Legit::start(proxy.udp)?;
    let until = Instant::now() + Duration::from_secs(10);
    while legit.echoes() == 0 {
        if Instant::now() > until {
            bail!("the session opened before the flood got no answer in 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs(1));
    let sampler = Sampler::start(pid);
    let mut sources = Vec::with_capacity(ADDRESSES * PORTS);
    for a in 0..ADDRESSES {
        for _ in 0..PORTS {
            let s = UdpSocket::bind(SocketAddr::new(source(3, a).into(), 0)).context("bind a flood socket")?;
            s.set_nonblocking(true)?;
            sources.push(s);
        }
    }
    // Read the session gauge while the flood runs.
    let gauge_stop = Arc::new(AtomicBool::new(false));
    let gauge = {
        let (stop, admin) = (gauge_stop.clone(), proxy.admin);
        std::thread::spawn(move || {
            let (mut max, mut reads, mut failed) = (0u64, 0u64, 0u64);
            for _ in 0..2400 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match crate::soak::admin(admin, "GET", "/metrics") {
                    Ok((_, body)) => {
                        reads += 1;
                        max = max.max(metric(&body, "refractium_udp_sessions_open", ""));
                    }
                    Err(_) => failed += 1,
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            (max, reads, failed)
        })
    };
    let mut phases = Vec::new();
    for rate in [Some(PACED_RATE), None] {
        let before = proxy.metrics()?;
        let mut ph = flood(&sources, proxy.udp, rate, secs);
        std::thread::sleep(Duration::from_secs(1));
        let after = proxy.metrics()?;
        let delta =
            |name: &str, labels: &str| metric(&after, name, labels).saturating_sub(metric(&before, name, labels));
        ph.refused = delta("refractium_udp_sessions_refused_total", "");
        ph.dropped = delta("refractium_udp_datagrams_dropped_total", "");
        ph.forwarded = delta("refractium_udp_datagrams_total", r#"direction="up""#);
        ph.legit_during = legit.between(ph.from, ph.to);
        ph.legit_after = legit.between(ph.to, ph.to + Duration::from_secs(1));
        phases.push(ph);
    }
    gauge_stop.store(true, Ordering::Relaxed);
    let (max_open, reads, read_failed) = gauge.join().unwrap_or((0, 0, 0));
    let samples = sampler.stop();
    legit.stop();
    proxy.alive()?;
    let metrics = proxy.metrics()?;
    drop(sources);

    let total = metric(&metrics, "refractium_udp_sessions_total", "");
    let open_now = metric(&metrics, "refractium_udp_sessions_open", "");
    let within = max_open <= MAX_SESSIONS;

    let mut md = String::new();
    let _ = writeln!(
        md,
        "## A UDP flood from many source ports, {:.0} s paced and {:.0} s unpaced\n",
        secs.as_secs_f64(),
        secs.as_secs_f64()
    );
    let _ = writeln!(
        md,
        "DNS queries from {} sockets ({ADDRESSES} addresses in 127.3.0.0/16 × {PORTS} ports; no spoofing, so each \
         source can get answers), sent round robin by one thread: first paced at {PACED_RATE}/s, then as fast as \
         it can; `udp.max_sessions` {MAX_SESSIONS}, `max_sessions_per_ip` {SESSIONS_PER_IP}, `session_timeout` \
         30 s. A session opened before the flood (127.0.0.1) sends a query every {} ms throughout. The open-session \
         gauge was read {reads} times ({read_failed} reads failed): max **{max_open}** (bound {MAX_SESSIONS}: {}), \
         {open_now} at the end; {total} sessions started in all.\n",
        ADDRESSES * PORTS,
        LEGIT_PACE.as_millis(),
        if within { "held" } else { "**exceeded**" }
    );
    let _ = writeln!(
        md,
        "| phase | datagrams sent | refused (`refractium_udp_sessions_refused_total`: one per datagram of a client past the bound) | dropped by the proxy | \
         forwarded up | dropped by the kernel, receive buffer full | proxy CPU, % of a core | the session open before: \
         answered during · in the second after |\n|---|---:|---:|---:|---:|---:|---:|---|"
    );
    for ph in &phases {
        let _ = writeln!(
            md,
            "| {} | {} ({:.0}/s{}) | {} | {} | {} | {} | {:.0} | {} of {} · {} of {} |",
            ph.name(),
            ph.sent,
            ph.sent as f64 / (ph.to - ph.from).as_secs_f64(),
            if ph.send_failed > 0 { format!(", {} sends failed", ph.send_failed) } else { String::new() },
            ph.refused,
            ph.dropped,
            ph.forwarded,
            ph.kernel_drops,
            cpu_pct(&samples, ph.from, ph.to),
            ph.legit_during.1,
            ph.legit_during.0,
            ph.legit_after.1,
            ph.legit_after.0,
        );
    }
    let _ = writeln!(
        md,
        "\nThe echo backend received {} datagrams. Proxy RSS (before → flood → after): {}. The kernel's count \
         (`RcvbufErrors` in /proc/net/snmp) is for every UDP socket on the machine; on loopback with nothing else \
         flooding it is the proxy's listening sockets.",
        received.load(Ordering::Relaxed),
        rss_mib(&samples)
    );
    let legit = |ph: &Phase| {
        format!(
            "{}: {} of {} answered during, {} of {} after",
            ph.name(),
            ph.legit_during.1,
            ph.legit_during.0,
            ph.legit_after.1,
            ph.legit_after.0
        )
    };
    let all_answered =
        phases.iter().all(|p| p.legit_during.0 == p.legit_during.1 && p.legit_after.0 == p.legit_after.1);
    let row = Row {
        scenario: "a UDP flood from many source ports (no spoofing)".into(),
        load: format!(
            "DNS queries from {} source ports: {}; `udp.max_sessions` {MAX_SESSIONS}",
            ADDRESSES * PORTS,
            phases
                .iter()
                .map(|p| format!(
                    "{}, {:.0} datagrams/s for {:.0} s",
                    p.name(),
                    p.sent as f64 / (p.to - p.from).as_secs_f64(),
                    (p.to - p.from).as_secs_f64()
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        did: format!(
            "held open sessions at {max_open} at most ({}), refused the datagrams of clients past it ({} counted \
             in `refractium_udp_sessions_refused_total`); unpaced, the kernel dropped {} \
             datagrams at the listener's full receive buffer",
            if within { "within the bound" } else { "**over the bound**" },
            phases.iter().map(|p| p.refused).sum::<u64>(),
            phases.last().map_or(0, |p| p.kernel_drops)
        ),
        lost: format!(
            "{}the session open before the flood, {}",
            if all_answered { "nothing: " } else { "" },
            phases.iter().map(legit).collect::<Vec<_>>().join("; ")
        ),
    };
    Ok(Outcome { row, section: md })
}

/// One phase of the flood.
struct Phase {
    rate: Option<u64>,
    from: Instant,
    to: Instant,
    sent: u64,
    send_failed: u64,
    kernel_drops: u64,
    refused: u64,
    dropped: u64,
    forwarded: u64,
    /// Queries of the session open before: (sent, answered).
    legit_during: (usize, usize),
    legit_after: (usize, usize),
}

impl Phase {
    fn name(&self) -> String {
        match self.rate {
            Some(r) => format!("paced at {r}/s"),
            None => "unpaced".into(),
        }
    }
}

/// Send from every source in turn for `secs`, at `rate` datagrams a second
/// (in slots of 10 ms) or as fast as one thread can.
fn flood(sources: &[UdpSocket], to: SocketAddr, rate: Option<u64>, secs: Duration) -> Phase {
    let payload = query(0xfffe);
    let kernel0 = udp_rcvbuf_errors();
    let from = Instant::now();
    let (mut sent, mut send_failed) = (0u64, 0u64);
    let per_slot = rate.map(|r| (r / 100).max(1));
    let mut slot = 0u64;
    'flood: while sent + send_failed < CAP {
        for chunk in sources.chunks(per_slot.unwrap_or(sources.len() as u64) as usize) {
            for s in chunk {
                match s.send_to(&payload, to) {
                    Ok(_) => sent += 1,
                    Err(_) => send_failed += 1,
                }
            }
            if from.elapsed() >= secs {
                break 'flood;
            }
            if per_slot.is_some() {
                slot += 1;
                let next = from + Duration::from_millis(slot * 10);
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        }
    }
    let to_instant = Instant::now();
    Phase {
        rate,
        from,
        to: to_instant,
        sent,
        send_failed,
        kernel_drops: udp_rcvbuf_errors().saturating_sub(kernel0),
        refused: 0,
        dropped: 0,
        forwarded: 0,
        legit_during: (0, 0),
        legit_after: (0, 0),
    }
}
