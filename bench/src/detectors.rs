//! Micro benchmark of each built-in detector: the same decision logic called
//! natively (the plugin crate linked into this binary) and through the Wasm
//! sandbox (the embedded component, as the proxy calls it), on a real first
//! flight from `tests/corpus` that it matches and on one it does not. Reports
//! ns per call and what the sandbox adds.

use anyhow::{Context, Result};
use refractium::config::Config;
use refractium::plugin::PluginSet;
use refractium::plugin::detector::{Detect, Peer};
use refractium_plugin_sdk::{Detector, Peer as SdkPeer, Transport};
use std::time::{Duration, Instant};

macro_rules! corpus {
    ($path:literal) => {
        include_bytes!(concat!("../../tests/corpus/", $path)).as_slice()
    };
}

/// Calls per measurement; each measurement also stops after `BUDGET`.
const CALLS: u32 = 100_000;
const BUDGET: Duration = Duration::from_millis(700);

fn time_loop(mut f: impl FnMut()) -> u128 {
    for _ in 0..500 {
        f();
    }
    let start = Instant::now();
    let mut n = 0u32;
    while n < CALLS && start.elapsed() < BUDGET {
        for _ in 0..100 {
            f();
        }
        n += 100;
    }
    start.elapsed().as_nanos() / u128::from(n)
}

/// ns per call of the plugin crate `name` linked natively, as `timer` times
/// the call it is given.
fn native(name: &str, data: &[u8], udp: bool, timer: &mut dyn FnMut(&mut dyn FnMut()) -> u128) -> Result<u128> {
    let peer = SdkPeer::test(if udp { Transport::Udp } else { Transport::Tcp });
    macro_rules! time {
        ($t:ty) => {{
            let d = <$t>::new("null").map_err(anyhow::Error::msg)?;
            timer(&mut || {
                std::hint::black_box(d.detect(std::hint::black_box(data), &peer));
            })
        }};
    }
    Ok(match name {
        "tls" => time!(refractium_detector_tls::Tls),
        "http" => time!(refractium_detector_http::Http),
        "http2" => time!(refractium_detector_http2::Http2),
        "ssh" => time!(refractium_detector_ssh::Ssh),
        "quic" => time!(refractium_detector_quic::Quic),
        "wireguard" => time!(refractium_detector_wireguard::Wireguard),
        "postgres" => time!(refractium_detector_postgres::Postgres),
        "mqtt" => time!(refractium_detector_mqtt::Mqtt),
        "rdp" => time!(refractium_detector_rdp::Rdp),
        "xmpp" => time!(refractium_detector_xmpp::Xmpp),
        "socks5" => time!(refractium_detector_socks5::Socks5),
        "socks4" => time!(refractium_detector_socks4::Socks4),
        "redis" => time!(refractium_detector_redis::Redis),
        "dns" => time!(refractium_detector_dns::Dns),
        "openvpn" => time!(refractium_detector_openvpn::Openvpn),
        other => anyhow::bail!("no native build of `{other}` in this benchmark"),
    })
}

/// (detector, udp, a flight it matches, a flight it does not match).
fn inputs() -> Vec<(&'static str, bool, &'static [u8], &'static [u8])> {
    let http = corpus!("http/curl.bin");
    let tls = corpus!("tls/curl-h2.bin");
    vec![
        ("tls", false, tls, http),
        ("http2", false, corpus!("http2/curl-prior-knowledge.1.bin"), http),
        ("http", false, http, tls),
        ("ssh", false, corpus!("ssh/openssh.bin"), http),
        ("quic", true, corpus!("quic/aioquic-h3.1.bin"), corpus!("dns/dig-udp.1.bin")),
        ("wireguard", true, corpus!("wireguard/wireguard-go.1.bin"), corpus!("dns/dig-udp.1.bin")),
        ("postgres", false, corpus!("postgres/psql-startup.bin"), http),
        ("mqtt", false, corpus!("mqtt/mosquitto-pub-mqttv5.bin"), http),
        ("rdp", false, corpus!("rdp/xfreerdp.bin"), http),
        ("xmpp", false, corpus!("xmpp/slixmpp.bin"), http),
        ("socks5", false, corpus!("socks5/curl-5h.bin"), http),
        ("socks4", false, corpus!("socks4/curl-4a.bin"), http),
        ("redis", false, corpus!("redis/redis-cli-ping.bin"), http),
        ("dns", true, corpus!("dns/dig-udp.1.bin"), corpus!("quic/aioquic-h3.1.bin")),
        ("openvpn", true, corpus!("openvpn/udp.1.bin"), corpus!("dns/dig-udp.1.bin")),
    ]
}

const COLD_CALLS: usize = 300;

/// Median ns of `f` when called with cold caches and TLBs, as on a proxy that
/// slept between two connections while other processes ran.
fn cold_loop(scratch: &mut [u8], mut f: impl FnMut()) -> u128 {
    let mut times = Vec::with_capacity(COLD_CALLS);
    for i in 0..COLD_CALLS {
        for b in scratch.iter_mut().step_by(64) {
            *b = b.wrapping_add(i as u8);
        }
        std::hint::black_box(&scratch);
        let start = Instant::now();
        f();
        times.push(start.elapsed().as_nanos());
    }
    times.sort_unstable();
    times[times.len() / 2]
}

/// Print the table: calls in a tight loop, or with `cold` (KiB), each call
/// timed alone after writing that much other memory (what the client and the
/// backend do to the proxy's caches between two connections at concurrency 1).
pub fn run(cold: Option<usize>, only: &[String]) -> Result<()> {
    let chosen = || inputs().into_iter().filter(|(name, ..)| only.is_empty() || only.iter().any(|o| o == name));
    if chosen().next().is_none() {
        anyhow::bail!("no built-in detector is named {}", only.join(" or "));
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let plugins = rt.block_on(PluginSet::load(&Config::default())).context("loading the built-in plugins")?;
    // One pass over everything first: the first cell measured used to pay
    // for the process settling (page faults, the plugin watchdog starting).
    for (name, udp, hit, miss) in chosen() {
        let plugin = plugins.detector(name).with_context(|| format!("built-in `{name}` missing"))?;
        let peer = Peer::new("127.0.0.1:40000", "127.0.0.1:443", "bench", udp);
        for _ in 0..2_000 {
            let _ = std::hint::black_box(plugin.detect(hit, &peer));
            let _ = std::hint::black_box(plugin.detect(miss, &peer));
        }
    }
    let mut scratch = cold.map(|kib| vec![0u8; kib.max(1) << 10]);
    if scratch.is_some() {
        println!("| detector | input | native ns/call (cold) | Wasm ns/call (cold) | Wasm adds |");
        println!("|---|---|---:|---:|---:|");
    } else {
        println!("| detector | input | bytes | native ns/call | Wasm ns/call | Wasm adds |");
        println!("|---|---|---:|---:|---:|---:|");
    }
    for (name, udp, hit, miss) in chosen() {
        let plugin = plugins.detector(name).with_context(|| format!("built-in `{name}` missing"))?;
        let peer = Peer::new("127.0.0.1:40000", "127.0.0.1:443", "bench", udp);
        for (label, data) in [("match", hit), ("no-match", miss)] {
            let (native_ns, wasm_ns) = match scratch.as_deref_mut() {
                Some(scratch) => (
                    native(name, data, udp, &mut |f| cold_loop(scratch, f))?,
                    cold_loop(scratch, || {
                        let _ = std::hint::black_box(plugin.detect(std::hint::black_box(data), &peer));
                    }),
                ),
                None => (native(name, data, udp, &mut |f| time_loop(f))?, wasm_loop(&**plugin, data, &peer)),
            };
            let adds = (wasm_ns as f64 - native_ns as f64) / 1000.0;
            if scratch.is_some() {
                println!("| {name} | {label} | {native_ns} | {wasm_ns} | {adds:+.2} µs |");
            } else {
                println!("| {name} | {label} | {} | {native_ns} | {wasm_ns} | {adds:+.2} µs |", data.len());
            }
        }
    }
    Ok(())
}

/// ns per call through the sandbox, in a tight loop.
fn wasm_loop(plugin: &dyn Detect, data: &[u8], peer: &Peer) -> u128 {
    for _ in 0..500 {
        let _ = std::hint::black_box(plugin.detect(data, peer));
    }
    let start = Instant::now();
    let mut n = 0u32;
    while n < CALLS / 4 && start.elapsed() < BUDGET {
        for _ in 0..100 {
            let _ = std::hint::black_box(plugin.detect(std::hint::black_box(data), peer));
        }
        n += 100;
    }
    start.elapsed().as_nanos() / u128::from(n)
}
