//! Servers found by DNS: `backends.*.servers` entries written `host:port`
//! (a server for each A and AAAA record) or `{ srv: name }` (a server for
//! each target of the SRV records of the lowest priority, with the record's
//! port and weight).
//!
//! Names are resolved when a snapshot is built ([`resolve_now`]: an error
//! for `check`, a warning for a running proxy) and again off the data path
//! every `resolver.resolve_interval`, sooner when a record's TTL runs out
//! first, a few seconds after a failure ([`start`]). A new answer replaces
//! the pool's servers whole ([`crate::balance::Members`]): a server that
//! stays is the same one (its health state and open connections kept, even
//! when its weight changes: the new weight takes effect at once), one
//! that goes takes no new connections and its open ones finish. A name that
//! stops resolving keeps its last answer.
//!
//! The resolver is hickory's, asking `resolver.servers` or the system's
//! (`/etc/resolv.conf`, and `/etc/hosts`).

use crate::balance::{Members, Pool, Server};
use crate::config::{Resolver, ServerSpec};
use crate::snapshot::Snapshot;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Soonest a name is resolved again after a failure.
const RETRY: Duration = Duration::from_secs(2);
/// Soonest a name is resolved again at all.
const FLOOR: Duration = Duration::from_secs(1);
/// Largest weight; SRV weights (0 to 65535) are scaled into 1 to this.
const MAX_WEIGHT: u32 = crate::config::defaults::SERVER_WEIGHT_MAX;

/// A name that did not resolve: the config key of its entry and why.
#[derive(Debug, Clone)]
pub struct Unresolved {
    pub key: String,
    pub error: String,
}

/// A resolver as the config asks for.
fn resolver(config: &Resolver) -> Result<TokioResolver, String> {
    let mut builder = if config.servers.is_empty() {
        TokioResolver::builder_tokio().map_err(|e| format!("the system's resolver configuration: {e}"))?
    } else {
        let servers = config
            .servers
            .iter()
            .map(|addr| {
                let connection = |mut c: ConnectionConfig| {
                    c.port = addr.port();
                    c
                };
                let both = vec![connection(ConnectionConfig::udp()), connection(ConnectionConfig::tcp())];
                NameServerConfig::new(addr.ip(), true, both)
            })
            .collect();
        TokioResolver::builder_with_config(ResolverConfig::from_name_servers(servers), TokioRuntimeProvider::default())
    };
    let options = builder.options_mut();
    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    options.timeout = Duration::from_secs(2);
    options.attempts = 2;
    builder.build().map_err(|e| format!("cannot start the resolver: {e}"))
}

/// One name's answer: servers with weights, and until when it holds.
struct Answer {
    servers: Vec<(SocketAddr, u32)>,
    until: Instant,
}

async fn resolve_spec(resolver: &TokioResolver, spec: &ServerSpec) -> Result<Answer, String> {
    match spec {
        ServerSpec::Addr { addr, weight } => Ok(Answer { servers: vec![(*addr, *weight)], until: far() }),
        ServerSpec::Host { host, port, weight } => {
            let ips = resolver.lookup_ip(fqdn(host)).await.map_err(|e| e.to_string())?;
            let servers: Vec<_> = ips.iter().map(|ip| (SocketAddr::new(ip, *port), *weight)).collect();
            if servers.is_empty() {
                return Err("no A or AAAA record".into());
            }
            Ok(Answer { servers, until: ips.valid_until() })
        }
        ServerSpec::Srv { name } => {
            let lookup = resolver.srv_lookup(fqdn(name)).await.map_err(|e| e.to_string())?;
            let records: Vec<_> = lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::SRV(srv) => Some(srv.clone()),
                    _ => None,
                })
                .collect();
            let Some(best) = records.iter().map(|r| r.priority).min() else {
                return Err("no SRV record".into());
            };
            let mut until = lookup.valid_until();
            let top =
                u32::from(records.iter().filter(|r| r.priority == best).map(|r| r.weight).max().unwrap_or(1)).max(1);
            let mut servers = Vec::new();
            for record in records.iter().filter(|r| r.priority == best) {
                // SRV weights run 0 to 65535, scaled into 1 to 256 when
                // larger; a weight of 0 still gets a share.
                let weight = u32::from(record.weight);
                let weight = if top <= MAX_WEIGHT { weight } else { weight * MAX_WEIGHT / top }.max(1);
                let target = record.target.to_ascii();
                // The addresses often come along in the additional section.
                let mut ips: Vec<IpAddr> = lookup
                    .additionals()
                    .iter()
                    .filter(|a| a.name == record.target)
                    .filter_map(|a| match &a.data {
                        RData::A(a) => Some(IpAddr::V4(a.0)),
                        RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                        _ => None,
                    })
                    .collect();
                if ips.is_empty() {
                    let found = resolver.lookup_ip(target.as_str()).await.map_err(|e| format!("{target}: {e}"))?;
                    until = until.min(found.valid_until());
                    ips = found.iter().collect();
                }
                servers.extend(ips.into_iter().map(|ip| (SocketAddr::new(ip, record.port), weight)));
            }
            if servers.is_empty() {
                return Err("the SRV targets have no address".into());
            }
            Ok(Answer { servers, until })
        }
    }
}

/// A name as an absolute DNS name: the configured names are complete
/// (no search domains are appended).
fn fqdn(name: &str) -> String {
    if name.ends_with('.') { name.to_string() } else { format!("{name}.") }
}

fn far() -> Instant {
    Instant::now() + Duration::from_secs(365 * 24 * 3600)
}

/// Resolve the names of `pool` now and put the answers in force (a name
/// that fails keeps its last answer, if any). Returns the names that did
/// not resolve and when the pool should be resolved again.
async fn refresh(resolver: &TokioResolver, pool: &Pool, interval: Duration) -> (Vec<Unresolved>, Instant) {
    let mut failed = Vec::new();
    let mut next = Instant::now() + interval;
    let mut answers = pool.answers();
    for (i, spec) in pool.specs.iter().enumerate() {
        if !spec.is_name() {
            continue;
        }
        match resolve_spec(resolver, spec).await {
            Ok(answer) => {
                next = next.min(answer.until);
                if let Some(slot) = answers.get_mut(i) {
                    *slot = Some(answer.servers);
                }
            }
            Err(error) => {
                next = next.min(Instant::now() + RETRY);
                failed.push(Unresolved {
                    key: format!("backends.{}.servers[{i}]", pool.name),
                    error: format!("{spec}: {error}"),
                });
            }
        }
    }
    install(pool, answers);
    (failed, next.max(Instant::now() + FLOOR))
}

/// Put these answers in force: the pool's servers in the order of its
/// entries, the same [`Server`] for an address it already had (its health
/// state and open connections kept, its weight updated when the answer
/// changed it). The pool's members are rebuilt when an address or a weight
/// changed.
fn install(pool: &Pool, answers: Vec<Option<Vec<(SocketAddr, u32)>>>) {
    let previous = pool.members();
    let mut seen = BTreeSet::new();
    let mut servers = Vec::new();
    let mut reweighted = Vec::new();
    for (i, spec) in pool.specs.iter().enumerate() {
        let listed = match spec {
            ServerSpec::Addr { addr, weight } => vec![(*addr, *weight)],
            _ => answers.get(i).cloned().flatten().unwrap_or_default(),
        };
        for (addr, weight) in listed {
            if !seen.insert(addr) {
                continue;
            }
            let server = match previous.find(addr) {
                Some(s) => {
                    if s.weight() != weight.max(1) {
                        reweighted.push(format!("{addr}={}", weight.max(1)));
                    }
                    s.clone()
                }
                None => Arc::new(Server::new(addr, weight)),
            };
            servers.push((server, weight));
        }
    }
    let before: BTreeSet<SocketAddr> = previous.servers.iter().map(|s| s.addr).collect();
    let added: Vec<String> = seen.difference(&before).map(ToString::to_string).collect();
    let removed: Vec<String> = before.difference(&seen).map(ToString::to_string).collect();
    pool.set_answers(answers);
    if added.is_empty() && removed.is_empty() && reweighted.is_empty() {
        return;
    }
    let servers = servers
        .into_iter()
        .map(|(server, weight)| {
            server.set_weight(weight);
            server
        })
        .collect();
    pool.set_members(Members::new(servers));
    tracing::info!(
        pool = %pool.name,
        added = %added.join(","),
        removed = %removed.join(","),
        reweighted = %reweighted.join(","),
        servers = seen.len(),
        "backend servers changed (DNS)"
    );
}

/// Resolve every name of the snapshot's pools that has no answer yet (a
/// pool that kept its servers across a reload has them). The names that
/// did not resolve come back, for `check` to fail on and `run` to warn of.
pub async fn resolve_now(snapshot: &Snapshot) -> Vec<Unresolved> {
    let pools: Vec<_> = snapshot.pools.values().filter(|p| p.has_names() && !p.all_answered()).collect();
    if pools.is_empty() {
        return Vec::new();
    }
    let config = &snapshot.config.resolver;
    let resolver = match resolver(config) {
        Ok(resolver) => resolver,
        Err(error) => return vec![Unresolved { key: "resolver".into(), error }],
    };
    let mut failed = Vec::new();
    for pool in pools {
        let (unresolved, next) = refresh(&resolver, pool, config.resolve_interval).await;
        pool.set_next_refresh(next);
        failed.extend(unresolved);
    }
    failed
}

/// Keep resolving the names of the snapshot's pools until its
/// `health_stop` is cancelled (a reload replaced it, or shutdown).
pub fn start(snapshot: &Snapshot) {
    let config = snapshot.config.resolver.clone();
    for pool in snapshot.pools.values().filter(|p| p.has_names()) {
        let (pool, config, stop) = (pool.clone(), config.clone(), snapshot.health_stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = keep_resolving(&pool, &config) => {}
            }
        });
    }
}

async fn keep_resolving(pool: &Pool, config: &Resolver) {
    let resolver = match resolver(config) {
        Ok(resolver) => resolver,
        Err(error) => {
            tracing::error!(pool = %pool.name, %error, "server names will not be resolved again");
            return;
        }
    };
    loop {
        let next = pool.next_refresh().unwrap_or_else(|| Instant::now() + config.resolve_interval);
        tokio::time::sleep_until(next.into()).await;
        let (failed, next) = refresh(&resolver, pool, config.resolve_interval).await;
        pool.set_next_refresh(next);
        for f in failed {
            tracing::warn!(pool = %pool.name, key = %f.key, error = %f.error, "server name does not resolve; its last answer stays, retrying");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Backend, Balance, ProxyProtocol, SourceAddr};

    fn pool() -> Pool {
        let backend = Backend {
            servers: vec![ServerSpec::Srv { name: "_x._tcp.test".into() }],
            balance: Balance::RoundRobin,
            health: None,
            proxy_protocol: ProxyProtocol::None,
            connect_timeout: Duration::from_secs(1),
            retries: 1,
            source: SourceAddr::Host,
        };
        Pool::new("resolve-test", &backend)
    }

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, last], 80))
    }

    /// Which server each of `n` picks goes to.
    fn picks(pool: &Pool, n: usize) -> Vec<SocketAddr> {
        let members = pool.members();
        let client = IpAddr::from([127, 0, 0, 1]);
        (0..n).filter_map(|_| pool.order(&members, client).first().map(|&i| members.servers[i].addr)).collect()
    }

    #[test]
    fn a_weight_change_alone_changes_the_shares_and_keeps_the_server() {
        let pool = pool();
        install(&pool, vec![Some(vec![(addr(1), 3), (addr(2), 1)])]);
        let before = pool.members().find(addr(2)).cloned().expect("server 2");
        let count = |picks: &[SocketAddr], a| picks.iter().filter(|&&p| p == a).count();
        assert_eq!(count(&picks(&pool, 8), addr(1)), 6);

        // The same addresses, other weights: new shares, the same servers.
        before.set_up(false);
        install(&pool, vec![Some(vec![(addr(1), 1), (addr(2), 3)])]);
        let members = pool.members();
        let after = members.find(addr(2)).expect("server 2");
        assert!(Arc::ptr_eq(&before, after), "the server's state (health, open connections) is kept");
        assert!(!after.is_up(), "still down");
        assert_eq!(after.weight(), 3);
        after.set_up(true);
        let shares = picks(&pool, 8);
        assert_eq!((count(&shares, addr(1)), count(&shares, addr(2))), (2, 6), "{shares:?}");
    }
}
