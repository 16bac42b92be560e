//! The typed configuration the rest of the proxy reads: every value parsed,
//! checked and defaulted. Nothing here touches YAML; the raw serde layer
//! lives in `raw.rs` and the checks that turn it into these types in
//! `validate.rs`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::defaults as d;
use super::locate::Locator;

/// A whole configuration file, validated.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// The config file it came from (empty for [`Config::default`]).
    pub file: PathBuf,
    /// Sockets to accept on, in file order.
    pub listeners: Vec<Listener>,
    /// Routes, tried in file order; the first whose `match` holds wins.
    pub routes: Vec<Route>,
    /// Backend pools, by name.
    pub backends: BTreeMap<String, Backend>,
    /// Where plugins come from, their per-plugin config and sandbox limits.
    pub plugins: Plugins,
    /// Connection limits and timeouts.
    pub limits: Limits,
    /// UDP session handling.
    pub udp: Udp,
    /// The admin listener (metrics, status, reload); `None` = no admin listener.
    pub admin: Option<Admin>,
    /// How config changes are picked up.
    pub reload: Reload,
    /// Logging.
    pub log: Log,
    /// Worker threads.
    pub runtime: Runtime,
    /// How server names are resolved.
    pub resolver: Resolver,
    /// The first 16 hex digits of the file's SHA-256: which configuration
    /// is in force, for the metrics and `/status`.
    pub hash: String,
    /// The source text, indexed, so later stages can locate their problems.
    pub(super) source: Source,
}

/// A listening socket and how connections on it are detected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Unique name, used in logs, metrics and the plugins' `peer.listener`.
    pub name: String,
    /// Addresses to bind (at least one; YAML takes one address or a list).
    pub bind: Vec<SocketAddr>,
    /// `tcp` or `udp`.
    pub transport: Transport,
    /// Detector plugins in the order to try; `None` = every loaded detector
    /// of this transport, in the default order.
    pub detectors: Option<Vec<String>>,
    /// How many bytes and how long detection may wait for.
    pub detect: Detect,
    /// Route for clients that send nothing before `detect.timeout`
    /// (server-first protocols); `None` = close.
    pub on_timeout: Option<String>,
    /// Route for bytes no detector recognises; `None` = close.
    pub default: Option<String>,
    /// Sources whose connections (or datagrams) start with a PROXY header
    /// carrying the real client address; `None` = no source is trusted.
    pub accept_proxy: Option<AcceptProxy>,
}

/// `listeners[].accept_proxy`: a load balancer in front of the listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptProxy {
    /// Networks of the load balancers. A connection from one of them must
    /// start with a PROXY v1 or v2 header; others are served as they come.
    pub from: Vec<ipnet::IpNet>,
}

impl AcceptProxy {
    /// Whether connections from `ip` must carry a PROXY header.
    pub fn trusts(&self, ip: std::net::IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.from.iter().any(|net| net.contains(&ip))
    }
}

/// The transport of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// Stream connections.
    Tcp,
    /// Datagrams, grouped into sessions per client address.
    Udp,
}

/// Limits of the detection phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detect {
    /// The most client bytes buffered while detecting (16 to 65536).
    pub max_bytes: usize,
    /// How long to wait for the detectors to decide.
    pub timeout: Duration,
}

/// A route: which detected connections it takes, and where they go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Unique name, used by listeners' `default`/`on_timeout` and in logs.
    pub name: String,
    /// What the connection must look like; `None` = reached only by name.
    pub r#match: Option<Match>,
    /// The backend pool it sends to.
    pub to: String,
    /// Hook plugins the stream passes through, in order.
    pub hooks: Vec<String>,
    /// What a new connection does when one of its hooks is disabled or
    /// cannot be started.
    pub on_hook_failure: OnHookFailure,
}

/// What a connection on a hooked route does when a hook is unavailable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnHookFailure {
    /// The connection is closed (a hook may be there to protect the server).
    #[default]
    Close,
    /// The connection goes on without that hook.
    Bypass,
}

/// Conditions of a route, combined with AND; an empty list matches anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Match {
    /// Detected protocol name (`tls`, `http`, `ssh`, ...).
    pub protocol: Option<String>,
    /// Case-insensitive glob over the TLS server name (checked to compile;
    /// the router compiles it).
    pub sni: Option<String>,
    /// ALPN protocols, any of which may be offered; empty = any.
    pub alpn: Vec<String>,
    /// Client networks, any of which may hold the client; empty = any.
    /// A bare IP is a /32 or /128 network.
    pub client: Vec<ipnet::IpNet>,
    /// Detector attributes that must be present with these values.
    pub attributes: BTreeMap<String, String>,
}

/// A pool of servers behind a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// Servers, fixed or found by DNS (at least one entry).
    pub servers: Vec<ServerSpec>,
    /// How a server is picked.
    pub balance: Balance,
    /// Active health checks; `None` = passive only (failed connects).
    pub health: Option<Health>,
    /// PROXY protocol header written to the server before the client's bytes.
    pub proxy_protocol: ProxyProtocol,
    /// How long a connect to one server may take.
    pub connect_timeout: Duration,
    /// How many other servers to try after a failed connect.
    pub retries: u32,
    /// The address connections to the servers leave from.
    pub source: SourceAddr,
}

/// One entry of `backends.*.servers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerSpec {
    /// A fixed address.
    Addr { addr: SocketAddr, weight: u32 },
    /// A host name and a port: a server for each of its A and AAAA records.
    Host { host: String, port: u16, weight: u32 },
    /// An SRV name: a server for each target of its records of the lowest
    /// priority, with the record's port and weight.
    Srv { name: String },
}

impl ServerSpec {
    /// Whether this entry is found by DNS.
    pub fn is_name(&self) -> bool {
        !matches!(self, ServerSpec::Addr { .. })
    }
}

impl std::fmt::Display for ServerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let weight = |f: &mut std::fmt::Formatter<'_>, w: u32| if w == 1 { Ok(()) } else { write!(f, " (weight {w})") };
        match self {
            ServerSpec::Addr { addr, weight: w } => {
                write!(f, "{addr}")?;
                weight(f, *w)
            }
            ServerSpec::Host { host, port, weight: w } => {
                write!(f, "{host}:{port}")?;
                weight(f, *w)
            }
            ServerSpec::Srv { name } => write!(f, "srv {name}"),
        }
    }
}

/// `resolver`: how server names are resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolver {
    /// DNS servers to ask; empty = the system's (`/etc/resolv.conf`).
    pub servers: Vec<SocketAddr>,
    /// How often names are resolved again (sooner when a record's TTL is
    /// lower, but not more than once a second).
    pub resolve_interval: Duration,
}

/// Load-balancing policy of a backend pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Each server in turn.
    RoundRobin,
    /// The server with the fewest open connections.
    LeastConn,
    /// A server picked at random.
    Random,
    /// A server picked by a hash of the client IP (sticky).
    HashClientIp,
}

/// Active health checks of a backend pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// Time between two checks of one server.
    pub interval: Duration,
    /// How long one check may take.
    pub timeout: Duration,
    /// Consecutive successes that mark a down server up.
    pub rise: u32,
    /// Consecutive failures that mark an up server down.
    pub fall: u32,
}

/// The address backend connections leave from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceAddr {
    /// The host's own, as the routing table chooses.
    Host,
    /// The client's own address (transparent proxying: `IP_TRANSPARENT`,
    /// which needs `CAP_NET_ADMIN` and routing that brings the server's
    /// replies back to this host).
    Client,
}

/// PROXY protocol header sent to backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProxyProtocol {
    /// No header.
    None,
    /// Text header, version 1.
    V1,
    /// Binary header, version 2.
    V2,
}

/// Plugins: where they come from, their config and their sandbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Plugins {
    /// Directory of `*.wasm` plugins, resolved against the config file's
    /// directory; `None` = built-in plugins only.
    pub dir: Option<PathBuf>,
    /// Per-plugin config by plugin name, converted from YAML to JSON.
    pub config: BTreeMap<String, serde_json::Value>,
    /// Sandbox limits of every plugin instance.
    pub limits: PluginLimits,
    /// Directory of compiled components, resolved like `dir`; `None` = the
    /// default cache.
    pub cache_dir: Option<PathBuf>,
    /// Whether plugin files' detectors and hooks may be called through their
    /// main core module when their shape permits (built-ins always are).
    pub direct_calls: bool,
}

impl Default for Plugins {
    fn default() -> Self {
        Plugins {
            dir: None,
            config: BTreeMap::new(),
            limits: PluginLimits::default(),
            cache_dir: None,
            direct_calls: true,
        }
    }
}

/// Sandbox limits of one plugin instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PluginLimits {
    /// Linear memory cap in bytes (1 MiB to 64 MiB).
    pub memory: u64,
    /// Time budget of one call (1ms to 1s).
    pub call_timeout: Duration,
}

/// Connection limits and timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open connections across all listeners (at least 1).
    pub max_connections: usize,
    /// Open connections from one client IP (at least 1).
    pub max_connections_per_ip: usize,
    /// IPv6 clients are counted per network of this prefix length (1 to
    /// 128) in the per-IP limits of TCP and UDP: one host usually has a
    /// whole /64 and could change address to evade a per-address limit.
    pub ipv6_prefix: u8,
    /// A connection with no bytes either way for this long is closed.
    pub idle_timeout: Duration,
    /// How long shutdown waits for open connections before closing them.
    pub drain_timeout: Duration,
}

/// How the proxy uses the machine's cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Runtime {
    /// Worker threads, each with its own event loop and its own accepting
    /// socket per listener address (`SO_REUSEPORT`); 0 = one per CPU core.
    pub workers: usize,
}

impl Runtime {
    /// The number of workers to start: `workers`, or one per CPU core.
    pub fn resolved_workers(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            n => n,
        }
    }
}

/// UDP session handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Udp {
    /// A session with no datagram either way for this long expires.
    pub session_timeout: Duration,
    /// The most sessions open at once (at least 1).
    pub max_sessions: usize,
    /// The most sessions open at once from one client IP (at least 1).
    pub max_sessions_per_ip: usize,
}

/// The admin listener: `/metrics`, `/status`, `POST /reload`.
#[derive(Clone, PartialEq, Eq)]
pub struct Admin {
    /// Address of the admin HTTP listener.
    pub bind: SocketAddr,
    /// A secret that state-changing requests must carry as
    /// `Authorization: Bearer …`; `None` = not required.
    pub token: Option<String>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let token = self.token.as_ref().map(|_| "(set)");
        f.debug_struct("Admin").field("bind", &self.bind).field("token", &token).finish()
    }
}

/// How config changes are picked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reload {
    /// Watch the config file and the plugins directory for changes.
    pub watch: bool,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    /// A level (`error` .. `trace`) or a `tracing` filter directive.
    pub level: String,
    /// Output format.
    pub format: LogFormat,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The indexed source text of a config, kept to locate later problems.
#[derive(Clone, Default)]
pub(crate) struct Source(pub(super) Option<Arc<Locator>>);

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Source { .. }")
    }
}

macro_rules! names {
    ($ty:ty { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// The name of this value as written in YAML.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $name),+ }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
names!(Transport { Tcp => "tcp", Udp => "udp" });
names!(Balance {
    RoundRobin => "round_robin",
    LeastConn => "least_conn",
    Random => "random",
    HashClientIp => "hash_client_ip",
});
names!(ProxyProtocol { None => "none", V1 => "v1", V2 => "v2" });
names!(SourceAddr { Host => "host", Client => "client" });
names!(OnHookFailure { Close => "close", Bypass => "bypass" });
names!(LogFormat { Text => "text", Json => "json" });

macro_rules! defaults {
    ($($ty:ty => $value:expr;)+) => {
        $(impl Default for $ty {
            fn default() -> Self {
                $value
            }
        })+
    };
}
defaults! {
    Transport => d::TRANSPORT;
    Balance => d::BALANCE;
    ProxyProtocol => d::PROXY_PROTOCOL;
    LogFormat => d::LOG_FORMAT;
    Detect => Detect { max_bytes: d::DETECT_MAX_BYTES, timeout: d::DETECT_TIMEOUT };
    Health => Health {
        interval: d::HEALTH_INTERVAL,
        timeout: d::HEALTH_TIMEOUT,
        rise: d::HEALTH_RISE,
        fall: d::HEALTH_FALL,
    };
    Backend => Backend {
        servers: Vec::new(),
        balance: d::BALANCE,
        health: None,
        proxy_protocol: d::PROXY_PROTOCOL,
        connect_timeout: d::CONNECT_TIMEOUT,
        retries: d::RETRIES,
        source: d::SOURCE,
    };
    PluginLimits => PluginLimits { memory: d::PLUGIN_MEMORY, call_timeout: d::PLUGIN_CALL_TIMEOUT };
    Limits => Limits {
        max_connections: d::MAX_CONNECTIONS,
        max_connections_per_ip: d::MAX_CONNECTIONS_PER_IP,
        ipv6_prefix: d::IPV6_PREFIX,
        idle_timeout: d::IDLE_TIMEOUT,
        drain_timeout: d::DRAIN_TIMEOUT,
    };
    Udp => Udp {
        session_timeout: d::UDP_SESSION_TIMEOUT,
        max_sessions: d::UDP_MAX_SESSIONS,
        max_sessions_per_ip: d::UDP_MAX_SESSIONS_PER_IP,
    };
    Reload => Reload { watch: d::RELOAD_WATCH };
    Resolver => Resolver { servers: Vec::new(), resolve_interval: d::RESOLVE_INTERVAL };
    Runtime => Runtime { workers: d::WORKERS };
    Log => Log { level: d::LOG_LEVEL.to_owned(), format: d::LOG_FORMAT };
}
