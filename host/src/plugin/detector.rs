//! A loaded detector plugin: its pre-instantiated component, a pool of idle
//! instances, and the failure accounting that keeps a broken plugin from
//! hurting anyone but the connection it was looking at.

use super::bindings::exports::refractium::plugin::detector as wit_detector;
use super::bindings::refractium::plugin::types as wit;
use super::bindings::{DetectorPlugin as Bindings, DetectorPluginPre};
use super::direct;
use super::loader::Source;
use super::sandbox::{HostState, LogBudget};
use super::watchdog;
use serde::Serialize;
use std::collections::HashMap;
use std::fmt::Display;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use wasmtime::Store;

/// Consecutive failed calls after which a plugin is disabled for a while.
pub const DISABLE_AFTER: u32 = 10;
/// How long a disabled plugin stays disabled before it is tried again.
pub const DISABLED_FOR: Duration = Duration::from_secs(60);
/// Idle instances kept per plugin.
const MAX_IDLE: usize = 16;
/// Time budget, at least, of the calls the host makes for itself at load
/// (`init`, the first-byte probes), whatever `plugins.limits.call_timeout`.
const SETUP_BUDGET: Duration = Duration::from_millis(100);

/// What a detector found (the host's copy of the WIT record).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Detection {
    pub protocol: String,
    pub sni: Option<String>,
    pub alpn: Vec<String>,
    pub attributes: Vec<(String, String)>,
}

impl Detection {
    /// The value of attribute `key`.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// A detector's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Matched(Detection),
    /// Total bytes wanted, 0 if unknown.
    NeedMore(u32),
    NoMatch,
}

/// Anything that can look at first bytes: a Wasm plugin, or a native stand-in
/// in tests.
pub trait Detect: Send + Sync {
    /// The plugin's name.
    fn name(&self) -> &str;
    /// Look at every byte the client sent so far.
    fn detect<'a>(&'a self, data: &'a [u8], peer: &'a Peer) -> BoxFuture<'a, Verdict>;
    /// The same answer when it needs no waiting (a built-in with an idle
    /// instance); `None` means ask through [`Detect::detect`].
    fn detect_now(&self, _data: &[u8], _peer: &Peer) -> Option<Verdict> {
        None
    }
    /// Whether a TCP flight starting with `first` is known to be `no-match`
    /// without asking (see [`FirstBytes`]).
    fn rules_out(&self, _first: u8) -> bool {
        false
    }
}

/// The future a [`Detect::detect`] call returns.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Facts about the client handed to detectors, built once per connection
/// without touching the heap: the addresses are kept as they are and written
/// out only for a plugin file (the component's `peer` record); built-ins are
/// not given them (see [`direct`]). The listener's name is shared.
///
/// It also says which attributes of a detection the caller will read
/// ([`Wanted`]).
#[derive(Debug, Clone)]
pub struct Peer {
    client: Addr,
    local: Addr,
    listener: Arc<str>,
    udp: bool,
    wanted: Wanted,
}

/// The attributes of a detection its reader looks at: all of them (the CLI's
/// `detect`, tests), or only those named — the proxy reads attributes only
/// to match routes, so it names the keys its routes use.
///
/// A built-in's answer is read from its memory with only those attributes
/// copied out (see [`direct`]); the others stay in its memory, unchecked
/// and uncopied, as if the answer had not had them. The `http` detector's three
/// attributes were six of the seven strings copied per HTTP connection.
/// Plugin files' answers come whole from the component layer.
#[derive(Debug, Clone, Default)]
pub struct Wanted(Option<Arc<[Box<str>]>>);

impl Wanted {
    /// Only the attributes called `keys`.
    pub fn only(keys: impl IntoIterator<Item = impl Into<Box<str>>>) -> Self {
        Wanted(Some(keys.into_iter().map(Into::into).collect()))
    }

    /// Whether the attribute called `key` is read.
    pub fn wants(&self, key: &[u8]) -> bool {
        match &self.0 {
            None => true,
            Some(keys) => keys.iter().any(|k| k.as_bytes() == key),
        }
    }
}

/// An address of the peer record.
#[derive(Debug, Clone)]
enum Addr {
    Socket(SocketAddr),
    /// Given as text (the CLI's `detect`, tests).
    Text(Arc<str>),
    /// A local address the socket could not say: empty text.
    Unknown,
}

impl Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Addr::Socket(addr) => addr.fmt(f),
            Addr::Text(text) => f.write_str(text),
            Addr::Unknown => Ok(()),
        }
    }
}

impl Peer {
    /// The peer of a connection or UDP session.
    pub fn of(client: SocketAddr, local: Option<SocketAddr>, listener: impl Into<Arc<str>>, udp: bool) -> Self {
        let local = local.map_or(Addr::Unknown, Addr::Socket);
        Peer { client: Addr::Socket(client), local, listener: listener.into(), udp, wanted: Wanted::default() }
    }

    /// A peer with addresses given as text.
    pub fn new(client: &str, local: &str, listener: impl Into<Arc<str>>, udp: bool) -> Self {
        Peer {
            client: Addr::Text(client.into()),
            local: Addr::Text(local.into()),
            listener: listener.into(),
            udp,
            wanted: Wanted::default(),
        }
    }

    /// The same peer, whose detections are read for the attributes `wanted` only.
    pub fn wanting(self, wanted: Wanted) -> Self {
        Peer { wanted, ..self }
    }

    /// Whether the client came over UDP.
    pub fn is_udp(&self) -> bool {
        self.udp
    }

    /// The attributes read from its detections.
    pub fn wanted(&self) -> &Wanted {
        &self.wanted
    }

    /// The record the component bindings take (plugin files).
    fn to_wit(&self) -> wit::Peer {
        wit::Peer {
            client_addr: self.client.to_string(),
            local_addr: self.local.to_string(),
            listener: self.listener.to_string(),
            transport: if self.udp { wit::Transport::Udp } else { wit::Transport::Tcp },
        }
    }
}

/// A plugin instance and the store it lives in.
struct Instance {
    store: Store<HostState>,
    bindings: Bound,
}

/// A plugin's instance factory: the component, called asynchronously, for
/// plugin files (see [`super::bindings`]); the core module, called directly,
/// for built-ins (see [`super::direct`]).
pub(super) enum Pre {
    Async(DetectorPluginPre<HostState>),
    Direct(direct::Pre),
}

/// An instance's exports, called the way its [`Pre`] says. A built-in's
/// (344 bytes of typed functions) is boxed: an instance moves out of the
/// idle pool and back into it on every call, and a pointer moves in one
/// word where the exports took a 352-byte copy each way.
enum Bound {
    Async(Bindings),
    Direct(Box<direct::Exports>),
}

/// Name and version a plugin reported from `init`.
#[derive(Debug, Clone, Serialize)]
pub struct Info {
    pub name: String,
    pub version: String,
}

/// A detector plugin ready to be called from any thread.
pub struct DetectorPlugin {
    /// Name operators use for it (file stem, or the built-in's name).
    name: Arc<str>,
    /// What its `init` reported.
    pub info: Info,
    /// Where it came from.
    pub source: Source,
    /// SHA-256 of its bytes.
    pub hash: String,
    /// Whether it serves TCP listeners (built-ins say; plugin files serve both).
    pub serves_tcp: bool,
    /// Whether it serves UDP listeners.
    pub serves_udp: bool,
    pre: Pre,
    config_json: String,
    memory: u64,
    budget: Duration,
    log: Arc<LogBudget>,
    idle: Mutex<Vec<Instance>>,
    failures: AtomicU32,
    /// [`crate::clock::now_ms`] until which the plugin is disabled.
    disabled_until: AtomicU64,
    /// First bytes a built-in is known to turn down (none for plugin files).
    first_bytes: FirstBytes,
}

/// The bytes `b` for which a TCP detector answers `no-match` to the one-byte
/// flight `[b]`.
///
/// The host never asks a detector again after a `no-match`, so a TCP client
/// whose first segment is that one byte would have ruled the detector out
/// there and then. A built-in decides from the bytes and the transport alone
/// (they are our code, and the corpus tests hold them to it), so any TCP
/// flight starting with such a byte is ruled out the same way without a call
/// into the sandbox: an HTTP request skips the `tls` and `http2` calls.
/// Plugin files may look at the client's address or the listener, so they
/// are always asked; so is every detector over UDP, where a one-byte datagram
/// is a whole message rather than the start of one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct FirstBytes([u64; 4]);

impl FirstBytes {
    fn contains(&self, first: u8) -> bool {
        self.0[usize::from(first >> 6)] & (1 << (first & 63)) != 0
    }
}

impl DetectorPlugin {
    /// Wrap a pre-instantiated component, creating one instance to run `init`
    /// (which must accept the config) and learn the plugin's name.
    pub(super) async fn new(
        name: &str,
        source: Source,
        hash: String,
        pre: Pre,
        config_json: String,
        memory: u64,
        budget: Duration,
    ) -> anyhow::Result<Self> {
        let mut plugin = DetectorPlugin {
            name: name.into(),
            info: Info { name: name.to_string(), version: String::new() },
            source,
            hash,
            serves_tcp: true,
            serves_udp: true,
            pre,
            config_json,
            memory,
            budget,
            log: Arc::default(),
            idle: Mutex::new(Vec::new()),
            failures: AtomicU32::new(0),
            disabled_until: AtomicU64::new(0),
            first_bytes: FirstBytes::default(),
        };
        let (instance, info) = plugin.instantiate().await?;
        plugin.info = info;
        plugin.put_back(instance);
        Ok(plugin)
    }

    /// The budget of the calls the host makes for itself at load.
    fn setup_budget(&self) -> Duration {
        self.budget.max(SETUP_BUDGET)
    }

    async fn instantiate(&self) -> anyhow::Result<(Instance, Info)> {
        let engine = super::engine::engine();
        let mut store = Store::new(engine, HostState::new(self.name.clone(), self.memory, self.log.clone()));
        store.limiter(|state| &mut state.cap);
        store.epoch_deadline_callback(|store| Ok(watchdog::on_epoch(store.data().deadline)));
        let budget = self.setup_budget();
        let _running = start_call(&mut store, budget);
        let failed = |e: wasmtime::Error, store: &Store<HostState>| anyhow::anyhow!(cause(&e, store, self, budget));
        let (bindings, init) = match &self.pre {
            Pre::Async(pre) => {
                let bindings = pre.instantiate_async(&mut store).await.map_err(|e| failed(e, &store))?;
                let init = bindings.refractium_plugin_detector().call_init(&mut store, &self.config_json).await;
                (Bound::Async(bindings), init)
            }
            Pre::Direct(pre) => {
                let exports = pre.instantiate(&mut store).map_err(|e| failed(e, &store))?;
                let init = exports.init(&mut store, &self.config_json);
                (Bound::Direct(Box::new(exports)), init)
            }
        };
        let info = match init {
            Ok(Ok(info)) => Info { name: info.name, version: info.version },
            Ok(Err(refusal)) => anyhow::bail!("init refused its config: {refusal}"),
            Err(err) => anyhow::bail!("init {}", cause(&err, &store, self, budget)),
        };
        Ok((Instance { store, bindings }, info))
    }

    async fn take(&self) -> anyhow::Result<Instance> {
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        match idle {
            Some(instance) => Ok(instance),
            None => self.instantiate().await.map(|(instance, _)| instance),
        }
    }

    fn put_back(&self, instance: Instance) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push(instance);
        }
    }

    /// Learn which first bytes this built-in turns down on TCP (see
    /// [`FirstBytes`]): 256 one-byte calls, once per plugin and config in the
    /// life of the process. A call that fails leaves the table empty.
    pub(super) async fn learn_first_bytes(&mut self) {
        type Key = (String, String);
        static LEARNED: OnceLock<Mutex<HashMap<Key, FirstBytes>>> = OnceLock::new();
        let learned = LEARNED.get_or_init(Mutex::default);
        let key = (self.hash.clone(), self.config_json.clone());
        if let Some(known) = learned.lock().ok().and_then(|map| map.get(&key).copied()) {
            self.first_bytes = known;
            return;
        }
        let peer = Peer::new("0.0.0.0:0", "0.0.0.0:0", "", false);
        let mut table = FirstBytes::default();
        for b in 0..=255u8 {
            // Our own calls at load, not a client's: a probe that lost the
            // CPU for a moment must not cost the plugin its table.
            match self.call_once(&[b], &peer, self.setup_budget()).await {
                Ok(Verdict::NoMatch) => table.0[usize::from(b >> 6)] |= 1 << (b & 63),
                Ok(_) => {}
                Err(err) => {
                    tracing::debug!(plugin = %self.name, cause = %err, "first-byte probe failed; always asked");
                    return;
                }
            }
        }
        self.first_bytes = table;
        if let Ok(mut map) = learned.lock() {
            map.insert(key, table);
        }
    }

    /// Whether the plugin is currently disabled after repeated failures.
    pub fn is_disabled(&self) -> bool {
        // A plugin that never failed has no time to compare with.
        let until = self.disabled_until.load(Ordering::Relaxed);
        until != 0 && until > crate::clock::now_ms()
    }

    fn failed(&self, what: &str) {
        crate::metrics::PLUGIN_FAILURES.inc();
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::warn!(plugin = %self.name, cause = what, "plugin call failed; the call counts as no-match and the instance is replaced");
        if failures >= DISABLE_AFTER {
            self.failures.store(0, Ordering::Relaxed);
            let until = crate::clock::now_ms().saturating_add(crate::clock::ms(DISABLED_FOR));
            self.disabled_until.store(until, Ordering::Relaxed);
            tracing::error!(
                plugin = %self.name,
                failures,
                "plugin disabled for {}s after {failures} failed calls in a row",
                DISABLED_FOR.as_secs()
            );
        }
    }
}

impl Detect for DetectorPlugin {
    fn name(&self) -> &str {
        &self.name
    }

    fn detect<'a>(&'a self, data: &'a [u8], peer: &'a Peer) -> BoxFuture<'a, Verdict> {
        Box::pin(self.call(data, peer))
    }

    /// A built-in's call is synchronous: made here, it needs neither a boxed
    /// future nor a poll through one.
    fn detect_now(&self, data: &[u8], peer: &Peer) -> Option<Verdict> {
        if !matches!(self.pre, Pre::Direct(_)) {
            return None;
        }
        if self.is_disabled() {
            return Some(Verdict::NoMatch);
        }
        let mut instance = self.idle.lock().ok()?.pop()?;
        let result = match &instance.bindings {
            Bound::Direct(exports) => {
                let _running = start_call(&mut instance.store, self.budget);
                exports.detect(&mut instance.store, data, peer)
            }
            Bound::Async(_) => {
                self.put_back(instance);
                return None;
            }
        };
        Some(self.settle(self.finish(instance, result, self.budget)))
    }

    fn rules_out(&self, first: u8) -> bool {
        self.first_bytes.contains(first)
    }
}

impl DetectorPlugin {
    async fn call(&self, data: &[u8], peer: &Peer) -> Verdict {
        if self.is_disabled() {
            return Verdict::NoMatch;
        }
        let result = self.call_once(data, peer, self.budget).await;
        self.settle(result)
    }

    /// A call's verdict, counting its failure (which answers `no-match`).
    fn settle(&self, result: Result<Verdict, String>) -> Verdict {
        match result {
            Ok(verdict) => {
                self.failures.store(0, Ordering::Relaxed);
                verdict
            }
            Err(why) => {
                self.failed(&why);
                Verdict::NoMatch
            }
        }
    }

    /// One call on a pooled instance; `Err` says why it failed (the instance
    /// is then dropped: a trap poisons its store).
    async fn call_once(&self, data: &[u8], peer: &Peer, budget: Duration) -> Result<Verdict, String> {
        let mut instance = self.take().await.map_err(|err| format!("could not instantiate: {err:#}"))?;
        let result = {
            let _running = start_call(&mut instance.store, budget);
            match &instance.bindings {
                Bound::Async(bindings) => {
                    let guest: &wit_detector::Guest = bindings.refractium_plugin_detector();
                    guest.call_detect(&mut instance.store, data, &peer.to_wit()).await
                }
                Bound::Direct(exports) => exports.detect(&mut instance.store, data, peer),
            }
        };
        self.finish(instance, result, budget)
    }

    /// After a call: the instance goes back to the pool with the verdict, or
    /// is dropped with the reason it failed.
    fn finish(
        &self,
        instance: Instance,
        result: wasmtime::Result<wit::Verdict>,
        budget: Duration,
    ) -> Result<Verdict, String> {
        match result {
            Ok(verdict) => {
                self.put_back(instance);
                Ok(convert(verdict))
            }
            Err(err) => Err(cause(&err, &instance.store, self, budget)),
        }
    }
}

/// Give the store a call's deadline, `budget` from now; the call may run
/// until the returned guard drops.
fn start_call(store: &mut Store<HostState>, budget: Duration) -> watchdog::Call {
    let call = watchdog::Call::start(store.engine(), budget);
    store.data_mut().deadline = call.deadline();
    // Consult the callback at the next epoch: the watchdog advances it
    // only when some call's deadline has passed.
    store.set_epoch_deadline(1);
    call
}

/// Say why a call that ran with `budget` failed, in words an operator can
/// act on.
fn cause(err: &wasmtime::Error, store: &Store<HostState>, plugin: &DetectorPlugin, budget: Duration) -> String {
    if store.data().cap.hit {
        return format!("exceeded its memory cap of {} bytes ({err})", plugin.memory);
    }
    match err.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => {
            format!("exceeded its time budget of {}", humantime::format_duration(budget))
        }
        Some(trap) => format!("trapped: {trap}"),
        None => format!("failed: {err:#}"),
    }
}

fn convert(verdict: wit::Verdict) -> Verdict {
    match verdict {
        wit::Verdict::Matched(d) => {
            Verdict::Matched(Detection { protocol: d.protocol, sni: d.sni, alpn: d.alpn, attributes: d.attributes })
        }
        wit::Verdict::NeedMore(n) => Verdict::NeedMore(n),
        wit::Verdict::NoMatch => Verdict::NoMatch,
    }
}

#[cfg(test)]
mod tests {
    use super::Peer;
    use std::net::SocketAddr;

    /// Plugin files get the addresses written out as `Display` writes them,
    /// an unknown local address as empty text.
    #[test]
    fn peer_record_writes_addresses_out() {
        let longest: SocketAddr =
            "[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255%4294967295]:65535".parse().expect("v6");
        let local: SocketAddr = "127.0.0.1:443".parse().expect("v4");
        let wit = Peer::of(longest, Some(local), "edge", true).to_wit();
        assert_eq!(
            (wit.client_addr.as_str(), wit.local_addr.as_str(), wit.listener.as_str()),
            (&*longest.to_string(), "127.0.0.1:443", "edge")
        );
        assert!(matches!(wit.transport, super::wit::Transport::Udp));
        let wit = Peer::of(local, None, "edge", false).to_wit();
        assert_eq!((wit.local_addr.as_str(), matches!(wit.transport, super::wit::Transport::Tcp)), ("", true));
        let wit = Peer::new("client text", "local text", "cli", false).to_wit();
        assert_eq!((wit.client_addr.as_str(), wit.local_addr.as_str()), ("client text", "local text"));
    }
}
