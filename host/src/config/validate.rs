//! Raw config → typed [`Config`]: fills in defaults, parses addresses,
//! sizes and durations, checks every rule, and collects every problem with
//! the position of its key instead of stopping at the first. The global
//! sections (plugins, limits, udp, admin, reload, log) are in `sections.rs`.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use super::defaults as d;
use super::error::Problem;
use super::locate::Locator;
use super::raw::{RawBackend, RawConfig, RawListener, RawMatch, RawRoute, RawServer, RawServers, Text, Texts};
use super::units::{format_size, parse_duration, parse_size};
use super::{AcceptProxy, Backend, Config, Detect, Health, Listener, Match, Route, ServerSpec};

/// Collects problems, each located by its key path.
pub(crate) struct Checker<'a> {
    /// The config file, named in problems and base of relative paths.
    pub file: &'a Path,
    /// Positions of the file's keys.
    loc: &'a Locator,
    /// Every problem found so far, in the order found.
    pub problems: Vec<Problem>,
}

impl<'a> Checker<'a> {
    pub fn new(file: &'a Path, loc: &'a Locator) -> Self {
        Checker { file, loc, problems: Vec::new() }
    }

    /// Records a problem at `key` (or its nearest written ancestor).
    pub fn report(&mut self, key: impl Into<String>, message: impl Into<String>) {
        let key = key.into();
        let pos = self.loc.locate(&key);
        self.problems.push(Problem::new(self.file, key, message).at(pos));
    }

    /// A duration, `default` when omitted; `positive` rejects zero.
    pub fn duration(&mut self, key: String, v: Option<&Text>, default: Duration, positive: bool) -> Duration {
        let Some(Text(text)) = v else { return default };
        match parse_duration(text) {
            Ok(d) if positive && d.is_zero() => {
                self.report(key, "must be more than 0");
                default
            }
            Ok(d) => d,
            Err(message) => {
                self.report(key, message);
                default
            }
        }
    }

    /// A size in bytes within `min..=max`, `default` when omitted.
    pub fn size(&mut self, key: String, v: Option<&Text>, default: u64, (min, max): (u64, u64)) -> u64 {
        let Some(Text(text)) = v else { return default };
        match parse_size(text) {
            Ok(n) if (min..=max).contains(&n) => n,
            Ok(_) => {
                let (min, max) = (format_size(min), format_size(max));
                self.report(key, format!("`{text}` is out of range: must be between {min} and {max}"));
                default
            }
            Err(message) => {
                self.report(key, message);
                default
            }
        }
    }

    /// A count that must be at least 1.
    pub fn at_least_one<T: PartialEq + From<u8>>(&mut self, key: String, v: Option<T>, default: T) -> T {
        match v {
            Some(n) if n == T::from(0) => {
                self.report(key, "must be at least 1");
                default
            }
            Some(n) => n,
            None => default,
        }
    }

    /// An `IP:port` socket address.
    pub fn addr(&mut self, key: String, text: &str) -> Option<SocketAddr> {
        let text = text.trim();
        if let Ok(addr) = text.parse() {
            return Some(addr);
        }
        let why = if text.parse::<IpAddr>().is_ok() {
            format!("`{text}` has no port (write it like 127.0.0.1:80 or [::1]:80)")
        } else {
            format!(
                "not an address: `{text}` (write an IP address and a port, like 127.0.0.1:80 or [::1]:80; host names are not resolved)"
            )
        };
        self.report(key, why);
        None
    }

    /// Every entry of a name list is non-empty and listed once.
    fn names(&mut self, key: &str, names: &[String], what: &str) {
        for (i, name) in names.iter().enumerate() {
            if name.trim().is_empty() {
                self.report(format!("{key}[{i}]"), format!("empty {what} name"));
            } else if names[..i].contains(name) {
                self.report(format!("{key}[{i}]"), format!("{what} `{name}` is listed twice"));
            }
        }
    }

    /// A required, unique name; `seen` maps names to their first key path.
    fn unique_name(&mut self, key: String, name: Option<&str>, what: &str, seen: &mut HashMap<String, String>) {
        match name.map(str::trim) {
            None | Some("") => self.report(key, format!("every {what} needs a non-empty `name`")),
            Some(name) => {
                if let Some(first) = seen.get(name) {
                    let first = first.trim_end_matches(".name");
                    self.report(key, format!("{what} name `{name}` is already used by {first}"));
                } else {
                    seen.insert(name.to_owned(), key);
                }
            }
        }
    }
}

/// Whether `name` is a DNS name refractium can look up: dot-separated
/// labels of letters, digits, `-` and `_` (SRV names start with `_`), each
/// 1 to 63 long, 253 in all, and not an IP address.
fn dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.parse::<IpAddr>().is_err()
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// "no route named `x`; the routes are `a`, `b`" and the like.
fn missing<'n>(what: &str, plural: &str, name: &str, known: impl Iterator<Item = &'n String>) -> String {
    let known: Vec<String> = known.map(|n| format!("`{n}`")).collect();
    if known.is_empty() {
        format!("no {what} named `{name}`: no {plural} are defined")
    } else {
        format!("no {what} named `{name}`; the {plural} are {}", known.join(", "))
    }
}

/// Builds the typed config; problems are returned alongside, never thrown.
pub(crate) fn build(raw: RawConfig, file: &Path, loc: &Locator) -> (Config, Vec<Problem>) {
    let mut c = Checker::new(file, loc);
    let backends = c.backends(raw.backends.unwrap_or_default());
    let routes = c.routes(raw.routes.unwrap_or_default(), &backends);
    let listeners = c.listeners(raw.listeners.unwrap_or_default(), &routes);
    let config = Config {
        file: file.to_path_buf(),
        listeners,
        routes,
        backends,
        plugins: c.plugins(raw.plugins),
        limits: c.limits(raw.limits),
        udp: c.udp(raw.udp),
        runtime: c.runtime(raw.runtime),
        admin: c.admin(raw.admin),
        reload: c.reload(raw.reload),
        log: c.log(raw.log),
        resolver: c.resolver(raw.resolver),
        hash: String::new(),
        source: Default::default(),
    };
    (config, c.problems)
}

impl Checker<'_> {
    fn listeners(&mut self, raw: Vec<RawListener>, routes: &[Route]) -> Vec<Listener> {
        if raw.is_empty() {
            self.report("listeners", "at least one listener is needed");
        }
        let mut names = HashMap::new();
        let mut bound: HashMap<(SocketAddr, super::Transport), String> = HashMap::new();
        let mut out = Vec::new();
        for (i, l) in raw.into_iter().enumerate() {
            let key = format!("listeners[{i}]");
            self.unique_name(format!("{key}.name"), l.name.as_deref(), "listener", &mut names);
            let name = l.name.unwrap_or_default();
            let transport = l.transport.unwrap_or(d::TRANSPORT);
            let bind = self.addrs(&format!("{key}.bind"), l.bind.as_ref(), "listen on, like 127.0.0.1:8443");
            // Port 0 asks the system for a free port each time: never a clash.
            for (j, addr) in bind.iter().enumerate().filter(|(_, a)| a.port() != 0) {
                if let Some(first) = bound.get(&(*addr, transport)) {
                    let message = format!("`{addr}` ({transport}) is already bound by listener `{first}`");
                    self.report(element(&format!("{key}.bind"), l.bind.as_ref(), j), message);
                } else {
                    bound.insert((*addr, transport), name.clone());
                }
            }
            if let Some(detectors) = &l.detectors {
                self.names(&format!("{key}.detectors"), detectors, "detector");
            }
            let raw_detect = l.detect.as_ref();
            let range = (d::DETECT_MAX_BYTES_MIN as u64, d::DETECT_MAX_BYTES_MAX as u64);
            let max = raw_detect.and_then(|r| r.max_bytes.as_ref());
            let max_bytes = self.size(format!("{key}.detect.max_bytes"), max, d::DETECT_MAX_BYTES as u64, range);
            let timeout = raw_detect.and_then(|r| r.timeout.as_ref());
            let timeout = self.duration(format!("{key}.detect.timeout"), timeout, d::DETECT_TIMEOUT, true);
            for (field, route) in [("on_timeout", &l.on_timeout), ("default", &l.default)] {
                if let Some(route) = route
                    && !routes.iter().any(|r| r.name == *route)
                {
                    let message = missing("route", "routes", route, routes.iter().map(|r| &r.name));
                    self.report(format!("{key}.{field}"), message);
                }
            }
            let detect = Detect { max_bytes: usize::try_from(max_bytes).unwrap_or(d::DETECT_MAX_BYTES), timeout };
            let accept_proxy = l.accept_proxy.as_ref().map(|a| {
                let key = format!("{key}.accept_proxy.from");
                if a.from.as_ref().is_none_or(|t| t.items.is_empty()) {
                    self.report(
                        &key,
                        "needs the networks of the load balancers that send PROXY headers, like [10.0.0.0/8]",
                    );
                }
                AcceptProxy { from: self.networks(&key, a.from.as_ref()) }
            });
            out.push(Listener {
                name,
                bind,
                transport,
                detectors: l.detectors,
                detect,
                on_timeout: l.on_timeout,
                default: l.default,
                accept_proxy,
            });
        }
        out
    }

    /// One address or a list of them, at least one, each `IP:port`.
    pub(super) fn addrs(&mut self, key: &str, raw: Option<&Texts>, what: &str) -> Vec<std::net::SocketAddr> {
        let Some(texts) = raw else {
            self.report(key, format!("missing: the address or list of addresses to {what}"));
            return Vec::new();
        };
        if texts.items.is_empty() {
            self.report(key, format!("needs at least one address to {what}"));
        }
        let mut out = Vec::new();
        for (j, text) in texts.items.iter().enumerate() {
            out.extend(self.addr(element(key, raw, j), text));
        }
        out
    }

    /// `backends.*.servers`: each entry `IP:port`, `host:port`, or a
    /// mapping with `addr` and `weight`, or `srv`.
    fn servers(&mut self, key: &str, raw: Option<&RawServers>) -> Vec<ServerSpec> {
        let Some(raw) = raw else {
            self.report(key, "missing: the address or list of addresses to connect to, like 127.0.0.1:8080");
            return Vec::new();
        };
        if raw.items.is_empty() {
            self.report(key, "needs at least one address to connect to, like 127.0.0.1:8080");
        }
        let mut out = Vec::new();
        for (j, item) in raw.items.iter().enumerate() {
            let at = if raw.single { key.to_owned() } else { format!("{key}[{j}]") };
            let map = match item {
                RawServer::Text(text) => {
                    out.extend(self.server(&at, text, d::SERVER_WEIGHT));
                    continue;
                }
                RawServer::Map(map) => map,
            };
            let weight = match map.weight {
                None => d::SERVER_WEIGHT,
                Some(w) if (1..=d::SERVER_WEIGHT_MAX).contains(&w) => w,
                Some(w) => {
                    let max = d::SERVER_WEIGHT_MAX;
                    self.report(format!("{at}.weight"), format!("`{w}` is not a weight from 1 to {max}"));
                    d::SERVER_WEIGHT
                }
            };
            match (&map.addr, &map.srv) {
                (Some(Text(addr)), None) => out.extend(self.server(&format!("{at}.addr"), addr, weight)),
                (None, Some(srv)) => {
                    if map.weight.is_some() {
                        self.report(format!("{at}.weight"), "an SRV name's records give the weights; remove `weight`");
                    }
                    let name = srv.trim().trim_end_matches('.').to_ascii_lowercase();
                    if dns_name(&name) {
                        out.push(ServerSpec::Srv { name });
                    } else {
                        let why = format!("not a DNS name: `{srv}` (write an SRV name like _https._tcp.web.example)");
                        self.report(format!("{at}.srv"), why);
                    }
                }
                (Some(_), Some(_)) => {
                    self.report(at, "give either `addr` (host:port) or `srv` (an SRV name), not both")
                }
                (None, None) => self.report(at, "needs `addr` (IP:port or host:port) or `srv` (an SRV name)"),
            }
        }
        out
    }

    /// One server written as `IP:port` or `host:port`.
    fn server(&mut self, key: &str, text: &str, weight: u32) -> Option<ServerSpec> {
        let text = text.trim();
        if let Ok(addr) = text.parse() {
            return Some(ServerSpec::Addr { addr, weight });
        }
        if let Some((host, port)) = text.rsplit_once(':')
            && let Ok(port) = port.parse::<u16>()
            && port != 0
            && dns_name(host)
        {
            let host = host.trim_end_matches('.').to_ascii_lowercase();
            return Some(ServerSpec::Host { host, port, weight });
        }
        let why = if text.parse::<IpAddr>().is_ok() || dns_name(text) {
            format!("`{text}` has no port (write it like 127.0.0.1:80, [::1]:80 or web.internal:80)")
        } else {
            format!(
                "not a server: `{text}` (write IP:port like 127.0.0.1:80 or [::1]:80, or host:port like web.internal:80)"
            )
        };
        self.report(key, why);
        None
    }

    /// A list of networks, each a CIDR or a bare address.
    fn networks(&mut self, key: &str, raw: Option<&Texts>) -> Vec<ipnet::IpNet> {
        let mut out = Vec::new();
        for (j, text) in raw.iter().flat_map(|t| t.items.iter()).enumerate() {
            let text = text.trim();
            let net = text.parse::<ipnet::IpNet>().map(|n| n.trunc());
            match net.or_else(|_| text.parse::<IpAddr>().map(ipnet::IpNet::from)) {
                Ok(net) => out.push(net),
                Err(_) => self.report(
                    element(key, raw, j),
                    format!("not a network: `{text}` (write a CIDR like 10.0.0.0/8, or a bare IP address)"),
                ),
            }
        }
        out
    }

    fn routes(&mut self, raw: Vec<RawRoute>, backends: &BTreeMap<String, Backend>) -> Vec<Route> {
        let mut names = HashMap::new();
        let mut out = Vec::new();
        for (i, r) in raw.into_iter().enumerate() {
            let key = format!("routes[{i}]");
            self.unique_name(format!("{key}.name"), r.name.as_deref(), "route", &mut names);
            match &r.to {
                None => self.report(format!("{key}.to"), "missing `to`: the backend pool this route sends to"),
                Some(to) if !backends.contains_key(to) => {
                    self.report(format!("{key}.to"), missing("backend", "backends", to, backends.keys()));
                }
                Some(_) => {}
            }
            let hooks = r.hooks.unwrap_or_default();
            self.names(&format!("{key}.hooks"), &hooks, "hook");
            let r#match = r.r#match.map(|m| self.match_(&format!("{key}.match"), m));
            out.push(Route {
                name: r.name.unwrap_or_default(),
                r#match,
                to: r.to.unwrap_or_default(),
                hooks,
                on_hook_failure: r.on_hook_failure.unwrap_or_default(),
            });
        }
        out
    }

    fn match_(&mut self, key: &str, m: RawMatch) -> Match {
        if let Some(protocol) = &m.protocol
            && protocol.trim().is_empty()
        {
            self.report(format!("{key}.protocol"), "empty protocol name");
        }
        if let Some(sni) = &m.sni {
            let glob = globset::GlobBuilder::new(sni).case_insensitive(true).build();
            if sni.trim().is_empty() {
                self.report(format!("{key}.sni"), "empty server name pattern");
            } else if let Err(e) = glob {
                self.report(format!("{key}.sni"), format!("not a valid glob: `{sni}` ({})", e.kind()));
            }
        }
        let alpn = m.alpn.as_ref().map(|t| t.items.clone()).unwrap_or_default();
        for (j, a) in alpn.iter().enumerate() {
            if a.is_empty() {
                self.report(element(&format!("{key}.alpn"), m.alpn.as_ref(), j), "empty ALPN protocol name");
            }
        }
        let client = self.networks(&format!("{key}.client"), m.client.as_ref());
        let mut attributes = BTreeMap::new();
        for (name, Text(value)) in m.attributes.unwrap_or_default() {
            if name.trim().is_empty() {
                self.report(format!("{key}.attributes"), "empty attribute name");
            }
            attributes.insert(name, value);
        }
        Match { protocol: m.protocol, sni: m.sni, alpn, client, attributes }
    }

    fn backends(&mut self, raw: BTreeMap<String, Option<RawBackend>>) -> BTreeMap<String, Backend> {
        let mut out = BTreeMap::new();
        for (name, b) in raw {
            let key = format!("backends.{name}");
            if name.trim().is_empty() {
                self.report(&key, "empty backend name");
            }
            let b = b.unwrap_or_default();
            let servers = self.servers(&format!("{key}.servers"), b.servers.as_ref());
            let ct = b.connect_timeout.as_ref();
            let connect_timeout = self.duration(format!("{key}.connect_timeout"), ct, d::CONNECT_TIMEOUT, true);
            let health = b.health.map(|h| {
                let k = format!("{key}.health");
                Health {
                    interval: self.duration(format!("{k}.interval"), h.interval.as_ref(), d::HEALTH_INTERVAL, true),
                    timeout: self.duration(format!("{k}.timeout"), h.timeout.as_ref(), d::HEALTH_TIMEOUT, true),
                    rise: self.at_least_one(format!("{k}.rise"), h.rise, d::HEALTH_RISE),
                    fall: self.at_least_one(format!("{k}.fall"), h.fall, d::HEALTH_FALL),
                }
            });
            let backend = Backend {
                servers,
                balance: b.balance.unwrap_or(d::BALANCE),
                health,
                proxy_protocol: b.proxy_protocol.unwrap_or(d::PROXY_PROTOCOL),
                connect_timeout,
                retries: b.retries.unwrap_or(d::RETRIES),
                source: b.source.unwrap_or(d::SOURCE),
            };
            out.insert(name, backend);
        }
        out
    }
}

/// The key path of element `j` of a one-or-many value: the value itself
/// when it was written as a single scalar.
fn element(key: &str, texts: Option<&Texts>, j: usize) -> String {
    match texts {
        Some(t) if t.single => key.to_owned(),
        _ => format!("{key}[{j}]"),
    }
}
