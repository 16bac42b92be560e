//! Active health checks: for each pool with a `health` section, every
//! `interval` each server gets a TCP connect with `timeout`. `fall`
//! consecutive failures mark it down, `rise` consecutive successes mark it up
//! again; the balancer tries servers marked down last. Pools without `health`
//! rely on passive checks only (a failed connect marks the server down until
//! one succeeds).

use crate::balance::Pool;
use crate::config::Health;
use crate::snapshot::Snapshot;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Start the checks of the snapshot's pools that have a `health` section,
/// except pools UDP listeners use (these checks are TCP connects). They stop
/// when the snapshot's `health_stop` is cancelled: when a reload replaces it,
/// or at shutdown.
pub fn start(snapshot: &Snapshot) {
    let checked: Vec<_> = snapshot
        .config
        .backends
        .iter()
        .filter_map(|(name, b)| Some((name, snapshot.pools.get(name)?.clone(), b.health?)))
        .filter(|(name, _, _)| {
            let udp = snapshot.udp_pools.contains(*name);
            if udp {
                tracing::warn!(pool = %name, "health checks are TCP connects; not run for a pool UDP listeners use");
            }
            !udp
        })
        .map(|(_, pool, health)| (pool, health))
        .collect();
    spawn(&checked, &snapshot.health_stop);
}

/// Start the checks of these pools; they stop when `stop` is cancelled.
pub fn spawn(pools: &[(Arc<Pool>, Health)], stop: &CancellationToken) {
    for (pool, health) in pools {
        for index in 0..pool.servers.len() {
            let (pool, health, stop) = (pool.clone(), *health, stop.clone());
            tokio::spawn(async move {
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = check_server(&pool, index, &health) => {}
                }
            });
        }
    }
}

async fn check_server(pool: &Pool, index: usize, health: &Health) {
    let server = &pool.servers[index];
    let (mut ok_run, mut fail_run) = (0u32, 0u32);
    let mut ticker = tokio::time::interval(health.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let result = tokio::time::timeout(health.timeout, TcpStream::connect(server.addr)).await;
        let error = match result {
            Ok(Ok(_stream)) => None,
            // This host is short of descriptors or memory: says nothing of the server.
            Ok(Err(err)) if crate::limits::local_shortage(&err) => continue,
            Ok(Err(err)) => Some(err.to_string()),
            Err(_) => Some(format!("no answer within {}", humantime::format_duration(health.timeout))),
        };
        match error {
            None => {
                (ok_run, fail_run) = (ok_run.saturating_add(1), 0);
                if ok_run >= health.rise && !server.is_up() {
                    server.set_up(true);
                    tracing::info!(pool = %pool.name, server = %server.addr, "health check: server is up");
                }
            }
            Some(error) => {
                (ok_run, fail_run) = (0, fail_run.saturating_add(1));
                if fail_run >= health.fall && server.is_up() {
                    server.set_up(false);
                    tracing::warn!(pool = %pool.name, server = %server.addr, %error, "health check: server is down");
                }
            }
        }
    }
}
