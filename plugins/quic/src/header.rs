//! QUIC long headers (RFC 9000 §17.2, RFC 9369 §3.2): the variable-length
//! integer reader, the two decryptable versions, and [`LongHeader::parse`],
//! which reads the unprotected part of a long-header packet inside the bytes
//! a client sent and says where the packet number and the packet end are.
//! Every read is checked; a header that does not fit is `None`.

/// QUIC version 1 (RFC 9000).
pub const VERSION_1: u32 = 0x0000_0001;
/// QUIC version 2 (RFC 9369).
pub const VERSION_2: u32 = 0x6b33_43cf;
/// Longest connection ID of QUIC versions 1 and 2.
pub const MAX_CID_LEN: usize = 20;
/// Longest packet accepted. A client's Initial fits in one datagram, and
/// clients send far smaller ones; the bound caps the decryption work a call
/// can be made to do.
pub const MAX_PACKET_LEN: usize = 16 * 1024;

/// A QUIC version whose Initial packets can be decrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl Version {
    /// The version a wire value names, if it is one of ours.
    pub fn from_wire(value: u32) -> Option<Version> {
        match value {
            VERSION_1 => Some(Version::V1),
            VERSION_2 => Some(Version::V2),
            _ => None,
        }
    }

    /// The value of the `version` attribute.
    pub fn name(self) -> &'static str {
        match self {
            Version::V1 => "1",
            Version::V2 => "2",
        }
    }

    /// The long packet type of a first byte; v2 rotates the type bits.
    fn packet_type(self, first: u8) -> PacketType {
        let bits = (first >> 4) & 0x03;
        let bits = match self {
            Version::V1 => bits,
            Version::V2 => bits.wrapping_sub(1) & 0x03,
        };
        match bits {
            0 => PacketType::Initial,
            1 => PacketType::ZeroRtt,
            2 => PacketType::Handshake,
            _ => PacketType::Retry,
        }
    }
}

/// Long packet types, independent of their version-specific encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketType {
    Initial,
    ZeroRtt,
    Handshake,
    Retry,
}

/// The readable part of a long-header packet found in `data` at `start`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LongHeader<'a> {
    pub version: Version,
    pub packet_type: PacketType,
    pub dcid: &'a [u8],
    /// Offset of the first byte of the packet in `data`.
    pub start: usize,
    /// Offset of the (protected) packet number in `data`.
    pub pn_offset: usize,
    /// Offset just past the packet (its Length field counts from
    /// `pn_offset`).
    pub end: usize,
}

impl<'a> LongHeader<'a> {
    /// Read the long header of the packet at `start` in `data`: header form
    /// and fixed bit set, version 1 or 2, not a Retry, connection IDs of at
    /// most 20 bytes, the token of an Initial, and a Length that stays inside
    /// `data`, leaves room for the header protection sample (4 bytes of
    /// packet number and a 16-byte sample, RFC 9001 §5.4.2) and keeps the
    /// packet within [`MAX_PACKET_LEN`].
    pub fn parse(data: &'a [u8], start: usize) -> Option<LongHeader<'a>> {
        let mut r = Reader::new(data, start)?;
        let first = r.u8()?;
        if first & 0xc0 != 0xc0 {
            return None;
        }
        let version = Version::from_wire(u32::from_be_bytes(r.array()?))?;
        let packet_type = version.packet_type(first);
        if packet_type == PacketType::Retry {
            return None;
        }
        let dcid = r.cid()?;
        r.cid()?; // source connection ID
        if packet_type == PacketType::Initial {
            let token_len = usize::try_from(r.varint()?).ok()?;
            r.bytes(token_len)?;
        }
        let length = usize::try_from(r.varint()?).ok()?;
        let pn_offset = r.pos;
        if length < 4 + 16 {
            return None;
        }
        let end = pn_offset.checked_add(length).filter(|&end| end <= data.len() && end - start <= MAX_PACKET_LEN)?;
        Some(LongHeader { version, packet_type, dcid, start, pn_offset, end })
    }
}

/// A cursor over `data` whose reads fail instead of panicking.
pub struct Reader<'a> {
    data: &'a [u8],
    pub pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at `pos`, which must be inside `data` or at its end.
    pub fn new(data: &'a [u8], pos: usize) -> Option<Reader<'a>> {
        (pos <= data.len()).then_some(Reader { data, pos })
    }

    /// True when every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    /// Step over a run of zero bytes (PADDING frames, one byte each).
    pub fn skip_zeros(&mut self) {
        let rest = self.data.get(self.pos..).unwrap_or_default();
        self.pos += rest.iter().position(|&b| b != 0).unwrap_or(rest.len());
    }

    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let bytes = self.data.get(self.pos..end)?;
        self.pos = end;
        Some(bytes)
    }

    pub fn u8(&mut self) -> Option<u8> {
        self.bytes(1)?.first().copied()
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.bytes(N)?.try_into().ok()
    }

    /// A connection ID with its one-byte length, at most 20 bytes.
    fn cid(&mut self) -> Option<&'a [u8]> {
        let len = usize::from(self.u8()?);
        if len > MAX_CID_LEN {
            return None;
        }
        self.bytes(len)
    }

    /// A variable-length integer (RFC 9000 §16).
    pub fn varint(&mut self) -> Option<u64> {
        let first = self.u8()?;
        let extra = (1usize << (first >> 6)) - 1;
        let rest = self.bytes(extra)?;
        Some(rest.iter().fold(u64::from(first & 0x3f), |value, &b| value << 8 | u64::from(b)))
    }
}
