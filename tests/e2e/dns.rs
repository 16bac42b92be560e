//! Servers found by DNS, against a real DNS server (dnsmasq) on loopback
//! whose answers the tests change while traffic flows.

use crate::support::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// dnsmasq answering from a hosts file and SRV records of the test's, on a
/// port of its own; killed when dropped.
struct Dnsmasq {
    child: Child,
    port: u16,
    hosts: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Dnsmasq {
    fn start(hosts: &str, srv: &[&str], port: u16) -> Dnsmasq {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("hosts");
        std::fs::write(&file, hosts).expect("hosts file");
        let mut dnsmasq = Command::new("dnsmasq");
        dnsmasq
            .args(["--no-daemon", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--bind-interfaces"])
            .args(["--listen-address=127.0.0.1", "--local-ttl=1", "--log-facility=-"])
            .arg(format!("--port={port}"))
            .arg(format!("--addn-hosts={}", file.display()))
            .args(srv.iter().map(|s| format!("--srv-host={s}")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if is_root() {
            // Otherwise it would switch to the user `nobody`.
            dnsmasq.arg("--user=root");
        }
        let child = dnsmasq.spawn().expect("start dnsmasq");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "dnsmasq did not start on port {port}");
            thread::sleep(Duration::from_millis(20));
        }
        Dnsmasq { child, port, hosts: file, _dir: dir }
    }

    /// Replace the hosts file and have dnsmasq read it again.
    fn set_hosts(&self, hosts: &str) {
        std::fs::write(&self.hosts, hosts).expect("hosts file");
        let sent = Command::new("kill").arg("-HUP").arg(self.child.id().to_string()).status();
        assert!(sent.is_ok_and(|s| s.success()), "SIGHUP to dnsmasq");
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An echo server at `ip:port` that answers each line with `name:line`.
fn named_echo(ip: &str, port: u16, name: &'static str) {
    let listener = TcpListener::bind((ip, port)).unwrap_or_else(|e| panic!("bind {ip}:{port}: {e}"));
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().expect("clone"));
                let mut writer = conn;
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    if writer.write_all(format!("{name}:{line}").as_bytes()).is_err() {
                        break;
                    }
                    line.clear();
                }
            });
        }
    });
}

/// Send one line on a new connection; the name of the server that echoed it.
fn ask(edge: SocketAddr) -> Option<String> {
    let mut c = TcpStream::connect(edge).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    c.write_all(b"hi\n").ok()?;
    let mut reply = String::new();
    BufReader::new(&mut c).read_line(&mut reply).ok()?;
    reply.strip_suffix(":hi\n").map(str::to_string)
}

fn proxy_for(servers: &str, dns: u16) -> Proxy {
    proxy_with(servers, &format!("servers: [127.0.0.1:{dns}], resolve_interval: 1s"), "")
}

/// A proxy whose pool `web` lists `servers` (and `web_extra`, such as a
/// `health` key), with `resolver: {{ resolver }}`.
fn proxy_with(servers: &str, resolver: &str, web_extra: &str) -> Proxy {
    Proxy::start(&format!(
        r#"
listeners:
  - name: edge
    bind: 127.0.0.1:0
    detectors: []
    default: web
routes:
  - name: web
    to: web
backends:
  web: {{ servers: {servers}{web_extra} }}
resolver: {{ {resolver} }}
admin: {{ bind: 127.0.0.1:0 }}
"#
    ))
}

/// The servers of pool `web` in `GET /status`: (address, active), sorted.
fn members(proxy: &Proxy) -> Vec<(String, u64)> {
    field(proxy, |s| s["active"].as_u64().unwrap_or(0))
}

/// Whether each server of pool `web` is up in `GET /status`, by address.
fn up(proxy: &Proxy) -> Vec<(String, bool)> {
    field(proxy, |s| s["up"].as_bool().unwrap_or(true))
}

/// One field of each server of pool `web` in `GET /status`, by address.
fn field<T: Ord>(proxy: &Proxy, of: impl Fn(&Value) -> T) -> Vec<(String, T)> {
    let status: Value = serde_json::from_str(&proxy.admin_get("/status")).expect("status JSON");
    let servers = status["backends"]["web"]["servers"].as_array().cloned().unwrap_or_default();
    let mut out: Vec<_> = servers.iter().map(|s| (s["addr"].as_str().unwrap_or_default().to_string(), of(s))).collect();
    out.sort();
    out
}

/// Wait (at most 20 s) until the pool's addresses are `want`.
fn wait_members(proxy: &Proxy, want: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now: Vec<String> = members(proxy).into_iter().map(|(a, _)| a).collect();
        if now == want {
            return;
        }
        assert!(Instant::now() < deadline, "pool is {now:?}, expected {want:?}:\n{}", proxy.output());
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_host_name_s_addresses_follow_dns_while_traffic_flows() {
    if !have("dnsmasq") {
        return;
    }
    let port = free_port();
    for (ip, name) in [("127.0.0.5", "five"), ("127.0.0.6", "six"), ("127.0.0.7", "seven")] {
        named_echo(ip, port, name);
    }
    let dns = Dnsmasq::start("127.0.0.5 web.test\n127.0.0.6 web.test\n", &[], free_port());
    let proxy = proxy_for(&format!("[web.test:{port}]"), dns.port);
    let edge = proxy.addr("edge");
    let addr = |ip: &str| format!("{ip}:{port}");
    wait_members(&proxy, &[addr("127.0.0.5"), addr("127.0.0.6")]);
    let names: Vec<_> = (0..4).filter_map(|_| ask(edge)).collect();
    assert_eq!(names.iter().filter(|n| *n == "five").count(), 2, "{names:?}");

    // Connections held open on five and six across the change.
    let hold = || {
        let mut c = TcpStream::connect(edge).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        c.write_all(b"hold\n").expect("write");
        let mut line = String::new();
        BufReader::new(c.try_clone().expect("clone")).read_line(&mut line).expect("echo");
        (c, line)
    };
    let held = [hold(), hold()];

    // Traffic keeps flowing while the answer changes.
    let (stop, failed, done) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let traffic = {
        let (stop, failed, done) = (stop.clone(), failed.clone(), done.clone());
        thread::spawn(move || {
            for _ in 0..20_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match ask(edge) {
                    Some(_) => done.fetch_add(1, Ordering::Relaxed),
                    None => failed.fetch_add(1, Ordering::Relaxed),
                };
                thread::sleep(Duration::from_millis(5));
            }
        })
    };
    dns.set_hosts("127.0.0.6 web.test\n127.0.0.7 web.test\n");
    wait_members(&proxy, &[addr("127.0.0.6"), addr("127.0.0.7")]);
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    traffic.join().expect("traffic");
    assert_eq!(failed.load(Ordering::Relaxed), 0, "{} requests succeeded", done.load(Ordering::Relaxed));
    let names: Vec<_> = (0..4).filter_map(|_| ask(edge)).collect();
    assert!(names.iter().all(|n| n == "six" || n == "seven") && names.len() == 4, "{names:?}");

    // The server that stayed is the same one: it still counts its open
    // connection; the one that went still serves its open connection.
    // (The last requests' connections may still be closing: wait for them.)
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut now = members(&proxy);
    while !now.contains(&(addr("127.0.0.6"), 1)) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
        now = members(&proxy);
    }
    assert!(now.contains(&(addr("127.0.0.6"), 1)), "{now:?}");
    for (mut c, first) in held {
        c.write_all(b"again\n").expect("write on a held connection");
        let mut line = String::new();
        BufReader::new(&mut c).read_line(&mut line).expect("echo after the change");
        let name = first.split(':').next().unwrap_or_default().to_string();
        assert_eq!(line, format!("{name}:again\n"));
    }
    let changed = proxy.logs_where(|v| v["message"] == "backend servers changed (DNS)");
    assert!(
        changed.iter().any(|v| v["removed"] == addr("127.0.0.5") && v["added"] == addr("127.0.0.7")),
        "{changed:?}"
    );
    assert!(proxy.logs_where(|v| v["message"] == "reloading").is_empty(), "no reload was needed");
}

#[test]
fn srv_records_give_servers_ports_and_weights() {
    if !have("dnsmasq") {
        return;
    }
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    named_echo("127.0.0.5", pa, "a");
    named_echo("127.0.0.6", pb, "b");
    named_echo("127.0.0.7", pc, "c");
    let hosts = "127.0.0.5 a.test\n127.0.0.6 b.test\n127.0.0.7 c.test\n";
    let srv_a = format!("_echo._tcp.svc.test,a.test,{pa},0,3");
    let srv_b = format!("_echo._tcp.svc.test,b.test,{pb},0,1");
    let backup = format!("_echo._tcp.svc.test,c.test,{pc},1,1");
    let dns_port = free_port();
    let mut dns = Dnsmasq::start(hosts, &[&srv_a, &srv_b, &backup], dns_port);
    let proxy = proxy_for("[{ srv: _echo._tcp.svc.test }]", dns.port);
    let edge = proxy.addr("edge");
    // The lowest priority's records only, weighted 3 to 1.
    wait_members(&proxy, &[format!("127.0.0.5:{pa}"), format!("127.0.0.6:{pb}")]);
    let names: Vec<_> = (0..8).filter_map(|_| ask(edge)).collect();
    assert_eq!(names.iter().filter(|n| *n == "a").count(), 6, "{names:?}");
    assert_eq!(names.iter().filter(|n| *n == "b").count(), 2, "{names:?}");

    // New records (b gone, c in first place): the pool follows.
    drop(dns);
    let srv_c = format!("_echo._tcp.svc.test,c.test,{pc},0,1");
    dns = Dnsmasq::start(hosts, &[&srv_a, &srv_c], dns_port);
    wait_members(&proxy, &[format!("127.0.0.5:{pa}"), format!("127.0.0.7:{pc}")]);
    let names: Vec<_> = (0..8).filter_map(|_| ask(edge)).collect();
    assert!(names.contains(&"c".to_string()) && !names.contains(&"b".to_string()), "{names:?}");
    drop(dns);
}

/// The weights of pool `web` in `GET /status`, by address.
fn weights(proxy: &Proxy) -> Vec<(String, u64)> {
    field(proxy, |s| s["weight"].as_u64().unwrap_or(0))
}

#[test]
fn a_change_of_srv_weights_alone_changes_the_split() {
    if !have("dnsmasq") {
        return;
    }
    let (pa, pb) = (free_port(), free_port());
    named_echo("127.0.0.5", pa, "a");
    named_echo("127.0.0.6", pb, "b");
    let hosts = "127.0.0.5 a.test\n127.0.0.6 b.test\n";
    let srv = |wa: u16, wb: u16| {
        [format!("_echo._tcp.svc.test,a.test,{pa},0,{wa}"), format!("_echo._tcp.svc.test,b.test,{pb},0,{wb}")]
    };
    let dns_port = free_port();
    let [a3, b1] = srv(3, 1);
    let mut dns = Dnsmasq::start(hosts, &[&a3, &b1], dns_port);
    let proxy = proxy_for("[{ srv: _echo._tcp.svc.test }]", dns.port);
    let edge = proxy.addr("edge");
    let (a, b) = (format!("127.0.0.5:{pa}"), format!("127.0.0.6:{pb}"));
    wait_members(&proxy, &[a.clone(), b.clone()]);
    let split = || {
        let names: Vec<_> = (0..8).filter_map(|_| ask(edge)).collect();
        let count = |n: &str| names.iter().filter(|x| *x == n).count();
        (count("a"), count("b"))
    };
    assert_eq!(split(), (6, 2));

    // The same targets and ports, the weights swapped: nothing is added or
    // removed, and the split still follows.
    drop(dns);
    let [a1, b3] = srv(1, 3);
    dns = Dnsmasq::start(hosts, &[&a1, &b3], dns_port);
    let deadline = Instant::now() + Duration::from_secs(20);
    while weights(&proxy) != [(a.clone(), 1), (b.clone(), 3)] {
        assert!(Instant::now() < deadline, "weights are {:?}:\n{}", weights(&proxy), proxy.output());
        thread::sleep(Duration::from_millis(50));
    }
    thread::sleep(Duration::from_millis(100));
    assert_eq!(split(), (2, 6));
    let changed = proxy.logs_where(|v| v["message"] == "backend servers changed (DNS)");
    assert!(changed.iter().any(|v| v["added"] == "" && v["removed"] == "" && v["reweighted"] != ""), "{changed:?}");
    drop(dns);
}

#[test]
fn an_unresolvable_name_fails_check_and_is_retried_by_a_running_proxy() {
    if !have("dnsmasq") {
        return;
    }
    let port = free_port();
    named_echo("127.0.0.8", port, "eight");
    let dns = Dnsmasq::start("", &[], free_port());
    let servers = format!("[late.test:{port}]");
    let proxy = proxy_for(&servers, dns.port);
    let (ok, out, _) = run_cmd(
        Command::new(bin())
            .args(["check", "-c"])
            .arg(proxy.dir.path().join("refractium.yaml"))
            .env("REFRACTIUM_CACHE_DIR", cache_dir()),
        60,
    );
    assert!(!ok, "check must fail on a name that does not resolve: {out}");
    assert!(out.contains(&format!("backends.web.servers[0]: late.test:{port}: ")), "{out}");
    // The running proxy warned and serves once the name resolves, with no reload.
    proxy.wait_log(10, |v| v["message"] == "server name does not resolve; retrying in the background");
    assert_eq!(ask(proxy.addr("edge")), None);
    dns.set_hosts("127.0.0.8 late.test\n");
    wait_members(&proxy, &[format!("127.0.0.8:{port}")]);
    assert_eq!(ask(proxy.addr("edge")).as_deref(), Some("eight"));
}

#[test]
fn without_resolve_interval_a_lower_ttl_sets_the_pace() {
    if !have("dnsmasq") {
        return;
    }
    let port = free_port();
    named_echo("127.0.0.5", port, "five");
    named_echo("127.0.0.6", port, "six");
    // dnsmasq answers with a TTL of 1 s; `resolve_interval` is left at its
    // default of 30 s.
    let dns = Dnsmasq::start("127.0.0.5 web.test\n", &[], free_port());
    let proxy = proxy_with(&format!("[web.test:{port}]"), &format!("servers: [127.0.0.1:{}]", dns.port), "");
    let addr = |ip: &str| format!("{ip}:{port}");
    wait_members(&proxy, &[addr("127.0.0.5")]);
    assert_eq!(ask(proxy.addr("edge")).as_deref(), Some("five"));
    let changed = Instant::now();
    dns.set_hosts("127.0.0.6 web.test\n");
    let deadline = changed + Duration::from_secs(5);
    while members(&proxy).into_iter().map(|(a, _)| a).collect::<Vec<_>>() != [addr("127.0.0.6")] {
        assert!(Instant::now() < deadline, "the pool did not follow a 1 s TTL within 5 s:\n{}", proxy.output());
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(ask(proxy.addr("edge")).as_deref(), Some("six"));
}

#[test]
fn a_server_that_is_down_stays_down_across_a_dns_change_that_keeps_it() {
    if !have("dnsmasq") {
        return;
    }
    let port = free_port();
    named_echo("127.0.0.5", port, "five");
    named_echo("127.0.0.6", port, "six");
    // Nothing listens on 127.0.0.9: its health checks fail.
    let dns = Dnsmasq::start("127.0.0.5 web.test\n127.0.0.9 web.test\n", &[], free_port());
    let proxy = proxy_with(
        &format!("[web.test:{port}]"),
        &format!("servers: [127.0.0.1:{}], resolve_interval: 1s", dns.port),
        ", health: { interval: 200ms, timeout: 1s, rise: 2, fall: 2 }",
    );
    let addr = |ip: &str| format!("{ip}:{port}");
    let (five, six, nine) = (addr("127.0.0.5"), addr("127.0.0.6"), addr("127.0.0.9"));
    let down_lines = || proxy.logs_where(|v| v["message"] == "health check: server is down" && v["server"] == nine);
    proxy.wait_log(20, |v| v["message"] == "health check: server is down" && v["server"] == nine);
    assert_eq!(up(&proxy), [(five.clone(), true), (nine.clone(), false)]);

    // 127.0.0.5 goes, 127.0.0.6 comes, 127.0.0.9 stays: it is still down
    // at once, without `fall` checks to find it down again.
    dns.set_hosts("127.0.0.6 web.test\n127.0.0.9 web.test\n");
    wait_members(&proxy, &[six.clone(), nine.clone()]);
    let watch = Instant::now() + Duration::from_secs(1);
    while Instant::now() < watch {
        let now = up(&proxy);
        assert!(now.contains(&(nine.clone(), false)), "{now:?}:\n{}", proxy.output());
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(down_lines().len(), 1, "marked down once, not again after the change: {:?}", down_lines());
    // And it takes no clients.
    let names: Vec<_> = (0..4).filter_map(|_| ask(proxy.addr("edge"))).collect();
    assert_eq!(names, ["six"; 4]);
}
