//! Hostile traffic against the real binary, at sizes a test can afford:
//! slow clients trickling into detection, a flood of random bytes, and
//! first flights whose lengths lie. Each time the proxy keeps serving
//! ordinary clients and says what it did.
//!
//! A test binary of its own, run after the end-to-end tests: its floods
//! would slow them down.

mod backends;
mod report;
#[path = "../e2e/support.rs"]
mod support;
mod udp_spoof;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use support::*;

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

/// A proxy whose HTTP route answers `web`; anything else is closed.
fn start(extra: &str) -> (Proxy, Backend) {
    let backend = Backend::start(Reply::Http("web"));
    let proxy = Proxy::start(&format!(
        r#"
listeners:
  - name: edge
    bind: 127.0.0.1:0
routes:
  - name: web
    match: {{ protocol: http }}
    to: web
backends:
  web: {{ servers: [{}] }}
limits: {{ max_connections_per_ip: 100000 }}
admin: {{ bind: 127.0.0.1:0 }}
{extra}
"#,
        backend.addr
    ));
    (proxy, backend)
}

/// The proxy's resident memory, from /proc.
fn rss_kib(proxy: &Proxy) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", proxy.pid())).expect("/proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

fn served(proxy: &Proxy) -> bool {
    proxy.exchange("edge", GET).ends_with("web")
}

#[test]
fn slow_clients_are_cut_at_the_detection_timeout_while_others_are_served() {
    const SLOW: usize = 400;
    let (proxy, _backend) = start("");
    let before = rss_kib(&proxy);
    let addr = proxy.addr("edge");
    // Each sends the start of an HTTP request line, one byte at a time.
    let mut slow: Vec<TcpStream> = (0..SLOW)
        .map(|_| {
            let c = TcpStream::connect(addr).expect("connect");
            c.set_nonblocking(true).expect("nonblocking");
            c
        })
        .collect();
    let trickle = b"GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let started = Instant::now();
    let mut ordinary = 0;
    let mut cut = vec![false; SLOW];
    // Bounded: the default detection timeout is 3 s; give it 10.
    for round in 0..100 {
        for (i, c) in slow.iter_mut().enumerate() {
            if cut[i] {
                continue;
            }
            let mut buf = [0u8; 16];
            match c.read(&mut buf) {
                Ok(0) => cut[i] = true,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let _ = c.write_all(&trickle[round % trickle.len()..][..1]);
                }
                _ => cut[i] = true,
            }
        }
        if round % 10 == 0 {
            assert!(served(&proxy), "an ordinary client was not served with {SLOW} slow ones open");
            ordinary += 1;
        }
        if cut.iter().all(|&c| c) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let cut_count = cut.iter().filter(|&&c| c).count();
    assert_eq!(cut_count, SLOW, "slow clients still open after {:?}", started.elapsed());
    assert!(ordinary >= 2);
    let timed_out = proxy.logs_where(|v| v["close"].as_str().is_some_and(|c| c.starts_with("detection timed out")));
    assert_eq!(timed_out.len(), SLOW, "each slow client's line says it timed out");
    // The proxy holds what the slow clients sent, no more: well under
    // 64 KiB each (a few KiB for the connection and its bytes).
    let grown = rss_kib(&proxy).saturating_sub(before);
    assert!(grown < 64 * SLOW as u64, "resident memory grew {grown} KiB for {SLOW} slow clients");
    report::row(
        "slowloris: clients trickling into detection",
        &format!("{SLOW} clients, a byte every 100 ms each"),
        &format!(
            "cut all {SLOW} at `detect.timeout` (3 s), each logged `detection timed out`, within {:.1} s; resident memory +{grown} KiB",
            started.elapsed().as_secs_f64()
        ),
        &format!("nothing: {ordinary} ordinary clients served meanwhile"),
    );
}

#[test]
fn a_flood_of_random_bytes_is_rejected_and_ordinary_clients_keep_being_routed() {
    const FLOOD: usize = 2000;
    let (proxy, _backend) = start("");
    let addr = proxy.addr("edge");
    let flooders: Vec<_> = (0..4u64)
        .map(|seed| {
            std::thread::spawn(move || {
                // xorshift: different bytes on every connection, no crate needed.
                let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ seed;
                for _ in 0..FLOOD / 4 {
                    let Ok(mut c) = TcpStream::connect(addr) else { continue };
                    let mut bytes = [0u8; 64];
                    for b in bytes.iter_mut() {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        *b = x as u8;
                    }
                    let _ = c.write_all(&bytes);
                    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                    let _ = c.read(&mut [0u8; 64]);
                }
            })
        })
        .collect();
    let mut ordinary = 0;
    while flooders.iter().any(|f| !f.is_finished()) && ordinary < 200 {
        assert!(served(&proxy), "an ordinary client was not served during the flood");
        ordinary += 1;
    }
    for f in flooders {
        f.join().expect("flooder");
    }
    assert!(served(&proxy));
    let accepted = proxy.wait_metric(10, "refractium_tcp_connections_accepted_total", |n| n >= FLOOD as u64);
    assert!(accepted >= (FLOOD + ordinary) as u64);
    // Every random flight was closed as unrecognised (or, the rare one that
    // looks like the start of something, when the timeout passed).
    let rejected =
        proxy.logs_where(|v| v["route"] == "-" && v["close"].as_str().is_some_and(|c| c.contains("no route for it")));
    assert!(rejected.len() >= FLOOD * 99 / 100, "{} of {FLOOD} random flights logged as rejected", rejected.len());
    report::row(
        "a flood of random bytes",
        &format!("{FLOOD} connections of 64 random bytes from 4 threads"),
        &format!("accepted {accepted}, closed {} as unrecognised with `no route for it`", rejected.len()),
        &format!("nothing: {} ordinary clients served during the flood", ordinary + 1),
    );
}

/// First flights whose length fields lie or are absurd, for the default
/// detectors and the ones whose framing carries a length. (A flight that is
/// only incomplete, like a cut HTTP/2 preface, is rightly waited for.)
fn lying_flights() -> Vec<(&'static str, Vec<u8>)> {
    let mut huge_hello = vec![0x16, 0x03, 0x01, 0xff, 0xff, 0x01, 0xff, 0xff, 0xff, 0x03, 0x03];
    huge_hello.extend(std::iter::repeat_n(0x41, 64));
    let mut record_lies = vec![0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x40, 0x00];
    record_lies.extend(std::iter::repeat_n(0x00, 32));
    vec![
        ("TLS handshake of 16 MiB", huge_hello),
        ("TLS hello longer than its record", record_lies),
        ("PostgreSQL startup of 2 GiB", vec![0x7f, 0xff, 0xff, 0xff, 0x00, 0x03, 0x00, 0x00, b'u', b's']),
        ("MQTT CONNECT of 256 MiB", vec![0x10, 0xff, 0xff, 0xff, 0x7f, 0x00, 0x04, b'M', b'Q', b'T', b'T']),
        ("RESP bulk string of 99 MB", b"*2\r\n$99999999\r\nGET".to_vec()),
        ("RDP TPKT of 64 KiB", vec![0x03, 0x00, 0xff, 0xff, 0x0e, 0xe0, 0x00, 0x00, 0x00, 0x00, 0x00]),
        // Longer than the 255 bytes an SSH identification line may have.
        ("SSH banner without end", b"SSH-2.0-".iter().copied().chain(std::iter::repeat_n(b'x', 300)).collect()),
    ]
}

#[test]
fn first_flights_whose_lengths_lie_are_decided_at_once_not_at_the_timeout() {
    // Detection may wait 20 s; every one of these is decided long before,
    // without the client sending another byte.
    let backend = Backend::start(Reply::Http("web"));
    let proxy = Proxy::start(&format!(
        r#"
listeners:
  - name: edge
    bind: 127.0.0.1:0
    detectors: [tls, http2, http, ssh, postgres, mqtt, redis, rdp]
    detect: {{ timeout: 20s, max_bytes: 4096 }}
routes:
  - name: web
    match: {{ protocol: http }}
    to: web
backends:
  web: {{ servers: [{}] }}
"#,
        backend.addr
    ));
    let flights = lying_flights();
    let (count, mut slowest) = (flights.len(), Duration::ZERO);
    for (i, (what, flight)) in flights.into_iter().enumerate() {
        let started = Instant::now();
        let mut c = TcpStream::connect(proxy.addr("edge")).expect("connect");
        c.write_all(&flight).expect("write");
        c.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest);
        let took = started.elapsed();
        let line = proxy.wait_access(i + 1).pop().expect("a line");
        let close = line["close"].as_str().unwrap_or_default().to_string();
        assert!(!close.starts_with("detection timed out"), "{what}: waited for the timeout ({took:?}): {line}");
        assert!(took < Duration::from_secs(15), "{what}: took {took:?}");
        slowest = slowest.max(took);
    }
    assert!(proxy.exchange("edge", GET).ends_with("web"));
    report::row(
        "first flights whose lengths lie (TLS, PostgreSQL, MQTT, RESP, RDP, SSH)",
        &format!("{count} flights announcing up to 2 GiB, `detect.timeout` 20 s"),
        &format!("decided each without waiting: the slowest in {} ms", slowest.as_millis()),
        "nothing: an ordinary client served after them",
    );
}

/// A ClientHello announcing 16 KiB, sent one byte per write into a 4 KiB
/// detection buffer: no detector can decide within the buffer, so the
/// connection is refused as soon as that is known (the client's writes then
/// fail), not after the timeout.
#[test]
fn a_large_hello_one_byte_at_a_time_is_refused_without_waiting() {
    let backend = Backend::start(Reply::Http("web"));
    let proxy = Proxy::start(&format!(
        "listeners:\n  - name: edge\n    bind: 127.0.0.1:0\n    detect: {{ timeout: 30s, max_bytes: 4096 }}\nroutes:\n  - name: web\n    match: {{ protocol: http }}\n    to: web\nbackends:\n  web: {{ servers: [{}] }}\n",
        backend.addr
    ));
    let mut hello = vec![0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00, 0x3f, 0xfc, 0x03, 0x03];
    hello.resize(16 * 1024, 0x41);
    let mut c = TcpStream::connect(proxy.addr("edge")).expect("connect");
    c.set_nodelay(true).expect("nodelay");
    let started = Instant::now();
    for byte in &hello {
        if c.write_all(std::slice::from_ref(byte)).is_err() {
            break;
        }
    }
    c.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let _ = c.read_to_end(&mut Vec::new());
    let line = proxy.wait_access(1).pop().expect("a line");
    assert_eq!(line["close"], "detection buffer full, and the listener has no route for it", "{line}");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(20), "waited {took:?}, close to the timeout");
    assert!(proxy.exchange("edge", GET).ends_with("web"));
    report::row(
        "a 16 KiB ClientHello one byte per write",
        "one client, `detect.max_bytes` 4 KiB, `detect.timeout` 30 s",
        &format!("refused it as soon as no detector could decide within the buffer, after {} ms", took.as_millis()),
        "nothing: an ordinary client served after it",
    );
}
