//! Built-in `dns` detector: one DNS message a client sends (RFC 1035 §4.1):
//! over UDP the first datagram, over TCP the message behind its 2-byte length
//! prefix (RFC 1035 §4.2.2, length 12..=65535 and consistent). Accepted: QR=0;
//! opcode QUERY (one question), STATUS, NOTIFY or UPDATE (at most one
//! question/zone); not truncated; Z=0; RCODE 0; answers only in NOTIFY and
//! UPDATE, authority records only in UPDATE, at most two additional records
//! (an EDNS(0) OPT, then a TSIG or SIG(0)); a question name without
//! compression (labels 1–63 bytes, ≤ 255 in all), QTYPE ≠ 0, QCLASS IN, CH, HS
//! or ANY; every record well-formed, and nothing after them (on TCP, bytes
//! after the message are the client's next message and are not looked at).
//!
//! Attributes: `qname` (lowercase, no trailing dot, `.` for the root, bytes
//! outside printable ASCII and `.`/`\` inside a label as `\DDD`) and `qtype`
//! (mnemonic such as `A`, `AAAA`, `MX`, `HTTPS`, else the number), when the
//! message has a question.
//!
//! Limits: over UDP it decides on the first datagram and never waits. Over
//! TCP it waits for the whole message when it ends within [`TCP_WAIT`] bytes;
//! a longer one (a large UPDATE) matches once its header and question are
//! read, checking only the records that have arrived.

mod message;
mod names;

use message::{Error, Parsed};
use refractium_plugin_sdk::{Detection, Detector, Peer, Transport, Verdict};

/// Most bytes (length prefix included) a TCP client is waited for.
pub const TCP_WAIT: usize = 4096;

pub struct Dns;

impl Detector for Dns {
    const NAME: &'static str = "dns";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn new(_config: &str) -> Result<Self, String> {
        Ok(Dns)
    }

    fn detect(&self, data: &[u8], peer: &Peer) -> Verdict {
        match peer.transport {
            Transport::Udp => detect_udp(data),
            Transport::Tcp => detect_tcp(data),
        }
    }
}

/// A datagram is one whole message.
fn detect_udp(data: &[u8]) -> Verdict {
    let parsed = message::parse(data, data.len());
    match parsed.result {
        Ok(()) => Verdict::Matched(detection(&parsed)),
        Err(_) => Verdict::NoMatch,
    }
}

/// A 2-byte length, then the message.
fn detect_tcp(data: &[u8]) -> Verdict {
    let Some(&[hi, lo]) = data.get(..2) else { return Verdict::NeedMore(2) };
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    if len < 12 {
        return Verdict::NoMatch;
    }
    let total = len + 2;
    let body = data.get(2..total.min(data.len())).unwrap_or_default();
    let parsed = message::parse(body, len);
    match parsed.result {
        Ok(()) => Verdict::Matched(detection(&parsed)),
        Err(Error::Invalid) => Verdict::NoMatch,
        // Header incomplete: ask for the next field, to refuse early.
        Err(Error::Incomplete(need)) if parsed.header.is_none() => Verdict::NeedMore(need + 2),
        Err(Error::Incomplete(_)) if total <= TCP_WAIT => Verdict::NeedMore(total),
        // Too long to wait for whole: the header and question must do.
        Err(Error::Incomplete(_)) if parsed.question.is_some() => Verdict::Matched(detection(&parsed)),
        Err(Error::Incomplete(need)) => Verdict::NeedMore(need + 2),
    }
}

fn detection(parsed: &Parsed) -> Detection {
    let detection = Detection::new("dns");
    match parsed.question.as_ref().and_then(Option::as_ref) {
        Some(question) => {
            detection.attr("qname", names::qname(&question.labels)).attr("qtype", names::qtype(question.qtype))
        }
        None => detection,
    }
}

refractium_plugin_sdk::export_detector!(Dns);

#[cfg(test)]
mod tests;
