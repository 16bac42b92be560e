//! Hooks called through their core module, as built-in detectors are (see
//! [`super`]): the built-ins, and a plugin file whose main module imports
//! only what this path serves ([`file_module`], [`super::Pre::for_hook_file`]:
//! the host, `crypto`, and the WASI functions of [`super::wasi`] that a
//! standard library imports). Such a module implements
//! `refractium:plugin/hook@0.1.0` with the canonical ABI. A hooked short
//! connection makes five calls (session, a chunk each way, the client's
//! end, the drop); through the component layer each pays its lookups and
//! lowerings again, which cost more than a built-in's own work, and every
//! byte a hook forwards is copied out of its memory. Here what a hook
//! forwards is left in its memory ([`Bytes::Guest`]) for the caller to write
//! to the socket from there; the post-return that frees it runs before the
//! instance's next call ([`Exports::settle`]).
//!
//! The session resource: the guest's constructor hands its representation
//! (a pointer into its memory) to the `[resource-new]session` import and
//! returns what that answers, which here is the representation itself; the
//! methods and the destructor take the representation, as the canonical ABI
//! passes a resource to the component that defines it. A guest that drops
//! a session handle it owns (`[resource-drop]session`) runs the destructor,
//! as the component layer would.
//!
//! What goes in: a plugin file's session gets everything it is opened
//! with. A built-in hook reads the client's address and nothing else
//! (`http-headers` writes it into the request; `deny` and `rewrite` read
//! none), so the local address, the listener, the detection and the route
//! go in empty: fewer guest allocations and copies per connection.
//! `direct_hooks_agree_with_the_component` in the loader's tests gives the
//! component the real arguments, and fails for a built-in that starts to
//! read them; `hook_files_called_directly_agree_with_their_component` holds
//! a file's direct calls to its component's answers.
//!
//! Layouts (wasm32, canonical ABI): the constructor's parameters flatten to
//! more than 16 values, so they go in memory the host allocates with the
//! guest's `cabi_realloc` (the guest frees it): `peer` at 0 (three strings,
//! `transport` a `u8` at 24), `detection` at 28 (`protocol`, `sni` an
//! `option<string>`: `u8` at 36 and string at 40, `alpn` at 48 (elements:
//! strings), `attributes` at 56 (elements: two strings)), `route` at 64; 72
//! bytes, alignment 4. `on-data` takes the representation, the direction's
//! case and the chunk `(ptr, len)`; `on-end` the representation and the
//! direction. An `action` comes back through a pointer: a `u8` discriminant
//! at 0 (`forward`, `respond`, `close`, `pass`) and its payload at 4
//! (`respond`'s `data` at 4 and `reason` at 12).

use super::{EMPTY, Guest, List, Pre, View, bytes_in, put, utf8};
use crate::plugin::detector::{Detection, Info, Peer};
use crate::plugin::hook::{Action, COPY_LIMIT, Direction};
use crate::plugin::sandbox::{HostState, TooLarge};
use wasmtime::{Caller, Store, TypedFunc};

/// Where the guest imports the resource's canonical built-ins from.
pub(super) const RESOURCES: &str = "[export]refractium:plugin/hook@0.1.0";
pub(super) const RESOURCE_NEW: &str = "[resource-new]session";
pub(super) const RESOURCE_DROP: &str = "[resource-drop]session";
/// The hook export, in the main core module of a hook component.
pub const EXPORT: &str = "refractium:plugin/hook@0.1.0#init";
const POST_INIT: &str = "cabi_post_refractium:plugin/hook@0.1.0#init";
const NEW: &str = "refractium:plugin/hook@0.1.0#[constructor]session";
const DROP: &str = "refractium:plugin/hook@0.1.0#[dtor]session";
const ON_DATA: &str = "refractium:plugin/hook@0.1.0#[method]session.on-data";
const POST_ON_DATA: &str = "cabi_post_refractium:plugin/hook@0.1.0#[method]session.on-data";
const ON_END: &str = "refractium:plugin/hook@0.1.0#[method]session.on-end";
const POST_ON_END: &str = "cabi_post_refractium:plugin/hook@0.1.0#[method]session.on-end";
/// Size of the constructor's parameters in memory.
const PARAMS: usize = 72;
/// An empty list of 4-aligned elements, as a guest's allocator answers for
/// zero bytes.
const EMPTY_LIST: (u32, u32) = (4, 0);

/// The core module of `component` that implements the hook export.
pub fn main_module(component: &[u8]) -> anyhow::Result<&[u8]> {
    super::module_exporting(component, EXPORT)
}

/// `[resource-new]session(rep) -> handle`: the handle is the representation.
pub(super) fn resource_new(_: Caller<'_, HostState>, rep: u32) -> u32 {
    rep
}

/// `[resource-drop]session(handle)`: the guest dropped a session handle it
/// owned, so the session ends: its destructor runs, as the component layer
/// runs it.
pub(super) fn resource_drop(mut caller: Caller<'_, HostState>, handle: u32) -> wasmtime::Result<()> {
    let dtor = caller
        .get_export(DROP)
        .and_then(|export| export.into_func())
        .ok_or_else(|| wasmtime::format_err!("the module exports no `{DROP}`"))?;
    dtor.typed::<u32, ()>(&caller)?.call(&mut caller, handle)
}

/// The main module of a hook plugin file, if the hook may be called
/// through it: what [`super::file_main_module`] asks of a detector file,
/// and every import one the direct path serves ([`Pre::for_hook_file`]),
/// since a hook's call cannot be made again through the component the way
/// a detector's can.
pub fn file_module(component: &[u8]) -> anyhow::Result<&[u8]> {
    super::file_module_exporting(component, EXPORT)
}

/// A session in a direct instance: its representation in guest memory.
#[derive(Clone, Copy, Debug)]
pub struct Rep(u32);

/// One hook instance's exports.
pub struct Exports {
    guest: Guest,
    init: TypedFunc<(u32, u32), u32>,
    post_init: TypedFunc<u32, ()>,
    new: TypedFunc<u32, u32>,
    drop: TypedFunc<u32, ()>,
    on_data: TypedFunc<(u32, u32, u32, u32), u32>,
    post_on_data: Option<TypedFunc<u32, ()>>,
    on_end: TypedFunc<(u32, u32), u32>,
    post_on_end: Option<TypedFunc<u32, ()>>,
    /// The post-return of the last call, with its argument, until it runs.
    pending: Option<(TypedFunc<u32, ()>, u32)>,
    /// A plugin file's: the constructor gets all its arguments.
    file: bool,
}

impl Pre {
    /// A fresh instance of a hook's core module in `store`, with its
    /// exports looked up once.
    pub fn instantiate_hook(&self, store: &mut Store<HostState>) -> wasmtime::Result<Exports> {
        let (instance, guest) = self.instance(store)?;
        let mut post = |name| instance.get_typed_func::<u32, ()>(&mut *store, name).ok();
        let (post_on_data, post_on_end) = (post(POST_ON_DATA), post(POST_ON_END));
        Ok(Exports {
            guest,
            init: instance.get_typed_func(&mut *store, EXPORT)?,
            post_init: instance.get_typed_func(&mut *store, POST_INIT)?,
            new: instance.get_typed_func(&mut *store, NEW)?,
            drop: instance.get_typed_func(&mut *store, DROP)?,
            on_data: instance.get_typed_func(&mut *store, ON_DATA)?,
            post_on_data,
            on_end: instance.get_typed_func(&mut *store, ON_END)?,
            post_on_end,
            pending: None,
            file: self.file,
        })
    }
}

impl Exports {
    /// `init(config) -> result<plugin-info, string>`.
    pub fn init(&self, store: &mut Store<HostState>, config: &str) -> wasmtime::Result<Result<Info, String>> {
        super::init(store, &self.guest, (&self.init, &self.post_init), config)
    }

    /// `constructor(peer, detection, route)`: a built-in gets the client's
    /// address alone (see the module's doc), a plugin file everything.
    pub fn open(
        &mut self,
        store: &mut Store<HostState>,
        peer: &Peer,
        detection: &Detection,
        route: &str,
    ) -> wasmtime::Result<Rep> {
        self.settle(store)?;
        let mut params = [0u8; PARAMS];
        let mut word = |offset: usize, (ptr, len): List| {
            params[offset..offset + 4].copy_from_slice(&ptr.to_le_bytes());
            params[offset + 4..offset + 8].copy_from_slice(&len.to_le_bytes());
        };
        word(0, put(&mut *store, &self.guest, peer.client_addr().as_bytes())?);
        // Empty lists of 4-aligned elements: the ALPN and the attributes.
        let (mut alpn, mut attributes) = (EMPTY_LIST, EMPTY_LIST);
        if self.file {
            word(8, put(&mut *store, &self.guest, peer.local_addr().as_bytes())?);
            word(16, put(&mut *store, &self.guest, peer.listener().as_bytes())?);
            word(28, put(&mut *store, &self.guest, detection.protocol.as_bytes())?);
            if let Some(sni) = &detection.sni {
                word(40, put(&mut *store, &self.guest, sni.as_bytes())?);
            }
            let alpn_strings: Vec<&[u8]> = detection.alpn.iter().map(|a| a.as_bytes()).collect();
            alpn = self.put_strings(store, &alpn_strings, 1)?;
            let pairs: Vec<&[u8]> =
                detection.attributes.iter().flat_map(|(k, v)| [k.as_bytes(), v.as_bytes()]).collect();
            attributes = self.put_strings(store, &pairs, 2)?;
            word(64, put(&mut *store, &self.guest, route.as_bytes())?);
        } else {
            for offset in [8, 16, 28, 64] {
                // The local address, the listener, the protocol, the route.
                word(offset, EMPTY);
            }
        }
        word(48, alpn);
        word(56, attributes);
        // `transport` (a `u8` at 24: tcp, udp), `sni`'s case (a `u8` at 36).
        params[24] = u8::from(self.file && peer.is_udp());
        params[36] = u8::from(self.file && detection.sni.is_some());
        let (memory, realloc) = &self.guest;
        let at = realloc.call(&mut *store, (0, 0, 4, PARAMS as u32))?;
        memory.write(&mut *store, at as usize, &params)?;
        Ok(Rep(self.new.call(&mut *store, at)?))
    }

    /// A list of `strings.len() / per` elements of `per` strings each
    /// (`list<string>`, `list<tuple<string, string>>`), lowered.
    fn put_strings(&self, store: &mut Store<HostState>, strings: &[&[u8]], per: usize) -> wasmtime::Result<List> {
        if strings.is_empty() {
            return Ok(EMPTY_LIST);
        }
        let mut elements = Vec::with_capacity(strings.len() * 8);
        for bytes in strings {
            let (ptr, len) = put(&mut *store, &self.guest, bytes)?;
            elements.extend_from_slice(&ptr.to_le_bytes());
            elements.extend_from_slice(&len.to_le_bytes());
        }
        let (memory, realloc) = &self.guest;
        let at = realloc.call(&mut *store, (0, 0, 4, u32::try_from(elements.len())?))?;
        memory.write(&mut *store, at as usize, &elements)?;
        Ok((at, u32::try_from(strings.len() / per)?))
    }

    /// `on-data(direction, data) -> action`. The bytes it forwards are
    /// left where the guest put them ([`Bytes::Guest`]) until the next call
    /// into the instance, which first runs the post-return that frees them.
    pub fn on_data(
        &mut self,
        store: &mut Store<HostState>,
        rep: Rep,
        direction: Direction,
        data: &[u8],
    ) -> wasmtime::Result<Action<Bytes>> {
        self.settle(store)?;
        let chunk = put(&mut *store, &self.guest, data)?;
        self.on_data_at(store, rep, direction, chunk)
    }

    /// Room for a chunk of `len` bytes in guest memory, allocated as the
    /// canonical ABI allocates `on-data`'s argument, for the caller to fill
    /// ([`Self::area_mut`]) and hand over ([`Self::on_data_at`]).
    pub fn chunk_area(&mut self, store: &mut Store<HostState>, len: u32) -> wasmtime::Result<u32> {
        self.settle(store)?;
        self.guest.1.call(&mut *store, (0, 0, 1, len))
    }

    /// A chunk area of `old` bytes at `ptr` cut to `new` (not 0) bytes,
    /// where the guest's allocator puts it.
    pub fn shrink_area(&self, store: &mut Store<HostState>, ptr: u32, old: u32, new: u32) -> wasmtime::Result<u32> {
        self.guest.1.call(&mut *store, (ptr, old, 1, new))
    }

    /// The `len` bytes at `ptr` in guest memory.
    pub fn area_mut<'s>(&self, store: &'s mut Store<HostState>, ptr: u32, len: u32) -> wasmtime::Result<&'s mut [u8]> {
        let (at, len) = (ptr as usize, len as usize);
        at.checked_add(len)
            .and_then(|end| self.guest.0.data_mut(store).get_mut(at..end))
            .ok_or_else(|| wasmtime::format_err!("allocation out of bounds"))
    }

    /// `on-data(direction, data)` with the chunk already in guest memory,
    /// at `(ptr, len)`, which the guest now owns.
    pub fn on_data_at(
        &mut self,
        store: &mut Store<HostState>,
        rep: Rep,
        direction: Direction,
        (ptr, len): List,
    ) -> wasmtime::Result<Action<Bytes>> {
        let ret = self.on_data.call(&mut *store, (rep.0, case(direction), ptr, len))?;
        let action = lift_action(&View::new(self.guest.0.data(&*store), ret, 20)?)?;
        self.pending = self.post_on_data.clone().map(|post| (post, ret));
        Ok(action)
    }

    /// `on-end(direction) -> action`; its bytes are left in place as
    /// [`Self::on_data`]'s.
    pub fn on_end(
        &mut self,
        store: &mut Store<HostState>,
        rep: Rep,
        direction: Direction,
    ) -> wasmtime::Result<Action<Bytes>> {
        self.settle(store)?;
        let ret = self.on_end.call(&mut *store, (rep.0, case(direction)))?;
        let action = lift_action(&View::new(self.guest.0.data(&*store), ret, 20)?)?;
        self.pending = self.post_on_end.clone().map(|post| (post, ret));
        Ok(action)
    }

    /// The session's destructor.
    pub fn drop_session(&mut self, store: &mut Store<HostState>, rep: Rep) -> wasmtime::Result<()> {
        self.settle(store)?;
        self.drop.call(store, rep.0)
    }

    /// Run the post-return of the last call, if it has not run: the guest
    /// frees what that call answered.
    fn settle(&mut self, store: &mut Store<HostState>) -> wasmtime::Result<()> {
        match self.pending.take() {
            Some((post, ret)) => post.call(store, ret),
            None => Ok(()),
        }
    }

    /// The bytes an answer left in guest memory.
    pub fn bytes<'s>(&self, store: &'s Store<HostState>, (at, len): (usize, usize)) -> &'s [u8] {
        self.guest.0.data(store).get(at..at + len).unwrap_or_default()
    }
}

/// The bytes of an action: in guest memory (their address and length,
/// checked to lie in it) or copied out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bytes {
    Guest(usize, usize),
    Owned(Vec<u8>),
}

/// `direction`'s case in WIT order: client-to-server, server-to-client.
fn case(direction: Direction) -> u32 {
    match direction {
        Direction::ClientToServer => 0,
        Direction::ServerToClient => 1,
    }
}

/// The action in the return area `view`; its bytes at most [`COPY_LIMIT`]
/// in all, as through the component layer. What it forwards stays in guest
/// memory.
fn lift_action(view: &View<'_>) -> wasmtime::Result<Action<Bytes>> {
    let mut total = 0usize;
    let mut bytes = |offset: usize| -> wasmtime::Result<(usize, &[u8])> {
        let at = view.u32(offset)? as usize;
        let bytes = bytes_in(view.memory, at, view.u32(offset + 4)? as usize)?;
        total += bytes.len();
        if total > COPY_LIMIT {
            return Err(TooLarge(format!("{total} bytes in one action (at most {COPY_LIMIT})")).into());
        }
        Ok((at, bytes))
    };
    let mut guest = |offset| bytes(offset).map(|(at, b)| Bytes::Guest(at, b.len()));
    Ok(match view.u8(0)? {
        0 => Action::Forward(guest(4)?),
        1 => {
            let data = bytes(4)?.1.to_vec();
            Action::Respond { data, reason: utf8(bytes(12)?.1)?.to_string() }
        }
        2 => Action::Close(utf8(bytes(4)?.1)?.to_string()),
        3 => Action::Pass(guest(4)?),
        d => wasmtime::bail!("invalid `action` discriminant {d}"),
    })
}
