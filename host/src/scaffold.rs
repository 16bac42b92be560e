//! `refractium new detector|hook NAME`: a plugin project that builds as it
//! is, is recognised when its `.wasm` is dropped into a plugins directory,
//! and has the one function an author fills in marked.
//!
//! The project depends on the plugin SDK by path: the `plugin-sdk`
//! directory of the source tree this binary was built from, or `--sdk`.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};

/// What the project exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Detector,
    Hook,
}

/// Where this binary's source tree keeps the SDK.
fn built_in_sdk() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("plugin-sdk")
}

/// Write a `kind` project named `name` into `dir` (which must not exist or
/// be empty), depending on the SDK at `sdk` (default: [`built_in_sdk`]).
/// Returns the files written.
pub fn create(kind: Kind, name: &str, dir: &Path, sdk: Option<&Path>) -> anyhow::Result<Vec<PathBuf>> {
    check_name(name)?;
    let sdk = sdk.map(Path::to_path_buf).unwrap_or_else(built_in_sdk);
    let sdk = sdk
        .canonicalize()
        .with_context(|| format!("the plugin SDK is not at {} (give its directory with --sdk)", sdk.display()))?;
    if !sdk.join("Cargo.toml").is_file() {
        bail!("{} has no Cargo.toml: give the plugin SDK's directory with --sdk", sdk.display());
    }
    if dir.exists() && std::fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} already exists and is not empty", dir.display());
    }
    let type_name = type_name(name);
    let sdk_path = sdk.display().to_string().replace('\\', "/");
    let (source, readme) = match kind {
        Kind::Detector => (DETECTOR_RS, DETECTOR_README),
        Kind::Hook => (HOOK_RS, HOOK_README),
    };
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{Type}}", &type_name)
            .replace("{{NAME}}", &name.to_ascii_uppercase())
            .replace("{{crate}}", &name.replace('-', "_"))
            .replace("{{sdk}}", &sdk_path)
    };
    let files = [
        ("Cargo.toml", fill(CARGO_TOML)),
        ("src/lib.rs", fill(source)),
        ("README.md", fill(readme)),
        (".gitignore", "/target\n".to_string()),
    ];
    let mut written = Vec::new();
    for (file, text) in files {
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// A plugin's name is what routes and `match.protocol` use, and the crate's
/// name: lower-case letters, digits and `-`, starting with a letter.
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !ok {
        bail!("`{name}` is not a plugin name: use lower-case letters, digits and `-`, starting with a letter");
    }
    Ok(())
}

/// `my-proto` → `MyProto`.
fn type_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        })
        .collect()
}

const CARGO_TOML: &str = r#"[package]
name = "{{name}}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
refractium-plugin-sdk = { path = "{{sdk}}" }

[profile.release]
opt-level = 3
lto = true
codegen-units = 1
strip = true
panic = "abort"

# A project of its own, even inside another workspace.
[workspace]
"#;

const DETECTOR_RS: &str = r#"//! Detector `{{name}}`: routes match it with `match: { protocol: {{name}} }`.

use refractium_plugin_sdk::{Detection, Detector, Peer, Verdict};

pub struct {{Type}};

impl Detector for {{Type}} {
    const NAME: &'static str = "{{name}}";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    /// `config` is the YAML's `plugins.config.{{name}}` as JSON, or `null`.
    fn new(_config: &str) -> Result<Self, String> {
        Ok({{Type}})
    }

    /// Fill this in. `data` is every byte the client sent so far, from the
    /// first. Answer `NeedMore(0)` while the bytes could still become your
    /// protocol, `NoMatch` as soon as they cannot. This one matches clients
    /// that start with `{{NAME}} `.
    fn detect(&self, data: &[u8], _peer: &Peer) -> Verdict {
        const GREETING: &[u8] = b"{{NAME}} ";
        let n = data.len().min(GREETING.len());
        if data[..n] != GREETING[..n] {
            Verdict::NoMatch
        } else if n < GREETING.len() {
            Verdict::NeedMore(0)
        } else {
            Verdict::Matched(Detection::new("{{name}}"))
        }
    }
}

refractium_plugin_sdk::export_detector!({{Type}});

#[cfg(test)]
mod tests {
    use super::*;
    use refractium_plugin_sdk::Transport;
    use refractium_plugin_sdk::testing::{check_prefixes, other_protocols};

    fn run(data: &[u8]) -> Verdict {
        {{Type}}::new("null").expect("config").detect(data, &Peer::test(Transport::Tcp))
    }

    #[test]
    fn its_first_bytes_match_and_are_waited_for() {
        assert!(run(b"{{NAME}} hello\r\n").is_match());
        let detector = {{Type}}::new("null").expect("config");
        // Every shorter start is waited for; the whole greeting matches.
        check_prefixes(&detector, b"{{NAME}} ", &Peer::test(Transport::Tcp));
    }

    #[test]
    fn other_protocols_do_not_match() {
        for (name, bytes) in other_protocols() {
            assert_eq!(run(&bytes), Verdict::NoMatch, "{name}");
        }
    }
}
"#;

const HOOK_RS: &str = r#"//! Hook `{{name}}`: a route runs it with `hooks: [{{name}}]`.

use refractium_plugin_sdk::hook::{Action, Direction, Hook};
use refractium_plugin_sdk::{Detection, Peer};

pub struct {{Type}};

/// What the hook keeps for one connection.
#[derive(Default)]
pub struct Session {
    /// Bytes the client has sent.
    sent: u64,
}

impl Hook for {{Type}} {
    const NAME: &'static str = "{{name}}";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    type Session = Session;

    /// `config` is the YAML's `plugins.config.{{name}}` as JSON, or `null`.
    fn new(_config: &str) -> Result<Self, String> {
        Ok({{Type}})
    }

    fn open(&self, _peer: &Peer, _detection: &Detection, _route: &str) -> Session {
        Session::default()
    }

    /// Fill this in. Each chunk from either side comes here: forward it
    /// (changed or not), hold it (forward less), answer and close
    /// (`Action::Respond`), close, or `Action::Pass` to let the rest of a
    /// direction through without the hook. This one counts what the client
    /// sends and passes the server's bytes.
    fn on_data(&self, session: &mut Session, direction: Direction, data: Vec<u8>) -> Action {
        match direction {
            Direction::ClientToServer => {
                session.sent += data.len() as u64;
                Action::Forward(data)
            }
            Direction::ServerToClient => Action::Pass(data),
        }
    }
}

refractium_plugin_sdk::export_hook!({{Type}});

#[cfg(test)]
mod tests {
    use super::*;
    use refractium_plugin_sdk::testing::check_hook_splits;

    #[test]
    fn the_client_stream_goes_through_unchanged_however_it_is_split() {
        let hook = {{Type}}::new("null").expect("config");
        let run = check_hook_splits(&hook, Direction::ClientToServer, b"hello, server\r\n");
        assert_eq!(run.output, b"hello, server\r\n");
    }
}
"#;

const DETECTOR_README: &str = r#"# {{name}}: a refractium detector

Fill in `detect` in `src/lib.rs`, then:

```sh
cargo test                                       # natively, with the SDK's helpers
cargo build --release --target wasm32-wasip2     # rustup target add wasm32-wasip2, once
refractium detect -c refractium.yaml capture.bin # your bytes, through every detector
cp target/wasm32-wasip2/release/{{crate}}.wasm /path/to/plugins.d/{{name}}.wasm
```

A running proxy loads the file when it lands in its plugins directory. Put
`{{name}}` in a listener's `detectors` and route it:

```yaml
listeners:
  - name: edge
    detectors: [tls, http, {{name}}]
routes:
  - name: {{name}}
    match: { protocol: {{name}} }
    to: my-backend
```
"#;

const HOOK_README: &str = r#"# {{name}}: a refractium hook

Fill in `on_data` in `src/lib.rs`, then:

```sh
cargo test                                       # natively, with the SDK's helpers
cargo build --release --target wasm32-wasip2     # rustup target add wasm32-wasip2, once
refractium hook {{name}} -c refractium.yaml chunk1.bin chunk2.bin
cp target/wasm32-wasip2/release/{{crate}}.wasm /path/to/plugins.d/{{name}}.wasm
```

A running proxy loads the file when it lands in its plugins directory. List
it on a route:

```yaml
routes:
  - name: web
    match: { protocol: http }
    hooks: [{{name}}]
    to: my-backend
```
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_crates_and_types() {
        assert_eq!(type_name("my-proto"), "MyProto");
        assert_eq!(type_name("knock"), "Knock");
        for bad in ["", "Knock", "1x", "a_b", "x-", "a b"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        check_name("my-proto2").expect("valid");
    }

    #[test]
    fn a_project_is_written_and_not_over_another() {
        let dir = tempfile::tempdir().expect("tempdir");
        let project = dir.path().join("knock");
        let files = create(Kind::Detector, "knock", &project, None).expect("create");
        assert_eq!(files.len(), 4);
        let lib = std::fs::read_to_string(project.join("src/lib.rs")).expect("lib.rs");
        assert!(lib.contains("pub struct Knock;") && lib.contains("b\"KNOCK \""), "{lib}");
        let manifest = std::fs::read_to_string(project.join("Cargo.toml")).expect("Cargo.toml");
        assert!(manifest.contains("name = \"knock\"") && manifest.contains("plugin-sdk"), "{manifest}");
        let again = create(Kind::Hook, "knock", &project, None).expect_err("not over a project");
        assert!(again.to_string().contains("not empty"), "{again}");
    }
}
