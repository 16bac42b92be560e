//! Tests of the config as a user meets it: defaults, the shipped files,
//! value syntax, and how problems are printed. Rule-by-rule tests are in
//! `tests_rules.rs`.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

const MINIMAL: &str = "\
listeners:
  - name: edge
    bind: 127.0.0.1:8443
routes:
  - name: web
    to: web
backends:
  web:
    servers: [127.0.0.1:8080]
";

fn parse_ok(text: &str) -> Config {
    match parse(text, Path::new("test.yaml")) {
        Ok(config) => config,
        Err(e) => panic!("unexpected problems:\n{e}"),
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn every_default_when_omitted() {
    let c = parse_ok(MINIMAL);
    let l = &c.listeners[0];
    assert_eq!(l.bind, [addr("127.0.0.1:8443")]);
    assert_eq!(l.transport, Transport::Tcp);
    assert_eq!(l.detectors, None);
    assert_eq!(l.detect.max_bytes, 4096);
    assert_eq!(l.detect.timeout, Duration::from_secs(3));
    assert_eq!((l.on_timeout.as_deref(), l.default.as_deref()), (None, None));
    assert_eq!(l.accept_proxy, None);
    let r = c.route("web").unwrap();
    assert_eq!((r.r#match.as_ref(), r.to.as_str(), r.hooks.len()), (None, "web", 0));
    let b = &c.backends["web"];
    assert_eq!(b.balance, Balance::RoundRobin);
    assert_eq!(b.health, None);
    assert_eq!(b.proxy_protocol, ProxyProtocol::None);
    assert_eq!(b.connect_timeout, Duration::from_secs(3));
    assert_eq!(b.retries, 1);
    assert_eq!(b.source, SourceAddr::Host);
    assert_eq!((c.plugins.dir.as_ref(), c.plugins.cache_dir.as_ref()), (None, None));
    assert!(c.plugins.config.is_empty());
    assert_eq!(c.plugins.limits.memory, 16 << 20);
    assert_eq!(c.plugins.limits.call_timeout, Duration::from_millis(10));
    assert_eq!(c.limits.max_connections, 10_000);
    assert_eq!(c.limits.max_connections_per_ip, 100);
    assert_eq!(c.limits.idle_timeout, Duration::from_secs(600));
    assert_eq!(c.limits.drain_timeout, Duration::from_secs(30));
    assert_eq!(c.limits.ipv6_prefix, 64);
    assert!(c.resolver.servers.is_empty(), "the system's resolver");
    assert_eq!(c.resolver.resolve_interval, Duration::from_secs(30));
    assert_eq!(c.udp.session_timeout, Duration::from_secs(60));
    assert_eq!(c.udp.max_sessions, 10_000);
    assert!(c.admin.is_none());
    assert!(c.reload.watch);
    assert_eq!((c.log.level.as_str(), c.log.format), ("info", LogFormat::Text));
    assert_eq!(c.file, Path::new("test.yaml"));
}

#[test]
fn default_impls_agree_with_a_parsed_empty_file() {
    let parsed = parse_ok(MINIMAL);
    let d = Config::default();
    assert!(d.listeners.is_empty() && d.routes.is_empty() && d.backends.is_empty());
    assert_eq!(d.plugins, parsed.plugins);
    assert_eq!(d.limits, parsed.limits);
    assert_eq!(d.udp, parsed.udp);
    assert_eq!(d.reload, parsed.reload);
    assert_eq!(d.log, parsed.log);
    assert_eq!(parsed.listeners[0].detect, Detect::default());
    assert_eq!(Transport::default(), Transport::Tcp);
    assert_eq!(
        Health::default(),
        Health { interval: Duration::from_secs(5), timeout: Duration::from_secs(1), rise: 2, fall: 3 }
    );
    let health = parse_ok(&format!("{MINIMAL}    health: {{}}\n"));
    assert_eq!(health.backends["web"].health, Some(Health::default()));
}

#[test]
fn every_key_of_the_design_example_parses() {
    let text = "\
listeners:
  - name: edge
    bind: [127.0.0.1:8443, '[::1]:8443']
    transport: udp
    detectors: [tls, http, ssh]
    detect: { max_bytes: 64KiB, timeout: 500ms }
    on_timeout: web
    default: web
routes:
  - name: api
    match: { protocol: tls, sni: \"*.example.com\", alpn: [h2], client: 10.1.2.3, attributes: { host: x, port: 80 } }
    to: web
    hooks: [log]
  - name: web
    to: web
backends:
  web:
    servers: [127.0.0.1:8080, 127.0.0.1:8081]
    balance: hash_client_ip
    health: { interval: 2s, timeout: 300ms, rise: 1, fall: 5 }
    proxy_protocol: v2
    connect_timeout: 1s
    retries: 0
plugins:
  dir: /opt/plugins
  cache_dir: cache
  config: { pattern: { rules: [{ prefix: abc }] } }
  limits: { memory: 2MiB, call_timeout: 1s }
limits: { max_connections: 5, max_connections_per_ip: 1, idle_timeout: 1h, drain_timeout: 0 }
udp: { session_timeout: 10s, max_sessions: 7 }
admin: { bind: 127.0.0.1:9901 }
reload: { watch: false }
log: { level: 'info,refractium=debug', format: json }
";
    let c = parse(text, Path::new("/etc/refractium/main.yaml")).unwrap();
    let l = &c.listeners[0];
    assert_eq!(l.bind, [addr("127.0.0.1:8443"), addr("[::1]:8443")]);
    assert_eq!(l.transport, Transport::Udp);
    assert_eq!(l.detectors.as_deref(), Some(&["tls".to_owned(), "http".into(), "ssh".into()][..]));
    assert_eq!(l.detect, Detect { max_bytes: 65536, timeout: Duration::from_millis(500) });
    let m = c.routes[0].r#match.as_ref().unwrap();
    assert_eq!(
        (m.protocol.as_deref(), m.sni.as_deref(), &m.alpn[..]),
        (Some("tls"), Some("*.example.com"), &["h2".to_owned()][..])
    );
    assert_eq!(m.client, ["10.1.2.3/32".parse::<ipnet::IpNet>().unwrap()]);
    assert_eq!(m.attributes.get("port").map(String::as_str), Some("80"));
    assert_eq!(c.routes[0].hooks, ["log"]);
    let b = &c.backends["web"];
    assert_eq!((b.balance, b.proxy_protocol, b.retries), (Balance::HashClientIp, ProxyProtocol::V2, 0));
    assert_eq!(b.health.unwrap().timeout, Duration::from_millis(300));
    assert_eq!(c.plugins.dir.as_deref(), Some(Path::new("/opt/plugins")));
    assert_eq!(c.plugins.cache_dir.as_deref(), Some(Path::new("/etc/refractium/cache")));
    assert_eq!(c.plugins.config["pattern"], serde_json::json!({ "rules": [{ "prefix": "abc" }] }));
    assert_eq!(c.plugins.limits, PluginLimits { memory: 2 << 20, call_timeout: Duration::from_secs(1) });
    assert_eq!(c.limits.drain_timeout, Duration::ZERO);
    assert_eq!(c.limits.idle_timeout, Duration::from_secs(3600));
    assert_eq!(c.udp, Udp { session_timeout: Duration::from_secs(10), max_sessions: 7, max_sessions_per_ip: 100 });
    assert_eq!(c.admin.unwrap().bind, addr("127.0.0.1:9901"));
    assert!(!c.reload.watch);
    assert_eq!(c.log.format, LogFormat::Json);
}

#[test]
fn client_takes_one_network_or_a_list() {
    let with = |client: &str| {
        let text = MINIMAL.replace("    to: web\n", &format!("    match: {{ client: {client} }}\n    to: web\n"));
        parse_ok(&text).routes[0].r#match.clone().unwrap().client
    };
    let net = |s: &str| s.parse::<ipnet::IpNet>().unwrap();
    assert_eq!(with("10.0.0.0/8"), [net("10.0.0.0/8")]);
    assert_eq!(with("192.168.1.7"), [net("192.168.1.7/32")]);
    assert_eq!(with("'::1'"), [net("::1/128")]);
    assert_eq!(
        with("[10.0.0.0/8, 192.168.0.0/16, '2001:db8::/32']"),
        [net("10.0.0.0/8"), net("192.168.0.0/16"), net("2001:db8::/32")]
    );
    assert_eq!(with("10.1.2.3/8"), [net("10.0.0.0/8")], "host bits are cleared");
    assert_eq!(with("[]"), []);
}

#[test]
fn bind_takes_one_address_or_a_list() {
    let one = parse_ok(MINIMAL);
    assert_eq!(one.listeners[0].bind, [addr("127.0.0.1:8443")]);
    let two = parse_ok(&MINIMAL.replace("bind: 127.0.0.1:8443", "bind:\n      - 127.0.0.1:1\n      - 127.0.0.1:2"));
    assert_eq!(two.listeners[0].bind, [addr("127.0.0.1:1"), addr("127.0.0.1:2")]);
}

#[test]
fn sizes_and_durations_in_the_file() {
    let text = format!(
        "{MINIMAL}limits: {{ idle_timeout: 1h 30m }}\nplugins: {{ limits: {{ memory: 65536KiB, call_timeout: 250ms }} }}\n"
    );
    let c = parse_ok(&text);
    assert_eq!(c.limits.idle_timeout, Duration::from_secs(5400));
    assert_eq!(c.plugins.limits.memory, 64 << 20);
    assert_eq!(c.plugins.limits.call_timeout, Duration::from_millis(250));
}

#[test]
fn problem_display_format() {
    let err = parse("routes: []\nlisteners: []\n", Path::new("config/x.yaml")).unwrap_err();
    assert_eq!(err.to_string(), "config/x.yaml:2:1: listeners: at least one listener is needed");
    let p = Problem::new(Path::new("a.yaml"), "", "cannot read");
    assert_eq!(p.to_string(), "a.yaml: cannot read");
    let d = Config::default().problem_at("listeners[0]", "x");
    assert_eq!(d.to_string(), "<built-in config>: listeners[0]: x");
}

#[test]
fn problem_at_locates_later_problems() {
    let text = MINIMAL.replace("bind: 127.0.0.1:8443", "bind: 127.0.0.1:8443\n    detectors: [tls, http, foo]");
    let c = parse_ok(&text);
    let p = c.problem_at("listeners[0].detectors[2]", "no detector plugin named `foo`");
    assert_eq!(p.to_string(), "test.yaml:4:28: listeners[0].detectors[2]: no detector plugin named `foo`");
    let p = c.problem_at("routes[0].hooks[0]", "no hook");
    assert_eq!((p.line, p.key.as_str()), (Some(6), "routes[0].hooks[0]"));
    let path = [Segment::Key("backends".into()), Segment::Key("web".into())];
    assert_eq!(c.position(&path), Some(Pos { line: 9, column: 3 }));
}

#[test]
fn load_names_an_unreadable_file() {
    let err = load(Path::new("/nonexistent/refractium.yaml")).unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("/nonexistent/refractium.yaml: cannot read the config file:"), "{text}");
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.ends_with("kubernetes") {
            // Manifests; the config they carry is checked by the e2e test `kubernetes`.
            continue;
        }
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

#[test]
fn every_shipped_config_file_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let mut files = Vec::new();
    yaml_files(&dir, &mut files);
    assert!(files.len() >= 3, "expected the default config and examples in {}", dir.display());
    for file in &files {
        if let Err(e) = load(file) {
            panic!("{} does not load:\n{e}", file.display());
        }
    }
}

#[test]
fn the_default_config_is_the_one_the_readme_runs() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/refractium.yaml");
    let c = load(&file).unwrap();
    let edge = c.listener("edge").unwrap();
    assert_eq!(edge.bind, [addr("127.0.0.1:8443")]);
    assert!(edge.detectors.is_none(), "the default config runs every TCP detector in the default order");
    let on_timeout = c.route(edge.on_timeout.as_deref().unwrap()).unwrap();
    assert_eq!(c.backends[&on_timeout.to].servers, [ServerSpec::Addr { addr: addr("127.0.0.1:2222"), weight: 1 }]);
    assert_eq!(edge.default.as_deref(), Some("web"));
    let dir = c.plugins.dir.as_ref().unwrap();
    assert!(dir.ends_with("config/plugins.d") && dir.is_dir(), "{}", dir.display());
    // The dashboard and /metrics the README points at, on loopback.
    let admin = c.admin.as_ref().unwrap();
    assert_eq!((admin.bind, admin.token.as_deref()), (addr("127.0.0.1:9901"), None));
}
