//! Frames of a decrypted Initial packet (RFC 9000 §12.4, §19) and the
//! reassembly of the CRYPTO stream they carry. Only the frames allowed in
//! Initial packets are read: PADDING, PING, ACK, CRYPTO and
//! CONNECTION_CLOSE. CRYPTO data may come in any order, repeated, or spread
//! over several packets; [`CryptoStream`] keeps the first
//! [`MAX_CRYPTO_LEN`] bytes of the stream and knows how long its gap-free
//! prefix is.

use crate::header::Reader;

/// Largest CRYPTO stream offset kept: a ClientHello handshake message with
/// the longest body the SDK accepts.
pub const MAX_CRYPTO_LEN: usize = 4 + refractium_plugin_sdk::tls::MAX_HELLO_LEN;

const FRAME_PADDING: u64 = 0x00;
const FRAME_PING: u64 = 0x01;
const FRAME_ACK: u64 = 0x02;
const FRAME_ACK_ECN: u64 = 0x03;
const FRAME_CRYPTO: u64 = 0x06;
const FRAME_CONNECTION_CLOSE: u64 = 0x1c;

/// How reading a packet's frames ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramesEnd {
    /// Every frame was read.
    Done,
    /// The client closes the connection: nothing more will come.
    Closed,
    /// A frame that is malformed or not allowed in an Initial packet; the
    /// frames before it were kept.
    Invalid,
}

/// The CRYPTO stream of the Initial packet number space, reassembled.
#[derive(Debug, Default)]
pub struct CryptoStream {
    data: Vec<u8>,
    /// `filled[i]` is true when byte `i` of `data` has been received.
    filled: Vec<bool>,
    /// Length of the gap-free prefix.
    contiguous: usize,
}

impl CryptoStream {
    /// The gap-free prefix of the stream received so far.
    pub fn contiguous(&self) -> &[u8] {
        self.data.get(..self.contiguous).unwrap_or_default()
    }

    /// Store `bytes` at stream offset `offset`; bytes already received are
    /// kept as they were, bytes beyond [`MAX_CRYPTO_LEN`] are dropped (a
    /// hello that long is refused anyway).
    fn insert(&mut self, offset: u64, bytes: &[u8]) {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let end = start.saturating_add(bytes.len()).min(MAX_CRYPTO_LEN);
        if start >= end {
            return;
        }
        let bytes = bytes.get(..end - start).unwrap_or_default();
        if start >= self.data.len() {
            // Nothing received at or past `start` yet (frames in order): append.
            self.data.resize(start, 0);
            self.filled.resize(start, false);
            self.data.extend_from_slice(bytes);
            self.filled.resize(end, true);
        } else {
            if self.data.len() < end {
                self.data.resize(end, 0);
                self.filled.resize(end, false);
            }
            let slots = self.data.iter_mut().zip(self.filled.iter_mut()).skip(start);
            for ((slot, filled), &byte) in slots.zip(bytes) {
                if !*filled {
                    *slot = byte;
                    *filled = true;
                }
            }
        }
        let rest = self.filled.get(self.contiguous..).unwrap_or_default();
        self.contiguous += rest.iter().position(|&f| !f).unwrap_or(rest.len());
    }
}

/// Read the frames of a decrypted Initial payload, adding CRYPTO data to
/// `stream`.
pub fn read_frames(payload: &[u8], stream: &mut CryptoStream) -> FramesEnd {
    let Some(mut r) = Reader::new(payload, 0) else {
        return FramesEnd::Invalid;
    };
    while !r.is_empty() {
        let end = match r.varint() {
            // A datagram is padded to 1,200 bytes with PADDING frames: skip
            // the whole run at once rather than as hundreds of frames.
            Some(FRAME_PADDING) => {
                r.skip_zeros();
                None
            }
            Some(FRAME_PING) => None,
            Some(kind @ (FRAME_ACK | FRAME_ACK_ECN)) => skip_ack(&mut r, kind == FRAME_ACK_ECN),
            Some(FRAME_CRYPTO) => read_crypto(&mut r, stream),
            Some(FRAME_CONNECTION_CLOSE) => Some(FramesEnd::Closed),
            _ => Some(FramesEnd::Invalid),
        };
        if let Some(end) = end {
            return end;
        }
    }
    FramesEnd::Done
}

/// Skip an ACK frame after its type (RFC 9000 §19.3). Every ACK range takes
/// at least two bytes, so a lying range count ends with the payload.
fn skip_ack(r: &mut Reader<'_>, ecn: bool) -> Option<FramesEnd> {
    fn skip(r: &mut Reader<'_>, ecn: bool) -> Option<()> {
        r.varint()?; // largest acknowledged
        r.varint()?; // ACK delay
        let mut ranges = r.varint()?;
        r.varint()?; // first ACK range
        while ranges > 0 {
            r.varint()?; // gap
            r.varint()?; // ACK range length
            ranges -= 1;
        }
        if ecn {
            for _ in 0..3 {
                r.varint()?; // ECT0, ECT1, ECN-CE counts
            }
        }
        Some(())
    }
    match skip(r, ecn) {
        Some(()) => None,
        None => Some(FramesEnd::Invalid),
    }
}

/// Read a CRYPTO frame after its type (RFC 9000 §19.6).
fn read_crypto(r: &mut Reader<'_>, stream: &mut CryptoStream) -> Option<FramesEnd> {
    fn read<'a>(r: &mut Reader<'a>) -> Option<(u64, &'a [u8])> {
        let offset = r.varint()?;
        let len = usize::try_from(r.varint()?).ok()?;
        Some((offset, r.bytes(len)?))
    }
    match read(r) {
        Some((offset, bytes)) => {
            stream.insert(offset, bytes);
            None
        }
        None => Some(FramesEnd::Invalid),
    }
}

#[cfg(test)]
mod tests {
    use super::CryptoStream;

    /// In order, with a gap, overlapping and repeated: the first copy of each
    /// byte is kept and the gap-free prefix ends at the first missing byte.
    #[test]
    fn crypto_stream_reassembles_any_order() {
        let mut s = CryptoStream::default();
        s.insert(0, b"abc");
        assert_eq!(s.contiguous(), b"abc");
        s.insert(6, b"ghi");
        assert_eq!(s.contiguous(), b"abc", "bytes 3..6 are missing");
        s.insert(2, b"XdeY");
        assert_eq!(s.contiguous(), b"abcdeYghi", "byte 2 was already there, 3..6 fill the gap");
        s.insert(9, b"");
        s.insert(8, b"Zj");
        assert_eq!(s.contiguous(), b"abcdeYghij");
        s.insert(20, b"u");
        s.insert(u64::MAX, b"v");
        assert_eq!(s.contiguous(), b"abcdeYghij");
    }
}
