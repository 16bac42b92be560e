//! Detection over in-memory streams: odd splits, silent and slow clients,
//! garbage, full buffers — with native stand-in detectors, so these tests
//! exercise the detection loop alone.

use super::*;
use crate::plugin::detector::{Detect, Peer};
use crate::plugin::{Detection, Verdict};
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::AsyncWriteExt;

/// Matches data starting with `prefix` (need-more while a prefix of it).
struct Prefix {
    name: &'static str,
    prefix: &'static [u8],
    calls: AtomicUsize,
}

impl Prefix {
    fn new(name: &'static str, prefix: &'static [u8]) -> Arc<Self> {
        Arc::new(Prefix { name, prefix, calls: AtomicUsize::new(0) })
    }
}

impl Detect for Prefix {
    fn name(&self) -> &str {
        self.name
    }
    fn detect(&self, data: &[u8], _peer: &Peer) -> Result<Verdict, crate::plugin::Failure> {
        Ok(self.verdict(data))
    }
}

impl Prefix {
    fn verdict(&self, data: &[u8]) -> Verdict {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let n = data.len().min(self.prefix.len());
        if data[..n] != self.prefix[..n] {
            Verdict::NoMatch
        } else if n < self.prefix.len() {
            Verdict::NeedMore(self.prefix.len() as u32)
        } else {
            Verdict::Matched(Detection { protocol: self.name.into(), ..Default::default() })
        }
    }
}

fn peer() -> Peer {
    Peer::new("127.0.0.1:1", "127.0.0.1:2", "test", false)
}

/// Feed `chunks` into one end of a pipe, pausing between them, then keep the
/// pipe open (or close it when `close`).
async fn run(detectors: Vec<Arc<dyn Detect>>, chunks: Vec<&'static [u8]>, close: bool, max: usize) -> Detected {
    let (mut client, mut server) = tokio::io::duplex(1 << 16);
    let writer = tokio::spawn(async move {
        for chunk in chunks {
            client.write_all(chunk).await.expect("write");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if !close {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        drop(client);
    });
    let detected =
        detect(&mut server, Vec::new(), &detectors, &peer(), max, Duration::from_secs(3)).await.expect("detect");
    writer.abort();
    detected
}

#[tokio::test(start_paused = true)]
async fn one_byte_at_a_time_matches_and_keeps_every_byte() {
    let chunks: Vec<&'static [u8]> = b"SSH-2.0-x\r\n".chunks(1).collect();
    let d = run(vec![Prefix::new("http", b"GET "), Prefix::new("ssh", b"SSH-")], chunks, false, 4096).await;
    assert!(matches!(&d.outcome, Outcome::Matched { detector: 1, .. }), "{:?}", d.outcome);
    assert_eq!(d.bytes, b"SSH-");
}

#[tokio::test(start_paused = true)]
async fn odd_splits_match() {
    let d =
        run(vec![Prefix::new("http", b"GET /index")], vec![b"GE", b"T /in", b"dex HTTP/1.1\r\n"], false, 4096).await;
    assert!(matches!(d.outcome, Outcome::Matched { .. }));
    assert_eq!(d.bytes, b"GET /index HTTP/1.1\r\n");
}

#[tokio::test(start_paused = true)]
async fn silent_client_times_out_with_no_bytes() {
    let d = run(vec![Prefix::new("ssh", b"SSH-")], vec![], false, 4096).await;
    assert_eq!(d.outcome, Outcome::TimedOut);
    assert!(d.bytes.is_empty());
}

#[tokio::test(start_paused = true)]
async fn slow_partial_client_times_out_keeping_its_bytes() {
    let d = run(vec![Prefix::new("ssh", b"SSH-")], vec![b"SS"], false, 4096).await;
    assert_eq!(d.outcome, Outcome::TimedOut);
    assert_eq!(d.bytes, b"SS");
}

#[tokio::test(start_paused = true)]
async fn garbage_is_unknown_at_once_and_kept() {
    let d = run(vec![Prefix::new("ssh", b"SSH-"), Prefix::new("http", b"GET ")], vec![b"\x00\xffgarbage"], false, 4096)
        .await;
    assert_eq!(d.outcome, Outcome::Unknown);
    assert_eq!(d.bytes, b"\x00\xffgarbage");
}

#[tokio::test(start_paused = true)]
async fn buffer_full_without_verdict() {
    let d =
        run(vec![Prefix::new("long", b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")], vec![b"AAAAAAAAAAAAAAAA"], false, 16)
            .await;
    assert_eq!(d.outcome, Outcome::Full);
    assert_eq!(d.bytes.len(), 16);
}

#[tokio::test(start_paused = true)]
async fn client_closing_early_is_reported() {
    let d = run(vec![Prefix::new("ssh", b"SSH-")], vec![b"SS"], true, 4096).await;
    assert_eq!(d.outcome, Outcome::ClientClosed);
    assert_eq!(d.bytes, b"SS");
}

#[tokio::test(start_paused = true)]
async fn no_detectors_means_unknown_without_reading() {
    let d = run(vec![], vec![b"hello"], false, 4096).await;
    assert_eq!(d.outcome, Outcome::Unknown);
    assert!(d.bytes.is_empty(), "no byte may be consumed");
}

#[tokio::test(start_paused = true)]
async fn a_detector_that_needs_n_bytes_is_not_asked_before() {
    let long = Prefix::new("long", b"0123456789");
    let chunks: Vec<&'static [u8]> = b"0123456789".chunks(1).collect();
    let d = run(vec![long.clone()], chunks, false, 4096).await;
    assert!(matches!(d.outcome, Outcome::Matched { .. }));
    // Asked at the first byte (learns it needs 10), then only at the tenth.
    assert_eq!(long.calls.load(Ordering::Relaxed), 2);
}

#[tokio::test(start_paused = true)]
async fn no_match_detectors_are_not_asked_again() {
    let ssh = Prefix::new("ssh", b"SSH-");
    let http = Prefix::new("http", b"GET /abcdef");
    let chunks: Vec<&'static [u8]> = b"GET /abcdef".chunks(1).collect();
    let d = run(vec![ssh.clone(), http], chunks, false, 4096).await;
    assert!(matches!(&d.outcome, Outcome::Matched { detector: 1, .. }));
    assert_eq!(ssh.calls.load(Ordering::Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn first_match_in_order_wins() {
    let d = run(vec![Prefix::new("a", b"XY"), Prefix::new("b", b"X")], vec![b"XY"], false, 4096).await;
    assert!(matches!(&d.outcome, Outcome::Matched { detector: 0, .. }));
}

#[tokio::test(start_paused = true)]
async fn a_detector_waiting_for_more_than_the_buffer_holds_is_out_at_once() {
    // A length field that lies: the detector would wait for 10 bytes, the
    // listener holds 8. Detection ends on the first bytes, not at the timeout.
    let started = tokio::time::Instant::now();
    let d = run(vec![Prefix::new("long", b"0123456789")], vec![b"0123"], false, 8).await;
    assert_eq!(d.outcome, Outcome::Full, "the buffer is too small for what it waits for");
    assert_eq!(d.bytes, b"0123");
    assert!(started.elapsed() < Duration::from_secs(1), "it waited {:?}", started.elapsed());
}
