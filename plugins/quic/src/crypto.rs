//! Initial packet protection (RFC 9001 §5, RFC 9369 §3.3): the client's
//! Initial keys derived from the Destination Connection ID of its first
//! Initial packet with HKDF-SHA256, header protection removed with AES-128
//! in ECB mode, and the payload opened with AEAD_AES_128_GCM. Only the
//! client's direction is needed: a detector never sees server packets.
//!
//! The cipher work goes through the SDK's [`crypto`], which the proxy
//! computes natively with the CPU's AES and SHA instructions: inside the
//! sandbox the same AES-GCM took ≈ 20 µs per 1,200-byte datagram.

use crate::header::{LongHeader, Version};
use refractium_plugin_sdk::crypto;

/// `initial_salt` of QUIC version 1 (RFC 9001 §5.2).
const SALT_V1: [u8; 20] = [
    0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17, 0x9a, 0xe6, 0xa4, 0xc8, 0x0c, 0xad, 0xcc, 0xbb, 0x7f,
    0x0a,
];
/// `initial_salt` of QUIC version 2 (RFC 9369 §3.3.1).
const SALT_V2: [u8; 20] = [
    0x0d, 0xed, 0xe3, 0xde, 0xf7, 0x00, 0xa6, 0xdb, 0x81, 0x93, 0x81, 0xbe, 0x6e, 0x26, 0x9d, 0xcb, 0xf9, 0xbd, 0x2e,
    0xd9,
];
/// Length of the header protection sample.
const SAMPLE_LEN: usize = 16;

/// Raw key material of one direction, for tests against published values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secrets {
    pub initial_secret: [u8; 32],
    pub client_initial_secret: [u8; 32],
    pub key: [u8; 16],
    pub iv: [u8; 12],
    pub hp: [u8; 16],
}

impl Secrets {
    /// The client's Initial secrets for `dcid` (RFC 9001 §5.2).
    pub fn client_initial(version: Version, dcid: &[u8]) -> Option<Secrets> {
        let (salt, key_label, iv_label, hp_label) = match version {
            Version::V1 => (&SALT_V1, "quic key", "quic iv", "quic hp"),
            Version::V2 => (&SALT_V2, "quicv2 key", "quicv2 iv", "quicv2 hp"),
        };
        let initial_secret = crypto::hkdf_sha256_extract(salt, dcid);
        let client_initial_secret: [u8; 32] = expand_label(&initial_secret, "client in")?;
        Some(Secrets {
            initial_secret,
            client_initial_secret,
            key: expand_label(&client_initial_secret, key_label)?,
            iv: expand_label(&client_initial_secret, iv_label)?,
            hp: expand_label(&client_initial_secret, hp_label)?,
        })
    }
}

/// HKDF-Expand-Label(secret, label, "", N) of TLS 1.3 (RFC 8446 §7.1).
fn expand_label<const N: usize>(secret: &[u8; 32], label: &str) -> Option<[u8; N]> {
    let full = [b"tls13 ", label.as_bytes()].concat();
    let mut info = u16::try_from(N).ok()?.to_be_bytes().to_vec();
    info.push(u8::try_from(full.len()).ok()?);
    info.extend_from_slice(&full);
    info.push(0); // empty context
    crypto::hkdf_sha256_expand(secret, &info, N)?.try_into().ok()
}

/// Ready-to-use client Initial keys.
pub struct InitialKeys {
    key: [u8; 16],
    iv: [u8; 12],
    hp: [u8; 16],
}

/// A packet with its protection removed.
pub struct Opened {
    pub packet_number: u64,
    pub payload: Vec<u8>,
}

impl InitialKeys {
    /// The client's keys for a connection whose first Initial packet has the
    /// Destination Connection ID `dcid`.
    pub fn new(version: Version, dcid: &[u8]) -> Option<InitialKeys> {
        let secrets = Secrets::client_initial(version, dcid)?;
        Some(InitialKeys { key: secrets.key, iv: secrets.iv, hp: secrets.hp })
    }

    /// Remove header protection from the packet `header` describes and open
    /// its payload; `largest` is the largest packet number opened so far in
    /// the Initial space. `None` when the packet does not authenticate.
    pub fn open(&self, data: &[u8], header: &LongHeader<'_>, largest: Option<u64>) -> Option<Opened> {
        let sample_at = header.pn_offset.checked_add(4)?;
        let sample = data.get(sample_at..sample_at + SAMPLE_LEN)?;
        let mask = crypto::aes128_ecb_encrypt(&self.hp, sample)?;
        let first = data.get(header.start)? ^ (mask.first()? & 0x0f);
        let pn_len = usize::from(first & 0x03) + 1;
        let payload_at = header.pn_offset + pn_len;
        // The authenticated header: unmasked first byte and packet number.
        let mut aad = data.get(header.start..payload_at)?.to_vec();
        *aad.first_mut()? = first;
        let mut truncated = 0u64;
        for (i, byte) in aad.iter_mut().skip(header.pn_offset - header.start).enumerate() {
            *byte ^= mask.get(1 + i)?;
            truncated = truncated << 8 | u64::from(*byte);
        }
        let packet_number = decode_packet_number(largest, truncated, pn_len);
        // Shorter than a tag, or a header past its own end: `None` below.
        let sealed = data.get(payload_at..header.end)?;
        let mut nonce = self.iv;
        for (n, p) in nonce.iter_mut().rev().zip(packet_number.to_be_bytes().iter().rev()) {
            *n ^= p;
        }
        let payload = crypto::aes128_gcm_open(&self.key, &nonce, &aad, sealed)?;
        Some(Opened { packet_number, payload })
    }
}

/// The full packet number from its `len`-byte truncation (RFC 9000
/// Appendix A.3).
pub fn decode_packet_number(largest: Option<u64>, truncated: u64, len: usize) -> u64 {
    let expected = largest.map_or(0, |pn| pn.saturating_add(1));
    let window = 1u64 << (8 * len.clamp(1, 4));
    let half = window / 2;
    let candidate = (expected & !(window - 1)) | truncated;
    if candidate.saturating_add(half) <= expected && candidate < (1u64 << 62) - window {
        candidate + window
    } else if candidate > expected.saturating_add(half) && candidate >= window {
        candidate - window
    } else {
        candidate
    }
}
