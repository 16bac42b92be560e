//! `refractium check FILE.wasm`: what one plugin file is, and what is wrong
//! with it, in words its author can act on.
//!
//! The file goes through the steps the [`super::loader`] takes — compiled
//! through the [`cache`] (the same directory, so a later start does not
//! compile it again), its exports looked up, linked with exactly its imports
//! ([`super::imports`]), instantiated under the sandbox limits and `init`
//! called — and each step says what it found. Where a step fails, the
//! report says why in plain words and what the loader would log; the proxy
//! would skip such a file.

use super::background::{self, Ready};
use super::bindings::hooks::HookPluginPre;
use super::detector::{DetectorPlugin, Info, Pre};
use super::hook::{HookPlugin, HookPre};
use super::loader::{Source, builtin};
use super::sandbox::HostState;
use super::{cache, component, wasi};
use crate::config::Config;
use std::path::Path;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker};

/// The contract the host serves, as built into this binary.
const WIT: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../wit/plugin.wit"));

/// The package whose interfaces a plugin implements.
const PACKAGE: &str = "refractium:plugin";

/// The version of `refractium:plugin` this binary serves (`package` line of
/// `wit/plugin.wit`).
pub fn served_version() -> &'static str {
    WIT.lines()
        .find_map(|line| line.trim().strip_prefix("package refractium:plugin@"))
        .and_then(|rest| rest.strip_suffix(';'))
        .unwrap_or("?")
}

/// What checking one file found.
#[derive(Debug, Default)]
pub struct Report {
    /// The report, line by line, indented under the file's first line.
    pub lines: Vec<String>,
    /// Problems that keep the proxy from loading the file.
    pub problems: usize,
    /// Things the author should know that do not stop it loading.
    pub warnings: usize,
}

impl Report {
    fn say(&mut self, line: impl Into<String>) {
        self.lines.push(format!("  {}", line.into()));
    }

    fn problem(&mut self, line: impl AsRef<str>) {
        self.problems += 1;
        self.lines.push(format!("  PROBLEM: {}", line.as_ref()));
    }

    fn warn(&mut self, line: impl AsRef<str>) {
        self.warnings += 1;
        self.lines.push(format!("  warning: {}", line.as_ref()));
    }
}

/// Check the plugin file `path` on its own. `config` gives the sandbox
/// limits and the compile cache; with `use_plugin_config`, `init` gets the
/// file's `plugins.config` entry (else `null`).
pub fn check_file(path: &Path, config: &Config, use_plugin_config: bool) -> Report {
    let mut report = Report::default();
    let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) => {
            report.lines.push(format!("{}:", path.display()));
            report.problem(format!("cannot read the file: {err}"));
            return report;
        }
    };
    let header = Header::of(&bytes);
    let kind = match header {
        Header::Component => "a WebAssembly component",
        Header::Module => "a core WebAssembly module, not a component",
        Header::Other { .. } => "WebAssembly of a kind refractium does not know",
        Header::NotWasm => "not WebAssembly",
    };
    report.lines.push(format!("{}: {} bytes, {kind}", path.display(), thousands(bytes.len())));
    match header {
        Header::Component => {}
        Header::Module => {
            core_module_advice(&bytes, &name, &mut report);
            return report;
        }
        Header::Other { version, layer } => {
            report.problem(format!(
                "its header says version {version}, layer {layer}; refractium loads components (layer 1) \
                 that implement wit/plugin.wit"
            ));
            return report;
        }
        Header::NotWasm => {
            let start: Vec<String> = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
            report.problem(format!(
                "a WebAssembly file starts with the bytes 00 61 73 6d (`\\0asm`); this one starts with [{}]. \
                 A plugin is a WebAssembly component, e.g. what `cargo build --target wasm32-wasip2` makes",
                start.join(" ")
            ));
            return report;
        }
    }

    // Compiled as the loader compiles it: through the cache.
    let cache_dir = config.plugins.cache_dir.clone().or_else(cache::default_dir);
    let hash = cache::hash(&bytes);
    let component = match background::component(&name, &bytes, &hash, cache_dir) {
        Ok(Ready::Now(component)) => component,
        Ok(Ready::Compiling(_)) => {
            report.problem("it is still being compiled in the background; check it again in a moment");
            return report;
        }
        Err(err) => {
            report.problem(format!(
                "it is not a valid component, so the proxy would skip it: {err:#}. Was it cut short, or \
                 written by a tool that does not follow the component model?"
            ));
            return report;
        }
    };

    let served = served_version();
    let exports = exported_interfaces(&component);
    let (detects, hooks) = component::kinds(&component);
    describe_exports(&exports, detects, hooks, served, &mut report);
    describe_imports(&component, &mut report);
    if !detects && !hooks {
        return report;
    }

    // Linked as the loader links it.
    let (pre, refused) = match component::link(&component) {
        Ok(linked) => linked,
        Err(err) => {
            report.problem(format!("it cannot be linked, so the proxy would skip it: {err:#}"));
            return report;
        }
    };

    let json = match config.plugins.config.get(&name).filter(|_| use_plugin_config) {
        Some(value) => serde_json::to_string(value).unwrap_or_else(|_| "null".into()),
        None => "null".to_string(),
    };
    let from = if json == "null" {
        "no config".to_string()
    } else {
        format!("plugins.config.{name} of {}", config.file.display())
    };
    let (memory, budget) = (config.plugins.limits.memory, config.plugins.limits.call_timeout);
    let source = Source::File(path.to_path_buf());
    let mut info: Option<Info> = None;
    if detects {
        let typed = component::Pre::new(pre.clone());
        match typed {
            Err(err) => mismatch("detector", &format!("{err:#}"), served, &mut report),
            Ok(typed) => match DetectorPlugin::new(
                &name,
                source.clone(),
                hash.clone(),
                Pre::Component(typed),
                refused.clone(),
                json.clone(),
                memory,
                budget,
            ) {
                Ok(plugin) => info = Some(plugin.info.clone()),
                Err(err) => init_failed("detector", &json, &from, &err, served, &mut report),
            },
        }
    }
    if hooks && report.problems == 0 {
        match HookPluginPre::new(pre.clone()) {
            Err(err) => mismatch("hook", &format!("{err:#}"), served, &mut report),
            Ok(pre) => match HookPlugin::new(
                &name,
                source,
                hash,
                HookPre::Component(pre),
                refused.clone(),
                json.clone(),
                memory,
                budget,
            ) {
                Ok(plugin) => {
                    if info.is_none() {
                        info = Some(plugin.info.clone());
                    }
                }
                Err(err) => init_failed("hook", &json, &from, &err, served, &mut report),
            },
        }
    }
    let Some(info) = info.filter(|_| report.problems == 0) else {
        return report;
    };
    let shown = super::sandbox::truncate(&json, 200);
    let cut = if shown.len() < json.len() { "…" } else { "" };
    report.say(format!("init({shown}{cut}) ({from}): name `{}`, version {}", info.name, printable(&info.version)));
    if info.name != name {
        report.warn(format!(
            "init says the plugin is `{}`, but the file is named `{name}.wasm`. The proxy names a plugin \
             file by its file name: routes, `detectors:` lists and `plugins.config` must call it `{name}`, \
             and `refractium plugins` lists it as `{name}`. Rename the file to `{}.wasm` to use the name \
             init reports",
            info.name, info.name
        ));
    }
    // Where the proxy would ask it (see the loader).
    let builtin = builtin::BUILTINS.iter().find(|b| b.0 == name);
    if let Some(&(_, _, _, tcp, udp)) = builtin.filter(|_| detects) {
        let serves = match (tcp, udp) {
            (true, true) => "TCP and UDP",
            (true, false) => "TCP",
            _ => "UDP",
        };
        report.say(format!(
            "note: `{name}` is a built-in detector; in plugins.dir this file replaces it, in its place in \
             the order, on {serves} listeners"
        ));
    } else if detects {
        report.say(format!(
            "asked: on TCP and UDP listeners that name `{name}` in `detectors:`, and after the built-ins on \
             those that name none"
        ));
    }
    if hooks && builtin::BUILTIN_HOOKS.iter().any(|b| b.0 == name) {
        report.say(format!("note: `{name}` is a built-in hook; in plugins.dir this file replaces it"));
    }
    let what = match (detects, hooks) {
        (true, true) => format!("the detector and the hook `{name}`"),
        (true, false) => format!("the detector `{name}`"),
        _ => format!("the hook `{name}`"),
    };
    if refused.is_empty() {
        report.say(format!("OK: the proxy would load it as {what}"));
    } else {
        report.say(format!(
            "OK: the proxy would load it as {what}; a call that reaches a refused import ({}) fails",
            refused.join(", ")
        ));
    }
    report
}

/// What the first 8 bytes of a file say it is.
enum Header {
    Component,
    Module,
    Other { version: u16, layer: u16 },
    NotWasm,
}

impl Header {
    fn of(bytes: &[u8]) -> Header {
        match bytes {
            [0, b'a', b's', b'm', v0, v1, l0, l1, ..] => {
                match (u16::from_le_bytes([*v0, *v1]), u16::from_le_bytes([*l0, *l1])) {
                    (1, 0) => Header::Module,
                    (_, 1) => Header::Component,
                    (version, layer) => Header::Other { version, layer },
                }
            }
            _ => Header::NotWasm,
        }
    }
}

/// A core module: what it looks like, and how to make a component of it.
fn core_module_advice(bytes: &[u8], name: &str, report: &mut Report) {
    let (mut has_wit, mut preview1, mut exports) = (false, false, Vec::new());
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        match payload {
            Ok(wasmparser::Payload::CustomSection(section)) if section.name().starts_with("component-type") => {
                has_wit = true
            }
            Ok(wasmparser::Payload::ImportSection(section)) => {
                for import in section.into_imports().flatten() {
                    preview1 |= import.module == "wasi_snapshot_preview1";
                }
            }
            Ok(wasmparser::Payload::ExportSection(section)) => {
                exports.extend(section.into_iter().flatten().map(|e| e.name.to_string()));
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let world = match (
        exports.iter().any(|e| e.starts_with("refractium:plugin/detector@")),
        exports.iter().any(|e| e.starts_with("refractium:plugin/hook@")),
    ) {
        (true, true) => "plugin",
        (false, true) => "hook-plugin",
        _ => "detector-plugin",
    };
    report.problem(
        "refractium loads WebAssembly components that implement wit/plugin.wit, not core modules; \
         the proxy would skip this file",
    );
    let adapt = if preview1 {
        " --adapt wasi_snapshot_preview1.reactor.wasm (it imports WASI preview 1, which the adapter turns into WASI 0.2)"
    } else {
        ""
    };
    if has_wit {
        report.say(format!(
            "it carries its WIT already: make the component with `wasm-tools component new {name}.wasm -o {name}.wasm{adapt}`"
        ));
    } else {
        report.say(format!(
            "make a component of it with `wasm-tools component embed wit/ --world {world} {name}.wasm -o embedded.wasm` \
             then `wasm-tools component new embedded.wasm -o {name}.wasm{adapt}`, or build for a target that \
             makes components (Rust: `--target wasm32-wasip2`)"
        ));
    }
}

/// The interfaces a component exports, by name (`ns:pkg/iface@version`).
fn exported_interfaces(component: &Component) -> Vec<String> {
    let engine = component.engine();
    component.component_type().exports(engine).map(|(name, _)| name.to_string()).collect()
}

/// `refractium:plugin/IFACE@VERSION` → (IFACE, VERSION).
fn ours(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix(PACKAGE)?.strip_prefix('/')?;
    Some(rest.split_once('@').unwrap_or((rest, "")))
}

/// Which worlds the exports make, and what is wrong with them.
fn describe_exports(exports: &[String], detects: bool, hooks: bool, served: &str, report: &mut Report) {
    let world = match (detects, hooks) {
        (true, true) => Some("plugin (a detector and a hook)"),
        (true, false) => Some("detector-plugin (a detector)"),
        (false, true) => Some("hook-plugin (a hook)"),
        (false, false) => None,
    };
    if let Some(world) = world {
        report.say(format!("implements: world {world} of {PACKAGE}@{served}"));
    }
    // Our interfaces of another version: exported beside, or instead of, ours.
    let others: Vec<&String> = exports
        .iter()
        .filter(|e| ours(e).is_some_and(|(iface, v)| matches!(iface, "detector" | "hook") && v != served))
        .collect();
    if !others.is_empty() {
        let names: Vec<&str> = others.iter().map(|s| s.as_str()).collect();
        let versions: Vec<&str> = others.iter().filter_map(|e| ours(e)).map(|(_, v)| v).collect();
        let line = format!(
            "it exports {}, built against {PACKAGE} {}; this refractium serves {PACKAGE} {served} only",
            names.join(" and "),
            versions.first().copied().filter(|v| !v.is_empty()).unwrap_or("(no version)"),
        );
        if world.is_some() {
            report.warn(format!("{line}: the proxy calls only the {served} exports"));
        } else {
            report.problem(format!(
                "{line}, so the proxy would skip this file. Rebuild it against the wit/plugin.wit of this refractium"
            ));
        }
    }
    if world.is_none() && others.is_empty() {
        let has = if exports.is_empty() { "no exports at all".to_string() } else { exports.join(", ") };
        report.problem(format!(
            "it implements no plugin world: it exports neither {PACKAGE}/detector@{served} nor \
             {PACKAGE}/hook@{served}, so the proxy would skip it. It exports: {has}"
        ));
        if exports.iter().any(|e| e.starts_with("wasi:cli/run@")) {
            report.say(
                "it looks like a program (it exports wasi:cli/run, i.e. `main`); a plugin is a library \
                 (Rust: `crate-type = [\"cdylib\"]`) that exports the interfaces of wit/plugin.wit",
            );
        }
    }
}

/// What the sandbox does with each import.
fn describe_imports(component: &Component, report: &mut Report) {
    let engine = component.engine();
    let ty = component.component_type();
    let imports: Vec<(String, ComponentItem)> = ty.imports(engine).map(|(n, i)| (n.to_string(), i.ty)).collect();
    if imports.is_empty() {
        report.say("imports: none");
        return;
    }
    report.say("imports:");
    let width = imports.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    let served = served_version();
    for (name, item) in &imports {
        let iface = name.split('@').next().unwrap_or(name);
        let version = name.split_once('@').map_or("", |(_, v)| v);
        let ComponentItem::ComponentInstance(instance) = item else {
            let line =
                "refused: not an interface; refractium grants interfaces only, the proxy would not load the file";
            report.say(format!("  {name:<width$}  {line}"));
            continue;
        };
        let line = match iface {
            "refractium:plugin/types" | "refractium:plugin/host" | "refractium:plugin/crypto" => {
                let what = match iface {
                    "refractium:plugin/types" => "types only",
                    "refractium:plugin/host" => "`log` writes a line to the proxy's log",
                    _ => "computed by the host (HKDF, AES); grants nothing",
                };
                if version != served {
                    format!("granted: {what} (of {PACKAGE} {version}; this refractium serves {served})")
                } else {
                    format!("granted: {what}")
                }
            }
            _ if super::imports::unreachable(iface) => {
                "granted, unreachable: every function needs a file descriptor, and the plugin is given none".to_string()
            }
            _ if iface.starts_with("wasi:") => {
                // Which functions get an implementation, asked of the module
                // that implements them (on a linker thrown away after).
                let mut scratch = Linker::<HostState>::new(engine);
                let (mut stubbed, mut refused) = (Vec::new(), Vec::new());
                if let Ok(mut linking) = scratch.instance(name) {
                    for (func, export) in instance.exports(engine) {
                        if let ComponentItem::ComponentFunc(_) = export.ty {
                            match wasi::define(&mut linking, iface, func) {
                                Ok(true) => stubbed.push(func.to_string()),
                                _ => refused.push(func.to_string()),
                            }
                        }
                    }
                }
                match (stubbed.is_empty(), refused.is_empty()) {
                    (true, true) => "granted: types only".to_string(),
                    (false, true) => format!("stubbed harmlessly: {}", wasi_meaning(iface)),
                    (true, false) => format!(
                        "refused: the plugin loads, but a call that uses it fails (\"called {name}#{}, which \
                         refractium does not grant\"){}",
                        refused[0],
                        more(&refused)
                    ),
                    (false, false) => format!(
                        "partly refused: {} answered harmlessly; a call to {} fails",
                        stubbed.join(", "),
                        refused.join(", ")
                    ),
                }
            }
            // The link below fails on it, with the loader's words.
            _ => format!("refused: refractium grants {PACKAGE} and WASI only; the proxy would not load the file"),
        };
        report.say(format!("  {name:<width$}  {line}"));
    }
}

/// ", and N other functions" when `list` has more than its first.
fn more(list: &[String]) -> String {
    match list.len() {
        0 | 1 => String::new(),
        2 => format!(", as does {}", list[1]),
        3 => format!(", as do {} and one other function", list[1]),
        n => format!(", as do {} and {} other functions", list[1], n - 2),
    }
}

/// What a granted WASI interface gives a plugin.
fn wasi_meaning(iface: &str) -> &'static str {
    match iface {
        "wasi:cli/environment" => "no variables, no arguments, no working directory",
        "wasi:cli/exit" => "exiting ends the call as a failure",
        "wasi:cli/stdin" => "a stream that is already closed",
        "wasi:cli/stdout" => "lines written go to the proxy's log (INFO)",
        "wasi:cli/stderr" => "lines written go to the proxy's log (WARN)",
        "wasi:filesystem/preopens" => "no directories",
        "wasi:clocks/monotonic-clock" => "it can be read; waiting on it fails the call",
        "wasi:clocks/wall-clock" => "it can be read",
        "wasi:random/random" | "wasi:random/insecure" | "wasi:random/insecure-seed" => {
            "random bytes, at most 64 KiB a call"
        }
        "wasi:io/poll" => "every pollable is ready: nothing waits",
        "wasi:io/streams" => "the streams of stdin, stdout and stderr",
        "wasi:io/error" => "errors of those streams",
        _ if iface.starts_with("wasi:cli/terminal-") => "no terminal",
        _ => "answered at once, touching nothing",
    }
}

/// An export whose types differ from this refractium's WIT: the loader's
/// words, and what they mean.
fn mismatch(which: &str, detail: &str, served: &str, report: &mut Report) {
    let hint = variant_hint(detail).map(|h| format!(" ({h})")).unwrap_or_default();
    report.problem(format!(
        "its {which} interface does not match the one this refractium serves: {detail}{hint}. It was built \
         against another copy of wit/plugin.wit that also calls itself {PACKAGE}@{served} (a function, case, field or \
         parameter differs); rebuild it against this refractium's wit/plugin.wit. The proxy would skip it"
    ));
}

/// wasmtime names a variant that differs by its number of cases
/// (`expected variant of 4 cases, found 3 cases`): say which variant of
/// the WIT has that many.
fn variant_hint(detail: &str) -> Option<String> {
    let expected: usize = detail.split("expected variant of ").nth(1)?.split(' ').next()?.parse().ok()?;
    let found = detail.split("found ").nth(1).and_then(|f| f.split(' ').next()).unwrap_or("another number of");
    let names: Vec<String> = wit_variants()
        .into_iter()
        .filter(|(_, cases)| cases.len() == expected)
        .map(|(name, cases)| format!("`{name}` ({})", cases.join(", ")))
        .collect();
    if names.is_empty() {
        return None;
    }
    Some(format!("in wit/plugin.wit, {} has {expected} cases; the plugin's has {found}", names.join(" or ")))
}

/// The variants of the WIT and their cases, read off its text.
fn wit_variants() -> Vec<(String, Vec<String>)> {
    let mut variants = Vec::new();
    let mut lines = WIT.lines().map(str::trim);
    while let Some(line) = lines.next() {
        let Some(name) = line.strip_prefix("variant ").and_then(|rest| rest.strip_suffix('{')) else { continue };
        let mut cases = Vec::new();
        for line in lines.by_ref() {
            if line.starts_with('}') {
                break;
            }
            if line.is_empty() || line.starts_with("//") {
                continue;
            }
            let case = line.split(['(', ',']).next().unwrap_or(line).trim();
            cases.push(case.to_string());
        }
        variants.push((name.trim().to_string(), cases));
    }
    variants
}

/// `init` failed (or instantiating for it): say how, and with what config.
fn init_failed(which: &str, json: &str, from: &str, err: &anyhow::Error, served: &str, report: &mut Report) {
    let detail = format!("{err:#}");
    // Types are compared when an instance is made: a mismatch shows there.
    if detail.contains("type mismatch") || detail.contains("failed to convert function to given type") {
        mismatch(which, &detail, served, report);
        return;
    }
    let plain = if detail.starts_with("init refused its config") {
        format!("init({json}) ({from}) returned an error")
    } else if detail.starts_with("instantiation") {
        "the plugin could not be instantiated (its start-up code failed before init)".to_string()
    } else {
        format!("init({json}) ({from}) failed")
    };
    report.problem(format!("{plain}, so the proxy would skip the {which}: {detail}"));
}

/// A version string as printed: quoted when empty.
fn printable(version: &str) -> String {
    if version.is_empty() { "\"\" (empty)".into() } else { version.to_string() }
}

/// `1234567` → `1,234,567`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The version comes from the WIT the bindings were made from, and is
    /// the one the loader looks for.
    #[test]
    fn served_version_is_the_wit_package_version() {
        let v = served_version();
        assert!(v.split('.').count() == 3, "{v}");
        assert!(WIT.contains(&format!("package refractium:plugin@{v};")));
    }

    #[test]
    fn headers_and_numbers() {
        assert!(matches!(Header::of(b"\0asm\x01\0\0\0"), Header::Module));
        assert!(matches!(Header::of(b"\0asm\x0d\0\x01\0"), Header::Component));
        assert!(matches!(Header::of(b"hello world"), Header::NotWasm));
        assert!(matches!(Header::of(b"\0asm"), Header::NotWasm));
        assert_eq!(
            (thousands(0), thousands(999), thousands(1000), thousands(1234567)),
            ("0".into(), "999".into(), "1,000".into(), "1,234,567".into())
        );
        assert_eq!(ours("refractium:plugin/hook@0.2.0"), Some(("hook", "0.2.0")));
        assert_eq!(ours("wasi:cli/run@0.2.0"), None);
        let variants = wit_variants();
        let action = variants.iter().find(|(n, _)| n == "action").expect("action");
        assert_eq!(action.1, ["forward", "respond", "close", "pass"]);
        let verdict = variants.iter().find(|(n, _)| n == "verdict").expect("verdict");
        assert_eq!(verdict.1, ["matched", "need-more", "no-match"]);
    }
}
