//! Test support: start the real `refractium` binary on a YAML config, real
//! backends on `127.0.0.1:0`, and read the proxy's JSON log lines.

#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_refractium")
}

/// Compiled-plugin cache shared by all tests (compiling in a debug build is
/// slow; the cache is keyed by content hash, so sharing is safe).
pub fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-plugin-cache")
}

/// Directory holding the deliberately broken test plugins.
pub fn test_plugins_dir() -> PathBuf {
    PathBuf::from(env!("REFRACTIUM_TEST_PLUGINS_DIR"))
}

/// Is `tool` on the PATH? See [`missing`] for what happens when it is not.
pub fn have(tool: &str) -> bool {
    let found =
        Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().is_ok_and(|o| o.status.success());
    if !found {
        missing(&format!("`{tool}` is not installed"));
    }
    found
}

/// A real client a test needs is missing: on a laptop the test skips,
/// saying why; in CI (`CI=true`), where `.ci/run` installs every client,
/// the test fails.
pub fn missing(what: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{what}, and CI must run every test (.ci/run installs it)");
    }
    eprintln!("SKIP: {what} (.ci/run installs it)");
}

/// A running proxy.
pub struct Proxy {
    child: Child,
    logs: Arc<Mutex<Vec<Value>>>,
    raw: Arc<Mutex<Vec<String>>>,
    pub dir: tempfile::TempDir,
}

impl Proxy {
    /// Write `yaml` to a temp dir (plus `log: {level: debug, format: json}`
    /// and a 1 s plugin call budget unless the YAML sets them, see
    /// [`with_call_budget`]) and start `refractium run -c` on it with the
    /// shared plugin cache; wait until every listener listens.
    pub fn start(yaml: &str) -> Proxy {
        Self::start_in(tempfile::tempdir().expect("tempdir"), yaml)
    }

    pub fn start_in(dir: tempfile::TempDir, yaml: &str) -> Proxy {
        Self::start_with(dir, yaml, |file| {
            let mut run = Command::new(bin());
            run.args(["run", "-c"]).arg(file).stdin(Stdio::null());
            run
        })
    }

    /// Like [`Proxy::start_in`], with the command that runs the proxy
    /// built by `command` from the config file's path (a wrapper, an
    /// environment or a stdin of its own).
    pub fn start_with(dir: tempfile::TempDir, yaml: &str, command: impl FnOnce(&Path) -> Command) -> Proxy {
        let mut yaml = yaml.to_string();
        if !yaml.contains("\nlog:") {
            yaml.push_str("\nlog: { level: \"info,refractium=debug\", format: json }\n");
        }
        let yaml = with_call_budget(&yaml);
        let file = dir.path().join("refractium.yaml");
        std::fs::write(&file, yaml).expect("write config");
        let mut child = command(&file)
            .env("REFRACTIUM_CACHE_DIR", cache_dir())
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start refractium");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let raw = Arc::new(Mutex::new(Vec::new()));
        let (l, r) = (logs.clone(), raw.clone());
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    l.lock().expect("logs").push(v);
                }
                r.lock().expect("raw").push(line);
            }
        });
        let mut proxy = Proxy { child, logs, raw, dir };
        let listeners = yaml_listener_binds(&std::fs::read_to_string(&file).expect("read back"));
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let listening = proxy.logs_where(|v| v["message"] == "listening").len();
            if listening >= listeners {
                break;
            }
            let exited = proxy.child.try_wait().ok().flatten();
            if exited.is_some() {
                // Let the reader thread collect the last lines.
                thread::sleep(Duration::from_millis(200));
            }
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "proxy did not start ({exited:?}); its output:\n{}",
                proxy.output()
            );
            thread::sleep(Duration::from_millis(20));
        }
        proxy
    }

    /// The address listener `name` is bound to (its first address).
    pub fn addr(&self, name: &str) -> SocketAddr {
        let found = self.logs_where(|v| v["message"] == "listening" && v["listener"] == name);
        let addr = found.first().unwrap_or_else(|| panic!("no listener {name}; output:\n{}", self.output()));
        addr["addr"].as_str().expect("addr").parse().expect("socket address")
    }

    /// Log lines matching `pred`.
    pub fn logs_where(&self, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        self.logs.lock().expect("logs").iter().filter(|v| pred(v)).cloned().collect()
    }

    /// Wait (at most `secs`) for a log line matching `pred`.
    pub fn wait_log(&self, secs: u64, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = self.logs_where(&pred).into_iter().next() {
                return v;
            }
            assert!(Instant::now() < deadline, "expected log line not seen; output:\n{}", self.output());
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Access-log lines so far.
    pub fn access(&self) -> Vec<Value> {
        self.logs_where(|v| v["target"] == "refractium::access")
    }

    /// Wait for the `n`th access-log line and return them all.
    pub fn wait_access(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let a = self.access();
            if a.len() >= n {
                return a;
            }
            assert!(Instant::now() < deadline, "only {} access lines; output:\n{}", a.len(), self.output());
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the proxy printed.
    pub fn output(&self) -> String {
        self.raw.lock().expect("raw").join("\n")
    }

    /// Connect to listener `name`, send `data`, and read the reply until the
    /// proxy closes (at most 10 s).
    pub fn exchange(&self, name: &str, data: &[u8]) -> String {
        let mut c = TcpStream::connect(self.addr(name)).expect("connect");
        c.write_all(data).expect("write");
        reply(&mut c)
    }

    /// Like [`Proxy::exchange`], but the client ends its side after `data`
    /// (for a backend that answers only then, such as [`Reply::Echo`]).
    pub fn exchange_eof(&self, name: &str, data: &[u8]) -> String {
        let mut c = TcpStream::connect(self.addr(name)).expect("connect");
        c.write_all(data).expect("write");
        let _ = c.shutdown(std::net::Shutdown::Write);
        reply(&mut c)
    }

    /// GET `path` from the admin listener (the config must have one); the
    /// response body.
    pub fn admin_get(&self, path: &str) -> String {
        let line = self.wait_log(10, |v| v["message"] == "admin listening");
        let addr = line["addr"].as_str().expect("admin addr");
        let mut c = TcpStream::connect(addr).expect("connect admin");
        write!(c, "GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").expect("write");
        let mut out = String::new();
        c.read_to_string(&mut out).expect("read");
        out.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default()
    }

    /// The value of the metric `name` on the admin listener: one series
    /// when `name` has its labels (`refractium_tcp_connections_open{listener="edge"}`),
    /// the sum of the family's series when it has none; 0 if absent.
    pub fn metric(&self, name: &str) -> u64 {
        let text = self.admin_get("/metrics");
        let value = |rest: &str| rest.trim().parse::<f64>().ok();
        let sum: f64 = text
            .lines()
            .filter_map(|l| match l.strip_prefix(name)? {
                rest if rest.starts_with(' ') => value(rest),
                rest if !name.contains('{') && rest.starts_with('{') => value(rest.split_once("} ")?.1),
                _ => None,
            })
            .sum();
        sum as u64
    }

    /// Wait (at most `secs`) until the metric `name` satisfies `pred`; its
    /// value then.
    pub fn wait_metric(&self, secs: u64, name: &str, pred: impl Fn(u64) -> bool) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let value = self.metric(name);
            if pred(value) {
                return value;
            }
            assert!(Instant::now() < deadline, "{name} is still {value}; output:\n{}", self.output());
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait (at most 5 s) until connecting to `addr` is refused. After a
    /// stop the workers close their listening sockets on their own threads,
    /// which may lag behind the log line that says the proxy stopped
    /// accepting.
    pub fn wait_refused(&self, addr: SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(addr).is_ok() {
            assert!(Instant::now() < deadline, "{addr} still accepts connections; output:\n{}", self.output());
            thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send the signal `name` (`HUP`, `INT`, `TERM`) to the proxy.
    pub fn signal(&self, name: &str) {
        let sent = Command::new("kill").arg(format!("-{name}")).arg(self.child.id().to_string()).status();
        assert!(sent.as_ref().is_ok_and(|s| s.success()), "kill -{name} failed: {sent:?}");
    }

    /// Wait (at most `secs`) for the proxy to exit; its status.
    pub fn wait_exit(&mut self, secs: u64) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Send SIGTERM and wait (at most `secs`) for the exit status.
    pub fn terminate(&mut self, secs: u64) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        self.wait_exit(secs)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `yaml` with a plugin call budget of 1 s unless it sets
/// `plugins.limits.call_timeout` itself.
///
/// Under the default budget of 10 ms, a detector call whose thread waits
/// 100 ms for the CPU (a loaded machine running the suite on two cores) is
/// interrupted without blame and counts as `no-match`: the connection goes to
/// the default route and the test fails for the machine's sake. The tests
/// whose subject is the budget (the sandbox's, the overload test) set their
/// own.
pub fn with_call_budget(yaml: &str) -> String {
    const BUDGET: &str = "call_timeout: 1s";
    let parsed: serde_yaml::Value = serde_yaml::from_str(yaml).expect("test YAML parses");
    let plugins = &parsed["plugins"];
    if !plugins["limits"]["call_timeout"].is_null() {
        return yaml.to_string();
    }
    let mut out = String::with_capacity(yaml.len() + 40);
    let mut lines = yaml.split_inclusive('\n').peekable();
    let mut done = false;
    while let Some(line) = lines.next() {
        if done {
            out.push_str(line);
            continue;
        }
        let body = line.trim_end();
        if let Some(flow) = body.strip_prefix("plugins: {") {
            // `plugins: { dir: d }` or `plugins: { limits: { memory: 4MiB } }`
            match flow.split_once("limits: {") {
                Some((before, after)) => out.push_str(&format!("plugins: {{{before}limits: {{ {BUDGET},{after}\n")),
                None => out.push_str(&format!("plugins: {{ limits: {{ {BUDGET} }},{flow}\n")),
            }
            done = true;
        } else if body == "plugins:" {
            // A block: its keys are indented like the next line.
            out.push_str(line);
            let next = lines.peek().copied().unwrap_or("  ");
            let indent = &next[..next.len() - next.trim_start().len()];
            if plugins["limits"].is_null() {
                out.push_str(&format!("{indent}limits: {{ {BUDGET} }}\n"));
            } else {
                // `limits: { ... }` in flow style, on its own line.
                while let Some(line) = lines.next_if(|l| !l.trim_start().starts_with("limits: {")) {
                    out.push_str(line);
                }
                if let Some(line) = lines.next() {
                    out.push_str(&line.replacen("limits: {", &format!("limits: {{ {BUDGET},"), 1));
                }
            }
            done = true;
        } else {
            out.push_str(line);
        }
    }
    if !done {
        out.push_str(&format!("\nplugins: {{ limits: {{ {BUDGET} }} }}\n"));
    }
    let check: serde_yaml::Value = serde_yaml::from_str(&out).expect("the YAML with a call budget parses");
    assert_eq!(
        check["plugins"]["limits"]["call_timeout"].as_str(),
        Some("1s"),
        "could not add a call budget to this YAML; set plugins.limits.call_timeout in the test:\n{yaml}"
    );
    out
}

/// Count bind addresses in the config (one "listening" line each).
fn yaml_listener_binds(yaml: &str) -> usize {
    let value: serde_yaml::Value = serde_yaml::from_str(yaml).expect("test YAML parses");
    value["listeners"]
        .as_sequence()
        .map(|ls| {
            ls.iter()
                .map(|l| match &l["bind"] {
                    serde_yaml::Value::Sequence(s) => s.len(),
                    _ => 1,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// How a test backend answers.
#[derive(Clone)]
pub enum Reply {
    /// Read the request head, answer `200 OK` with this body, close.
    Http(&'static str),
    /// Read what arrives within 300 ms (or to EOF), answer this line, close.
    Record(&'static str),
    /// Write this banner first, then read and record, then close.
    Banner(&'static str),
    /// Echo everything until EOF, then close.
    Echo,
    /// Write this line at once, then hold the connection until the client
    /// ends its side (at most 60 s), then close. Records what it read.
    Hello(&'static str),
}

/// A backend server on 127.0.0.1:0 that records the first bytes of every
/// connection it accepts.
pub struct Backend {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Backend {
    pub fn start(reply: Reply) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (s, reply) = (s.clone(), reply.clone());
                thread::spawn(move || serve(conn, reply, s));
            }
        });
        Backend { addr, seen }
    }

    /// First bytes of each connection so far.
    pub fn seen(&self) -> Vec<Vec<u8>> {
        self.seen.lock().expect("seen").clone()
    }

    /// Wait (at most 10 s) until `n` connections were recorded.
    pub fn wait_seen(&self, n: usize) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let seen = self.seen();
            if seen.len() >= n {
                return seen;
            }
            assert!(Instant::now() < deadline, "backend {} saw {} connections, expected {n}", self.addr, seen.len());
            thread::sleep(Duration::from_millis(10));
        }
    }
}

fn serve(mut conn: TcpStream, reply: Reply, seen: Arc<Mutex<Vec<Vec<u8>>>>) {
    let mut got = Vec::new();
    match reply {
        Reply::Http(body) => {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 4096];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            seen.lock().expect("seen").push(got);
            let response =
                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
            let _ = conn.write_all(response.as_bytes());
        }
        Reply::Record(line) | Reply::Banner(line) => {
            if let Reply::Banner(_) = reply {
                let _ = conn.write_all(line.as_bytes());
            }
            let _ = conn.set_read_timeout(Some(Duration::from_millis(300)));
            let mut buf = [0u8; 65536];
            loop {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            seen.lock().expect("seen").push(got);
            if let Reply::Record(_) = reply {
                let _ = conn.write_all(format!("{line}\n").as_bytes());
            }
        }
        Reply::Hello(line) => {
            let _ = conn.write_all(format!("{line}\n").as_bytes());
            let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
            let mut buf = [0u8; 4096];
            loop {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            seen.lock().expect("seen").push(got);
        }
        Reply::Echo => {
            let mut buf = [0u8; 65536];
            let mut first = true;
            loop {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if first {
                            seen.lock().expect("seen").push(buf[..n].to_vec());
                            first = false;
                        }
                        if conn.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
        }
    }
    let _ = conn.shutdown(Shutdown::Write);
}

/// Does this process run as root (uid 0)?
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")))
}

/// Run `ip ARGS…` (network namespaces, links, addresses); panics with its
/// output when it fails.
pub fn ip(args: &[&str]) {
    let (ok, out, err) = run_cmd(Command::new("ip").args(args), 20);
    assert!(ok, "ip {}: {out}{err}", args.join(" "));
}

/// Run a command with a time limit; returns (status success, stdout, stderr).
pub fn run_cmd(cmd: &mut Command, secs: u64) -> (bool, String, String) {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().expect("output");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// A TCP connection to `to` from the address `source` (any of 127.0.0.0/8
/// on Linux: the whole block is loopback), from a port the kernel picks.
pub fn connect_from(source: std::net::IpAddr, to: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::for_address(to), socket2::Type::STREAM, None).expect("socket");
    socket.bind(&SocketAddr::new(source, 0).into()).unwrap_or_else(|e| panic!("bind {source}: {e}"));
    socket.connect_timeout(&to.into(), Duration::from_secs(10)).unwrap_or_else(|e| panic!("connect to {to}: {e}"));
    socket.into()
}

/// A port on 127.0.0.1 that was free a moment ago, for a program that
/// must be told its port (it is bound and released at once: another
/// process could take it in between, which on loopback is rare).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// Does `haystack` contain `needle`?
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Everything `c` receives until the other side closes (at most 10 s).
pub fn reply(c: &mut TcpStream) -> String {
    c.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut reply = String::new();
    let _ = c.read_to_string(&mut reply);
    reply
}

/// A config whose listener `edge` (detection up to 2 s) routes `protocol`
/// to backend `b` (with `route_extra`, e.g. its hooks) and anything else to
/// `a`, with plugin files in `plugins.d` and `extra` at the top level.
pub fn protocol_config(protocol: &str, route_extra: &str, a: &Backend, b: &Backend, extra: &str) -> String {
    format!(
        r#"
listeners:
  - name: edge
    bind: 127.0.0.1:0
    detect: {{ timeout: 2s }}
    default: fallback
routes:
  - name: {protocol}
    match: {{ protocol: {protocol} }}{route_extra}
    to: b
  - name: fallback
    to: a
backends:
  a: {{ servers: [{a}] }}
  b: {{ servers: [{b}] }}
plugins: {{ dir: plugins.d, limits: {{ call_timeout: 1s }} }}
{extra}
"#,
        a = a.addr,
        b = b.addr
    )
}

#[test]
fn a_call_budget_is_added_where_the_yaml_has_none() {
    let budget = |yaml: &str| {
        let v: serde_yaml::Value = serde_yaml::from_str(&with_call_budget(yaml)).expect("parses");
        (v["plugins"]["limits"]["call_timeout"].as_str().map(String::from), v["plugins"].clone())
    };
    let one = Some("1s".to_string());
    assert_eq!(budget("listeners: []\n").0, one);
    let (b, p) = budget("plugins: { dir: plugins.d }\n");
    assert_eq!((b, &p["dir"]), (one.clone(), &"plugins.d".into()));
    let (b, p) = budget("plugins:\n  dir: plugins.d\n  config:\n    deny: { rules: [] }\nlimits: {}\n");
    assert_eq!((b, &p["dir"]), (one.clone(), &"plugins.d".into()));
    let (b, p) = budget("plugins:\n    dir: d\n    limits: { memory: 4MiB }\n");
    assert_eq!((b, &p["limits"]["memory"]), (one.clone(), &"4MiB".into()));
    assert_eq!(budget("plugins: { dir: d, limits: { memory: 4MiB } }\n").0, one);
    // A budget the test chose stays.
    assert_eq!(budget("plugins:\n  limits: { call_timeout: 10ms }\n").0.as_deref(), Some("10ms"));
}
