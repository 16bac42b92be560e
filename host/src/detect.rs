//! Detection: collect a client's first bytes and ask the listener's detectors
//! what protocol they are.
//!
//! One buffer of at most `max_bytes`; every byte read is kept and later
//! replayed to the backend, in order. After each read the detectors still in
//! the running are asked about the whole buffer, in the listener's order: the
//! first `matched` wins; a detector that answers `no-match` is not asked
//! again; one that answers `need-more(n)` is not asked again before the buffer
//! holds `n` bytes, and one that needs more than `max_bytes` (a length field
//! that lies, or a first flight larger than the buffer) is out at once: if
//! no other decides, detection ends as `Full` then, without waiting for
//! bytes that could not be held. Waiting for bytes is a plain await on the socket: no CPU,
//! no lock held. A detector whose call fails counts as `no-match`; the
//! failure is kept for the access log.

use crate::plugin::detector::{Detect, Peer};
use crate::plugin::{Detection, Failure, Verdict};
use smallvec::SmallVec;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, ReadBuf};

/// How detection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A detector recognised the bytes.
    Matched {
        detection: Detection,
        /// The detector that answered: its place in the listener's list.
        detector: usize,
    },
    /// Every detector said `no-match` (or the listener has none).
    Unknown,
    /// The buffer filled up before any detector decided.
    Full,
    /// `detect.timeout` passed first; `bytes` says whether the client sent any.
    TimedOut,
    /// The client closed its side before any detector decided.
    ClientClosed,
}

/// The outcome and the bytes read, to be replayed to the backend.
#[derive(Debug)]
pub struct Detected {
    pub outcome: Outcome,
    pub bytes: Vec<u8>,
    /// Detector calls that failed on the way.
    pub failures: Failures,
}

/// Most bytes taken from the stream by one read.
pub const CHUNK: usize = 16 * 1024;

/// Run detection on `stream`, of which `first` was already read.
///
/// The bytes are kept in a vector that grows with what the client sent, not
/// in a `max_bytes` buffer: a client that sent one byte and went quiet holds
/// one byte.
pub async fn detect<S: AsyncRead + Unpin>(
    stream: &mut S,
    first: Vec<u8>,
    detectors: &[Arc<dyn Detect>],
    peer: &Peer,
    max_bytes: usize,
    timeout: Duration,
) -> std::io::Result<Detected> {
    let mut data = first;
    if detectors.is_empty() {
        return Ok(Detected { outcome: Outcome::Unknown, bytes: data, failures: Failures::default() });
    }
    let max = max_bytes.max(1);
    // Set when the first read has to wait: most clients' first bytes are
    // already there and decide it.
    let mut deadline = None;
    let mut progress = Progress::new(detectors.len()).limit(max);
    let mut fresh = !data.is_empty();
    let done = |outcome, bytes, progress: Progress| Ok(Detected { outcome, bytes, failures: progress.failures });
    loop {
        if fresh {
            if let Some(outcome) = progress.step(detectors, &data, peer) {
                return done(outcome, data, progress);
            }
            if data.len() >= max {
                return done(Outcome::Full, data, progress);
            }
        }
        let deadline = *deadline.get_or_insert_with(|| Deadline::after(timeout));
        let read = match deadline.bound(read_more(stream, &mut data, max)).await {
            Some(read) => read?,
            None => return done(Outcome::TimedOut, data, progress),
        };
        if read == 0 {
            return done(Outcome::ClientClosed, data, progress);
        }
        fresh = true;
    }
}

/// When detection gives up: on a connection's event loop, by its timers;
/// elsewhere (`refractium detect`, tests), by tokio's.
#[derive(Clone, Copy)]
pub(crate) enum Deadline {
    Loop(std::time::Instant),
    Tokio(tokio::time::Instant),
}

impl Deadline {
    pub(crate) fn after(timeout: Duration) -> Self {
        if crate::evloop::in_loop() {
            Deadline::Loop(std::time::Instant::now() + timeout)
        } else {
            Deadline::Tokio(tokio::time::Instant::now() + timeout)
        }
    }

    /// `fut`'s output, or `None` if the deadline passes first.
    pub(crate) async fn bound<F: std::future::Future>(self, fut: F) -> Option<F::Output> {
        match self {
            Deadline::Loop(at) => crate::evloop::timeout_at(at, fut).await.ok(),
            Deadline::Tokio(at) => tokio::time::timeout_at(at, fut).await.ok(),
        }
    }
}

/// Read what `stream` has, at most up to `max` bytes in all, onto the end of
/// `data`; 0 at end of stream.
pub(crate) async fn read_more<S: AsyncRead + Unpin>(
    stream: &mut S,
    data: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<usize> {
    std::future::poll_fn(|cx| {
        let mut chunk = [MaybeUninit::<u8>::uninit(); CHUNK];
        let room = max.saturating_sub(data.len()).min(CHUNK);
        let mut buf = ReadBuf::uninit(&mut chunk[..room]);
        ready!(Pin::new(&mut *stream).poll_read(cx, &mut buf))?;
        data.extend_from_slice(buf.filled());
        Poll::Ready(Ok(buf.filled().len()))
    })
    .await
}

/// Detector calls that failed while one client was looked at: the
/// detector's name and why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Failures(Vec<(String, Failure)>);

impl Failures {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `name (cause): detail; ...` for the access log, `-` when none failed.
    pub fn summary(&self) -> std::borrow::Cow<'static, str> {
        if self.0.is_empty() {
            return "-".into();
        }
        let each = self.0.iter().map(|(name, f)| format!("{name} ({}): {}", f.cause.label(), f.detail));
        each.collect::<Vec<_>>().join("; ").into()
    }
}

/// Where each detector stands for one client: the detection loop shared by
/// TCP streams and UDP datagrams.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Per detector: `None` once it said no-match, else the length it waits for.
    waiting: SmallVec<[Option<usize>; 8]>,
    /// The most bytes detection will ever hold: a detector that waits for
    /// more (a length field that lies, or a first flight larger than the
    /// buffer) is out of the running at once.
    limit: usize,
    /// Some detector waited for more than `limit`: if no other decides,
    /// the outcome is [`Outcome::Full`] (the buffer was too small), now.
    beyond_limit: bool,
    /// The calls that failed so far.
    pub failures: Failures,
}

impl Progress {
    /// Every detector still in the running.
    pub fn new(detectors: usize) -> Self {
        Progress {
            waiting: smallvec::smallvec![Some(1); detectors],
            limit: usize::MAX,
            beyond_limit: false,
            failures: Failures::default(),
        }
    }

    /// No detector may wait for more than `max` bytes in all.
    pub fn limit(mut self, max: usize) -> Self {
        self.limit = max;
        self
    }

    /// Whether the next [`Progress::step`] over `len` bytes would call a
    /// detector that is not a built-in (a plugin file, whose calls may take
    /// up to its whole budget).
    pub fn would_call_plugin_file(&self, detectors: &[Arc<dyn Detect>], len: usize) -> bool {
        detectors.iter().zip(&self.waiting).any(|(d, wait)| wait.is_some_and(|w| len >= w) && !d.is_builtin())
    }

    /// Ask the detectors still in the running about `data` (every byte so
    /// far). `Some` when detection is over: matched, or every detector said
    /// no-match; `None` while some detector waits for more bytes.
    pub fn step(&mut self, detectors: &[Arc<dyn Detect>], data: &[u8], peer: &Peer) -> Option<Outcome> {
        let len = data.len();
        // First-byte tables describe TCP flights only.
        let first = if peer.is_udp() { None } else { data.first().copied() };
        for (i, (detector, wait)) in detectors.iter().zip(self.waiting.iter_mut()).enumerate() {
            let Some(wanted) = *wait else { continue };
            if len < wanted {
                continue;
            }
            if first.is_some_and(|b| detector.rules_out(b)) {
                *wait = None;
                continue;
            }
            let verdict = match detector.detect(data, peer) {
                Ok(verdict) => verdict,
                Err(failure) => {
                    self.failures.0.push((detector.name().to_string(), failure));
                    Verdict::NoMatch
                }
            };
            match verdict {
                Verdict::Matched(detection) => {
                    return Some(Outcome::Matched { detection, detector: i });
                }
                Verdict::NeedMore(n) => {
                    let n = (n as usize).max(len + 1);
                    *wait = (n <= self.limit).then_some(n);
                    self.beyond_limit |= wait.is_none();
                }
                Verdict::NoMatch => *wait = None,
            }
        }
        if !self.waiting.iter().all(Option::is_none) {
            None
        } else if self.beyond_limit {
            Some(Outcome::Full)
        } else {
            Some(Outcome::Unknown)
        }
    }
}

#[cfg(test)]
mod tests;
