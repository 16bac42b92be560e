//! systemd integration: readiness notifications for `Type=notify` units and
//! sockets passed by socket activation (`LISTEN_FDS`).
//!
//! Notifications go to `NOTIFY_SOCKET` when it is set and are skipped
//! otherwise: `READY=1` once every listener is bound and the first snapshot
//! is in force, `RELOADING=1` with `MONOTONIC_USEC` when a reload starts and
//! `READY=1` when it is over, `STOPPING=1` at shutdown, and `STATUS=` with
//! the open connections and the last reload's outcome (also every few
//! seconds while running).
//!
//! Passed sockets are taken once at start ([`take_passed`]); a listener
//! whose configured address and transport match one uses it instead of
//! binding, so the queue of connections systemd accepted meanwhile (during
//! a restart, say) is served. The originals stay open for the life of the
//! process: a listener that a reload removes and a later one adds back gets
//! the same socket again.
//!
//! A passed TCP socket is shared by every worker; a passed UDP socket is
//! served by one worker only, so that all of a client's datagrams reach one
//! session ([`crate::listener::bind_keys`]).

use socket2::{Socket, Type};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

/// A socket systemd passed, with the address it is bound to.
struct Passed {
    addr: SocketAddr,
    udp: bool,
    socket: Socket,
}

static PASSED: Mutex<Vec<Passed>> = Mutex::new(Vec::new());

/// Take the sockets systemd passed (none unless `LISTEN_PID` is this
/// process). Returns their addresses, for the log.
pub fn take_passed() -> anyhow::Result<Vec<(SocketAddr, bool)>> {
    let fds = sd_notify::listen_fds().map_err(|e| anyhow::anyhow!("LISTEN_FDS: {e}"))?;
    let mut taken = Vec::new();
    for fd in fds {
        let socket = Socket::from(owned(fd));
        let what = |e: std::io::Error| anyhow::anyhow!("the socket systemd passed as fd {fd}: {e}");
        let addr = socket.local_addr().map_err(what)?;
        let Some(addr) = addr.as_socket() else {
            anyhow::bail!("the socket systemd passed as fd {fd} is not an IP socket (only IP listeners are supported)");
        };
        let udp = match socket.r#type().map_err(what)? {
            Type::STREAM => false,
            Type::DGRAM => true,
            other => anyhow::bail!("the socket systemd passed as fd {fd} ({addr}) has type {other:?}"),
        };
        socket.set_nonblocking(true).map_err(what)?;
        taken.push((addr, udp));
        if let Ok(mut passed) = PASSED.lock() {
            passed.push(Passed { addr, udp, socket });
        }
    }
    Ok(taken)
}

/// Take ownership of a descriptor systemd passed.
///
/// `unsafe` because the compiler cannot know the descriptor is ours: by the
/// socket-activation protocol every descriptor from 3 to 3 + `LISTEN_FDS`
/// belongs to this process (`LISTEN_PID` was checked) and nothing else in
/// it uses them; each is taken exactly once, here.
#[allow(unsafe_code)]
fn owned(fd: std::os::fd::RawFd) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: see above; the descriptor is open and owned by nobody else.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }
}

/// A copy of the passed socket bound to `addr` for this transport, if any.
pub fn passed(addr: SocketAddr, udp: bool) -> Option<std::io::Result<Socket>> {
    let passed = PASSED.lock().ok()?;
    passed.iter().find(|p| p.addr == addr && p.udp == udp).map(|p| p.socket.try_clone())
}

/// Addresses of passed sockets that no listener of `config` uses.
pub fn unused(config: &crate::config::Config) -> Vec<SocketAddr> {
    let keys = crate::listener::socket_keys(config);
    let Ok(passed) = PASSED.lock() else { return Vec::new() };
    passed.iter().filter(|p| !keys.iter().any(|k| k.1 == p.addr && k.2 == p.udp)).map(|p| p.addr).collect()
}

/// Whether the service manager listens for notifications.
fn enabled() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

fn send(states: &[sd_notify::NotifyState]) {
    if !enabled() {
        return;
    }
    if let Err(err) = sd_notify::notify(states) {
        tracing::debug!(error = %err, "cannot notify the service manager");
    }
}

/// The status line: open connections and sessions, the last reload.
fn status() -> String {
    let (connections, sessions) = crate::listener::open_counts();
    let reload = match crate::reload::last() {
        None => "no reload yet".to_string(),
        Some(last) => {
            let at = humantime::format_rfc3339_seconds(last.at);
            match last.error {
                None => format!("last reload {at} ({}) in force", last.via),
                Some(err) => format!("last reload {at} ({}) rejected: {err}", last.via),
            }
        }
    };
    format!("{connections} connections, {sessions} UDP sessions open; {reload}")
}

/// Every listener is bound and the first snapshot is in force.
pub fn ready() {
    let status = status();
    send(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status(&status)]);
}

/// A reload starts.
pub fn reloading() {
    let Ok(now) = sd_notify::NotifyState::monotonic_usec_now() else {
        return send(&[sd_notify::NotifyState::Reloading]);
    };
    send(&[sd_notify::NotifyState::Reloading, now]);
}

/// Shutdown starts.
pub fn stopping() {
    send(&[sd_notify::NotifyState::Stopping, sd_notify::NotifyState::Status("draining open connections")]);
}

/// Send the status line every few seconds, until the process ends (only
/// when a service manager listens).
pub async fn report_status() {
    if !enabled() {
        return;
    }
    let mut every = tokio::time::interval(Duration::from_secs(5));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        every.tick().await;
        let status = status();
        send(&[sd_notify::NotifyState::Status(&status)]);
    }
}
