//! Built-in hook `http-headers`: sets, adds and removes headers of every
//! HTTP/1.x request a client sends, and by default tells the server who the
//! client is (`X-Forwarded-For`, appended to one that is there; `X-Real-IP`;
//! `Forwarded`).
//!
//! ```yaml
//! plugins:
//!   config:
//!     http-headers:
//!       set: { X-Env: prod }           # replaces any header of that name
//!       add: { Via: "1.1 refractium" } # added beside any that is there
//!       remove: [X-Debug]
//!       forwarded_for: true            # X-Forwarded-For (the default: true)
//!       real_ip: true                  # X-Real-IP (true)
//!       forwarded: true                # Forwarded: for=… (true)
//! ```
//!
//! It follows HTTP/1.1 message framing ([`framing`]): every request of a
//! keep-alive or pipelined connection is rewritten, bodies (with
//! `Content-Length` or chunked) pass unchanged whatever they hold, a head
//! that arrives a byte at a time is rewritten once whole, and an upgrade
//! (WebSocket, `CONNECT`) ends the rewriting for the rest of the stream. A
//! request it cannot follow is answered `400 Bad Request` and the
//! connection closed. What the server sends passes unchanged.

pub mod framing;

use framing::{Head, Requests};
use refractium_plugin_sdk::hook::{Action, Direction, Directions, Hook};
use refractium_plugin_sdk::{Detection, Peer};
use serde_json::Value;

const BAD_REQUEST: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// The configured changes.
#[derive(Debug, Clone, Default)]
pub struct HttpHeaders {
    set: Vec<(String, String)>,
    add: Vec<(String, String)>,
    remove: Vec<String>,
    forwarded_for: bool,
    real_ip: bool,
    forwarded: bool,
}

/// Per connection: the client's address and its request stream.
pub struct Stream {
    client: Option<Client>,
    requests: Requests,
}

/// The client's address, written out once for every request's headers.
#[derive(Debug)]
struct Client {
    /// As `Forwarded` gives it (`for=…`); the address itself, as
    /// `X-Forwarded-For` and `X-Real-IP` give it, is `forwarded[ip]`.
    forwarded: String,
    ip: std::ops::Range<usize>,
}

fn pairs(value: Option<&Value>, key: &str) -> Result<Vec<(String, String)>, String> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(name, v)| match v {
                Value::String(s) => Ok((name.clone(), s.clone())),
                Value::Number(n) => Ok((name.clone(), n.to_string())),
                _ => Err(format!("`{key}.{name}` must be text")),
            })
            .collect(),
        Some(_) => Err(format!("`{key}` must be a mapping of header names to values")),
    }
}

fn parse(config: &str) -> Result<HttpHeaders, String> {
    let value: Value = serde_json::from_str(config).map_err(|e| format!("config is not valid JSON: {e}"))?;
    let empty = serde_json::Map::new();
    let map = match &value {
        Value::Null => &empty,
        Value::Object(map) => map,
        _ => return Err("must be a mapping (set, add, remove, forwarded_for, real_ip, forwarded)".into()),
    };
    const KEYS: [&str; 6] = ["set", "add", "remove", "forwarded_for", "real_ip", "forwarded"];
    if let Some(key) = map.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(format!("unknown key `{key}` (keys: {})", KEYS.join(", ")));
    }
    let flag = |key: &str| match map.get(key) {
        None => Ok(true),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(format!("`{key}` must be true or false")),
    };
    let remove = match map.get("remove") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string).ok_or("`remove` must be a list of header names"))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("`remove` must be a list of header names".into()),
    };
    let config = HttpHeaders {
        set: pairs(map.get("set"), "set")?,
        add: pairs(map.get("add"), "add")?,
        remove,
        forwarded_for: flag("forwarded_for")?,
        real_ip: flag("real_ip")?,
        forwarded: flag("forwarded")?,
    };
    for (name, value) in config.set.iter().chain(&config.add) {
        let token = |c: u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c);
        if name.is_empty() || !name.bytes().all(token) {
            return Err(format!("`{name}` is not a header name"));
        }
        if value.bytes().any(|b| b == b'\r' || b == b'\n') {
            return Err(format!("the value of `{name}` has a line break"));
        }
    }
    Ok(config)
}

impl HttpHeaders {
    /// Append `head` with the configured changes, for a client at `client`, to `out`.
    fn rewrite(&self, head: &Head<'_>, client: Option<&Client>, out: &mut Vec<u8>) {
        let replaced = |name: &str| {
            self.remove.iter().chain(self.set.iter().map(|(n, _)| n)).any(|r| r.eq_ignore_ascii_case(name))
                || (self.real_ip && client.is_some() && name.eq_ignore_ascii_case("x-real-ip"))
        };
        out.extend_from_slice(head.line);
        out.extend_from_slice(b"\r\n");
        let mut header = |name: &str, value: &[&[u8]]| {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            for part in value {
                out.extend_from_slice(part);
            }
            out.extend_from_slice(b"\r\n");
        };
        let (mut xff_done, mut fwd_done) = (false, false);
        for (at, h) in head.headers.iter().enumerate() {
            let (name, value) = (h.name, h.value);
            if replaced(name) {
                continue;
            }
            match client {
                // The client is appended to the last header of the name.
                Some(c) if self.forwarded_for && name.eq_ignore_ascii_case("x-forwarded-for") && is_last(head, at) => {
                    header(name, &[value, b", ", c.ip().as_bytes()]);
                    xff_done = true;
                    continue;
                }
                Some(c) if self.forwarded && name.eq_ignore_ascii_case("forwarded") && is_last(head, at) => {
                    header(name, &[value, b", ", c.forwarded.as_bytes()]);
                    fwd_done = true;
                    continue;
                }
                _ => {}
            }
            header(name, &[value]);
        }
        for (name, value) in self.set.iter().chain(&self.add) {
            header(name, &[value.as_bytes()]);
        }
        if let Some(c) = client {
            if self.forwarded_for && !xff_done {
                header("X-Forwarded-For", &[c.ip().as_bytes()]);
            }
            if self.real_ip {
                header("X-Real-IP", &[c.ip().as_bytes()]);
            }
            if self.forwarded && !fwd_done {
                header("Forwarded", &[c.forwarded.as_bytes()]);
            }
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// Whether header `at` of `head` is the last one of its name.
fn is_last(head: &Head<'_>, at: usize) -> bool {
    let name = head.headers[at].name;
    !head.headers[at + 1..].iter().any(|h| h.name.eq_ignore_ascii_case(name))
}

impl Client {
    /// From the peer's `ip:port` (`[ip]:port` for IPv6), as the host writes
    /// it; `None` for anything else. The address is taken as written, not
    /// formatted again: formatting is the costliest part of a session here.
    fn of(client_addr: &str) -> Option<Client> {
        let colon = client_addr.bytes().rposition(|b| b == b':')?;
        let host = &client_addr[..colon];
        if is_ipv4(host.as_bytes()) {
            let mut forwarded = String::with_capacity(4 + host.len());
            forwarded.push_str("for=");
            forwarded.push_str(host);
            return Some(Client { forwarded, ip: 4..4 + host.len() });
        }
        let inner = host.strip_prefix('[')?.strip_suffix(']')?;
        // Without a zone (`%eth0`): it means nothing to the server.
        let ip = inner.split('%').next().unwrap_or(inner);
        ip.parse::<std::net::Ipv6Addr>().ok()?;
        // `for=` of the `Forwarded` header (RFC 7239): an IPv6 address
        // quoted in brackets.
        Some(Client { forwarded: ["for=\"[", ip, "]\""].concat(), ip: 6..6 + ip.len() })
    }

    /// The address, as `X-Forwarded-For` and `X-Real-IP` give it.
    fn ip(&self) -> &str {
        self.forwarded.get(self.ip.clone()).unwrap_or_default()
    }
}

/// Whether `text` is a dotted-quad IPv4 address as `Display` writes one:
/// four decimal numbers up to 255, without leading zeros.
fn is_ipv4(text: &[u8]) -> bool {
    // The number being read, its digits, and the dots so far.
    let (mut value, mut digits, mut dots) = (0u16, 0u8, 0u8);
    for &b in text {
        match b {
            b'0'..=b'9' if digits < 3 && !(digits == 1 && value == 0) => {
                value = value * 10 + u16::from(b - b'0');
                digits += 1;
            }
            b'.' if digits > 0 && value <= 255 && dots < 3 => {
                (value, digits, dots) = (0, 0, dots + 1);
            }
            _ => return false,
        }
    }
    dots == 3 && digits > 0 && value <= 255
}

impl Hook for HttpHeaders {
    const NAME: &'static str = "http-headers";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    type Session = Stream;
    /// Responses pass unchanged: the proxy relays them without the hook.
    const DIRECTIONS: Directions = Directions::ClientToServer;

    fn new(config: &str) -> Result<Self, String> {
        parse(config)
    }

    fn open(&self, peer: &Peer, _detection: &Detection, _route: &str) -> Stream {
        Stream { client: Client::of(&peer.client_addr), requests: Requests::default() }
    }

    /// Responses are not looked at (the proxy does not call the hook for
    /// them; a host that did would see them passed at the first chunk),
    /// nor is a tunnel's traffic after an upgrade.
    fn on_data(&self, stream: &mut Stream, direction: Direction, data: Vec<u8>) -> Action {
        if direction == Direction::ServerToClient {
            return Action::Pass(data);
        }
        let client = stream.client.as_ref();
        match stream.requests.feed(&data, &|head, out| self.rewrite(head, client, out)) {
            Ok(out) if stream.requests.is_tunnel() => Action::Pass(out),
            Ok(out) => Action::Forward(out),
            Err(why) => Action::Respond { data: BAD_REQUEST.to_vec(), reason: format!("400: {why}") },
        }
    }

    fn on_end(&self, stream: &mut Stream, direction: Direction) -> Action {
        if direction == Direction::ServerToClient {
            return Action::Forward(Vec::new());
        }
        Action::Forward(stream.requests.finish())
    }
}

refractium_plugin_sdk::export_hook!(HttpHeaders);

#[cfg(test)]
mod tests;
