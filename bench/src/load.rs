//! Client-side load primitives: one bulk connection each way, loops of short
//! request/response connections at a fixed concurrency, and opening many
//! connections that send a first flight and then hold. Every loop is bounded
//! in time and in count, and every socket operation has a timeout, so a
//! misbehaving proxy yields errors, never a hang.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio::time::timeout;

/// Timeout for one connect, one write or one response (detect timeout is 3 s).
const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// Buffer size for bulk transfers.
const BULK_BUF: usize = 256 * 1024;
/// Upper bound on the bytes one bulk cell moves, whatever its duration.
const BULK_CAP: u64 = 64 << 30;
/// Upper bound on connections one short-connection task makes.
const SHORT_CAP: u64 = 10_000_000;

/// Bytes moved and the seconds it took.
pub struct Bulk {
    pub bytes: u64,
    pub secs: f64,
    /// Seconds from connect to the first byte received (for `SINK`, the count).
    pub ttfb: f64,
}

impl Bulk {
    pub fn gbps(&self) -> f64 {
        self.bytes as f64 / self.secs.max(1e-9) / 1e9
    }
}

async fn connect(addr: SocketAddr) -> Result<TcpStream> {
    let s = timeout(OP_TIMEOUT, TcpStream::connect(addr)).await.context("connect timed out")?.context("connect")?;
    s.set_nodelay(true).context("TCP_NODELAY")?;
    Ok(s)
}

/// Client→server: send `SINK` then data for `dur`, half-close, and take the
/// backend's count of bytes received; the clock stops at its reply. With
/// `http`, the data is the body of a chunked `POST`, one chunk per write.
pub async fn bulk_up(addr: SocketAddr, dur: Duration, http: bool) -> Result<Bulk> {
    let mut s = connect(addr).await?;
    let (head, chunk, last): (&[u8], Vec<u8>, &[u8]) = if http {
        let framed = [format!("{BULK_BUF:x}\r\n").as_bytes(), &[0u8; BULK_BUF], b"\r\n"].concat();
        (b"POST /sink HTTP/1.1\r\nHost: bench\r\nTransfer-Encoding: chunked\r\n\r\n", framed, b"0\r\n\r\n")
    } else {
        (b"SINK", vec![0u8; BULK_BUF], b"")
    };
    let start = Instant::now();
    s.write_all(head).await.context("write SINK")?;
    let mut sent = 0u64;
    while start.elapsed() < dur && sent < BULK_CAP {
        timeout(OP_TIMEOUT, s.write_all(&chunk)).await.context("bulk write stalled")?.context("bulk write")?;
        sent += chunk.len() as u64;
    }
    s.write_all(last).await.context("write the last chunk")?;
    sent += last.len() as u64;
    s.shutdown().await.context("half-close")?;
    let mut reply = String::new();
    timeout(Duration::from_secs(20), s.read_to_string(&mut reply))
        .await
        .context("no SINK count")?
        .context("read SINK count")?;
    let secs = start.elapsed().as_secs_f64();
    let bytes: u64 = reply.trim().parse().with_context(|| format!("SINK count: {reply:?}"))?;
    if bytes != sent {
        bail!("backend counted {bytes} bytes, {sent} were sent");
    }
    Ok(Bulk { bytes, secs, ttfb: secs })
}

/// Server→client: ask for an endless `SRCE` and read for `dur`, timed from
/// the first byte received (so a detection delay does not count). With
/// `http`, ask with `GET /srce`: the same bytes come as a response body.
pub async fn bulk_down(addr: SocketAddr, dur: Duration, http: bool) -> Result<Bulk> {
    let start = Instant::now();
    let mut s = connect(addr).await?;
    let ask = if http { "GET /srce HTTP/1.1\r\nHost: bench\r\n\r\n".to_string() } else { format!("SRCE {BULK_CAP}\n") };
    s.write_all(ask.as_bytes()).await.context("write SRCE")?;
    let mut buf = vec![0u8; BULK_BUF];
    let mut first = None;
    let mut got = 0u64;
    loop {
        let n = timeout(OP_TIMEOUT, s.read(&mut buf)).await.context("bulk read stalled")?.context("bulk read")?;
        if n == 0 {
            bail!("server closed after {got} bytes");
        }
        // The clock starts when the first chunk arrives; that chunk is not counted.
        let Some(t0) = first else {
            first = Some(Instant::now());
            continue;
        };
        got += n as u64;
        if t0.elapsed() >= dur {
            let ttfb = t0.duration_since(start).as_secs_f64();
            return Ok(Bulk { bytes: got, secs: t0.elapsed().as_secs_f64(), ttfb });
        }
    }
}

/// What a short connection sends and what its reply must look like.
#[derive(Clone)]
pub struct Exchange {
    pub request: Arc<[u8]>,
    /// The reply must start with this …
    pub reply_prefix: Arc<[u8]>,
    /// … and be exactly this long.
    pub reply_len: usize,
}

/// Outcome of a short-connection cell.
pub struct Short {
    pub ok: u64,
    pub errors: u64,
    pub secs: f64,
    /// Sorted latencies in microseconds.
    pub lat_us: Vec<u32>,
}

impl Short {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.secs.max(1e-9)
    }
    pub fn pct_ms(&self, p: f64) -> f64 {
        if self.lat_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.lat_us.len() - 1) as f64 * p).round() as usize;
        f64::from(self.lat_us[i]) / 1000.0
    }
}

/// `conc` tasks each loop connect → request → read reply to EOF → close
/// until `dur` has passed.
pub async fn short(addr: SocketAddr, conc: usize, dur: Duration, ex: Exchange) -> Short {
    let start = Instant::now();
    let deadline = start + dur;
    let mut tasks = Vec::with_capacity(conc);
    for _ in 0..conc {
        let ex = ex.clone();
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut errors) = (Vec::new(), 0u64);
            let mut n = 0u64;
            while Instant::now() < deadline && n < SHORT_CAP {
                n += 1;
                let t0 = Instant::now();
                match one_exchange(addr, &ex).await {
                    Ok(()) => lat.push(t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32),
                    Err(_) => {
                        errors += 1;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
            (lat, errors)
        }));
    }
    let mut res = Short { ok: 0, errors: 0, secs: 0.0, lat_us: Vec::new() };
    for t in tasks {
        match t.await {
            Ok((lat, errors)) => {
                res.lat_us.extend(lat);
                res.errors += errors;
            }
            Err(_) => res.errors += 1,
        }
    }
    res.secs = start.elapsed().as_secs_f64();
    res.ok = res.lat_us.len() as u64;
    res.lat_us.sort_unstable();
    res
}

async fn one_exchange(addr: SocketAddr, ex: &Exchange) -> Result<()> {
    let mut s = connect(addr).await?;
    timeout(OP_TIMEOUT, s.write_all(&ex.request)).await.context("write timed out")??;
    let mut reply = Vec::with_capacity(ex.reply_len);
    timeout(OP_TIMEOUT, s.read_to_end(&mut reply)).await.context("reply timed out")??;
    if reply.len() != ex.reply_len || !reply.starts_with(&ex.reply_prefix) {
        bail!("unexpected reply of {} bytes", reply.len());
    }
    Ok(())
}

/// Connections opened by [`open_many`], kept open until dropped.
pub struct Opened {
    pub streams: Vec<TcpStream>,
    pub errors: usize,
    pub secs: f64,
}

/// Open `n` connections with at most `inflight` connecting at once; each
/// sends `first` and is then held. Times out as a whole after `limit`.
pub async fn open_many(addr: SocketAddr, n: usize, inflight: usize, first: &'static [u8], limit: Duration) -> Opened {
    let next = Arc::new(AtomicUsize::new(0));
    let kept = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + limit;
    let mut tasks = Vec::with_capacity(inflight);
    for _ in 0..inflight.min(n) {
        let (next, kept) = (next.clone(), kept.clone());
        tasks.push(tokio::spawn(async move {
            let mut errors = 0;
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let opened = tokio::time::timeout_at(deadline, async {
                    let mut s = connect(addr).await?;
                    s.write_all(first).await.context("first flight")?;
                    anyhow::Ok(s)
                })
                .await;
                match opened {
                    Ok(Ok(s)) => kept.lock().await.push(s),
                    Ok(Err(_)) => errors += 1,
                    Err(_) => {
                        errors += 1;
                        break;
                    }
                }
            }
            errors
        }));
    }
    let mut errors = 0;
    for t in tasks {
        errors += t.await.unwrap_or(1);
    }
    let secs = start.elapsed().as_secs_f64();
    let streams = std::mem::take(&mut *kept.lock().await);
    let errors = errors.max(n.saturating_sub(streams.len()));
    Opened { streams, errors, secs }
}
