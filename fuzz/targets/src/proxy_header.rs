//! Fuzz target `proxy_header`: the PROXY v1/v2 header parser
//! ([`refractium::accept_proxy::parse`]) on any bytes, as a stream's first
//! bytes and as a datagram.
//!
//! What `accept_proxy::read` relies on as a connection's bytes arrive:
//!
//! - a header's length is within the bytes given and at most
//!   [`MAX_HEADER`];
//! - a header is decided by its own bytes: every shorter prefix is
//!   `Incomplete`, and the header alone parses to the same header;
//! - once decided (a header, or invalid) more bytes do not change it;
//! - at [`MAX_HEADER`] bytes it is decided (the reader stops reading there).

use refractium::accept_proxy::{MAX_HEADER, Parsed, parse};

/// Prefixes of a stream's first bytes looked at besides the whole.
fn cuts(len: usize) -> impl Iterator<Item = usize> {
    let mut cuts: Vec<usize> = (0..=16).chain([len / 2, len.saturating_sub(1)]).collect();
    cuts.retain(|&c| c < len);
    cuts.sort_unstable();
    cuts.dedup();
    cuts.into_iter()
}

pub fn run(data: &[u8]) {
    // Whatever the load balancer sends, the reader never holds more.
    let data = data.get(..MAX_HEADER).unwrap_or(data);
    stream(data);
    datagram(data);
}

fn stream(data: &[u8]) {
    let whole = parse(data, false);
    if data.len() >= MAX_HEADER {
        assert_ne!(whole, Parsed::Incomplete, "still incomplete at {MAX_HEADER} bytes");
    }
    if let Parsed::Header { len, carried } = &whole {
        assert!(*len > 0 && *len <= data.len() && *len <= MAX_HEADER, "header of {len} in {} bytes", data.len());
        let header = data.get(..*len).unwrap_or(data);
        assert_eq!(parse(header, false), whole, "the header alone parses differently");
        for cut in [len / 2, len - 1] {
            let prefix = data.get(..cut).unwrap_or(data);
            assert_eq!(parse(prefix, false), Parsed::Incomplete, "{cut} bytes of a header of {len}");
        }
        if let Some(carried) = carried {
            assert_eq!(
                carried.client.is_ipv4(),
                carried.local.is_ipv4(),
                "client and local of different families: {carried:?}"
            );
        }
    }
    for cut in cuts(data.len()) {
        let prefix = data.get(..cut).unwrap_or(data);
        match parse(prefix, false) {
            Parsed::Incomplete => {}
            Parsed::Invalid(_) => {
                assert!(matches!(whole, Parsed::Invalid(_)), "invalid at {cut} bytes, then {whole:?}")
            }
            early @ Parsed::Header { .. } => assert_eq!(early, whole, "decided at {cut} bytes, then changed"),
        }
    }
}

fn datagram(data: &[u8]) {
    match parse(data, true) {
        Parsed::Header { len, .. } => {
            assert!(
                len > 0 && len <= data.len() && len <= MAX_HEADER,
                "header of {len} in a datagram of {}",
                data.len()
            )
        }
        Parsed::Invalid(why) => assert!(!why.is_empty(), "an invalid datagram without a reason"),
        Parsed::Incomplete => {}
    }
}
