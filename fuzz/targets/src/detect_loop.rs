//! Fuzz target `detect_loop`: the host's detection loop
//! ([`refractium::detect::Progress`]) over the real built-in detector
//! components, loaded by the plugin engine as the proxy loads them and
//! called in the sandbox, fed arbitrary bytes that arrive split at points
//! the input chooses (TCP reads, or UDP datagrams held together).
//!
//! Input: a mode byte (bit 0: UDP; bit 1: the first [`BYTEWISE`] bytes
//! arrive one at a time), a count byte, that many big-endian `u16` split
//! points (taken modulo the length), then the client's bytes (at most the
//! default `detect.max_bytes`).
//!
//! What the host promises, checked on every input:
//!
//! - nothing panics, and no built-in's call fails (a trap is a panic inside
//!   the detector; too much memory, time or output are bugs too);
//!   failures the machine causes (`overload`) end the run unchecked;
//! - the work is bounded: each detector is asked at most once per read, and
//!   never again after `no-match` or a `need-more` beyond the buffer, before
//!   the length its `need-more` asked for, or at all over TCP when its
//!   first-byte table rules it out;
//! - the shortcuts do not change the verdict: the loop decides what a loop
//!   without them decides — one that asks every detector still in the
//!   running (until its `no-match`) about every read, first-byte tables and
//!   `need-more` lengths ignored (but, like the host, dropping a detector
//!   that waits for more than `detect.max_bytes`): the same detector
//!   matches at the same read with the same detection, or neither has
//!   decided at the end, or both find every detector out (`unknown`, or
//!   `full` when one waited beyond the buffer) — the host possibly later, or
//!   not yet: a `need-more(n)` may hide an answer the detector could have
//!   given sooner (`pattern` waits for the 8 bytes of a rule at offset 4,
//!   and refuses at 5 bytes when byte 4 disagrees), never a match;
//! - over TCP a `no-match` is final: a detector that refused a prefix
//!   refuses every longer one the loop saw, as the host assumes when it
//!   stops asking.
//!
//! The verdict may legitimately depend on the splits in one way: the first
//! detector to match a prefix wins, so a detector early in the order that
//! needs more bytes loses to a later one that matches fewer. That is the
//! order's meaning, not a shortcut, and both loops above share it.

use crate::detectors::PATTERN_CONFIG;
use refractium::config::defaults::DETECT_MAX_BYTES;
use refractium::detect::{Outcome, Progress};
use refractium::plugin::detector::{Detect, Peer};
use refractium::plugin::{Cause, DetectorPlugin, Failure, PluginSet, Verdict};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Bytes that arrive one at a time in the bytewise mode.
pub const BYTEWISE: usize = 32;
/// Most split points an input gives.
pub const MAX_SPLITS: usize = 16;

/// The built-in detectors of TCP listeners, then of UDP listeners, each in
/// the default order.
pub type Builtins = (Vec<Arc<DetectorPlugin>>, Vec<Arc<DetectorPlugin>>);

/// The built-in detectors, loaded once per process.
pub fn builtins() -> &'static Builtins {
    static SET: OnceLock<Builtins> = OnceLock::new();
    SET.get_or_init(|| {
        let mut config = refractium::config::Config::default();
        let pattern = serde_json::from_str(PATTERN_CONFIG).expect("PATTERN_CONFIG is JSON");
        config.plugins.config.insert("pattern".into(), pattern);
        // The longest budget the config allows: a call that runs out of it
        // loops, rather than lost the CPU to a busy machine.
        config.plugins.limits.call_timeout = Duration::from_secs(1);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
        let set = runtime.block_on(PluginSet::load(&config)).expect("the built-in detectors load");
        (set.detectors_for(false), set.detectors_for(true))
    })
}

/// The input, decoded.
struct Input<'a> {
    udp: bool,
    data: &'a [u8],
    /// Where each read (or datagram) ends, increasing, the last at `data.len()`.
    ends: Vec<usize>,
}

fn decode(input: &[u8]) -> Input<'_> {
    let (mode, rest) = input.split_first().map_or((0, input), |(m, r)| (*m, r));
    let (count, rest) = rest.split_first().map_or((0, rest), |(c, r)| (usize::from(*c) % (MAX_SPLITS + 1), r));
    let (points, data) = rest.split_at((2 * count).min(rest.len()));
    let data = data.get(..DETECT_MAX_BYTES).unwrap_or(data);
    let len = data.len();
    let mut ends: Vec<usize> = points.chunks_exact(2).map(|p| usize::from(u16::from_be_bytes([p[0], p[1]]))).collect();
    ends.iter_mut().for_each(|e| *e %= len + 1);
    if mode & 2 != 0 {
        ends.extend(1..=BYTEWISE.min(len));
    }
    ends.push(len);
    ends.retain(|&e| e > 0);
    ends.sort_unstable();
    ends.dedup();
    Input { udp: mode & 1 != 0, data, ends }
}

/// A built-in that remembers what it was asked and answered.
struct Counted {
    plugin: Arc<DetectorPlugin>,
    calls: Mutex<Vec<(usize, Result<Verdict, Failure>)>>,
}

impl Detect for Counted {
    fn name(&self) -> &str {
        self.plugin.name()
    }
    fn detect(&self, data: &[u8], peer: &Peer) -> Result<Verdict, Failure> {
        let result = self.plugin.detect(data, peer);
        if let Ok(mut calls) = self.calls.lock() {
            calls.push((data.len(), result.clone()));
        }
        result
    }
    fn rules_out(&self, first: u8) -> bool {
        self.plugin.rules_out(first)
    }
    fn is_builtin(&self) -> bool {
        self.plugin.is_builtin()
    }
}

/// How a loop ended: its outcome and the read it decided at; `None` when
/// it had not decided after the last read.
type Ended = Option<(Outcome, usize)>;

/// A failure that is the machine's fault ends the run unchecked; any other
/// is a bug of the built-in.
fn failed(name: &str, failure: &Failure, len: usize) -> Option<()> {
    if failure.cause == Cause::Overload {
        return None;
    }
    panic!("built-in `{name}` failed on {len} bytes: {failure}");
}

pub fn run(input: &[u8]) {
    let Input { udp, data, ends } = decode(input);
    if data.is_empty() {
        // Detection starts with the first byte: an empty read is a close,
        // an empty datagram is dropped.
        return;
    }
    let (tcp_set, udp_set) = builtins();
    let plugins = if udp { udp_set } else { tcp_set };
    let peer = Peer::new("192.0.2.7:40000", "198.51.100.1:443", "fuzz", udp);
    let counted: Vec<Arc<Counted>> =
        plugins.iter().map(|p| Arc::new(Counted { plugin: p.clone(), calls: Mutex::default() })).collect();
    let detectors: Vec<Arc<dyn Detect>> = counted.iter().map(|c| c.clone() as Arc<dyn Detect>).collect();

    // The host's loop.
    let mut progress = Progress::new(detectors.len()).limit(DETECT_MAX_BYTES);
    let mut host: Ended = None;
    let mut reads = 0;
    for &end in &ends {
        reads += 1;
        if let Some(outcome) = progress.step(&detectors, &data[..end], &peer) {
            host = Some((outcome, end));
            break;
        }
    }
    for c in &counted {
        let calls = c.calls.lock().map(|calls| calls.clone()).unwrap_or_default();
        for (len, result) in &calls {
            if let Err(failure) = result {
                let Some(()) = failed(c.name(), failure, *len) else { return };
            }
        }
        check_calls(c, &calls, data, udp, reads);
    }

    // The loop without shortcuts.
    let mut running = vec![true; plugins.len()];
    let mut refused_at = vec![None; plugins.len()];
    let mut beyond_limit = false;
    let mut reference: Ended = None;
    'reads: for &end in &ends {
        for (i, plugin) in plugins.iter().enumerate() {
            if !running[i] {
                continue;
            }
            match plugin.detect(&data[..end], &peer) {
                Ok(Verdict::Matched(detection)) => {
                    reference = Some((Outcome::Matched { detection, detector: i }, end));
                    break 'reads;
                }
                Ok(Verdict::NoMatch) => {
                    running[i] = false;
                    refused_at[i] = Some(end);
                }
                Ok(Verdict::NeedMore(n)) => {
                    if (n as usize).max(end + 1) > DETECT_MAX_BYTES {
                        running[i] = false;
                        beyond_limit = true;
                    }
                }
                Err(failure) => {
                    let Some(()) = failed(plugin.name(), &failure, end) else { return };
                }
            }
        }
        if running.iter().all(|r| !r) {
            reference = Some((if beyond_limit { Outcome::Full } else { Outcome::Unknown }, end));
            break;
        }
    }
    let name = |ended: &Ended| match ended {
        Some((Outcome::Matched { detector, .. }, _)) => plugins[*detector].name().to_string(),
        _ => "-".into(),
    };
    // Every detector out: refused, or waiting for more than the buffer holds.
    let out = |outcome: &Outcome| matches!(outcome, Outcome::Unknown | Outcome::Full);
    let agree = match (&host, &reference) {
        (host, reference) if host == reference => true,
        // A need-more(n) may hide an answer the detector could have given
        // sooner: the host finds every detector out later, or not yet.
        (Some((h, at)), Some((r, sooner))) if out(h) && out(r) => at > sooner,
        (None, Some((r, _))) => out(r),
        _ => false,
    };
    assert!(
        agree,
        "the host's loop decided {host:?} (`{}`), asking at every read decides {reference:?} (`{}`); \
         {} bytes over {}, reads ending at {ends:?}",
        name(&host),
        name(&reference),
        data.len(),
        if udp { "UDP" } else { "TCP" },
    );

    // No-match is final over TCP.
    if !udp {
        let last = reference.as_ref().map_or(data.len(), |(_, end)| *end);
        for (plugin, at) in plugins.iter().zip(&refused_at) {
            let Some(at) = *at else { continue };
            if at == last {
                continue;
            }
            match plugin.detect(&data[..last], &peer) {
                Ok(Verdict::NoMatch) => {}
                Ok(other) => panic!("`{}`: no-match at {at} bytes, then {other:?} at {last}", plugin.name()),
                Err(failure) => {
                    let Some(()) = failed(plugin.name(), &failure, last) else { return };
                }
            }
        }
    }
}

/// The host asked `c` only when it had to: at most once per read, at
/// increasing lengths, never after a final answer, never before the length
/// a `need-more` asked for, and over TCP not at all when the first byte
/// rules it out.
fn check_calls(c: &Counted, calls: &[(usize, Result<Verdict, Failure>)], data: &[u8], udp: bool, reads: usize) {
    let name = c.name();
    assert!(calls.len() <= reads, "`{name}` asked {} times over {reads} reads", calls.len());
    if !udp && data.first().is_some_and(|&b| c.rules_out(b)) {
        assert!(calls.is_empty(), "`{name}` asked though its first-byte table rules it out: {calls:?}");
    }
    let mut wanted = 1;
    let mut over = false;
    for (len, result) in calls {
        assert!(!over, "`{name}` asked again at {len} bytes after a final answer: {calls:?}");
        assert!(*len >= wanted, "`{name}` asked at {len} bytes though it waits for {wanted}: {calls:?}");
        match result {
            Ok(Verdict::NeedMore(n)) => {
                wanted = (*n as usize).max(len + 1);
                // Waiting for more than the buffer holds puts it out.
                over = wanted > DETECT_MAX_BYTES;
            }
            Ok(Verdict::Matched(_) | Verdict::NoMatch) | Err(_) => over = true,
        }
    }
}
