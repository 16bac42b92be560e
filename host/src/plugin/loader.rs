//! Which plugins a snapshot runs: the built-ins embedded in the binary, then
//! every `*.wasm` file of `plugins.dir`, each a detector, a hook or both
//! (by the interfaces it exports). A file named like a built-in detector
//! (`tls.wasm`) replaces it in place; a file that fails to load is reported
//! by path with the reason and skipped.

use super::background::{self, Ready};
use super::detector::{DetectorPlugin, Pre};
use super::hook::{HookPlugin, HookPre};
use super::{cache, component, direct};
use crate::config::Config;
use anyhow::Context as _;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wasmtime::component::Component;

pub(super) mod builtin {
    include!(concat!(env!("OUT_DIR"), "/builtins.rs"));
}

/// Where a plugin came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Embedded in the binary.
    Builtin,
    /// Loaded from this file.
    File(PathBuf),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Builtin => f.write_str("builtin"),
            Source::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// A plugin file that could not be loaded.
#[derive(Debug, Clone)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

/// The loaded plugins of one snapshot.
pub struct PluginSet {
    /// Detectors in the default order: built-ins first (in their documented
    /// order, replaced in place by same-named files), then the other files of
    /// the plugins directory by file name.
    pub detectors: Vec<Arc<DetectorPlugin>>,
    /// Hooks, by file name.
    pub hooks: Vec<Arc<HookPlugin>>,
    /// Files of the plugins directory that failed to load.
    pub skipped: Vec<Skipped>,
    /// Large files being compiled in the background, not in this set yet.
    pub compiling: Vec<Compiling>,
}

/// A plugin file being compiled in the background ([`background`]).
#[derive(Debug, Clone)]
pub struct Compiling {
    /// Its name (the file's stem).
    pub name: String,
    pub path: PathBuf,
    pub hash: String,
    pub since: std::time::SystemTime,
}

/// What one plugin file gave: a detector, a hook, or both.
struct Loaded {
    detector: Option<Arc<DetectorPlugin>>,
    hook: Option<Arc<HookPlugin>>,
}

/// Names of the built-in detectors in their default order.
pub fn builtin_names() -> Vec<&'static str> {
    builtin::BUILTINS.iter().map(|b| b.0).collect()
}

impl PluginSet {
    /// Load the built-ins and the plugins directory named by `config`.
    pub async fn load(config: &Config) -> anyhow::Result<PluginSet> {
        let cache_dir = config.plugins.cache_dir.clone().or_else(cache::default_dir);
        let limits = &config.plugins.limits;
        let config_json = |name: &str| -> anyhow::Result<String> {
            Ok(match config.plugins.config.get(name) {
                Some(value) => serde_json::to_string(value)?,
                None => "null".to_string(),
            })
        };
        let load_builtin = |name: &str, bytes: &[u8]| -> anyhow::Result<Arc<DetectorPlugin>> {
            // Our own code: called through its core module (see `direct`),
            // taken out of the component only when it must be compiled.
            let hash = cache::hash(bytes);
            let module = cache::compile(|| direct::main_module(bytes), &hash, cache_dir.as_deref())?;
            let pre = Pre::Direct(direct::Pre::new(&module).context("linking")?);
            let (memory, budget) = (limits.memory, limits.call_timeout);
            let mut plugin =
                DetectorPlugin::new(name, Source::Builtin, hash, pre, Vec::new(), config_json(name)?, memory, budget)?;
            plugin.learn_first_bytes();
            Ok(Arc::new(plugin))
        };
        let load_component = |name: &str,
                              source: Source,
                              hash: String,
                              bytes: &[u8],
                              component: Component|
         -> anyhow::Result<Loaded> {
            let (detects, hooks) = component::kinds(&component);
            if !detects && !hooks {
                anyhow::bail!("it exports neither refractium:plugin/detector@0.1.0 nor refractium:plugin/hook@0.1.0");
            }
            let (pre, refused) = component::link(&component)?;
            if !refused.is_empty() {
                tracing::warn!(
                    plugin = name,
                    path = %source,
                    imports = %refused.join(", "),
                    "plugin imports interfaces refractium does not grant; a call that uses them fails"
                );
            }
            let (json, memory, budget) = (config_json(name)?, limits.memory, limits.call_timeout);
            let detector = if detects {
                let component = component::Pre::new(pre.clone())?;
                let direct = if !config.plugins.direct_calls {
                    Err(anyhow::anyhow!("`plugins.direct_calls` is off"))
                } else {
                    direct::file_main_module(bytes)
                };
                let direct = direct.and_then(|module| {
                    let module = cache::compile(|| Ok(module), &hash, cache_dir.as_deref())?;
                    direct::Pre::for_file(&module).context("linking its main module")
                });
                let pre = match direct {
                    Ok(direct) => Pre::File { direct, component, direct_ok: true.into() },
                    Err(why) => {
                        tracing::debug!(plugin = name, reason = %format!("{why:#}"), "plugin called through its component");
                        Pre::Component(component)
                    }
                };
                let mut plugin = DetectorPlugin::new(
                    name,
                    source.clone(),
                    hash.clone(),
                    pre,
                    refused.clone(),
                    json.clone(),
                    memory,
                    budget,
                )?;
                plugin.learn_first_bytes();
                Some(Arc::new(plugin))
            } else {
                None
            };
            let hook = if hooks {
                // Called through its main module when that serves all its
                // imports (`direct::hook::file_module`); the module is
                // cached under the file's hash, as a detector's is, so a
                // file that is both must have one module for both.
                let direct = if !config.plugins.direct_calls {
                    Err(anyhow::anyhow!("`plugins.direct_calls` is off"))
                } else {
                    direct::hook::file_module(bytes).and_then(|module| {
                        if detects && direct::main_module(bytes)?.as_ptr() != module.as_ptr() {
                            anyhow::bail!("its detector and its hook are in different core modules");
                        }
                        let module = cache::compile(|| Ok(module), &hash, cache_dir.as_deref())?;
                        direct::Pre::for_hook_file(&module).context("linking its main module")
                    })
                };
                let (pre, why) = match direct {
                    Ok(direct) => (HookPre::Direct(direct), None),
                    Err(why) => {
                        let why = format!("{why:#}");
                        tracing::debug!(plugin = name, reason = %why, "hook called through its component");
                        (HookPre::component(pre)?, Some(why))
                    }
                };
                let watches = super::hook::declared_directions(bytes)?;
                let mut hook =
                    HookPlugin::new(name, source, hash, pre, refused, json, memory, budget)?.watching(watches);
                if let Some(why) = why {
                    hook = hook.through_component(why);
                }
                Some(Arc::new(hook))
            } else {
                None
            };
            Ok(Loaded { detector, hook })
        };

        let files = match &config.plugins.dir {
            Some(dir) => wasm_files(dir)?,
            None => Vec::new(),
        };
        let mut set =
            PluginSet { detectors: Vec::new(), hooks: Vec::new(), skipped: Vec::new(), compiling: Vec::new() };
        let mut loaded_files = Vec::new();
        for path in files {
            let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let ready = std::fs::read(&path).context("cannot read the file").and_then(|bytes| {
                let hash = cache::hash(&bytes);
                let ready = background::component(&name, &bytes, &hash, cache_dir.clone())?;
                Ok((hash, bytes, ready))
            });
            let result = match ready {
                Ok((hash, bytes, Ready::Now(component))) => {
                    load_component(&name, Source::File(path.clone()), hash, &bytes, component)
                }
                Ok((hash, _, Ready::Compiling(since))) => {
                    tracing::warn!(
                        plugin = %name,
                        path = %path.display(),
                        "plugin file is large and not compiled yet: compiling it in the background; it joins when ready"
                    );
                    set.compiling.push(Compiling { name, path, hash, since });
                    continue;
                }
                Err(err) => Err(err),
            };
            match result {
                Ok(loaded) => {
                    set.hooks.extend(loaded.hook);
                    if let Some(detector) = loaded.detector {
                        loaded_files.push((name, detector));
                    }
                }
                Err(err) => {
                    tracing::error!(path = %path.display(), reason = format!("{err:#}").as_str(), "plugin file skipped");
                    set.skipped.push(Skipped { path, reason: format!("{err:#}") });
                }
            }
        }
        for &(name, _package, bytes, tcp, udp) in builtin::BUILTINS {
            let mut plugin = match loaded_files.iter().position(|(n, _)| n == name) {
                Some(pos) => {
                    let (_, plugin) = loaded_files.remove(pos);
                    tracing::info!(plugin = name, path = %plugin.source, "plugin file replaces the built-in");
                    plugin
                }
                None => match load_builtin(name, bytes) {
                    Ok(plugin) => plugin,
                    // Most likely its `plugins.config` entry: say where that is.
                    Err(err) if config.plugins.config.contains_key(name) => {
                        let key = format!("plugins.config.{name}");
                        anyhow::bail!(
                            "{}",
                            config.problem_at(&key, format!("built-in plugin `{name}` failed to load: {err:#}"))
                        )
                    }
                    Err(err) => anyhow::bail!("built-in plugin `{name}` failed to load: {err:#}"),
                },
            };
            // A replacement serves what the built-in served.
            if let Some(p) = Arc::get_mut(&mut plugin) {
                (p.serves_tcp, p.serves_udp) = (tcp, udp);
            }
            set.detectors.push(plugin);
        }
        set.detectors.extend(loaded_files.into_iter().map(|(_, plugin)| plugin));
        for &(name, _package, bytes) in builtin::BUILTIN_HOOKS {
            if set.hooks.iter().any(|h| h.name() == name) {
                tracing::info!(plugin = name, "plugin file replaces the built-in hook");
                continue;
            }
            // Our own code: called through its core module, as the
            // built-in detectors are.
            let hash = cache::hash(bytes);
            let loaded =
                cache::compile(|| direct::hook::main_module(bytes), &hash, cache_dir.as_deref()).and_then(|module| {
                    let pre = HookPre::Direct(direct::Pre::new(&module).context("linking")?);
                    let (json, memory, budget) = (config_json(name)?, limits.memory, limits.call_timeout);
                    let watches = super::hook::declared_directions(bytes)?;
                    Ok(HookPlugin::new(name, Source::Builtin, hash, pre, Vec::new(), json, memory, budget)?
                        .watching(watches))
                });
            match loaded {
                Ok(hook) => set.hooks.push(Arc::new(hook)),
                Err(err) if config.plugins.config.contains_key(name) => {
                    let key = format!("plugins.config.{name}");
                    anyhow::bail!(
                        "{}",
                        config.problem_at(&key, format!("built-in hook `{name}` failed to load: {err:#}"))
                    )
                }
                Err(err) => anyhow::bail!("built-in hook `{name}` failed to load: {err:#}"),
            }
        }
        // What is being compiled stays too: its thread puts it in the cache.
        let hashes = set.detectors.iter().map(|d| d.hash.as_str()).chain(set.hooks.iter().map(|h| h.hash.as_str()));
        cache::retain(&hashes.chain(set.compiling.iter().map(|c| c.hash.as_str())).collect());
        Ok(set)
    }

    /// The hook called `name`.
    pub fn hook(&self, name: &str) -> Option<&Arc<HookPlugin>> {
        self.hooks.iter().find(|h| h.name() == name)
    }

    /// Detectors serving `udp` (else TCP) listeners, in the default order.
    pub fn detectors_for(&self, udp: bool) -> Vec<Arc<DetectorPlugin>> {
        self.detectors.iter().filter(|d| if udp { d.serves_udp } else { d.serves_tcp }).cloned().collect()
    }

    /// The detector called `name`.
    pub fn detector(&self, name: &str) -> Option<&Arc<DetectorPlugin>> {
        use super::detector::Detect as _;
        self.detectors.iter().find(|d| d.name() == name)
    }
}

/// `*.wasm` files of `dir`, sorted by name. A missing directory is empty.
fn wasm_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            tracing::debug!(dir = %dir.display(), "plugins directory does not exist; built-ins only");
            return Ok(Vec::new());
        }
        Err(err) => return Err(err).with_context(|| format!("cannot read plugins directory {}", dir.display())),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "wasm") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::PluginSet;
    use crate::plugin::detector::Detect;

    /// The first-byte tables of the built-ins are learned, and say what the
    /// protocols say: a TLS record starts with 0x16, an HTTP request with a
    /// method, the HTTP/2 preface with `P`.
    #[tokio::test]
    async fn builtins_learn_which_first_bytes_they_turn_down() {
        let plugins = PluginSet::load(&crate::config::Config::default()).await.expect("built-ins load");
        let get = |name: &str| plugins.detector(name).expect("built-in present");
        let (tls, http, http2, ssh) = (get("tls"), get("http"), get("http2"), get("ssh"));
        assert!(!tls.rules_out(0x16) && tls.rules_out(b'G'));
        assert!(http.rules_out(0x16) && !http.rules_out(b'G') && !http.rules_out(b'P'));
        assert!(http2.rules_out(b'G') && !http2.rules_out(b'P'));
        assert!(ssh.rules_out(b'G') && !ssh.rules_out(b'S'));
        // `pattern` without rules matches nothing, whatever the first byte.
        assert!((0..=255).all(|b| get("pattern").rules_out(b)));
    }

    /// Built-ins run on the direct path, with the standard library's WASI
    /// imports stubbed: `pattern` compiles its regular expressions
    /// (seeding hash maps from `wasi:random/insecure-seed`) and matches.
    #[tokio::test]
    async fn a_builtin_with_rules_runs_on_the_direct_path() {
        let yaml = "listeners:\n  - name: edge\n    bind: 127.0.0.1:0\n    default: web\nroutes:\n  - name: web\n    to: web\nbackends:\n  web: { servers: [127.0.0.1:1] }\nplugins:\n  config:\n    pattern:\n      rules:\n        - protocol: irc\n          regex: '^(NICK|USER) [^\\r\\n]*\\r\\n'\n";
        let config = crate::config::parse(yaml, std::path::Path::new("test.yaml")).expect("config");
        let plugins = PluginSet::load(&config).await.expect("built-ins load");
        let pattern = plugins.detector("pattern").expect("pattern");
        let peer = crate::plugin::detector::Peer::new("127.0.0.1:1", "127.0.0.1:2", "t", false);
        match pattern.detect(b"NICK refractium\r\n", &peer) {
            Ok(crate::plugin::Verdict::Matched(d)) => assert_eq!(d.protocol, "irc"),
            other => panic!("expected a match, got {other:?}"),
        }
        assert_eq!(pattern.detect(b"GET / HTTP/1.1\r\n\r\n", &peer), Ok(crate::plugin::Verdict::NoMatch));
    }
}

/// The direct path ([`direct`]) against the component path, on the same bytes.
#[cfg(test)]
mod direct_tests {
    use super::{DetectorPlugin, PluginSet, Pre, Source, builtin, cache, component};
    use crate::plugin::Verdict;
    use crate::plugin::detector::{Detect, Peer, Wanted};
    use std::path::{Path, PathBuf};

    /// The `pattern` config of the comparison, as `init` gets it.
    const PATTERN_JSON: &str = r#"{"rules":[{"protocol":"irc","regex":"^(NICK|USER) [^\\r\\n]*\\r\\n"}]}"#;

    /// Every file under `dir`, recursively.
    fn files(dir: &Path) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).expect("corpus directory").filter_map(Result::ok) {
            let path = entry.path();
            if path.is_dir() {
                found.extend(files(&path));
            } else if path.extension().is_some_and(|e| e == "bin") {
                found.push(path);
            }
        }
        found.sort();
        found
    }

    /// The plugin `name` made of `bytes`, as a plugin file called through
    /// its component alone.
    fn component_only(name: &str, bytes: &[u8], config_json: &str) -> DetectorPlugin {
        let hash = cache::hash(bytes);
        let compiled: wasmtime::component::Component = cache::compile(|| Ok(bytes), &hash, None).expect("compile");
        let (pre, _) = component::link(&compiled).expect("link");
        let pre = Pre::Component(component::Pre::new(pre).expect("a detector"));
        let (source, budget) = (Source::File(PathBuf::from(name)), std::time::Duration::from_secs(1));
        DetectorPlugin::new(name, source, hash, pre, Vec::new(), config_json.into(), 64 << 20, budget).expect("init")
    }

    /// Each built-in, called through its core module, answers exactly what
    /// the same bytes called through wasmtime's component layer answer:
    /// every real client flight of the corpus and its prefixes, over each
    /// transport the built-in serves. So do the same bytes loaded as a
    /// plugin file, which are called through their main module too (with
    /// the peer's addresses), and never need their component.
    #[tokio::test]
    async fn direct_calls_agree_with_the_component() {
        let dir = tempfile::tempdir().expect("tempdir");
        for &(name, _, bytes, _, _) in builtin::BUILTINS {
            std::fs::write(dir.path().join(format!("component-{name}.wasm")), bytes).expect("write plugin");
        }
        let rules = "      rules:\n        - protocol: irc\n          regex: '^(NICK|USER) [^\\r\\n]*\\r\\n'\n";
        // Thousands of calls are compared: with the default 10 ms budget, a
        // test thread the machine does not schedule for that long (CI under
        // load, a host stealing time) would make one call fail and its
        // answer differ. The budget is not what this test is about.
        let yaml = format!(
            "listeners:\n  - name: edge\n    bind: 127.0.0.1:0\n    default: web\nroutes:\n  - name: web\n    to: web\nbackends:\n  web: {{ servers: [127.0.0.1:1] }}\nplugins:\n  dir: {}\n  limits: {{ call_timeout: 1s }}\n  config:\n    pattern:\n{rules}    component-pattern:\n{rules}",
            dir.path().display()
        );
        let config = crate::config::parse(&yaml, Path::new("test.yaml")).expect("config");
        let plugins = PluginSet::load(&config).await.expect("plugins load");
        assert!(plugins.skipped.is_empty(), "{:?}", plugins.skipped.iter().map(|s| &s.reason).collect::<Vec<_>>());

        let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus");
        let mut flights: Vec<(String, Vec<u8>)> =
            files(&corpus).into_iter().map(|p| (p.display().to_string(), std::fs::read(&p).expect("read"))).collect();
        flights.push(("irc".into(), b"NICK refractium\r\n".to_vec()));
        flights.push(("empty".into(), Vec::new()));
        assert!(flights.len() > 50, "the corpus is missing: {}", corpus.display());

        for &(name, _, bytes, tcp, udp) in builtin::BUILTINS {
            let direct = plugins.detector(name).expect("built-in");
            let file = plugins.detector(&format!("component-{name}")).expect("plugin file");
            assert!(matches!(direct.source, super::Source::Builtin) && !matches!(file.source, super::Source::Builtin));
            let config = if name == "pattern" { PATTERN_JSON } else { "null" };
            let component = &component_only(name, bytes, config);
            let mut matched = 0;
            for (path, data) in &flights {
                let lengths = (0..=data.len().min(24)).chain((25..data.len()).step_by(97)).chain([data.len()]);
                for len in lengths {
                    for over_udp in [false, true].into_iter().filter(|&u| if u { udp } else { tcp }) {
                        let peer = Peer::new("127.0.0.1:40000", "127.0.0.1:443", "edge", over_udp);
                        let (want, got) = (component.detect(&data[..len], &peer), direct.detect(&data[..len], &peer));
                        assert_eq!(got, want, "{name} on the first {len} bytes of {path} (udp: {over_udp})");
                        let got = file.detect(&data[..len], &peer);
                        assert_eq!(got, want, "{name} as a file on the first {len} bytes of {path} (udp: {over_udp})");
                        let want = want.expect("the call succeeds");
                        // Asked for the attributes routes read, both hand over those alone.
                        let only = peer.clone().wanting(Wanted::only(["host", "user"]));
                        let mut filtered = want.clone();
                        if let Verdict::Matched(d) = &mut filtered {
                            d.attributes.retain(|(k, _)| k == "host" || k == "user");
                        }
                        assert_eq!(direct.detect(&data[..len], &only), Ok(filtered.clone()), "{name}, two attributes");
                        assert_eq!(file.detect(&data[..len], &only), Ok(filtered), "{name} file, two attributes");
                        matched += usize::from(matches!(want, Verdict::Matched(_)));
                    }
                }
            }
            assert!(matched > 0, "`{name}` matched nothing: the comparison proves little");
            assert!(file.calls_directly(), "`{name}` as a plugin file fell back to its component");
        }
    }

    /// Each built-in hook, called through its core module, answers what the
    /// same bytes loaded as a plugin file answer, chunk by chunk: requests
    /// split at every position, pipelined, malformed, an upgrade; rules that
    /// match, straddle chunks or do not; a session given the real peer,
    /// detection and route, where the direct path gives only the client's
    /// address.
    #[tokio::test]
    async fn direct_hooks_agree_with_the_component() {
        use crate::plugin::Detection;
        use crate::plugin::hook::Direction::{ClientToServer as Up, ServerToClient as Down};
        let dir = tempfile::tempdir().expect("tempdir");
        for &(name, _, bytes) in builtin::BUILTIN_HOOKS {
            std::fs::write(dir.path().join(format!("component-{name}.wasm")), bytes).expect("write plugin");
        }
        let configs = [
            ("http-headers", "{ set: { X-Env: test }, add: { Via: refractium }, remove: [X-Debug] }"),
            (
                "deny",
                "{ rules: [ { regex: '^GET /admin', respond: \"HTTP/1.1 403 Forbidden\\r\\n\\r\\n\", reason: admin }, { literal: SSH-2.0-libssh, direction: client-to-server } ] }",
            ),
            ("rewrite", "{ rules: [ { from: HELLO, to: HOWDY, direction: both } ] }"),
        ];
        let mut yaml = format!(
            "listeners:\n  - name: edge\n    bind: 127.0.0.1:0\n    default: web\nroutes:\n  - name: web\n    to: web\nbackends:\n  web: {{ servers: [127.0.0.1:1] }}\nplugins:\n  dir: {}\n  direct_calls: false\n  limits: {{ call_timeout: 1s }}\n  config:\n",
            dir.path().display()
        );
        for (name, config) in configs {
            yaml.push_str(&format!("    {name}: {config}\n    component-{name}: {config}\n"));
        }
        let config = crate::config::parse(&yaml, Path::new("test.yaml")).expect("config");
        let plugins = PluginSet::load(&config).await.expect("plugins load");
        assert!(plugins.skipped.is_empty(), "{:?}", plugins.skipped.iter().map(|s| &s.reason).collect::<Vec<_>>());

        let streams: [&[&[u8]]; 8] = [
            &[b"GET / HTTP/1.1\r\nHost: a\r\nX-Debug: 1\r\nX-Forwarded-For: 192.0.2.9\r\n\r\n"],
            &[b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 8\r\n\r\n\r\n\r\nabcdGET / HTTP/1.1\r\nHost: b\r\n\r\n"],
            &[b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n\r\n\r\n\r\n0\r\n\r\n"],
            &[b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", b"HELLO frames"],
            &[b"GET /admin HTTP/1.1\r\n\r\n"],
            &[b"SSH-2.0-libssh_0.9\r\n"],
            &[b"say HEL", b"LO world, HELLO"],
            &[b"\x00\x01 not http\r\n\r\n"],
        ];
        let peer = Peer::new("192.0.2.1:5000", "192.0.2.2:443", "edge", false);
        let v6 = Peer::new("[2001:db8::1]:5000", "[2001:db8::2]:443", "edge", false);
        let detection = Detection { protocol: "http".into(), sni: Some("a.example".into()), ..Detection::default() };
        let mut compared = 0;
        for &(name, _, _) in builtin::BUILTIN_HOOKS {
            let direct = plugins.hook(name).expect("built-in");
            let component = plugins.hook(&format!("component-{name}")).expect("plugin file");
            assert!(
                matches!(direct.source, super::Source::Builtin) && !matches!(component.source, super::Source::Builtin)
            );
            for stream in streams {
                let whole: Vec<u8> = stream.concat();
                // As written, and split at every position of the whole.
                let splits = std::iter::once(stream.iter().map(|c| c.to_vec()).collect::<Vec<_>>())
                    .chain((1..whole.len()).map(|at| vec![whole[..at].to_vec(), whole[at..].to_vec()]));
                for (chunks, peer) in splits.flat_map(|c| [(c.clone(), &peer), (c, &v6)]) {
                    let mut sessions = [
                        direct.open(peer, &detection, "web").expect("direct session"),
                        component.open(peer, &detection, "web").expect("component session"),
                    ];
                    for direction in [Up, Down] {
                        for chunk in &chunks {
                            let [a, b] = &mut sessions;
                            let (got, want) = (a.on_data(direction, chunk), b.on_data(direction, chunk));
                            assert_eq!(got, want, "{name}, {direction:?}, {chunks:?}");
                            compared += 1;
                        }
                        let [a, b] = &mut sessions;
                        assert_eq!(a.on_end(direction), b.on_end(direction), "{name} end, {direction:?}, {chunks:?}");
                    }
                }
            }
        }
        assert!(compared > 1000, "{compared} calls compared");
    }

    /// A hook plugin file called through its main module answers what its
    /// component answers, call by call, both ways: the test hook in each of
    /// its modes (forwarding, rewriting, holding every byte, answering,
    /// closing, echoing its session's arguments, trapping), given the real
    /// peer, detection and route.
    #[tokio::test]
    async fn hook_files_called_directly_agree_with_their_component() {
        use crate::plugin::Detection;
        use crate::plugin::hook::Direction::{ClientToServer as Up, ServerToClient as Down};
        let dir = tempfile::tempdir().expect("tempdir");
        let built = Path::new(env!("REFRACTIUM_TEST_PLUGINS_DIR")).join("refractium_test_testhook.wasm");
        let modes = ["identity", "upper", "hold", "deny", "session", "count", "broken"];
        let mut config = String::new();
        for mode in modes {
            std::fs::copy(&built, dir.path().join(format!("t-{mode}.wasm"))).expect("copy the test hook");
            config.push_str(&format!("    t-{mode}: {{ mode: {mode} }}\n"));
        }
        let load = |direct: bool| {
            let yaml = format!(
                "listeners:\n  - name: edge\n    bind: 127.0.0.1:0\n    default: web\nroutes:\n  - name: web\n    to: web\nbackends:\n  web: {{ servers: [127.0.0.1:1] }}\nplugins:\n  dir: {}\n  direct_calls: {direct}\n  limits: {{ call_timeout: 1s }}\n  config:\n{config}",
                dir.path().display()
            );
            let config = crate::config::parse(&yaml, Path::new("test.yaml")).expect("config");
            async move { PluginSet::load(&config).await.expect("plugins load") }
        };
        let (direct, component) = (load(true).await, load(false).await);
        let peers = [
            Peer::new("192.0.2.1:5000", "192.0.2.2:443", "edge", false),
            Peer::new("[2001:db8::1]:5000", "[2001:db8::2]:53", "dns", true),
        ];
        let detections = [
            Detection::default(),
            Detection {
                protocol: "tls".into(),
                sni: Some("a.example".into()),
                alpn: vec!["h2".into(), "http/1.1".into()],
                attributes: vec![("version".into(), "1.3".into()), ("ech".into(), String::new())],
            },
        ];
        let streams: [&[(crate::plugin::hook::Direction, &[u8])]; 4] = [
            &[(Up, b"GET / HTTP/1.1\r\n\r\n"), (Down, b"HTTP/1.1 200 OK\r\n\r\n"), (Up, b"more")],
            &[(Up, b"please close"), (Up, b"after")],
            &[(Up, b"this is forbidden"), (Down, b"late")],
            &[(Down, b"server first"), (Up, b"a trap"), (Up, b"after the trap")],
        ];
        let mut compared = 0;
        for mode in modes {
            let name = format!("t-{mode}");
            let (a, b) = (direct.hook(&name).expect("direct"), component.hook(&name).expect("component"));
            assert!(a.calls_directly(), "{name} is called through its main module");
            assert!(!b.calls_directly(), "`direct_calls: false` calls {name} through its component");
            for (peer, detection) in peers.iter().zip(&detections) {
                for stream in streams {
                    let mut sessions = [&a, &b].map(|hook| hook.open(peer, detection, "web").expect("session"));
                    for &(direction, chunk) in stream {
                        let [x, y] = &mut sessions;
                        let (got, want) = (x.on_data(direction, chunk), y.on_data(direction, chunk));
                        assert_eq!(
                            got.as_ref().map_err(|f| f.cause.label()),
                            want.as_ref().map_err(|f| f.cause.label()),
                            "{name}, {direction:?} {chunk:?}"
                        );
                        compared += 1;
                    }
                    for direction in [Up, Down] {
                        let [x, y] = &mut sessions;
                        let (got, want) = (x.on_end(direction), y.on_end(direction));
                        assert_eq!(
                            got.as_ref().map_err(|f| f.cause.label()),
                            want.as_ref().map_err(|f| f.cause.label()),
                            "{name} end, {direction:?}"
                        );
                    }
                }
            }
        }
        assert!(compared > 100, "{compared} calls compared");
        // What `session` saw: everything the session was opened with.
        let hook = direct.hook("t-session").expect("session");
        let mut session = hook.open(&peers[1], &detections[1], "web").expect("session");
        let seen = session.on_data(Up, b"x").expect("call");
        let want = "[[2001:db8::1]:5000 [2001:db8::2]:53 dns Udp | tls Some(\"a.example\") [\"h2\", \"http/1.1\"] [(\"version\", \"1.3\"), (\"ech\", \"\")] | web]\nx";
        assert_eq!(seen, crate::plugin::hook::Action::Forward(want.as_bytes().to_vec()));
    }

    /// A chunk read straight into a direct hook's memory is what the hook
    /// sees, however many of the bytes asked for the read delivers; a read
    /// that fails or delivers nothing leaves the guest's allocation unused,
    /// and the instance then serves no later connection (sessions of the
    /// test hook's `count` mode number themselves within their instance).
    #[tokio::test]
    async fn a_chunk_read_into_a_hook_s_memory_is_what_it_sees() {
        use crate::plugin::hook::{Action, Direction::ClientToServer as Up};
        let dir = tempfile::tempdir().expect("tempdir");
        let built = Path::new(env!("REFRACTIUM_TEST_PLUGINS_DIR")).join("refractium_test_testhook.wasm");
        std::fs::copy(&built, dir.path().join("counter.wasm")).expect("copy the test hook");
        let yaml = format!(
            "listeners:\n  - name: edge\n    bind: 127.0.0.1:0\n    default: web\nroutes:\n  - name: web\n    to: web\nbackends:\n  web: {{ servers: [127.0.0.1:1] }}\nplugins:\n  dir: {}\n  config:\n    counter: {{ mode: count }}\n",
            dir.path().display()
        );
        let config = crate::config::parse(&yaml, Path::new("test.yaml")).expect("config");
        let plugins = PluginSet::load(&config).await.expect("plugins load");
        let hook = plugins.hook("counter").expect("counter");
        let peer = Peer::new("192.0.2.1:5000", "192.0.2.2:443", "edge", false);
        let detection = crate::plugin::Detection::default();
        let open = || hook.open(&peer, &detection, "web").expect("session");
        let fill = |bytes: &'static [u8]| {
            move |area: &mut [u8]| {
                area[..bytes.len()].copy_from_slice(bytes);
                Ok(bytes.len())
            }
        };
        let read = |session: &mut crate::plugin::hook::Session, len, bytes| {
            assert!(session.reads_in_place());
            let (n, action) = session.on_data_read(Up, len, fill(bytes)).expect("direct").expect("read");
            (n, action.expect("call").map(|b| b.into_owned()))
        };
        // A whole read and a short one (the allocation cut to what came).
        let mut first = open();
        assert_eq!(read(&mut first, 5, b"hello"), (5, Action::Forward(b"[1]hello".to_vec())));
        assert_eq!(read(&mut first, 4096, b"abc"), (3, Action::Forward(b"abc".to_vec())));
        drop(first);
        // Kept: the next session is its instance's second.
        let mut second = open();
        assert_eq!(read(&mut second, 2, b"hi"), (2, Action::Forward(b"[2]hi".to_vec())));
        let failed = second.on_data_read(Up, 16, |_| Err(std::io::ErrorKind::ConnectionReset.into()));
        assert_eq!(failed.expect("direct").err().map(|e| e.kind()), Some(std::io::ErrorKind::ConnectionReset));
        drop(second);
        // Not kept: a fresh instance numbers its first session 1.
        let mut third = open();
        assert_eq!(read(&mut third, 3, b"yes"), (3, Action::Forward(b"[1]yes".to_vec())));
        let nothing = third.on_data_read(Up, 16, |_| Ok(0)).expect("direct").err().map(|e| e.kind());
        assert_eq!(nothing, Some(std::io::ErrorKind::UnexpectedEof));
        drop(third);
        assert_eq!(read(&mut open(), 1, b"!"), (1, Action::Forward(b"[1]!".to_vec())));
    }

    /// A plugin file on the direct path whose call reaches an import only
    /// its component serves: the test plugin `snoop`, which on `snoop`
    /// reads the environment, the clocks and random bytes through WASI. That
    /// call is made again through the component and answers what the
    /// component answers; the plugin is called through its component from
    /// then on. `plugins.direct_calls: false` keeps it there from the start.
    #[tokio::test]
    async fn a_file_that_needs_its_component_falls_back_to_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let built = Path::new(env!("REFRACTIUM_TEST_PLUGINS_DIR")).join("refractium_test_snoop.wasm");
        std::fs::copy(&built, dir.path().join("snoop.wasm")).expect("copy the test plugin snoop");
        let yaml = |direct: bool| {
            format!(
                "listeners:\n  - name: edge\n    bind: 127.0.0.1:0\n    default: web\nroutes:\n  - name: web\n    to: web\nbackends:\n  web: {{ servers: [127.0.0.1:1] }}\nplugins:\n  dir: {}\n  direct_calls: {direct}\n  limits: {{ call_timeout: 1s }}\n",
                dir.path().display()
            )
        };
        let peer = Peer::new("127.0.0.1:40000", "127.0.0.1:443", "edge", false);
        let snooped = |verdict| match verdict {
            Ok(Verdict::Matched(d)) => {
                let attr = |k: &str| d.attributes.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
                (d.protocol, attr("env"), attr("args"), attr("random"))
            }
            other => panic!("expected snoop's match, got {other:?}"),
        };
        let want = ("snoop".to_string(), Some("0".to_string()), Some("0".to_string()), Some("true".to_string()));

        let config = crate::config::parse(&yaml(true), Path::new("test.yaml")).expect("config");
        let plugins = PluginSet::load(&config).await.expect("plugins load");
        let snoop = plugins.detector("snoop").expect("snoop");
        assert!(snoop.calls_directly(), "init and the first-byte probes make no WASI call");
        assert_eq!(snoop.detect(b"GET / HTTP/1.1\r\n\r\n", &peer), Ok(Verdict::NoMatch));
        assert_eq!(snoop.detect(b"sno", &peer), Ok(Verdict::NeedMore(5)));
        assert!(snoop.calls_directly());
        assert_eq!(snooped(snoop.detect(b"snoop", &peer)), want);
        assert!(!snoop.calls_directly(), "the call that needed WASI moves the plugin to its component");
        assert_eq!(snooped(snoop.detect(b"snoop", &peer)), want);
        assert_eq!(snoop.detect(b"GET / HTTP/1.1\r\n\r\n", &peer), Ok(Verdict::NoMatch));

        let config = crate::config::parse(&yaml(false), Path::new("test.yaml")).expect("config");
        let plugins = PluginSet::load(&config).await.expect("plugins load");
        let snoop = plugins.detector("snoop").expect("snoop");
        assert!(!snoop.calls_directly(), "`direct_calls: false` calls it through its component");
        assert_eq!(snooped(snoop.detect(b"snoop", &peer)), want);
    }
}
