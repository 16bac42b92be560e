//! Built-in `openvpn` detector: the control-channel hard reset an OpenVPN
//! client sends first. Over TCP each packet has a 2-byte length prefix; over
//! UDP the first datagram is the packet. Accepted opcodes, key id 0:
//! `P_CONTROL_HARD_RESET_CLIENT_V2` (7), `..._V3` (10, tls-crypt-v2) and,
//! over UDP only, the legacy `..._V1` (1). Accepted layouts, after the opcode
//! byte and a non-zero 8-byte session id:
//!
//! - none: an empty ack array and message packet-id 0 (14 bytes in all);
//! - tls-auth: an HMAC of 16, 20, 28, 32, 48 or 64 bytes, the replay
//!   packet-id (1..=255: retransmissions count up) and a plausible net time
//!   (2015..2040), then the same empty ack array and message packet-id 0;
//! - tls-crypt (V2 only): packet-id and net time as above, a 32-byte tag and
//!   the 5 encrypted bytes of an empty ack array and packet-id (54 bytes);
//! - tls-crypt-v2 (V3 only): packet-id (OpenVPN 2.6 sets the high byte to
//!   0x0F for early negotiation) and net time, a 32-byte tag, 5 to 261
//!   encrypted bytes, then the wrapped client key, whose last two bytes are
//!   its own length, 290..=1024.
//!
//! The packet's size (the TCP length prefix, or the first datagram's size)
//! must be the layout's exactly.
//!
//! Attributes: `opcode` (`hard-reset-client-v1`, `-v2`, `-v3`) and
//! `wrapping` (`none`, `tls-auth`, `tls-crypt`, `tls-crypt-v2`).
//!
//! Over TCP it refuses on the first byte when the length cannot be one of
//! those, and waits (`NeedMore` with the exact length, at most 1336 bytes)
//! for the whole packet. Over UDP it decides on the first datagram.
//! Limits: a tls-auth digest of another size, a client clock outside
//! 2015..2040, or a reset carrying a payload in the clear are not matched.

use refractium_plugin_sdk::{Detection, Detector, Peer, Transport, Verdict};

const OP_V1: u8 = 1;
const OP_V2: u8 = 7;
const OP_V3: u8 = 10;
/// Opcode byte (opcode << 3 | key id 0) and name.
const OPCODES: [(u8, &str); 3] =
    [(OP_V1 << 3, "hard-reset-client-v1"), (OP_V2 << 3, "hard-reset-client-v2"), (OP_V3 << 3, "hard-reset-client-v3")];
/// Opcode byte and session id.
const HEAD: usize = 9;
/// Plain packet: head, ack array length 0, message packet-id 0.
const PLAIN_LEN: usize = HEAD + 1 + 4;
/// Replay packet-id and net time.
const PID_LEN: usize = 8;
/// tls-auth HMAC sizes: MD5, SHA1, SHA224, SHA256, SHA384, SHA512.
const HMAC_SIZES: [usize; 6] = [16, 20, 28, 32, 48, 64];
/// tls-crypt tag (HMAC-SHA256) and the encrypted empty ack array + packet-id.
const TAG_LEN: usize = 32;
const CRYPT_BODY: usize = 5;
const CRYPT_LEN: usize = HEAD + PID_LEN + TAG_LEN + CRYPT_BODY;
/// tls-crypt-v2: extra encrypted payload allowed, wrapped key bounds
/// (tag + 2048-bit key + length, and OpenVPN's maximum).
const V3_MAX_EXTRA: usize = 256;
const WKC_MIN: usize = TAG_LEN + 256 + 2;
const WKC_MAX: usize = 1024;
const V3_MIN: usize = CRYPT_LEN + WKC_MIN;
const V3_MAX: usize = CRYPT_LEN + V3_MAX_EXTRA + WKC_MAX;
/// Plausible client clocks: 2015-01-01 to 2040-01-01.
const MIN_TIME: u32 = 1_420_070_400;
const MAX_TIME: u32 = 2_208_988_800;
/// High byte OpenVPN 2.6 sets in the tls-crypt-v2 packet-id (EARLY_NEG_START).
const EARLY_NEG: u32 = 0x0f00_0000;

pub struct Openvpn;

impl Detector for Openvpn {
    const NAME: &'static str = "openvpn";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn new(_config: &str) -> Result<Self, String> {
        Ok(Openvpn)
    }

    fn detect(&self, data: &[u8], peer: &Peer) -> Verdict {
        match peer.transport {
            Transport::Tcp => detect_tcp(data),
            Transport::Udp => detect_udp(data),
        }
    }
}

/// The packet sizes a TCP length prefix may give for `op` (V2 or V3).
fn tcp_len_ok(op: u8, len: usize) -> bool {
    match op {
        OP_V2 => len == PLAIN_LEN || len == CRYPT_LEN || HMAC_SIZES.iter().any(|h| len == tls_auth_len(*h)),
        OP_V3 => (V3_MIN..=V3_MAX).contains(&len),
        _ => false,
    }
}

fn tls_auth_len(hmac: usize) -> usize {
    HEAD + hmac + PID_LEN + 1 + 4
}

/// Decide on the bytes a TCP client sent so far.
pub fn detect_tcp(data: &[u8]) -> Verdict {
    let max_high = V3_MAX >> 8;
    match data.first() {
        None => return Verdict::NeedMore(2),
        Some(&high) if usize::from(high) > max_high => return Verdict::NoMatch,
        Some(_) => {}
    }
    let Some(len) = be16(data, 0) else { return Verdict::NeedMore(2) };
    if ![OP_V2, OP_V3].iter().any(|&op| tcp_len_ok(op, len)) {
        return Verdict::NoMatch;
    }
    match data.get(2) {
        None => return Verdict::NeedMore(len + 2),
        Some(&op) if op & 7 != 0 || !tcp_len_ok(op >> 3, len) => return Verdict::NoMatch,
        Some(_) => {}
    }
    let Some(packet) = data.get(2..len + 2) else { return Verdict::NeedMore(len + 2) };
    match packet_verdict(packet) {
        Some(detection) => Verdict::Matched(detection),
        None => Verdict::NoMatch,
    }
}

/// Decide on the first datagram of a UDP client.
pub fn detect_udp(data: &[u8]) -> Verdict {
    match packet_verdict(data) {
        Some(detection) => Verdict::Matched(detection),
        None => Verdict::NoMatch,
    }
}

/// Check one whole hard-reset packet (its length prefix removed).
fn packet_verdict(packet: &[u8]) -> Option<Detection> {
    let &first = packet.first()?;
    let &(_, name) = OPCODES.iter().find(|(byte, _)| *byte == first)?;
    let op = first >> 3;
    // A session id of zero means "none" to OpenVPN.
    if packet.get(1..HEAD)?.iter().all(|&b| b == 0) {
        return None;
    }
    let fits = |len: usize| packet.len() == len;
    let wrapping = if op == OP_V3 {
        tls_crypt_v2(packet).then_some("tls-crypt-v2")?
    } else if fits(PLAIN_LEN) && empty_reliable(packet, HEAD) {
        "none"
    } else if op == OP_V2 && fits(CRYPT_LEN) && replay_id(packet, HEAD, false) {
        "tls-crypt"
    } else if HMAC_SIZES.iter().any(|&h| fits(tls_auth_len(h)) && tls_auth(packet, h)) {
        "tls-auth"
    } else {
        return None;
    };
    Some(Detection::new("openvpn").attr("opcode", name).attr("wrapping", wrapping))
}

/// An empty ack array and message packet-id 0 at `at`.
fn empty_reliable(packet: &[u8], at: usize) -> bool {
    packet.get(at..at + 5).is_some_and(|b| b.iter().all(|&b| b == 0))
}

/// A tls-auth layout with an HMAC of `hmac` bytes.
fn tls_auth(packet: &[u8], hmac: usize) -> bool {
    replay_id(packet, HEAD + hmac, false) && empty_reliable(packet, HEAD + hmac + PID_LEN)
}

/// A plausible replay packet-id and net time at `at`: the first packets of
/// a session (1..=255), with OpenVPN 2.6's early-negotiation marker when
/// `early_neg` allows it.
fn replay_id(packet: &[u8], at: usize, early_neg: bool) -> bool {
    let (Some(id), Some(time)) = (be32(packet, at), be32(packet, at + 4)) else { return false };
    let id = if early_neg && id & 0xff00_0000 == EARLY_NEG { id & 0x00ff_ffff } else { id };
    (1..=255).contains(&id) && (MIN_TIME..MAX_TIME).contains(&time)
}

/// tls-crypt-v2: replay id, then tag and payload, and the wrapped client
/// key at the end of the packet carrying its own length.
fn tls_crypt_v2(packet: &[u8]) -> bool {
    if !(V3_MIN..=V3_MAX).contains(&packet.len()) || !replay_id(packet, HEAD, true) {
        return false;
    }
    let Some(wkc) = packet.len().checked_sub(2).and_then(|at| be16(packet, at)) else { return false };
    let payload = packet.len().saturating_sub(HEAD + PID_LEN + TAG_LEN).saturating_sub(wkc);
    (WKC_MIN..=WKC_MAX).contains(&wkc)
        && HEAD + PID_LEN + TAG_LEN + wkc <= packet.len()
        && (CRYPT_BODY..=CRYPT_BODY + V3_MAX_EXTRA).contains(&payload)
}

fn be16(data: &[u8], at: usize) -> Option<usize> {
    let bytes: [u8; 2] = data.get(at..at.checked_add(2)?)?.try_into().ok()?;
    Some(usize::from(u16::from_be_bytes(bytes)))
}

fn be32(data: &[u8], at: usize) -> Option<u32> {
    let bytes: [u8; 4] = data.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_be_bytes(bytes))
}

refractium_plugin_sdk::export_detector!(Openvpn);

#[cfg(test)]
mod tests;
