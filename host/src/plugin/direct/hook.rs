//! Built-in hooks called through their core module, as built-in detectors
//! are (see [`super`]): our own code, whose core module implements
//! `refractium:plugin/hook@0.1.0` with the canonical ABI. A hooked short
//! connection makes five calls (session, a chunk each way, the client's
//! end, the drop); through the component layer each pays its lookups and
//! lowerings again, which cost more than the built-in's own work.
//!
//! The session resource: the guest's constructor hands its representation
//! (a pointer into its memory) to the `[resource-new]session` import and
//! returns what that answers, which here is the representation itself; the
//! methods and the destructor take the representation, as the canonical ABI
//! passes a resource to the component that defines it.
//!
//! What goes in: a built-in hook reads the client's address and nothing
//! else of the session's arguments (`http-headers` writes it into the
//! request; `deny` and `rewrite` read none), so the local address, the
//! listener, the detection and the route go in empty: fewer guest
//! allocations and copies per connection.
//! `direct_hooks_agree_with_the_component` in the loader's tests gives the
//! component the real arguments, and fails for a built-in that starts to
//! read them.
//!
//! Layouts (wasm32, canonical ABI): the constructor's parameters flatten to
//! more than 16 values, so they go in memory the host allocates with the
//! guest's `cabi_realloc` (the guest frees it): `peer` at 0 (three strings,
//! `transport` a `u8` at 24), `detection` at 28 (`protocol`, `sni` an
//! `option<string>`: `u8` at 36 and string at 40, `alpn` at 48,
//! `attributes` at 56), `route` at 64; 72 bytes, alignment 4. `on-data`
//! takes the representation, the direction's case and the chunk `(ptr,
//! len)`; `on-end` the representation and the direction. An `action` comes
//! back through a pointer: a `u8` discriminant at 0 (`forward`, `respond`,
//! `close`, `pass`) and its payload at 4 (`respond`'s `data` at 4 and
//! `reason` at 12).

use super::{EMPTY, Guest, Pre, View, bytes_in, put, utf8};
use crate::plugin::detector::Info;
use crate::plugin::hook::{Action, COPY_LIMIT, Direction};
use crate::plugin::sandbox::{HostState, TooLarge};
use wasmtime::{Caller, Store, TypedFunc};

/// Where the guest imports the resource's canonical built-ins from.
pub(super) const RESOURCES: &str = "[export]refractium:plugin/hook@0.1.0";
pub(super) const RESOURCE_NEW: &str = "[resource-new]session";
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
        })
    }
}

impl Exports {
    /// `init(config) -> result<plugin-info, string>`.
    pub fn init(&self, store: &mut Store<HostState>, config: &str) -> wasmtime::Result<Result<Info, String>> {
        super::init(store, &self.guest, (&self.init, &self.post_init), config)
    }

    /// `constructor(peer, detection, route)`, with the client's address
    /// alone (see the module's doc).
    pub fn open(&self, store: &mut Store<HostState>, client_addr: &[u8]) -> wasmtime::Result<Rep> {
        let (client_ptr, client_len) = put(&mut *store, &self.guest, client_addr)?;
        let (memory, realloc) = &self.guest;
        let at = realloc.call(&mut *store, (0, 0, 4, PARAMS as u32))?;
        let mut params = [0u8; PARAMS];
        let mut word = |offset: usize, value: u32| params[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
        word(0, client_ptr);
        word(4, client_len);
        for offset in [8, 16, 28, 64] {
            // The local address, the listener, the protocol, the route.
            word(offset, EMPTY.0);
            word(offset + 4, EMPTY.1);
        }
        // `transport` tcp (a `u8` at 24), `sni` none (a `u8` at 36).
        for offset in [48, 56] {
            word(offset, EMPTY_LIST.0);
            word(offset + 4, EMPTY_LIST.1);
        }
        memory.write(&mut *store, at as usize, &params)?;
        Ok(Rep(self.new.call(&mut *store, at)?))
    }

    /// `on-data(direction, data) -> action`.
    pub fn on_data(
        &self,
        store: &mut Store<HostState>,
        rep: Rep,
        direction: Direction,
        data: &[u8],
    ) -> wasmtime::Result<Action> {
        let (ptr, len) = put(&mut *store, &self.guest, data)?;
        let ret = self.on_data.call(&mut *store, (rep.0, case(direction), ptr, len))?;
        let action = lift_action(&View::new(self.guest.0.data(&*store), ret, 20)?)?;
        if let Some(post) = &self.post_on_data {
            post.call(&mut *store, ret)?;
        }
        Ok(action)
    }

    /// `on-end(direction) -> action`.
    pub fn on_end(&self, store: &mut Store<HostState>, rep: Rep, direction: Direction) -> wasmtime::Result<Action> {
        let ret = self.on_end.call(&mut *store, (rep.0, case(direction)))?;
        let action = lift_action(&View::new(self.guest.0.data(&*store), ret, 20)?)?;
        if let Some(post) = &self.post_on_end {
            post.call(&mut *store, ret)?;
        }
        Ok(action)
    }

    /// The session's destructor.
    pub fn drop_session(&self, store: &mut Store<HostState>, rep: Rep) -> wasmtime::Result<()> {
        self.drop.call(store, rep.0)
    }
}

/// `direction`'s case in WIT order: client-to-server, server-to-client.
fn case(direction: Direction) -> u32 {
    match direction {
        Direction::ClientToServer => 0,
        Direction::ServerToClient => 1,
    }
}

/// The action in the return area `view`; its bytes at most [`COPY_LIMIT`]
/// in all, as through the component layer.
fn lift_action(view: &View<'_>) -> wasmtime::Result<Action> {
    let mut total = 0usize;
    let mut bytes = |offset: usize| -> wasmtime::Result<&[u8]> {
        let bytes = bytes_in(view.memory, view.u32(offset)? as usize, view.u32(offset + 4)? as usize)?;
        total += bytes.len();
        if total > COPY_LIMIT {
            return Err(TooLarge(format!("{total} bytes in one action (at most {COPY_LIMIT})")).into());
        }
        Ok(bytes)
    };
    Ok(match view.u8(0)? {
        0 => Action::Forward(bytes(4)?.to_vec()),
        1 => {
            let data = bytes(4)?.to_vec();
            Action::Respond { data, reason: utf8(bytes(12)?)?.to_string() }
        }
        2 => Action::Close(utf8(bytes(4)?)?.to_string()),
        3 => Action::Pass(bytes(4)?.to_vec()),
        d => wasmtime::bail!("invalid `action` discriminant {d}"),
    })
}
