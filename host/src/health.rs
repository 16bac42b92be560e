//! Active health checks: for each pool with a `health` section, every
//! `interval` each server gets a TCP connect with `timeout`. `fall`
//! consecutive failures mark it down, `rise` consecutive successes mark it up
//! again; the balancer tries servers marked down last. Pools without `health`
//! rely on passive checks only (a failed connect marks the server down until
//! one succeeds).

use crate::balance::{Pool, Server};
use crate::config::Health;
use crate::snapshot::Snapshot;
use std::sync::Arc;
use std::sync::atomic::Ordering;
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
        let (pool, health, stop) = (pool.clone(), *health, stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = check_pool(&pool, &health) => {}
            }
        });
    }
}

/// Every `interval`, check each server the pool has then (names the pool
/// lists may have changed them), all at once.
async fn check_pool(pool: &Pool, health: &Health) {
    let mut ticker = tokio::time::interval(health.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let mut checks = tokio::task::JoinSet::new();
        for server in pool.members().servers.iter().cloned() {
            let timeout = health.timeout;
            checks.spawn(async move {
                let result = tokio::time::timeout(timeout, TcpStream::connect(server.addr)).await;
                let error = match result {
                    Ok(Ok(_stream)) => Some(None),
                    // This host is short of descriptors or memory: says nothing of the server.
                    Ok(Err(err)) if crate::limits::local_shortage(&err) => None,
                    Ok(Err(err)) => Some(Some(err.to_string())),
                    Err(_) => Some(Some(format!("no answer within {}", humantime::format_duration(timeout)))),
                };
                (server, error)
            });
        }
        while let Some(done) = checks.join_next().await {
            let Ok((server, Some(error))) = done else { continue };
            record(pool, &server, health, error);
        }
    }
}

/// Count one check of `server`; mark it down after `fall` failures in a
/// row, up after `rise` successes.
fn record(pool: &Pool, server: &Server, health: &Health, error: Option<String>) {
    let (passed, failed) = (&server.checks_passed, &server.checks_failed);
    match error {
        None => {
            failed.store(0, Ordering::Relaxed);
            let run = passed.fetch_add(1, Ordering::Relaxed).saturating_add(1);
            if run >= health.rise && !server.is_up() {
                server.set_up(true);
                tracing::info!(pool = %pool.name, server = %server.addr, "health check: server is up");
            }
        }
        Some(error) => {
            passed.store(0, Ordering::Relaxed);
            let run = failed.fetch_add(1, Ordering::Relaxed).saturating_add(1);
            if run >= health.fall && server.is_up() {
                server.set_up(false);
                tracing::warn!(pool = %pool.name, server = %server.addr, %error, "health check: server is down");
            }
        }
    }
}
