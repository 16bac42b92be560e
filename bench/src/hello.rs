//! A canned TLS 1.3 ClientHello, built in code, the way a browser sends it:
//! one 517-byte record (padded with the `padding` extension), with SNI,
//! ALPN (`h2`, `http/1.1`), an X25519 key share and the usual TLS 1.3
//! extensions. The random, session id and key share are fixed bytes: the
//! proxies only read the SNI, and the backend answers any record.

/// Total size of the record a browser typically sends.
const TARGET_LEN: usize = 517;

/// Build the ClientHello record for `sni`.
pub fn client_hello(sni: &str) -> Vec<u8> {
    let mut exts = Vec::new();
    // server_name
    let name = sni.as_bytes();
    let mut sn = Vec::new();
    put_u16(&mut sn, name.len() as u16 + 3);
    sn.push(0); // host_name
    put_u16(&mut sn, name.len() as u16);
    sn.extend_from_slice(name);
    ext(&mut exts, 0x0000, &sn);
    ext(&mut exts, 0x0017, &[]); // extended_master_secret
    ext(&mut exts, 0xff01, &[0]); // renegotiation_info
    ext(&mut exts, 0x000a, &[0, 6, 0x00, 0x1d, 0x00, 0x17, 0x00, 0x18]); // groups
    ext(&mut exts, 0x000b, &[1, 0]); // ec_point_formats
    ext(&mut exts, 0x0023, &[]); // session_ticket
    // ALPN: h2, http/1.1
    let alpn = [2u8, b'h', b'2', 8, b'h', b't', b't', b'p', b'/', b'1', b'.', b'1'];
    let mut al = Vec::new();
    put_u16(&mut al, alpn.len() as u16);
    al.extend_from_slice(&alpn);
    ext(&mut exts, 0x0010, &al);
    ext(&mut exts, 0x0005, &[1, 0, 0, 0, 0]); // status_request
    let sigs: [u16; 8] = [0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601];
    let mut sa = Vec::new();
    put_u16(&mut sa, (sigs.len() * 2) as u16);
    for s in sigs {
        put_u16(&mut sa, s);
    }
    ext(&mut exts, 0x000d, &sa); // signature_algorithms
    // key_share: one X25519 share
    let mut ks = Vec::new();
    put_u16(&mut ks, 36);
    put_u16(&mut ks, 0x001d);
    put_u16(&mut ks, 32);
    ks.extend((0..32u8).map(|i| i.wrapping_mul(7).wrapping_add(3)));
    ext(&mut exts, 0x0033, &ks);
    ext(&mut exts, 0x002d, &[1, 1]); // psk_key_exchange_modes
    ext(&mut exts, 0x002b, &[4, 0x03, 0x04, 0x03, 0x03]); // supported_versions

    let mut body = Vec::new();
    put_u16(&mut body, 0x0303); // legacy_version
    body.extend((0..32u8).map(|i| i.wrapping_mul(13).wrapping_add(1))); // random
    body.push(32); // legacy_session_id
    body.extend((0..32u8).map(|i| i.wrapping_mul(29).wrapping_add(5)));
    let suites: [u16; 9] = [0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8];
    put_u16(&mut body, (suites.len() * 2) as u16);
    for s in suites {
        put_u16(&mut body, s);
    }
    body.extend_from_slice(&[1, 0]); // compression: null

    // record header (5) + handshake header (4) + body + extensions length (2)
    let fixed = 5 + 4 + body.len() + 2 + exts.len();
    if fixed + 4 <= TARGET_LEN {
        ext(&mut exts, 0x0015, &vec![0u8; TARGET_LEN - fixed - 4]); // padding
    }
    put_u16(&mut body, exts.len() as u16);
    body.extend_from_slice(&exts);

    let mut hs = vec![0x01];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01];
    put_u16(&mut rec, hs.len() as u16);
    rec.extend_from_slice(&hs);
    rec
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn ext(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
    put_u16(out, kind);
    put_u16(out, data.len() as u16);
    out.extend_from_slice(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_is_517_bytes_and_well_formed() {
        let rec = client_hello("bench.example");
        assert_eq!(rec.len(), TARGET_LEN);
        assert_eq!(rec[0], 0x16);
        let rec_len = usize::from(u16::from_be_bytes([rec[3], rec[4]]));
        assert_eq!(rec_len + 5, rec.len());
        assert_eq!(rec[5], 0x01);
        let hs_len = (usize::from(rec[6]) << 16) | (usize::from(rec[7]) << 8) | usize::from(rec[8]);
        assert_eq!(hs_len + 4, rec_len);
        let needle = b"bench.example";
        assert!(rec.windows(needle.len()).any(|w| w == needle));
    }
}
