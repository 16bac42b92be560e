//! Built-in `quic` detector (UDP only): recognises the client's first flight
//! of QUIC version 1 (RFC 9000/9001) or version 2 (RFC 9369). It checks the
//! long header of the first Initial packet and the 1200-byte minimum of the
//! first datagram, derives the client's Initial keys from the Destination
//! Connection ID, decrypts the Initial packets (coalesced ones too, and those
//! of later datagrams, since a large ClientHello spans several), reassembles
//! the CRYPTO stream and reads the ClientHello with the SDK's TLS reader
//! ([`refractium_plugin_sdk::tls::parse_client_hello_handshake`]). A match
//! carries the SNI, the ALPN list and the attributes `version` (`1` or `2`)
//! and `dcid` (hex); it is only given once a packet authenticated, so a
//! header alone never matches.

mod crypto;
mod frames;
mod header;
#[cfg(test)]
mod tests;

use crypto::InitialKeys;
use frames::{CryptoStream, FramesEnd, MAX_CRYPTO_LEN, read_frames};
use header::{LongHeader, PacketType, Version};
use refractium_plugin_sdk::tls::{ClientHello, HelloParse, parse_client_hello_handshake};
use refractium_plugin_sdk::{Detection, Detector, Peer, Transport, Verdict};

/// Smallest datagram carrying a client's Initial packet (RFC 9000 §14.1).
pub const MIN_DATAGRAM_LEN: usize = 1200;
/// Shortest Destination Connection ID of a client's first Initial packet
/// (RFC 9000 §7.2).
pub const MIN_FIRST_DCID_LEN: usize = 8;
/// Most long-header packets read before giving up on an incomplete hello.
pub const MAX_PACKETS: usize = 16;

pub struct Quic;

impl Detector for Quic {
    const NAME: &'static str = "quic";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn new(_config: &str) -> Result<Self, String> {
        Ok(Quic)
    }

    fn detect(&self, data: &[u8], peer: &Peer) -> Verdict {
        match peer.transport {
            Transport::Udp => detect_datagrams(data),
            Transport::Tcp => Verdict::NoMatch,
        }
    }
}

/// Judge `data`, the client's datagrams so far, concatenated in order.
pub fn detect_datagrams(data: &[u8]) -> Verdict {
    let Some(first) = LongHeader::parse(data, 0) else {
        return Verdict::NoMatch;
    };
    // The first call sees the first datagram alone: it must be padded. Later
    // calls only come after a first call that passed this check.
    if first.packet_type != PacketType::Initial
        || first.dcid.len() < MIN_FIRST_DCID_LEN
        || data.len() < MIN_DATAGRAM_LEN
    {
        return Verdict::NoMatch;
    }
    let Some(keys) = InitialKeys::new(first.version, first.dcid) else {
        return Verdict::NoMatch;
    };
    let mut stream = CryptoStream::default();
    let mut largest = None;
    let mut packets = 0;
    let mut pos = 0;
    loop {
        // Zero bytes between and after packets are datagram padding.
        while data.get(pos) == Some(&0) {
            pos += 1;
        }
        if pos >= data.len() {
            return Verdict::NeedMore(0);
        }
        let header = match LongHeader::parse(data, pos) {
            Some(header) if header.version == first.version => header,
            // Not a packet we can walk over: look for the next datagram.
            _ => match resync(data, pos + 1, &first) {
                Some(next) => {
                    pos = next;
                    continue;
                }
                None => return Verdict::NeedMore(0),
            },
        };
        if packets == MAX_PACKETS {
            return Verdict::NoMatch;
        }
        packets += 1;
        pos = header.end;
        if header.packet_type != PacketType::Initial {
            continue;
        }
        let Some(opened) = keys.open(data, &header, largest) else {
            if packets == 1 {
                return Verdict::NoMatch;
            }
            // Not this connection's packet, or a Length that lied: look for
            // the next packet of the connection inside its bytes.
            match resync(data, header.start + 1, &first) {
                Some(next) => pos = next,
                None => return Verdict::NeedMore(0),
            }
            continue;
        };
        largest = largest.max(Some(opened.packet_number));
        let end = read_frames(&opened.payload, &mut stream);
        match parse_client_hello_handshake(stream.contiguous()) {
            HelloParse::Complete(hello) => return Verdict::Matched(detection(&hello, first.version, first.dcid)),
            HelloParse::NeedMore(want) if want <= MAX_CRYPTO_LEN && end != FramesEnd::Closed => {}
            _ => return Verdict::NoMatch,
        }
    }
}

/// The start of the next packet of the same connection after bytes that are
/// not a packet (a datagram tail we cannot walk): a long header with the
/// first packet's version and Destination Connection ID.
fn resync(data: &[u8], from: usize, first: &LongHeader<'_>) -> Option<usize> {
    let version = match first.version {
        Version::V1 => header::VERSION_1,
        Version::V2 => header::VERSION_2,
    };
    let dcid_len = u8::try_from(first.dcid.len()).ok()?;
    let signature = [&version.to_be_bytes()[..], &[dcid_len], first.dcid].concat();
    let tail = data.get(from..)?;
    tail.windows(1 + signature.len())
        .position(|w| w.first().is_some_and(|&b| b & 0xc0 == 0xc0) && w.get(1..) == Some(&signature[..]))
        .map(|at| from + at)
}

/// The detection a complete ClientHello gives.
fn detection(hello: &ClientHello, version: Version, dcid: &[u8]) -> Detection {
    let mut detection = Detection::new("quic").alpn(hello.alpn.iter().cloned());
    if let Some(sni) = &hello.sni {
        detection = detection.sni(sni.clone());
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let dcid: String =
        dcid.iter().flat_map(|b| [HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]).map(char::from).collect();
    detection.attr("version", version.name()).attr("dcid", dcid)
}

refractium_plugin_sdk::export_detector!(Quic);
