//! Built-in `socks5` detector: the client's greeting (RFC 1928 §3): `VER=5`,
//! `NMETHODS` 1–255, then that many method bytes, each a known method
//! (0x00–0x09: no auth, GSSAPI, username/password, CHAP, …) or a private one
//! (0x80–0xFE); 0xFF ("no acceptable methods") and unassigned values are
//! refused. Attribute: `methods`, the offered methods in decimal, comma
//! separated, in the client's order (e.g. `0,2`).
//!
//! It matches once the greeting is complete: the client then waits for the
//! server's choice, so usually nothing follows. Bytes that do follow in the
//! same read (an optimistic client) must begin like what could come next: a
//! SOCKS5 request (`05 CMD 00 ATYP`) when "no auth" is offered, or a
//! username/password sub-negotiation (RFC 1929, `01 ULEN …`) when that is
//! offered; anything else is not SOCKS5. It never waits past 257 bytes.

use refractium_plugin_sdk::{Detection, Detector, Peer, Verdict};

const NO_AUTH: u8 = 0x00;
const USER_PASS: u8 = 0x02;

pub struct Socks5;

impl Detector for Socks5 {
    const NAME: &'static str = "socks5";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn new(_config: &str) -> Result<Self, String> {
        Ok(Socks5)
    }

    fn detect(&self, data: &[u8], _peer: &Peer) -> Verdict {
        let nmethods = match data {
            [] | [5] => return Verdict::NeedMore(2),
            [5, n @ 1..=255, ..] => usize::from(*n),
            _ => return Verdict::NoMatch,
        };
        let end = 2 + nmethods;
        let methods = data.get(2..end.min(data.len())).unwrap_or_default();
        if !methods.iter().all(|&m| known_method(m)) {
            return Verdict::NoMatch;
        }
        if methods.len() < nmethods {
            return Verdict::NeedMore(end);
        }
        let after = data.get(end..).unwrap_or_default();
        let follows = after.is_empty()
            || (methods.contains(&NO_AUTH) && request_start(after))
            || (methods.contains(&USER_PASS) && auth_start(after));
        if !follows {
            return Verdict::NoMatch;
        }
        let list: Vec<String> = methods.iter().map(u8::to_string).collect();
        Verdict::Matched(Detection::new("socks5").attr("methods", list.join(",")))
    }
}

/// Assigned methods (IANA "SOCKS Methods") and the private range.
fn known_method(method: u8) -> bool {
    matches!(method, 0x00..=0x09 | 0x80..=0xfe)
}

/// The start of a request: `VER=5`, `CMD` CONNECT/BIND/UDP ASSOCIATE,
/// `RSV=0`, `ATYP` IPv4/domain/IPv6 (a domain of at least one byte).
fn request_start(bytes: &[u8]) -> bool {
    let expected: [fn(u8) -> bool; 5] =
        [|b| b == 5, |b| (1..=3).contains(&b), |b| b == 0, |b| matches!(b, 1 | 3 | 4), |_| true];
    let fixed = bytes.iter().zip(expected).all(|(&b, ok)| ok(b));
    let domain_ok = match bytes {
        [_, _, _, 3, len, ..] => *len > 0,
        _ => true,
    };
    fixed && domain_ok
}

/// The start of a username/password sub-negotiation: `VER=1`, `ULEN` ≥ 1.
fn auth_start(bytes: &[u8]) -> bool {
    match bytes {
        [1] => true,
        [1, ulen, ..] => *ulen > 0,
        _ => false,
    }
}

refractium_plugin_sdk::export_detector!(Socks5);

#[cfg(test)]
mod tests;
