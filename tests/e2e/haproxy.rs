//! A real HAProxy for the tests that need another proxy beside refractium:
//! as a backend that parses the PROXY header refractium sends, or in front
//! of refractium, sending one. The test writes the whole configuration;
//! [`PREAMBLE`] has the `global` and `defaults` sections most want.

use crate::support::*;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// `global` and `defaults` for a test: log lines to stderr (see
/// [`Haproxy::output`]), timeouts a test does not wait out. Frontends and
/// backends go after it; each says its `mode`.
pub const PREAMBLE: &str = "\
global
    log stderr format raw local0 info
defaults
    log global
    timeout connect 5s
    timeout client 10s
    timeout server 10s
";

/// A running `haproxy -db`, killed when dropped.
pub struct Haproxy {
    child: Child,
    output: Arc<Mutex<Vec<String>>>,
    /// Holds `haproxy.cfg`.
    pub dir: tempfile::TempDir,
}

impl Haproxy {
    /// Whether HAProxy is installed; when it is not, [`missing`] says so:
    /// the test skips, or fails in CI (`.ci/run` installs it).
    pub fn installed() -> bool {
        have("haproxy")
    }

    /// Write `config` (a whole `haproxy.cfg`) to a temp dir, run HAProxy in
    /// the foreground on it, and wait (at most 10 s) until each of `ports`
    /// on 127.0.0.1 accepts connections. Choose the ports with
    /// [`free_port`]. Each wait is one connection that sends nothing, which
    /// a frontend with `accept-proxy` logs as an error; that is harmless.
    pub fn start(config: &str, ports: &[u16]) -> Haproxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("haproxy.cfg");
        std::fs::write(&file, config).expect("write haproxy.cfg");
        let mut child = Command::new("haproxy")
            .arg("-f")
            .arg(&file)
            .arg("-db")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start haproxy");
        let output = Arc::new(Mutex::new(Vec::new()));
        collect(child.stdout.take().expect("stdout"), &output);
        collect(child.stderr.take().expect("stderr"), &output);
        let mut haproxy = Haproxy { child, output, dir };
        haproxy.wait_until_listening(ports);
        haproxy
    }

    fn wait_until_listening(&mut self, ports: &[u16]) {
        let deadline = Instant::now() + Duration::from_secs(10);
        for &port in ports {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            while TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
                let exited = self.child.try_wait().ok().flatten();
                if exited.is_some() {
                    // Let the reader threads collect the last lines.
                    thread::sleep(Duration::from_millis(200));
                }
                assert!(
                    exited.is_none() && Instant::now() < deadline,
                    "haproxy does not accept on {addr} ({exited:?}); its output:\n{}\nits config:\n{}",
                    self.output(),
                    std::fs::read_to_string(self.dir.path().join("haproxy.cfg")).unwrap_or_default()
                );
                thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Everything HAProxy printed so far (its warnings and log lines).
    pub fn output(&self) -> String {
        self.output.lock().expect("haproxy output").join("\n")
    }
}

/// Append the lines of `pipe` to `output` as they come.
fn collect(pipe: impl Read + Send + 'static, output: &Arc<Mutex<Vec<String>>>) {
    let output = output.clone();
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            output.lock().expect("haproxy output").push(line);
        }
    });
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
