//! Kubernetes: the manifests in `config/kubernetes`, the readiness probe,
//! and a ConfigMap update as the kubelet makes it (a swap of `..data`).

use crate::support::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

/// Status line and body of `GET path` on the admin listener.
fn admin(proxy: &Proxy, path: &str) -> (String, String) {
    let line = proxy.wait_log(10, |v| v["message"] == "admin listening");
    let mut c = TcpStream::connect(line["addr"].as_str().expect("admin addr")).expect("connect admin");
    write!(c, "GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").expect("write");
    let mut out = String::new();
    c.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let _ = c.read_to_string(&mut out);
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (head.lines().next().unwrap_or_default().to_string(), body.to_string())
}

#[test]
fn ready_answers_while_serving_and_not_while_draining() {
    let backend = Backend::start(Reply::Http("web"));
    let mut proxy = Proxy::start(&format!(
        r#"
listeners:
  - name: edge
    bind: 127.0.0.1:0
    detectors: [http]
    detect: {{ timeout: 20s }}
routes:
  - name: web
    match: {{ protocol: http }}
    to: web
backends:
  web: {{ servers: [{}] }}
limits: {{ drain_timeout: 20s }}
admin: {{ bind: 127.0.0.1:0 }}
"#,
        backend.addr
    ));
    assert_eq!(admin(&proxy, "/ready"), ("HTTP/1.1 200 OK".into(), "ready\n".into()));
    assert_eq!(admin(&proxy, "/live").0, "HTTP/1.1 200 OK");
    // A client still sending its request keeps the proxy draining.
    let mut held = TcpStream::connect(proxy.addr("edge")).expect("connect");
    held.write_all(b"GET / HTTP/1.1\r\n").expect("write");
    proxy.wait_metric(10, "refractium_tcp_connections_open", |open| open == 1);
    proxy.signal("TERM");
    proxy.wait_log(10, |v| v["message"] == "stopped accepting; waiting for open connections");
    assert_eq!(admin(&proxy, "/ready").0, "HTTP/1.1 503 Service Unavailable");
    assert_eq!(admin(&proxy, "/live").0, "HTTP/1.1 200 OK", "alive while draining");
    held.write_all(b"Host: x\r\nConnection: close\r\n\r\n").expect("finish the request");
    assert!(reply(&mut held).ends_with("web"), "the held client is served while draining");
    drop(held);
    assert!(proxy.wait_exit(30).is_some_and(|s| s.success()));
}

/// A directory laid out as the kubelet mounts a ConfigMap: each key a link
/// through `..data`, which links to a timestamped directory.
struct Mount {
    dir: tempfile::TempDir,
    generation: usize,
}

impl Mount {
    fn new(files: &[(&str, &[u8])]) -> Mount {
        let mut mount = Mount { dir: tempfile::tempdir().expect("tempdir"), generation: 0 };
        mount.update(files);
        for (name, _) in files {
            std::os::unix::fs::symlink(Path::new("..data").join(name), mount.dir.path().join(name)).expect("key link");
        }
        mount
    }

    /// Write a new generation and swap `..data` to it atomically, as the
    /// kubelet's atomic writer does: a new link `..data_tmp`, renamed over
    /// `..data`, then the old generation removed.
    fn update(&mut self, files: &[(&str, &[u8])]) {
        self.generation += 1;
        let old = format!("..2026_12_07_00_00_0{}.000000001", self.generation - 1);
        let new = format!("..2026_12_07_00_00_0{}.000000001", self.generation);
        let root = self.dir.path();
        std::fs::create_dir(root.join(&new)).expect("generation dir");
        for (name, text) in files {
            std::fs::write(root.join(&new).join(name), text).expect("write key");
        }
        std::os::unix::fs::symlink(&new, root.join("..data_tmp")).expect("..data_tmp");
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).expect("swap ..data");
        if self.generation > 1 {
            std::fs::remove_dir_all(root.join(old)).expect("remove the old generation");
        }
    }
}

#[test]
fn a_configmap_update_swapping_data_is_reloaded() {
    let (a, b) = (Backend::start(Reply::Http("a")), Backend::start(Reply::Http("b")));
    let config = |to: &str| {
        format!(
            "listeners:\n  - name: edge\n    bind: 127.0.0.1:0\n    detectors: [http]\nroutes:\n  - name: web\n    match: {{ protocol: http }}\n    to: {to}\nbackends:\n  a: {{ servers: [{}] }}\n  b: {{ servers: [{}] }}\nlog: {{ level: \"info,refractium=debug\", format: json }}\nplugins: {{ limits: {{ call_timeout: 1s }} }}\n",
            a.addr, b.addr
        )
    };
    let mut mount = Mount::new(&[("refractium.yaml", config("a").as_bytes())]);
    let file = mount.dir.path().join("refractium.yaml");
    let proxy = Proxy::start_with(tempfile::tempdir().expect("tempdir"), &config("a"), |_| {
        let mut run = Command::new(bin());
        run.args(["run", "-c"]).arg(&file).stdin(Stdio::null());
        run
    });
    assert!(proxy.exchange("edge", GET).ends_with("a"));
    mount.update(&[("refractium.yaml", config("b").as_bytes())]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !proxy.exchange("edge", GET).ends_with("b") {
        assert!(Instant::now() < deadline, "the swap was not reloaded:\n{}", proxy.output());
        std::thread::sleep(Duration::from_millis(50));
    }
    let reloaded = proxy.logs_where(|v| v["message"] == "reloading");
    assert_eq!(reloaded.len(), 1, "one reload for one swap: {reloaded:?}");
    assert_eq!(reloaded[0]["via"], "file change");
}

/// The documents of the manifest file, by kind.
fn manifests() -> Vec<serde_yaml::Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/kubernetes/refractium.yaml");
    let text = std::fs::read_to_string(path).expect("manifests");
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("a YAML document"))
        .collect()
}

#[test]
fn the_kubernetes_manifests_parse_and_agree_with_the_config_they_carry() {
    let docs = manifests();
    let kind = |k: &str| docs.iter().find(|d| d["kind"] == k).unwrap_or_else(|| panic!("no {k}")).clone();
    let (map, deploy, service) = (kind("ConfigMap"), kind("Deployment"), kind("Service"));

    // The ConfigMap carries a plugin file: base64 that decodes to a
    // WebAssembly component.
    let config_text = map["data"]["refractium.yaml"].as_str().expect("data.refractium.yaml");
    let binary = map["binaryData"].as_mapping().expect("binaryData");
    assert!(!binary.is_empty(), "no plugin file in binaryData");
    let mut files: Vec<(String, Vec<u8>)> = vec![("refractium.yaml".into(), config_text.as_bytes().to_vec())];
    for (name, data) in binary {
        let name = name.as_str().expect("a key");
        assert!(name.ends_with(".wasm"), "{name}: plugins.dir loads *.wasm files");
        assert!(map["data"].get(name).is_none(), "{name} is in data and binaryData");
        let wasm = base64(data.as_str().expect("base64 text")).unwrap_or_else(|| panic!("{name}: not base64"));
        assert_eq!(wasm.get(..8), Some(&b"\0asm\x0d\x00\x01\x00"[..]), "{name}: a WebAssembly component");
        files.push((name.to_string(), wasm));
    }

    // Mounted as the kubelet mounts it, the config checks: its plugin
    // directory is the mount, so the detector it names from binaryData
    // loads (check fails on a detector it does not know).
    let config: serde_yaml::Value = serde_yaml::from_str(config_text).expect("config YAML");
    assert_eq!(config["plugins"]["dir"], ".", "plugin files are found beside the config");
    let detectors = config["listeners"][0]["detectors"].as_sequence().expect("detectors");
    assert!(detectors.iter().any(|d| d == "wat-hi"), "the config uses the plugin it carries");
    let mount = Mount::new(&files.iter().map(|(n, d)| (n.as_str(), d.as_slice())).collect::<Vec<_>>());
    let file = mount.dir.path().join("refractium.yaml");
    let (ok, out, err) =
        run_cmd(Command::new(bin()).args(["check", "-c"]).arg(&file).env("REFRACTIUM_CACHE_DIR", cache_dir()), 120);
    assert!(ok, "refractium check on the ConfigMap's config failed:\n{out}\n{err}");
    // And it recognises what it is for.
    let capture = tempfile::tempdir().expect("tempdir");
    std::fs::write(capture.path().join("hello.bin"), b"WAT! hello\n").expect("capture");
    let (ok, out, err) = run_cmd(
        Command::new(bin())
            .args(["detect", "-c"])
            .arg(&file)
            .arg(capture.path().join("hello.bin"))
            .env("REFRACTIUM_CACHE_DIR", cache_dir()),
        120,
    );
    let verdict: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|_| panic!("{out}{err}"));
    assert!(ok && verdict["protocol"] == "wat-hi", "{out}{err}");
    let port_of = |bind: &serde_yaml::Value| -> u64 {
        bind.as_str().and_then(|b| b.rsplit_once(':')).and_then(|(_, p)| p.parse().ok()).expect("bind IP:port")
    };

    // The Deployment runs that file, from where the ConfigMap is mounted.
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(deploy["spec"]["selector"]["matchLabels"], deploy["spec"]["template"]["metadata"]["labels"]);
    let container = &pod["containers"][0];
    let volume = pod["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .find(|v| v["configMap"]["name"] == map["metadata"]["name"]);
    let volume = volume.expect("a volume of the ConfigMap");
    let mount = container["volumeMounts"].as_sequence().expect("mounts").iter().find(|m| m["name"] == volume["name"]);
    let mount_path = mount.expect("the ConfigMap is mounted")["mountPath"].as_str().expect("mountPath");
    let args: Vec<&str> = container["args"].as_sequence().expect("args").iter().filter_map(|a| a.as_str()).collect();
    assert_eq!(args, ["run", "-c", &format!("{mount_path}/refractium.yaml")]);

    // Ports: the listener's and the admin listener's, named for the probes and the Service.
    let ports = container["ports"].as_sequence().expect("ports");
    let port = |name: &str| -> u64 {
        let p = ports.iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("no container port {name}"));
        p["containerPort"].as_u64().expect("containerPort")
    };
    assert_eq!(port("edge"), port_of(&config["listeners"][0]["bind"]));
    assert_eq!(port("admin"), port_of(&config["admin"]["bind"]));
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/live");
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(container[probe]["httpGet"]["port"], "admin", "{probe}");
    }
    let cache = container["env"].as_sequence().expect("env").iter().find(|e| e["name"] == "REFRACTIUM_CACHE_DIR");
    let cache_mount = container["volumeMounts"].as_sequence().expect("mounts").iter().find(|m| m["name"] == "cache");
    assert_eq!(cache.expect("cache env")["value"], cache_mount.expect("cache mount")["mountPath"]);

    // The Service selects the pods and targets the listener's port, not the admin one.
    assert_eq!(service["spec"]["selector"], deploy["spec"]["template"]["metadata"]["labels"]);
    let targets: Vec<_> =
        service["spec"]["ports"].as_sequence().expect("ports").iter().map(|p| p["targetPort"].clone()).collect();
    assert_eq!(targets, [serde_yaml::Value::from("edge")]);
    assert!(config["listeners"][0]["accept_proxy"]["from"].is_sequence(), "behind the Service's balancer, PROXY in");

    // Deleted, a pod keeps serving while the endpoints' change spreads
    // (preStop), then drains, all within its grace period.
    let sleep = container["lifecycle"]["preStop"]["exec"]["command"].as_sequence().expect("a preStop command");
    let sleep: Vec<&str> = sleep.iter().filter_map(|a| a.as_str()).collect();
    let [program, seconds] = sleep[..] else { panic!("preStop: {sleep:?}") };
    assert_eq!(program, "/bin/sleep");
    let seconds: u64 = seconds.parse().expect("seconds");
    let drain = config["limits"]["drain_timeout"].as_str().map_or(30, |d| d.trim_end_matches('s').parse().expect("s"));
    let grace = pod["terminationGracePeriodSeconds"].as_u64().expect("terminationGracePeriodSeconds");
    assert!(seconds >= 5 && grace > seconds + drain, "preStop {seconds} s + drain {drain} s within {grace} s");

    // The image: the release binary, run as the user the pod asks for,
    // with the cache where the pod mounts it; the build context is the
    // binary alone.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/kubernetes");
    let dockerfile = std::fs::read_to_string(dir.join("Dockerfile")).expect("config/kubernetes/Dockerfile");
    let instructions: Vec<(&str, &str)> = dockerfile
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split_once(' '))
        .collect();
    let get = |key: &str| -> Vec<&str> { instructions.iter().filter(|(k, _)| *k == key).map(|(_, v)| *v).collect() };
    assert!(get("FROM")[0].starts_with("debian:"), "a base with /bin/sleep for preStop: {:?}", get("FROM"));
    assert_eq!(get("COPY"), ["target/release/refractium /usr/local/bin/refractium"]);
    assert_eq!(get("ENTRYPOINT"), [r#"["/usr/local/bin/refractium"]"#], "the Deployment's args follow it");
    let uid = pod["containers"][0]["securityContext"]["runAsUser"].as_u64().expect("runAsUser");
    assert_eq!(get("USER"), [format!("{uid}:{uid}").as_str()]);
    let cache_dir = cache_mount.expect("cache mount")["mountPath"].as_str().expect("mountPath");
    assert_eq!(get("ENV"), [format!("REFRACTIUM_CACHE_DIR={cache_dir}").as_str()]);
    let ignore = std::fs::read_to_string(dir.join("Dockerfile.dockerignore")).expect("Dockerfile.dockerignore");
    let ignore: Vec<&str> = ignore.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).collect();
    assert_eq!(ignore, ["*", "!target/release/refractium"]);
}

/// Standard base64 (line breaks skipped, as Kubernetes decodes
/// `binaryData`); `None` when it is not.
fn base64(text: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let text: Vec<u8> = text.bytes().filter(|b| !b"\r\n".contains(b)).collect();
    if !text.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    for chunk in text.chunks(4) {
        let pad = chunk.iter().rev().take_while(|&&b| b == b'=').count();
        if pad > 2 {
            return None;
        }
        let mut n = 0u32;
        for &b in &chunk[..4 - pad] {
            n = n << 6 | ALPHABET.iter().position(|&a| a == b)? as u32;
        }
        n <<= 6 * pad as u32;
        out.extend_from_slice(&n.to_be_bytes()[1..4 - pad]);
    }
    Some(out)
}
