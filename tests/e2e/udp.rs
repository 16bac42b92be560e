//! UDP listeners: sessions per client, detection on the first datagrams,
//! bounded state. Real clients where they exist (dig).

use crate::support::*;
use crate::udp_backend::*;
use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;

/// A WireGuard handshake initiation captured from wireguard-go.
fn wireguard_initiation() -> Vec<u8> {
    include_bytes!("../../plugins/wireguard/testdata/wireguard_go_initiation.bin").to_vec()
}

fn udp_proxy(extra: &str, dns: SocketAddr, wg: SocketAddr, other: SocketAddr) -> Proxy {
    Proxy::start(&format!(
        r#"
listeners:
  - name: edge
    bind: 127.0.0.1:0
    transport: udp
    detectors: [wireguard, dns]
    detect: {{ timeout: 1s }}
    default: other
routes:
  - name: dns
    match: {{ protocol: dns }}
    to: dns
  - name: wireguard
    match: {{ protocol: wireguard }}
    to: wg
  - name: other
    to: other
backends:
  dns: {{ servers: [{dns}] }}
  wg: {{ servers: [{wg}] }}
  other: {{ servers: [{other}] }}
{extra}
"#
    ))
}

#[test]
fn dig_resolves_through_the_proxy_and_wireguard_shares_the_port() {
    let dns = UdpBackend::start(dns_answer);
    let wg = UdpBackend::start(echo);
    let other = UdpBackend::start(echo);
    let proxy = udp_proxy("udp: { session_timeout: 500ms }", dns.addr, wg.addr, other.addr);
    let addr = proxy.addr("edge");
    if have("dig") {
        let (ok, out, err) = run_cmd(
            Command::new("dig").args([
                "+short",
                "+timeout=3",
                "+tries=1",
                "-p",
                &addr.port().to_string(),
                "@127.0.0.1",
                "example.com",
            ]),
            15,
        );
        assert!(ok, "dig failed: {out} {err}");
        assert_eq!(out.trim(), "192.0.2.1");
    }
    // A WireGuard initiation on the same port goes to the WireGuard server,
    // and the reply comes back from the proxy's address.
    let c = client();
    c.send_to(&wireguard_initiation(), addr).expect("send");
    let mut buf = [0u8; 2048];
    let (n, from) = c.recv_from(&mut buf).expect("reply");
    assert_eq!(from, addr);
    assert_eq!(&buf[..n], &wireguard_initiation()[..]);
    assert_eq!(wg.wait_seen(1)[0].1, wireguard_initiation());
    assert!(other.seen().is_empty());
    let dig = have("dig");
    let access = proxy.wait_access(if dig { 2 } else { 1 });
    assert!(access.iter().any(|a| a["protocol"] == "wireguard" && a["transport"] == "udp"), "{access:?}");
    if dig {
        assert!(access.iter().any(|a| a["protocol"] == "dns" && a["route"] == "dns"), "{access:?}");
    }
}

#[test]
fn a_session_keeps_order_boundaries_and_large_datagrams() {
    let dns = UdpBackend::start(dns_answer);
    let wg = UdpBackend::start(echo);
    let other = UdpBackend::start(echo);
    let proxy = udp_proxy("", dns.addr, wg.addr, other.addr);
    let addr = proxy.addr("edge");
    let c = client();
    // Unrecognised first datagram: default route; later ones follow it.
    let sizes = [10usize, 60_000, 1, 1200, 65_000];
    for (i, &size) in sizes.iter().enumerate() {
        let d: Vec<u8> = (0..size).map(|j| (i * 31 + j) as u8 | 0x80).collect();
        c.send_to(&d, addr).expect("send");
        let mut buf = vec![0u8; 65536];
        let (n, _) = c.recv_from(&mut buf).expect("echo");
        assert_eq!(&buf[..n], &d[..], "datagram {i} of {size} bytes comes back whole");
    }
    let seen = other.wait_seen(sizes.len());
    let lens: Vec<usize> = seen.iter().map(|(_, d)| d.len()).collect();
    assert_eq!(lens, sizes, "boundaries and order kept");
    let sources: HashSet<SocketAddr> = seen.iter().map(|(s, _)| *s).collect();
    assert_eq!(sources.len(), 1, "one upstream socket per session");
    // Empty datagrams are dropped, not forwarded: the session keeps order,
    // so one forwarded would reach the server before the datagram after it.
    c.send_to(&[], addr).expect("send empty");
    c.send_to(b"\x80after", addr).expect("send");
    let mut buf = [0u8; 64];
    let (n, _) = c.recv_from(&mut buf).expect("echo");
    assert_eq!(&buf[..n], b"\x80after", "the next echo is of the datagram after the empty one");
    let seen = other.wait_seen(sizes.len() + 1);
    let lens: Vec<usize> = seen.iter().map(|(_, d)| d.len()).collect();
    assert_eq!(lens[sizes.len()..], [b"\x80after".len()], "{lens:?}");
}

#[test]
fn idle_sessions_expire() {
    let dns = UdpBackend::start(dns_answer);
    let wg = UdpBackend::start(echo);
    let other = UdpBackend::start(echo);
    let proxy = udp_proxy("udp: { session_timeout: 300ms }", dns.addr, wg.addr, other.addr);
    let c = client();
    c.send_to(b"\x80hello", proxy.addr("edge")).expect("send");
    let mut buf = [0u8; 64];
    c.recv_from(&mut buf).expect("echo");
    let access = proxy.wait_access(1);
    assert_eq!(access[0]["close"], "idle timeout");
    assert_eq!(access[0]["datagrams_up"], 1);
    assert_eq!(access[0]["datagrams_down"], 1);
    // A new datagram starts a new session (a new upstream socket).
    c.send_to(b"\x80again", proxy.addr("edge")).expect("send");
    c.recv_from(&mut buf).expect("echo");
    let sources: HashSet<SocketAddr> = other.wait_seen(2).iter().map(|(s, _)| *s).collect();
    assert_eq!(sources.len(), 2);
}

#[test]
fn a_flood_of_new_sources_stays_within_max_sessions() {
    let dns = UdpBackend::start(dns_answer);
    let wg = UdpBackend::start(echo);
    let other = UdpBackend::start(echo);
    let proxy = udp_proxy(
        "udp: { max_sessions: 20, max_sessions_per_ip: 1000, session_timeout: 30s }\nadmin: { bind: 127.0.0.1:0 }",
        dns.addr,
        wg.addr,
        other.addr,
    );
    let addr = proxy.addr("edge");
    let established = client();
    established.send_to(b"\x80first", addr).expect("send");
    let mut buf = [0u8; 64];
    established.recv_from(&mut buf).expect("echo");
    // 300 sources (source ports) send one datagram each.
    let flood: Vec<UdpSocket> = (0..300).map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind")).collect();
    for s in &flood {
        let _ = s.send_to(b"\x80flood", addr);
    }
    // The flood has landed once the proxy refused most of it.
    proxy.wait_metric(20, "refractium_udp_sessions_refused_total", |refused| refused >= 200);
    proxy.wait_metric(20, "refractium_udp_datagrams_dropped_total", |dropped| dropped >= 200);
    // The established session keeps working.
    for i in 0..5 {
        let msg = format!("\x7fstill {i}");
        established.send_to(msg.as_bytes(), addr).expect("send");
        let (n, _) = established.recv_from(&mut buf).expect("echo during flood");
        assert_eq!(&buf[..n], msg.as_bytes());
    }
    let sources: HashSet<SocketAddr> = other.seen().iter().map(|(s, _)| *s).collect();
    assert!(sources.len() <= 20, "{} upstream sessions", sources.len());
    proxy.wait_log(5, |v| v["limit"] == "udp.max_sessions");
    // The refusals and drops are counted on the admin listener's /metrics,
    // under the listener's name.
    let listener = |name: &str| format!("{name}{{listener=\"edge\"}}");
    assert!(proxy.metric(&listener("refractium_udp_sessions_refused_total")) >= 200);
    assert!(proxy.metric(&listener("refractium_udp_datagrams_dropped_total")) >= 200);
    assert!(proxy.metric(&listener("refractium_udp_sessions_open")) <= 20);
}

/// Is the Python QUIC library there? (`.ci/run` installs it with pip.)
fn have_aioquic() -> bool {
    let ok = Command::new("python3").args(["-c", "import aioquic"]).output().is_ok_and(|o| o.status.success());
    if !ok {
        missing("the python3 module `aioquic` is not installed");
    }
    ok
}

/// Start a real QUIC handshake (aioquic) to `addr` with `sni`; the backends
/// here are not QUIC servers, so it times out after sending its first flight.
fn quic_client(addr: SocketAddr, sni: &str, alpns: usize) {
    let script = format!(
        r#"
import asyncio
from aioquic.asyncio import connect
from aioquic.quic.configuration import QuicConfiguration
async def main():
    cfg = QuicConfiguration(is_client=True, alpn_protocols=["h3"] + ["x-%03d" % i for i in range({alpns})], server_name="{sni}")
    cfg.verify_mode = False
    try:
        async with connect("127.0.0.1", {port}, configuration=cfg, wait_connected=True):
            pass
    except Exception:
        pass
try:
    asyncio.run(asyncio.wait_for(main(), 1.5))
except Exception:
    pass
"#,
        port = addr.port()
    );
    let _ = run_cmd(Command::new("python3").args(["-c", &script]), 20);
}

#[test]
fn quic_clients_reach_backends_by_sni_even_when_the_hello_spans_datagrams() {
    if !have_aioquic() {
        return;
    }
    let a = UdpBackend::start(|_| Vec::new());
    let b = UdpBackend::start(|_| Vec::new());
    let other = UdpBackend::start(|_| Vec::new());
    let proxy = Proxy::start(&format!(
        r#"
listeners:
  - name: quic
    bind: 127.0.0.1:0
    transport: udp
    detectors: [quic]
    detect: {{ timeout: 2s }}
    default: other
routes:
  - name: a
    match: {{ protocol: quic, sni: a.example.com }}
    to: a
  - name: b
    match: {{ protocol: quic, sni: "*.b.example.com", alpn: [h3] }}
    to: b
  - name: other
    to: other
backends:
  a: {{ servers: [{a}] }}
  b: {{ servers: [{b}] }}
  other: {{ servers: [{other}] }}
udp: {{ session_timeout: 3s }}
"#,
        a = a.addr,
        b = b.addr,
        other = other.addr
    ));
    let addr = proxy.addr("quic");
    // Each client's session outlives the client (1.5 s): its retransmissions
    // back off to 0.8 s apart, and the CONNECTION_CLOSE it sends when it gives
    // up carries no ClientHello, so a session that expired in between would
    // rightly send that datagram to the default route.
    quic_client(addr, "a.example.com", 0);
    // 60 extra ALPN names push the ClientHello over two Initial datagrams.
    quic_client(addr, "www.b.example.com", 60);
    let first_a = a.wait_seen(1);
    assert!(first_a[0].1.len() >= 1200, "the Initial reaches the backend whole");
    let seen_b = b.wait_seen(2);
    assert!(seen_b[0].1.len() >= 1200 && seen_b[1].1.len() >= 1200, "both held datagrams forwarded, in order");
    assert!(other.seen().is_empty(), "nothing fell through to the default route");
    let access = proxy.wait_access(2);
    assert!(access.iter().any(|l| l["sni"] == "a.example.com" && l["route"] == "a"), "{access:?}");
    assert!(access.iter().any(|l| l["sni"] == "www.b.example.com" && l["route"] == "b"), "{access:?}");
}
