//! What a plugin file may import, decided import by import when it loads.
//!
//! A component lists the interfaces it imports and, inside each, the
//! functions and resources it uses. Each one gets exactly one of:
//!
//! - **granted**: refractium's own interfaces (`refractium:plugin/host`,
//!   `crypto`, `types`), and the WASI functions [`super::wasi`] implements
//!   harmlessly (stdio into the log, an empty environment, clocks that can
//!   be read, random bytes, a filesystem with no directories);
//! - **unreachable**: functions that need a handle the plugin never gets
//!   (`wasi:filesystem/types`, with no preopened directory); linked like
//!   refused ones, not reported;
//! - **refused at the call**: every other function of a `wasi:` interface —
//!   sockets, name lookup, the filesystem, waiting on a clock — is linked to
//!   a function that traps with [`Refused`], naming the import. The call
//!   fails like any plugin failure (the detector answers `no-match`, the
//!   failure is logged, counted and accounted to the breaker). Language
//!   runtimes import such interfaces whether or not the plugin uses them,
//!   so refusing them at load would turn away plugins that never call them;
//! - **refused at load**: an import outside `wasi:` and `refractium:plugin`
//!   (no host grants it), or an import that is not an interface.
//!
//! The linker is built per plugin file, from its own imports, under their
//! exact names and versions: nothing the plugin does not import is linked.

use super::bindings::refractium::plugin::{crypto, types::Level};
use super::sandbox::HostState;
use super::wasi;
use anyhow::{Context as _, bail};
use wasmtime::StoreContextMut;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, HasSelf, Linker, LinkerInstance, ResourceType, WasmStr};

/// Interfaces of WASI that [`super::wasi`] implements (some of their
/// functions may still be refused there, e.g. waiting on a clock).
const GRANTED_WASI: &[&str] = &[
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:filesystem/preopens",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:clocks/monotonic-clock",
    "wasi:clocks/wall-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
];

/// A plugin called an import refractium does not grant, or asked a granted
/// one for more than it gives: the call traps with this.
#[derive(Debug, Clone)]
pub struct Refused(String);

impl Refused {
    /// `import` (e.g. `wasi:cli/exit#exit`) was called and refused because `why`.
    pub fn new(import: &str, why: impl std::fmt::Display) -> Self {
        Refused(format!("called {import}: {why}"))
    }

    /// `import` is not granted at all.
    pub fn not_granted(import: &str) -> Self {
        Refused(format!("called {import}, which refractium does not grant"))
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// Stands for every resource type of an interface that is not granted: no
/// handle of it can ever be made, since every function that would make one
/// traps.
struct NotGranted;

/// WASI interfaces none of whose functions a plugin can reach: each takes
/// a handle the plugin never gets (`wasi:filesystem/types` needs a
/// descriptor, and `preopens` gives none). Linked to refusals all the same,
/// but not reported as refused: language runtimes import them whether or
/// not a plugin touches a file.
const UNREACHABLE_WASI: &[&str] = &["wasi:filesystem/types"];

/// Whether every function of the WASI interface `iface` needs a handle a
/// plugin can never hold.
pub fn unreachable(iface: &str) -> bool {
    UNREACHABLE_WASI.contains(&iface)
}

/// A plugin file's linker, and the imports it has that are refused at the call.
pub struct Linked {
    pub linker: Linker<HostState>,
    /// Interfaces (with their version) of which some function is refused.
    pub refused: Vec<String>,
}

/// Build the linker for `component` from its imports.
pub fn link(component: &Component) -> anyhow::Result<Linked> {
    let engine = component.engine();
    let mut linker = Linker::new(engine);
    let mut refused = Vec::new();
    let ty = component.component_type();
    for (name, import) in ty.imports(engine) {
        let iface = name.split('@').next().unwrap_or(name);
        let ComponentItem::ComponentInstance(instance) = import.ty else {
            bail!("it imports `{name}`, which is not an interface; refractium grants interfaces only");
        };
        match iface {
            "refractium:plugin/types" => {
                linker.instance(name)?;
            }
            "refractium:plugin/host" => link_host(linker.instance(name)?, name)?,
            "refractium:plugin/crypto" => {
                crypto::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| state)
                    .map_err(anyhow::Error::from)
                    .context("linking refractium:plugin/crypto")?;
            }
            _ if iface.starts_with("wasi:") => {
                let granted = GRANTED_WASI.contains(&iface);
                let mut linking = linker.instance(name)?;
                let mut some_refused = false;
                for (item, export) in instance.exports(engine) {
                    match export.ty {
                        ComponentItem::ComponentFunc(_) => {
                            if !(granted && wasi::define(&mut linking, iface, item)?) {
                                refuse(&mut linking, name, item)?;
                                some_refused |= !unreachable(iface);
                            }
                        }
                        ComponentItem::Resource(_) => {
                            let host = wasi::resource(item).unwrap_or(ResourceType::host::<NotGranted>());
                            linking.resource(item, host, |_, _| Ok(()))?;
                        }
                        ComponentItem::Type(_) => {}
                        _ => bail!("it imports `{name}`, whose `{item}` is neither a function nor a type"),
                    }
                }
                if some_refused {
                    refused.push(name.to_string());
                }
            }
            _ => bail!("it imports {name}, which refractium does not grant"),
        }
    }
    Ok(Linked { linker, refused })
}

/// `func` of `import` traps with [`Refused`] whatever it is given.
fn refuse(linking: &mut LinkerInstance<'_, HostState>, import: &str, func: &str) -> anyhow::Result<()> {
    let refusal = Refused::not_granted(&format!("{import}#{func}"));
    linking.func_new(func, move |_, _, _, _| Err(refusal.clone().into()))?;
    Ok(())
}

/// `refractium:plugin/host`: `log`. The message stays in the guest's memory
/// until the rate limit lets the line through, and only what the line can
/// hold is copied out.
fn link_host(mut linking: LinkerInstance<'_, HostState>, name: &str) -> anyhow::Result<()> {
    linking
        .func_wrap("log", |cx: StoreContextMut<'_, HostState>, (level, message): (Level, WasmStr)| {
            let mut invalid = None;
            cx.data().log_with(level, || match message.to_str(&cx) {
                Ok(text) => Some(text),
                Err(err) => {
                    invalid = Some(err);
                    None
                }
            });
            invalid.map_or(Ok(()), Err)
        })
        .map_err(anyhow::Error::from)
        .with_context(|| format!("linking {name}"))
}
