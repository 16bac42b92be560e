//! Built-in `xmpp` detector: the stream header an XMPP client or server sends
//! first over TCP (RFC 6120 §4.7): an optional UTF-8 byte order mark, a
//! little whitespace, an optional XML declaration (`<?xml version=...?>`),
//! whitespace, then the `<stream:stream ...>` start tag with
//! `xmlns:stream='http://etherx.jabber.org/streams'` and a default namespace
//! of `jabber:client`, `jabber:server` or `jabber:component:accept`
//! (XEP-0114). The unprefixed form `<stream xmlns='http://etherx...'>` is
//! accepted too when a prefix is bound to one of those namespaces. The tag
//! must be well-formed: quoted attribute values without `<`, whitespace
//! between attributes, no attribute twice, not self-closing.
//!
//! Attributes: `ns` (`client`, `server` or `component`), `to` (the domain
//! asked for, the five predefined XML entities decoded) and `version` (e.g.
//! `1.0`) when present.
//!
//! It waits (`NeedMore(0)`) until the start tag's `>` arrives, for at most
//! [`MAX_HEADER`] bytes, and refuses at once when the first byte after the
//! optional BOM and whitespace is not `<`, or when the tag's name is not
//! `stream:stream` or `stream`. XMPP over WebSocket (`<open xmlns=
//! 'urn:ietf:params:xml:ns:xmpp-framing'>`, inside HTTP) and direct-TLS XMPP
//! (which is `tls`) are not this detector's.

use refractium_plugin_sdk::{Detection, Detector, Peer, Transport, Verdict};

/// Most bytes waited for the start tag to end.
pub const MAX_HEADER: usize = 4096;
/// Most whitespace bytes before the declaration or the tag, each.
const MAX_SPACE: usize = 64;
const BOM: &[u8] = b"\xEF\xBB\xBF";
const STREAMS_NS: &str = "http://etherx.jabber.org/streams";
/// Content namespaces and the `ns` attribute they give.
const CONTENT_NS: [(&str, &str); 3] =
    [("jabber:client", "client"), ("jabber:server", "server"), ("jabber:component:accept", "component")];
/// Longest attribute name, and most attributes, looked at.
const MAX_NAME: usize = 64;
const MAX_ATTRIBUTES: usize = 32;

pub struct Xmpp;

impl Detector for Xmpp {
    const NAME: &'static str = "xmpp";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn new(_config: &str) -> Result<Self, String> {
        Ok(Xmpp)
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
    let bounded = data.get(..MAX_HEADER).unwrap_or(data);
    match header(&mut Cursor { data: bounded, pos: 0 }) {
        Ok(detection) => Verdict::Matched(detection),
        Err(Stop::More) if data.len() < MAX_HEADER => Verdict::NeedMore(0),
        Err(_) => Verdict::NoMatch,
    }
}

/// Why parsing stopped short of a verdict.
#[derive(Debug, PartialEq)]
enum Stop {
    /// The bytes so far are a valid beginning.
    More,
    /// The bytes cannot be a stream header.
    Bad,
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Result<u8, Stop> {
        self.data.get(self.pos).copied().ok_or(Stop::More)
    }

    fn bump(&mut self) {
        self.pos = self.pos.saturating_add(1);
    }

    /// Consume `literal`, byte by byte: `More` if the data ends inside it.
    fn expect(&mut self, literal: &[u8]) -> Result<(), Stop> {
        for &want in literal {
            if self.peek()? != want {
                return Err(Stop::Bad);
            }
            self.bump();
        }
        Ok(())
    }

    /// Skip whitespace, at most [`MAX_SPACE`] bytes; return how many.
    fn space(&mut self) -> Result<usize, Stop> {
        let mut count = 0;
        while matches!(self.peek()?, b' ' | b'\t' | b'\r' | b'\n') {
            count += 1;
            if count > MAX_SPACE {
                return Err(Stop::Bad);
            }
            self.bump();
        }
        Ok(count)
    }

    /// An XML name made of ASCII name characters (enough for XMPP headers).
    fn name(&mut self) -> Result<&'a [u8], Stop> {
        let start = self.pos;
        while matches!(self.peek()?, b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' | b':') {
            self.bump();
            if self.pos.saturating_sub(start) > MAX_NAME {
                return Err(Stop::Bad);
            }
        }
        match self.data.get(start..self.pos) {
            Some(name)
                if !name.is_empty() && !name.first().is_some_and(|b| b.is_ascii_digit() || b"-.".contains(b)) =>
            {
                Ok(name)
            }
            _ => Err(Stop::Bad),
        }
    }

    /// A quoted attribute value (raw, entities not decoded).
    fn value(&mut self) -> Result<&'a [u8], Stop> {
        let quote = self.peek()?;
        if quote != b'\'' && quote != b'"' {
            return Err(Stop::Bad);
        }
        self.bump();
        let start = self.pos;
        loop {
            match self.peek()? {
                b'<' => return Err(Stop::Bad),
                b if b == quote => break,
                _ => self.bump(),
            }
        }
        let value = self.data.get(start..self.pos).ok_or(Stop::Bad)?;
        self.bump();
        Ok(value)
    }
}

/// Parse up to the end of the stream start tag.
fn header(c: &mut Cursor) -> Result<Detection, Stop> {
    // Optional byte order mark.
    if c.peek()? == BOM[0] {
        c.expect(BOM)?;
    }
    c.space()?;
    c.expect(b"<")?;
    if c.peek()? == b'?' {
        declaration(c)?;
        c.space()?;
        c.expect(b"<")?;
    }
    // The element name, checked as it arrives: `stream:stream` or `stream`.
    c.expect(b"stream")?;
    let prefixed = c.peek()? == b':';
    if prefixed {
        c.expect(b":stream")?;
    }
    let attributes = attributes(c)?;
    detection(prefixed, &attributes)
}

/// `<?xml` S `version` ... `?>`, the `<` already consumed.
fn declaration(c: &mut Cursor) -> Result<(), Stop> {
    c.expect(b"?xml")?;
    if c.space()? == 0 {
        return Err(Stop::Bad);
    }
    c.expect(b"version")?;
    loop {
        match c.peek()? {
            b'?' => {
                c.bump();
                return c.expect(b">");
            }
            b'<' | b'>' => return Err(Stop::Bad),
            b if b.is_ascii_graphic() || b == b' ' || b == b'\t' || b == b'\r' || b == b'\n' => c.bump(),
            _ => return Err(Stop::Bad),
        }
    }
}

/// An attribute's name and raw value.
type Attribute<'a> = (&'a [u8], &'a [u8]);

/// The start tag's attributes, up to and including `>`.
fn attributes<'a>(c: &mut Cursor<'a>) -> Result<Vec<Attribute<'a>>, Stop> {
    let mut attributes: Vec<Attribute<'a>> = Vec::new();
    loop {
        let spaced = c.space()? > 0;
        match c.peek()? {
            b'>' => return Ok(attributes),
            // Self-closing or anything else that is not an attribute.
            _ if !spaced || attributes.len() >= MAX_ATTRIBUTES => return Err(Stop::Bad),
            _ => {}
        }
        let name = c.name()?;
        c.space()?;
        c.expect(b"=")?;
        c.space()?;
        let value = c.value()?;
        if attributes.iter().any(|(n, _)| *n == name) {
            return Err(Stop::Bad);
        }
        attributes.push((name, value));
    }
}

/// Check the namespaces of a complete start tag and build the detection.
fn detection(prefixed: bool, attributes: &[Attribute]) -> Result<Detection, Stop> {
    let get = |name: &[u8]| attributes.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
    let content = |value: &[u8]| CONTENT_NS.iter().find(|(ns, _)| ns.as_bytes() == value).map(|&(_, short)| short);
    let ns = if prefixed {
        if get(b"xmlns:stream") != Some(STREAMS_NS.as_bytes()) {
            return Err(Stop::Bad);
        }
        get(b"xmlns").and_then(content)
    } else {
        if get(b"xmlns") != Some(STREAMS_NS.as_bytes()) {
            return Err(Stop::Bad);
        }
        attributes.iter().filter(|(n, _)| n.starts_with(b"xmlns:")).find_map(|(_, v)| content(v))
    };
    let ns = ns.ok_or(Stop::Bad)?;
    let mut detection = Detection::new("xmpp").attr("ns", ns);
    for name in ["to", "version"] {
        if let Some(value) = get(name.as_bytes()) {
            detection = detection.attr(name, unescape(&String::from_utf8_lossy(value)));
        }
    }
    Ok(detection)
}

/// Decode the five predefined XML entities (others are left as they are).
fn unescape(value: &str) -> String {
    if !value.contains('&') {
        return value.to_string();
    }
    value.replace("&lt;", "<").replace("&gt;", ">").replace("&apos;", "'").replace("&quot;", "\"").replace("&amp;", "&")
}

refractium_plugin_sdk::export_detector!(Xmpp);

#[cfg(test)]
mod tests;
