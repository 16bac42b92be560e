//! UDP peers for the end-to-end tests: a backend that records and answers
//! datagrams, DNS messages, a client socket.

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Datagrams a backend received, with their sources.
type Seen = Arc<Mutex<Vec<(SocketAddr, Vec<u8>)>>>;

/// A UDP backend that records (source, datagram) and answers each datagram
/// with `reply(datagram)`.
pub struct UdpBackend {
    pub addr: SocketAddr,
    seen: Seen,
}

impl UdpBackend {
    pub fn start(reply: fn(&[u8]) -> Vec<u8>) -> UdpBackend {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = socket.local_addr().expect("addr");
        let seen: Seen = Arc::default();
        let s = seen.clone();
        thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = socket.recv_from(&mut buf) {
                s.lock().expect("seen").push((from, buf[..n].to_vec()));
                let _ = socket.send_to(&reply(&buf[..n]), from);
            }
        });
        UdpBackend { addr, seen }
    }

    pub fn seen(&self) -> Vec<(SocketAddr, Vec<u8>)> {
        self.seen.lock().expect("seen").clone()
    }

    pub fn wait_seen(&self, n: usize) -> Vec<(SocketAddr, Vec<u8>)> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let seen = self.seen();
            if seen.len() >= n {
                return seen;
            }
            assert!(Instant::now() < deadline, "UDP backend saw {} datagrams, expected {n}", seen.len());
            thread::sleep(Duration::from_millis(10));
        }
    }
}

pub fn echo(d: &[u8]) -> Vec<u8> {
    d.to_vec()
}

/// A DNS answer to a query: the same id and question, one A record 192.0.2.1.
pub fn dns_answer(q: &[u8]) -> Vec<u8> {
    let Some(header) = q.get(..12) else { return Vec::new() };
    // End of the question: the name, then type and class.
    let mut i = 12;
    while let Some(&len) = q.get(i) {
        i += 1 + len as usize;
        if len == 0 {
            break;
        }
    }
    let question = q.get(12..i + 4).unwrap_or_default();
    let mut a = header.to_vec();
    a[2] = 0x81; // QR, RD
    a[3] = 0x80; // RA
    a[6..8].copy_from_slice(&1u16.to_be_bytes()); // ANCOUNT
    a[8..12].copy_from_slice(&[0, 0, 0, 0]); // no authority, no additional
    a.extend_from_slice(question);
    a.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
    a
}

pub fn client() -> UdpSocket {
    let c = UdpSocket::bind("127.0.0.1:0").expect("bind client");
    c.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    c
}

/// A DNS query for `example.com` A, with this id.
pub fn dns_query(id: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    q.extend_from_slice(b"\x07example\x03com\x00");
    q.extend_from_slice(&[0, 1, 0, 1]);
    q
}
