//! PROXY headers (v1 text, v2 binary) from a load balancer in front of a
//! listener (`listeners[].accept_proxy`): the real client and destination
//! addresses, read before detection and stripped from what the backend gets.
//!
//! Parsing is done by the `ppp` crate; this module bounds it (a header of at
//! most [`MAX_HEADER`] bytes, read within the listener's detection timeout)
//! and turns its answer into the addresses refractium uses.

use ppp::{HeaderResult, PartialResult, v1, v2};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::AsyncRead;

/// The longest header accepted, TLVs included. A v1 header is at most 107
/// bytes; a v2 header from HAProxy or a cloud load balancer is a few
/// hundred at most.
pub const MAX_HEADER: usize = 4096;

/// How a v2 header starts.
const SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// How a v1 header starts.
const V1_PREFIX: &[u8; 6] = b"PROXY ";
/// The longest v1 header, its CRLF included.
const V1_MAX: usize = 107;

/// The carried addresses: the client's, and the one it connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Carried {
    pub client: SocketAddr,
    pub local: SocketAddr,
}

/// What the first bytes of a connection (or a datagram) hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A header may follow: more bytes are needed to tell.
    Incomplete,
    /// A header of `len` bytes. `carried` is `None` for a header that
    /// carries no addresses to use (v2 `LOCAL`, as a load balancer's own
    /// health check sends; v1 `UNKNOWN`; unspecified or UNIX families): the
    /// connection's own addresses stand.
    Header { len: usize, carried: Option<Carried> },
    /// Not a valid header, and no more bytes would make it one.
    Invalid(String),
}

/// Parse the PROXY header at the start of `data`. `datagram` says whether
/// this is a UDP datagram (which only a v2 header can carry).
pub fn parse(data: &[u8], datagram: bool) -> Parsed {
    if let Some(len) = v2_length(data)
        && len > MAX_HEADER
    {
        return Parsed::Invalid(format!("PROXY v2 header of {len} bytes, more than the {MAX_HEADER} accepted"));
    }
    let v2_start = data.starts_with(SIGNATURE) || SIGNATURE.starts_with(data);
    // Neither header can start this way, whatever follows: say so from the
    // first bytes, as the parser does for some of them and not for others
    // (found by fuzzing: `P\r` was invalid, `P\rP4 ...` incomplete).
    let n = data.len().min(V1_PREFIX.len());
    if !v2_start && data.get(..n) != V1_PREFIX.get(..n) {
        return Parsed::Invalid("no PROXY header".into());
    }
    // A v1 header is one line ending in CRLF, at most 107 bytes. The parser
    // is given that line alone, so the bytes after it cannot change the
    // header (found by fuzzing: `PROXY UNKNOWN ...` ended by a bare line
    // feed parsed as a header whose length grew with the bytes after it).
    let data = if v2_start || datagram {
        data
    } else {
        match data.iter().take(V1_MAX).position(|&b| b == b'\n') {
            None if data.len() < V1_MAX => return Parsed::Incomplete,
            None => return Parsed::Invalid(format!("no end of a PROXY v1 line in its first {V1_MAX} bytes")),
            Some(end) if data.get(end.wrapping_sub(1)) != Some(&b'\r') => {
                return Parsed::Invalid("a PROXY v1 line not ended by CRLF".into());
            }
            Some(end) => data.get(..=end).unwrap_or(data),
        }
    };
    let result: HeaderResult =
        if v2_start { v2::Header::try_from(data).into() } else { v1::Header::try_from(data).into() };
    match result {
        result if result.is_incomplete() => {
            if !v2_start && !datagram {
                // The whole line is there: more bytes would not complete it.
                Parsed::Invalid("bad PROXY v1 header: an incomplete line".into())
            } else if data.len() >= MAX_HEADER {
                Parsed::Invalid(format!("no complete PROXY header in the first {MAX_HEADER} bytes"))
            } else {
                Parsed::Incomplete
            }
        }
        HeaderResult::V2(Ok(header)) => {
            let carried = match (header.command, header.addresses) {
                (v2::Command::Local, _) => None,
                (v2::Command::Proxy, v2::Addresses::IPv4(a)) => Some(Carried {
                    client: SocketAddr::new(IpAddr::V4(a.source_address), a.source_port),
                    local: SocketAddr::new(IpAddr::V4(a.destination_address), a.destination_port),
                }),
                (v2::Command::Proxy, v2::Addresses::IPv6(a)) => Some(Carried {
                    client: SocketAddr::new(IpAddr::V6(a.source_address), a.source_port),
                    local: SocketAddr::new(IpAddr::V6(a.destination_address), a.destination_port),
                }),
                (v2::Command::Proxy, v2::Addresses::Unspecified | v2::Addresses::Unix(_)) => None,
            };
            let wrong_transport = match header.protocol {
                v2::Protocol::Stream => datagram,
                v2::Protocol::Datagram => !datagram,
                v2::Protocol::Unspecified => false,
            };
            if wrong_transport && carried.is_some() {
                let (said, is) = if datagram { ("stream", "datagram") } else { ("datagram", "stream") };
                return Parsed::Invalid(format!("PROXY v2 header for a {said} on a {is} listener"));
            }
            Parsed::Header { len: header.len(), carried }
        }
        HeaderResult::V1(Ok(_)) if datagram => Parsed::Invalid("a PROXY v1 header in a datagram".into()),
        HeaderResult::V1(Ok(header)) => {
            let carried = match header.addresses {
                v1::Addresses::Tcp4(a) => Some(Carried {
                    client: SocketAddr::new(IpAddr::V4(a.source_address), a.source_port),
                    local: SocketAddr::new(IpAddr::V4(a.destination_address), a.destination_port),
                }),
                v1::Addresses::Tcp6(a) => Some(Carried {
                    client: SocketAddr::new(IpAddr::V6(a.source_address), a.source_port),
                    local: SocketAddr::new(IpAddr::V6(a.destination_address), a.destination_port),
                }),
                v1::Addresses::Unknown => None,
            };
            Parsed::Header { len: header.header.len(), carried }
        }
        HeaderResult::V2(Err(err)) => Parsed::Invalid(format!("bad PROXY v2 header: {err}")),
        HeaderResult::V1(Err(v1::BinaryParseError::Parse(v1::ParseError::InvalidPrefix))) => {
            Parsed::Invalid("no PROXY header".into())
        }
        HeaderResult::V1(Err(err)) => Parsed::Invalid(format!("bad PROXY v1 header: {err}")),
    }
}

/// The whole length a v2 header announces, once its fixed part is there.
fn v2_length(data: &[u8]) -> Option<usize> {
    if data.len() < 16 || !data.starts_with(SIGNATURE) {
        return None;
    }
    Some(16 + usize::from(u16::from_be_bytes([data[14], data[15]])))
}

/// Read a connection's PROXY header within `timeout`. On success: the
/// carried addresses (`None`: keep the connection's own) and the client's
/// bytes that came after the header, which detection starts from.
pub async fn read<S: AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> Result<(Option<Carried>, Vec<u8>), String> {
    let deadline = crate::detect::Deadline::after(timeout);
    let mut data = Vec::new();
    loop {
        let read = match deadline.bound(crate::detect::read_more(stream, &mut data, MAX_HEADER)).await {
            Some(Ok(read)) => read,
            Some(Err(err)) => return Err(format!("client error before its PROXY header: {err}")),
            None if data.is_empty() => return Err("no PROXY header before the detection timeout".into()),
            None => return Err("PROXY header incomplete at the detection timeout".into()),
        };
        if read == 0 {
            return Err(if data.is_empty() {
                "closed before its PROXY header".into()
            } else {
                "closed in the middle of its PROXY header".into()
            });
        }
        match parse(&data, false) {
            Parsed::Incomplete => continue,
            Parsed::Invalid(why) => return Err(why),
            Parsed::Header { len, carried } => {
                data.drain(..len);
                return Ok((carried, data));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::proxy_protocol;

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("address")
    }

    #[test]
    fn v1_and_v2_headers_carry_both_addresses_and_leave_what_follows() {
        let (client, local) = (addr("192.0.2.7:40000"), addr("198.51.100.1:443"));
        for header in [proxy_protocol::v1(client, local), proxy_protocol::v2(client, local)] {
            let mut data = header.clone();
            data.extend_from_slice(b"GET / HTTP/1.1\r\n");
            let want = Parsed::Header { len: header.len(), carried: Some(Carried { client, local }) };
            assert_eq!(parse(&data, false), want);
        }
        let (client, local) = (addr("[2001:db8::7]:40000"), addr("[2001:db8::1]:443"));
        for header in [proxy_protocol::v1(client, local), proxy_protocol::v2(client, local)] {
            let want = Parsed::Header { len: header.len(), carried: Some(Carried { client, local }) };
            assert_eq!(parse(&header, false), want);
        }
    }

    #[test]
    fn every_prefix_of_a_header_asks_for_more() {
        let (client, local) = (addr("192.0.2.7:40000"), addr("198.51.100.1:443"));
        for header in [proxy_protocol::v1(client, local), proxy_protocol::v2(client, local)] {
            for cut in 0..header.len() {
                assert_eq!(parse(&header[..cut], false), Parsed::Incomplete, "{cut} bytes of {header:?}");
            }
        }
    }

    #[test]
    fn local_and_unknown_keep_the_connection_addresses() {
        let local = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";
        assert_eq!(parse(local, false), Parsed::Header { len: 16, carried: None });
        assert_eq!(parse(b"PROXY UNKNOWN\r\nxyz", false), Parsed::Header { len: 15, carried: None });
    }

    #[test]
    fn garbage_lies_and_oversize_are_invalid() {
        for bad in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 80\r\n",
            b"PROXY TCP4 1.2.3.999 5.6.7.8 80 443\r\n",
            b"PROXY TCP9 1.2.3.4 5.6.7.8 80 443\r\n",
            b"\r\n\r\n\0\r\nQUIT\n\x31\x11\x00\x0c",
            b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x04abcd",
        ] {
            assert!(matches!(parse(bad, false), Parsed::Invalid(_)), "{bad:?}: {:?}", parse(bad, false));
        }
        let mut huge = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\xff\xff".to_vec();
        assert!(matches!(parse(&huge, false), Parsed::Invalid(why) if why.contains("65551 bytes")));
        huge.truncate(12);
        assert_eq!(parse(&huge, false), Parsed::Incomplete);
        let endless = [b'P', b'R', b'O', b'X', b'Y', b' ', b'T', b'C', b'P', b'4', b' '].repeat(20);
        assert!(matches!(parse(&endless, false), Parsed::Invalid(_)));
    }

    /// Bytes that cannot start a header are invalid however they arrive:
    /// the reader stops at the first answer, so a header refused after two
    /// bytes must not be waited for after fifty.
    #[test]
    fn the_verdict_on_a_non_header_does_not_depend_on_the_split() {
        // `P` could start `PROXY `; `P` and a carriage return cannot.
        let stream = b"P\rP4 192.0.2.7 198.51.10.1 40000YNOWN HTTP/\nY TC\n \xa200";
        for cut in 2..=stream.len() {
            assert!(matches!(parse(&stream[..cut], false), Parsed::Invalid(_)), "{cut} bytes");
        }
        for prefix in [&b"P"[..], b"PROX", b"PROXY", b"PROXY ", b"\r\n\r\n", b""] {
            assert_eq!(parse(prefix, false), Parsed::Incomplete, "{prefix:?}");
        }
        assert!(matches!(parse(b"PROXY\r\n", false), Parsed::Invalid(_)));
    }

    /// A v1 header is its line, ended by CRLF: the bytes after it do not
    /// change it, and a bare line feed does not end it.
    #[test]
    fn a_v1_header_is_its_crlf_line() {
        let stream = b"PROXY UNKNOWN :1 ffff::1 65535 \n\r535\r\n";
        for cut in 32..=stream.len() {
            assert!(matches!(parse(&stream[..cut], false), Parsed::Invalid(_)), "{cut} bytes");
        }
        let header = b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n";
        for tail in [&b""[..], b"\r\n", b"SSH-2.0-x\r\n", b"\n\n\n"] {
            let data = [&header[..], tail].concat();
            assert_eq!(parse(&data, false), Parsed::Header { len: header.len(), carried: None }, "{tail:?}");
        }
        let long = [&b"PROXY UNKNOWN "[..], &[b'x'; 100], b"\r\n"].concat();
        assert!(matches!(parse(&long, false), Parsed::Invalid(_)));
    }

    #[test]
    fn datagrams_take_v2_datagram_headers_only() {
        let (client, local) = (addr("192.0.2.7:40000"), addr("198.51.100.1:53"));
        let mut dgram = proxy_protocol::v2(client, local);
        dgram[13] = 0x12; // AF_INET, DGRAM
        assert_eq!(parse(&dgram, true), Parsed::Header { len: 28, carried: Some(Carried { client, local }) });
        assert!(matches!(parse(&dgram, false), Parsed::Invalid(_)));
        assert!(matches!(parse(&proxy_protocol::v2(client, local), true), Parsed::Invalid(_)));
        assert!(matches!(parse(&proxy_protocol::v1(client, local), true), Parsed::Invalid(_)));
    }
}
