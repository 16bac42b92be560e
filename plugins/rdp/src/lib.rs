//! Built-in `rdp` detector: the X.224 Connection Request an RDP client sends
//! first over TCP (MS-RDPBCGR 2.2.1.1): a TPKT header (version 3, reserved 0,
//! length 11..=259, RFC 1006), an X.224 CR TPDU whose length indicator
//! matches the TPKT length (code 0xE0 with credit 0, DST-REF 0, class 0 with
//! no options), then optionally a cookie `Cookie: mstshash=NAME` or a routing
//! token, a line of printable ASCII ended by CR LF, and optionally an RDP
//! Negotiation Request (type 1, length 8, flags with no unknown bits,
//! requested protocols with no unknown bits), itself optionally followed by
//! its correlation info (type 6, length 36) when its flag says so. Nothing
//! else may fill the TPDU.
//!
//! Attributes: `cookie` (the mstshash value) or `routing_token` (the whole
//! token line, e.g. `Cookie: msts=...` or a load-balance string), and
//! `protocols`, the requested security protocols (`rdp` for standard RDP
//! security, else a comma list of `ssl`, `hybrid`, `rdstls`, `hybrid_ex`,
//! `rdsaad`), when a negotiation request is present.
//!
//! It waits for the whole TPDU (`NeedMore` with the TPKT length, at most 259
//! bytes) and refuses on the first byte unless it is 3.

use refractium_plugin_sdk::{Detection, Detector, Peer, Transport, Verdict};

/// TPKT header and the fixed part of the X.224 CR TPDU.
const FIXED: usize = 11;
/// The longest TPKT a CR can fill: the X.224 length indicator is one byte
/// (at most 254) and counts the TPDU less itself.
pub const MAX_TPKT: usize = 4 + 1 + 254;
/// Prefix of the cookie.
const COOKIE: &str = "Cookie: mstshash=";
/// RDP_NEG_REQ and RDP_NEG_CORRELATION_INFO.
const NEG_REQ: u8 = 0x01;
const NEG_REQ_LEN: usize = 8;
const CORRELATION_INFO: u8 = 0x06;
const CORRELATION_INFO_LEN: usize = 36;
/// Negotiation flags: restricted admin, redirected authentication,
/// correlation info present.
const FLAGS_KNOWN: u8 = 0x01 | 0x02 | 0x08;
const FLAG_CORRELATION: u8 = 0x08;
/// Requested protocol bits and their names (MS-RDPBCGR 2.2.1.1.1).
const PROTOCOLS: [(u32, &str); 5] =
    [(0x01, "ssl"), (0x02, "hybrid"), (0x04, "rdstls"), (0x08, "hybrid_ex"), (0x10, "rdsaad")];

pub struct Rdp;

impl Detector for Rdp {
    const NAME: &'static str = "rdp";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn new(_config: &str) -> Result<Self, String> {
        Ok(Rdp)
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
    // Byte by byte, the fixed header: refuse as soon as one is wrong.
    for (i, &byte) in data.iter().enumerate().take(FIXED) {
        let ok = match i {
            0 => byte == 3,
            1 | 6 | 7 | 10 => byte == 0,
            // Length high byte: at most 259 = 0x0103.
            2 => byte <= 1,
            3 => tpkt_len(data).is_none_or(|len| (FIXED..=MAX_TPKT).contains(&len)),
            4 => tpkt_len(data).is_some_and(|len| usize::from(byte).checked_add(5) == Some(len)),
            5 => byte == 0xE0,
            // SRC-REF: any.
            _ => true,
        };
        if !ok {
            return Verdict::NoMatch;
        }
    }
    let Some(len) = tpkt_len(data) else { return Verdict::NeedMore(FIXED) };
    let Some(tpdu) = data.get(..len) else { return Verdict::NeedMore(len) };
    match user_data(tpdu.get(FIXED..).unwrap_or_default()) {
        Some(detection) => Verdict::Matched(detection),
        None => Verdict::NoMatch,
    }
}

/// The TPKT length, once its two bytes are there.
fn tpkt_len(data: &[u8]) -> Option<usize> {
    let bytes: [u8; 2] = data.get(2..4)?.try_into().ok()?;
    Some(usize::from(u16::from_be_bytes(bytes)))
}

/// Parse the CR's variable part: optional cookie or token line, optional
/// negotiation request (and correlation info). `None` when invalid.
fn user_data(mut rest: &[u8]) -> Option<Detection> {
    let mut detection = Detection::new("rdp");
    // A token line unless the rest is exactly a negotiation request.
    if !rest.is_empty() && neg_req(rest).is_none() {
        let end = rest.windows(2).position(|w| w == b"\r\n")?;
        let line = rest.get(..end)?;
        if line.is_empty() || !line.iter().all(|&b| b == b' ' || b.is_ascii_graphic()) {
            return None;
        }
        let text: String = line.iter().map(|&b| char::from(b)).collect();
        detection = match text.strip_prefix(COOKIE) {
            Some(cookie) => detection.attr("cookie", cookie),
            None => detection.attr("routing_token", text),
        };
        rest = rest.get(end.checked_add(2)?..)?;
    }
    if !rest.is_empty() {
        detection = detection.attr("protocols", neg_req(rest)?);
    }
    Some(detection)
}

/// Check an RDP_NEG_REQ filling `data` (with its correlation info when
/// flagged) and name its requested protocols.
fn neg_req(data: &[u8]) -> Option<String> {
    let (req, rest) = data.split_at_checked(NEG_REQ_LEN)?;
    let [kind, flags, len_lo, len_hi, p0, p1, p2, p3] = *req else { return None };
    if kind != NEG_REQ || flags & !FLAGS_KNOWN != 0 || u16::from_le_bytes([len_lo, len_hi]) != 8 {
        return None;
    }
    let protocols = u32::from_le_bytes([p0, p1, p2, p3]);
    if protocols & !PROTOCOLS.iter().fold(0, |all, (bit, _)| all | bit) != 0 {
        return None;
    }
    if flags & FLAG_CORRELATION != 0 {
        // Type 6, flags 0, length 36, a 16-byte id whose first and last
        // bytes are never 0x00 or 0xF4, then 16 reserved zero bytes.
        let header = [CORRELATION_INFO, 0, 36, 0];
        let (id, reserved) = (rest.get(4..20)?, rest.get(20..)?);
        if rest.len() != CORRELATION_INFO_LEN || rest.get(..4) != Some(&header[..]) || reserved.iter().any(|&b| b != 0)
        {
            return None;
        }
        if [id.first(), id.last()].iter().any(|b| matches!(b, None | Some(0x00 | 0xF4))) {
            return None;
        }
    } else if !rest.is_empty() {
        return None;
    }
    if protocols == 0 {
        return Some("rdp".to_string());
    }
    let names: Vec<&str> = PROTOCOLS.iter().filter(|(bit, _)| protocols & bit != 0).map(|&(_, name)| name).collect();
    Some(names.join(","))
}

refractium_plugin_sdk::export_detector!(Rdp);

#[cfg(test)]
mod tests;
