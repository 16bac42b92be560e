//! Admission limits shared by every listener of a kind: how many
//! connections (or UDP sessions) are open in all and per client IP. A
//! refusal is logged at most once a second, with the limit's config key.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Open counts, and the config keys that bound them.
pub struct Limits {
    total: AtomicUsize,
    /// Open per client IP. Hashed with foldhash, seeded per process: a
    /// client chooses its address only within its own allocation, and the
    /// map is touched twice per connection, where SipHash cost ~190
    /// instructions a lookup.
    per_ip: Mutex<HashMap<IpAddr, usize, foldhash::fast::RandomState>>,
    last_warning: AtomicU64,
    /// Config key of the total limit, e.g. `limits.max_connections`.
    total_key: &'static str,
    /// Config key of the per-IP limit.
    per_ip_key: &'static str,
    /// What is being admitted, for the log: `connection`, `udp session`.
    what: &'static str,
}

/// One admitted connection or session; releases its place when dropped.
pub struct Admitted {
    limits: Arc<Limits>,
    ip: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.limits.total.fetch_sub(1, Ordering::Relaxed);
        if let Ok(mut map) = self.limits.per_ip.lock()
            && let Entry::Occupied(mut n) = map.entry(self.ip)
        {
            *n.get_mut() -= 1;
            if *n.get() == 0 {
                n.remove();
            }
        }
    }
}

/// The key a client counts under in the per-IP limits: its IPv4 address,
/// or its IPv6 network of `ipv6_prefix` bits (an IPv4-mapped address
/// counts as its IPv4 address).
pub fn host_key(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let net = ipnet::Ipv6Net::new(v6, ipv6_prefix.min(128)).map(|n| n.trunc().addr()).unwrap_or(v6);
            IpAddr::V6(net)
        }
        v4 => v4,
    }
}

impl Admitted {
    /// Count this one against `ip` instead (the client a load balancer's
    /// PROXY header names), or say which limit refuses it there.
    pub fn rekey(&mut self, ip: IpAddr, max_per_ip: usize) -> Result<(), &'static str> {
        if ip == self.ip {
            return Ok(());
        }
        let limits = &self.limits;
        let Ok(mut map) = limits.per_ip.lock() else { return Err(limits.per_ip_key) };
        let n = map.entry(ip).or_insert(0);
        if *n >= max_per_ip {
            if *n == 0 {
                map.remove(&ip);
            }
            return Err(limits.per_ip_key);
        }
        *n += 1;
        if let Entry::Occupied(mut old) = map.entry(self.ip) {
            *old.get_mut() -= 1;
            if *old.get() == 0 {
                old.remove();
            }
        }
        self.ip = ip;
        Ok(())
    }

    /// Log a refusal by [`Admitted::rekey`] (at most once a second).
    pub fn warn_refused(&self, limit: &str, client: SocketAddr) {
        self.limits.warn_refused(limit, client);
    }
}

impl Limits {
    /// Limits whose refusals name these config keys.
    pub fn new(what: &'static str, total_key: &'static str, per_ip_key: &'static str) -> Self {
        Limits {
            total: AtomicUsize::new(0),
            per_ip: Mutex::default(),
            last_warning: AtomicU64::new(0),
            total_key,
            per_ip_key,
            what,
        }
    }

    /// Admit one more from `ip`, or say which limit (its config key) refuses.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, max_total: usize, max_per_ip: usize) -> Result<Admitted, &'static str> {
        if self.total.fetch_add(1, Ordering::Relaxed) >= max_total {
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err(self.total_key);
        }
        let Ok(mut map) = self.per_ip.lock() else {
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err(self.per_ip_key);
        };
        let n = map.entry(ip).or_insert(0);
        if *n >= max_per_ip {
            drop(map);
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err(self.per_ip_key);
        }
        *n += 1;
        Ok(Admitted { limits: self.clone(), ip })
    }

    /// Open right now.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Log a refusal at most once a second.
    pub fn warn_refused(&self, limit: &str, client: SocketAddr) {
        if crate::clock::first_this_second(&self.last_warning) {
            tracing::warn!(client = %client, limit, "new {} refused: limit reached (logged at most once a second)", self.what);
        }
    }
}

/// Descriptors the process uses besides connections and sessions:
/// listening sockets, event loops, the admin listener, logs, plugin files.
const FD_OVERHEAD: u64 = 64;

/// Raise the soft limit on open files to the hard one (a proxy needs one
/// per client and one per backend connection). The limit then in force.
pub fn raise_nofile() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit { current: limit.maximum, maximum: limit.maximum };
        if let Err(err) = setrlimit(Resource::Nofile, raised) {
            tracing::debug!(error = %err, "cannot raise the open-file limit to its hard limit");
        }
    }
    getrlimit(Resource::Nofile).current
}

/// The open-file limit `run` would have (the hard limit, to which it raises
/// the soft one).
pub fn nofile_hard() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum
}

/// A warning when `limit` open files cannot hold the configured limits:
/// two descriptors per TCP connection (client and backend), one per UDP
/// session's upstream socket, and some for the process itself.
pub fn nofile_warning(config: &crate::config::Config, limit: Option<u64>) -> Option<String> {
    let limit = limit?;
    let (tcp, udp) = (config.limits.max_connections as u64, config.udp.max_sessions as u64);
    let needed = 2 * tcp + udp + FD_OVERHEAD;
    (limit < needed).then(|| {
        format!(
            "the open-file limit ({limit}) cannot hold limits.max_connections ({tcp}, two descriptors each) and \
             udp.max_sessions ({udp}): {needed} needed; raise it (systemd: LimitNOFILE=; shell: ulimit -Hn) or \
             lower the limits. Past it, new connections wait in the accept queue"
        )
    })
}

/// Whether a failed socket call ran out of something of this host's (file
/// descriptors, memory, local ports) rather than met a refusing server: no
/// server is to blame, and none would do better.
pub fn local_shortage(err: &std::io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EADDRNOTAVAIL))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_count_total_and_per_ip_and_release_on_drop() {
        let limits = Arc::new(Limits::new("connection", "total", "per_ip"));
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let first = limits.admit(a, 3, 2).expect("first");
        let _second = limits.admit(a, 3, 2).expect("second");
        assert_eq!(limits.admit(a, 3, 2).err(), Some("per_ip"));
        let _third = limits.admit(b, 3, 2).expect("other ip");
        assert_eq!(limits.admit(b, 3, 2).err(), Some("total"));
        drop(first);
        assert_eq!(limits.open(), 2);
        assert!(limits.admit(a, 3, 2).is_ok());
    }

    #[test]
    fn ipv6_clients_count_per_prefix() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().expect("ip");
        let other: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(host_key(a, 64), host_key(b, 64));
        assert_ne!(host_key(a, 64), host_key(other, 64));
        assert_ne!(host_key(a, 128), host_key(b, 128));
        assert_eq!(host_key("::ffff:192.0.2.1".parse().expect("ip"), 64), "192.0.2.1".parse::<IpAddr>().expect("ip"));
    }

    #[test]
    fn a_rekeyed_admission_counts_against_its_new_address() {
        let limits = Arc::new(Limits::new("connection", "total", "per_ip"));
        let balancer: IpAddr = "10.0.0.1".parse().expect("ip");
        let client: IpAddr = "192.0.2.9".parse().expect("ip");
        let mut first = limits.admit(balancer, 10, usize::MAX).expect("first");
        first.rekey(client, 1).expect("rekeyed");
        let mut second = limits.admit(balancer, 10, usize::MAX).expect("second");
        assert_eq!(second.rekey(client, 1), Err("per_ip"));
        drop(first);
        second.rekey(client, 1).expect("room again");
        drop(second);
        assert!(limits.per_ip.lock().expect("map").is_empty());
    }
}
