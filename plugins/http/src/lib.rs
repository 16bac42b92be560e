//! Built-in `http` detector (HTTP/1.x, RFC 9112): matches a valid request
//! line `METHOD SP target SP HTTP/1.x CRLF` and reports the attributes
//! `method`, `version` (`1.0`, `1.1`) and, once the header block has ended,
//! `host` (from an absolute-form or CONNECT target, else the Host header;
//! lowercased, port stripped, IPv6 literals kept in brackets).
//!
//! While the request line is complete but the headers are not, it waits
//! (`NeedMore(0)`) until the blank line or until [`HEADER_LIMIT`] bytes,
//! then matches without `host`. The HTTP/2 preface (`PRI * HTTP/2.0`) is
//! not HTTP/1.x and does not match.

use refractium_plugin_sdk::{Detection, Detector, Peer, Verdict};

/// Methods recognised: RFC 9110 and PATCH, plus common WebDAV ones.
const METHODS: &[&str] = &[
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "DELETE",
    "CONNECT",
    "OPTIONS",
    "TRACE",
    "PATCH",
    "PROPFIND",
    "PROPPATCH",
    "MKCOL",
    "COPY",
    "MOVE",
    "LOCK",
    "UNLOCK",
];

/// Bytes of request line and headers waited for; past this the request
/// matches without `host` (or, when even the request line is not complete,
/// does not match).
pub const HEADER_LIMIT: usize = 8 * 1024;

pub struct Http;

impl Detector for Http {
    const NAME: &'static str = "http";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn new(_config: &str) -> Result<Self, String> {
        Ok(Http)
    }

    fn detect(&self, data: &[u8], _peer: &Peer) -> Verdict {
        let line = match request_line(data) {
            Ok(line) => line,
            Err(verdict) => return verdict,
        };
        let mut detection =
            Detection::new("http").attr("method", line.method).attr("version", version_name(line.minor));
        match header_block(data.get(line.len..).unwrap_or_default()) {
            Some(headers) => {
                if let Some(host) = host(headers, &line) {
                    detection = detection.attr("host", host);
                }
            }
            None if data.len() < HEADER_LIMIT => return Verdict::NeedMore(0),
            None => {}
        }
        Verdict::Matched(detection)
    }
}

/// A parsed request line.
/// `1.<minor>` without the formatting machinery (slow inside the sandbox).
fn version_name(minor: u8) -> String {
    match minor {
        b'0' => "1.0".to_string(),
        b'1' => "1.1".to_string(),
        d => ["1.", &char::from(d).to_string()].concat(),
    }
}

struct RequestLine<'a> {
    /// One of [`METHODS`].
    method: &'static str,
    target: &'a [u8],
    minor: u8,
    /// Bytes of the line, its terminator included.
    len: usize,
}

/// Parse the request line at the start of `data`; `Err` is the verdict when
/// it is incomplete or invalid.
fn request_line(data: &[u8]) -> Result<RequestLine<'_>, Verdict> {
    let Some(sp) = data.iter().position(|&b| b == b' ') else {
        return Err(if METHODS.iter().any(|m| m.as_bytes().starts_with(data)) {
            Verdict::NeedMore(0)
        } else {
            Verdict::NoMatch
        });
    };
    let (method, rest) = data.split_at(sp);
    let Some(&method) = METHODS.iter().find(|m| m.as_bytes() == method) else {
        return Err(Verdict::NoMatch);
    };
    let rest = rest.get(1..).unwrap_or_default();
    // The target: visible bytes (obs-text tolerated) up to the next space.
    let target_len = rest.iter().position(|&b| b <= b' ' || b == 0x7f);
    let target = rest.get(..target_len.unwrap_or(rest.len())).unwrap_or_default();
    let after = match target_len {
        Some(n) if n > 0 && rest.get(n) == Some(&b' ') => rest.get(n + 1..).unwrap_or_default(),
        Some(_) => return Err(Verdict::NoMatch),
        None if data.len() >= HEADER_LIMIT => return Err(Verdict::NoMatch),
        None => return Err(Verdict::NeedMore(0)),
    };
    // `HTTP/1.x` then CRLF (a bare LF is tolerated, RFC 9112 §2.2).
    const VERSION: &[u8] = b"HTTP/1.";
    let seen = after.len().min(VERSION.len());
    if after.get(..seen) != VERSION.get(..seen) {
        return Err(Verdict::NoMatch);
    }
    let tail = after.get(VERSION.len()..).unwrap_or_default();
    let minor = match tail.first() {
        Some(&d) if d.is_ascii_digit() => d,
        Some(_) => return Err(Verdict::NoMatch),
        None => return Err(Verdict::NeedMore(0)),
    };
    let end = match tail.get(1..) {
        Some([b'\r', b'\n', ..]) => 3,
        Some([b'\n', ..]) => 2,
        Some([] | [b'\r']) | None => return Err(Verdict::NeedMore(0)),
        Some(_) => return Err(Verdict::NoMatch),
    };
    let len = data.len() - tail.len() + end;
    Ok(RequestLine { method, target, minor, len })
}

/// The header fields after the request line (each line with its LF), once
/// the blank line ending them has arrived.
fn header_block(data: &[u8]) -> Option<&[u8]> {
    let mut start = 0;
    loop {
        let rest = data.get(start..)?;
        if rest.starts_with(b"\r\n") || rest.starts_with(b"\n") {
            return data.get(..start);
        }
        start += rest.iter().position(|&b| b == b'\n')? + 1;
    }
}

/// The request's host: the authority of an absolute-form (`http://host/…`)
/// or authority-form (CONNECT) target, else the first Host header
/// (RFC 9112 §3.2.2).
fn host(headers: &[u8], line: &RequestLine<'_>) -> Option<String> {
    let from_header = headers.split(|&b| b == b'\n').find_map(|field| {
        let (name, value) = field.split_at(field.iter().position(|&b| b == b':')?);
        name.eq_ignore_ascii_case(b"host").then(|| value.get(1..).unwrap_or_default())
    });
    let target = line.target;
    let scheme = [&b"http://"[..], b"https://"]
        .into_iter()
        .find(|s| target.get(..s.len()).is_some_and(|t| t.eq_ignore_ascii_case(s)));
    let authority = match (scheme, from_header) {
        (Some(scheme), _) => {
            let rest = target.get(scheme.len()..)?;
            let end = rest.iter().position(|&b| matches!(b, b'/' | b'?' | b'#'));
            rest.get(..end.unwrap_or(rest.len()))?
        }
        (None, _) if line.method == "CONNECT" => target,
        (None, Some(value)) => value.trim_ascii(),
        (None, None) => return None,
    };
    normalize_host(authority)
}

/// `Host:` value → host name: userinfo and port dropped, lowercase, IPv6
/// literal kept in brackets; `None` when empty, longer than 253 bytes or not
/// printable ASCII.
fn normalize_host(authority: &[u8]) -> Option<String> {
    let authority = match authority.iter().rposition(|&b| b == b'@') {
        Some(at) => authority.get(at + 1..)?,
        None => authority,
    };
    let host = if authority.starts_with(b"[") {
        authority.get(..=authority.iter().position(|&b| b == b']')?)?
    } else {
        let end = authority.iter().position(|&b| b == b':').unwrap_or(authority.len());
        authority.get(..end)?
    };
    let host = host.strip_suffix(b".").unwrap_or(host);
    // A DNS name is at most 253 bytes; a longer value is no host, and would
    // exceed the proxy's bound on a detection's strings (found by fuzzing).
    if host.is_empty() || host.len() > 253 || !host.iter().all(u8::is_ascii_graphic) {
        return None;
    }
    // Printable ASCII, so the bytes are UTF-8 as they are.
    String::from_utf8(host.to_ascii_lowercase()).ok()
}

refractium_plugin_sdk::export_detector!(Http);

#[cfg(test)]
mod tests {
    use super::*;
    use refractium_plugin_sdk::Transport;

    fn detect(data: &[u8]) -> Verdict {
        let http = Http::new("null").expect("http detector");
        http.detect(data, &Peer::test(Transport::Tcp))
    }

    fn matched(data: &[u8]) -> Detection {
        match detect(data) {
            Verdict::Matched(d) => d,
            other => panic!("{data:?}: expected a match, got {other:?}"),
        }
    }

    /// A Host header longer than any DNS name matches without `host`: the
    /// proxy fails a call whose attribute is over 1 KiB, and a failing
    /// detector is disabled for everyone.
    #[test]
    fn an_overlong_host_is_left_out() {
        for len in [254, 1044, 6000] {
            let request = format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", "a".repeat(len));
            let d = matched(request.as_bytes());
            assert_eq!((d.attribute("method"), d.attribute("host")), (Some("GET"), None), "{len}");
        }
        let longest = format!("GET / HTTP/1.1\r\nHost: {}:80\r\n\r\n", "a".repeat(253));
        assert_eq!(matched(longest.as_bytes()).attribute("host").map(str::len), Some(253));
    }

    #[test]
    fn get_with_host() {
        let d = matched(b"GET /index.html HTTP/1.1\r\nHost: WWW.Example.com:8080\r\nAccept: */*\r\n\r\n");
        assert_eq!(d.protocol, "http");
        assert_eq!(d.attribute("method"), Some("GET"));
        assert_eq!(d.attribute("version"), Some("1.1"));
        assert_eq!(d.attribute("host"), Some("www.example.com"));
        assert_eq!((d.sni, d.alpn.len()), (None, 0));
    }

    #[test]
    fn host_forms() {
        let host = |req: &[u8]| matched(req).attribute("host").map(str::to_string);
        assert_eq!(host(b"GET / HTTP/1.1\r\nhost:[2001:DB8::1]:80\r\n\r\n").as_deref(), Some("[2001:db8::1]"));
        assert_eq!(host(b"HEAD / HTTP/1.0\n HoSt :x\nHOST:  a.example \n\n").as_deref(), Some("a.example"));
        assert_eq!(host(b"GET / HTTP/1.0\r\n\r\n"), None);
        assert_eq!(host(b"GET / HTTP/1.1\r\nHost: \r\n\r\n"), None);
        assert_eq!(host(b"CONNECT db.example:5432 HTTP/1.1\r\n\r\n").as_deref(), Some("db.example"));
        assert_eq!(
            host(b"GET HTTP://u@Proxy.example:3128/x HTTP/1.1\r\nHost: other\r\n\r\n").as_deref(),
            Some("proxy.example")
        );
    }

    #[test]
    fn every_method() {
        for m in METHODS {
            let req = [m.as_bytes(), &b" * HTTP/1.1\r\n\r\n"[..]].concat();
            assert_eq!(matched(&req).attribute("method"), Some(*m));
        }
    }

    #[test]
    fn byte_by_byte() {
        let req = b"POST /api?q=1 HTTP/1.1\r\nHost: api.example\r\nContent-Length: 2\r\n\r\n{}";
        let end = req.len() - 2;
        for len in 0..end {
            assert_eq!(detect(&req[..len]), Verdict::NeedMore(0), "prefix {len}");
        }
        for len in end..=req.len() {
            assert_eq!(matched(&req[..len]).attribute("host"), Some("api.example"));
        }
    }

    #[test]
    fn long_headers_match_without_host() {
        let mut req = b"GET / HTTP/1.1\r\nCookie: ".to_vec();
        req.resize(HEADER_LIMIT - 1, b'a');
        assert_eq!(detect(&req), Verdict::NeedMore(0));
        req.push(b'a');
        let d = matched(&req);
        assert_eq!((d.attribute("method"), d.attribute("host")), (Some("GET"), None));
        // A request line that never ends is not HTTP.
        let mut req = b"GET /".to_vec();
        req.resize(HEADER_LIMIT, b'a');
        assert_eq!(detect(&req), Verdict::NoMatch);
    }

    #[test]
    fn not_http() {
        let cases: &[&[u8]] = &[
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"PRI",
            b"\x16\x03\x01\x02\x00\x01",
            b"SSH-2.0-OpenSSH\r\n",
            b"get / HTTP/1.1\r\n",
            b"GETS / HTTP/1.1\r\n",
            b"GET  / HTTP/1.1\r\n",
            b"GET / HTTP/2.0\r\n",
            b"GET / HTTP/1.x\r\n",
            b"GET / HTTP/1.1 \r\n",
            b"GET / HTTP/1.1\rX",
            b"GET /\r\n",
            b"GET /a\x00b HTTP/1.1\r\n",
            b"\r\nGET / HTTP/1.1\r\n",
        ];
        for case in cases {
            assert_eq!(detect(case), Verdict::NoMatch, "{case:?}");
        }
    }

    #[test]
    fn method_prefixes_need_more() {
        for case in [&b""[..], b"G", b"DEL", b"PROPF", b"OPTIONS", b"GET ", b"GET / HTT"] {
            assert_eq!(detect(case), Verdict::NeedMore(0), "{case:?}");
        }
    }
}
