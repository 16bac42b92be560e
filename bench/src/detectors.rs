//! Micro benchmark of each built-in detector: the same decision logic called
//! natively (the plugin crate linked into this binary) and through the Wasm
//! sandbox (the embedded component, as the proxy calls it), on a matching
//! first flight and on a non-matching one. Reports ns per call and the
//! overhead the sandbox adds.

use anyhow::{Context, Result};
use refractium::config::Config;
use refractium::plugin::PluginSet;
use refractium::plugin::detector::{Detect, Peer};
use refractium_plugin_sdk::{Detector, Peer as SdkPeer, Transport};
use std::time::{Duration, Instant};

const TLS_HELLO: &[u8] = include_bytes!("../../plugin-sdk/src/testdata/openssl_client_hello.bin");
const HTTP: &[u8] =
    b"GET /index.html HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n";
const H2: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00";
const SSH: &[u8] = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n";

/// Calls per measurement; each measurement also stops after `BUDGET`.
const CALLS: u32 = 200_000;
const BUDGET: Duration = Duration::from_secs(2);

fn native(name: &str, data: &[u8]) -> Result<u128> {
    let peer = SdkPeer::test(Transport::Tcp);
    macro_rules! time {
        ($t:ty) => {{
            let d = <$t>::new("null").map_err(anyhow::Error::msg)?;
            time_loop(|| {
                std::hint::black_box(d.detect(std::hint::black_box(data), &peer));
            })
        }};
    }
    Ok(match name {
        "tls" => time!(refractium_detector_tls::Tls),
        "http" => time!(refractium_detector_http::Http),
        "http2" => time!(refractium_detector_http2::Http2),
        "ssh" => time!(refractium_detector_ssh::Ssh),
        other => anyhow::bail!("no native build of `{other}` in this benchmark"),
    })
}

fn time_loop(mut f: impl FnMut()) -> u128 {
    for _ in 0..1000 {
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

/// Print the table.
pub fn run() -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let plugins = rt.block_on(PluginSet::load(&Config::default())).context("loading the built-in plugins")?;
    let peer = Peer::new("127.0.0.1:40000".into(), "127.0.0.1:443".into(), "bench".into(), false);
    println!("| detector | input | bytes | native ns/call | Wasm ns/call | Wasm overhead |");
    println!("|---|---|---:|---:|---:|---:|");
    for (name, hit) in [("tls", TLS_HELLO), ("http2", H2), ("http", HTTP), ("ssh", SSH)] {
        let plugin = plugins.detector(name).with_context(|| format!("built-in `{name}` missing"))?;
        for (label, data) in [("match", hit), ("no-match", if name == "http" { SSH } else { HTTP })] {
            let native_ns = native(name, data)?;
            let wasm_ns = rt.block_on(async {
                for _ in 0..1000 {
                    std::hint::black_box(plugin.detect(data, &peer).await);
                }
                let start = Instant::now();
                let mut n = 0u32;
                while n < CALLS / 4 && start.elapsed() < BUDGET {
                    for _ in 0..100 {
                        std::hint::black_box(plugin.detect(std::hint::black_box(data), &peer).await);
                    }
                    n += 100;
                }
                start.elapsed().as_nanos() / u128::from(n)
            });
            println!(
                "| {name} | {label} | {} | {native_ns} | {wasm_ns} | +{:.2} µs |",
                data.len(),
                (wasm_ns as f64 - native_ns as f64) / 1000.0
            );
        }
    }
    Ok(())
}
