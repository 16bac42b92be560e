//! The admin listener (`admin.bind`, keep it on loopback): a small HTTP/1.1
//! server for operators.
//!
//! - `GET /status`: JSON with the snapshot in force (listeners, routes,
//!   backends with each server's address, weight, state and open
//!   connections, plugins with name, version, hash and source) and the last
//!   reload's outcome and time.
//! - `POST /reload`: reload now; answers 200 with `{"ok":true}` or 422 with
//!   the reason the new configuration was rejected.
//! - `GET /metrics`: the counters of [`crate::metrics`], Prometheus format.
//! - `GET /ready`: 200 while the proxy serves (every listener bound, the
//!   first configuration in force), 503 before that and while draining: a
//!   readiness probe.
//! - `GET /live`: 200 while this thread (signals, reloads, health checks)
//!   answers: a liveness probe.
//!
//! One request per connection; requests are read for at most 5 s and 8 KiB.

use crate::plugin::detector::Detect as _;
use crate::snapshot::Snapshot;
use arc_swap::ArcSwap;
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// What the admin listener serves, for a request it does not.
const ENDPOINTS: &str = "GET /status, GET /metrics, GET /ready, GET /live, POST /reload\n";

/// Serve the admin API on `listener` until `stop`.
pub async fn serve(listener: TcpListener, state: Arc<ArcSwap<Snapshot>>, config: PathBuf, stop: CancellationToken) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "admin listening");
    }
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let (state, config) = (state.clone(), config.clone());
        tokio::spawn(async move {
            if let Err(err) = handle(stream, &state, &config).await {
                tracing::debug!(error = %err, "admin request failed");
            }
        });
    }
}

async fn handle(mut stream: TcpStream, state: &ArcSwap<Snapshot>, config: &std::path::Path) -> std::io::Result<()> {
    let mut buf = vec![0u8; 8192];
    let mut len = 0;
    let read = async {
        while !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") && len < buf.len() {
            let n = stream.read(&mut buf[len..]).await?;
            if n == 0 {
                break;
            }
            len += n;
        }
        Ok::<_, std::io::Error>(())
    };
    if tokio::time::timeout(Duration::from_secs(5), read).await.is_err() {
        return Ok(());
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let mut words = head.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (status, kind, body) = match (method, path) {
        ("GET", "/status") => ("200 OK", "application/json", status(&state.load()).to_string()),
        ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4", crate::metrics::render()),
        ("GET", "/ready") if crate::listener::serving() => ("200 OK", "text/plain", "ready\n".into()),
        ("GET", "/ready") => ("503 Service Unavailable", "text/plain", "not serving: starting or draining\n".into()),
        ("GET", "/live") => ("200 OK", "text/plain", "live\n".into()),
        ("POST", "/reload") => match crate::reload::trigger(config, state, "POST /reload").await {
            Ok(()) => ("200 OK", "application/json", json!({"ok": true}).to_string()),
            Err(error) => {
                ("422 Unprocessable Entity", "application/json", json!({"ok": false, "error": error}).to_string())
            }
        },
        (_, "/status" | "/metrics" | "/reload" | "/ready" | "/live") => {
            ("405 Method Not Allowed", "text/plain", ENDPOINTS.into())
        }
        _ => ("404 Not Found", "text/plain", ENDPOINTS.into()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// The snapshot in force, as `GET /status` shows it.
fn status(s: &Snapshot) -> serde_json::Value {
    let c = &s.config;
    let listeners: Vec<_> = c
        .listeners
        .iter()
        .map(|l| {
            let detectors: Vec<&str> =
                s.listeners.get(&l.name).map(|p| p.detectors.iter().map(|d| d.name()).collect()).unwrap_or_default();
            json!({
                "name": l.name,
                "bind": l.bind.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "transport": l.transport.to_string(),
                "detectors": detectors,
                "default": l.default,
                "on_timeout": l.on_timeout,
            })
        })
        .collect();
    let routes: Vec<_> = c.routes.iter().map(|r| json!({"name": r.name, "to": r.to, "hooks": r.hooks})).collect();
    let backends: serde_json::Map<String, serde_json::Value> = s
        .pools
        .iter()
        .map(|(name, pool)| {
            let servers: Vec<_> = pool
                .members()
                .servers
                .iter()
                .map(|srv| json!({"addr": srv.addr.to_string(), "weight": srv.weight, "up": srv.is_up(), "active": srv.active()}))
                .collect();
            let listed: Vec<String> = pool.specs.iter().map(ToString::to_string).collect();
            (name.clone(), json!({"servers": servers, "listed": listed}))
        })
        .collect();
    let plugins: Vec<_> = s
        .plugins
        .detectors
        .iter()
        .map(|d| {
            json!({
                "name": d.name(),
                "version": d.info.version,
                "kind": "detector",
                "hash": d.hash,
                "source": d.source.to_string(),
                "disabled": d.is_disabled(),
                "refused_imports": d.refused,
            })
        })
        .chain(s.plugins.hooks.iter().map(|h| {
            json!({
                "name": h.name(),
                "version": h.info.version,
                "kind": "hook",
                "hash": h.hash,
                "source": h.source.to_string(),
                "disabled": h.is_disabled(),
                "refused_imports": h.refused,
            })
        }))
        .collect();
    let skipped: Vec<_> =
        s.plugins.skipped.iter().map(|k| json!({"path": k.path.display().to_string(), "reason": k.reason})).collect();
    let compiling: Vec<_> = s
        .plugins
        .compiling
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "path": c.path.display().to_string(),
                "hash": c.hash,
                "since_unix": c.since.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            })
        })
        .collect();
    let last_reload = crate::reload::last().map(|o| {
        json!({
            "ok": o.error.is_none(),
            "error": o.error,
            "via": o.via,
            "at_unix": o.at.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        })
    });
    json!({
        "config": c.file.display().to_string(),
        "listeners": listeners,
        "routes": routes,
        "backends": backends,
        "plugins": plugins,
        "skipped_plugins": skipped,
        "compiling_plugins": compiling,
        "last_reload": last_reload,
    })
}
