//! The admin listener (`admin.bind`, keep it on loopback): a small HTTP/1.1
//! server for operators.
//!
//! - `GET /`: the dashboard, one self-contained page (`admin/dashboard.html`)
//!   that polls `/status` and `/metrics` and draws them.
//! - `GET /status`: JSON with the snapshot in force (listeners, routes,
//!   backends with each server's address, weight, state and open
//!   connections, plugins with name, version, hash, source and failures by
//!   cause), the last reload's outcome and time, and the last ten reloads.
//! - `POST /reload`: reload now; answers 200 with `{"ok":true}` or 422 with
//!   the reason the new configuration was rejected.
//! - `GET /metrics`: the counters of [`crate::metrics`], Prometheus format.
//! - `GET /ready`: 200 while the proxy serves (every listener bound, the
//!   first configuration in force), 503 before that and while draining: a
//!   readiness probe.
//! - `GET /live`: 200 while this thread (signals, reloads, health checks)
//!   answers: a liveness probe.
//!
//! One request per connection, parsed with `httparse`; a head larger than
//! 8 KiB is answered 431, a malformed one 400, one not complete within
//! 5 s 408; at most 64 connections are served at once (more get 503), so
//! slow or hostile clients cannot stall it.
//!
//! State-changing requests (`POST /reload`) are refused when they come
//! from a web page of another site (an `Origin` that is not this
//! listener's) or through a host name rather than an address (`Host`, as
//! DNS rebinding would send), and, when `admin.token` is set, unless they
//! carry it as `Authorization: Bearer …`.

use crate::plugin::detector::Detect as _;
use crate::plugin::sandbox::Cause;
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
const ENDPOINTS: &str = "GET / (dashboard), GET /status, GET /metrics, GET /ready, GET /live, POST /reload\n";

/// The dashboard served at `GET /`.
const DASHBOARD: &str = include_str!("admin/dashboard.html");
/// The dashboard loads nothing but itself and the admin API, and is not framed.
const DASHBOARD_HEADERS: &str = "Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; \
    style-src 'unsafe-inline'; img-src data:; connect-src 'self'; frame-ancestors 'none'\r\n\
    Cache-Control: no-store\r\n";

/// Most admin connections served at once; more are answered 503 at once.
const MAX_CLIENTS: usize = 64;
/// Longest request head read.
const MAX_HEAD: usize = 8192;
/// How long a client has to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Serve the admin API on `listener` until `stop`.
pub async fn serve(listener: TcpListener, state: Arc<ArcSwap<Snapshot>>, config: PathBuf, stop: CancellationToken) {
    let local = listener.local_addr().ok();
    if let Some(addr) = local {
        tracing::info!(%addr, "admin listening");
    }
    let clients = Arc::new(tokio::sync::Semaphore::new(MAX_CLIENTS));
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((mut stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let Ok(permit) = clients.clone().try_acquire_owned() else {
            tokio::spawn(async move {
                let _ =
                    reply(&mut stream, "503 Service Unavailable", "text/plain", "too many admin connections\n").await;
            });
            continue;
        };
        let (state, config) = (state.clone(), config.clone());
        tokio::spawn(async move {
            if let Err(err) = handle(stream, &state, &config, local).await {
                tracing::debug!(error = %err, "admin request failed");
            }
            drop(permit);
        });
    }
}

/// A request as far as the admin API looks at it.
struct Request {
    method: String,
    path: String,
    host: Option<String>,
    origin: Option<String>,
    authorization: Option<String>,
}

/// Read and parse a request head, or the status line of the refusal.
async fn read_request(stream: &mut TcpStream) -> Result<Request, &'static str> {
    let mut buf = vec![0u8; MAX_HEAD];
    let mut len = 0;
    let read = async {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut parsed = httparse::Request::new(&mut headers);
            match parsed.parse(&buf[..len]) {
                Ok(httparse::Status::Complete(_)) => {
                    let header = |name: &str| {
                        parsed
                            .headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case(name))
                            .map(|h| String::from_utf8_lossy(h.value).into_owned())
                    };
                    return Ok(Request {
                        method: parsed.method.unwrap_or_default().to_string(),
                        path: parsed.path.unwrap_or_default().to_string(),
                        host: header("host"),
                        origin: header("origin"),
                        authorization: header("authorization"),
                    });
                }
                Ok(httparse::Status::Partial) if len == buf.len() => return Err("431 Request Header Fields Too Large"),
                Ok(httparse::Status::Partial) => {}
                Err(httparse::Error::TooManyHeaders) => return Err("431 Request Header Fields Too Large"),
                Err(_) => return Err("400 Bad Request"),
            }
            match stream.read(&mut buf[len..]).await {
                Ok(0) | Err(_) => return Err("400 Bad Request"),
                Ok(n) => len += n,
            }
        }
    };
    match tokio::time::timeout(READ_TIMEOUT, read).await {
        Ok(result) => result,
        Err(_) => Err("408 Request Timeout"),
    }
}

async fn reply(stream: &mut TcpStream, status: &str, kind: &str, body: &str) -> std::io::Result<()> {
    reply_with(stream, status, "", kind, body).await
}

/// Like [`reply`], with `headers` (each ending in CRLF) before the others.
async fn reply_with(
    stream: &mut TcpStream,
    status: &str,
    headers: &str,
    kind: &str,
    body: &str,
) -> std::io::Result<()> {
    let response = format!(
        "HTTP/1.1 {status}\r\n{headers}Content-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

async fn handle(
    mut stream: TcpStream,
    state: &ArcSwap<Snapshot>,
    config: &std::path::Path,
    local: Option<std::net::SocketAddr>,
) -> std::io::Result<()> {
    let request = match read_request(&mut stream).await {
        Ok(request) => request,
        Err(status) => {
            return reply(&mut stream, status, "text/plain", "a request head of at most 8 KiB, within 5 s\n").await;
        }
    };
    let (method, path) = (request.method.as_str(), request.path.as_str());
    let state_changing = method != "GET" && method != "HEAD";
    if state_changing && let Err((status, why)) = allowed(&request, state, local) {
        tracing::warn!(method, path, origin = ?request.origin, host = ?request.host, "admin request refused: {}", crate::logging::escape(&why));
        let auth = status.starts_with("401");
        let headers = if auth { "WWW-Authenticate: Bearer\r\n" } else { "" };
        let body = format!("{why}\n");
        let response = format!(
            "HTTP/1.1 {status}\r\n{headers}Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(response.as_bytes()).await?;
        return stream.shutdown().await;
    }
    if (method, path) == ("GET", "/") {
        return reply_with(&mut stream, "200 OK", DASHBOARD_HEADERS, "text/html; charset=utf-8", DASHBOARD).await;
    }
    let (status, kind, body) = match (method, path) {
        ("GET", "/status") => ("200 OK", "application/json", status(&state.load()).to_string()),
        ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4", crate::metrics::render(&state.load())),
        ("GET", "/ready") if crate::listener::serving() => ("200 OK", "text/plain", "ready\n".into()),
        ("GET", "/ready") => ("503 Service Unavailable", "text/plain", "not serving: starting or draining\n".into()),
        ("GET", "/live") => ("200 OK", "text/plain", "live\n".into()),
        ("POST", "/reload") => match crate::reload::trigger(config, state, "POST /reload").await {
            Ok(()) => ("200 OK", "application/json", json!({"ok": true}).to_string()),
            Err(error) => {
                ("422 Unprocessable Entity", "application/json", json!({"ok": false, "error": error}).to_string())
            }
        },
        (_, "/" | "/status" | "/metrics" | "/reload" | "/ready" | "/live") => {
            ("405 Method Not Allowed", "text/plain", ENDPOINTS.into())
        }
        _ => ("404 Not Found", "text/plain", ENDPOINTS.into()),
    };
    reply(&mut stream, status, kind, &body).await
}

/// Whether a state-changing request may go ahead: not sent by a web page
/// of another site (an `Origin` other than the admin listener's, or a
/// `Host` that is a name rather than an address, as DNS rebinding uses),
/// and with the bearer token when `admin.token` is set.
fn allowed(
    request: &Request,
    state: &ArcSwap<Snapshot>,
    local: Option<std::net::SocketAddr>,
) -> Result<(), (&'static str, String)> {
    let port = local.map(|l| l.port()).unwrap_or_default();
    let ours = |host: &str| host_is_ours(host, port);
    if let Some(origin) = &request.origin {
        let host = origin.strip_prefix("http://").unwrap_or("");
        if !ours(host) {
            return Err(("403 Forbidden", format!("a request from the web page at {origin} may not change anything")));
        }
    }
    match &request.host {
        Some(host) if ours(host) => {}
        Some(host) => return Err(("403 Forbidden", format!("Host `{host}` is not this admin listener's address"))),
        None => return Err(("400 Bad Request", "a Host header is needed".into())),
    }
    let token = state.load().config.admin.as_ref().and_then(|a| a.token.clone());
    if let Some(token) = token {
        let given = request.authorization.as_deref().and_then(|a| a.strip_prefix("Bearer ")).unwrap_or("");
        if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
            return Err(("401 Unauthorized", "admin.token is set: send it as Authorization: Bearer <token>".into()));
        }
    }
    Ok(())
}

/// Whether `host` (a `Host` header or an origin's host) names this admin
/// listener: an IP address or `localhost`, with its port (or none).
fn host_is_ours(host: &str, port: u16) -> bool {
    let (name, given) = match host.rsplit_once(':') {
        Some((name, p)) if !name.ends_with(':') && (name.starts_with('[') || !name.contains(':')) => {
            (name, p.parse().ok())
        }
        _ => (host, None),
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    let address = name.parse::<std::net::IpAddr>().is_ok() || name.eq_ignore_ascii_case("localhost");
    address && given.is_none_or(|p: u16| p == port)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
                .map(|srv| json!({"addr": srv.addr.to_string(), "weight": srv.weight(), "up": srv.is_up(), "active": srv.active()}))
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
                "failures": failures(d.name()),
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
                "failures": failures(h.name()),
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
    let last_reload = crate::reload::last().as_ref().map(reload_json);
    let reloads: Vec<_> = crate::reload::history().iter().map(reload_json).collect();
    json!({
        "config": c.file.display().to_string(),
        "config_hash": c.hash,
        "listeners": listeners,
        "routes": routes,
        "backends": backends,
        "plugins": plugins,
        "skipped_plugins": skipped,
        "compiling_plugins": compiling,
        "last_reload": last_reload,
        "reloads": reloads,
    })
}

/// A plugin's failed calls so far, by cause (every cause, zeros too).
fn failures(plugin: &str) -> serde_json::Map<String, serde_json::Value> {
    let counters = crate::metrics::plugin(plugin);
    Cause::ALL.iter().map(|&cause| (cause.label().to_string(), counters.failures(cause).into())).collect()
}

/// A reload's outcome as `/status` shows it.
fn reload_json(o: &crate::reload::Outcome) -> serde_json::Value {
    json!({
        "ok": o.error.is_none(),
        "error": o.error,
        "via": o.via,
        "at_unix": o.at.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
    })
}
