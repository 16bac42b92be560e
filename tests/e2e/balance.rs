//! Balance policies, seen from the servers: round robin takes the servers
//! in turn, `least_conn` the one with the fewest open connections, `random`
//! every one sooner or later, `hash_client_ip` one server per client address.

use crate::support::*;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::time::Duration;

/// The servers' names, in the order the pool lists them.
const NAMES: [&str; 3] = ["one", "two", "three"];

/// Three servers that answer `reply(name)`, and a proxy whose listener `edge`
/// detects nothing and sends every connection to their pool, balanced by
/// `policy`.
fn pool(policy: &str, reply: fn(&'static str) -> Reply, extra: &str) -> (Proxy, Vec<Backend>) {
    let servers: Vec<Backend> = NAMES.iter().map(|name| Backend::start(reply(name))).collect();
    let list = servers.iter().map(|s| s.addr.to_string()).collect::<Vec<_>>().join(", ");
    let yaml = format!(
        "\
listeners:
  - name: edge
    bind: 127.0.0.1:0
    detectors: []
    default: web
routes:
  - name: web
    to: web
backends:
  web: {{ servers: [{list}], balance: {policy} }}
{extra}"
    );
    (Proxy::start(&yaml), servers)
}

/// Which server answers one connection (of a server that answers `Record`).
fn served_by(proxy: &Proxy) -> String {
    let answer = proxy.exchange_eof("edge", b"who?");
    answer.trim_end().to_string()
}

#[test]
fn round_robin_takes_the_servers_in_turn() {
    let (proxy, _servers) = pool("round_robin", Reply::Record, "");
    let order: Vec<String> = (0..12).map(|_| served_by(&proxy)).collect();
    let first = NAMES.iter().position(|n| *n == order[0]).unwrap_or_else(|| panic!("unknown server: {order:?}"));
    // From wherever it starts, each connection goes to the next server in
    // the pool's order: four rounds of one, two, three.
    let expected: Vec<&str> = (0..12).map(|i| NAMES[(first + i) % NAMES.len()]).collect();
    assert_eq!(order, expected);
}

/// A connection held open through the proxy to a `Hello` server.
struct Held {
    /// Open while the test holds it.
    _stream: TcpStream,
    server: String,
}

/// Open a connection and learn which server holds it (its greeting).
fn hold(proxy: &Proxy) -> Held {
    let stream = TcpStream::connect(proxy.addr("edge")).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).expect("the server's greeting");
    Held { _stream: stream, server: line.trim_end().to_string() }
}

fn count(held: &[Held]) -> BTreeMap<&str, usize> {
    let mut counts: BTreeMap<&str, usize> = NAMES.iter().map(|n| (*n, 0)).collect();
    for h in held {
        *counts.get_mut(h.server.as_str()).unwrap_or_else(|| panic!("unknown server {}", h.server)) += 1;
    }
    counts
}

#[test]
fn least_conn_sends_a_new_connection_to_the_least_busy_server() {
    let (proxy, _servers) = pool("least_conn", Reply::Hello, "admin: { bind: 127.0.0.1:0 }\n");
    // Nine connections held open, one after another: each goes to a server
    // with the fewest, so they end up three a server.
    let mut held: Vec<Held> = (0..9).map(|_| hold(&proxy)).collect();
    assert_eq!(count(&held).values().copied().collect::<Vec<_>>(), [3, 3, 3], "{:?}", count(&held));
    // Server `one` loses its three; the proxy has closed them once its open
    // count is down to six.
    held.retain(|h| h.server != "one");
    proxy.wait_metric(10, "refractium_tcp_connections_open", |open| open == 6);
    // Three new connections: `one` has the fewest (0, then 1, then 2 of
    // the others' 3) every time.
    for i in 0..3 {
        let h = hold(&proxy);
        assert_eq!(h.server, "one", "new connection {i} with one at {i} open and the others at 3");
        held.push(h);
    }
    assert_eq!(count(&held).values().copied().collect::<Vec<_>>(), [3, 3, 3]);
}

#[test]
fn random_uses_every_server_and_no_fixed_turn() {
    let (proxy, _servers) = pool("random", Reply::Record, "");
    let order: Vec<String> = (0..200).map(|_| served_by(&proxy)).collect();
    let used: BTreeSet<&str> = order.iter().map(String::as_str).collect();
    // Each server is missed by all 200 with a chance of (2/3)^200 ≈ 1e-35.
    assert_eq!(used, NAMES.into_iter().collect(), "{order:?}");
    // Neither a fixed turn (round robin) nor stuck: some server is picked
    // twice in a row somewhere (round robin never does; a fair draw does
    // with a chance of 1 - (2/3)^199).
    assert!(order.windows(2).any(|w| w[0] == w[1]), "{order:?}");
}

#[test]
fn hash_client_ip_keeps_a_client_on_one_server_and_spreads_clients() {
    let (proxy, _servers) = pool("hash_client_ip", Reply::Record, "");
    let edge = proxy.addr("edge");
    let mut by_client: BTreeMap<Ipv4Addr, BTreeSet<String>> = BTreeMap::new();
    // 40 client addresses (all of 127.0.0.0/8 is loopback on Linux), four
    // connections each, from different ports.
    for host in 2..42u8 {
        let ip = Ipv4Addr::new(127, 0, 0, host);
        for _ in 0..4 {
            let mut c = connect_from(IpAddr::V4(ip), edge);
            c.write_all(b"who?").expect("write");
            c.shutdown(std::net::Shutdown::Write).expect("half-close");
            by_client.entry(ip).or_default().insert(reply(&mut c).trim_end().to_string());
        }
    }
    for (ip, servers) in &by_client {
        assert_eq!(servers.len(), 1, "client {ip} was sent to {servers:?}");
    }
    let used: BTreeSet<&str> = by_client.values().flatten().map(String::as_str).collect();
    // A hash that puts 40 addresses on two servers or fewer: (2/3)^40 * 3 ≈ 3e-7.
    assert_eq!(used, NAMES.into_iter().collect(), "{by_client:?}");
}
