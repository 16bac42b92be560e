//! Routing: a pure function of (detection, client address, route table).
//!
//! Routes are tried in order; the first whose `match` holds wins. Keys of a
//! `match` combine with AND; `alpn` and `client` hold when any element does;
//! `sni` and attribute values are case-insensitive globs (`*` stands for one
//! or more characters, so `*.example.com` covers every subdomain but not
//! `example.com` itself). A route without `match` is reached only by name.

use crate::config;
use crate::plugin::Detection;
use crate::plugin::detector::Wanted;
use globset::{GlobBuilder, GlobMatcher};
use ipnet::IpNet;
use std::net::IpAddr;

/// One route, ready to match.
#[derive(Debug, Clone)]
pub struct Route {
    /// The route's name.
    pub name: String,
    /// The backend pool it sends to.
    pub pool: String,
    /// Whether its streams pass through hooks (the snapshot has them).
    pub hooked: bool,
    /// Its bytes in the metrics.
    pub bytes: crate::metrics::RouteBytes,
    matcher: Option<Matcher>,
}

#[derive(Debug, Clone)]
struct Matcher {
    protocol: Option<String>,
    sni: Option<GlobMatcher>,
    alpn: Vec<String>,
    client: Vec<IpNet>,
    attributes: Vec<(String, GlobMatcher)>,
}

/// The routes of a snapshot, in config order.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    /// The attribute keys some route matches on: the only attributes
    /// detection needs to hand over.
    wanted: Wanted,
}

fn glob(pattern: &str) -> Result<GlobMatcher, globset::Error> {
    Ok(GlobBuilder::new(pattern).case_insensitive(true).literal_separator(false).build()?.compile_matcher())
}

impl Route {
    /// A route of that name to the pool of the same name, matching nothing.
    #[cfg(test)]
    pub fn named(name: &str) -> Route {
        let bytes = crate::metrics::RouteBytes::new(name);
        Route { name: name.into(), pool: name.into(), hooked: false, bytes, matcher: None }
    }
}

impl RouteTable {
    /// Compile the routes of `config` (whose globs `config` already validated).
    pub fn new(routes: &[config::Route]) -> anyhow::Result<Self> {
        let mut table = RouteTable::default();
        for route in routes {
            let matcher = match &route.r#match {
                None => None,
                Some(m) => Some(Matcher {
                    protocol: m.protocol.clone(),
                    sni: m.sni.as_deref().map(glob).transpose()?,
                    alpn: m.alpn.clone(),
                    client: m.client.clone(),
                    attributes: m
                        .attributes
                        .iter()
                        .map(|(k, v)| Ok((k.clone(), glob(v)?)))
                        .collect::<Result<_, globset::Error>>()?,
                }),
            };
            table.routes.push(Route {
                name: route.name.clone(),
                pool: route.to.clone(),
                hooked: !route.hooks.is_empty(),
                bytes: crate::metrics::RouteBytes::new(&route.name),
                matcher,
            });
        }
        let mut keys: Vec<&str> = table
            .routes
            .iter()
            .flat_map(|r| r.matcher.iter())
            .flat_map(|m| m.attributes.iter())
            .map(|(k, _)| k.as_str())
            .collect();
        keys.sort_unstable();
        keys.dedup();
        table.wanted = Wanted::only(keys);
        Ok(table)
    }

    /// The attributes routing reads (see [`Wanted`]).
    pub fn wanted(&self) -> &Wanted {
        &self.wanted
    }

    /// The first route whose match holds for this detection and client.
    pub fn select(&self, detection: &Detection, client: IpAddr) -> Option<&Route> {
        self.routes.iter().find(|r| r.matcher.as_ref().is_some_and(|m| m.holds(detection, client)))
    }

    /// The route called `name` (for a listener's `default` and `on_timeout`).
    pub fn by_name(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.name == name)
    }
}

impl Matcher {
    fn holds(&self, d: &Detection, client: IpAddr) -> bool {
        if self.protocol.as_ref().is_some_and(|p| *p != d.protocol) {
            return false;
        }
        if let Some(sni) = &self.sni {
            match &d.sni {
                Some(name) if sni.is_match(name) => {}
                _ => return false,
            }
        }
        if !self.alpn.is_empty() && !d.alpn.iter().any(|a| self.alpn.contains(a)) {
            return false;
        }
        if !self.client.is_empty() {
            let client = canonical(client);
            if !self.client.iter().any(|net| net.contains(&client)) {
                return false;
            }
        }
        self.attributes.iter().all(|(key, value)| d.attribute(key).is_some_and(|v| value.is_match(v)))
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests;
