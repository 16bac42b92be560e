//! A loaded hook plugin, and the sessions it runs for hooked connections.
//!
//! Every hooked connection gets an instance of its own, with a session
//! constructed in it: one left idle by a connection that ended well, or a
//! new one made from the pre-instantiated component (the pooling allocator
//! maps its memory copy-on-write from the compiled image) with `init` run.
//! The connection's calls go to that instance only, so a hook that traps,
//! overruns its budget or fills its memory ends only that connection, and
//! every other connection through the hook keeps its state. When the
//! connection ends, its session is dropped (the guest's destructor runs)
//! and the instance is kept for a later connection if every call in it
//! succeeded and its memory stayed small ([`IDLE_INSTANCES`],
//! [`REUSE_GROWTH`]); an instance whose call failed is thrown away. An
//! instance serves one connection after another, never two at once: what a
//! hook keeps per connection belongs in its session.
//!
//! Calls are synchronous on the connection's thread, under the limits of
//! [`super::sandbox`]; what one call hands back is at most [`COPY_LIMIT`]
//! bytes (chunks come in at up to 256 KiB).

use super::bindings::hooks::exports::refractium::plugin::hook as wit_hook;
use super::bindings::hooks::{HookPlugin as Bindings, HookPluginPre};
use super::bindings::refractium::plugin::types as wit;
use super::breaker::{Breaker, Kind};
use super::detector::{Detection, Info, Peer};
use super::direct::{self, hook::Rep};
use super::loader::Source;
use super::sandbox::{Cause, Failure, HostState, LogBudget, MAX_STRING};
use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::Store;
use wasmtime::component::{InstancePre, ResourceAny};

/// Which way a chunk travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ClientToServer,
    ServerToClient,
}

impl Direction {
    /// 0 for client-to-server, 1 for server-to-client: an index into
    /// per-direction arrays.
    pub fn slot(self) -> usize {
        match self {
            Direction::ClientToServer => 0,
            Direction::ServerToClient => 1,
        }
    }

    fn to_wit(self) -> wit::Direction {
        match self {
            Direction::ClientToServer => wit::Direction::ClientToServer,
            Direction::ServerToClient => wit::Direction::ServerToClient,
        }
    }
}

/// What a hook said to do with a chunk; `B` holds the bytes it forwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<B = Vec<u8>> {
    /// Write these bytes on.
    Forward(B),
    /// Send `data` back to the side the chunk came from, then close.
    Respond { data: Vec<u8>, reason: String },
    /// Close, for this reason.
    Close(String),
    /// Write these bytes on, and do not call the hook for this direction again.
    Pass(B),
}

impl<B> Action<B> {
    /// The same action, with its forwarded bytes made by `f`.
    pub fn map<C>(self, f: impl FnOnce(B) -> C) -> Action<C> {
        match self {
            Action::Forward(bytes) => Action::Forward(f(bytes)),
            Action::Pass(bytes) => Action::Pass(f(bytes)),
            Action::Respond { data, reason } => Action::Respond { data, reason },
            Action::Close(reason) => Action::Close(reason),
        }
    }
}

/// The most bytes one hook call may hand back: room to double a whole chunk
/// ([`crate::forward::hooked::CHUNK`]), and a bound on what a hook that
/// multiplies its input makes a connection hold while its receiver is slow.
pub const COPY_LIMIT: usize = 512 << 10;

/// Instances a hook keeps idle for later connections: enough for the
/// sessions of a busy proxy to come and go without making new ones (each
/// new instance faults in fresh pages of its memory image), few enough that
/// their memory stays bounded after a burst.
const IDLE_INSTANCES: usize = 256;
/// How much an instance's memory may have grown since `init` for it to be
/// kept: a connection that made it grow more would leave that memory
/// resident for as long as the instance waits.
const REUSE_GROWTH: usize = 1 << 20;

/// A hook plugin ready to open sessions from any thread.
pub struct HookPlugin {
    name: Arc<str>,
    /// What its `init` reported.
    pub info: Info,
    /// Where it came from.
    pub source: Source,
    /// SHA-256 of its bytes.
    pub hash: String,
    /// Imported interfaces some of whose functions are refused at the call.
    pub refused: Vec<String>,
    pre: HookPre,
    config_json: String,
    memory: u64,
    budget: Duration,
    log: Arc<LogBudget>,
    /// Its counters, and whether it is disabled.
    breaker: Breaker,
    /// Instances whose last connection ended well, ready for the next.
    idle: Mutex<Vec<Instance>>,
    /// The directions it is called for, by [`Direction::slot`]
    /// ([`declared_directions`]).
    watches: [bool; 2],
    /// Why a plugin file is called through its component rather than
    /// directly, when it is.
    through_component: Option<String>,
}

impl std::fmt::Debug for HookPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookPlugin").field("name", &self.name).field("source", &self.source).finish()
    }
}

/// How a hook's instances are made: from the component, or, for a
/// built-in, from its core module ([`direct::hook`]).
pub(super) enum HookPre {
    Component(HookPluginPre<HostState>),
    Direct(direct::Pre),
}

impl HookPre {
    /// A plugin file's pre-instantiated component, checked to export the hook interface.
    pub(super) fn component(pre: InstancePre<HostState>) -> anyhow::Result<HookPre> {
        let pre = HookPluginPre::new(pre)
            .map_err(anyhow::Error::from)
            .map_err(|e| e.context("it does not export the refractium:plugin/hook@0.1.0 interface"))?;
        Ok(HookPre::Component(pre))
    }
}

impl HookPlugin {
    /// Wrap a hook ready to instantiate, running `init` once in a first
    /// instance to check the config and learn the plugin's name.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        name: &str,
        source: Source,
        hash: String,
        pre: HookPre,
        refused: Vec<String>,
        config_json: String,
        memory: u64,
        budget: Duration,
    ) -> anyhow::Result<Self> {
        let mut plugin = HookPlugin {
            name: name.into(),
            info: Info { name: name.to_string(), version: String::new() },
            source,
            hash,
            refused,
            pre,
            config_json,
            memory,
            budget,
            log: Arc::default(),
            breaker: Breaker::new(name.into(), Kind::Hook),
            idle: Mutex::default(),
            watches: [true; 2],
            through_component: None,
        };
        let (instance, info) = plugin.instantiate().map_err(|f| anyhow::anyhow!("{f}"))?;
        plugin.info = info;
        plugin.keep(instance);
        Ok(plugin)
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Call it only for the directions `watches` says ([`declared_directions`]).
    pub(super) fn watching(mut self, watches: [bool; 2]) -> Self {
        self.watches = watches;
        self
    }

    /// Whether it is called for chunks travelling `direction`: the other
    /// direction is relayed without it from the first byte, as if it had
    /// answered `pass` before it began.
    pub fn watches(&self, direction: Direction) -> bool {
        self.watches[direction.slot()]
    }

    /// Say why it is called through its component (a plugin file that
    /// could not take the direct path).
    pub(super) fn through_component(mut self, why: String) -> Self {
        self.through_component = Some(why);
        self
    }

    /// Why it is called through its component, if it is a plugin file
    /// that is.
    pub fn component_reason(&self) -> Option<&str> {
        self.through_component.as_deref()
    }

    /// Whether its instances are called through their main module
    /// ([`direct::hook`]) rather than through the component.
    pub fn calls_directly(&self) -> bool {
        matches!(self.pre, HookPre::Direct(_))
    }

    /// Whether the plugin is disabled after failing again and again.
    pub fn is_disabled(&self) -> bool {
        self.breaker.is_disabled()
    }

    fn instantiate(&self) -> Result<(Instance, Info), Failure> {
        let mut store = super::detector::new_store(&self.name, self.memory, &self.log);
        let budget = self.budget.max(super::detector::SETUP_BUDGET);
        let _running = super::detector::start_call(&mut store, budget);
        let failed = |e: wasmtime::Error, store: &Store<HostState>, what: &str| {
            let failure = store.data().failure(&e, self.memory);
            Failure { cause: failure.cause, detail: format!("{what} {}", failure.detail) }
        };
        store.set_hostcall_fuel(COPY_LIMIT);
        let (calls, init) = match &self.pre {
            HookPre::Component(pre) => {
                let bindings = pre.instantiate(&mut store).map_err(|e| failed(e, &store, "instantiation"))?;
                let init = bindings
                    .refractium_plugin_hook()
                    .call_init(&mut store, &self.config_json)
                    .map(|r| r.map(|info| Info { name: info.name, version: info.version }));
                (Calls::Component(bindings), init)
            }
            HookPre::Direct(pre) => {
                let exports = pre.instantiate_hook(&mut store).map_err(|e| failed(e, &store, "instantiation"))?;
                let init = exports.init(&mut store, &self.config_json);
                (Calls::Direct(Box::new(exports)), init)
            }
        };
        store.data_mut().console_flush();
        let info = match init {
            Ok(Ok(info)) if info.name.len() <= MAX_STRING && info.version.len() <= MAX_STRING => info,
            Ok(Ok(_)) => {
                let detail = format!("init answered a name or version over {MAX_STRING} bytes");
                return Err(Failure { cause: Cause::Output, detail });
            }
            Ok(Err(refusal)) => {
                let detail = format!("init refused its config: {}", cut(refusal));
                return Err(Failure { cause: Cause::Instantiate, detail });
            }
            Err(err) => return Err(failed(err, &store, "init")),
        };
        let initial = store.data().cap.size;
        Ok((Instance { store, calls, initial }, info))
    }

    /// An idle instance, or a new one.
    fn instance(&self) -> Result<Instance, Failure> {
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        match idle {
            Some(instance) => Ok(instance),
            None => self.instantiate().map(|(instance, _)| instance),
        }
    }

    /// Keep `instance` for a later connection, if there is room.
    fn keep(&self, instance: Instance) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < IDLE_INSTANCES
        {
            idle.push(instance);
        }
    }

    /// A session for a new connection, in an instance of its own.
    pub fn open(self: &Arc<Self>, peer: &Peer, detection: &Detection, route: &str) -> Result<Session, Failure> {
        self.breaker.counters().sessions.fetch_add(1, Ordering::Relaxed);
        let opened = self.instance().and_then(|mut instance| {
            let result = {
                let _running = super::detector::start_call(&mut instance.store, self.budget);
                match &mut instance.calls {
                    Calls::Component(bindings) => {
                        let detection = wit::Detection {
                            protocol: detection.protocol.clone(),
                            sni: detection.sni.clone(),
                            alpn: detection.alpn.clone(),
                            attributes: detection.attributes.clone(),
                        };
                        let guest = bindings.refractium_plugin_hook().session();
                        guest
                            .call_constructor(&mut instance.store, &peer.to_wit(), &detection, route)
                            .map(Handle::Component)
                    }
                    Calls::Direct(exports) => {
                        exports.open(&mut instance.store, peer, detection, route).map(Handle::Direct)
                    }
                }
            };
            instance.store.data_mut().console_flush();
            match result {
                Ok(session) => Ok(Session { plugin: self.clone(), instance: Some(instance), session, unkept: false }),
                Err(err) => {
                    let failure = instance.store.data().failure(&err, self.memory);
                    Err(Failure { cause: failure.cause, detail: format!("session {}", failure.detail) })
                }
            }
        });
        if let Err(failure) = &opened {
            self.failed(failure);
        }
        opened
    }

    /// Account for a failure: a log line, the metrics and the breaker.
    fn failed(&self, failure: &Failure) {
        let (plugin, cause) = (&*self.name, failure.cause.label());
        tracing::warn!(plugin, cause, detail = %failure.detail, "hook failed; its connection is closed");
        self.breaker.failed(failure.cause);
    }
}

/// The directions a hook plugin file (a component) says it is called for,
/// by [`Direction::slot`]: its custom section `refractium:hook-directions`,
/// one byte with bit 0 for client-to-server and bit 1 for server-to-client
/// (the SDK writes it from `Hook::DIRECTIONS`); both without one.
pub(super) fn declared_directions(component: &[u8]) -> anyhow::Result<[bool; 2]> {
    use anyhow::Context as _;
    const SECTION: &str = refractium_plugin_sdk::hook::DIRECTIONS_SECTION;
    for payload in wasmparser::Parser::new(0).parse_all(component) {
        if let wasmparser::Payload::CustomSection(section) = payload.context("reading the plugin")?
            && section.name() == SECTION
        {
            use refractium_plugin_sdk::hook::{Direction as Side, Directions};
            let declared = match section.data() {
                &[bits] => Directions::from_bits(bits),
                _ => None,
            };
            let Some(declared) = declared else {
                let data = section.data();
                anyhow::bail!(
                    "its custom section `{SECTION}` holds {} bytes {data:02x?}; it must be one byte: 1 (client-to-server), 2 (server-to-client) or 3 (both)",
                    data.len()
                );
            };
            return Ok([declared.includes(Side::ClientToServer), declared.includes(Side::ServerToClient)]);
        }
    }
    Ok([true; 2])
}

/// An instance of a hook plugin and the store it lives in.
struct Instance {
    store: Store<HostState>,
    calls: Calls,
    /// Its memory's size once `init` had run.
    initial: usize,
}

/// How an instance is called.
enum Calls {
    Component(Bindings),
    Direct(Box<direct::hook::Exports>),
}

/// A session in its instance, as the instance's kind names it.
#[derive(Clone, Copy)]
enum Handle {
    Component(ResourceAny),
    Direct(Rep),
}

/// One call into a session.
#[derive(Clone, Copy)]
enum Op<'a> {
    Data(Direction, &'a [u8]),
    End(Direction),
}

impl Instance {
    /// Make the call `op` in the session `handle`. Bytes a direct call
    /// forwards stay in guest memory ([`direct::hook::Bytes`]).
    fn call(&mut self, handle: Handle, op: Op<'_>) -> wasmtime::Result<Action<direct::hook::Bytes>> {
        use direct::hook::Bytes;
        let store = &mut self.store;
        match (&mut self.calls, handle) {
            (Calls::Direct(exports), Handle::Direct(rep)) => match op {
                Op::Data(direction, data) => exports.on_data(store, rep, direction, data),
                Op::End(direction) => exports.on_end(store, rep, direction),
            },
            (Calls::Component(bindings), Handle::Component(session)) => {
                let guest = bindings.refractium_plugin_hook().session();
                let action = match op {
                    Op::Data(direction, data) => guest.call_on_data(store, session, direction.to_wit(), data),
                    Op::End(direction) => guest.call_on_end(store, session, direction.to_wit()),
                }?;
                Ok(match action {
                    wit_hook::Action::Forward(data) => Action::Forward(Bytes::Owned(data)),
                    wit_hook::Action::Respond(r) => Action::Respond { data: r.data, reason: r.reason },
                    wit_hook::Action::Close(reason) => Action::Close(reason),
                    wit_hook::Action::Pass(data) => Action::Pass(Bytes::Owned(data)),
                })
            }
            _ => wasmtime::bail!("a session called in an instance of another kind"),
        }
    }

    /// The bytes `bytes` of an answer of the last call.
    fn bytes(&self, bytes: direct::hook::Bytes) -> Cow<'_, [u8]> {
        match (bytes, &self.calls) {
            (direct::hook::Bytes::Owned(data), _) => Cow::Owned(data),
            (direct::hook::Bytes::Guest(at, len), Calls::Direct(exports)) => {
                Cow::Borrowed(exports.bytes(&self.store, (at, len)))
            }
            (direct::hook::Bytes::Guest(..), Calls::Component(_)) => Cow::Borrowed(&[]),
        }
    }

    /// Drop the session `handle`: the guest's destructor runs.
    fn drop_session(&mut self, handle: Handle) -> wasmtime::Result<()> {
        match (&mut self.calls, handle) {
            (Calls::Direct(exports), Handle::Direct(rep)) => exports.drop_session(&mut self.store, rep),
            (Calls::Component(_), Handle::Component(session)) => session.resource_drop(&mut self.store),
            _ => wasmtime::bail!("a session dropped in an instance of another kind"),
        }
    }
}

/// What [`Session::on_data_read`] read (how many bytes) and what the hook
/// answered on them.
pub type ReadCall<'a> = (usize, Result<Action<Cow<'a, [u8]>>, Failure>);

/// One connection's session of one hook: its own instance, until a call
/// in it fails.
pub struct Session {
    plugin: Arc<HookPlugin>,
    instance: Option<Instance>,
    session: Handle,
    /// Its instance holds memory nobody will free: it is not kept.
    unkept: bool,
}

impl Drop for Session {
    /// Drop the guest's session and keep the instance for a later
    /// connection, if it is fit for one.
    fn drop(&mut self) {
        let Some(mut instance) = self.instance.take() else { return };
        if self.plugin.is_disabled() {
            return;
        }
        let dropped = {
            let _running = super::detector::start_call(&mut instance.store, self.plugin.budget);
            instance.drop_session(self.session)
        };
        instance.store.data_mut().console_flush();
        if dropped.is_ok()
            && !self.unkept
            && instance.store.data().cap.size <= instance.initial.saturating_add(REUSE_GROWTH)
        {
            self.plugin.keep(instance);
        }
    }
}

impl Session {
    /// The hook's name.
    pub fn name(&self) -> &str {
        &self.plugin.name
    }

    /// The hook's name, shared.
    pub fn shared_name(&self) -> Arc<str> {
        self.plugin.name.clone()
    }

    /// A chunk from one side.
    pub fn on_data(&mut self, direction: Direction, data: &[u8]) -> Result<Action, Failure> {
        self.on_data_in_place(direction, data).map(|action| action.map(Cow::into_owned))
    }

    /// [`Self::on_data`], with the bytes the hook forwards where they are:
    /// in its memory, for a hook called directly, until the session's next
    /// call.
    pub fn on_data_in_place(&mut self, direction: Direction, data: &[u8]) -> Result<Action<Cow<'_, [u8]>>, Failure> {
        self.plugin.breaker.counters().bytes_in.fetch_add(data.len() as u64, Ordering::Relaxed);
        self.call(Op::Data(direction, data))
    }

    /// That side has finished sending.
    pub fn on_end(&mut self, direction: Direction) -> Result<Action, Failure> {
        self.call(Op::End(direction)).map(|action| action.map(Cow::into_owned))
    }

    /// Whether [`Self::on_data_read`] can read a chunk straight into the
    /// hook's memory: its instance is called directly.
    pub fn reads_in_place(&self) -> bool {
        matches!(self.instance.as_ref().map(|i| &i.calls), Some(Calls::Direct(_)))
    }

    /// [`Self::on_data_in_place`] on a chunk that `read` puts straight into
    /// the hook's memory, in room for `len` bytes the guest allocates (the
    /// copy into the guest that [`Self::on_data`] makes is saved); `read`
    /// answers how many bytes it put there. `None` when the session does
    /// not read in place ([`Self::reads_in_place`]); the read's error, if it
    /// fails or reads nothing (the hook is not called then).
    pub fn on_data_read(
        &mut self,
        direction: Direction,
        len: usize,
        read: impl FnOnce(&mut [u8]) -> std::io::Result<usize>,
    ) -> Option<std::io::Result<ReadCall<'_>>> {
        let (Some(instance), Handle::Direct(rep)) = (self.instance.as_mut(), self.session) else { return None };
        let Calls::Direct(exports) = &mut instance.calls else { return None };
        let len = u32::try_from(len).ok().filter(|&len| len > 0)?;
        let (n, result) = {
            let store = &mut instance.store;
            let _running = super::detector::start_call(store, self.plugin.budget);
            let area = exports.chunk_area(store, len);
            let read =
                area.and_then(|ptr| Ok((ptr, exports.area_mut(store, ptr, len)?))).map(|(ptr, area)| (ptr, read(area)));
            match read {
                Err(err) => (0, Err(err)),
                Ok((_, Err(err))) => {
                    // The guest's allocation is nobody's: the instance is
                    // not kept for another connection.
                    self.unkept = true;
                    return Some(Err(err));
                }
                Ok((_, Ok(0))) => {
                    self.unkept = true;
                    return Some(Err(std::io::ErrorKind::UnexpectedEof.into()));
                }
                Ok((ptr, Ok(n))) => {
                    let n = u32::try_from(n).unwrap_or(len).min(len);
                    let shrunk = if n < len { exports.shrink_area(store, ptr, len, n) } else { Ok(ptr) };
                    (n as usize, shrunk.and_then(|ptr| exports.on_data_at(store, rep, direction, (ptr, n))))
                }
            }
        };
        self.plugin.breaker.counters().bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        Some(Ok((n, self.finish(result))))
    }

    fn call(&mut self, op: Op<'_>) -> Result<Action<Cow<'_, [u8]>>, Failure> {
        let Some(instance) = self.instance.as_mut() else { return Err(lost()) };
        let result = {
            let _running = super::detector::start_call(&mut instance.store, self.plugin.budget);
            instance.call(self.session, op)
        };
        self.finish(result)
    }

    /// What a call answered, accounted for: its bytes where they are, or
    /// the failure (the instance then serves nobody again).
    fn finish(
        &mut self,
        result: wasmtime::Result<Action<direct::hook::Bytes>>,
    ) -> Result<Action<Cow<'_, [u8]>>, Failure> {
        let Some(instance) = self.instance.as_mut() else { return Err(lost()) };
        instance.store.data_mut().console_flush();
        let action = match result {
            Ok(Action::Respond { data, reason }) => Action::Respond { data, reason: cut(reason) },
            Ok(Action::Close(reason)) => Action::Close(cut(reason)),
            Ok(action) => action,
            Err(err) => {
                let failure = instance.store.data().failure(&err, self.plugin.memory);
                // A call that failed may have left the instance half-way
                // through anything: it serves nobody again.
                self.instance = None;
                self.plugin.failed(&failure);
                return Err(failure);
            }
        };
        let counters = self.plugin.breaker.counters();
        self.plugin.breaker.succeeded();
        counters.calls.fetch_add(1, Ordering::Relaxed);
        let Some(instance) = self.instance.as_ref() else { return Err(lost()) };
        let action = action.map(|bytes| instance.bytes(bytes));
        match &action {
            Action::Forward(data) | Action::Pass(data) => {
                counters.bytes_out.fetch_add(data.len() as u64, Ordering::Relaxed)
            }
            Action::Respond { .. } | Action::Close(_) => counters.closes.fetch_add(1, Ordering::Relaxed),
        };
        Ok(action)
    }
}

/// A call into a session whose instance an earlier failed call took.
fn lost() -> Failure {
    Failure { cause: Cause::Trap, detail: "its instance was lost in an earlier failed call".to_string() }
}

/// `text` cut to a bounded string.
fn cut(text: String) -> String {
    super::sandbox::truncate(&text, MAX_STRING).to_string()
}

#[cfg(test)]
mod tests {
    use super::declared_directions;

    /// A core module holding only a custom section `name` of `data`.
    fn with_section(name: &str, data: &[u8]) -> Vec<u8> {
        let mut body = vec![u8::try_from(name.len()).expect("short name")];
        body.extend_from_slice(name.as_bytes());
        body.extend_from_slice(data);
        let mut module = b"\0asm\x01\0\0\0\0".to_vec();
        module.push(u8::try_from(body.len()).expect("short section"));
        module.extend(body);
        module
    }

    #[test]
    fn a_hook_is_called_for_the_directions_its_file_declares() {
        const SECTION: &str = "refractium:hook-directions";
        assert_eq!(declared_directions(b"\0asm\x01\0\0\0").expect("no section"), [true, true]);
        assert_eq!(declared_directions(&with_section("other", &[1])).expect("another section"), [true, true]);
        assert_eq!(declared_directions(&with_section(SECTION, &[1])).expect("c2s"), [true, false]);
        assert_eq!(declared_directions(&with_section(SECTION, &[2])).expect("s2c"), [false, true]);
        assert_eq!(declared_directions(&with_section(SECTION, &[3])).expect("both"), [true, true]);
        for bad in [&[][..], &[0], &[4], &[1, 1]] {
            let err = declared_directions(&with_section(SECTION, bad)).expect_err("refused").to_string();
            assert!(err.contains(SECTION) && err.contains("one byte"), "{err}");
        }
        // The built-ins: `http-headers` never looks at responses.
        for &(name, _, bytes) in crate::plugin::loader::builtin::BUILTIN_HOOKS {
            let want = if name == "http-headers" { [true, false] } else { [true, true] };
            assert_eq!(declared_directions(bytes).expect("built-in"), want, "{name}");
        }
    }
}
