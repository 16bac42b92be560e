//! The proxies under test and the configs the bench writes for them: each
//! listens on a fresh loopback port, sends everything to the one backend,
//! routes TLS by SNI and HTTP by protocol where it can, waits up to 3 s for
//! a first flight, and runs one worker ([`Workers::One`]) or the count each
//! proxy picks when none is configured ([`Workers::Default`]). Also nginx
//! `stream` relaying UDP, for the UDP rows.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::procs::{self, Group};

/// A running proxy: its name, where it listens, its process group.
pub struct Proxy {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub version: String,
    pub group: Group,
}

/// Which proxy to start.
#[derive(Clone, Debug)]
pub enum Kind {
    Refractium(PathBuf),
    /// refractium with a hook on its routes.
    Hooked(PathBuf, Hook),
    Haproxy(PathBuf),
    Nginx(PathBuf),
}

/// The hook a hooked refractium runs.
#[derive(Clone, Debug)]
pub enum Hook {
    /// A plugin file that forwards every chunk unchanged (the test suite's
    /// `testhook`, written with the SDK), on every route.
    Identity(PathBuf),
    /// The built-in `http-headers`, with its defaults, on the `http` route.
    HttpHeaders,
}

impl Kind {
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Refractium(_) => "refractium",
            Kind::Hooked(_, Hook::Identity(_)) => IDENTITY,
            Kind::Hooked(_, Hook::HttpHeaders) => HTTP_HEADERS,
            Kind::Haproxy(_) => "haproxy",
            Kind::Nginx(_) => "nginx",
        }
    }
}

/// How many workers a proxy runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workers {
    /// One: `runtime.workers: 1`, `nbthread 1`, `worker_processes 1`.
    One,
    /// What each does unconfigured: refractium one per core (no `runtime`
    /// section), HAProxy all cores (no `nbthread`), nginx `worker_processes auto`.
    Default,
}

/// The names of the hooked targets.
pub const IDENTITY: &str = "refractium+identity";
pub const HTTP_HEADERS: &str = "refractium+http-headers";

/// Where `cargo build -p refractium` leaves the test suite's `testhook`
/// next to the binary `refractium` (`target/release/refractium`).
pub fn identity_hook(refractium: &Path) -> Option<PathBuf> {
    let target = refractium.parent()?.parent()?;
    let file = target.join("wasm-plugins/wasm32-wasip2/plugin/refractium_test_testhook.wasm");
    file.is_file().then_some(file)
}

/// Write the config for `kind` into `dir`, start it, wait until it proxies.
/// `nofile` is the fd limit the children inherit (HAProxy sizes `maxconn` to it).
pub fn start(kind: &Kind, backend: u16, dir: &Path, nofile: u64) -> Result<Proxy> {
    start_with(kind, backend, dir, nofile, &[], Duration::from_secs(15))
}

/// [`start`] with each proxy's default worker count ([`Workers::Default`]).
pub fn start_default_workers(kind: &Kind, backend: u16, dir: &Path, nofile: u64) -> Result<Proxy> {
    launch(kind, backend, dir, nofile, &[], Duration::from_secs(15), Workers::Default)
}

/// [`start`], with the proxy's command run under `wrap` (a tool and its
/// arguments, e.g. valgrind) when not empty, and `ready` to start in. nginx
/// then runs without a master process, so that the wrapped process is the
/// one that serves.
pub fn start_with(
    kind: &Kind,
    backend: u16,
    dir: &Path,
    nofile: u64,
    wrap: &[String],
    ready: Duration,
) -> Result<Proxy> {
    launch(kind, backend, dir, nofile, wrap, ready, Workers::One)
}

fn launch(
    kind: &Kind,
    backend: u16,
    dir: &Path,
    nofile: u64,
    wrap: &[String],
    ready: Duration,
    workers: Workers,
) -> Result<Proxy> {
    let name = kind.name();
    let port = procs::free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let conf = dir.join(format!("{name}.conf"));
    let log = Some(dir.join(format!("{name}.log")));
    let (text, cmd, version) = match kind {
        Kind::Refractium(bin) => {
            let mut cmd = Command::new(bin);
            cmd.arg("run").arg("-c").arg(&conf).current_dir(dir);
            (refractium_yaml(port, backend, None, workers), cmd, procs::first_line(bin, "--version"))
        }
        Kind::Hooked(bin, hook) => {
            let mut cmd = Command::new(bin);
            cmd.arg("run").arg("-c").arg(&conf).current_dir(dir);
            let plugins = dir.join(format!("{name}.plugins"));
            fs::create_dir_all(&plugins).with_context(|| format!("creating {}", plugins.display()))?;
            if let Hook::Identity(file) = hook {
                fs::copy(file, plugins.join("identity.wasm")).with_context(|| format!("copying {}", file.display()))?;
            }
            let yaml = refractium_yaml(port, backend, Some((hook, &plugins)), workers);
            (yaml, cmd, procs::first_line(bin, "--version"))
        }
        Kind::Haproxy(bin) => {
            let mut cmd = Command::new(bin);
            cmd.arg("-db").arg("-f").arg(&conf);
            let maxconn = haproxy_maxconn(nofile);
            let version = format!("{} (maxconn {maxconn})", procs::first_line(bin, "-v"));
            (haproxy_cfg(port, backend, maxconn, workers), cmd, version)
        }
        Kind::Nginx(bin) => {
            let mut cmd = Command::new(bin);
            cmd.arg("-p").arg(dir).arg("-c").arg(&conf).arg("-e").arg("stderr");
            let module = nginx_stream_module(bin)?;
            // Wrapped, the process that serves must be the one started.
            let master = wrap.is_empty();
            let text = nginx_conf(port, backend, dir, module.as_deref(), nofile, master, workers);
            (text, cmd, procs::first_line(bin, "-v"))
        }
    };
    let cmd = match wrap.split_first() {
        None => cmd,
        Some((tool, args)) => {
            let mut wrapped = Command::new(tool);
            wrapped.args(args).arg(cmd.get_program()).args(cmd.get_args());
            if let Some(cwd) = cmd.get_current_dir() {
                wrapped.current_dir(cwd);
            }
            wrapped
        }
    };
    fs::write(&conf, text).with_context(|| format!("writing {}", conf.display()))?;
    let mut group = Group::spawn(name, cmd, log)?;
    procs::wait_ready(&mut group, addr, ready)?;
    Ok(Proxy { name, addr, version, group })
}

/// DESIGN.md §5: one TCP listener, `http` and `tls` routes, a default route;
/// with `hooked`, a hook on the routes and where the plugin files are.
pub fn refractium_yaml(port: u16, backend: u16, hooked: Option<(&Hook, &Path)>, workers: Workers) -> String {
    let runtime = match workers {
        Workers::One => "runtime: { workers: 1 }\n",
        Workers::Default => "",
    };
    let (all, http, plugins) = match hooked {
        None => ("", "", String::new()),
        Some((Hook::Identity(_), dir)) => ("\n    hooks: [identity]", "\n    hooks: [identity]", plugins_dir(dir)),
        Some((Hook::HttpHeaders, dir)) => ("", "\n    hooks: [http-headers]", plugins_dir(dir)),
    };
    format!(
        "\
listeners:
  - name: bench
    bind: 127.0.0.1:{port}
    transport: tcp
    detectors: [tls, http2, http, ssh]
    detect: {{ max_bytes: 4096, timeout: 3s }}
    on_timeout: other
    default: other

routes:
  - name: tls
    match: {{ protocol: tls, sni: \"bench.example\" }}{all}
    to: backend
  - name: http
    match: {{ protocol: http }}{http}
    to: backend
  - name: other{all}
    to: backend

backends:
  backend:
    servers: [127.0.0.1:{backend}]
    connect_timeout: 3s

limits: {{ max_connections: 100000, max_connections_per_ip: 100000, idle_timeout: 10m }}
{runtime}log: {{ level: warn }}
{plugins}"
    )
}

fn plugins_dir(dir: &Path) -> String {
    format!("plugins: {{ dir: {:?} }}\n", dir.display().to_string())
}

/// 100,000 as asked, or what the fd limit allows: HAProxy refuses to start
/// when it cannot get its 2 fds per connection plus splice pipes (≈ 2.5 per
/// connection), and nobody raises a hard limit without CAP_SYS_RESOURCE.
fn haproxy_maxconn(nofile: u64) -> u64 {
    100_000.min(nofile.saturating_sub(1000) * 2 / 5).max(1000)
}

/// The `load_module` path nginx needs for `stream`, `None` when built in.
pub fn nginx_stream_module(bin: &Path) -> Result<Option<PathBuf>> {
    let out = Command::new(bin).arg("-V").output().context("nginx -V")?;
    let conf = String::from_utf8_lossy(&[out.stdout, out.stderr].concat()).to_string();
    if conf.split_whitespace().any(|w| w == "--with-stream") {
        return Ok(None);
    }
    if !conf.contains("--with-stream=dynamic") {
        bail!("this nginx is built without the stream module");
    }
    ["/usr/lib/nginx/modules", "/usr/share/nginx/modules", "/usr/lib64/nginx/modules"]
        .iter()
        .map(|d| Path::new(d).join("ngx_stream_module.so"))
        .find(|p| p.is_file())
        .map(Some)
        .context("nginx's stream module is not installed (Debian: apt-get install libnginx-mod-stream)")
}

/// HAProxy in TCP mode: wait up to 3 s for a TLS hello or an HTTP request
/// (anything longer than 4 bytes passes too), route on SNI / protocol.
pub fn haproxy_cfg(port: u16, backend: u16, maxconn: u64, workers: Workers) -> String {
    let nbthread = match workers {
        Workers::One => "    nbthread 1\n",
        Workers::Default => "",
    };
    format!(
        "\
global
{nbthread}    maxconn {maxconn}

defaults
    mode tcp
    timeout connect 3s
    timeout client 10m
    timeout server 10m
    option splice-auto

frontend bench
    bind 127.0.0.1:{port}
    tcp-request inspect-delay 3s
    tcp-request content accept if {{ req.ssl_hello_type 1 }}
    tcp-request content accept if HTTP
    tcp-request content accept if {{ req.len gt 4 }}
    use_backend be_tls if {{ req.ssl_sni -i bench.example }}
    use_backend be_http if HTTP
    default_backend be_other

backend be_tls
    server s1 127.0.0.1:{backend}

backend be_http
    server s1 127.0.0.1:{backend}

backend be_other
    server s1 127.0.0.1:{backend}
"
    )
}

/// nginx `stream` with `ssl_preread`, one worker (or `auto`), SNI mapped to the upstream.
/// Without `master`, the process started is the one that serves
/// (`master_process off`), as a wrapper such as callgrind needs.
pub fn nginx_conf(
    port: u16,
    backend: u16,
    dir: &Path,
    module: Option<&Path>,
    nofile: u64,
    master: bool,
    workers: Workers,
) -> String {
    let pid = dir.join("nginx.pid");
    let load = module.map(|m| format!("load_module {};\n", m.display())).unwrap_or_default();
    let master = if master { "" } else { "master_process off;\n" };
    let workers = match workers {
        Workers::One => "1",
        Workers::Default => "auto",
    };
    format!(
        "\
{load}worker_processes {workers};
worker_rlimit_nofile {nofile};
daemon off;
{master}error_log stderr warn;
pid {pid};

events {{
    worker_connections 20000;
}}

stream {{
    upstream backend {{
        server 127.0.0.1:{backend};
    }}
    map $ssl_preread_server_name $up {{
        bench.example backend;
        default backend;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=65535;
        ssl_preread on;
        proxy_connect_timeout 3s;
        proxy_timeout 10m;
        proxy_half_close on;
        proxy_pass $up;
    }}
}}
",
        pid = pid.display()
    )
}

/// nginx `stream` relaying UDP on `port` to `echo`, one worker. No
/// `proxy_responses`: a session takes any number of replies and lasts until
/// `proxy_timeout` passes without a datagram (with `proxy_responses 1` every
/// reply would end it, and each datagram would open an upstream socket). 10
/// minutes is longer than a run, so no cell sees its sessions torn down.
pub fn nginx_udp_conf(port: u16, echo: SocketAddr, dir: &Path, module: Option<&Path>, nofile: u64) -> String {
    let pid = dir.join("nginx.pid");
    let load = module.map(|m| format!("load_module {};\n", m.display())).unwrap_or_default();
    format!(
        "\
{load}worker_processes 1;
worker_rlimit_nofile {nofile};
daemon off;
error_log stderr warn;
pid {pid};

events {{
    worker_connections 20000;
}}

stream {{
    server {{
        listen 127.0.0.1:{port} udp;
        proxy_timeout 10m;
        proxy_pass {echo};
    }}
}}
",
        pid = pid.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_workers_leave_the_count_to_each_proxy() {
        let dir = Path::new("/nonexistent");
        assert!(refractium_yaml(1, 2, None, Workers::One).contains("runtime: { workers: 1 }\n"));
        assert!(!refractium_yaml(1, 2, None, Workers::Default).contains("runtime"));
        assert!(haproxy_cfg(1, 2, 1000, Workers::One).contains("    nbthread 1\n"));
        assert!(!haproxy_cfg(1, 2, 1000, Workers::Default).contains("nbthread"));
        assert!(nginx_conf(1, 2, dir, None, 1000, true, Workers::One).contains("worker_processes 1;"));
        assert!(nginx_conf(1, 2, dir, None, 1000, true, Workers::Default).contains("worker_processes auto;"));
    }

    #[test]
    fn nginx_udp_keeps_a_session_for_every_reply() {
        let conf = nginx_udp_conf(1, ([127, 0, 0, 1], 2).into(), Path::new("/nonexistent"), None, 1000);
        assert!(conf.contains("listen 127.0.0.1:1 udp;"), "{conf}");
        assert!(conf.contains("proxy_pass 127.0.0.1:2;"), "{conf}");
        assert!(!conf.contains("proxy_responses"), "{conf}");
    }
}
