//! The file as serde sees it: every key optional (so that one pass of
//! validation can report every missing or bad value together), addresses,
//! sizes and durations kept as text (so that a bad one becomes a located
//! problem rather than the one serde error that stops the parse), and
//! `deny_unknown_fields` everywhere (so that a typo is an error).

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use super::{Balance, LogFormat, ProxyProtocol, Transport};

/// The top level of a config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a config mapping (listeners, routes, backends, ...)")]
pub struct RawConfig {
    pub listeners: Option<Vec<RawListener>>,
    pub routes: Option<Vec<RawRoute>>,
    pub backends: Option<BTreeMap<String, Option<RawBackend>>>,
    pub plugins: Option<RawPlugins>,
    pub limits: Option<RawLimits>,
    pub udp: Option<RawUdp>,
    pub admin: Option<RawAdmin>,
    pub reload: Option<RawReload>,
    pub log: Option<RawLog>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a listener (name, bind, transport, detectors, detect, on_timeout, default)")]
pub struct RawListener {
    pub name: Option<String>,
    pub bind: Option<Texts>,
    pub transport: Option<Transport>,
    pub detectors: Option<Vec<String>>,
    pub detect: Option<RawDetect>,
    pub on_timeout: Option<String>,
    pub default: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "detect settings (max_bytes, timeout)")]
pub struct RawDetect {
    pub max_bytes: Option<Text>,
    pub timeout: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a route (name, match, to, hooks)")]
pub struct RawRoute {
    pub name: Option<String>,
    pub r#match: Option<RawMatch>,
    pub to: Option<String>,
    pub hooks: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "match conditions (protocol, sni, alpn, client, attributes)")]
pub struct RawMatch {
    pub protocol: Option<String>,
    pub sni: Option<String>,
    pub alpn: Option<Texts>,
    pub client: Option<Texts>,
    pub attributes: Option<BTreeMap<String, Text>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a backend (servers, balance, health, proxy_protocol, connect_timeout, retries)"
)]
pub struct RawBackend {
    pub servers: Option<Texts>,
    pub balance: Option<Balance>,
    pub health: Option<RawHealth>,
    pub proxy_protocol: Option<ProxyProtocol>,
    pub connect_timeout: Option<Text>,
    pub retries: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "health checks (interval, timeout, rise, fall)")]
pub struct RawHealth {
    pub interval: Option<Text>,
    pub timeout: Option<Text>,
    pub rise: Option<u32>,
    pub fall: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "plugin settings (dir, config, limits, cache_dir)")]
pub struct RawPlugins {
    pub dir: Option<String>,
    pub config: Option<BTreeMap<String, serde_json::Value>>,
    pub limits: Option<RawPluginLimits>,
    pub cache_dir: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "plugin limits (memory, call_timeout)")]
pub struct RawPluginLimits {
    pub memory: Option<Text>,
    pub call_timeout: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "limits (max_connections, max_connections_per_ip, idle_timeout, drain_timeout)"
)]
pub struct RawLimits {
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
    pub idle_timeout: Option<Text>,
    pub drain_timeout: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "udp settings (session_timeout, max_sessions)")]
pub struct RawUdp {
    pub session_timeout: Option<Text>,
    pub max_sessions: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "admin settings (bind)")]
pub struct RawAdmin {
    pub bind: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "reload settings (watch)")]
pub struct RawReload {
    pub watch: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "log settings (level, format)")]
pub struct RawLog {
    pub level: Option<String>,
    pub format: Option<LogFormat>,
}

/// A scalar kept as its text: `3s`, `4096`, `16MiB`, `127.0.0.1:80`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text(pub String);

/// One scalar or a list of them (`bind: a` or `bind: [a, b]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Texts {
    /// The values, in order.
    pub items: Vec<String>,
    /// Written as a single scalar, not a list.
    pub single: bool,
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a single value such as 3s, 4096, 16MiB or 127.0.0.1:80")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TextVisitor).map(Text)
    }
}

struct TextsVisitor;

impl<'de> Visitor<'de> for TextsVisitor {
    type Value = Texts;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("one value or a list of values")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Texts, E> {
        Ok(Texts { items: vec![v.to_owned()], single: true })
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Texts, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Texts, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Texts, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Texts, A::Error> {
        let mut items = Vec::new();
        while let Some(Text(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Texts { items, single: false })
    }
}

impl<'de> Deserialize<'de> for Texts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TextsVisitor)
    }
}
