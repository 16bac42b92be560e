//! TLS ClientHello reader: [`parse_client_hello`] turns the first bytes a
//! client sent into a [`ClientHello`] (SNI, ALPN, supported versions, ECH),
//! says how many bytes it still needs, or says the bytes are not TLS.
//! [`parse_client_hello_handshake`] reads the same hello without the record
//! layer, as QUIC carries it in CRYPTO frames.
//!
//! It reassembles a handshake message spread over several records, reads a
//! hello larger than one TCP segment, and accepts any prefix of a hello
//! (bytes may arrive one at a time). It is pure safe Rust, bounds every
//! length it reads, and never panics, whatever the input.

use std::borrow::Cow;

/// Record content type `handshake`.
const CONTENT_HANDSHAKE: u8 = 22;
/// Handshake message type `client_hello`.
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
/// Largest record fragment a peer may send in plaintext (RFC 8446 §5.1).
const MAX_RECORD_LEN: usize = 1 << 14;
/// Largest ClientHello body accepted; anything longer is treated as not TLS.
pub const MAX_HELLO_LEN: usize = 64 * 1024;
/// ALPN names kept from a hello, and their bytes in all; later names are
/// read and ignored. Browsers offer two or three. The proxy refuses a
/// detection of more than 64 names or 16 KiB of strings (a failed call, and
/// a detector that keeps failing is disabled), so a hello offering more must
/// not make the detector's call fail (found by fuzzing).
pub const MAX_ALPN_NAMES: usize = 64;
/// See [`MAX_ALPN_NAMES`].
pub const MAX_ALPN_BYTES: usize = 8 * 1024;
/// Smallest possible ClientHello body: version, random, empty session id,
/// one cipher suite, one compression method.
const MIN_HELLO_LEN: usize = 2 + 32 + 1 + 2 + 2 + 1 + 1;

const EXT_SERVER_NAME: u16 = 0x0000;
const EXT_ALPN: u16 = 0x0010;
const EXT_SUPPORTED_VERSIONS: u16 = 0x002b;
const EXT_ENCRYPTED_CLIENT_HELLO: u16 = 0xfe0d;

/// The outcome of reading the first bytes of a connection as TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelloParse {
    /// A complete, well-formed ClientHello.
    Complete(ClientHello),
    /// A valid prefix of a ClientHello: the total number of bytes (from the
    /// first byte) a complete hello needs, as far as the headers read so far
    /// tell; a lower bound, always greater than the input's length, exact
    /// once the handshake header is in and the records announce it all.
    /// Bytes that arrive before then may still turn the answer to `NotTls`.
    NeedMore(usize),
    /// Not a TLS ClientHello, whatever bytes follow.
    NotTls,
}

/// What a ClientHello tells about the connection.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ClientHello {
    /// `legacy_version` of the hello (0x0303 for TLS 1.2 and 1.3).
    pub legacy_version: u16,
    /// The `host_name` of the server_name extension, lowercased without a
    /// trailing dot; `None` when absent, empty or not printable ASCII.
    pub sni: Option<String>,
    /// Application protocols offered (ALPN), in the client's order; names that
    /// are empty or not UTF-8 are skipped, and only the first
    /// [`MAX_ALPN_NAMES`] (within [`MAX_ALPN_BYTES`]) are kept.
    pub alpn: Vec<String>,
    /// Versions of the supported_versions extension, GREASE values removed.
    pub supported_versions: Vec<u16>,
    /// The client offered Encrypted Client Hello (extension 0xfe0d): `sni` is
    /// then the public (outer) name, not the real destination.
    pub ech: bool,
    /// Cipher suites offered, in the client's order.
    pub cipher_suites: Vec<u16>,
    /// Extension types, in the client's order.
    pub extensions: Vec<u16>,
}

impl ClientHello {
    /// The highest TLS version offered, as the wire value: the best of
    /// supported_versions when present, else `legacy_version`.
    pub fn max_version(&self) -> u16 {
        self.supported_versions.iter().copied().max().unwrap_or(self.legacy_version)
    }
}

/// Read `data`, every byte the client sent so far, as TLS records carrying a
/// ClientHello. See [`HelloParse`] for the answers.
pub fn parse_client_hello(data: &[u8]) -> HelloParse {
    match reassemble(data) {
        Ok(message) => match parse_body(message.get(4..).unwrap_or_default()) {
            Some(hello) => HelloParse::Complete(hello),
            None => HelloParse::NotTls,
        },
        Err(Stop::NeedMore(n)) => HelloParse::NeedMore(n),
        Err(Stop::NotTls) => HelloParse::NotTls,
    }
}

/// Read `msg` as a bare TLS handshake message carrying a ClientHello: the
/// 4-byte handshake header and the body, without the record layer, as QUIC
/// carries it in CRYPTO frames (RFC 9001 §4). Bytes after the message are
/// ignored. [`HelloParse::NeedMore`] gives the total length of the message
/// (from its first byte), exact once the 4-byte header is in.
pub fn parse_client_hello_handshake(msg: &[u8]) -> HelloParse {
    if check_message_prefix(msg).is_err() {
        return HelloParse::NotTls;
    }
    let want = wanted(msg);
    match msg.get(4..want) {
        Some(body) => match parse_body(body) {
            Some(hello) => HelloParse::Complete(hello),
            None => HelloParse::NotTls,
        },
        _ => HelloParse::NeedMore(want.max(msg.len() + 1)),
    }
}

/// Why reading stopped before a complete handshake message.
enum Stop {
    NeedMore(usize),
    NotTls,
}

/// Collect the ClientHello handshake message (header included) from the
/// records at the start of `data`; `Err` carries the answer when it is not
/// all there or not TLS.
fn reassemble(data: &[u8]) -> Result<Cow<'_, [u8]>, Stop> {
    let mut message: Cow<'_, [u8]> = Cow::Borrowed(&[]);
    // Handshake bytes announced by the record headers read so far.
    let mut announced = 0usize;
    let mut pos = 0usize;
    loop {
        let header = data.get(pos..).unwrap_or_default();
        check_record_header(header)?;
        let Some(&[_, _, _, hi, lo]) = header.get(..5) else {
            // The next record header is incomplete.
            return Err(need_more(data.len(), pos, announced, wanted(&message)));
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        if len == 0 || len > MAX_RECORD_LEN {
            return Err(Stop::NotTls);
        }
        let start = pos + 5;
        let end = start + len;
        let fragment = data.get(start..end.min(data.len())).unwrap_or_default();
        if message.is_empty() {
            message = Cow::Borrowed(fragment);
        } else {
            message.to_mut().extend_from_slice(fragment);
        }
        check_message_prefix(&message)?;
        let want = wanted(&message);
        if message.len() >= 4 && message.len() >= want {
            return Ok(match message {
                Cow::Borrowed(m) => Cow::Borrowed(m.get(..want).unwrap_or(m)),
                Cow::Owned(mut m) => {
                    m.truncate(want);
                    Cow::Owned(m)
                }
            });
        }
        let before = announced;
        announced += len;
        if end > data.len() {
            // This record is incomplete: if it announces enough bytes, the
            // message ends inside it.
            return Err(if announced >= want {
                Stop::NeedMore((start + (want - before)).max(data.len() + 1))
            } else {
                need_more(data.len(), end, announced, want)
            });
        }
        pos = end;
    }
}

/// Bytes of handshake message wanted: the header, then header plus body.
fn wanted(message: &[u8]) -> usize {
    match message.get(..4) {
        Some(&[_, a, b, c]) => 4 + (usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c)),
        _ => 4,
    }
}

/// The bytes needed when the records up to `records_end` carry `announced`
/// handshake bytes and `want` are needed: at least one more record header and
/// the missing bytes.
fn need_more(len: usize, records_end: usize, announced: usize, want: usize) -> Stop {
    let missing = want.saturating_sub(announced).max(1);
    Stop::NeedMore((records_end + 5 + missing).max(len + 1))
}

/// Check the bytes present of a record header (possibly fewer than five).
fn check_record_header(header: &[u8]) -> Result<(), Stop> {
    let bad = match header {
        [t, ..] if *t != CONTENT_HANDSHAKE => true,
        [_, major, ..] if *major != 3 => true,
        [_, _, minor, ..] if *minor > 4 => true,
        // Record length above 2^14: the high byte alone gives it away.
        [_, _, _, hi, ..] if usize::from(*hi) << 8 > MAX_RECORD_LEN => true,
        _ => false,
    };
    if bad { Err(Stop::NotTls) } else { Ok(()) }
}

/// Reject a handshake message early from the bytes present so far.
fn check_message_prefix(message: &[u8]) -> Result<(), Stop> {
    let len = wanted(message) - 4;
    let bad = match message {
        [t, ..] if *t != HANDSHAKE_CLIENT_HELLO => true,
        [_, _, _, _, ..] if !(MIN_HELLO_LEN..=MAX_HELLO_LEN).contains(&len) => true,
        [_, _, _, _, major, ..] if *major != 3 => true,
        // session_id is at most 32 bytes.
        [_, _, _, _, _, _, rest @ ..] if rest.get(32).is_some_and(|&n| n > 32) => true,
        _ => false,
    };
    if bad { Err(Stop::NotTls) } else { Ok(()) }
}

/// A cursor over a byte slice whose reads fail instead of panicking.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.0.split_at_checked(n)?;
        self.0 = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.bytes(1)?.first().copied()
    }

    fn u16(&mut self) -> Option<u16> {
        match self.bytes(2)? {
            &[a, b] => Some(u16::from_be_bytes([a, b])),
            _ => None,
        }
    }

    /// A vector with a one-byte length prefix.
    fn vec8(&mut self) -> Option<Reader<'a>> {
        let n = self.u8()?;
        self.bytes(usize::from(n)).map(Reader)
    }

    /// A vector with a two-byte length prefix.
    fn vec16(&mut self) -> Option<Reader<'a>> {
        let n = self.u16()?;
        self.bytes(usize::from(n)).map(Reader)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Parse a ClientHello body (RFC 8446 §4.1.2, RFC 5246 §7.4.1.2).
fn parse_body(body: &[u8]) -> Option<ClientHello> {
    let mut r = Reader(body);
    let mut hello = ClientHello { legacy_version: r.u16()?, ..ClientHello::default() };
    if hello.legacy_version >> 8 != 3 {
        return None;
    }
    r.bytes(32)?; // random
    if r.vec8()?.0.len() > 32 {
        return None; // session_id
    }
    let mut suites = r.vec16()?;
    if suites.is_empty() || suites.0.len() % 2 != 0 {
        return None;
    }
    hello.cipher_suites.reserve_exact(suites.0.len() / 2);
    while !suites.is_empty() {
        hello.cipher_suites.push(suites.u16()?);
    }
    if r.vec8()?.is_empty() {
        return None; // compression_methods
    }
    if r.is_empty() {
        return Some(hello); // SSLv3-style hello without extensions
    }
    let mut extensions = r.vec16()?;
    if !r.is_empty() {
        return None;
    }
    // Every extension takes at least 4 bytes; real hellos carry 10 to 20.
    hello.extensions.reserve_exact((extensions.0.len() / 4).min(32));
    while !extensions.is_empty() {
        let kind = extensions.u16()?;
        let mut body = extensions.vec16()?;
        let first = !hello.extensions.contains(&kind);
        hello.extensions.push(kind);
        match kind {
            _ if !first => {}
            EXT_SERVER_NAME => hello.sni = parse_sni(&mut body)?,
            EXT_ALPN => hello.alpn = parse_alpn(&mut body)?,
            EXT_SUPPORTED_VERSIONS => {
                let mut list = body.vec8()?;
                while !list.is_empty() {
                    let version = list.u16()?;
                    if !is_grease(version) {
                        hello.supported_versions.push(version);
                    }
                }
            }
            EXT_ENCRYPTED_CLIENT_HELLO => hello.ech = true,
            _ => {}
        }
    }
    Some(hello)
}

/// The server_name extension (RFC 6066 §3): the first `host_name` entry.
/// `None` when malformed, `Some(None)` when there is no usable name.
fn parse_sni(body: &mut Reader<'_>) -> Option<Option<String>> {
    let mut list = body.vec16()?;
    let mut found = None;
    while !list.is_empty() {
        let kind = list.u8()?;
        let name = list.vec16()?.0;
        if kind == 0 && found.is_none() {
            found = Some(normalize_host(name));
        }
    }
    Some(found.flatten())
}

/// A server name as routes see it: lowercase, no trailing dot, printable
/// ASCII without spaces, 1 to 253 bytes.
fn normalize_host(name: &[u8]) -> Option<String> {
    let name = name.strip_suffix(b".").unwrap_or(name);
    if name.is_empty() || name.len() > 253 || !name.iter().all(u8::is_ascii_graphic) {
        return None;
    }
    // Printable ASCII, so the bytes are UTF-8 as they are.
    String::from_utf8(name.to_ascii_lowercase()).ok()
}

/// The ALPN extension (RFC 7301 §3.1).
fn parse_alpn(body: &mut Reader<'_>) -> Option<Vec<String>> {
    let mut list = body.vec16()?;
    let mut names = Vec::new();
    let mut bytes = 0;
    while !list.is_empty() {
        let name = list.vec8()?.0;
        if let Ok(name) = std::str::from_utf8(name)
            && !name.is_empty()
            && names.len() < MAX_ALPN_NAMES
            && bytes + name.len() <= MAX_ALPN_BYTES
        {
            bytes += name.len();
            names.push(name.to_string());
        }
    }
    Some(names)
}

/// GREASE values (RFC 8701) are 0x?a?a with equal bytes.
fn is_grease(value: u16) -> bool {
    value & 0x0f0f == 0x0a0a && value >> 8 == value & 0xff
}

#[cfg(test)]
mod tests;
