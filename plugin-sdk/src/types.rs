//! Idiomatic types a detector works with, and their conversions to and from
//! the generated WIT types.

use crate::__bindings::refractium::plugin::types as wit;

/// The transport of the listener a client came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Udp,
}

/// Facts about the client being looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Client address, `ip:port`.
    pub client_addr: String,
    /// Address the client connected to, `ip:port`.
    pub local_addr: String,
    /// The listener's name in the config.
    pub listener: String,
    pub transport: Transport,
}

impl Peer {
    /// A peer for native tests.
    pub fn test(transport: Transport) -> Self {
        Peer {
            client_addr: "127.0.0.1:40000".into(),
            local_addr: "127.0.0.1:443".into(),
            listener: "test".into(),
            transport,
        }
    }
}

/// What a detector found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Detection {
    /// Protocol name routes match on.
    pub protocol: String,
    /// TLS server name (or the like), when the protocol carries one.
    pub sni: Option<String>,
    /// Application protocols the client offers, in its order.
    pub alpn: Vec<String>,
    /// Free-form facts routes can match on.
    pub attributes: Vec<(String, String)>,
}

impl Detection {
    /// A detection of `protocol` with nothing else known.
    pub fn new(protocol: impl Into<String>) -> Self {
        Detection { protocol: protocol.into(), ..Default::default() }
    }

    /// Set the server name.
    pub fn sni(mut self, sni: impl Into<String>) -> Self {
        self.sni = Some(sni.into());
        self
    }

    /// Set the offered application protocols.
    pub fn alpn<S: Into<String>>(mut self, alpn: impl IntoIterator<Item = S>) -> Self {
        self.alpn = alpn.into_iter().map(Into::into).collect();
        self
    }

    /// Add an attribute.
    pub fn attr(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.push((key.into(), value.into()));
        self
    }

    /// The value of attribute `key`, if set.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// A detector's answer for the bytes seen so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The bytes are this protocol.
    Matched(Detection),
    /// Cannot tell yet; the total number of bytes wanted, 0 if unknown.
    NeedMore(usize),
    /// Not this protocol, whatever follows.
    NoMatch,
}

impl Verdict {
    /// True for [`Verdict::Matched`].
    pub fn is_match(&self) -> bool {
        matches!(self, Verdict::Matched(_))
    }

    /// The detection, for [`Verdict::Matched`].
    pub fn detection(&self) -> Option<&Detection> {
        match self {
            Verdict::Matched(d) => Some(d),
            _ => None,
        }
    }
}

impl From<wit::Peer> for Peer {
    fn from(p: wit::Peer) -> Self {
        Peer {
            client_addr: p.client_addr,
            local_addr: p.local_addr,
            listener: p.listener,
            transport: match p.transport {
                wit::Transport::Tcp => Transport::Tcp,
                wit::Transport::Udp => Transport::Udp,
            },
        }
    }
}

impl From<wit::Detection> for Detection {
    fn from(d: wit::Detection) -> Self {
        Detection { protocol: d.protocol, sni: d.sni, alpn: d.alpn, attributes: d.attributes }
    }
}

impl From<Verdict> for wit::Verdict {
    fn from(v: Verdict) -> Self {
        match v {
            Verdict::Matched(d) => wit::Verdict::Matched(wit::Detection {
                protocol: d.protocol,
                sni: d.sni,
                alpn: d.alpn,
                attributes: d.attributes,
            }),
            Verdict::NeedMore(n) => wit::Verdict::NeedMore(u32::try_from(n).unwrap_or(u32::MAX)),
            Verdict::NoMatch => wit::Verdict::NoMatch,
        }
    }
}
