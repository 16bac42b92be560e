//! The global sections of the file — `plugins`, `limits`, `udp`, `admin`,
//! `reload`, `log` — checked and defaulted. Listeners, routes and backends,
//! which refer to each other, are in `validate.rs`.

use std::path::PathBuf;

use super::defaults as d;
use super::raw::{RawAdmin, RawLimits, RawLog, RawPlugins, RawReload, RawResolver, RawRuntime, RawUdp};
use super::validate::Checker;
use super::{Admin, Limits, Log, PluginLimits, Plugins, Reload, Resolver, Runtime, Udp};

/// Levels `log.level` accepts alone; anything with `=` or `,` is taken as a
/// `tracing` filter and checked by the logger.
const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

impl Checker<'_> {
    pub fn plugins(&mut self, raw: Option<RawPlugins>) -> Plugins {
        let raw = raw.unwrap_or_default();
        let dir = self.dir("plugins.dir", raw.dir);
        let cache_dir = self.dir("plugins.cache_dir", raw.cache_dir);
        let config = raw.config.unwrap_or_default();
        if config.keys().any(|name| name.trim().is_empty()) {
            self.report("plugins.config", "empty plugin name");
        }
        let limits = raw.limits.unwrap_or_default();
        let memory_range = (d::PLUGIN_MEMORY_MIN, d::PLUGIN_MEMORY_MAX);
        let memory = self.size("plugins.limits.memory".into(), limits.memory.as_ref(), d::PLUGIN_MEMORY, memory_range);
        let key = "plugins.limits.call_timeout";
        let call_timeout = self.duration(key.into(), limits.call_timeout.as_ref(), d::PLUGIN_CALL_TIMEOUT, false);
        let call_timeout = if (d::PLUGIN_CALL_TIMEOUT_MIN..=d::PLUGIN_CALL_TIMEOUT_MAX).contains(&call_timeout) {
            call_timeout
        } else {
            let text = limits.call_timeout.as_ref().map(|t| t.0.trim()).unwrap_or_default();
            self.report(key, format!("`{text}` is out of range: must be between 1ms and 1s"));
            d::PLUGIN_CALL_TIMEOUT
        };
        let direct_calls = raw.direct_calls.unwrap_or(true);
        Plugins { dir, config, limits: PluginLimits { memory, call_timeout }, cache_dir, direct_calls }
    }

    /// A directory, resolved against the config file's directory.
    fn dir(&mut self, key: &str, raw: Option<String>) -> Option<PathBuf> {
        let raw = raw?;
        if raw.trim().is_empty() {
            self.report(key, "empty path (omit the key instead)");
            return None;
        }
        let base = self.file.parent().unwrap_or(std::path::Path::new(""));
        Some(base.join(raw))
    }

    pub fn limits(&mut self, raw: Option<RawLimits>) -> Limits {
        let raw = raw.unwrap_or_default();
        let idle = raw.idle_timeout.as_ref();
        let drain = raw.drain_timeout.as_ref();
        Limits {
            max_connections: self.at_least_one(
                "limits.max_connections".into(),
                raw.max_connections,
                d::MAX_CONNECTIONS,
            ),
            max_connections_per_ip: self.at_least_one(
                "limits.max_connections_per_ip".into(),
                raw.max_connections_per_ip,
                d::MAX_CONNECTIONS_PER_IP,
            ),
            ipv6_prefix: match raw.ipv6_prefix {
                None => d::IPV6_PREFIX,
                Some(p @ 1..=128) => p,
                Some(p) => {
                    self.report("limits.ipv6_prefix", format!("`{p}` is not a prefix length from 1 to 128"));
                    d::IPV6_PREFIX
                }
            },
            idle_timeout: self.duration("limits.idle_timeout".into(), idle, d::IDLE_TIMEOUT, true),
            drain_timeout: self.duration("limits.drain_timeout".into(), drain, d::DRAIN_TIMEOUT, false),
        }
    }

    pub fn runtime(&mut self, raw: Option<RawRuntime>) -> Runtime {
        let workers = raw.and_then(|r| r.workers).unwrap_or(d::WORKERS);
        if workers > d::WORKERS_MAX {
            self.report("runtime.workers", format!("{workers} workers is too many (at most {})", d::WORKERS_MAX));
            return Runtime { workers: d::WORKERS };
        }
        Runtime { workers }
    }

    pub fn udp(&mut self, raw: Option<RawUdp>) -> Udp {
        let raw = raw.unwrap_or_default();
        let timeout = raw.session_timeout.as_ref();
        Udp {
            session_timeout: self.duration("udp.session_timeout".into(), timeout, d::UDP_SESSION_TIMEOUT, true),
            max_sessions: self.at_least_one("udp.max_sessions".into(), raw.max_sessions, d::UDP_MAX_SESSIONS),
            max_sessions_per_ip: self.at_least_one(
                "udp.max_sessions_per_ip".into(),
                raw.max_sessions_per_ip,
                d::UDP_MAX_SESSIONS_PER_IP,
            ),
        }
    }

    pub fn admin(&mut self, raw: Option<RawAdmin>) -> Option<Admin> {
        let RawAdmin { bind, token } = raw?;
        if let Some(token) = &token
            && (token.len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            self.report(
                "admin.token",
                "at least 16 characters, without spaces (a random string: openssl rand -hex 32)",
            );
        }
        match bind {
            None => {
                self.report("admin.bind", "missing: the address of the admin listener, like 127.0.0.1:9901");
                None
            }
            Some(text) => self.addr("admin.bind".into(), &text.0).map(|bind| Admin { bind, token }),
        }
    }

    pub fn resolver(&mut self, raw: Option<RawResolver>) -> Resolver {
        let raw = raw.unwrap_or_default();
        let servers = match &raw.servers {
            Some(texts) => self.addrs("resolver.servers", Some(texts), "ask, like 127.0.0.1:53"),
            None => Vec::new(),
        };
        let interval = raw.resolve_interval.as_ref();
        let resolve_interval = self.duration("resolver.resolve_interval".into(), interval, d::RESOLVE_INTERVAL, true);
        if resolve_interval < std::time::Duration::from_secs(1) {
            self.report(
                "resolver.resolve_interval",
                "at least 1s: names are not looked up more often than once a second",
            );
        }
        Resolver { servers, resolve_interval }
    }

    pub fn reload(&mut self, raw: Option<RawReload>) -> Reload {
        Reload { watch: raw.and_then(|r| r.watch).unwrap_or(d::RELOAD_WATCH) }
    }

    pub fn log(&mut self, raw: Option<RawLog>) -> Log {
        let raw = raw.unwrap_or_default();
        let level = raw.level.unwrap_or_else(|| d::LOG_LEVEL.to_owned());
        let is_filter = level.contains(['=', ',']);
        if !is_filter && !LEVELS.contains(&level.trim().to_ascii_lowercase().as_str()) {
            let message = format!(
                "unknown log level `{level}` (one of {}, or a filter like `info,refractium=debug`)",
                LEVELS.join(", ")
            );
            self.report("log.level", message);
        }
        Log { level, format: raw.format.unwrap_or(d::LOG_FORMAT) }
    }
}
