//! PROXY protocol v1 and v2 towards a backend (`backends.*.proxy_protocol`),
//! checked by a server that parses the header before the client's first
//! bytes: HAProxy with `accept-proxy`, answering each HTTP request with the
//! client address it learned from the header.

use crate::haproxy::{Haproxy, PREAMBLE};
use crate::support::*;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};

/// A proxy whose HTTP route goes to HAProxy behind `proxy_protocol:
/// version`; clients from 127.0.0.2 and 127.0.0.3 each get back the source
/// and destination HAProxy read from the header.
fn client_addresses_reach_haproxy(version: &str) {
    if !Haproxy::installed() {
        return;
    }
    let port = free_port();
    let haproxy = Haproxy::start(
        &format!(
            "{PREAMBLE}\
frontend seen
    mode http
    bind 127.0.0.1:{port} accept-proxy
    http-request return status 200 content-type text/plain lf-string \"%[src]:%[src_port] %[dst]:%[dst_port]\\n\"
"
        ),
        &[port],
    );
    let yaml = format!(
        "\
listeners:
  - name: edge
    bind: 127.0.0.1:0
    detectors: [http]
routes:
  - name: web
    match: {{ protocol: http }}
    to: seen
backends:
  seen: {{ servers: [127.0.0.1:{port}], proxy_protocol: {version} }}
"
    );
    let proxy = Proxy::start(&yaml);
    let edge = proxy.addr("edge");
    for host in [2, 3] {
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, host));
        let mut client = connect_from(ip, edge);
        let me = client.local_addr().expect("client address");
        client.write_all(b"GET /who HTTP/1.1\r\nHost: seen\r\nConnection: close\r\n\r\n").expect("write");
        let answer = reply(&mut client);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}\nhaproxy:\n{}", haproxy.output());
        // The request parsed after the header: the header came first and
        // whole, and named this client and the address it connected to.
        let body = answer.split_once("\r\n\r\n").map(|(_, body)| body).unwrap_or_default();
        assert_eq!(body, format!("{me} {edge}\n"), "{answer}\nhaproxy:\n{}", haproxy.output());
    }
}

#[test]
fn proxy_protocol_v1_gives_haproxy_the_client_address() {
    client_addresses_reach_haproxy("v1");
}

#[test]
fn proxy_protocol_v2_gives_haproxy_the_client_address() {
    client_addresses_reach_haproxy("v2");
}
