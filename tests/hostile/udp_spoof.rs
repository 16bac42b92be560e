//! A UDP flood from spoofed source addresses, each one a new client: the
//! sessions stay within `udp.max_sessions`, the rest are refused, and a
//! session that was there before the flood keeps flowing through it.
//!
//! In network namespaces the test makes: the client's (10.78.1.2) and the
//! proxy's (10.78.1.1), joined by a veth pair. The flood comes from a raw
//! socket in the client's namespace with sources all over 10.79.0.0/16,
//! which the proxy's namespace routes back to the client's, where replies
//! to those addresses are dropped. The peers in the namespaces are small
//! Python programs; the admin listener is read with curl from inside.

use crate::support::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

/// `udp.max_sessions` in the test's config.
const MAX_SESSIONS: u64 = 16;
/// Spoofed datagrams sent, each from an address picked at random in
/// 10.79.0.0/16.
const FLOOD: u64 = 30_000;

/// An echo server on 127.0.0.1:9000 in the proxy's namespace.
const ECHO: &str = r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 9000))
while True:
    d, peer = s.recvfrom(65536)
    s.sendto(d, peer)
"#;

/// The client's namespace. A legitimate client (10.78.1.2) sends a numbered
/// datagram every 20 ms and notes each echo; once its session answers it
/// says `ready`, and on `flood` from stdin a raw socket sends the spoofed
/// datagrams (paced, bounded in count and time). A second after the flood
/// it prints, as JSON, how the legitimate client fared during and after it.
const CLIENT: &str = r#"
import json, random, socket, struct, sys, threading, time
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
legit = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
legit.bind(("10.78.1.2", 0))
legit.connect((host, port))
legit.settimeout(0.1)
sent, echoed, lock, done = {}, {}, threading.Lock(), threading.Event()
def receive():
    while not done.is_set():
        try:
            d = legit.recv(2048)
        except OSError:
            continue
        if d.startswith(b"legit "):
            with lock:
                echoed.setdefault(int(d[6:]), time.monotonic())
def send():
    for seq in range(5000):
        if done.is_set():
            break
        with lock:
            sent[seq] = time.monotonic()
        try:
            legit.send(b"legit %d" % seq)
        except OSError:
            pass
        time.sleep(0.02)
threading.Thread(target=receive, daemon=True).start()
threading.Thread(target=send, daemon=True).start()
deadline = time.monotonic() + 30
while not echoed and time.monotonic() < deadline:
    time.sleep(0.01)
if not echoed:
    print("no echo", flush=True)
    sys.exit(1)
print("ready", flush=True)
sys.stdin.readline()
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
dst, payload, rng = socket.inet_aton(host), b"spoofed", random.Random(28)
start = time.monotonic()
flooded = 0
while flooded < count and time.monotonic() < start + 30:
    for _ in range(100):
        src = bytes([10, 79, rng.randrange(256), rng.randrange(1, 255)])
        udp = struct.pack("!HHHH", rng.randrange(1024, 65536), port, 8 + len(payload), 0) + payload
        # The kernel fills in the total length, the id and the checksum.
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 0, 0, 0, 64, socket.IPPROTO_UDP, 0, src, dst)
        raw.sendto(ip + udp, (host, 0))
        flooded += 1
    time.sleep(0.005)
end = time.monotonic()
time.sleep(1)
done.set()
with lock:
    during = [s for s, t in sent.items() if start <= t <= end]
    after = [s for s, t in sent.items() if end < t <= end + 0.5]
    print(json.dumps({
        "flooded": flooded,
        "flood_ms": int((end - start) * 1000),
        "sent_during": len(during),
        "echoed_during": sum(1 for s in during if s in echoed),
        "sent_after": len(after),
        "echoed_after": sum(1 for s in after if s in echoed),
        "echoed": len(echoed),
    }), flush=True)
"#;

/// The two namespaces and the programs in them, removed when dropped.
struct Net {
    client_ns: String,
    proxy_ns: String,
    children: Vec<Child>,
}

impl Net {
    fn new() -> Net {
        let id = std::process::id();
        let (c, p) = (format!("rfx{id}uc"), format!("rfx{id}up"));
        let net = Net { client_ns: c.clone(), proxy_ns: p.clone(), children: Vec::new() };
        for ns in [&c, &p] {
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        ip(&["-n", &c, "link", "add", "c0", "type", "veth", "peer", "name", "p0", "netns", &p]);
        ip(&["-n", &c, "addr", "add", "10.78.1.2/24", "dev", "c0"]);
        ip(&["-n", &c, "link", "set", "c0", "up"]);
        ip(&["-n", &p, "addr", "add", "10.78.1.1/24", "dev", "p0"]);
        ip(&["-n", &p, "link", "set", "p0", "up"]);
        // The spoofed sources are reachable through the client's side: the
        // reverse-path filter lets their datagrams in, and the replies to
        // them leave the proxy's namespace (the client's drops them).
        ip(&["-n", &p, "route", "add", "10.79.0.0/16", "via", "10.78.1.2"]);
        net
    }

    /// Start `python3 -c program args…` in namespace `ns`.
    fn python(&mut self, ns: &str, program: &str, args: &[&str]) -> &mut Child {
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "python3", "-c", program])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start python3 in a namespace");
        self.children.push(child);
        self.children.last_mut().expect("the child just started")
    }

    /// `/metrics` of the admin listener on 127.0.0.1:9901 in the proxy's
    /// namespace.
    fn metrics(&self) -> String {
        let url = "http://127.0.0.1:9901/metrics";
        let (ok, out, err) =
            run_cmd(Command::new("ip").args(["netns", "exec", &self.proxy_ns, "curl", "-s", "-m", "5", url]), 15);
        assert!(ok, "curl {url} in the proxy's namespace: {out}{err}");
        out
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in [&self.client_ns, &self.proxy_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// The value of one series (`name` with its labels) in a `/metrics` text; 0
/// if absent.
fn series(text: &str, name: &str) -> u64 {
    let value = text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok());
    value.unwrap_or(0.0) as u64
}

const OPEN: &str = "refractium_udp_sessions_open{listener=\"edge\"}";
const REFUSED: &str = "refractium_udp_sessions_refused_total{listener=\"edge\"}";

fn can_make_namespaces() -> bool {
    if !is_root() {
        missing("root (CAP_NET_ADMIN, CAP_SYS_ADMIN and CAP_NET_RAW), to make network namespaces and spoof sources");
        return false;
    }
    have("ip") && have("python3") && have("curl")
}

/// The client's stdout, line by line, read on a thread of its own so that
/// every wait for a line is bounded.
fn lines(stdout: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[test]
fn a_spoofed_flood_is_held_to_max_sessions_and_an_existing_session_keeps_flowing() {
    if !can_make_namespaces() {
        return;
    }
    let mut net = Net::new();
    let (client_ns, proxy_ns) = (net.client_ns.clone(), net.proxy_ns.clone());
    net.python(&proxy_ns, ECHO, &[]);
    let yaml = format!(
        r#"
listeners:
  - name: edge
    bind: 10.78.1.1:5300
    transport: udp
    detectors: [dns]
    detect: {{ timeout: 1s }}
    default: echo
routes:
  - name: echo
    to: echo
backends:
  echo: {{ servers: [127.0.0.1:9000] }}
udp: {{ max_sessions: {MAX_SESSIONS}, max_sessions_per_ip: 2, session_timeout: 1s }}
admin: {{ bind: 127.0.0.1:9901 }}
"#
    );
    let proxy = Proxy::start_with(tempfile::tempdir().expect("tempdir"), &yaml, |file| {
        let mut run = Command::new("ip");
        run.args(["netns", "exec", &proxy_ns]).arg(bin()).args(["run", "-c"]).arg(file).stdin(Stdio::null());
        run
    });
    proxy.wait_log(30, |v| v["message"] == "admin listening");

    let client = net.python(&client_ns, CLIENT, &["10.78.1.1", "5300", &FLOOD.to_string()]);
    let mut stdin: ChildStdin = client.stdin.take().expect("the client's stdin");
    let out = lines(client.stdout.take().expect("the client's stdout"));
    let ready = out.recv_timeout(Duration::from_secs(60)).expect("the client says whether its session answers");
    assert_eq!(ready, "ready", "the legitimate session got no echo; proxy output:\n{}", proxy.output());
    let before = net.metrics();
    assert_eq!(series(&before, OPEN), 1, "the legitimate session alone:\n{before}");
    assert_eq!(series(&before, REFUSED), 0);

    writeln!(stdin, "flood").expect("start the flood");
    // While it runs (bounded: the client gives up flooding after 30 s), the
    // sessions never pass the limit.
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut polls, mut most) = (0, 0);
    let summary = loop {
        if let Ok(line) = out.try_recv() {
            break line;
        }
        assert!(Instant::now() < deadline, "the client did not finish; proxy output:\n{}", proxy.output());
        let open = series(&net.metrics(), OPEN);
        assert!(open <= MAX_SESSIONS, "{open} UDP sessions open, udp.max_sessions is {MAX_SESSIONS}");
        (polls, most) = (polls + 1, most.max(open));
        thread::sleep(Duration::from_millis(50));
    };
    let summary: serde_json::Value = serde_json::from_str(&summary).expect("the client's summary is JSON");
    let number = |key: &str| summary[key].as_u64().unwrap_or_else(|| panic!("{key} in {summary}"));
    assert_eq!(number("flooded"), FLOOD, "{summary}");
    assert!(polls >= 3, "{polls} looks at the sessions during the flood: {summary}");
    assert_eq!(most, MAX_SESSIONS, "the flood filled the sessions to the limit: {summary}");

    // The spoofed clients past the limit were refused, and said so.
    let after = net.metrics();
    let refused = series(&after, REFUSED);
    assert!(refused >= FLOOD / 4, "{refused} of {FLOOD} spoofed clients refused: {summary}\n{after}");
    let warned = proxy.wait_log(10, |v| v["limit"] == "udp.max_sessions");
    assert!(warned["client"].as_str().is_some_and(|c| c.starts_with("10.79.")), "{warned}");

    // The legitimate session went on through the flood and after it.
    let (sent, echoed) = (number("sent_during"), number("echoed_during"));
    assert!(sent >= 5 && echoed * 2 >= sent, "{echoed} of {sent} echoed during the flood: {summary}");
    assert!(number("echoed_after") * 2 >= number("sent_after"), "{summary}");
    // One session from start to end: when it expires, its line counts every
    // echo the client got.
    let legit = proxy.wait_log(20, |v| {
        v["target"] == "refractium::access" && v["client"].as_str().is_some_and(|c| c.starts_with("10.78.1.2:"))
    });
    let down = legit["datagrams_down"].as_u64().unwrap_or_default();
    assert!(down >= number("echoed"), "the legitimate session was cut: {legit}, {summary}");
    crate::report::row(
        "a UDP flood from spoofed source addresses",
        &format!("{FLOOD} datagrams from random sources in 10.79.0.0/16, `udp.max_sessions` {MAX_SESSIONS}"),
        &format!(
            "held the open sessions at {most} at most, refused {refused} datagrams from new clients (one each) and said so"
        ),
        &format!(
            "nothing: the session open before the flood got {echoed} of {sent} echoes during it and {} of {} after",
            number("echoed_after"),
            number("sent_after")
        ),
    );
}
