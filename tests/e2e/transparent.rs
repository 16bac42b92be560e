//! Transparent proxying (`backends.*.source: client`): the connection to
//! the server leaves from the client's own address. Tested in network
//! namespaces the test makes: a client, the proxy and a server on two
//! links, with the routing a transparent proxy needs.

use crate::support::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Network namespaces and their links, removed when dropped.
struct Net {
    names: Vec<String>,
    server: Option<Child>,
}

impl Net {
    /// client (10.77.1.2) — proxy (10.77.1.1 | 10.77.2.1) — server (10.77.2.2)
    fn new() -> Net {
        let id = std::process::id();
        let (c, p, s) = (format!("rfx{id}c"), format!("rfx{id}p"), format!("rfx{id}s"));
        let net = Net { names: vec![c.clone(), p.clone(), s.clone()], server: None };
        for ns in &net.names {
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        // client <-> proxy
        ip(&["-n", &c, "link", "add", "c0", "type", "veth", "peer", "name", "p0", "netns", &p]);
        ip(&["-n", &c, "addr", "add", "10.77.1.2/24", "dev", "c0"]);
        ip(&["-n", &c, "link", "set", "c0", "up"]);
        ip(&["-n", &c, "route", "add", "default", "via", "10.77.1.1"]);
        ip(&["-n", &p, "addr", "add", "10.77.1.1/24", "dev", "p0"]);
        ip(&["-n", &p, "link", "set", "p0", "up"]);
        // proxy <-> server, whose replies to clients go back through the proxy
        ip(&["-n", &p, "link", "add", "p1", "type", "veth", "peer", "name", "s0", "netns", &s]);
        ip(&["-n", &p, "addr", "add", "10.77.2.1/24", "dev", "p1"]);
        ip(&["-n", &p, "link", "set", "p1", "up"]);
        ip(&["-n", &s, "addr", "add", "10.77.2.2/24", "dev", "s0"]);
        ip(&["-n", &s, "link", "set", "s0", "up"]);
        ip(&["-n", &s, "route", "add", "default", "via", "10.77.2.1"]);
        // On the proxy: what the server sends to a client address is for a
        // local (transparent) socket, not to be forwarded.
        ip(&["-n", &p, "rule", "add", "iif", "p1", "lookup", "100"]);
        ip(&["-n", &p, "route", "add", "local", "10.77.1.0/24", "dev", "lo", "table", "100"]);
        net
    }

    fn ns(&self, i: usize) -> &str {
        &self.names[i]
    }

    /// An HTTP server on 10.77.2.2:8080 answering with the address the
    /// connection came from.
    fn start_server(&mut self) {
        const SERVER: &str = r#"
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.77.2.2", 8080))
s.listen(16)
while True:
    c, peer = s.accept()
    c.settimeout(5)
    try:
        c.recv(4096)
        body = peer[0].encode()
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
    except OSError:
        pass
    c.close()
"#;
        let child = Command::new("ip")
            .args(["netns", "exec", self.ns(2), "python3", "-c", SERVER])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the server");
        self.server = Some(child);
    }

    /// `curl` from the client's namespace, with this Host header.
    fn get(&self, host: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (ok, out, err) = run_cmd(
                Command::new("ip")
                    .args(["netns", "exec", self.ns(0), "curl", "-s", "-m", "5", "-H"])
                    .arg(format!("Host: {host}"))
                    .arg("http://10.77.1.1:8443/"),
                15,
            );
            if ok {
                return out;
            }
            assert!(Instant::now() < deadline, "curl failed: {out}{err}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.kill();
            let _ = server.wait();
        }
        for ns in &self.names {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn can_make_namespaces() -> bool {
    if !is_root() {
        missing("root (CAP_NET_ADMIN and CAP_SYS_ADMIN), to make network namespaces");
        return false;
    }
    have("ip") && have("python3") && have("curl")
}

#[test]
fn the_server_sees_the_client_s_own_address() {
    if !can_make_namespaces() {
        return;
    }
    let mut net = Net::new();
    net.start_server();
    let yaml = r#"
listeners:
  - name: edge
    bind: 10.77.1.1:8443
    detectors: [http]
routes:
  - name: transparent
    match: { protocol: http, attributes: { host: transparent } }
    to: transparent
  - name: plain
    match: { protocol: http }
    to: plain
backends:
  transparent: { servers: [10.77.2.2:8080], source: client }
  plain: { servers: [10.77.2.2:8080] }
"#;
    let proxy_ns = net.ns(1).to_string();
    let proxy = Proxy::start_with(tempfile::tempdir().expect("tempdir"), yaml, |file| {
        let mut run = Command::new("ip");
        run.args(["netns", "exec", &proxy_ns]).arg(bin()).args(["run", "-c"]).arg(file).stdin(Stdio::null());
        run
    });
    assert_eq!(net.get("plain"), "10.77.2.1", "without source: client the server sees the proxy");
    assert_eq!(net.get("transparent"), "10.77.1.2", "with source: client it sees the client:\n{}", proxy.output());
    let log = proxy.wait_access(2);
    assert!(log.iter().all(|l| l["close"] == "closed"), "{log:?}");
}
