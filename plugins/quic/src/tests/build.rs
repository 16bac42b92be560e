//! Test-only builders: a small TLS ClientHello, QUIC frames, and client
//! Initial packets sealed with the real Initial keys (the inverse of
//! `crypto::InitialKeys::open`), so tests can shape flights freely.

use crate::crypto::Secrets;
use crate::header::{VERSION_1, VERSION_2, Version};
use aes::Aes128;
use aes::cipher::{BlockEncrypt, KeyInit};
use aes_gcm::Aes128Gcm;
use aes_gcm::aead::AeadInPlace;
use refractium_plugin_sdk::crypto::TAG_LEN;

pub const DCID: &[u8] = b"\x11\x22\x33\x44\x55\x66\x77\x88";

/// A QUIC variable-length integer in its shortest form.
pub fn varint(value: u64) -> Vec<u8> {
    match value {
        0..=0x3f => vec![value as u8],
        0x40..=0x3fff => (value as u16 | 0x4000).to_be_bytes().to_vec(),
        0x4000..=0x3fff_ffff => (value as u32 | 0x8000_0000).to_be_bytes().to_vec(),
        _ => (value | 0xc000_0000_0000_0000).to_be_bytes().to_vec(),
    }
}

fn vec8(body: &[u8]) -> Vec<u8> {
    [&[u8::try_from(body.len()).expect("fits u8")][..], body].concat()
}

fn vec16(body: &[u8]) -> Vec<u8> {
    [&u16::try_from(body.len()).expect("fits u16").to_be_bytes()[..], body].concat()
}

/// A TLS 1.3 ClientHello handshake message (header included) with an SNI,
/// ALPN names and a padding extension of `padding` bytes.
pub fn client_hello(sni: &str, alpn: &[&str], padding: usize) -> Vec<u8> {
    let mut body = vec![0x03, 0x03];
    body.extend([0x5a; 32]);
    body.extend([0, 0, 2, 0x13, 0x01, 1, 0]);
    let alpn: Vec<u8> = alpn.iter().flat_map(|name| vec8(name.as_bytes())).collect();
    let extensions = [
        (0x0000u16, vec16(&[&[0u8][..], &vec16(sni.as_bytes())].concat())),
        (0x0010, vec16(&alpn)),
        (0x002b, vec8(&[0x03, 0x04])),
        (0x0015, vec![0; padding]),
    ];
    let extensions: Vec<u8> =
        extensions.iter().flat_map(|(kind, ext)| [&kind.to_be_bytes()[..], &vec16(ext)].concat()).collect();
    body.extend(vec16(&extensions));
    let len = u32::try_from(body.len()).expect("fits u32").to_be_bytes();
    [&[1u8][..], &len[1..], &body].concat()
}

/// A CRYPTO frame.
pub fn crypto(offset: usize, data: &[u8]) -> Vec<u8> {
    [&[0x06][..], &varint(offset as u64), &varint(data.len() as u64), data].concat()
}

/// CRYPTO frames carrying `message` in pieces of `size` bytes, last first.
pub fn crypto_reversed(message: &[u8], size: usize) -> Vec<u8> {
    let pieces: Vec<Vec<u8>> = message.chunks(size).enumerate().map(|(i, c)| crypto(i * size, c)).collect();
    pieces.into_iter().rev().flatten().collect()
}

/// An ACK frame with one extra range and ECN counts, then a PING.
pub fn ack_and_ping() -> Vec<u8> {
    [0x03, 0x05, 0x00, 0x01, 0x01, 0x01, 0x00, 0x01, 0x02, 0x03, 0x01].to_vec()
}

/// A client Initial packet under construction.
pub struct Initial {
    pub version: Version,
    pub dcid: Vec<u8>,
    pub scid: Vec<u8>,
    pub token: Vec<u8>,
    pub pn: u64,
    pub pn_len: usize,
    pub payload: Vec<u8>,
}

impl Initial {
    pub fn new(version: Version, pn: u64, payload: Vec<u8>) -> Self {
        Initial { version, dcid: DCID.to_vec(), scid: vec![0xab; 4], token: Vec::new(), pn, pn_len: 2, payload }
    }

    /// Pad the payload with PADDING frames so the packet is `len` bytes.
    pub fn padded_to(mut self, len: usize) -> Self {
        let size = self.seal(DCID).len();
        self.payload.extend(vec![0; len.saturating_sub(size)]);
        self
    }

    /// Protect the packet with the Initial keys of `key_dcid`.
    pub fn seal(&self, key_dcid: &[u8]) -> Vec<u8> {
        let (wire, type_bits) = match self.version {
            Version::V1 => (VERSION_1, 0u8),
            Version::V2 => (VERSION_2, 1u8),
        };
        let mut payload = self.payload.clone();
        // Room for the header protection sample.
        payload.resize(payload.len().max(4), 0);
        let pn_len = self.pn_len.clamp(1, 4);
        let mut header = vec![0xc0 | type_bits << 4 | (pn_len as u8 - 1)];
        header.extend(wire.to_be_bytes());
        header.extend(vec8(&self.dcid));
        header.extend(vec8(&self.scid));
        header.extend(varint(self.token.len() as u64));
        header.extend(&self.token);
        // Always a 2-byte Length, so padding does not change the header size.
        let length = u16::try_from(pn_len + payload.len() + TAG_LEN).ok().filter(|&n| n < 0x4000).expect("length");
        header.extend((length | 0x4000).to_be_bytes());
        let pn_offset = header.len();
        header.extend(&self.pn.to_be_bytes()[8 - pn_len..]);
        let secrets = Secrets::client_initial(self.version, key_dcid).expect("keys");
        let mut nonce = secrets.iv;
        for (n, p) in nonce.iter_mut().rev().zip(self.pn.to_be_bytes().iter().rev()) {
            *n ^= p;
        }
        let aead = Aes128Gcm::new_from_slice(&secrets.key).expect("key");
        let tag = aead.encrypt_in_place_detached(&nonce.into(), &header, &mut payload).expect("seal");
        let mut packet = [header, payload, tag.to_vec()].concat();
        let sample: [u8; 16] = packet[pn_offset + 4..pn_offset + 20].try_into().expect("sample");
        let mut mask = aes::Block::from(sample);
        Aes128::new_from_slice(&secrets.hp).expect("hp").encrypt_block(&mut mask);
        packet[0] ^= mask[0] & 0x0f;
        for i in 0..pn_len {
            packet[pn_offset + i] ^= mask[1 + i];
        }
        packet
    }

    pub fn build(&self) -> Vec<u8> {
        self.seal(DCID)
    }
}

/// A long-header packet of another type (v1 0-RTT) with an opaque payload.
pub fn zero_rtt(len: usize) -> Vec<u8> {
    let mut packet = vec![0xd1];
    packet.extend(VERSION_1.to_be_bytes());
    packet.extend(vec8(DCID));
    packet.extend(vec8(&[0xab; 4]));
    packet.extend((len as u16 | 0x4000).to_be_bytes());
    packet.extend(vec![0x77; len]);
    packet
}
