//! The bodies of refractium's fuzz targets, as plain functions of the fuzz
//! input.
//!
//! Each target is one `fn(&[u8])` that panics when an invariant a user
//! relies on breaks, and returns otherwise. Two drivers call the same
//! functions: the libFuzzer binaries of `fuzz/fuzz_targets/` (one line
//! each, built with `cargo fuzz`), and `tests/replay.rs`, which runs every
//! file of `fuzz/corpus/<target>/` through its target on stable Rust as
//! part of `cargo test --workspace`. A crash the fuzzer finds is added to
//! the corpus and so becomes a regression test (see `docs/fuzzing.md`).
//!
//! - [`detectors`]: each built-in detector's parsing, run natively as a
//!   Rust library: the verdict keeps the host's contract on any bytes, a
//!   `no-match` for a prefix stays one for the whole, a `need-more(n)` is
//!   not broken by a match before `n` bytes, a match fits the output bounds.
//! - [`detect_loop`]: the host's detection loop ([`refractium::detect::Progress`])
//!   over the real built-in components in the sandbox, fed bytes split at
//!   points the input chooses.
//! - [`config`]: the YAML config loader.
//! - [`proxy_header`]: the PROXY v1/v2 header parser of `accept_proxy`.

pub mod config;
pub mod detect_loop;
pub mod detectors;
pub mod proxy_header;

/// A fuzz target: its name (the binary in `fuzz/fuzz_targets/`, the
/// corpus directory in `fuzz/corpus/`), its body, and the body's path in
/// this crate, which the binary calls by name (so that a detector's binary
/// links the detector alone, not the host's sandbox).
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
    pub path: &'static str,
}

/// Every target, the four default detectors first.
pub const TARGETS: &[Target] = &[
    Target { name: "tls", run: detectors::tls, path: "detectors::tls" },
    Target { name: "http", run: detectors::http, path: "detectors::http" },
    Target { name: "http2", run: detectors::http2, path: "detectors::http2" },
    Target { name: "ssh", run: detectors::ssh, path: "detectors::ssh" },
    Target { name: "dns", run: detectors::dns, path: "detectors::dns" },
    Target { name: "socks4", run: detectors::socks4, path: "detectors::socks4" },
    Target { name: "socks5", run: detectors::socks5, path: "detectors::socks5" },
    Target { name: "postgres", run: detectors::postgres, path: "detectors::postgres" },
    Target { name: "redis", run: detectors::redis, path: "detectors::redis" },
    Target { name: "mqtt", run: detectors::mqtt, path: "detectors::mqtt" },
    Target { name: "openvpn", run: detectors::openvpn, path: "detectors::openvpn" },
    Target { name: "wireguard", run: detectors::wireguard, path: "detectors::wireguard" },
    Target { name: "quic", run: detectors::quic, path: "detectors::quic" },
    Target { name: "xmpp", run: detectors::xmpp, path: "detectors::xmpp" },
    Target { name: "rdp", run: detectors::rdp, path: "detectors::rdp" },
    Target { name: "pattern", run: detectors::pattern, path: "detectors::pattern" },
    Target { name: "pattern_config", run: detectors::pattern_config, path: "detectors::pattern_config" },
    Target { name: "detect_loop", run: detect_loop::run, path: "detect_loop::run" },
    Target { name: "config", run: config::run, path: "config::run" },
    Target { name: "proxy_header", run: proxy_header::run, path: "proxy_header::run" },
];
