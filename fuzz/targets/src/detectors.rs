//! Each built-in detector's parsing, called natively: the same Rust the
//! proxy runs inside WebAssembly, without the sandbox in the way (a panic is
//! a crash here, where in the proxy it would be a trap counted as
//! `no-match`).
//!
//! Over TCP, where the host asks again as bytes arrive, each input is looked
//! at whole and at a few of its prefixes ([`cuts`]), and the answers must
//! keep what the host relies on (`refractium::detect`):
//!
//! - every verdict keeps the SDK's contract ([`check_verdict`]): a
//!   `need-more(n)` asks for more than is there, at most 64 KiB;
//! - a `no-match` for a prefix is final: the whole is `no-match` too (the
//!   host never asks again, and its first-byte tables rule a detector out
//!   from its answer to one byte);
//! - a `need-more(n)` for a prefix is not contradicted by a match of a
//!   longer input still shorter than `n` (the host does not ask before `n`
//!   bytes, so a client that sent that much and waits would time out);
//! - a match fits the host's output bounds (longer strings, more ALPN
//!   entries or attributes fail the call).
//!
//! Over UDP (for the detectors that serve it) the input is one datagram, or
//! the datagrams held so far, concatenated: the verdict keeps the contract
//! and the bounds; a prefix is not a shorter datagram, so no prefix rule.

use refractium::plugin::sandbox::{Bounds, MAX_ALPN, MAX_ATTRIBUTES};
use refractium_plugin_sdk::testing::check_verdict;
use refractium_plugin_sdk::{Detection, Detector, Peer, Transport, Verdict};

/// The transports a built-in serves (as `host/build.rs` lists them; a
/// replay test holds this to the host's table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Serves {
    pub tcp: bool,
    pub udp: bool,
}

const TCP: Serves = Serves { tcp: true, udp: false };
const UDP: Serves = Serves { tcp: false, udp: true };
const BOTH: Serves = Serves { tcp: true, udp: true };

/// Built-in detectors by name, with the transports each serves.
pub const BUILTINS: &[(&str, Serves)] = &[
    ("tls", TCP),
    ("http2", TCP),
    ("http", TCP),
    ("ssh", TCP),
    ("quic", UDP),
    ("wireguard", UDP),
    ("postgres", TCP),
    ("mqtt", TCP),
    ("rdp", TCP),
    ("xmpp", TCP),
    ("socks5", TCP),
    ("socks4", TCP),
    ("redis", TCP),
    ("dns", BOTH),
    ("openvpn", BOTH),
    ("pattern", BOTH),
];

/// The `pattern` detector's config in the fuzz targets: a rule of each kind
/// (fixed bytes at an offset, alternatives, hex, anchored and unanchored
/// regular expressions, a minimum length, a transport), so that its
/// matching is fuzzed, not only its refusal of everything.
pub const PATTERN_CONFIG: &str = r#"{"rules": [
    {"protocol": "gopher", "prefix": "/", "min_length": 3, "transport": "tcp"},
    {"protocol": "magic", "hex": "de ad be ef", "offset": 4},
    {"protocol": "zmq", "prefixes": ["\\xff\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x01\\x7f", "\\xff\\x00\\x01"],
     "attributes": {"kind": "zeromq", "n": 3, "b": true}},
    {"protocol": "irc", "regex": "^(NICK|USER|PASS|CAP) [^\\r\\n]*\\r\\n", "max_length": 512},
    {"protocol": "beacon", "regex": "(?i)hello[0-9]{2,4}world", "max_length": 64, "transport": "udp"}
]}"#;

/// Lengths of the prefixes of `len` bytes looked at besides the whole: the
/// first 16 (where most detectors decide), then a quarter, a half, three
/// quarters and all but the last byte.
pub fn cuts(len: usize) -> impl Iterator<Item = usize> {
    let mut cuts: Vec<usize> = (1..=16).chain([len / 4, len / 2, len * 3 / 4, len.saturating_sub(1)]).collect();
    cuts.retain(|&c| c > 0 && c < len);
    cuts.sort_unstable();
    cuts.dedup();
    cuts.into_iter()
}

/// Check `detector` on `data` over the transports it serves (see the
/// module's doc); panics with the detector's name and what broke.
pub fn check<D: Detector>(detector: &D, data: &[u8], serves: Serves) {
    if serves.tcp {
        check_stream(detector, data);
    }
    if serves.udp {
        let verdict = detector.detect(data, &Peer::test(Transport::Udp));
        if let Err(e) = check_verdict(data, &verdict).and_then(|()| within_bounds(&verdict)) {
            panic!("{} over UDP, {} bytes: {e}", D::NAME, data.len());
        }
    }
}

fn check_stream<D: Detector>(detector: &D, data: &[u8]) {
    let peer = Peer::test(Transport::Tcp);
    let whole = detector.detect(data, &peer);
    if let Err(e) = check_verdict(data, &whole).and_then(|()| within_bounds(&whole)) {
        panic!("{} over TCP, {} bytes: {e}", D::NAME, data.len());
    }
    for cut in cuts(data.len()) {
        let prefix = data.get(..cut).unwrap_or(data);
        let early = detector.detect(prefix, &peer);
        if let Err(e) = check_verdict(prefix, &early).and_then(|()| within_bounds(&early)) {
            panic!("{} over TCP, prefix of {cut} bytes: {e}", D::NAME);
        }
        match (&early, &whole) {
            (Verdict::NoMatch, Verdict::NoMatch) => {}
            (Verdict::NoMatch, later) => panic!(
                "{}: no-match for the first {cut} bytes but {later:?} for all {} (no-match must be final)",
                D::NAME,
                data.len()
            ),
            (Verdict::NeedMore(n), Verdict::Matched(_)) if *n > data.len() => panic!(
                "{}: need-more({n}) for the first {cut} bytes but a match at {} (the host would not ask)",
                D::NAME,
                data.len()
            ),
            _ => {}
        }
    }
}

/// The host's output bounds (`refractium::plugin::sandbox`): a match the
/// host would refuse as too large fails the call.
pub fn within_bounds(verdict: &Verdict) -> Result<(), String> {
    let Verdict::Matched(d) = verdict else { return Ok(()) };
    bounds(d).map_err(|e| format!("a match the host refuses: {e}"))
}

fn bounds(d: &Detection) -> Result<(), refractium::plugin::sandbox::TooLarge> {
    if d.protocol.is_empty() {
        return Err(refractium::plugin::sandbox::TooLarge("an empty protocol name".into()));
    }
    let mut bounds = Bounds::default();
    bounds.string("protocol", d.protocol.len())?;
    if let Some(sni) = &d.sni {
        bounds.string("sni", sni.len())?;
    }
    Bounds::count("alpn entries", d.alpn.len(), MAX_ALPN)?;
    for alpn in &d.alpn {
        bounds.string("alpn entry", alpn.len())?;
    }
    Bounds::count("attributes", d.attributes.len(), MAX_ATTRIBUTES)?;
    for (key, value) in &d.attributes {
        bounds.string("attribute key", key.len())?;
        bounds.string("attribute value", value.len())?;
    }
    Ok(())
}

/// A built-in detector with its config (a refusal is a bug of the target).
fn build<D: Detector>(config: &str) -> D {
    D::new(config).unwrap_or_else(|e| panic!("{} refused its fuzzing config: {e}", D::NAME))
}

/// The transports the built-in `name` serves.
fn serves(name: &str) -> Serves {
    BUILTINS.iter().find(|(n, _)| *n == name).map_or(BOTH, |&(_, s)| s)
}

macro_rules! detector_targets {
    ($($name:ident: $ty:ty = $config:expr;)*) => {$(
        #[doc = concat!("Fuzz target `", stringify!($name), "`: the built-in `", stringify!($name), "` detector.")]
        pub fn $name(data: &[u8]) {
            // Built once per thread: `pattern` keeps per-thread regex caches.
            thread_local!(static DETECTOR: $ty = build::<$ty>($config));
            DETECTOR.with(|detector| check(detector, data, serves(stringify!($name))));
        }
    )*};
}

detector_targets! {
    tls: refractium_detector_tls::Tls = "null";
    http: refractium_detector_http::Http = "null";
    http2: refractium_detector_http2::Http2 = "null";
    ssh: refractium_detector_ssh::Ssh = "null";
    dns: refractium_detector_dns::Dns = "null";
    socks4: refractium_detector_socks4::Socks4 = "null";
    socks5: refractium_detector_socks5::Socks5 = "null";
    postgres: refractium_detector_postgres::Postgres = "null";
    redis: refractium_detector_redis::Redis = "null";
    mqtt: refractium_detector_mqtt::Mqtt = "null";
    openvpn: refractium_detector_openvpn::Openvpn = "null";
    wireguard: refractium_detector_wireguard::Wireguard = "null";
    quic: refractium_detector_quic::Quic = "null";
    xmpp: refractium_detector_xmpp::Xmpp = "null";
    rdp: refractium_detector_rdp::Rdp = "null";
    pattern: refractium_detector_pattern::Pattern = PATTERN_CONFIG;
}

/// Fuzz target `pattern_config`: the `pattern` detector's config parser
/// (JSON text, as the host hands it `plugins.config.pattern`). Any text is
/// accepted or refused with a message, never a panic; a config it accepts
/// gives a detector that keeps the contract on a few first flights.
pub fn pattern_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match <refractium_detector_pattern::Pattern as Detector>::new(text) {
        Err(message) => assert!(!message.is_empty(), "an empty refusal for {text:?}"),
        Ok(detector) => {
            for (_, flight) in refractium_plugin_sdk::testing::other_protocols() {
                check(&detector, &flight, BOTH);
            }
            check(&detector, data, BOTH);
        }
    }
}
