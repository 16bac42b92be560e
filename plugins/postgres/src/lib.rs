//! Built-in `postgres` detector: the first message a PostgreSQL frontend
//! sends over TCP (protocol 3, "Start-up" in the PostgreSQL docs): an Int32
//! length (itself included) and an Int32 code, then the body.
//!
//! Matched: SSLRequest (length 8, code 80877103), GSSENCRequest (length 8,
//! code 80877104), CancelRequest (code 80877102, length 16, or up to 268 for
//! the longer cancel keys of protocol 3.2) and StartupMessage for protocol
//! 3.0 to 3.2 (length 9..=[`MAX_STARTUP`]) whose body is NUL-terminated
//! key/value pairs closed by an extra NUL, exactly filling the length, with
//! ASCII keys and a `user` key, as every server requires.
//!
//! Attributes: `request` (`ssl`, `gssenc`, `cancel` or `startup`); for a
//! startup message also `protocol` (`3.0`), `user`, and `database` and
//! `application_name` when present (values lossily decoded as UTF-8).
//!
//! It waits for the whole message (`NeedMore` with its exact length, at most
//! [`MAX_STARTUP`] bytes) and refuses on the first byte that cannot fit: the
//! length's high bytes must be zero. Protocol 2 start-up packets, and a
//! direct-TLS client (which is `tls` with ALPN `postgresql`), do not match.

use refractium_plugin_sdk::{Detection, Detector, Peer, Transport, Verdict};

/// Largest StartupMessage accepted, length field included (the server's own
/// limit is 10000).
pub const MAX_STARTUP: usize = 10_000;

/// Request codes.
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;
/// Protocol 3.0 as a StartupMessage code (major << 16 | minor).
const PROTOCOL_3_0: u32 = 3 << 16;
/// Highest minor version accepted (3.2 is PostgreSQL 18's).
const MAX_MINOR: u32 = 2;
/// CancelRequest length bounds: pid and a 4-byte key (protocol 3.0), or a
/// key of up to 256 bytes (protocol 3.2).
const CANCEL_MIN: usize = 16;
const CANCEL_MAX: usize = 12 + 256;

pub struct Postgres;

impl Detector for Postgres {
    const NAME: &'static str = "postgres";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn new(_config: &str) -> Result<Self, String> {
        Ok(Postgres)
    }

    fn detect(&self, data: &[u8], peer: &Peer) -> Verdict {
        if peer.transport != Transport::Tcp {
            return Verdict::NoMatch;
        }
        detect(data)
    }
}

/// Decide on the bytes a TCP client sent so far.
pub fn detect(data: &[u8]) -> Verdict {
    // The length is at most MAX_STARTUP (0x2710): its first two bytes are 0
    // and the third at most 0x27, which refuses most protocols at once.
    let refused = match *data {
        [a, ..] if a != 0 => true,
        [_, b, ..] if b != 0 => true,
        [_, _, c, ..] => usize::from(c) << 8 > MAX_STARTUP,
        _ => false,
    };
    if refused {
        return Verdict::NoMatch;
    }
    let (Some(len), Some(code)) = (be32(data, 0), be32(data, 4)) else {
        return partial_code(data);
    };
    let Ok(len) = usize::try_from(len) else { return Verdict::NoMatch };
    let Some(request) = request(code, len) else { return Verdict::NoMatch };
    let Some(message) = data.get(..len) else { return Verdict::NeedMore(len) };
    let detection = Detection::new("postgres").attr("request", request);
    if request != "startup" {
        return Verdict::Matched(detection);
    }
    let minor = code & 0xffff;
    match startup(message.get(8..).unwrap_or_default(), detection.attr("protocol", format!("3.{minor}"))) {
        Some(detection) => Verdict::Matched(detection),
        None => Verdict::NoMatch,
    }
}

/// Fewer than 8 bytes: wait while length and code so far can still be a
/// known request.
fn partial_code(data: &[u8]) -> Verdict {
    let len = be32(data, 0).and_then(|len| usize::try_from(len).ok());
    let code_bytes = data.get(4..).unwrap_or_default();
    let possible = [SSL_REQUEST, GSSENC_REQUEST, CANCEL_REQUEST, PROTOCOL_3_0]
        .into_iter()
        .filter(|&code| len.is_none_or(|len| request(code, len).is_some()))
        .any(|code| code.to_be_bytes().starts_with(code_bytes));
    if possible { Verdict::NeedMore(8) } else { Verdict::NoMatch }
}

/// The request a code and length make, if valid together.
fn request(code: u32, len: usize) -> Option<&'static str> {
    match code {
        SSL_REQUEST if len == 8 => Some("ssl"),
        GSSENC_REQUEST if len == 8 => Some("gssenc"),
        CANCEL_REQUEST if (CANCEL_MIN..=CANCEL_MAX).contains(&len) => Some("cancel"),
        c if is_v3(c) && (9..=MAX_STARTUP).contains(&len) => Some("startup"),
        _ => None,
    }
}

fn is_v3(code: u32) -> bool {
    code >> 16 == 3 && code & 0xffff <= MAX_MINOR
}

/// A big-endian u32 at `at`.
fn be32(data: &[u8], at: usize) -> Option<u32> {
    let bytes: [u8; 4] = data.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_be_bytes(bytes))
}

/// Check a StartupMessage body (after length and code) and add its
/// attributes; `None` when it is not a valid parameter list with a user.
fn startup(body: &[u8], mut detection: Detection) -> Option<Detection> {
    let mut rest = body;
    let mut found: [Option<&[u8]>; 3] = [None; 3];
    loop {
        let (key, after) = cstr(rest)?;
        if key.is_empty() {
            // The list's terminator must be the message's last byte.
            if !after.is_empty() {
                return None;
            }
            break;
        }
        let (value, after) = cstr(after)?;
        if !key.iter().all(u8::is_ascii_graphic) {
            return None;
        }
        if let Some(slot) = ATTRIBUTES.iter().position(|&name| name.as_bytes() == key) {
            let entry = found.get_mut(slot)?;
            entry.get_or_insert(value);
        }
        rest = after;
    }
    // Every server refuses a start-up without a user name.
    if found.first().copied().flatten().is_none_or(<[u8]>::is_empty) {
        return None;
    }
    for (name, value) in ATTRIBUTES.iter().zip(found) {
        if let Some(value) = value {
            detection = detection.attr(*name, String::from_utf8_lossy(value));
        }
    }
    Some(detection)
}

/// Start-up parameters reported as attributes, `user` first.
const ATTRIBUTES: [&str; 3] = ["user", "database", "application_name"];

/// A NUL-terminated string at the start of `data`, and what follows its NUL.
fn cstr(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = data.iter().position(|&b| b == 0)?;
    Some((data.get(..end)?, data.get(end.checked_add(1)?..)?))
}

refractium_plugin_sdk::export_detector!(Postgres);

#[cfg(test)]
mod tests;
