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
use super::loader::Source;
use super::sandbox::{Cause, Failure, HostState, LogBudget, MAX_STRING};
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
    fn to_wit(self) -> wit::Direction {
        match self {
            Direction::ClientToServer => wit::Direction::ClientToServer,
            Direction::ServerToClient => wit::Direction::ServerToClient,
        }
    }
}

/// What a hook said to do with a chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write these bytes on.
    Forward(Vec<u8>),
    /// Send `data` back to the side the chunk came from, then close.
    Respond { data: Vec<u8>, reason: String },
    /// Close, for this reason.
    Close(String),
    /// Write these bytes on, and do not call the hook for this direction again.
    Pass(Vec<u8>),
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
    pre: HookPluginPre<HostState>,
    config_json: String,
    memory: u64,
    budget: Duration,
    log: Arc<LogBudget>,
    /// Its counters, and whether it is disabled.
    breaker: Breaker,
    /// Instances whose last connection ended well, ready for the next.
    idle: Mutex<Vec<Instance>>,
}

impl std::fmt::Debug for HookPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookPlugin").field("name", &self.name).field("source", &self.source).finish()
    }
}

impl HookPlugin {
    /// Wrap a pre-instantiated component that exports the hook interface,
    /// running `init` once in a first instance to check the config and
    /// learn the plugin's name.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        name: &str,
        source: Source,
        hash: String,
        pre: InstancePre<HostState>,
        refused: Vec<String>,
        config_json: String,
        memory: u64,
        budget: Duration,
    ) -> anyhow::Result<Self> {
        let pre = HookPluginPre::new(pre)
            .map_err(anyhow::Error::from)
            .map_err(|e| e.context("it does not export the refractium:plugin/hook@0.1.0 interface"))?;
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
        let bindings = self.pre.instantiate(&mut store).map_err(|e| failed(e, &store, "instantiation"))?;
        let init = bindings.refractium_plugin_hook().call_init(&mut store, &self.config_json);
        store.data_mut().console_flush();
        let info = match init {
            Ok(Ok(info)) if info.name.len() <= MAX_STRING && info.version.len() <= MAX_STRING => {
                Info { name: info.name, version: info.version }
            }
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
        Ok((Instance { store, bindings, initial }, info))
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
            let detection = wit::Detection {
                protocol: detection.protocol.clone(),
                sni: detection.sni.clone(),
                alpn: detection.alpn.clone(),
                attributes: detection.attributes.clone(),
            };
            let result = {
                let _running = super::detector::start_call(&mut instance.store, self.budget);
                let guest = instance.bindings.refractium_plugin_hook().session();
                guest.call_constructor(&mut instance.store, &peer.to_wit(), &detection, route)
            };
            instance.store.data_mut().console_flush();
            match result {
                Ok(session) => Ok(Session { plugin: self.clone(), instance: Some(instance), session }),
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

/// An instance of a hook plugin and the store it lives in.
struct Instance {
    store: Store<HostState>,
    bindings: Bindings,
    /// Its memory's size once `init` had run.
    initial: usize,
}

/// One connection's session of one hook: its own instance, until a call
/// in it fails.
pub struct Session {
    plugin: Arc<HookPlugin>,
    instance: Option<Instance>,
    session: ResourceAny,
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
            self.session.resource_drop(&mut instance.store)
        };
        instance.store.data_mut().console_flush();
        if dropped.is_ok() && instance.store.data().cap.size <= instance.initial.saturating_add(REUSE_GROWTH) {
            self.plugin.keep(instance);
        }
    }
}

impl Session {
    /// The hook's name.
    pub fn name(&self) -> &str {
        &self.plugin.name
    }

    /// A chunk from one side.
    pub fn on_data(&mut self, direction: Direction, data: &[u8]) -> Result<Action, Failure> {
        self.plugin.breaker.counters().bytes_in.fetch_add(data.len() as u64, Ordering::Relaxed);
        self.call(|guest, store, session| guest.call_on_data(store, session, direction.to_wit(), data))
    }

    /// That side has finished sending.
    pub fn on_end(&mut self, direction: Direction) -> Result<Action, Failure> {
        self.call(|guest, store, session| guest.call_on_end(store, session, direction.to_wit()))
    }

    fn call(
        &mut self,
        call: impl FnOnce(
            wit_hook::GuestSession<'_>,
            &mut Store<HostState>,
            ResourceAny,
        ) -> wasmtime::Result<wit_hook::Action>,
    ) -> Result<Action, Failure> {
        let Some(Instance { store, bindings, .. }) = self.instance.as_mut() else {
            let detail = "its instance was lost in an earlier failed call".to_string();
            return Err(Failure { cause: Cause::Trap, detail });
        };
        let result = {
            let _running = super::detector::start_call(store, self.plugin.budget);
            call(bindings.refractium_plugin_hook().session(), store, self.session)
        };
        store.data_mut().console_flush();
        let failure = match result {
            Ok(wit_hook::Action::Forward(data)) => return Ok(self.succeeded(Action::Forward(data))),
            Ok(wit_hook::Action::Respond(r)) => {
                return Ok(self.succeeded(Action::Respond { data: r.data, reason: cut(r.reason) }));
            }
            Ok(wit_hook::Action::Close(reason)) => return Ok(self.succeeded(Action::Close(cut(reason)))),
            Ok(wit_hook::Action::Pass(data)) => return Ok(self.succeeded(Action::Pass(data))),
            Err(err) => store.data().failure(&err, self.plugin.memory),
        };
        // A call that failed may have left the instance half-way through
        // anything: it serves nobody again.
        self.instance = None;
        self.plugin.failed(&failure);
        Err(failure)
    }

    fn succeeded(&self, action: Action) -> Action {
        let counters = self.plugin.breaker.counters();
        self.plugin.breaker.succeeded();
        counters.calls.fetch_add(1, Ordering::Relaxed);
        match &action {
            Action::Forward(data) | Action::Pass(data) => {
                counters.bytes_out.fetch_add(data.len() as u64, Ordering::Relaxed)
            }
            Action::Respond { .. } | Action::Close(_) => counters.closes.fetch_add(1, Ordering::Relaxed),
        };
        action
    }
}

/// `text` cut to a bounded string.
fn cut(text: String) -> String {
    super::sandbox::truncate(&text, MAX_STRING).to_string()
}
