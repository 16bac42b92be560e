//! Socket options that neither `socket2` nor `rustix` wraps. This is the one
//! module of the proxy that calls the C library directly; each call is a
//! plain `setsockopt` on a descriptor the caller borrows for the call.

use std::io;
use std::os::fd::{AsFd, AsRawFd};

/// Leave the last ACK of the handshake to the first data segment.
///
/// `TCP_DEFER_ACCEPT` is meant for listeners, but Linux also reads it on a
/// connecting socket: when the server's SYN-ACK arrives it schedules the ACK
/// instead of sending it, and the first bytes written carry it. Set before
/// `connect` on a socket whose first bytes are written right after, it saves
/// a packet per connection and wakes the server once (connection and data
/// together) instead of twice. If nothing is written, the ACK still leaves
/// when the delayed-ACK timer runs out (at most 200 ms), so only set it when
/// bytes are ready. It changes nothing after the handshake.
pub fn ack_handshake_with_data(socket: &impl AsFd) -> io::Result<()> {
    set_int(socket, libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT, 1)
}

#[allow(unsafe_code)]
fn set_int(socket: &impl AsFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    let fd = socket.as_fd().as_raw_fd();
    let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `fd` is borrowed open for the call; the option value points at
    // a live `c_int` and `len` is its size, which the kernel copies in.
    let rc = unsafe { libc::setsockopt(fd, level, name, (&raw const value).cast(), len) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// How many TCP segments the socket has sent (`tcpi_segs_out` of
/// `TCP_INFO`), retransmissions included: what tests count packets with.
#[cfg(test)]
#[allow(unsafe_code)]
pub(crate) fn segments_sent(socket: &impl AsFd) -> io::Result<u32> {
    // SAFETY: `tcp_info` is plain integers, for which all zeroes is valid.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let fd = socket.as_fd().as_raw_fd();
    // SAFETY: the kernel writes at most `len` bytes into `info`, which has
    // that size, and stores the length it wrote in `len`.
    let rc = unsafe { libc::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO, (&raw mut info).cast(), &mut len) };
    if rc == 0 { Ok(info.tcpi_segs_out) } else { Err(io::Error::last_os_error()) }
}
