//! PROXY protocol headers (v1 text, v2 binary) that tell a backend the real
//! client address. Written before the client's first bytes.

use std::net::SocketAddr;

/// The v1 header, e.g. `PROXY TCP4 192.0.2.1 192.0.2.2 56324 443\r\n`.
pub fn v1(client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let (client, local) = same_family(client, local);
    let family = if client.is_ipv4() { "TCP4" } else { "TCP6" };
    format!("PROXY {family} {} {} {} {}\r\n", client.ip(), local.ip(), client.port(), local.port()).into_bytes()
}

/// The v2 header for a proxied TCP stream.
pub fn v2(client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    const SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
    let (client, local) = same_family(client, local);
    let mut out = Vec::with_capacity(52);
    out.extend_from_slice(SIGNATURE);
    out.push(0x21); // version 2, command PROXY
    match (client, local) {
        (SocketAddr::V4(c), SocketAddr::V4(l)) => {
            out.push(0x11); // AF_INET, STREAM
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&c.ip().octets());
            out.extend_from_slice(&l.ip().octets());
            out.extend_from_slice(&c.port().to_be_bytes());
            out.extend_from_slice(&l.port().to_be_bytes());
        }
        (c, l) => {
            let ip6 = |a: SocketAddr| match a {
                SocketAddr::V6(a) => a.ip().octets(),
                SocketAddr::V4(a) => a.ip().to_ipv6_mapped().octets(),
            };
            out.push(0x21); // AF_INET6, STREAM
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&ip6(c));
            out.extend_from_slice(&ip6(l));
            out.extend_from_slice(&c.port().to_be_bytes());
            out.extend_from_slice(&l.port().to_be_bytes());
        }
    }
    out
}

/// Both addresses in one family: IPv4-mapped IPv6 becomes IPv4 when the
/// other side is IPv4 too; otherwise both are given as IPv6.
fn same_family(client: SocketAddr, local: SocketAddr) -> (SocketAddr, SocketAddr) {
    let unmap = |a: SocketAddr| match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => a,
        },
        v4 => v4,
    };
    let (c, l) = (unmap(client), unmap(local));
    if c.is_ipv4() == l.is_ipv4() {
        return (c, l);
    }
    let map = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port()),
        v6 => v6,
    };
    (map(c), map(l))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_ipv4() {
        let h = v1("192.0.2.1:56324".parse().expect("addr"), "192.0.2.2:443".parse().expect("addr"));
        assert_eq!(h, b"PROXY TCP4 192.0.2.1 192.0.2.2 56324 443\r\n");
    }

    #[test]
    fn v2_ipv4_layout() {
        let h = v2("192.0.2.1:56324".parse().expect("addr"), "192.0.2.2:443".parse().expect("addr"));
        assert_eq!(h.len(), 16 + 12);
        assert_eq!(&h[12..16], &[0x21, 0x11, 0, 12]);
        assert_eq!(&h[16..20], &[192, 0, 2, 1]);
        assert_eq!(&h[24..26], &56324u16.to_be_bytes());
    }

    #[test]
    fn mixed_families_become_ipv6() {
        let h = v1("[2001:db8::1]:1000".parse().expect("addr"), "127.0.0.1:443".parse().expect("addr"));
        assert_eq!(h, b"PROXY TCP6 2001:db8::1 ::ffff:127.0.0.1 1000 443\r\n");
    }
}
