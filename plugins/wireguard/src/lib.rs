//! Built-in `wireguard` detector: the handshake initiation a WireGuard peer
//! sends first over UDP: 148 bytes, message type 1 and three reserved zero
//! bytes, the sender index, the unencrypted ephemeral key, the encrypted
//! static key and timestamp, mac1 and mac2 (zero when no cookie is used).
//!
//! Besides the header it checks what a random fill would rarely have and a
//! real initiation always has: the ephemeral key is a canonical X25519
//! public key (top bit clear) and not zero, and mac1 is not zero. A DNS
//! query whose id and flags happen to read `01 00 00 00` is told apart by
//! its section counts.
//!
//! Attributes: `sender`, the sender index as 8 hex digits (the index as
//! WireGuard stores it, little-endian).
//!
//! It decides on the first datagram: `data` holds the first 148-byte
//! datagram and maybe later ones after it, so only the first 148 bytes are
//! looked at. Shorter data, other message types (a response or transport
//! data from a peer that was already talking) and any TCP client do not
//! match.

use refractium_plugin_sdk::{Detection, Detector, Peer, Transport, Verdict};

/// Size of a handshake initiation.
pub const INITIATION_LEN: usize = 148;
/// Message type 1 (initiation) and three reserved bytes.
const HEADER: [u8; 4] = [1, 0, 0, 0];

pub struct Wireguard;

impl Detector for Wireguard {
    const NAME: &'static str = "wireguard";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn new(_config: &str) -> Result<Self, String> {
        Ok(Wireguard)
    }

    fn detect(&self, data: &[u8], peer: &Peer) -> Verdict {
        if peer.transport != Transport::Udp {
            return Verdict::NoMatch;
        }
        match initiation(data) {
            Some(sender) => Verdict::Matched(Detection::new("wireguard").attr("sender", format!("{sender:08x}"))),
            None => Verdict::NoMatch,
        }
    }
}

/// The sender index of a handshake initiation at the start of `data`.
fn initiation(data: &[u8]) -> Option<u32> {
    let message = data.get(..INITIATION_LEN)?;
    let (header, rest) = message.split_first_chunk::<4>()?;
    let (sender, rest) = rest.split_first_chunk::<4>()?;
    let (ephemeral, rest) = rest.split_first_chunk::<32>()?;
    // Encrypted static key (32 + 16) and timestamp (12 + 16), then the MACs.
    let (_, macs) = rest.split_first_chunk::<76>()?;
    let (mac1, _mac2) = macs.split_first_chunk::<16>()?;
    if *header != HEADER || looks_like_dns(message) {
        return None;
    }
    let canonical = ephemeral.last().is_some_and(|&b| b & 0x80 == 0);
    if !canonical || is_zero(ephemeral) || is_zero(mac1) {
        return None;
    }
    Some(u32::from_le_bytes(*sender))
}

fn is_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

/// A DNS query with id 0x0100 and flags 0 has the same first four bytes;
/// its question count of 1 and empty answer and authority sections (with at
/// most one additional record) follow where the sender index and the
/// ephemeral key's first bytes would be.
fn looks_like_dns(message: &[u8]) -> bool {
    matches!(message.get(4..12), Some([0, 1, 0, 0, 0, 0, 0, 0 | 1]))
}

refractium_plugin_sdk::export_detector!(Wireguard);

#[cfg(test)]
mod tests;
