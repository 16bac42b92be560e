//! The file as serde sees it: every key optional (so that one pass of
//! validation can report every missing or bad value together), addresses,
//! sizes and durations kept as text (so that a bad one becomes a located
//! problem rather than the one serde error that stops the parse), and
//! `deny_unknown_fields` everywhere (so that a typo is an error).

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use super::{Balance, LogFormat, OnHookFailure, ProxyProtocol, Transport};

/// The top level of a config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a config mapping (listeners, routes, backends, ...)")]
pub struct RawConfig {
    /// `listeners`: see [`Config::listeners`](super::Config::listeners).
    pub listeners: Option<Vec<RawListener>>,
    /// `routes`: see [`Config::routes`](super::Config::routes).
    pub routes: Option<Vec<RawRoute>>,
    /// `backends`: see [`Config::backends`](super::Config::backends).
    pub backends: Option<BTreeMap<String, Option<RawBackend>>>,
    /// `plugins`: see [`Config::plugins`](super::Config::plugins).
    pub plugins: Option<RawPlugins>,
    /// `limits`: see [`Config::limits`](super::Config::limits).
    pub limits: Option<RawLimits>,
    /// `udp`: see [`Config::udp`](super::Config::udp).
    pub udp: Option<RawUdp>,
    /// `admin`: see [`Config::admin`](super::Config::admin).
    pub admin: Option<RawAdmin>,
    /// `reload`: see [`Config::reload`](super::Config::reload).
    pub reload: Option<RawReload>,
    /// `log`: see [`Config::log`](super::Config::log).
    pub log: Option<RawLog>,
    /// `runtime`: see [`Config::runtime`](super::Config::runtime).
    pub runtime: Option<RawRuntime>,
    /// `resolver`: see [`Config::resolver`](super::Config::resolver).
    pub resolver: Option<RawResolver>,
}

/// The `resolver` section as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "resolver settings (servers, resolve_interval)")]
pub struct RawResolver {
    /// `resolver.servers`: see [`Resolver::servers`](super::Resolver::servers).
    pub servers: Option<Texts>,
    /// `resolver.resolve_interval`: see [`Resolver::resolve_interval`](super::Resolver::resolve_interval).
    pub resolve_interval: Option<Text>,
}

/// The `runtime` section as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "runtime settings (workers)")]
pub struct RawRuntime {
    /// `runtime.workers`: see [`Runtime::workers`](super::Runtime::workers).
    pub workers: Option<usize>,
}

/// A `listeners[]` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a listener (name, bind, transport, detectors, detect, on_timeout, default, accept_proxy)"
)]
pub struct RawListener {
    /// `listeners[].name`: see [`Listener::name`](super::Listener::name).
    pub name: Option<String>,
    /// `listeners[].bind`: see [`Listener::bind`](super::Listener::bind).
    pub bind: Option<Texts>,
    /// `listeners[].transport`: see [`Listener::transport`](super::Listener::transport).
    pub transport: Option<Transport>,
    /// `listeners[].detectors`: see [`Listener::detectors`](super::Listener::detectors).
    pub detectors: Option<Vec<String>>,
    /// `listeners[].detect`: see [`Listener::detect`](super::Listener::detect).
    pub detect: Option<RawDetect>,
    /// `listeners[].on_timeout`: see [`Listener::on_timeout`](super::Listener::on_timeout).
    pub on_timeout: Option<String>,
    /// `listeners[].default`: see [`Listener::default`](super::Listener::default).
    pub default: Option<String>,
    /// `listeners[].accept_proxy`: see [`Listener::accept_proxy`](super::Listener::accept_proxy).
    pub accept_proxy: Option<RawAcceptProxy>,
}

/// `listeners[].accept_proxy` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, expecting = "accept_proxy settings (from)")]
pub struct RawAcceptProxy {
    /// `listeners[].accept_proxy.from`: see [`AcceptProxy::from`](super::AcceptProxy::from).
    pub from: Option<Texts>,
}

/// `listeners[].detect` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, expecting = "detect settings (max_bytes, timeout)")]
pub struct RawDetect {
    /// `listeners[].detect.max_bytes`: see [`Detect::max_bytes`](super::Detect::max_bytes).
    pub max_bytes: Option<Text>,
    /// `listeners[].detect.timeout`: see [`Detect::timeout`](super::Detect::timeout).
    pub timeout: Option<Text>,
}

/// A `routes[]` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a route (name, match, to, hooks, on_hook_failure)")]
pub struct RawRoute {
    /// `routes[].name`: see [`Route::name`](super::Route::name).
    pub name: Option<String>,
    /// `routes[].match`: see [`Route::r#match`](super::Route::r#match).
    pub r#match: Option<RawMatch>,
    /// `routes[].to`: see [`Route::to`](super::Route::to).
    pub to: Option<String>,
    /// `routes[].hooks`: see [`Route::hooks`](super::Route::hooks).
    pub hooks: Option<Vec<String>>,
    /// `routes[].on_hook_failure`: see [`Route::on_hook_failure`](super::Route::on_hook_failure).
    pub on_hook_failure: Option<OnHookFailure>,
}

/// `routes[].match` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "match conditions (protocol, sni, alpn, client, attributes)")]
pub struct RawMatch {
    /// `routes[].match.protocol`: see [`Match::protocol`](super::Match::protocol).
    pub protocol: Option<String>,
    /// `routes[].match.sni`: see [`Match::sni`](super::Match::sni).
    pub sni: Option<String>,
    /// `routes[].match.alpn`: see [`Match::alpn`](super::Match::alpn).
    pub alpn: Option<Texts>,
    /// `routes[].match.client`: see [`Match::client`](super::Match::client).
    pub client: Option<Texts>,
    /// `routes[].match.attributes`: see [`Match::attributes`](super::Match::attributes).
    pub attributes: Option<BTreeMap<String, Text>>,
}

/// A `backends.*` entry as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a backend (servers, balance, health, proxy_protocol, connect_timeout, retries, source)"
)]
pub struct RawBackend {
    /// `backends.*.servers`: see [`Backend::servers`](super::Backend::servers).
    pub servers: Option<RawServers>,
    /// `backends.*.balance`: see [`Backend::balance`](super::Backend::balance).
    pub balance: Option<Balance>,
    /// `backends.*.health`: see [`Backend::health`](super::Backend::health).
    pub health: Option<RawHealth>,
    /// `backends.*.proxy_protocol`: see [`Backend::proxy_protocol`](super::Backend::proxy_protocol).
    pub proxy_protocol: Option<ProxyProtocol>,
    /// `backends.*.connect_timeout`: see [`Backend::connect_timeout`](super::Backend::connect_timeout).
    pub connect_timeout: Option<Text>,
    /// `backends.*.retries`: see [`Backend::retries`](super::Backend::retries).
    pub retries: Option<u32>,
    /// `backends.*.source`: see [`Backend::source`](super::Backend::source).
    pub source: Option<super::SourceAddr>,
}

/// `backends.*.health` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "health checks (interval, timeout, rise, fall)")]
pub struct RawHealth {
    /// `backends.*.health.interval`: see [`Health::interval`](super::Health::interval).
    pub interval: Option<Text>,
    /// `backends.*.health.timeout`: see [`Health::timeout`](super::Health::timeout).
    pub timeout: Option<Text>,
    /// `backends.*.health.rise`: see [`Health::rise`](super::Health::rise).
    pub rise: Option<u32>,
    /// `backends.*.health.fall`: see [`Health::fall`](super::Health::fall).
    pub fall: Option<u32>,
}

/// The `plugins` section as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "plugin settings (dir, config, limits, cache_dir, direct_calls)")]
pub struct RawPlugins {
    /// `plugins.dir`: see [`Plugins::dir`](super::Plugins::dir).
    pub dir: Option<String>,
    /// `plugins.config`: see [`Plugins::config`](super::Plugins::config).
    pub config: Option<BTreeMap<String, serde_json::Value>>,
    /// `plugins.limits`: see [`Plugins::limits`](super::Plugins::limits).
    pub limits: Option<RawPluginLimits>,
    /// `plugins.cache_dir`: see [`Plugins::cache_dir`](super::Plugins::cache_dir).
    pub cache_dir: Option<String>,
    /// `plugins.direct_calls`: see [`Plugins::direct_calls`](super::Plugins::direct_calls).
    pub direct_calls: Option<bool>,
}

/// `plugins.limits` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "plugin limits (memory, call_timeout)")]
pub struct RawPluginLimits {
    /// `plugins.limits.memory`: see [`PluginLimits::memory`](super::PluginLimits::memory).
    pub memory: Option<Text>,
    /// `plugins.limits.call_timeout`: see [`PluginLimits::call_timeout`](super::PluginLimits::call_timeout).
    pub call_timeout: Option<Text>,
}

/// The `limits` section as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "limits (max_connections, max_connections_per_ip, ipv6_prefix, idle_timeout, drain_timeout)"
)]
pub struct RawLimits {
    /// `limits.max_connections`: see [`Limits::max_connections`](super::Limits::max_connections).
    pub max_connections: Option<usize>,
    /// `limits.max_connections_per_ip`: see [`Limits::max_connections_per_ip`](super::Limits::max_connections_per_ip).
    pub max_connections_per_ip: Option<usize>,
    /// `limits.ipv6_prefix`: see [`Limits::ipv6_prefix`](super::Limits::ipv6_prefix).
    pub ipv6_prefix: Option<u8>,
    /// `limits.idle_timeout`: see [`Limits::idle_timeout`](super::Limits::idle_timeout).
    pub idle_timeout: Option<Text>,
    /// `limits.drain_timeout`: see [`Limits::drain_timeout`](super::Limits::drain_timeout).
    pub drain_timeout: Option<Text>,
}

/// The `udp` section as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "udp settings (session_timeout, max_sessions, max_sessions_per_ip)")]
pub struct RawUdp {
    /// `udp.session_timeout`: see [`Udp::session_timeout`](super::Udp::session_timeout).
    pub session_timeout: Option<Text>,
    /// `udp.max_sessions`: see [`Udp::max_sessions`](super::Udp::max_sessions).
    pub max_sessions: Option<usize>,
    /// `udp.max_sessions_per_ip`: see [`Udp::max_sessions_per_ip`](super::Udp::max_sessions_per_ip).
    pub max_sessions_per_ip: Option<usize>,
}

/// The `admin` section as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "admin settings (bind, token)")]
pub struct RawAdmin {
    /// `admin.bind`: see [`Admin::bind`](super::Admin::bind).
    pub bind: Option<Text>,
    /// `admin.token`: see [`Admin::token`](super::Admin::token).
    pub token: Option<String>,
}

/// The `reload` section as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "reload settings (watch)")]
pub struct RawReload {
    /// `reload.watch`: see [`Reload::watch`](super::Reload::watch).
    pub watch: Option<bool>,
}

/// The `log` section as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "log settings (level, format)")]
pub struct RawLog {
    /// `log.level`: see [`Log::level`](super::Log::level).
    pub level: Option<String>,
    /// `log.format`: see [`Log::format`](super::Log::format).
    pub format: Option<LogFormat>,
}

/// A scalar kept as its text: `3s`, `4096`, `16MiB`, `127.0.0.1:80`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text(
    /// The scalar's text, as written.
    pub String,
);

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

/// `backends.*.servers` as written: one entry or a list of them.
#[derive(Debug, Clone, Default)]
pub struct RawServers {
    /// The entries, in order.
    pub items: Vec<RawServer>,
    /// Written as a single entry, not a list.
    pub single: bool,
}

/// One `backends.*.servers` entry: `IP:port` or `host:port` as a scalar, or
/// a mapping with a weight or an SRV name.
#[derive(Debug, Clone)]
pub enum RawServer {
    Text(String),
    Map(RawServerMap),
}

/// A `backends.*.servers` entry written as a mapping.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a server (addr and weight, or srv)")]
pub struct RawServerMap {
    /// `IP:port` or `host:port`.
    pub addr: Option<Text>,
    /// An SRV name whose records give the servers.
    pub srv: Option<String>,
    /// The server's share of connections.
    pub weight: Option<u32>,
}

struct ServerVisitor;

impl<'de> Visitor<'de> for ServerVisitor {
    type Value = RawServer;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a server: IP:port, host:port, { addr: host:port, weight: 2 } or { srv: _service._tcp.name }")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawServer, E> {
        Ok(RawServer::Text(v.to_owned()))
    }
    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<RawServer, A::Error> {
        RawServerMap::deserialize(de::value::MapAccessDeserializer::new(map)).map(RawServer::Map)
    }
}

impl<'de> Deserialize<'de> for RawServer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ServerVisitor)
    }
}

struct ServersVisitor;

impl<'de> Visitor<'de> for ServersVisitor {
    type Value = RawServers;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("one server or a list of servers")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawServers, E> {
        Ok(RawServers { items: vec![RawServer::Text(v.to_owned())], single: true })
    }
    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<RawServers, A::Error> {
        Ok(RawServers { items: vec![ServerVisitor.visit_map(map)?], single: true })
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawServers, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(RawServers { items, single: false })
    }
}

impl<'de> Deserialize<'de> for RawServers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ServersVisitor)
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
