//! Hooks on routes: a hook rewrites, holds back, answers and closes; a
//! hooked and an unhooked route share a listener; a hook that traps, spins,
//! fills its memory or multiplies its output closes only its own connection
//! while the other connections through the same hook finish intact; a hook
//! that keeps failing is disabled, and its route closes or bypasses it;
//! on UDP routes a hook sees each datagram as a chunk.

use crate::support::*;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

/// A proxy with `testhook` installed under each name of `hooks` (with its
/// mode), an echo backend, and `routes` (YAML) over a listener `edge` that
/// detects HTTP and sends anything else to the route `plain`.
fn hooked_proxy(hooks: &[(&str, &str)], routes: &str) -> (Proxy, Backend) {
    let echo = Backend::start(Reply::Echo);
    let (dir, config) = with_testhooks(hooks);
    let yaml = format!(
        r#"
listeners:
  - name: edge
    bind: 127.0.0.1:0
    detectors: [http]
    detect: {{ timeout: 500ms }}
    default: plain
routes:
{routes}  - name: plain
    to: echo
backends:
  echo: {{ servers: [{echo}] }}
admin: {{ bind: 127.0.0.1:0 }}
plugins:
  dir: plugins.d
  limits: {{ call_timeout: 100ms }}
  config:
{config}"#,
        echo = echo.addr
    );
    (Proxy::start_in(dir, &yaml), echo)
}

/// A directory with `testhook` in `plugins.d` under each name of `hooks`,
/// and the `plugins.config` lines that give each its mode.
fn with_testhooks(hooks: &[(&str, &str)]) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = dir.path().join("plugins.d");
    std::fs::create_dir(&plugins).expect("mkdir");
    let mut config = String::new();
    for (name, mode) in hooks {
        std::fs::copy(test_plugins_dir().join("refractium_test_testhook.wasm"), plugins.join(format!("{name}.wasm")))
            .expect("copy testhook");
        config.push_str(&format!("    {name}: {{ mode: {mode} }}\n"));
    }
    (dir, config)
}

/// Send `chunks` (pausing between them so they usually arrive apart; on a
/// busy machine they may not: see [`after_echo`]), end the sending side,
/// and read everything until the proxy closes.
fn converse(proxy: &Proxy, chunks: &[&[u8]]) -> Vec<u8> {
    let mut c = TcpStream::connect(proxy.addr("edge")).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    for (i, chunk) in chunks.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(30));
        }
        c.write_all(chunk).expect("write");
    }
    let _ = c.shutdown(Shutdown::Write);
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got);
    got
}

/// Send `first`, wait for the echo server's answer to it to come back
/// unchanged, then send `then`, end the sending side, and read everything
/// until the proxy closes: what came back, `first` included. Unlike with
/// [`converse`], `then` reaches the hook as a chunk of its own however busy
/// the machine is.
fn after_echo(proxy: &Proxy, first: &[u8], then: &[u8]) -> Vec<u8> {
    let mut c = TcpStream::connect(proxy.addr("edge")).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    c.write_all(first).expect("write");
    let mut got = vec![0u8; first.len()];
    c.read_exact(&mut got).expect("the echo of the first chunk");
    c.write_all(then).expect("write");
    let _ = c.shutdown(Shutdown::Write);
    let _ = c.read_to_end(&mut got);
    got
}

const GET: &[u8] = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n";

#[test]
fn a_hook_rewrites_one_route_and_the_other_route_is_untouched() {
    let (proxy, _echo) = hooked_proxy(
        &[("shout", "upper")],
        "  - name: web\n    match: { protocol: http }\n    hooks: [shout]\n    to: echo\n",
    );
    // Hooked: the first bytes (read during detection) and what follows are
    // upper-cased on the way to the server; the echo comes back unchanged.
    let got = converse(&proxy, &[GET, b"and then some\n"]);
    assert_eq!(got, [GET.to_ascii_uppercase(), b"AND THEN SOME\n".to_vec()].concat());
    // Unhooked, on the same listener: byte for byte.
    assert_eq!(converse(&proxy, &[b"plain words\n", b"more\n"]), b"plain words\nmore\n");
    let access = proxy.wait_access(2);
    assert!(access.iter().all(|a| a["close"] == "closed"), "{access:?}");
    // One session; the client's bytes in and out, the echo's in and out.
    let metrics = proxy.admin_get("/metrics");
    let sent = (GET.len() + b"and then some\n".len()) as u64;
    for line in [
        "refractium_hook_sessions_total{hook=\"shout\"} 1".to_string(),
        format!("refractium_hook_bytes_in_total{{hook=\"shout\"}} {}", 2 * sent),
        format!("refractium_hook_bytes_out_total{{hook=\"shout\"}} {}", 2 * sent),
        "refractium_hook_closes_total{hook=\"shout\"} 0".to_string(),
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} not in:\n{metrics}");
    }
}

#[test]
fn a_hook_holds_bytes_until_the_side_ends() {
    let (proxy, echo) = hooked_proxy(
        &[("holder", "hold")],
        "  - name: web\n    match: { protocol: http }\n    hooks: [holder]\n    to: echo\n",
    );
    let got = converse(&proxy, &[GET, b"held"]);
    assert_eq!(got, [GET, b"held"].concat(), "released at each side's end, in order");
    // The server got nothing before the client's end: one read, all of it.
    assert_eq!(echo.wait_seen(1)[0], [GET, b"held"].concat());
}

#[test]
fn a_hook_answers_and_closes() {
    let (proxy, echo) = hooked_proxy(
        &[("guard", "deny")],
        "  - name: web\n    match: { protocol: http }\n    hooks: [guard]\n    to: echo\n",
    );
    // In the first bytes: answered before any server is asked.
    let got = converse(&proxy, &[b"GET /forbidden HTTP/1.1\r\nHost: a\r\n\r\n"]);
    assert!(got.starts_with(b"HTTP/1.1 403 Forbidden\r\n"), "{}", String::from_utf8_lossy(&got));
    let line = proxy.wait_log(10, |v| v["target"] == "refractium::access" && v["close"] != "closed");
    assert_eq!(line["close"], "hook guard: forbidden word", "{line}");
    assert!(echo.seen().is_empty(), "the server was never connected");
    // Later in the stream: what went before reached the server and came
    // back; then the answer, and the end.
    let mut c = TcpStream::connect(proxy.addr("edge")).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    c.write_all(GET).expect("write");
    let mut echoed = vec![0u8; GET.len()];
    c.read_exact(&mut echoed).expect("the echo of the first request");
    assert_eq!(echoed, GET);
    c.write_all(b"now something forbidden").expect("write");
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    assert!(rest.starts_with(b"HTTP/1.1 403 Forbidden\r\n"), "{}", String::from_utf8_lossy(&rest));
    // `close`: the connection ends with no answer.
    assert_eq!(after_echo(&proxy, GET, b"please close"), GET);
    proxy.wait_log(10, |v| v["close"] == "hook guard: asked to close");
}

/// Fifty connections through one hook exchange their bytes while others,
/// through the same hook, make it trap, spin, fill its memory and multiply
/// its output: each of those closes alone, with the cause in the access
/// log; the fifty finish intact.
#[test]
fn a_broken_hook_closes_only_its_own_connection() {
    let (proxy, _echo) = hooked_proxy(
        &[("fragile", "broken")],
        "  - name: web\n    match: { protocol: http }\n    hooks: [fragile]\n    to: echo\n",
    );
    let addr = proxy.addr("edge");
    // Fifty clients connect and send their first request, and keep their
    // connections open while the hook breaks on others.
    let mut clients: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut c = TcpStream::connect(addr).expect("connect");
            c.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
            c.write_all(GET).expect("write");
            let mut echoed = vec![0u8; GET.len()];
            c.read_exact(&mut echoed).expect("echo");
            assert_eq!(echoed, GET);
            c
        })
        .collect();
    for (trigger, cause) in [("trap", "trap"), ("spin", "time"), ("hog!", "memory"), ("grow", "output")] {
        let got = after_echo(&proxy, GET, trigger.as_bytes());
        assert_eq!(got, GET, "{trigger}: the first request's echo, then the close");
        let line = proxy.wait_log(10, |v| {
            v["target"] == "refractium::access"
                && v["close"].as_str().is_some_and(|c| c.starts_with(&format!("hook fragile failed ({cause})")))
        });
        assert_eq!(line["route"], "web", "{line}");
    }
    // The panic's message reaches the log, as the hook wrote it to stderr.
    let panic = proxy.wait_log(10, |v| {
        v["plugin"] == "fragile" && v["message"].as_str().is_some_and(|m| m.contains("testhook: deliberate panic"))
    });
    assert_eq!(panic["level"], "WARN", "{panic}");
    // Every one of the fifty still has its own session and finishes intact.
    for (i, c) in clients.iter_mut().enumerate() {
        let line = format!("client {i} still here\n");
        c.write_all(line.as_bytes()).expect("write");
        c.shutdown(Shutdown::Write).expect("shutdown");
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).expect("read");
        assert_eq!(rest, line.as_bytes(), "client {i}");
    }
    let clean = proxy.wait_access(54);
    assert_eq!(clean.iter().filter(|a| a["close"] == "closed").count(), 50, "{clean:?}");
}

/// A hook instance serves one connection after another (its session is
/// new each time), but one in which a call failed serves nobody again: no
/// later connection sees what the failing call left behind.
#[test]
fn a_hook_instance_is_reused_only_after_a_clean_end() {
    let (proxy, _echo) = hooked_proxy(
        &[("counter", "count")],
        "  - name: web
    match: { protocol: http }
    hooks: [counter]
    to: echo
",
    );
    // `[n]`: the connection's session was the n-th its instance opened.
    let number = |got: &[u8]| -> String {
        let text = String::from_utf8_lossy(got).to_string();
        assert!(text.starts_with('[') && text.ends_with(&String::from_utf8_lossy(GET).to_string()), "{text}");
        text[1..text.find(']').expect("tag")].to_string()
    };
    let mut seen = Vec::new();
    for i in 0..5 {
        seen.push(number(&converse(&proxy, &[GET])));
        // Ended (its access-log line is out): its instance is free again.
        proxy.wait_access(i + 1);
    }
    assert!(seen.iter().any(|n| n != "1"), "one after another, connections share an instance: {seen:?}");
    for _ in 0..3 {
        assert_eq!(
            converse(
                &proxy,
                &[b"GET /trap HTTP/1.1

"]
            ),
            b"",
            "the trap closes it"
        );
        proxy.wait_log(10, |v| v["close"].as_str().is_some_and(|c| c.starts_with("hook counter failed (trap)")));
        for _ in 0..3 {
            let n = number(&converse(&proxy, &[GET]));
            assert_ne!(n, "poisoned", "an instance that trapped served again");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A hook that fails on every connection is disabled; then its route
/// closes new connections, unless it says `on_hook_failure: bypass`.
#[test]
fn a_disabled_hook_closes_its_route_or_is_bypassed() {
    let routes = "  - name: web\n    match: { protocol: http, attributes: { host: strict } }\n    hooks: [fragile]\n    to: echo\n  - name: lenient\n    match: { protocol: http }\n    hooks: [fragile]\n    on_hook_failure: bypass\n    to: echo\n";
    let (proxy, _echo) = hooked_proxy(&[("fragile", "broken")], routes);
    let strict = b"GET /trap HTTP/1.1\r\nHost: strict\r\n\r\n";
    for _ in 0..10 {
        assert_eq!(converse(&proxy, &[strict]), b"", "the trap ends it at once");
    }
    proxy.wait_log(10, |v| v["plugin"] == "fragile" && v["level"] == "ERROR");
    // Disabled: the strict route closes; the lenient one goes on unhooked.
    assert_eq!(converse(&proxy, &[b"GET / HTTP/1.1\r\nHost: strict\r\n\r\n"]), b"");
    proxy.wait_log(10, |v| v["close"].as_str().is_some_and(|c| c.contains("fragile is disabled")));
    let lenient = b"GET /trap HTTP/1.1\r\nHost: lenient\r\n\r\n";
    assert_eq!(converse(&proxy, &[lenient]), lenient, "bypassed: the trigger reaches the server untouched");
}

/// A reload that changes a hook while clients keep coming: no connection
/// fails, each is served wholly by one version, a connection open across
/// the reload keeps the version it started with, and new ones get the new.
#[test]
fn a_reload_replaces_a_hook_under_load_without_a_failed_connection() {
    let (proxy, _echo) = hooked_proxy(
        &[("shout", "upper")],
        "  - name: web\n    match: { protocol: http }\n    hooks: [shout]\n    to: echo\n",
    );
    let config = proxy.dir.path().join("refractium.yaml");
    let before = std::fs::read_to_string(&config).expect("config");
    let (lower, upper) = ([GET, b"tail\n"].concat(), [GET.to_ascii_uppercase(), b"TAIL\n".to_vec()].concat());
    // Open across the reload: its first chunk has gone through the old hook.
    let mut open = TcpStream::connect(proxy.addr("edge")).expect("connect");
    open.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    open.write_all(GET).expect("write");
    let mut echoed = vec![0u8; GET.len()];
    open.read_exact(&mut echoed).expect("echo");
    assert_eq!(echoed, GET.to_ascii_uppercase());
    let stop = std::sync::atomic::AtomicBool::new(false);
    let served = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let mut n = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 2000 {
                        let got = converse(&proxy, &[GET, b"tail\n"]);
                        assert!(got == upper || got == lower, "a connection failed or was mixed: {got:?}");
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        std::fs::write(&config, before.replace("mode: upper", "mode: identity")).expect("rewrite config");
        let _ = std::process::Command::new("kill").args(["-HUP", &proxy.pid().to_string()]).status();
        proxy.wait_log(30, |v| v["message"] == "reload: new configuration in force");
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        clients.into_iter().map(|c| c.join().expect("client")).sum::<usize>()
    });
    assert!(served > 0);
    assert_eq!(converse(&proxy, &[GET, b"tail\n"]), lower, "new connections get the new version");
    open.write_all(b"still the old one\n").expect("write");
    open.shutdown(Shutdown::Write).expect("shutdown");
    let mut rest = Vec::new();
    open.read_to_end(&mut rest).expect("read");
    assert_eq!(rest, b"STILL THE OLD ONE\n", "the open connection keeps the hook it started with");
    let failed = proxy.logs_where(|v| v["target"] == "refractium::access" && v["close"] != "closed");
    assert!(failed.is_empty(), "{failed:?}");
}

/// The built-in `deny` answers curl's request for a banned path with 403
/// and closes, and lets other paths through; the built-in `rewrite` changes
/// a word the server sends in two pieces.
#[test]
fn the_built_in_deny_and_rewrite_hooks() {
    let web = Backend::start(Reply::Http("web"));
    let echo = Backend::start(Reply::Echo);
    let yaml = format!(
        r#"
listeners:
  - name: edge
    bind: 127.0.0.1:0
    detectors: [http]
    default: echoed
routes:
  - name: web
    match: {{ protocol: http }}
    hooks: [deny]
    to: web
  - name: echoed
    hooks: [rewrite]
    to: echo
backends:
  web: {{ servers: [{web}] }}
  echo: {{ servers: [{echo}] }}
plugins:
  config:
    deny:
      rules:
        - regex: "^GET /admin"
          respond: "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
          reason: admin path
    rewrite:
      rules:
        - from: HELLO
          to: HOWDY
          direction: server-to-client
"#,
        web = web.addr,
        echo = echo.addr
    );
    let proxy = Proxy::start(&yaml);
    let url = |path: &str| format!("http://{}{path}", proxy.addr("edge"));
    if have("curl") {
        let code = |path: &str| {
            let (_, out, _) = run_cmd(
                std::process::Command::new("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &url(path)]),
                20,
            );
            out
        };
        assert_eq!(code("/admin/users"), "403");
        assert_eq!(code("/index.html"), "200");
        proxy.wait_log(10, |v| v["close"] == "hook deny: admin path");
    }
    assert_eq!(web.seen().len(), usize::from(have("curl")), "the banned request never reached the server");
    // Echoed in two pieces (the client's two writes), rewritten as one.
    let got = converse(&proxy, &[b"say HEL", b"LO world"]);
    assert_eq!(got, b"say HOWDY world");
}

/// A proxy whose HTTP route passes through the built-in `http-headers`
/// (which also sets `X-Env: test`) to a backend that answers each request
/// with the head it received.
fn headers_proxy() -> (Proxy, crate::http_backend::HttpEcho) {
    let backend = crate::http_backend::HttpEcho::start();
    let yaml = format!(
        "listeners:\n  - name: edge\n    bind: 127.0.0.1:0\n    detectors: [http]\nroutes:\n  - name: web\n    match: {{ protocol: http }}\n    hooks: [http-headers]\n    to: web\nbackends:\n  web: {{ servers: [{}] }}\nplugins:\n  limits: {{ call_timeout: 1s }}\n  config:\n    http-headers: {{ set: {{ X-Env: test }}, remove: [X-Debug] }}\nadmin: {{ bind: 127.0.0.1:0 }}\n",
        backend.addr
    );
    (Proxy::start(&yaml), backend)
}

/// curl through `http-headers`: three requests on one kept-alive
/// connection, a POST whose body holds a blank line and a request, a
/// chunked upload; every head rewritten, every body intact.
#[test]
fn http_headers_rewrites_every_request_curl_sends() {
    if !have("curl") {
        return;
    }
    let (proxy, backend) = headers_proxy();
    let base = format!("http://{}", proxy.addr("edge"));
    let curl = |args: &[&str]| {
        let (ok, out, err) =
            run_cmd(std::process::Command::new("curl").args(["-s", "--max-time", "20"]).args(args), 30);
        assert!(ok, "curl failed: {err}");
        out
    };
    // Keep-alive: curl reuses one connection for the three URLs.
    let out = curl(&["-H", "X-Debug: secret", &format!("{base}/a"), &format!("{base}/b"), &format!("{base}/c")]);
    assert_eq!(backend.connections(), 1, "one kept-alive connection");
    let heads = backend.heads();
    assert_eq!(heads.len(), 3, "{heads:?}");
    for (head, path) in heads.iter().zip(["/a", "/b", "/c"]) {
        assert!(head.starts_with(&format!("GET {path} HTTP/1.1\r\n")), "{head}");
        for line in ["X-Env: test", "X-Forwarded-For: 127.0.0.1", "X-Real-IP: 127.0.0.1", "Forwarded: for=127.0.0.1"] {
            assert!(head.contains(&format!("{line}\r\n")), "{line} missing from {head}");
        }
        assert!(!head.contains("X-Debug"), "{head}");
    }
    assert_eq!(out.matches("X-Forwarded-For: 127.0.0.1").count(), 3, "{out}");
    // A body holding what looks like a request passes unchanged.
    let body = "line one\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: evil\r\n\r\n";
    let out = curl(&["--data-binary", body, &format!("{base}/post")]);
    assert!(out.ends_with(body), "{out}");
    assert_eq!(out.matches("X-Forwarded-For").count(), 1, "the body was not taken for a head: {out}");
    // A chunked upload arrives whole.
    let file = proxy.dir.path().join("upload.bin");
    let upload: String = (0..2000).map(|i| format!("{i}\r\n\r\n")).collect();
    std::fs::write(&file, &upload).expect("write");
    let out = curl(&[
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &format!("@{}", file.display()),
        &format!("{base}/chunked"),
    ]);
    assert!(out.ends_with(&upload), "the upload came back changed");
    let access = proxy.wait_access(3);
    assert!(access.iter().all(|a| a["close"] == "closed"), "{access:?}");
}

/// A head sent a byte at a time is rewritten once whole; an upgrade ends
/// the rewriting; a request the hook cannot follow is answered 400.
#[test]
fn http_headers_waits_for_whole_heads_and_stops_at_an_upgrade() {
    let (proxy, backend) = headers_proxy();
    let mut c = TcpStream::connect(proxy.addr("edge")).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    for b in b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n" {
        c.write_all(&[*b]).expect("write");
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut answer = vec![0u8; 4096];
    let n = c.read(&mut answer).expect("read");
    let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
    assert!(
        answer.contains("GET /slow HTTP/1.1\r\nHost: a\r\nX-Env: test\r\nX-Forwarded-For: 127.0.0.1\r\n"),
        "{answer}"
    );
    // Upgrade: the 101, then bytes that look like a request come back as sent.
    let mut ws = TcpStream::connect(proxy.addr("edge")).expect("connect");
    ws.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    ws.write_all(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n").expect("write");
    let mut switched = vec![0u8; 4096];
    let n = ws.read(&mut switched).expect("read");
    assert!(switched[..n].starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&switched[..n]));
    let frame = b"GET /inside HTTP/1.1\r\nHost: b\r\n\r\n";
    ws.write_all(frame).expect("write");
    let mut echoed = vec![0u8; frame.len()];
    ws.read_exact(&mut echoed).expect("echo");
    assert_eq!(echoed, frame, "after the upgrade nothing is rewritten");
    assert_eq!(backend.heads().len(), 2, "the bytes after the upgrade were not a request to the backend");
    // Malformed: 400, and the connection ends.
    let got = converse(&proxy, &[b"GET / HTTP/1.1\r\nHost a\r\n\r\n"]);
    assert!(got.starts_with(b"HTTP/1.1 400 Bad Request"), "{}", String::from_utf8_lossy(&got));
    proxy.wait_log(10, |v| v["close"].as_str().is_some_and(|c| c.starts_with("hook http-headers: 400: malformed")));
}

/// `http-headers` declares it does not look at responses: the proxy never
/// gives it the server's bytes (its metrics count the request alone), and
/// the response arrives whole.
#[test]
fn http_headers_is_not_called_for_responses() {
    let (proxy, backend) = headers_proxy();
    let request = b"GET /r HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let got = converse(&proxy, &[request]);
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 200") && got.contains("X-Forwarded-For: 127.0.0.1"), "{got}");
    assert_eq!(backend.heads().len(), 1);
    proxy.wait_access(1);
    let bytes_in = proxy.metric(r#"refractium_hook_bytes_in_total{hook="http-headers"}"#);
    assert_eq!(bytes_in, request.len() as u64, "only the request went through the hook");
}

/// On UDP routes each datagram is one chunk: rewritten datagrams go on
/// whole, a hook's answer goes back to the client and ends the session, and
/// a datagram a hook forwards nothing of is dropped. `dig` resolves through
/// a hooked DNS route.
#[test]
fn hooks_on_udp_routes_see_each_datagram_as_a_chunk() {
    use crate::udp_backend::{UdpBackend, client, dns_answer, echo};
    let (dns, other, quiet) = (UdpBackend::start(dns_answer), UdpBackend::start(echo), UdpBackend::start(echo));
    let (dir, config) =
        with_testhooks(&[("watch", "identity"), ("guard", "deny"), ("shout", "upper"), ("sink", "hold")]);
    let yaml = format!(
        r#"
listeners:
  - name: edge
    bind: 127.0.0.1:0
    transport: udp
    detectors: [dns]
    detect: {{ timeout: 300ms }}
    default: other
  - name: quiet
    bind: 127.0.0.1:0
    transport: udp
    detectors: []
    default: sunk
routes:
  - name: dns
    match: {{ protocol: dns }}
    hooks: [watch]
    to: dns
  - name: other
    hooks: [guard, shout]
    to: other
  - name: sunk
    hooks: [sink]
    to: quiet
backends:
  dns: {{ servers: [{dns}] }}
  other: {{ servers: [{other}] }}
  quiet: {{ servers: [{quiet}] }}
admin: {{ bind: 127.0.0.1:0 }}
udp: {{ session_timeout: 2s }}
plugins:
  dir: plugins.d
  config:
{config}"#,
        dns = dns.addr,
        other = other.addr,
        quiet = quiet.addr,
    );
    let proxy = Proxy::start_in(dir, &yaml);
    let edge = proxy.addr("edge");
    // Rewritten on the way up, one datagram each; the echo comes back as is.
    let c = client();
    let mut buf = [0u8; 2048];
    for word in [&b"hello"[..], b"again"] {
        c.send_to(word, edge).expect("send");
        let (n, from) = c.recv_from(&mut buf).expect("echo");
        assert_eq!((from, &buf[..n]), (edge, &word.to_ascii_uppercase()[..]));
    }
    let seen: Vec<Vec<u8>> = other.wait_seen(2).into_iter().map(|(_, d)| d).collect();
    assert_eq!(seen, [b"HELLO".to_vec(), b"AGAIN".to_vec()]);
    // `guard` answers the client and ends its session; the server never
    // sees the datagram.
    c.send_to(b"forbidden", edge).expect("send");
    let (n, _) = c.recv_from(&mut buf).expect("answer");
    assert!(buf[..n].starts_with(b"HTTP/1.1 403 Forbidden"), "{}", String::from_utf8_lossy(&buf[..n]));
    let line = proxy.wait_log(10, |v| v["target"] == "refractium::access" && v["transport"] == "udp");
    assert_eq!((&line["route"], &line["close"]), (&"other".into(), &"hook guard: forbidden word".into()), "{line}");
    assert_eq!(other.seen().len(), 2);
    // Forwarding nothing drops the datagram: the session stays, nothing
    // reaches the server.
    let q = client();
    q.send_to(b"swallowed", proxy.addr("quiet")).expect("send");
    q.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
    assert!(q.recv_from(&mut buf).is_err(), "no reply to a dropped datagram");
    assert!(quiet.seen().is_empty(), "{:?}", quiet.seen());
    // A real client through a hooked route.
    if have("dig") {
        let port = edge.port().to_string();
        let args = ["+short", "+timeout=3", "+tries=1", "-p", &port, "@127.0.0.1", "example.com"];
        let (ok, out, err) = run_cmd(std::process::Command::new("dig").args(args), 15);
        assert!(ok, "dig failed: {out} {err}");
        assert_eq!(out.trim(), "192.0.2.1");
        let metrics = proxy.admin_get("/metrics");
        assert!(metrics.lines().any(|l| l == "refractium_hook_sessions_total{hook=\"watch\"} 1"), "{metrics}");
    }
    let metrics = proxy.admin_get("/metrics");
    assert!(metrics.lines().any(|l| l == "refractium_hook_closes_total{hook=\"guard\"} 1"), "{metrics}");
}

/// Megabytes each way through a hook called directly, in chunks large
/// enough to be read straight into its memory: every byte arrives, in
/// order, as the hook made it (upper-cased on the way in, unchanged on the
/// way back from the echo).
#[test]
fn megabytes_through_a_hook_arrive_whole_and_in_order() {
    let (proxy, _echo) = hooked_proxy(
        &[("shout", "upper")],
        "  - name: web\n    match: { protocol: http }\n    hooks: [shout]\n    to: echo\n",
    );
    let mut sent = GET.to_vec();
    let mut state = 0x9e37_79b9_u32;
    sent.extend((0..16 << 20).map(|_| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        b"abcdefghijklmnopqrstuvwxyz0123456789 \r\n"[(state % 39) as usize]
    }));
    let mut c = TcpStream::connect(proxy.addr("edge")).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let mut writer = c.try_clone().expect("clone");
    let to_send = sent.clone();
    let sending = std::thread::spawn(move || {
        writer.write_all(&to_send).expect("write");
        writer.shutdown(Shutdown::Write).expect("shutdown");
    });
    let mut got = Vec::with_capacity(sent.len());
    c.read_to_end(&mut got).expect("read");
    sending.join().expect("writer");
    assert_eq!(got.len(), sent.len());
    assert!(got == sent.to_ascii_uppercase(), "the bytes differ from what the hook made of them");
    let line = proxy.wait_access(1).pop().expect("access line");
    assert_eq!(line["close"], "closed", "{line}");
}
