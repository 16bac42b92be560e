//! Tests of the ClientHello reader: hellos built by a small builder (whole,
//! byte by byte, over several records, large), garbage, lying lengths, and
//! one hello captured from `openssl s_client`.

use super::*;

/// A ClientHello under construction.
struct Hello {
    version: u16,
    session_id: Vec<u8>,
    suites: Vec<u16>,
    extensions: Option<Vec<(u16, Vec<u8>)>>,
}

fn u16s(values: &[u16]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}

fn vec16(body: &[u8]) -> Vec<u8> {
    let len = u16::try_from(body.len()).expect("vector fits u16");
    [&len.to_be_bytes()[..], body].concat()
}

fn vec8(body: &[u8]) -> Vec<u8> {
    let len = u8::try_from(body.len()).expect("vector fits u8");
    [&[len][..], body].concat()
}

impl Hello {
    fn new() -> Self {
        Hello {
            version: 0x0303,
            session_id: vec![7; 32],
            suites: vec![0x1301, 0x1302, 0xc02b],
            extensions: Some(Vec::new()),
        }
    }

    fn ext(mut self, kind: u16, body: Vec<u8>) -> Self {
        self.extensions.get_or_insert_with(Vec::new).push((kind, body));
        self
    }

    fn sni(self, name: &[u8]) -> Self {
        self.ext(0, vec16(&[&[0u8][..], &vec16(name)].concat()))
    }

    fn alpn(self, names: &[&str]) -> Self {
        let list: Vec<u8> = names.iter().flat_map(|n| vec8(n.as_bytes())).collect();
        self.ext(0x10, vec16(&list))
    }

    fn versions(self, versions: &[u16]) -> Self {
        self.ext(0x2b, vec8(&u16s(versions)))
    }

    /// An X25519MLKEM768 + X25519 key share: makes the hello about 1.3 KB.
    fn big_key_share(self) -> Self {
        let shares = [vec![0x11, 0xec], vec16(&[0x42; 1216]), vec![0, 0x1d], vec16(&[0x24; 32])];
        self.ext(0x33, vec16(&shares.concat()))
    }

    fn padding(self, len: usize) -> Self {
        self.ext(0x15, vec![0; len])
    }

    fn body(&self) -> Vec<u8> {
        let mut body = self.version.to_be_bytes().to_vec();
        body.extend([0x5a; 32]);
        body.extend(vec8(&self.session_id));
        body.extend(vec16(&u16s(&self.suites)));
        body.extend([1, 0]);
        if let Some(extensions) = &self.extensions {
            let all: Vec<u8> =
                extensions.iter().flat_map(|(kind, ext)| [&kind.to_be_bytes()[..], &vec16(ext)].concat()).collect();
            body.extend(vec16(&all));
        }
        body
    }

    /// The handshake message: type, 24-bit length, body.
    fn message(&self) -> Vec<u8> {
        handshake(&self.body())
    }

    /// The message in one record.
    fn record(&self) -> Vec<u8> {
        records(&self.message(), &[usize::MAX])
    }
}

fn handshake(body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len()).expect("body fits u32").to_be_bytes();
    [&[1u8][..], &len[1..], body].concat()
}

/// Split `message` into records of the given sizes (the last one repeats).
fn records(message: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = message;
    let mut i = 0;
    while !rest.is_empty() {
        let size = sizes.get(i).or(sizes.last()).copied().unwrap_or(1).min(rest.len());
        let (fragment, tail) = rest.split_at(size);
        out.extend([22, 3, 1]);
        out.extend(vec16(fragment));
        rest = tail;
        i += 1;
    }
    out
}

fn typical() -> Hello {
    Hello::new().sni(b"WWW.Example.COM").alpn(&["h2", "http/1.1"]).versions(&[0x3a3a, 0x0304, 0x0303])
}

fn complete(data: &[u8]) -> ClientHello {
    match parse_client_hello(data) {
        HelloParse::Complete(hello) => hello,
        other => panic!("expected a complete hello, got {other:?}"),
    }
}

/// Every strict prefix needs more (a lower bound past the prefix, within
/// the whole), the whole is complete.
fn assert_prefixes(data: &[u8]) -> ClientHello {
    for len in 0..data.len() {
        match parse_client_hello(&data[..len]) {
            HelloParse::NeedMore(n) => {
                assert!(n > len && n <= data.len().max(9), "prefix {len}/{}: NeedMore({n})", data.len())
            }
            other => panic!("prefix {len}/{}: {other:?}", data.len()),
        }
    }
    complete(data)
}

#[test]
fn whole_hello() {
    let hello = complete(&typical().record());
    assert_eq!(hello.legacy_version, 0x0303);
    assert_eq!(hello.sni.as_deref(), Some("www.example.com"));
    assert_eq!(hello.alpn, ["h2", "http/1.1"]);
    assert_eq!(hello.supported_versions, [0x0304, 0x0303]);
    assert_eq!(hello.max_version(), 0x0304);
    assert_eq!(hello.cipher_suites, [0x1301, 0x1302, 0xc02b]);
    assert_eq!(hello.extensions, [0x0000, 0x0010, 0x002b]);
    assert!(!hello.ech);
}

/// A hello offering more ALPN names than the proxy accepts in a detection
/// is read whole and keeps the first [`MAX_ALPN_NAMES`], within
/// [`MAX_ALPN_BYTES`].
#[test]
fn alpn_names_past_the_bounds_are_ignored() {
    let names: Vec<String> = (0..100).map(|i| format!("proto-{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let hello = complete(&Hello::new().alpn(&refs).record());
    assert_eq!(hello.alpn, names[..MAX_ALPN_NAMES]);
    let long = "x".repeat(255);
    let hello = complete(&Hello::new().alpn(&[long.as_str(); 40]).alpn(&["h2"]).record());
    assert_eq!(hello.alpn.len(), MAX_ALPN_BYTES / 255);
}

#[test]
fn byte_by_byte_and_exact_need() {
    let data = typical().record();
    assert_eq!(assert_prefixes(&data), complete(&data));
    // Once the handshake header is in, the need is exact.
    for len in 9..data.len() {
        assert_eq!(parse_client_hello(&data[..len]), HelloParse::NeedMore(data.len()));
    }
    // Before, the record length already bounds it.
    assert_eq!(parse_client_hello(&data[..5]), HelloParse::NeedMore(9));
}

#[test]
fn large_hello_with_post_quantum_key_share() {
    let hello = typical().big_key_share().padding(600);
    let data = hello.record();
    assert!(data.len() > 1900, "{}", data.len());
    assert_eq!(assert_prefixes(&data).sni.as_deref(), Some("www.example.com"));
    // The same hello in records of 1400 bytes, as some stacks send it.
    let split = records(&hello.message(), &[1400]);
    assert_eq!(assert_prefixes(&split), complete(&data));
}

#[test]
fn hello_over_three_records() {
    let hello = typical().big_key_share();
    let whole = complete(&hello.record());
    // The first record even splits the handshake header.
    let data = records(&hello.message(), &[3, 100, usize::MAX]);
    assert_eq!(assert_prefixes(&data), whole);
    // One byte per record.
    let tiny = records(&typical().message(), &[1]);
    assert_eq!(assert_prefixes(&tiny).alpn, ["h2", "http/1.1"]);
}

#[test]
fn bytes_after_the_hello_are_ignored() {
    let mut data = typical().record();
    data.extend(records(b"\x17\x03\x03 early data", &[64]));
    assert_eq!(complete(&data).sni.as_deref(), Some("www.example.com"));
}

#[test]
fn ech_and_sslv3() {
    let hello = complete(&typical().ext(0xfe0d, vec![0; 200]).record());
    assert!(hello.ech);
    let mut old = Hello::new();
    old.version = 0x0300;
    old.extensions = None;
    let mut data = old.record();
    data[2] = 0;
    let hello = complete(&data);
    assert_eq!((hello.legacy_version, hello.sni.clone(), hello.max_version()), (0x0300, None, 0x0300));
}

#[test]
fn server_names() {
    let sni = |name: &[u8]| complete(&Hello::new().sni(name).record()).sni;
    assert_eq!(sni(b"Example.ORG.").as_deref(), Some("example.org"));
    assert_eq!(sni(b""), None);
    assert_eq!(sni("bücher.example".as_bytes()), None);
    assert_eq!(sni(b"a b"), None);
    // Only host_name (type 0) entries count.
    let other = vec16(&[&[1u8][..], &vec16(b"other"), &[0], &vec16(b"real")].concat());
    assert_eq!(complete(&Hello::new().ext(0, other).record()).sni.as_deref(), Some("real"));
}

#[test]
fn garbage_is_not_tls() {
    let cases: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"\x17",
        b"\x16\x02",
        b"\x16\x03\x05",
        b"\x16\x03\x01\x50",                     // record longer than 2^14
        b"\x16\x03\x01\x00\x00",                 // empty record
        b"\x16\x03\x01\x00\x04\x02",             // ServerHello
        b"\x16\x03\x01\x00\x08\x01\x01\x00\x01", // hello longer than 64 KiB
        b"\x16\x03\x01\x00\x08\x01\x00\x00\x10", // hello too short
        b"\x80\x2e\x01\x03\x01",                 // SSLv2-compatible hello
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ];
    for case in cases {
        assert_eq!(parse_client_hello(case), HelloParse::NotTls, "{case:?}");
    }
    // A record of another type before the hello is complete.
    let message = typical().message();
    let mut data = records(&message[..50], &[50]);
    data.extend([23, 3, 3, 0, 1, 0]);
    assert_eq!(parse_client_hello(&data), HelloParse::NotTls);
    // A wrong legacy version or session id length shows as soon as it arrives.
    let mut data = typical().record();
    data[9] = 2;
    assert_eq!(parse_client_hello(&data[..10]), HelloParse::NotTls);
    let mut data = typical().record();
    data[43] = 33;
    assert_eq!(parse_client_hello(&data[..44]), HelloParse::NotTls);
}

#[test]
fn lying_lengths_are_not_tls() {
    let mut odd = Hello::new();
    odd.suites.clear();
    let mut lies = vec![odd.message()];
    let mut body = typical().body();
    body.push(0); // trailing byte after the extensions
    lies.push(handshake(&body));
    let body = typical().body();
    // Extensions block claims one byte more / less than there is.
    let ext_at = 2 + 32 + 33 + 2 + 6 + 2;
    for delta in [1u8, 255] {
        let mut b = body.clone();
        b[ext_at + 1] = b[ext_at + 1].wrapping_add(delta);
        lies.push(handshake(&b));
    }
    // An SNI list longer than its extension.
    lies.push(Hello::new().ext(0, vec![0, 9, 0, 0, 1, b'a']).message());
    // An ALPN name running past its list.
    lies.push(Hello::new().ext(0x10, vec![0, 3, 5, b'h', b'2']).message());
    for (i, message) in lies.iter().enumerate() {
        assert_eq!(parse_client_hello(&records(message, &[9999])), HelloParse::NotTls, "lie {i}");
    }
    // A handshake length beyond what the records carry is only a need.
    let mut data = typical().record();
    data[8] = data[8].wrapping_add(10);
    assert!(matches!(parse_client_hello(&data), HelloParse::NeedMore(n) if n > data.len()));
}

#[test]
fn truncated_hello_needs_more() {
    let data = typical().record();
    assert_eq!(parse_client_hello(&data[..data.len() - 1]), HelloParse::NeedMore(data.len()));
    assert_eq!(parse_client_hello(&[]), HelloParse::NeedMore(9));
}

/// 20,000 copies of `data`, each with one byte changed and cut somewhere
/// at or after that byte (xorshift from `seed`, so every run is the same).
fn mutations(data: &[u8], mut seed: u64, mut check: impl FnMut(&[u8])) {
    for _ in 0..20_000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut mutated = data.to_vec();
        let at = usize::try_from(seed % mutated.len() as u64).expect("index");
        mutated[at] = (seed >> 32) as u8;
        let cut = usize::try_from((seed >> 16) % (mutated.len() as u64 + 1)).expect("cut");
        check(&mutated[..cut.max(at)]);
    }
}

#[test]
fn mutations_never_panic() {
    mutations(&typical().big_key_share().record(), 0x9e37_79b9_7f4a_7c15, |m| {
        let _ = parse_client_hello(m);
    });
}

#[test]
fn grease_is_recognised() {
    assert!(is_grease(0x0a0a) && is_grease(0xfafa) && is_grease(0x3a3a));
    assert!(!is_grease(0x0304) && !is_grease(0x0a1a));
}

#[test]
fn real_openssl_client_hello() {
    // `openssl s_client -servername www.example.com -alpn h2,http/1.1`
    // (OpenSSL 3.0), first bytes as captured by a listener.
    let data = include_bytes!("../testdata/openssl_client_hello.bin");
    let hello = assert_prefixes(data);
    assert_eq!(hello.sni.as_deref(), Some("www.example.com"));
    assert_eq!(hello.alpn, ["h2", "http/1.1"]);
    assert!(hello.supported_versions.contains(&0x0304));
    assert!(!hello.ech);
    assert_eq!(hello.legacy_version, 0x0303);
}

#[test]
fn bare_handshake_message() {
    for hello in [typical(), typical().big_key_share().padding(600)] {
        let message = hello.message();
        let expected = complete(&hello.record());
        assert_eq!(parse_client_hello_handshake(&message), HelloParse::Complete(expected.clone()));
        // Every prefix needs more: 4 bytes before the header is in, the exact
        // message length after.
        for len in 0..message.len() {
            let want = if len < 4 { 4 } else { message.len() };
            assert_eq!(parse_client_hello_handshake(&message[..len]), HelloParse::NeedMore(want), "prefix {len}");
        }
        // Bytes after the message (more CRYPTO data, padding) are ignored.
        let mut longer = message.clone();
        longer.extend([0; 100]);
        assert_eq!(parse_client_hello_handshake(&longer), HelloParse::Complete(expected));
    }
}

#[test]
fn bare_handshake_garbage_is_not_tls() {
    let cases: &[&[u8]] = &[
        b"\x16\x03\x01\x00\x40",     // a record header: not a bare message
        b"\x02\x00\x00\x46\x03\x03", // ServerHello
        b"\x01\x01\x00\x01",         // hello longer than 64 KiB
        b"\x01\x00\x00\x10",         // hello too short
        b"\x01\x00\x00\x50\x02",     // legacy version 2.x
        b"GET / HTTP/1.1\r\n",
    ];
    for case in cases {
        assert_eq!(parse_client_hello_handshake(case), HelloParse::NotTls, "{case:?}");
    }
    // A complete message whose body lies about its lengths.
    let mut body = typical().body();
    body.push(0);
    assert_eq!(parse_client_hello_handshake(&handshake(&body)), HelloParse::NotTls);
    // The record layer's reader and the bare reader agree on a real hello.
    let data = include_bytes!("../testdata/openssl_client_hello.bin");
    let record_len = usize::from(u16::from_be_bytes([data[3], data[4]]));
    let bare = parse_client_hello_handshake(&data[5..5 + record_len]);
    assert_eq!(bare, parse_client_hello(data));
}

#[test]
fn bare_handshake_mutations_never_panic() {
    mutations(&typical().big_key_share().message(), 0x2545_f491_4f6c_dd1d, |m| {
        if let HelloParse::NeedMore(n) = parse_client_hello_handshake(m) {
            assert!(n > m.len());
        }
    });
}
