//! Test plugin `intruder`: on every call it reaches, with the standard
//! library, for one thing its config names (`{"try": ...}`), the way a
//! careless or hostile plugin would:
//!
//! - `sleep`: `std::thread::sleep` (a wait on the monotonic clock);
//! - `socket`: a TCP connection to `127.0.0.1:9`;
//! - `resolve`: a name lookup;
//! - `read-file`: reads `/etc/hostname`;
//! - `list-dir`: lists `/`;
//! - `exit`: `std::process::exit`;
//! - `env`: reads the environment, the arguments and the working directory,
//!   and logs what it saw;
//! - `stdout`: prints a line to stdout and one to stderr.
//!
//! Whatever happens, if the call comes back it answers `no-match` (and logs
//! an error the standard library reported), so the proxy's tests can show
//! what the sandbox did: a refused call fails, the harmless ones work.

use refractium_plugin_sdk::{Detector, Peer, Verdict, log};

pub struct Intruder {
    attempt: String,
}

impl Detector for Intruder {
    const NAME: &'static str = "intruder";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn new(config: &str) -> Result<Self, String> {
        let config: serde_json::Value = serde_json::from_str(config).map_err(|e| e.to_string())?;
        let attempt = config.get("try").and_then(|t| t.as_str()).ok_or("config needs `try`")?;
        Ok(Intruder { attempt: attempt.to_string() })
    }

    fn detect(&self, _data: &[u8], _peer: &Peer) -> Verdict {
        let outcome = match self.attempt.as_str() {
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_millis(50));
                Ok("slept".to_string())
            }
            "socket" => std::net::TcpStream::connect("127.0.0.1:9").map(|_| "connected".to_string()),
            "resolve" => {
                use std::net::ToSocketAddrs as _;
                "localhost:80".to_socket_addrs().map(|a| format!("resolved {} addresses", a.count()))
            }
            "read-file" => std::fs::read("/etc/hostname").map(|b| format!("read {} bytes", b.len())),
            "list-dir" => std::fs::read_dir("/").map(|d| format!("listed {} entries", d.count())),
            "exit" => std::process::exit(3),
            "env" => {
                let cwd = std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_else(|_| "none".into());
                Ok(format!(
                    "saw {} environment variables, {} arguments, working directory {cwd}",
                    std::env::vars_os().count(),
                    std::env::args_os().count()
                ))
            }
            "stdout" => {
                println!("intruder writes to stdout");
                eprintln!("intruder writes to stderr");
                Ok("printed".to_string())
            }
            other => Ok(format!("nothing to try for `{other}`")),
        };
        match outcome {
            Ok(what) => log::info(&format!("intruder: {what}")),
            Err(err) => log::error(&format!("intruder: {} failed: {err}", self.attempt)),
        }
        Verdict::NoMatch
    }
}

refractium_plugin_sdk::export_detector!(Intruder);
