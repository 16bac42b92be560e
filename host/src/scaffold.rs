//! `refractium new detector|hook NAME`: a plugin project that builds as it
//! is, is recognised when its `.wasm` is dropped into a plugins directory,
//! and has the one function an author fills in marked.
//!
//! A Rust project depends on the plugin SDK by path: the `plugin-sdk`
//! directory of the source tree this binary was built from, or `--sdk`.
//! Projects in other languages carry a copy of `wit/` and generate their
//! bindings from it. The files are `host/templates/`.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};

/// What the project exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Detector,
    Hook,
}

/// The project's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Rust,
    C,
    Js,
    Python,
}

impl Lang {
    fn dir(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::C => "c",
            Lang::Js => "js",
            Lang::Python => "python",
        }
    }
}

/// The projects' files: `templates/LANG/common/` and `templates/LANG/KIND/`
/// (which wins where both have a file), with `{{name}}`, `{{NAME}}`,
/// `{{Type}}`, `{{crate}}` and `{{sdk}}` filled in.
static TEMPLATES: include_dir::Dir<'static> = include_dir::include_dir!("$CARGO_MANIFEST_DIR/templates");

/// The WIT package, which every project but a Rust one (whose SDK carries
/// it) builds its bindings from.
const WIT: &str = include_str!("../../wit/plugin.wit");

/// Where this binary's source tree keeps the SDK.
fn built_in_sdk() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("plugin-sdk")
}

/// Write a `kind` project in `lang` named `name` into `dir` (which must not
/// exist or be empty); a Rust project depends on the SDK at `sdk` (default:
/// [`built_in_sdk`]). Returns the files written.
pub fn create(kind: Kind, lang: Lang, name: &str, dir: &Path, sdk: Option<&Path>) -> anyhow::Result<Vec<PathBuf>> {
    check_name(name)?;
    if dir.exists() && std::fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} already exists and is not empty", dir.display());
    }
    let sdk_path = if lang == Lang::Rust {
        let sdk = sdk.map(Path::to_path_buf).unwrap_or_else(built_in_sdk);
        let sdk = sdk
            .canonicalize()
            .with_context(|| format!("the plugin SDK is not at {} (give its directory with --sdk)", sdk.display()))?;
        if !sdk.join("Cargo.toml").is_file() {
            bail!("{} has no Cargo.toml: give the plugin SDK's directory with --sdk", sdk.display());
        }
        sdk.display().to_string().replace('\\', "/")
    } else {
        String::new()
    };
    let type_name = type_name(name);
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{Type}}", &type_name)
            .replace("{{NAME}}", &name.to_ascii_uppercase())
            .replace("{{crate}}", &name.replace('-', "_"))
            .replace("{{sdk}}", &sdk_path)
    };
    let kind_dir = match kind {
        Kind::Detector => "detector",
        Kind::Hook => "hook",
    };
    let mut files = std::collections::BTreeMap::new();
    for part in ["common", kind_dir] {
        if let Some(d) = TEMPLATES.get_dir(format!("{}/{part}", lang.dir())) {
            collect(d, &d.path().to_path_buf(), &mut files);
        }
    }
    if files.is_empty() {
        bail!("no {kind_dir} template for {}", lang.dir());
    }
    let mut texts: Vec<(PathBuf, String)> = files.into_iter().map(|(path, text)| (path, fill(text))).collect();
    if lang != Lang::Rust {
        texts.push((PathBuf::from("wit/plugin.wit"), WIT.to_string()));
    }
    let mut written = Vec::new();
    for (file, text) in texts {
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// Every file under `d`, by its path relative to `root`.
fn collect<'a>(d: &'a include_dir::Dir<'a>, root: &PathBuf, out: &mut std::collections::BTreeMap<PathBuf, &'a str>) {
    for file in d.files() {
        if let (Ok(rel), Some(text)) = (file.path().strip_prefix(root), file.contents_utf8()) {
            out.insert(rel.to_path_buf(), text);
        }
    }
    for sub in d.dirs() {
        collect(sub, root, out);
    }
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
        let files = create(Kind::Detector, Lang::Rust, "knock", &project, None).expect("create");
        assert_eq!(files.len(), 4);
        let lib = std::fs::read_to_string(project.join("src/lib.rs")).expect("lib.rs");
        assert!(lib.contains("pub struct Knock;") && lib.contains("b\"KNOCK \""), "{lib}");
        let manifest = std::fs::read_to_string(project.join("Cargo.toml")).expect("Cargo.toml");
        assert!(manifest.contains("name = \"knock\"") && manifest.contains("plugin-sdk"), "{manifest}");
        let again = create(Kind::Hook, Lang::Rust, "knock", &project, None).expect_err("not over a project");
        assert!(again.to_string().contains("not empty"), "{again}");
    }
}
