//! A loaded detector plugin: its pre-instantiated component, a pool of idle
//! instances, and the failure accounting that keeps a broken plugin from
//! hurting anyone but the connection it was looking at.
//!
//! Calls are synchronous and made on the caller's thread: nothing a plugin
//! may import waits ([`super::imports`]), and a call that computes for too
//! long is interrupted ([`super::sandbox`]).

use super::bindings::refractium::plugin::types as wit;
use super::breaker::{Breaker, Kind};
use super::loader::Source;
use super::sandbox::{Cause, Failure, HostState, LogBudget};
use super::{component, direct, watchdog};
use serde::Serialize;
use std::collections::HashMap;
use std::fmt::Display;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use wasmtime::Store;

/// Idle instances kept per plugin.
const MAX_IDLE: usize = 16;
/// Time budget, at least, of the calls the host makes for itself at load
/// (`init`, the first-byte probes), whatever `plugins.limits.call_timeout`.
pub(super) const SETUP_BUDGET: Duration = Duration::from_millis(100);

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
    /// Look at every byte the client sent so far. `Err` says why the call
    /// failed; the detector then counts as having answered `no-match`.
    fn detect(&self, data: &[u8], peer: &Peer) -> Result<Verdict, Failure>;
    /// Whether a TCP flight starting with `first` is known to be `no-match`
    /// without asking (see [`FirstBytes`]).
    fn rules_out(&self, _first: u8) -> bool {
        false
    }
    /// Whether the detector is our own code, whose calls are short: a UDP
    /// listener makes them in place; other calls run beside its socket.
    fn is_builtin(&self) -> bool {
        false
    }
}

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

impl Addr {
    /// Written out as [`Display`] does; an IPv4 address without the
    /// formatting machinery or an allocation, which cost a hooked
    /// connection more than the rest of opening its session.
    fn text(&self) -> AddrText {
        let Addr::Socket(SocketAddr::V4(v4)) = self else { return AddrText::Long(self.to_string()) };
        let mut text = AddrText::Short([0; 21], 0);
        for (i, octet) in v4.ip().octets().into_iter().enumerate() {
            if i > 0 {
                text.push(b'.');
            }
            text.push_decimal(u16::from(octet));
        }
        text.push(b':');
        text.push_decimal(v4.port());
        text
    }
}

/// An address as text: in place for IPv4 (`255.255.255.255:65535` is 21
/// bytes), else allocated.
pub(super) enum AddrText {
    Short([u8; 21], u8),
    Long(String),
}

impl AddrText {
    pub(super) fn as_bytes(&self) -> &[u8] {
        match self {
            AddrText::Short(bytes, len) => &bytes[..usize::from(*len)],
            AddrText::Long(text) => text.as_bytes(),
        }
    }

    fn push(&mut self, byte: u8) {
        if let AddrText::Short(bytes, len) = self
            && let Some(slot) = bytes.get_mut(usize::from(*len))
        {
            *slot = byte;
            *len += 1;
        }
    }

    /// Append `n` in decimal.
    fn push_decimal(&mut self, n: u16) {
        let mut digits = [0u8; 5];
        let mut at = digits.len();
        let mut n = n;
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for &d in &digits[at..] {
            self.push(d);
        }
    }

    fn into_string(self) -> String {
        match self {
            AddrText::Short(..) => String::from_utf8_lossy(self.as_bytes()).into_owned(),
            AddrText::Long(text) => text,
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

    /// The client's address, written out as plugin files get it.
    pub(super) fn client_addr(&self) -> AddrText {
        self.client.text()
    }

    /// The local address, written out as plugin files get it.
    pub(super) fn local_addr(&self) -> AddrText {
        self.local.text()
    }

    /// The listener's name.
    pub(super) fn listener(&self) -> &str {
        &self.listener
    }

    /// The record the component bindings take (plugin files).
    pub(super) fn to_wit(&self) -> wit::Peer {
        wit::Peer {
            client_addr: self.client.text().into_string(),
            local_addr: self.local.text().into_string(),
            listener: self.listener.to_string(),
            transport: if self.udp { wit::Transport::Udp } else { wit::Transport::Tcp },
        }
    }
}

/// A plugin instance and the store it lives in.
struct Instance {
    store: Store<HostState>,
    bound: Bound,
}

/// A plugin's instance factory: the core module, called directly, for
/// built-ins (see [`direct`]); for a plugin file, its main module called
/// directly when its shape permits, until a call reaches an import only the
/// component serves ([`direct::NeedsComponent`]), and its component (see
/// [`component`]) from then on or when the shape does not permit.
pub(super) enum Pre {
    Component(component::Pre),
    Direct(direct::Pre),
    File { direct: direct::Pre, component: component::Pre, direct_ok: AtomicBool },
}

impl Pre {
    /// The module to call directly, while calls may go that way.
    fn direct(&self) -> Option<&direct::Pre> {
        match self {
            Pre::Direct(pre) => Some(pre),
            Pre::File { direct, direct_ok, .. } if direct_ok.load(Ordering::Relaxed) => Some(direct),
            _ => None,
        }
    }
}

/// An instance's exports, called the way its [`Pre`] says. A built-in's
/// (344 bytes of typed functions) is boxed: an instance moves out of the
/// idle pool and back into it on every call, and a pointer moves in one
/// word where the exports took a 352-byte copy each way.
enum Bound {
    Component(component::Exports),
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
    /// Imported interfaces some of whose functions are refused at the call.
    pub refused: Vec<String>,
    pre: Pre,
    config_json: String,
    memory: u64,
    budget: Duration,
    log: Arc<LogBudget>,
    idle: Mutex<Vec<Instance>>,
    /// Its failure counts, and whether it is disabled.
    breaker: Breaker,
    /// [`crate::clock::now_ms`] of the last overload warning, to write one a
    /// second at most.
    overload_warned: AtomicU64,
    /// First bytes the detector is known to turn down on TCP.
    first_bytes: FirstBytes,
}

/// The bytes `b` for which a TCP detector answers `no-match` to the one-byte
/// flight `[b]`.
///
/// The host never asks a detector again after a `no-match`, so a TCP client
/// whose first segment is that one byte would have ruled the detector out
/// there and then. The WIT contract makes `detect` a pure function of its
/// arguments whose verdict on a one-byte TCP flight does not depend on the
/// peer (the built-ins are held to it by the corpus tests), so any TCP
/// flight starting with such a byte is ruled out the same way without a call
/// into the sandbox: an HTTP request skips the `tls` and `http2` calls, and
/// the calls of every plugin file that turns `G` down. Over UDP every
/// detector is asked: a one-byte datagram is a whole message rather than
/// the start of one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct FirstBytes([u64; 4]);

impl FirstBytes {
    fn contains(&self, first: u8) -> bool {
        self.0[usize::from(first >> 6)] & (1 << (first & 63)) != 0
    }
}

impl DetectorPlugin {
    /// Wrap a pre-instantiated plugin, creating one instance to run `init`
    /// (which must accept the config) and learn the plugin's name.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        name: &str,
        source: Source,
        hash: String,
        pre: Pre,
        refused: Vec<String>,
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
            refused,
            pre,
            config_json,
            memory,
            budget,
            log: Arc::default(),
            idle: Mutex::new(Vec::new()),
            breaker: Breaker::new(name.into(), Kind::Detector),
            overload_warned: AtomicU64::new(0),
            first_bytes: FirstBytes::default(),
        };
        let (instance, info) = plugin.instantiate().map_err(|f| anyhow::anyhow!("{f}"))?;
        plugin.info = info;
        plugin.put_back(instance);
        Ok(plugin)
    }

    /// The budget of the calls the host makes for itself at load.
    fn setup_budget(&self) -> Duration {
        self.budget.max(SETUP_BUDGET)
    }

    fn instantiate(&self) -> Result<(Instance, Info), Failure> {
        let mut store = new_store(&self.name, self.memory, &self.log);
        let budget = self.setup_budget();
        let _running = start_call(&mut store, budget);
        let failed = |e: wasmtime::Error, store: &Store<HostState>, what: &str| {
            let failure = store.data().failure(&e, self.memory);
            Failure { cause: failure.cause, detail: format!("{what} {}", failure.detail) }
        };
        let (bound, init) = match (self.pre.direct(), &self.pre) {
            (Some(pre), _) | (None, Pre::Direct(pre)) => {
                let exports = match pre.instantiate(&mut store) {
                    Ok(exports) => exports,
                    Err(err) if self.fall_back(&err) => return self.instantiate(),
                    Err(err) => return Err(failed(err, &store, "instantiation")),
                };
                let init = exports.init(&mut store, &self.config_json);
                (Bound::Direct(Box::new(exports)), init)
            }
            (None, Pre::Component(pre) | Pre::File { component: pre, .. }) => {
                let exports = pre.instantiate(&mut store).map_err(|e| failed(e, &store, "instantiation"))?;
                let init = exports.init(&mut store, &self.config_json);
                (Bound::Component(exports), init)
            }
        };
        if let Err(err) = &init
            && matches!(bound, Bound::Direct(_))
            && self.fall_back(err)
        {
            return self.instantiate();
        }
        store.data_mut().console_flush();
        let info = match init {
            Ok(Ok(info)) => info,
            Ok(Err(refusal)) => {
                let detail = format!("init refused its config: {refusal}");
                return Err(Failure { cause: Cause::Instantiate, detail });
            }
            Err(err) => return Err(failed(err, &store, "init")),
        };
        Ok((Instance { store, bound }, info))
    }

    /// After a plugin file's direct call failed with `err`: whether the
    /// call should be made again through its component, which from now on
    /// serves every call. A call that reached an import only the component
    /// serves is made again; so is a failed instantiation or `init`, where
    /// the component may know better.
    fn fall_back(&self, err: &wasmtime::Error) -> bool {
        let Pre::File { direct_ok, .. } = &self.pre else { return false };
        if direct_ok.swap(false, Ordering::Relaxed) {
            tracing::debug!(plugin = %self.name, reason = %err, "calling the plugin through its component from now on");
        }
        true
    }

    /// Whether calls go to the plugin's core module (see [`Pre`]).
    pub fn calls_directly(&self) -> bool {
        self.pre.direct().is_some()
    }

    /// Whether an idle instance is of the kind calls go to now.
    fn current(&self, instance: &Instance) -> bool {
        matches!(instance.bound, Bound::Direct(_)) == self.pre.direct().is_some()
    }

    fn take(&self) -> Result<Instance, Failure> {
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        match idle {
            Some(instance) if self.current(&instance) => Ok(instance),
            _ => self.instantiate().map(|(instance, _)| instance),
        }
    }

    fn put_back(&self, instance: Instance) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE
            && self.current(&instance)
        {
            idle.push(instance);
        }
    }

    /// Learn which first bytes this detector turns down on TCP (see
    /// [`FirstBytes`]): one-byte calls from two unlike peers, once per plugin
    /// and config in the life of the process. A byte is in the table only
    /// when both say `no-match` (a detector that looks at the peer where it
    /// must not keeps those bytes asked); a call that fails leaves the table
    /// empty.
    pub(super) fn learn_first_bytes(&mut self) {
        type Key = (String, String);
        static LEARNED: OnceLock<Mutex<HashMap<Key, FirstBytes>>> = OnceLock::new();
        let learned = LEARNED.get_or_init(Mutex::default);
        let key = (self.hash.clone(), self.config_json.clone());
        if let Some(known) = learned.lock().ok().and_then(|map| map.get(&key).copied()) {
            self.first_bytes = known;
            return;
        }
        let peers = [
            Peer::new("192.0.2.1:40000", "192.0.2.2:443", "probe", false),
            Peer::new("[2001:db8::1]:50000", "[2001:db8::2]:8443", "other", false),
        ];
        let mut table = FirstBytes::default();
        for b in 0..=255u8 {
            let mut turned_down = true;
            for peer in &peers {
                // Our own calls at load, not a client's: a probe that lost
                // the CPU for a moment must not cost the plugin its table.
                match self.call_once(&[b], peer, self.setup_budget()) {
                    Ok(Verdict::NoMatch) => {}
                    Ok(_) => turned_down = false,
                    Err(failure) => {
                        tracing::debug!(plugin = %self.name, error = %failure, "first-byte probe failed; always asked");
                        return;
                    }
                }
            }
            if turned_down {
                table.0[usize::from(b >> 6)] |= 1 << (b & 63);
            }
        }
        self.first_bytes = table;
        if let Ok(mut map) = learned.lock() {
            map.insert(key, table);
        }
    }

    /// Whether the plugin is currently disabled after repeated failures.
    pub fn is_disabled(&self) -> bool {
        self.breaker.is_disabled()
    }

    /// Account for a failed call: a log line, the metrics and the breaker.
    fn failed(&self, failure: &Failure) {
        let (plugin, cause) = (&*self.name, failure.cause.label());
        if failure.cause.blames_plugin() {
            tracing::warn!(
                plugin,
                cause,
                detail = %failure.detail,
                "plugin call failed; the call counts as no-match and the instance is replaced"
            );
        } else {
            // The machine's fault: said once a second at most, never counted
            // toward disabling the plugin.
            let now = crate::clock::now_ms();
            let last = self.overload_warned.load(Ordering::Relaxed);
            if now.saturating_sub(last) >= 1000 && self.overload_warned.swap(now, Ordering::Relaxed) == last {
                tracing::warn!(plugin, cause, detail = %failure.detail, "plugin call interrupted; the call counts as no-match");
            }
        }
        self.breaker.failed(failure.cause);
    }
}

impl Detect for DetectorPlugin {
    fn name(&self) -> &str {
        &self.name
    }

    fn detect(&self, data: &[u8], peer: &Peer) -> Result<Verdict, Failure> {
        if self.is_disabled() {
            return Ok(Verdict::NoMatch);
        }
        let counters = self.breaker.counters();
        let started = std::time::Instant::now();
        let result = self.call_once(data, peer, self.budget);
        counters.call_seconds.observe(started.elapsed().as_secs_f64());
        counters.detector_calls.inc();
        match &result {
            Ok(_) => self.breaker.succeeded(),
            Err(failure) => self.failed(failure),
        }
        result
    }

    fn rules_out(&self, first: u8) -> bool {
        self.first_bytes.contains(first)
    }

    fn is_builtin(&self) -> bool {
        matches!(self.source, Source::Builtin)
    }
}

impl DetectorPlugin {
    /// One call on a pooled instance; `Err` says why it failed (the instance
    /// is then dropped: a trap poisons its store).
    fn call_once(&self, data: &[u8], peer: &Peer, budget: Duration) -> Result<Verdict, Failure> {
        let mut instance = self.take()?;
        let result = {
            let _running = start_call(&mut instance.store, budget);
            match &instance.bound {
                Bound::Component(exports) => exports.detect(&mut instance.store, data, peer),
                Bound::Direct(exports) => exports.detect(&mut instance.store, data, peer),
            }
        };
        instance.store.data_mut().console_flush();
        match result {
            Ok(verdict) => {
                self.put_back(instance);
                Ok(verdict)
            }
            Err(err) if err.is::<direct::NeedsComponent>() && self.fall_back(&err) => {
                self.call_once(data, peer, budget)
            }
            Err(err) => Err(instance.store.data().failure(&err, self.memory)),
        }
    }
}

/// A store for one instance of the plugin `name`, under its memory cap,
/// whose calls look at their clocks when the epoch advances.
pub(super) fn new_store(name: &Arc<str>, memory: u64, log: &Arc<LogBudget>) -> Store<HostState> {
    let mut store = Store::new(super::engine::engine(), HostState::new(name.clone(), memory, log.clone()));
    store.limiter(|state| &mut state.cap);
    store.epoch_deadline_callback(|mut store| Ok(store.data_mut().on_epoch()));
    store
}

/// Give the store a call's deadline, `budget` from now; the call may run
/// until the returned guard drops.
pub(super) fn start_call(store: &mut Store<HostState>, budget: Duration) -> watchdog::Call {
    let call = watchdog::Call::start(store.engine(), budget);
    store.data_mut().begin_call(budget, call.deadline());
    // Consult the callback at the next epoch: the watchdog advances it
    // only when some call's deadline has passed.
    store.set_epoch_deadline(1);
    call
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
        for v4 in ["0.0.0.0:0", "1.2.3.4:5", "10.20.30.40:443", "255.255.255.255:65535", "192.0.2.1:1000"] {
            let addr: SocketAddr = v4.parse().expect("v4");
            assert_eq!(Peer::of(addr, Some(addr), "edge", false).to_wit().client_addr, v4);
        }
        let wit = Peer::new("client text", "local text", "cli", false).to_wit();
        assert_eq!((wit.client_addr.as_str(), wit.local_addr.as_str()), ("client text", "local text"));
    }
}
