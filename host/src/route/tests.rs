//! Table-driven routing tests: YAML routes in, route name out. No sockets.

use super::*;
use crate::config;
use std::path::Path;

const ROUTES: &str = r#"
listeners:
  - name: edge
    bind: 127.0.0.1:0
    default: web
routes:
  - name: api
    match: { protocol: tls, sni: "*.example.com", alpn: [h2] }
    to: web
  - name: exact
    match: { protocol: tls, sni: "example.com" }
    to: web
  - name: internal-ssh
    match: { protocol: ssh, client: [10.0.0.0/8, "192.168.1.7"] }
    to: ssh
  - name: site
    match: { protocol: http, attributes: { host: "*.example.com" } }
    to: web
  - name: any-http
    match: { protocol: http }
    to: web
  - name: web
    to: web
backends:
  web: { servers: [127.0.0.1:8080] }
  ssh: { servers: [127.0.0.1:22] }
"#;

fn table() -> RouteTable {
    let config = config::parse(ROUTES, Path::new("routes.yaml")).expect("valid config");
    RouteTable::new(&config.routes).expect("routes compile")
}

fn det(protocol: &str, sni: Option<&str>, alpn: &[&str], attrs: &[(&str, &str)]) -> Detection {
    Detection {
        protocol: protocol.into(),
        sni: sni.map(Into::into),
        alpn: alpn.iter().map(|s| s.to_string()).collect(),
        attributes: attrs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    }
}

#[test]
fn routes_match_in_order() {
    let t = table();
    let ip = |s: &str| -> IpAddr { s.parse().expect("ip") };
    let cases: &[(Detection, &str, Option<&str>)] = &[
        (det("tls", Some("a.example.com"), &["h2", "http/1.1"], &[]), "1.2.3.4", Some("api")),
        (det("tls", Some("A.B.Example.COM"), &["h2"], &[]), "1.2.3.4", Some("api")),
        (det("tls", Some("a.example.com"), &["http/1.1"], &[]), "1.2.3.4", None),
        (det("tls", Some("example.com"), &["h2"], &[]), "1.2.3.4", Some("exact")),
        (det("tls", None, &["h2"], &[]), "1.2.3.4", None),
        (det("ssh", None, &[], &[]), "10.9.8.7", Some("internal-ssh")),
        (det("ssh", None, &[], &[]), "192.168.1.7", Some("internal-ssh")),
        (det("ssh", None, &[], &[]), "::ffff:10.0.0.1", Some("internal-ssh")),
        (det("ssh", None, &[], &[]), "192.168.1.8", None),
        (det("http", None, &[], &[("host", "www.example.com")]), "1.2.3.4", Some("site")),
        (det("http", None, &[], &[("host", "example.org")]), "1.2.3.4", Some("any-http")),
        (det("http", None, &[], &[]), "1.2.3.4", Some("any-http")),
        (det("quic", None, &[], &[]), "1.2.3.4", None),
    ];
    for (d, client, want) in cases {
        let got = t.select(d, ip(client)).map(|r| r.name.as_str());
        assert_eq!(got, *want, "{d:?} from {client}");
    }
}

#[test]
fn a_route_without_match_is_reached_only_by_name() {
    let t = table();
    let ip: IpAddr = "1.2.3.4".parse().expect("ip");
    assert_ne!(t.select(&det("web", None, &[], &[]), ip).map(|r| r.name.as_str()), Some("web"));
    assert_eq!(t.by_name("web").map(|r| r.pool.as_str()), Some("web"));
    assert!(t.by_name("nope").is_none());
}

#[test]
fn detection_hands_over_only_the_attributes_routes_read() {
    let wanted = table().wanted().clone();
    assert!(wanted.wants(b"host"));
    assert!(!wanted.wants(b"method") && !wanted.wants(b"version") && !wanted.wants(b"hos"));
    let none = RouteTable::new(&[]).expect("no routes");
    assert!(!none.wanted().wants(b"host"), "no route reads attributes");
}
