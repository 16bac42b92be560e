//! The backend server every workload talks to, directly or through a proxy.
//!
//! It classifies a connection by its first bytes: `GET ` gets a small
//! HTTP/1.1 response with `Connection: close`; a TLS record (first byte 0x16)
//! gets 32 bytes once the whole ClientHello record has arrived; `SINK` is read
//! to EOF and answered with the byte count that followed it; `SRCE <n>\n` makes
//! the server write `n` bytes and close; `IDLE` holds the connection silently
//! until the client closes; `STAT` (a control command the orchestrator sends
//! directly, never through a proxy) answers with the number of `IDLE`
//! connections currently held. `POST` is `SINK` after a request head (the
//! count is of the bytes after the head, framing included), and `GET /srce`
//! is an endless `SRCE` after a response head, for the bulk cells framed as
//! HTTP. Anything else is drained to EOF and closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Response to `GET `; the body is two bytes so a client can check it cheaply.
pub const HTTP_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
/// Size of the reply to a TLS ClientHello.
pub const TLS_REPLY_LEN: usize = 32;
/// Largest request header or ClientHello record the backend buffers.
const MAX_HEAD: usize = 64 * 1024;
/// Buffer size for bulk reads and writes.
const BULK_BUF: usize = 256 * 1024;

/// Bind, print the port when asked, and serve forever on one thread.
///
/// One thread, like a single nginx worker: a runtime that accepts on one
/// thread and serves on another hands every connection across (a futex wake
/// each), which costs the machine CPU the proxy under test would otherwise
/// get and makes the results depend on where the scheduler puts two threads.
pub fn serve(bind: SocketAddr, print_port: bool) -> Result<()> {
    let rt =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("building the backend runtime")?;
    rt.block_on(async move {
        let listener = listen(bind)?;
        let port = listener.local_addr().context("backend local_addr")?.port();
        if print_port {
            println!("{port}");
        }
        let idle = Arc::new(AtomicUsize::new(0));
        loop {
            let (sock, _) = match listener.accept().await {
                Ok(pair) => pair,
                // EMFILE and friends: back off instead of spinning.
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    continue;
                }
            };
            let idle = idle.clone();
            tokio::spawn(async move {
                // A client that vanishes mid-request is normal under load.
                let _ = handle(sock, idle).await;
            });
        }
    })
}

/// A listener with a deep accept queue (the default 128 causes SYN retransmits).
pub fn listen(bind: SocketAddr) -> Result<TcpListener> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).context("backend socket")?;
    sock.set_reuse_address(true).context("SO_REUSEADDR")?;
    sock.bind(&bind.into()).with_context(|| format!("binding {bind}"))?;
    sock.listen(65535).context("listen")?;
    sock.set_nonblocking(true).context("nonblocking")?;
    TcpListener::from_std(sock.into()).context("tokio listener")
}

async fn handle(mut sock: TcpStream, idle: Arc<AtomicUsize>) -> Result<()> {
    sock.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(4096);
    // Read until the first bytes tell the kind of request.
    while buf.len() < 4 && buf.first() != Some(&0x16) {
        if read_more(&mut sock, &mut buf).await? == 0 {
            return Ok(());
        }
    }
    if buf[0] == 0x16 {
        while buf.len() < 5 {
            if read_more(&mut sock, &mut buf).await? == 0 {
                return Ok(());
            }
        }
        let want = 5 + usize::from(u16::from_be_bytes([buf[3], buf[4]]));
        while buf.len() < want.min(MAX_HEAD) {
            if read_more(&mut sock, &mut buf).await? == 0 {
                return Ok(());
            }
        }
        sock.write_all(&[0x42; TLS_REPLY_LEN]).await?;
        return Ok(());
    }
    match &buf[..4] {
        b"GET " => {
            if head_end(&mut sock, &mut buf).await?.is_none() {
                return Ok(());
            }
            if buf.starts_with(b"GET /srce ") {
                sock.write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", u64::MAX / 2).as_bytes())
                    .await?;
                let chunk = vec![0x55u8; BULK_BUF];
                // Until the client goes away.
                while sock.write_all(&chunk).await.is_ok() {}
            } else {
                sock.write_all(HTTP_RESPONSE).await?;
            }
        }
        b"POST" => {
            let Some(end) = head_end(&mut sock, &mut buf).await? else { return Ok(()) };
            let total = (buf.len() - end) as u64 + sink(&mut sock).await?;
            sock.write_all(format!("{total}\n").as_bytes()).await?;
        }
        b"SINK" => {
            let total = (buf.len() - 4) as u64 + sink(&mut sock).await?;
            sock.write_all(format!("{total}\n").as_bytes()).await?;
        }
        b"SRCE" => {
            while !buf.contains(&b'\n') && buf.len() < 64 {
                if read_more(&mut sock, &mut buf).await? == 0 {
                    return Ok(());
                }
            }
            let line = String::from_utf8_lossy(&buf[4..]);
            let mut left: u64 = line.trim().parse().context("SRCE count")?;
            let chunk = vec![0x55u8; BULK_BUF];
            while left > 0 {
                let n = left.min(BULK_BUF as u64) as usize;
                sock.write_all(&chunk[..n]).await?;
                left -= n as u64;
            }
        }
        b"IDLE" => {
            idle.fetch_add(1, Ordering::SeqCst);
            let res = drain(&mut sock).await;
            idle.fetch_sub(1, Ordering::SeqCst);
            res?;
        }
        b"STAT" => {
            let n = idle.load(Ordering::SeqCst);
            sock.write_all(format!("{n}\n").as_bytes()).await?;
        }
        _ => drain(&mut sock).await?,
    }
    Ok(())
}

/// Read until `buf` holds a whole request head; where it ends, or `None`
/// when the client closed first or it grew past [`MAX_HEAD`].
async fn head_end(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Option<usize>> {
    loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(Some(at + 4));
        }
        if buf.len() >= MAX_HEAD || read_more(sock, buf).await? == 0 {
            return Ok(None);
        }
    }
}

/// Read to EOF; how many bytes came.
async fn sink(sock: &mut TcpStream) -> Result<u64> {
    let mut total = 0u64;
    let mut chunk = vec![0u8; BULK_BUF];
    loop {
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
    }
}

async fn read_more(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Result<usize> {
    let mut tmp = [0u8; 4096];
    let n = sock.read(&mut tmp).await?;
    buf.extend_from_slice(&tmp[..n]);
    Ok(n)
}

async fn drain(sock: &mut TcpStream) -> Result<()> {
    let mut tmp = [0u8; 4096];
    while sock.read(&mut tmp).await? > 0 {}
    Ok(())
}

/// Ask a backend (directly) how many `IDLE` connections it holds.
pub async fn idle_count(addr: SocketAddr) -> Result<usize> {
    let mut s = TcpStream::connect(addr).await.context("STAT connect")?;
    s.write_all(b"STAT").await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    out.trim().parse().context("STAT reply")
}
