//! Logs: the access log's JSON schema, and text lines a client cannot
//! forge (strings it controls are quoted and escaped).

use crate::support::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The access-log fields of a TCP connection and their JSON types (the
/// table in docs/operations.md, "Logs").
const TCP_FIELDS: [(&str, &str); 15] = [
    ("timestamp", "string"),
    ("level", "string"),
    ("target", "string"),
    ("client", "string"),
    ("listener", "string"),
    ("protocol", "string"),
    ("sni", "string"),
    ("alpn", "string"),
    ("route", "string"),
    ("backend", "string"),
    ("bytes_up", "number"),
    ("bytes_down", "number"),
    ("duration_ms", "number"),
    ("plugin_errors", "string"),
    ("close", "string"),
];

/// A UDP session's line has these besides.
const UDP_EXTRA: [(&str, &str); 3] =
    [("transport", "string"), ("datagrams_up", "number"), ("datagrams_down", "number")];

fn type_of(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "string",
        Value::Number(_) => "number",
        Value::Bool(_) => "bool",
        Value::Null => "null",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn schema(line: &Value) -> Vec<(String, &'static str)> {
    let mut fields: Vec<_> =
        line.as_object().expect("an object").iter().map(|(k, v)| (k.clone(), type_of(v))).collect();
    fields.sort();
    fields
}

fn sorted(fields: &[(&str, &'static str)]) -> Vec<(String, &'static str)> {
    let mut fields: Vec<_> = fields.iter().map(|(k, t)| (k.to_string(), *t)).collect();
    fields.sort();
    fields
}

#[test]
fn the_json_access_log_has_the_documented_schema() {
    use crate::udp_backend::*;
    let backend = Backend::start(Reply::Http("ok"));
    let udp = UdpBackend::start(echo);
    let proxy = Proxy::start(&format!(
        r#"
listeners:
  - name: edge
    bind: 127.0.0.1:0
    detectors: [http]
  - name: dns
    bind: 127.0.0.1:0
    transport: udp
    detectors: [dns]
routes:
  - name: web
    match: {{ protocol: http }}
    to: web
  - name: dns
    match: {{ protocol: dns }}
    to: dns
backends:
  web: {{ servers: [{}] }}
  dns: {{ servers: [{}] }}
udp: {{ session_timeout: 200ms }}
"#,
        backend.addr, udp.addr
    ));
    assert!(proxy.exchange("edge", b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ends_with("ok"));
    let c = client();
    c.send_to(&dns_query(7), proxy.addr("dns")).expect("send");
    let mut buf = [0u8; 512];
    c.recv_from(&mut buf).expect("reply");
    let lines = proxy.wait_access(2);
    let tcp = lines.iter().find(|l| l["listener"] == "edge").expect("the TCP line");
    let udp_line = lines.iter().find(|l| l["listener"] == "dns").expect("the UDP line");
    assert_eq!(schema(tcp), sorted(&TCP_FIELDS), "{tcp}");
    let all: Vec<_> = TCP_FIELDS.iter().chain(UDP_EXTRA.iter()).copied().collect();
    assert_eq!(schema(udp_line), sorted(&all), "{udp_line}");
    assert_eq!((&tcp["target"], &tcp["level"]), (&"refractium::access".into(), &"INFO".into()));
}

/// refractium with text logs; its stderr lines as they come.
struct TextProxy {
    child: std::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl TextProxy {
    fn start(yaml: &str) -> (TextProxy, SocketAddr) {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("refractium.yaml");
        std::fs::write(&file, yaml).expect("config");
        let mut child = Command::new(bin())
            .args(["run", "-c"])
            .arg(&file)
            .env("REFRACTIUM_CACHE_DIR", cache_dir())
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start refractium");
        let stderr = child.stderr.take().expect("stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("lines").push(line);
            }
        });
        let proxy = TextProxy { child, lines, _dir: dir };
        let listening = proxy.wait(|l| l.contains(" listening "));
        let addr = listening.split("addr=").nth(1).and_then(|a| a.split_whitespace().next()).expect("addr=");
        (proxy, addr.parse().expect("address"))
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lines").clone()
    }

    fn wait(&self, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(line) = self.lines().into_iter().find(|l| pred(l)) {
                return line;
            }
            assert!(Instant::now() < deadline, "no such line in:\n{}", self.lines().join("\n"));
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TextProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a forged line would start with.
const FORGED: &str = "2026-12-07T00:00:00.000000Z  INFO refractium::access: client=6.6.6.6:1 route=\"admin\"";

#[test]
fn a_client_cannot_forge_text_log_lines() {
    if !have("openssl") {
        return;
    }
    let backend = Backend::start(Reply::Record("x"));
    let (proxy, addr) = TextProxy::start(&format!(
        "listeners:\n  - name: edge\n    bind: 127.0.0.1:0\n    detectors: [tls]\nroutes:\n  - name: tls\n    match: {{ protocol: tls }}\n    to: tls\nbackends:\n  tls: {{ servers: [{}] }}\nlog: {{ level: info, format: text }}\nplugins: {{ limits: {{ call_timeout: 1s }} }}\n",
        backend.addr
    ));
    // A real ClientHello whose ALPN protocol name carries a line break, what
    // would pass for a log line of its own, and a terminal escape sequence.
    let alpn = format!("h2\n{FORGED}\u{1b}[2J");
    let _ = run_cmd(
        Command::new("openssl")
            .args(["s_client", "-connect", &addr.to_string(), "-servername", "example.com", "-alpn"])
            .arg(&alpn),
        20,
    );
    let access = proxy.wait(|l| l.contains("refractium::access"));
    let lines = proxy.lines();
    assert!(
        !lines.iter().any(|l| l.starts_with("2026-12-07T00:00:00")),
        "a forged line got through:\n{}",
        lines.join("\n")
    );
    assert!(!lines.iter().any(|l| l.contains('\u{1b}')), "an escape sequence got through");
    assert!(access.contains(r#"alpn="h2\n2026-12-07T00:00:00.000000Z  INFO"#), "{access}");
}

#[test]
fn a_plugin_cannot_forge_text_log_lines_either() {
    // The test hook logs what it is configured to log through host.log.
    let backend = Backend::start(Reply::Echo);
    let plugins = tempfile::tempdir().expect("tempdir");
    std::fs::copy(test_plugins_dir().join("refractium_test_testhook.wasm"), plugins.path().join("testhook.wasm"))
        .expect("copy the hook");
    let log = serde_json::to_string(&format!("seen\n{FORGED}")).expect("a JSON string, which YAML reads");
    let (proxy, addr) = TextProxy::start(&format!(
        "listeners:\n  - name: edge\n    bind: 127.0.0.1:0\n    detectors: []\n    default: web\nroutes:\n  - name: web\n    to: web\n    hooks: [testhook]\nbackends:\n  web: {{ servers: [{}] }}\nplugins: {{ dir: {}, config: {{ testhook: {{ log: {log} }} }}, limits: {{ call_timeout: 1s }} }}\nlog: {{ level: info, format: text }}\n",
        backend.addr,
        plugins.path().display()
    ));
    let mut c = TcpStream::connect(addr).expect("connect");
    c.write_all(b"ping").expect("write");
    drop(c);
    let logged = proxy.wait(|l| l.contains("seen"));
    assert!(logged.contains(r"seen\n2026-12-07T00:00:00"), "{logged}");
    assert!(!proxy.lines().iter().any(|l| l.starts_with("2026-12-07T00:00:00")), "{}", proxy.lines().join("\n"));
}
