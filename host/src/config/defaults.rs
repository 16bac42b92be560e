//! Every default of the configuration, and every allowed range, in one
//! place. The serde layer leaves omitted keys empty and the typed layer
//! (`Default` impls and the validator) fills them in from these constants,
//! so this table is the whole truth:
//!
//! | key | default | allowed |
//! | --- | --- | --- |
//! | `listeners[].transport` | `tcp` | `tcp`, `udp` |
//! | `listeners[].detectors` | every loaded detector of the transport, in the default order | detector plugin names |
//! | `listeners[].detect.max_bytes` | `4096` | 16 to 65536 bytes |
//! | `listeners[].detect.timeout` | `3s` | more than 0 |
//! | `listeners[].on_timeout` | none: close the connection | a route name |
//! | `listeners[].default` | none: close the connection | a route name |
//! | `listeners[].accept_proxy` | none: no source sends PROXY headers | `from`: networks (CIDRs or addresses) |
//! | `routes[].match` | none: the route is reached only by name | |
//! | `routes[].hooks` | `[]` | hook plugin names |
//! | `routes[].on_hook_failure` | `close`: a connection whose hook is disabled or cannot start is closed | `close`, `bypass` |
//! | `backends.*.balance` | `round_robin` | `round_robin`, `least_conn`, `random`, `hash_client_ip` |
//! | `backends.*.health` | none: passive checks only | |
//! | `backends.*.health.interval` | `5s` | more than 0 |
//! | `backends.*.health.timeout` | `1s` | more than 0 |
//! | `backends.*.health.rise` | `2` | at least 1 |
//! | `backends.*.health.fall` | `3` | at least 1 |
//! | `backends.*.proxy_protocol` | `none` | `none`, `v1`, `v2` |
//! | `backends.*.connect_timeout` | `3s` | more than 0 |
//! | `backends.*.retries` | `1` | any |
//! | `backends.*.source` | `host`: the host's address | `host`, `client` (transparent proxying) |
//! | `backends.*.servers[].weight` | `1` | 1 to 256 |
//! | `resolver.servers` | none: the system's resolvers (`/etc/resolv.conf`) | `IP:port` of DNS servers |
//! | `resolver.resolve_interval` | `30s` (sooner when a record's TTL is lower) | at least 1s |
//! | `plugins.dir` | none: built-in plugins only | a directory, relative to the config file |
//! | `plugins.cache_dir` | none: the default cache | a directory, relative to the config file |
//! | `plugins.direct_calls` | `true` | `true`, `false` (plugin files' detectors only through their component) |
//! | `plugins.limits.memory` | `16MiB` | 1MiB to 64MiB |
//! | `plugins.limits.call_timeout` | `10ms` | 1ms to 1s |
//! | `limits.max_connections` | `10000` | at least 1 |
//! | `limits.max_connections_per_ip` | `100` | at least 1 |
//! | `limits.ipv6_prefix` | `64`: IPv6 clients count per /64 in the per-IP limits | 1 to 128 |
//! | `limits.idle_timeout` | `10m` | more than 0 |
//! | `limits.drain_timeout` | `30s` | any (0 = do not wait) |
//! | `udp.session_timeout` | `60s` | more than 0 |
//! | `udp.max_sessions` | `10000` | at least 1 |
//! | `udp.max_sessions_per_ip` | `100` | at least 1 |
//! | `admin` | none: no admin listener | |
//! | `admin.token` | none: state-changing requests need no token | 16 characters or more, no spaces |
//! | `reload.watch` | `true` | |
//! | `log.level` | `info` | a level or a `tracing` filter |
//! | `log.format` | `text` | `text`, `json` |
//! | `runtime.workers` | `0`: one per CPU core | 0 to 1024 |

use std::time::Duration;

use super::{Balance, LogFormat, ProxyProtocol, SourceAddr, Transport};

/// One kibibyte.
pub const KIB: u64 = 1024;
/// One mebibyte.
pub const MIB: u64 = 1024 * KIB;

/// `listeners[].transport`.
pub const TRANSPORT: Transport = Transport::Tcp;
/// `listeners[].detect.max_bytes`.
pub const DETECT_MAX_BYTES: usize = 4096;
/// Smallest allowed `listeners[].detect.max_bytes`.
pub const DETECT_MAX_BYTES_MIN: usize = 16;
/// Largest allowed `listeners[].detect.max_bytes`.
pub const DETECT_MAX_BYTES_MAX: usize = 65536;
/// `listeners[].detect.timeout`.
pub const DETECT_TIMEOUT: Duration = Duration::from_secs(3);

/// `backends.*.balance`.
pub const BALANCE: Balance = Balance::RoundRobin;
/// `backends.*.proxy_protocol`.
pub const PROXY_PROTOCOL: ProxyProtocol = ProxyProtocol::None;
/// `backends.*.connect_timeout`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// `backends.*.retries`.
pub const RETRIES: u32 = 1;
/// `backends.*.source`.
pub const SOURCE: SourceAddr = SourceAddr::Host;
/// `backends.*.health.interval`.
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(5);
/// `backends.*.health.timeout`.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// `backends.*.health.rise`.
pub const HEALTH_RISE: u32 = 2;
/// `backends.*.health.fall`.
pub const HEALTH_FALL: u32 = 3;

/// `plugins.limits.memory`.
pub const PLUGIN_MEMORY: u64 = 16 * MIB;
/// Smallest allowed `plugins.limits.memory`.
pub const PLUGIN_MEMORY_MIN: u64 = MIB;
/// Largest allowed `plugins.limits.memory`.
pub const PLUGIN_MEMORY_MAX: u64 = 64 * MIB;
/// `plugins.limits.call_timeout`.
pub const PLUGIN_CALL_TIMEOUT: Duration = Duration::from_millis(10);
/// Smallest allowed `plugins.limits.call_timeout`.
pub const PLUGIN_CALL_TIMEOUT_MIN: Duration = Duration::from_millis(1);
/// Largest allowed `plugins.limits.call_timeout`.
pub const PLUGIN_CALL_TIMEOUT_MAX: Duration = Duration::from_secs(1);

/// `limits.max_connections`.
pub const MAX_CONNECTIONS: usize = 10_000;
/// `limits.max_connections_per_ip`.
pub const MAX_CONNECTIONS_PER_IP: usize = 100;
/// `backends.*.servers[].weight`.
pub const SERVER_WEIGHT: u32 = 1;
/// Largest allowed `backends.*.servers[].weight`.
pub const SERVER_WEIGHT_MAX: u32 = 256;
/// `resolver.resolve_interval`.
pub const RESOLVE_INTERVAL: Duration = Duration::from_secs(30);
/// `limits.ipv6_prefix`.
pub const IPV6_PREFIX: u8 = 64;
/// `limits.idle_timeout`.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// `limits.drain_timeout`.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// `udp.session_timeout`.
pub const UDP_SESSION_TIMEOUT: Duration = Duration::from_secs(60);
/// `udp.max_sessions`.
pub const UDP_MAX_SESSIONS: usize = 10_000;
/// `udp.max_sessions_per_ip`.
pub const UDP_MAX_SESSIONS_PER_IP: usize = 100;
/// `runtime.workers` (0 = one per CPU core).
pub const WORKERS: usize = 0;
/// Largest allowed `runtime.workers`.
pub const WORKERS_MAX: usize = 1024;

/// `reload.watch`.
pub const RELOAD_WATCH: bool = true;
/// `log.level`.
pub const LOG_LEVEL: &str = "info";
/// `log.format`.
pub const LOG_FORMAT: LogFormat = LogFormat::Text;
