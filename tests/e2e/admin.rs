//! The admin listener: `GET /status`, `POST /reload`, `GET /metrics`, driven
//! with curl as an operator would; the token, the refusals of other sites'
//! requests, and bad or slow clients.

use crate::support::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

fn admin_addr(proxy: &Proxy) -> String {
    let line = proxy.wait_log(10, |v| v["message"] == "admin listening");
    line["addr"].as_str().expect("admin addr").to_string()
}

#[test]
fn status_reload_and_metrics_over_http() {
    if !have("curl") {
        return;
    }
    let a = Backend::start(Reply::Record("a"));
    let b = Backend::start(Reply::Record("b"));
    // Only POST /reload reloads (no file watcher): the counts below are exact.
    let yaml = |to: &str| {
        format!(
            "listeners:\n  - name: edge\n    bind: 127.0.0.1:0\n    detectors: [http]\n    default: web\nroutes:\n  - name: web\n    to: {to}\nbackends:\n  a: {{ servers: [{}] }}\n  b: {{ servers: [{}] }}\nadmin: {{ bind: 127.0.0.1:0 }}\nreload: {{ watch: false }}\n",
            a.addr, b.addr
        )
    };
    let proxy = Proxy::start(&yaml("a"));
    let admin = admin_addr(&proxy);
    let curl = |args: &[&str]| run_cmd(Command::new("curl").args(["-sS", "-m", "10"]).args(args), 15);

    let (ok, out, err) = curl(&[&format!("http://{admin}/status")]);
    assert!(ok, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).expect("status is JSON");
    assert_eq!(status["listeners"][0]["name"], "edge");
    assert_eq!(status["routes"][0]["to"], "a");
    assert!(
        status["plugins"].as_array().is_some_and(|p| p.iter().any(|p| p["name"] == "http" && p["hash"].is_string()))
    );
    assert!(status["last_reload"].is_null());
    let first_hash = status["config_hash"].as_str().unwrap_or_default().to_string();
    assert!(first_hash.len() == 16 && first_hash.bytes().all(|b| b.is_ascii_hexdigit()), "{status}");

    // Traffic shows in the metrics.
    let mut c = TcpStream::connect(proxy.addr("edge")).expect("connect");
    c.write_all(b"hello").expect("write");
    c.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut reply = String::new();
    let _ = c.read_to_string(&mut reply);
    assert_eq!(reply, "a\n");
    let (_, metrics, _) = curl(&[&format!("http://{admin}/metrics")]);
    assert!(
        metrics.lines().any(|l| l == "refractium_tcp_connections_accepted_total{listener=\"edge\"} 1"),
        "{metrics}"
    );

    // A rejected reload says why, and is counted; an accepted one applies.
    std::fs::write(proxy.dir.path().join("refractium.yaml"), yaml("nowhere")).expect("write");
    let (_, out, _) = curl(&["-X", "POST", &format!("http://{admin}/reload")]);
    let answer: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(answer["ok"], false);
    assert!(answer["error"].as_str().is_some_and(|e| e.contains("routes[0].to")), "{answer}");
    std::fs::write(proxy.dir.path().join("refractium.yaml"), yaml("b")).expect("write");
    let (_, out, _) = curl(&["-X", "POST", &format!("http://{admin}/reload")]);
    assert_eq!(out, r#"{"ok":true}"#);
    let (_, out, _) = curl(&[&format!("http://{admin}/status")]);
    let status: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(status["routes"][0]["to"], "b");
    assert_eq!(status["last_reload"]["ok"], true);
    // The hash names the file in force: the new one, also in the metrics.
    let hash = status["config_hash"].as_str().unwrap_or_default();
    assert!(hash.len() == 16 && hash != first_hash, "{hash} after {first_hash}");
    let (_, metrics, _) = curl(&[&format!("http://{admin}/metrics")]);
    assert!(metrics.lines().any(|l| l == "refractium_reloads_total{outcome=\"ok\"} 1"), "{metrics}");
    assert!(metrics.lines().any(|l| l == format!("refractium_config_info{{hash=\"{hash}\"}} 1")), "{metrics}");
    assert!(metrics.lines().any(|l| l == "refractium_reloads_total{outcome=\"failed\"} 1"), "{metrics}");
    let (_, out, _) = curl(&["-o", "/dev/null", "-w", "%{http_code}", &format!("http://{admin}/nope")]);
    assert_eq!(out, "404");
}

/// Send `request` to the admin listener as raw bytes; the status code.
fn raw_status(admin: &str, request: &[u8]) -> String {
    let mut c = TcpStream::connect(admin).expect("connect admin");
    c.set_read_timeout(Some(Duration::from_secs(15))).expect("timeout");
    let _ = c.write_all(request);
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    out.split_whitespace().nth(1).unwrap_or_default().to_string()
}

#[test]
fn state_changes_need_the_token_and_are_refused_to_other_sites() {
    if !have("curl") {
        return;
    }
    let backend = Backend::start(Reply::Record("a"));
    const TOKEN: &str = "0123456789abcdef0123";
    let proxy = Proxy::start(&format!(
        "listeners:\n  - name: edge\n    bind: 127.0.0.1:0\n    default: web\nroutes:\n  - name: web\n    to: a\nbackends:\n  a: {{ servers: [{}] }}\nadmin: {{ bind: 127.0.0.1:0, token: {TOKEN} }}\nreload: {{ watch: false }}\n",
        backend.addr
    ));
    let admin = admin_addr(&proxy);
    let reload = format!("http://{admin}/reload");
    let code = |extra: &[&str]| {
        let (_, out, _) = run_cmd(
            Command::new("curl")
                .args(["-sS", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
                .args(extra)
                .arg(&reload),
            15,
        );
        out
    };
    let bearer = format!("Authorization: Bearer {TOKEN}");
    assert_eq!(code(&[]), "401", "no token");
    assert_eq!(code(&["-H", "Authorization: Bearer wrong-token-wrong-token"]), "401");
    assert_eq!(code(&["-H", &bearer]), "200");
    // A page of another site, even with the token (a browser would not
    // have it, but it proves the check does not rest on it).
    assert_eq!(code(&["-H", &bearer, "-H", "Origin: http://evil.example"]), "403");
    assert_eq!(code(&["-H", &bearer, "-H", &format!("Origin: http://{admin}")]), "200");
    // DNS rebinding: the browser sends the attacker's name as Host.
    let port = admin.rsplit_once(':').map(|(_, p)| p).unwrap_or_default();
    assert_eq!(code(&["-H", &bearer, "-H", &format!("Host: rebind.example:{port}")]), "403");
    assert_eq!(code(&["-H", &bearer, "-H", &format!("Host: localhost:{port}")]), "200");
    // Reads need no token.
    let (ok, out, _) =
        run_cmd(Command::new("curl").args(["-sS", "-m", "10"]).arg(format!("http://{admin}/status")), 15);
    assert!(ok && out.contains("\"listeners\"") && !out.contains(TOKEN), "{out}");
    let refused = proxy.logs_where(|v| v["message"].as_str().is_some_and(|m| m.starts_with("admin request refused")));
    assert_eq!(refused.len(), 4, "each refusal is logged: {refused:?}");
    let reloads = proxy.logs_where(|v| v["message"] == "reloading");
    assert_eq!(reloads.len(), 3, "only the allowed requests reloaded");
}

#[test]
fn bad_requests_get_a_4xx_and_cannot_stall_the_admin_listener() {
    let backend = Backend::start(Reply::Record("a"));
    let proxy = Proxy::start(&format!(
        "listeners:\n  - name: edge\n    bind: 127.0.0.1:0\n    default: web\nroutes:\n  - name: web\n    to: a\nbackends:\n  a: {{ servers: [{}] }}\nadmin: {{ bind: 127.0.0.1:0 }}\n",
        backend.addr
    ));
    let admin = admin_addr(&proxy);
    let big = format!("GET /status HTTP/1.1\r\nHost: a\r\nX-Pad: {}\r\n\r\n", "x".repeat(9000));
    assert_eq!(raw_status(&admin, big.as_bytes()), "431");
    assert_eq!(raw_status(&admin, b"NOT HTTP AT ALL\r\n\r\n"), "400");
    assert_eq!(raw_status(&admin, b"GET /status HTTP/1.1\r\nHost: a\r\n\r\n"), "200");
    // 64 clients that never finish their request take every place: the
    // next one is told so at once; when they time out, service resumes.
    let silent: Vec<TcpStream> = (0..64)
        .map(|_| {
            let mut c = TcpStream::connect(&admin).expect("connect admin");
            c.write_all(b"GET /sta").expect("write");
            c
        })
        .collect();
    // (Bounded retries: the 64 take their places as the listener accepts them.)
    let full = (0..50).any(|_| {
        let busy = raw_status(&admin, b"GET /status HTTP/1.1\r\nHost: a\r\n\r\n") == "503";
        if !busy {
            std::thread::sleep(Duration::from_millis(50));
        }
        busy
    });
    assert!(full, "the 65th client was not told the listener is busy");
    let mut timed_out = 0;
    for mut c in silent {
        c.set_read_timeout(Some(Duration::from_secs(15))).expect("timeout");
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        timed_out += usize::from(out.starts_with("HTTP/1.1 408"));
    }
    assert_eq!(timed_out, 64, "each slow client is answered 408");
    assert_eq!(raw_status(&admin, b"GET /status HTTP/1.1\r\nHost: a\r\n\r\n"), "200");
}
