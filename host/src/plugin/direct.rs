//! Built-in detectors called through their core module.
//!
//! A built-in is a component like any plugin file, but it is our own code: it
//! makes no WASI call and exports exactly `refractium:plugin/detector@0.1.0`.
//! Inside the component sits one main core module that implements the
//! export with the canonical ABI (`cabi_realloc`, the export, its
//! post-return); the rest of the component only wires WASI to it. Calling
//! that module directly, with the canonical ABI for our two functions written
//! out here, costs one guest entry per argument, one for the call and one for
//! the post-return — without the component layer's per-call lookups of
//! functions, options and memories, which cost more than the detection
//! itself when the proxy wakes cache-cold for one connection.
//!
//! A built-in decides from the bytes and the transport alone (the corpus
//! tests hold each to it, and [`super::detector`]'s first-byte tables rely on
//! it too), so the peer's addresses and listener name go in as empty
//! strings: three guest allocations, copies and frees fewer per call.
//! `tests::direct_calls_agree_with_the_component`, which gives the component
//! the real peer, fails for a built-in that starts to read it.
//!
//! The sandbox is the same: same engine, store, memory cap, deadline and
//! traps; the host interface (`log`) and the `crypto` interface are the
//! imports that do anything, `wasi:random/insecure-seed` seeds hash maps,
//! and every other import traps.
//! Everything read back from the guest is checked as the canonical ABI says
//! (alignment, bounds, UTF-8, discriminants); a violation fails the call like
//! a trap. Attributes the caller does not read ([`Wanted`]) are not read
//! back: only their key is compared. `tests::direct_calls_agree_with_the_component`
//! holds this path to the component's answers for every built-in.
//!
//! Layout of the values crossing (wasm32, canonical ABI): a `string` or
//! `list` is `(ptr: u32, len: u32)`, alignment 4. `peer` flattens to four
//! arguments after `data`. `verdict` comes back through a pointer: a `u8`
//! discriminant at 0 (`matched`, `need-more`, `no-match`), its payload at 4;
//! `detection` is `protocol` at 0, `sni` (an `option<string>`: `u8` at 8,
//! string at 12), `alpn` at 20 (elements of 8 bytes), `attributes` at 28
//! (elements of 16 bytes: two strings). `init`'s `result<plugin-info,
//! string>` is a `u8` at 0 (`ok`, `err`) and its payload at 4.
//!
//! The `crypto` imports take their `list<u8>` arguments as `(ptr, len)`
//! pairs (`expand`'s `u32` among them in WIT order) and a last argument: the
//! guest's return area, where a `list<u8>` result is `(ptr, len)` at 0 and an
//! `option<list<u8>>` a `u8` at 0 (`none`, `some`) with the list at 4. The
//! result's bytes go in memory the host asks the guest's `cabi_realloc` for,
//! as the component layer would.

use super::bindings::refractium::plugin::types::Level;
use super::detector::{Detection, Info, Peer, Verdict, Wanted};
use super::sandbox::{Bounds, HostState, MAX_ALPN, MAX_ATTRIBUTES, MAX_STRING};
use anyhow::Context as _;
use refractium_plugin_sdk::crypto::native as crypto;
use wasmtime::{AsContextMut, Caller, InstancePre, Linker, Memory, Module, Store, TypedFunc};

pub mod hook;
mod wasi;

const HOST: &str = "refractium:plugin/host@0.1.0";
const CRYPTO: &str = "refractium:plugin/crypto@0.1.0";
const DETECT: &str = "refractium:plugin/detector@0.1.0#detect";
const POST_DETECT: &str = "cabi_post_refractium:plugin/detector@0.1.0#detect";
const INIT: &str = "refractium:plugin/detector@0.1.0#init";
const POST_INIT: &str = "cabi_post_refractium:plugin/detector@0.1.0#init";
const REALLOC: &str = "cabi_realloc";
/// An empty `string` as the canonical ABI passes one: no allocation, and the
/// pointer a guest's `cabi_realloc` answers for zero bytes of alignment 1.
const EMPTY: (u32, u32) = (1, 0);

/// The core module of `component` that implements the detector export.
pub fn main_module(component: &[u8]) -> anyhow::Result<&[u8]> {
    module_exporting(component, DETECT)
}

/// Largest main module of a plugin file called directly: compiling it costs
/// a second compile of most of the component, and its code stays in memory
/// beside the component's.
const MAX_FILE_MODULE: usize = 4 << 20;

/// The main module of a plugin file, if its detector may be called through
/// it (see [`Pre::for_file`]): it is at most [`MAX_FILE_MODULE`] bytes and
/// imports only functions (a module that imports its memory or table
/// shares them with other modules of the component, which the direct path
/// does not instantiate).
pub fn file_main_module(component: &[u8]) -> anyhow::Result<&[u8]> {
    file_module_exporting(component, DETECT)
}

/// [`file_main_module`] for the module that exports `export`.
fn file_module_exporting<'c>(component: &'c [u8], export: &str) -> anyhow::Result<&'c [u8]> {
    let module = module_exporting(component, export)?;
    if module.len() > MAX_FILE_MODULE {
        anyhow::bail!("its main module is over {MAX_FILE_MODULE} bytes");
    }
    for payload in wasmparser::Parser::new(0).parse_all(module) {
        if let wasmparser::Payload::ImportSection(section) = payload? {
            for imports in section {
                for import in imports? {
                    let (_, import) = import?;
                    if !matches!(import.ty, wasmparser::TypeRef::Func(_) | wasmparser::TypeRef::FuncExact(_)) {
                        anyhow::bail!("its main module imports `{}#{}`, not a function", import.module, import.name);
                    }
                }
            }
        }
    }
    Ok(module)
}

/// A direct call of a plugin file reached an import the direct path does
/// not serve (WASI, another module of the component): the call is made
/// again through the component, which has it. A detector is a pure
/// function of its arguments, so the second call answers as the first
/// would have.
#[derive(Debug)]
pub struct NeedsComponent(pub String);

impl std::fmt::Display for NeedsComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "it called `{}`, which only its component serves", self.0)
    }
}

impl std::error::Error for NeedsComponent {}

/// The core module of `component` that exports `export`.
fn module_exporting<'c>(component: &'c [u8], export: &str) -> anyhow::Result<&'c [u8]> {
    for payload in wasmparser::Parser::new(0).parse_all(component) {
        if let wasmparser::Payload::ModuleSection { unchecked_range, .. } = payload.context("reading the component")? {
            let module = component.get(unchecked_range).context("module section out of bounds")?;
            if exports(module, export)? {
                return Ok(module);
            }
        }
    }
    anyhow::bail!("no core module of the component exports `{export}`")
}

/// Whether the core module `module` exports `name` (nested modules are not
/// looked into: a core module has none).
fn exports(module: &[u8], name: &str) -> anyhow::Result<bool> {
    for payload in wasmparser::Parser::new(0).parse_all(module) {
        if let wasmparser::Payload::ExportSection(section) = payload? {
            for export in section {
                if export?.name == name {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

/// A core module, linked and ready to instantiate: a built-in's, or a
/// plugin file's (`file`).
pub struct Pre {
    pre: InstancePre<HostState>,
    file: bool,
}

/// Whose module is linked, and so what its imports get.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Builtin,
    DetectorFile,
    HookFile,
}

impl Pre {
    /// Link a built-in's `module`: `log`, `crypto`, the seed, and a trap
    /// for every other import.
    pub fn new(module: &Module) -> anyhow::Result<Pre> {
        Self::link(module, Kind::Builtin)
    }

    /// Link the main module of a plugin file (one [`file_main_module`]
    /// accepted) as a built-in's, except that an import the direct path
    /// does not serve fails the call with [`NeedsComponent`] instead of
    /// trapping, and that `detect` gets the real peer.
    pub fn for_file(module: &Module) -> anyhow::Result<Pre> {
        Self::link(module, Kind::DetectorFile)
    }

    /// Link the main module of a hook plugin file (one
    /// [`hook::file_module`] accepted) as a built-in's, with the WASI
    /// functions of [`wasi`] besides; an import served by neither is an
    /// error: the hook is then called through its component. Its sessions
    /// get all their arguments.
    pub fn for_hook_file(module: &Module) -> anyhow::Result<Pre> {
        Self::link(module, Kind::HookFile)
    }

    fn link(module: &Module, kind: Kind) -> anyhow::Result<Pre> {
        let mut linker = Linker::new(module.engine());
        let file = kind != Kind::Builtin;
        for import in module.imports() {
            let served = match (import.module(), import.name()) {
                (HOST, "log") => {
                    linker.func_wrap(HOST, "log", log).map_err(anyhow::Error::from)?;
                    true
                }
                (CRYPTO, name) => link_crypto(&mut linker, name).map_err(anyhow::Error::from)?,
                (seed, name @ "insecure-seed") if seed.starts_with("wasi:random/insecure-seed@") => {
                    linker.func_wrap(seed, name, insecure_seed).map_err(anyhow::Error::from)?;
                    true
                }
                (hook::RESOURCES, name @ hook::RESOURCE_NEW) => {
                    linker.func_wrap(hook::RESOURCES, name, hook::resource_new).map_err(anyhow::Error::from)?;
                    true
                }
                (hook::RESOURCES, name @ hook::RESOURCE_DROP) if kind == Kind::HookFile => {
                    linker.func_wrap(hook::RESOURCES, name, hook::resource_drop).map_err(anyhow::Error::from)?;
                    true
                }
                (module, name) if kind == Kind::HookFile => {
                    wasi::define(&mut linker, module, name).map_err(anyhow::Error::from)?
                }
                _ => false,
            };
            if !served && kind == Kind::HookFile {
                anyhow::bail!(
                    "its main module imports `{}#{}`, which only its component serves",
                    import.module(),
                    import.name()
                );
            }
            if let (false, Kind::DetectorFile, wasmtime::ExternType::Func(ty)) = (served, kind, import.ty()) {
                let what = format!("{}#{}", import.module(), import.name());
                linker
                    .func_new(import.module(), import.name(), ty, move |_, _, _| {
                        Err(wasmtime::Error::new(NeedsComponent(what.clone())))
                    })
                    .map_err(anyhow::Error::from)?;
            }
        }
        linker.define_unknown_imports_as_traps(module).map_err(anyhow::Error::from)?;
        let pre = linker.instantiate_pre(module).map_err(anyhow::Error::from)?;
        Ok(Pre { pre, file })
    }

    /// A fresh instance in `store`, and its memory and allocator. A plugin
    /// file's module that exports `_initialize` (a WASI reactor: C, for one)
    /// gets it called first, as the reactor convention asks.
    fn instance(&self, store: &mut Store<HostState>) -> wasmtime::Result<(wasmtime::Instance, Guest)> {
        let instance = self.pre.instantiate(&mut *store)?;
        let memory = instance
            .get_memory(&mut *store, "memory")
            .ok_or_else(|| wasmtime::format_err!("the module exports no `memory`"))?;
        let guest: Guest = (memory, instance.get_typed_func(&mut *store, REALLOC)?);
        store.data_mut().guest = Some(guest.clone());
        if self.file
            && let Some(initialize) = instance.get_func(&mut *store, "_initialize")
        {
            initialize.typed::<(), ()>(&*store)?.call(&mut *store, ())?;
        }
        Ok((instance, guest))
    }

    /// A fresh instance in `store`, with its exports looked up once.
    pub fn instantiate(&self, store: &mut Store<HostState>) -> wasmtime::Result<Exports> {
        let (instance, guest) = self.instance(store)?;
        Ok(Exports {
            guest,
            init: instance.get_typed_func(&mut *store, INIT)?,
            post_init: instance.get_typed_func(&mut *store, POST_INIT)?,
            detect: instance.get_typed_func(&mut *store, DETECT)?,
            post_detect: instance.get_typed_func(&mut *store, POST_DETECT)?,
            file: self.file,
        })
    }
}

/// `detect`'s flattened parameters: `data`, the peer's three strings, its
/// transport.
type DetectParams = (u32, u32, u32, u32, u32, u32, u32, u32, u32);

/// The guest's `cabi_realloc(old_ptr, old_size, align, new_size) -> ptr`.
type Realloc = TypedFunc<(u32, u32, u32, u32), u32>;

/// What an import needs to hand bytes to the guest: its memory and
/// allocator (kept in the store's [`HostState`]).
pub type Guest = (Memory, Realloc);

/// `init(config)`, lowered: the config's `(ptr, len)`, the return area.
type InitFunc = TypedFunc<(u32, u32), u32>;

/// One instance's exports.
pub struct Exports {
    guest: Guest,
    init: InitFunc,
    post_init: TypedFunc<u32, ()>,
    detect: TypedFunc<DetectParams, u32>,
    post_detect: TypedFunc<u32, ()>,
    /// A plugin file's: it gets the peer's strings.
    file: bool,
}

impl Exports {
    /// `init(config) -> result<plugin-info, string>`.
    pub fn init(&self, store: &mut Store<HostState>, config: &str) -> wasmtime::Result<Result<Info, String>> {
        init(store, &self.guest, (&self.init, &self.post_init), config)
    }

    /// `detect(data, peer) -> verdict`.
    pub fn detect(&self, store: &mut Store<HostState>, data: &[u8], peer: &Peer) -> wasmtime::Result<Verdict> {
        let (data_ptr, data_len) = put(&mut *store, &self.guest, data)?;
        // A built-in's peer strings go in empty: see the module's doc.
        let ((client_ptr, client_len), (local_ptr, local_len), (listener_ptr, listener_len)) = if self.file {
            (
                put(&mut *store, &self.guest, peer.client_addr().as_bytes())?,
                put(&mut *store, &self.guest, peer.local_addr().as_bytes())?,
                put(&mut *store, &self.guest, peer.listener().as_bytes())?,
            )
        } else {
            (EMPTY, EMPTY, EMPTY)
        };
        // `transport`'s cases in WIT order: tcp, udp.
        let transport = u32::from(peer.is_udp());
        let params =
            (data_ptr, data_len, client_ptr, client_len, local_ptr, local_len, listener_ptr, listener_len, transport);
        let ret = self.detect.call(&mut *store, params)?;
        let verdict = lift_verdict(&View::new(self.guest.0.data(&*store), ret, 40)?, peer.wanted())?;
        self.post_detect.call(&mut *store, ret)?;
        Ok(verdict)
    }
}

/// `init(config) -> result<plugin-info, string>` of a detector or a hook:
/// the export and its post-return.
fn init(
    store: &mut Store<HostState>,
    guest: &Guest,
    (init, post_init): (&InitFunc, &TypedFunc<u32, ()>),
    config: &str,
) -> wasmtime::Result<Result<Info, String>> {
    let (ptr, len) = put(&mut *store, guest, config.as_bytes())?;
    let ret = init.call(&mut *store, (ptr, len))?;
    let answer = {
        let view = View::new(guest.0.data(&*store), ret, 20)?;
        let mut bounds = Bounds::default();
        match view.u8(0)? {
            0 => Ok(Info {
                name: view.string(4, &mut bounds, "name")?,
                version: view.string(12, &mut bounds, "version")?,
            }),
            1 => {
                let text = str_in(view.memory, view.u32(4)? as usize, view.u32(8)? as usize)?;
                Err(super::sandbox::truncate(text, MAX_STRING).to_string())
            }
            d => wasmtime::bail!("invalid `result` discriminant {d}"),
        }
    };
    post_init.call(&mut *store, ret)?;
    Ok(answer)
}

/// Copy `bytes` (a `list<u8>` or a `string`: alignment 1) into memory the
/// guest allocates for them with its `cabi_realloc`, as the canonical ABI
/// lowers them: an export's arguments, an import's result. No bytes need no
/// call: [`EMPTY`] is what the allocator would answer.
fn put(mut cx: impl AsContextMut<Data = HostState>, (memory, realloc): &Guest, bytes: &[u8]) -> wasmtime::Result<List> {
    if bytes.is_empty() {
        return Ok(EMPTY);
    }
    let len = u32::try_from(bytes.len())?;
    let ptr = realloc.call(&mut cx, (0, 0, 1, len))?;
    memory.write(&mut cx, ptr as usize, bytes)?;
    Ok((ptr, len))
}

/// The verdict in the return area `view`, with the attributes `wanted` (the
/// others are left in guest memory, measured against the output bounds but
/// not copied).
fn lift_verdict(view: &View<'_>, wanted: &Wanted) -> wasmtime::Result<Verdict> {
    Ok(match view.u8(0)? {
        0 => {
            let (alpn_at, alpn_len) = view.list(24, 8)?;
            let (attrs_at, attrs_len) = view.list(32, 16)?;
            Bounds::count("ALPN entries", alpn_len, MAX_ALPN)?;
            Bounds::count("attributes", attrs_len, MAX_ATTRIBUTES)?;
            let mut bounds = Bounds::default();
            let protocol = view.string(4, &mut bounds, "protocol")?;
            let sni = match view.u8(12)? {
                0 => None,
                1 => Some(view.string(16, &mut bounds, "SNI")?),
                d => wasmtime::bail!("invalid `option` discriminant {d}"),
            };
            let alpn = (0..alpn_len)
                .map(|i| view.string_at(alpn_at + 8 * i, &mut bounds, "ALPN entry"))
                .collect::<wasmtime::Result<_>>()?;
            let mut attributes = Vec::new();
            for i in 0..attrs_len {
                let at = attrs_at + 16 * i;
                let (key, value) = (view.bytes_at(at)?, view.bytes_at(at + 8)?);
                bounds.string("attribute key", key.len())?;
                bounds.string("attribute value", value.len())?;
                // An attribute nobody reads is not lifted at all: its key is
                // only compared, its bytes never leave the sandbox.
                if wanted.wants(key) {
                    attributes.push((utf8(key)?.to_string(), utf8(value)?.to_string()));
                }
            }
            Verdict::Matched(Detection { protocol, sni, alpn, attributes })
        }
        1 => Verdict::NeedMore(view.u32(4)?),
        2 => Verdict::NoMatch,
        d => wasmtime::bail!("invalid `verdict` discriminant {d}"),
    })
}

/// A return area in guest memory: offsets are relative to `base`, and
/// pointers read from it are checked against the whole memory.
struct View<'a> {
    memory: &'a [u8],
    base: usize,
}

impl<'a> View<'a> {
    fn new(memory: &'a [u8], ptr: u32, size: usize) -> wasmtime::Result<Self> {
        let base = ptr as usize;
        if !base.is_multiple_of(4) || base.checked_add(size).is_none_or(|end| end > memory.len()) {
            wasmtime::bail!("return area out of bounds or misaligned");
        }
        Ok(View { memory, base })
    }

    fn bytes(&self, at: usize, len: usize) -> wasmtime::Result<&'a [u8]> {
        bytes_in(self.memory, at, len)
    }

    fn u8(&self, offset: usize) -> wasmtime::Result<u8> {
        Ok(self.bytes(self.base + offset, 1)?[0])
    }

    fn u32_at(&self, at: usize) -> wasmtime::Result<u32> {
        let b = self.bytes(at, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u32(&self, offset: usize) -> wasmtime::Result<u32> {
        self.u32_at(self.base + offset)
    }

    /// The bytes of the string or list whose `(ptr, len)` is at absolute
    /// address `at`.
    fn bytes_at(&self, at: usize) -> wasmtime::Result<&'a [u8]> {
        let (ptr, len) = (self.u32_at(at)? as usize, self.u32_at(at + 4)? as usize);
        bytes_in(self.memory, ptr, len)
    }

    /// The string whose `(ptr, len)` is at absolute address `at`, measured
    /// against `bounds` before it is copied.
    fn string_at(&self, at: usize, bounds: &mut Bounds, what: &str) -> wasmtime::Result<String> {
        let bytes = self.bytes_at(at)?;
        bounds.string(what, bytes.len())?;
        Ok(utf8(bytes)?.to_string())
    }

    fn string(&self, offset: usize, bounds: &mut Bounds, what: &str) -> wasmtime::Result<String> {
        self.string_at(self.base + offset, bounds, what)
    }

    /// A list at `offset` of elements of `size` bytes (alignment 4): its
    /// absolute address and length, checked to lie in memory.
    fn list(&self, offset: usize, size: usize) -> wasmtime::Result<(usize, usize)> {
        let (ptr, len) = (self.u32(offset)? as usize, self.u32(offset + 4)? as usize);
        if !ptr.is_multiple_of(4) {
            wasmtime::bail!("misaligned list");
        }
        self.bytes(ptr, len.checked_mul(size).ok_or_else(|| wasmtime::format_err!("list too long"))?)?;
        Ok((ptr, len))
    }
}

/// `len` bytes at `at` in guest memory, checked to lie in it.
fn bytes_in(memory: &[u8], at: usize, len: usize) -> wasmtime::Result<&[u8]> {
    at.checked_add(len)
        .and_then(|end| memory.get(at..end))
        .ok_or_else(|| wasmtime::format_err!("pointer out of bounds"))
}

/// The UTF-8 string of `len` bytes at `at` in guest memory.
fn str_in(memory: &[u8], at: usize, len: usize) -> wasmtime::Result<&str> {
    utf8(bytes_in(memory, at, len)?)
}

/// Guest bytes that a `string` must hold: UTF-8.
fn utf8(bytes: &[u8]) -> wasmtime::Result<&str> {
    std::str::from_utf8(bytes).map_err(|_| wasmtime::format_err!("invalid UTF-8"))
}

/// The guest's memory, as seen from an import.
fn memory(caller: &mut Caller<'_, HostState>) -> wasmtime::Result<Memory> {
    caller
        .get_export("memory")
        .and_then(|export| export.into_memory())
        .ok_or_else(|| wasmtime::format_err!("the module exports no `memory`"))
}

/// `host.log(level, message)`, lowered: `(level, ptr, len)`.
fn log(mut caller: Caller<'_, HostState>, level: u32, ptr: u32, len: u32) -> wasmtime::Result<()> {
    let level = match level {
        0 => Level::Trace,
        1 => Level::Debug,
        2 => Level::Info,
        3 => Level::Warn,
        4 => Level::Error,
        d => wasmtime::bail!("invalid `level` discriminant {d}"),
    };
    let memory = memory(&mut caller)?;
    let mut invalid = None;
    caller.data().log_with(level, || match str_in(memory.data(&caller), ptr as usize, len as usize) {
        Ok(text) => Some(text.into()),
        Err(err) => {
            invalid = Some(err);
            None
        }
    });
    invalid.map_or(Ok(()), Err)
}

/// A `list<u8>` argument, lowered: `(ptr, len)`.
type List = (u32, u32);

/// Define the `crypto` function `name`; whether it is one (an unknown name
/// is left undefined).
fn link_crypto(linker: &mut Linker<HostState>, name: &str) -> wasmtime::Result<bool> {
    match name {
        "hkdf-sha256-extract" => linker.func_wrap(
            CRYPTO,
            name,
            |caller: Caller<'_, HostState>, salt_p: u32, salt_l: u32, ikm_p: u32, ikm_l: u32, ret: u32| {
                crypto_call(caller, &[(salt_p, salt_l), (ikm_p, ikm_l)], ret, Ret::List, |a| {
                    Some(crypto::hkdf_sha256_extract(a[0], a[1]).to_vec())
                })
            },
        ),
        "hkdf-sha256-expand" => linker.func_wrap(
            CRYPTO,
            name,
            |caller: Caller<'_, HostState>, prk_p: u32, prk_l: u32, info_p: u32, info_l: u32, len: u32, ret: u32| {
                crypto_call(caller, &[(prk_p, prk_l), (info_p, info_l)], ret, Ret::Option, |a| {
                    crypto::hkdf_sha256_expand(a[0], a[1], len as usize)
                })
            },
        ),
        "aes128-ecb-encrypt" => linker.func_wrap(
            CRYPTO,
            name,
            |caller: Caller<'_, HostState>, key_p: u32, key_l: u32, data_p: u32, data_l: u32, ret: u32| {
                crypto_call(caller, &[(key_p, key_l), (data_p, data_l)], ret, Ret::Option, |a| {
                    crypto::aes128_ecb_encrypt(a[0], a[1])
                })
            },
        ),
        "aes128-gcm-open" => linker.func_wrap(
            CRYPTO,
            name,
            |caller: Caller<'_, HostState>,
             key_p: u32,
             key_l: u32,
             nonce_p: u32,
             nonce_l: u32,
             aad_p: u32,
             aad_l: u32,
             sealed_p: u32,
             sealed_l: u32,
             ret: u32| {
                let args = [(key_p, key_l), (nonce_p, nonce_l), (aad_p, aad_l), (sealed_p, sealed_l)];
                crypto_call(caller, &args, ret, Ret::Option, |a| crypto::aes128_gcm_open(a[0], a[1], a[2], a[3]))
            },
        ),
        _ => return Ok(false),
    }
    .map(|_| true)
}

/// How a `crypto` function's result is laid out in the return area.
#[derive(Clone, Copy, PartialEq)]
enum Ret {
    /// `list<u8>`.
    List,
    /// `option<list<u8>>`.
    Option,
}

/// Serve one `crypto` call: read the `list<u8>` arguments from guest
/// memory, compute, and write the result into the return area at `ret`.
fn crypto_call(
    mut caller: Caller<'_, HostState>,
    args: &[List],
    ret: u32,
    shape: Ret,
    compute: impl FnOnce(&[&[u8]]) -> Option<Vec<u8>>,
) -> wasmtime::Result<()> {
    if !ret.is_multiple_of(4) {
        wasmtime::bail!("misaligned return area");
    }
    // What the component layer lets one call copy (a plugin file may make
    // this call): a larger input would make the host hash or encrypt
    // megabytes in one uninterruptible step.
    let total = args.iter().map(|&(_, len)| len as usize).sum::<usize>();
    if total > super::component::COPY_LIMIT {
        wasmtime::bail!("`crypto` arguments of {total} bytes, over {} in one call", super::component::COPY_LIMIT);
    }
    let guest =
        caller.data().guest.clone().ok_or_else(|| wasmtime::format_err!("an import called before the instance was"))?;
    let memory = guest.0;
    let out = {
        let data = memory.data(&caller);
        let mut slices: smallvec::SmallVec<[&[u8]; 4]> = smallvec::SmallVec::new();
        for &(ptr, len) in args {
            slices.push(bytes_in(data, ptr as usize, len as usize)?);
        }
        compute(&slices)
    };
    let mut area = [0u8; 12];
    let at = match (shape, &out) {
        (Ret::List, _) => 0,
        (Ret::Option, None) => {
            memory.write(&mut caller, ret as usize, &[0])?;
            return Ok(());
        }
        (Ret::Option, Some(_)) => {
            area[0] = 1;
            4
        }
    };
    let (ptr, len) = put(&mut caller, &guest, out.as_deref().unwrap_or_default())?;
    area[at..at + 4].copy_from_slice(&ptr.to_le_bytes());
    area[at + 4..at + 8].copy_from_slice(&len.to_le_bytes());
    memory.write(&mut caller, ret as usize, &area[..at + 8])?;
    Ok(())
}

/// `wasi:random/insecure-seed.insecure-seed() -> tuple<u64, u64>`, lowered:
/// the two words are written where `ret` points.
fn insecure_seed(mut caller: Caller<'_, HostState>, ret: u32) -> wasmtime::Result<()> {
    if !ret.is_multiple_of(8) {
        wasmtime::bail!("misaligned return area");
    }
    let mut words = [0u8; 16];
    words[..8].copy_from_slice(&rand::random::<u64>().to_le_bytes());
    words[8..].copy_from_slice(&rand::random::<u64>().to_le_bytes());
    memory(&mut caller)?.write(&mut caller, ret as usize, &words)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::{cache, loader::builtin};
    use std::sync::Arc;

    /// A hook file's main module is called directly only when the direct
    /// path serves every import it has: the WASI functions a standard
    /// library imports link; one more (a filesystem call) sends the hook to
    /// its component, the error naming the import; so does a served name
    /// imported with another signature.
    #[test]
    fn a_hook_file_is_called_directly_only_if_every_import_is_served() {
        let module = |imports: &str| {
            let text = format!("(module {imports} (memory (export \"memory\") 1))");
            Module::new(crate::plugin::engine::engine(), wat::parse_str(text).expect("wat")).expect("module")
        };
        let served = r#"
            (import "refractium:plugin/host@0.1.0" "log" (func (param i32 i32 i32)))
            (import "[export]refractium:plugin/hook@0.1.0" "[resource-new]session" (func (param i32) (result i32)))
            (import "[export]refractium:plugin/hook@0.1.0" "[resource-drop]session" (func (param i32)))
            (import "wasi:cli/stderr@0.2.0" "get-stderr" (func (result i32)))
            (import "wasi:io/streams@0.2.3" "[method]output-stream.blocking-write-and-flush" (func (param i32 i32 i32 i32)))
            (import "wasi:io/streams@0.2.0" "[resource-drop]output-stream" (func (param i32)))
            (import "wasi:cli/environment@0.2.0" "get-environment" (func (param i32)))
            (import "wasi:cli/exit@0.2.0" "exit" (func (param i32)))
            (import "wasi:clocks/monotonic-clock@0.2.0" "now" (func (result i64)))
            (import "wasi:clocks/wall-clock@0.2.0" "now" (func (param i32)))
            (import "wasi:random/insecure-seed@0.2.0" "insecure-seed" (func (param i32)))
        "#;
        Pre::for_hook_file(&module(served)).expect("every import served");
        let unserved = r#"(import "wasi:filesystem/preopens@0.2.0" "get-directories" (func (param i32)))"#;
        let err = Pre::for_hook_file(&module(&format!("{served}{unserved}"))).err().expect("refused").to_string();
        assert!(err.contains("wasi:filesystem/preopens@0.2.0#get-directories"), "{err}");
        let retyped = r#"(import "wasi:cli/stderr@0.2.0" "get-stderr" (func (param i32)))"#;
        assert!(Pre::for_hook_file(&module(retyped)).is_err(), "a served name with another signature");
        // A detector file keeps its fallback: the same import links, to
        // fail the call it is reached in.
        Pre::for_file(&module(unserved)).expect("a detector file links whatever it imports");
    }

    /// Every built-in runs with the SDK's call arena, which
    /// `export_detector!` installs: two blocks allocated back to back, with
    /// nothing freed, are adjacent bytes of the arena, where the standard
    /// allocator puts a chunk header between them.
    #[test]
    fn builtins_allocate_from_the_call_arena() {
        for &(name, _, bytes, _, _) in builtin::BUILTINS {
            let module: Module =
                cache::compile(|| main_module(bytes), &cache::hash(bytes), cache::default_dir().as_deref())
                    .expect("compile");
            let pre = Pre::new(&module).expect("link");
            let mut store = Store::new(module.engine(), HostState::new(name.into(), 64 << 20, Arc::default()));
            store.set_epoch_deadline(1 << 40);
            let exports = pre.instantiate(&mut store).expect("instantiate");
            let realloc = &exports.guest.1;
            let first = realloc.call(&mut store, (0, 0, 1, 1)).expect("allocate");
            let second = realloc.call(&mut store, (0, 0, 1, 1)).expect("allocate");
            assert_eq!(second, first + 1, "`{name}` does not allocate from the call arena");
        }
    }
}
