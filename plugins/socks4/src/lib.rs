//! Built-in `socks4` detector: a SOCKS4 request (`VN=4`, `CD` 1 CONNECT or
//! 2 BIND, `DSTPORT`, `DSTIP`, a NUL-terminated `USERID`) and its SOCKS4a
//! form (`DSTIP` 0.0.0.x with x ≠ 0, then a NUL-terminated host name).
//! Attributes: `version` (`4` or `4a`), `command` (`connect` or `bind`) and
//! `dest` (`ip:port`, or `host:port` with the host in lowercase).
//!
//! Strict: port 0 is refused for CONNECT, `DSTIP` 0.0.0.0 always; the user id
//! must be at most [`MAX_FIELD`] bytes without control characters; the 4a
//! host name 1..=[`MAX_FIELD`] bytes of letters, digits and `-._:` (IP literals
//! included). It waits for the NULs, never past those lengths. Bytes after
//! the request are not looked at (a client normally waits for the reply).

use refractium_plugin_sdk::{Detection, Detector, Peer, Verdict};

/// Longest user id, and longest 4a host name, NUL excluded.
pub const MAX_FIELD: usize = 255;
/// `VN CD DSTPORT DSTIP`.
const FIXED: usize = 8;

pub struct Socks4;

impl Detector for Socks4 {
    const NAME: &'static str = "socks4";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn new(_config: &str) -> Result<Self, String> {
        Ok(Socks4)
    }

    fn detect(&self, data: &[u8], _peer: &Peer) -> Verdict {
        match data {
            [] | [4] => return Verdict::NeedMore(2),
            [4, 1 | 2, ..] => {}
            _ => return Verdict::NoMatch,
        }
        let Some(&[_, cd, p0, p1, a, b, c, d]) = data.get(..FIXED) else { return Verdict::NeedMore(FIXED + 1) };
        let port = u16::from_be_bytes([p0, p1]);
        let command = if cd == 1 { "connect" } else { "bind" };
        if (cd == 1 && port == 0) || [a, b, c, d] == [0; 4] {
            return Verdict::NoMatch;
        }
        let socks4a = [a, b, c] == [0; 3];
        let rest = data.get(FIXED..).unwrap_or_default();
        let user_end = match field(rest, |b| b >= 0x20 && b != 0x7f) {
            Field::End(end) => end,
            Field::More => return Verdict::NeedMore(0),
            Field::Bad => return Verdict::NoMatch,
        };
        let detection = Detection::new("socks4").attr("version", if socks4a { "4a" } else { "4" });
        let detection = detection.attr("command", command);
        if !socks4a {
            return Verdict::Matched(detection.attr("dest", format!("{a}.{b}.{c}.{d}:{port}")));
        }
        let host = rest.get(user_end + 1..).unwrap_or_default();
        match field(host, |b| b.is_ascii_alphanumeric() || b"-._:".contains(&b)) {
            Field::End(0) | Field::Bad => Verdict::NoMatch,
            Field::More => Verdict::NeedMore(0),
            Field::End(end) => {
                let host = host.get(..end).unwrap_or_default().to_ascii_lowercase();
                let host = String::from_utf8_lossy(&host);
                // An IPv6 literal is bracketed, as in a URL authority.
                let dest = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
                Verdict::Matched(detection.attr("dest", dest))
            }
        }
    }
}

/// How a NUL-terminated field at the start of some bytes reads.
enum Field {
    /// Its length; the NUL is at this index.
    End(usize),
    /// No NUL yet, and the field can still be valid.
    More,
    /// Too long, or a byte the field may not hold.
    Bad,
}

fn field(bytes: &[u8], allowed: impl Fn(u8) -> bool) -> Field {
    for (i, &b) in bytes.iter().enumerate() {
        if b == 0 {
            return Field::End(i);
        }
        if i >= MAX_FIELD || !allowed(b) {
            return Field::Bad;
        }
    }
    if bytes.len() > MAX_FIELD { Field::Bad } else { Field::More }
}

refractium_plugin_sdk::export_detector!(Socks4);

#[cfg(test)]
mod tests;
