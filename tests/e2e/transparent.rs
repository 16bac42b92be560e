//! Transparent proxying (`backends.*.source: client`): the connection to
//! the server leaves from the client's own address. Tested in network
//! namespaces the test makes: a client, the proxy and a server on two
//! links, with the routing a transparent proxy needs, over IPv4 and over
//! IPv6 (with the rules docs/operations.md gives for each).

use crate::support::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One address family's layout: client — proxy (client side | server
/// side) — server, and the proxy's table-100 route for what the server
/// sends back to clients.
struct Family {
    tag: &'static str,
    v6: bool,
    client: &'static str,
    proxy_in: &'static str,
    proxy_out: &'static str,
    server: &'static str,
    prefix: u8,
    local: &'static str,
}

const V4: Family = Family {
    tag: "",
    v6: false,
    client: "10.77.1.2",
    proxy_in: "10.77.1.1",
    proxy_out: "10.77.2.1",
    server: "10.77.2.2",
    prefix: 24,
    local: "10.77.1.0/24",
};

const V6: Family = Family {
    tag: "6",
    v6: true,
    client: "fd77:1::2",
    proxy_in: "fd77:1::1",
    proxy_out: "fd77:2::1",
    server: "fd77:2::2",
    prefix: 64,
    local: "::/0",
};

impl Family {
    /// `addr:port` as a URL or the config writes it.
    fn at(&self, addr: &str, port: u16) -> String {
        if self.v6 { format!("[{addr}]:{port}") } else { format!("{addr}:{port}") }
    }
}

/// Network namespaces and their links, removed when dropped.
struct Net {
    family: &'static Family,
    names: Vec<String>,
    server: Option<Child>,
}

impl Net {
    fn new(family: &'static Family) -> Net {
        let id = std::process::id();
        let tag = family.tag;
        let (c, p, s) = (format!("rfx{id}c{tag}"), format!("rfx{id}p{tag}"), format!("rfx{id}s{tag}"));
        let net = Net { family, names: vec![c.clone(), p.clone(), s.clone()], server: None };
        for ns in &net.names {
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        let f = family;
        let fam = if f.v6 { "-6" } else { "-4" };
        // `nodad`: an IPv6 address usable at once, without duplicate
        // address detection.
        let addr = |ns: &str, a: &str, dev: &str| {
            let a = format!("{a}/{}", f.prefix);
            let mut args = vec!["-n", ns, "addr", "add", &a, "dev", dev];
            if f.v6 {
                args.push("nodad");
            }
            ip(&args);
        };
        // client <-> proxy
        ip(&["-n", &c, "link", "add", "c0", "type", "veth", "peer", "name", "p0", "netns", &p]);
        addr(&c, f.client, "c0");
        ip(&["-n", &c, "link", "set", "c0", "up"]);
        ip(&["-n", &c, fam, "route", "add", "default", "via", f.proxy_in]);
        addr(&p, f.proxy_in, "p0");
        ip(&["-n", &p, "link", "set", "p0", "up"]);
        // proxy <-> server, whose replies to clients go back through the proxy
        ip(&["-n", &p, "link", "add", "p1", "type", "veth", "peer", "name", "s0", "netns", &s]);
        addr(&p, f.proxy_out, "p1");
        ip(&["-n", &p, "link", "set", "p1", "up"]);
        addr(&s, f.server, "s0");
        ip(&["-n", &s, "link", "set", "s0", "up"]);
        ip(&["-n", &s, fam, "route", "add", "default", "via", f.proxy_out]);
        // On the proxy, as docs/operations.md writes it: what the server
        // sends to a client address is for a local (transparent) socket,
        // not to be forwarded.
        ip(&["-n", &p, fam, "rule", "add", "iif", "p1", "lookup", "100"]);
        ip(&["-n", &p, fam, "route", "add", "local", f.local, "dev", "lo", "table", "100"]);
        net
    }

    fn ns(&self, i: usize) -> &str {
        &self.names[i]
    }

    /// An HTTP server on the server's address, port 8080, answering with
    /// the address the connection came from.
    fn start_server(&mut self) {
        const SERVER: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 8080))
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
            .args(["netns", "exec", self.ns(2), "python3", "-c", SERVER, self.family.server])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the server");
        self.server = Some(child);
    }

    /// `curl` from the client's namespace to the proxy, with this Host header.
    fn get(&self, host: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (ok, out, err) = run_cmd(
                Command::new("ip")
                    .args(["netns", "exec", self.ns(0), "curl", "-s", "-g", "-m", "5", "-H"])
                    .arg(format!("Host: {host}"))
                    .arg(format!("http://{}/", self.family.at(self.family.proxy_in, 8443))),
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

/// Without `source: client` the server sees the proxy; with it, the client.
fn the_server_sees_the_client(family: &'static Family) {
    if !can_make_namespaces() {
        return;
    }
    let mut net = Net::new(family);
    net.start_server();
    let (listen, server) = (family.at(family.proxy_in, 8443), family.at(family.server, 8080));
    let yaml = format!(
        r#"
listeners:
  - name: edge
    bind: "{listen}"
    detectors: [http]
routes:
  - name: transparent
    match: {{ protocol: http, attributes: {{ host: transparent }} }}
    to: transparent
  - name: plain
    match: {{ protocol: http }}
    to: plain
backends:
  transparent: {{ servers: ["{server}"], source: client }}
  plain: {{ servers: ["{server}"] }}
"#
    );
    let proxy_ns = net.ns(1).to_string();
    let proxy = Proxy::start_with(tempfile::tempdir().expect("tempdir"), &yaml, |file| {
        let mut run = Command::new("ip");
        run.args(["netns", "exec", &proxy_ns]).arg(bin()).args(["run", "-c"]).arg(file).stdin(Stdio::null());
        run
    });
    assert_eq!(net.get("plain"), family.proxy_out, "without source: client the server sees the proxy");
    assert_eq!(net.get("transparent"), family.client, "with source: client it sees the client:\n{}", proxy.output());
    let log = proxy.wait_access(2);
    assert!(log.iter().all(|l| l["close"] == "closed"), "{log:?}");
}

#[test]
fn the_server_sees_the_client_s_own_address() {
    the_server_sees_the_client(&V4);
}

#[test]
fn transparent_proxying_over_ipv6_with_the_documented_rules() {
    the_server_sees_the_client(&V6);
}
