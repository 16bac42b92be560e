//! A snapshot: everything a new connection needs, built completely before it
//! is used — the config, the loaded plugins, each listener's detector chain,
//! the compiled route table and the backend pools. Connections hold the
//! snapshot they started with until they end.

use crate::balance::Pool;
use crate::config::{Config, ConfigError, Transport};
use crate::forward::hooked::RouteHooks;
use crate::plugin::PluginSet;
use crate::plugin::detector::Detect;
use crate::route::RouteTable;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How one listener treats its connections.
pub struct ListenerPlan {
    pub name: String,
    /// Detectors to ask, in order.
    pub detectors: Vec<Arc<dyn Detect>>,
    pub max_bytes: usize,
    pub timeout: Duration,
    /// Route for unrecognised bytes.
    pub default: Option<String>,
    /// Route for clients that sent nothing before the timeout.
    pub on_timeout: Option<String>,
    /// Load balancers whose connections start with a PROXY header.
    pub accept_proxy: Option<crate::config::AcceptProxy>,
    /// How long detection takes, in the metrics.
    pub detection_seconds: prometheus::Histogram,
}

/// A map keyed by a name from the config, looked up for every connection:
/// foldhash costs a fraction of SipHash, and the keys are the operator's.
pub type NameMap<V> = HashMap<String, V, foldhash::fast::RandomState>;

/// The state every new connection reads.
pub struct Snapshot {
    pub config: Arc<Config>,
    pub plugins: Arc<PluginSet>,
    pub listeners: NameMap<ListenerPlan>,
    pub routes: RouteTable,
    /// The hooks of every route that has some, by route name.
    pub route_hooks: NameMap<Arc<RouteHooks>>,
    pub pools: NameMap<Arc<Pool>>,
    /// Pools a UDP listener may send to: never health-checked with TCP
    /// connects.
    pub udp_pools: std::collections::HashSet<String>,
    /// Cancelled when this snapshot stops being the one in force: ends its
    /// health checks.
    pub health_stop: tokio_util::sync::CancellationToken,
    /// The protocol names the metrics label connections with: the loaded
    /// detectors' and those the routes match on (a bounded set).
    protocols: std::collections::HashSet<String, foldhash::fast::RandomState>,
}

impl Snapshot {
    /// Load the plugins `config` names and build a snapshot, or report every
    /// problem (with its file, line and key).
    pub async fn build(config: Config) -> anyhow::Result<Snapshot> {
        let plugins = PluginSet::load(&config).await?;
        Self::with_plugins(config, Arc::new(plugins))
    }

    /// Build a snapshot from already loaded plugins.
    pub fn with_plugins(config: Config, plugins: Arc<PluginSet>) -> anyhow::Result<Snapshot> {
        let mut problems = Vec::new();
        let mut listeners = NameMap::default();
        for (i, l) in config.listeners.iter().enumerate() {
            let detectors: Vec<Arc<dyn Detect>> = match &l.detectors {
                Some(names) => names
                    .iter()
                    .enumerate()
                    .filter_map(|(j, name)| match plugins.detector(name) {
                        Some(d)
                            if (l.transport == Transport::Udp && !d.serves_udp)
                                || (l.transport == Transport::Tcp && !d.serves_tcp) =>
                        {
                            problems.push(config.problem_at(
                                &format!("listeners[{i}].detectors[{j}]"),
                                format!("detector `{name}` does not serve {} listeners", l.transport),
                            ));
                            None
                        }
                        Some(d) => Some(d.clone() as Arc<dyn Detect>),
                        None if plugins.compiling.iter().any(|c| &c.name == name) => {
                            tracing::warn!(
                                listener = %l.name,
                                detector = %name,
                                "detector is still compiling; the listener runs without it until it joins"
                            );
                            None
                        }
                        None => {
                            let skipped =
                                plugins.skipped.iter().find(|s| s.path.file_stem().is_some_and(|f| f == name.as_str()));
                            let message = match skipped {
                                Some(s) => {
                                    format!("detector `{name}` failed to load from {}: {}", s.path.display(), s.reason)
                                }
                                None => format!("no detector plugin named `{name}` (loaded: {})", names_of(&plugins)),
                            };
                            problems.push(config.problem_at(&format!("listeners[{i}].detectors[{j}]"), message));
                            None
                        }
                    })
                    .collect(),
                None => plugins
                    .detectors_for(l.transport == Transport::Udp)
                    .into_iter()
                    .map(|d| d as Arc<dyn Detect>)
                    .collect(),
            };
            listeners.insert(
                l.name.clone(),
                ListenerPlan {
                    name: l.name.clone(),
                    detectors,
                    max_bytes: l.detect.max_bytes,
                    timeout: l.detect.timeout,
                    default: l.default.clone(),
                    on_timeout: l.on_timeout.clone(),
                    accept_proxy: l.accept_proxy.clone(),
                    detection_seconds: crate::metrics::detection(&l.name),
                },
            );
        }
        let mut route_hooks = NameMap::default();
        for (i, r) in config.routes.iter().enumerate() {
            if r.hooks.is_empty() {
                continue;
            }
            let (mut hooks, mut compiling) = (Vec::new(), Vec::new());
            for (j, name) in r.hooks.iter().enumerate() {
                match plugins.hook(name) {
                    Some(hook) => hooks.push(hook.clone()),
                    None if plugins.compiling.iter().any(|c| &c.name == name) => {
                        tracing::warn!(
                            route = %r.name,
                            hook = %name,
                            on_hook_failure = ?r.on_hook_failure,
                            "hook is still compiling; until it joins, the route treats it as a hook that cannot start"
                        );
                        compiling.push(name.clone());
                    }
                    None => {
                        let skipped =
                            plugins.skipped.iter().find(|s| s.path.file_stem().is_some_and(|f| f == name.as_str()));
                        let message = match skipped {
                            Some(s) => format!("hook `{name}` failed to load from {}: {}", s.path.display(), s.reason),
                            None => {
                                let loaded: Vec<&str> = plugins.hooks.iter().map(|h| h.name()).collect();
                                format!("no hook plugin named `{name}` (loaded: {})", loaded.join(", "))
                            }
                        };
                        problems.push(config.problem_at(&format!("routes[{i}].hooks[{j}]"), message));
                    }
                }
            }
            route_hooks
                .insert(r.name.clone(), Arc::new(RouteHooks { hooks, compiling, on_failure: r.on_hook_failure }));
        }
        if !problems.is_empty() {
            return Err(ConfigError { problems }.into());
        }
        let routes = RouteTable::new(&config.routes)?;
        let pools = config.backends.iter().map(|(name, b)| (name.clone(), Arc::new(Pool::new(name, b)))).collect();
        let udp_pools = udp_pools(&config, &listeners);
        for name in &udp_pools {
            if config.backends.get(name).is_some_and(|b| b.source == crate::config::SourceAddr::Client) {
                tracing::warn!(pool = %name, "backends.{name}.source: client applies to TCP connections; UDP sessions leave from this host's address");
            }
        }
        let protocols = plugins
            .detectors
            .iter()
            .map(|d| d.name().to_string())
            .chain(config.routes.iter().filter_map(|r| r.r#match.as_ref()?.protocol.clone()))
            .collect();
        Ok(Snapshot {
            protocols,
            config: Arc::new(config),
            plugins,
            listeners,
            routes,
            route_hooks,
            pools,
            udp_pools,
            health_stop: tokio_util::sync::CancellationToken::new(),
        })
    }
}

impl Snapshot {
    /// `protocol` as the metrics label it: itself when it is one of
    /// [`Snapshot::protocols`], `other` when not (a plugin may name any).
    pub fn protocol_label<'a>(&'a self, protocol: &str) -> &'a str {
        self.protocols.get(protocol).map_or("other", String::as_str)
    }

    /// Take over what checks learned about servers that `old` also had
    /// (same pool, same address and weight), so a reload does not forget a
    /// dead server; a pool whose servers are written as before keeps its
    /// servers as they are (those its names resolved to included).
    pub fn inherit_health(&self, old: &Snapshot) {
        for (name, pool) in &self.pools {
            let Some(before) = old.pools.get(name) else { continue };
            let previous = before.members();
            if pool.specs == before.specs {
                pool.set_members(crate::balance::Members::new(previous.servers.clone()));
                pool.set_answers(before.answers());
                if let Some(at) = before.next_refresh() {
                    pool.set_next_refresh(at);
                }
                continue;
            }
            let servers = pool
                .members()
                .servers
                .iter()
                .map(|s| match previous.find(s.addr) {
                    Some(prev) if prev.weight() == s.weight() => prev.clone(),
                    _ => s.clone(),
                })
                .collect();
            pool.set_members(crate::balance::Members::new(servers));
        }
    }
}

fn names_of(plugins: &PluginSet) -> String {
    let names: Vec<&str> = plugins.detectors.iter().map(|d| d.name()).collect();
    names.join(", ")
}

/// Pools reachable from a UDP listener: through its `default` or `on_timeout`
/// route, or through a route matching a protocol one of its detectors may
/// report (a detector's name; any unknown protocol when it runs `pattern`).
fn udp_pools(config: &Config, plans: &NameMap<ListenerPlan>) -> std::collections::HashSet<String> {
    let routes = udp_routes(config, plans);
    config.routes.iter().filter(|r| routes.contains(r.name.as_str())).map(|r| r.to.clone()).collect()
}

/// The routes a UDP listener may reach: by name (its `default` or
/// `on_timeout`) or by the protocol one of its detectors finds.
fn udp_routes<'c>(config: &'c Config, plans: &NameMap<ListenerPlan>) -> std::collections::HashSet<&'c str> {
    let mut routes = std::collections::HashSet::new();
    let known: Vec<&str> = plans.values().flat_map(|p| p.detectors.iter().map(|d| d.name())).collect();
    for l in config.listeners.iter().filter(|l| l.transport == Transport::Udp) {
        let Some(plan) = plans.get(&l.name) else { continue };
        let names: Vec<&str> = plan.detectors.iter().map(|d| d.name()).collect();
        for r in &config.routes {
            let by_name = [&l.default, &l.on_timeout].iter().any(|n| n.as_deref() == Some(r.name.as_str()));
            let by_protocol = r
                .r#match
                .as_ref()
                .and_then(|m| m.protocol.as_deref())
                .is_some_and(|p| names.contains(&p) || (names.contains(&"pattern") && !known.contains(&p)));
            if by_name || by_protocol {
                routes.insert(r.name.as_str());
            }
        }
    }
    routes
}
