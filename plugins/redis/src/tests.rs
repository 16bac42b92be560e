//! Tests on commands captured from redis-cli 7.0.15 (`PING`, `SET`, `-3`
//! which sends `HELLO 3` first, `--user/--pass` which sends `AUTH` first),
//! inline commands as typed into telnet, and hand-made edge cases.

use super::*;
use proptest::prelude::*;
use refractium_plugin_sdk::Transport;
use refractium_plugin_sdk::testing::{check_need_more, check_prefixes_until, flipped, other_protocols_except};

const PING: &[u8] = include_bytes!("../testdata/redis_ping.bin");
const SET: &[u8] = include_bytes!("../testdata/redis_set.bin");
const HELLO3: &[u8] = include_bytes!("../testdata/redis_hello3.bin");
const AUTH: &[u8] = include_bytes!("../testdata/redis_auth.bin");

fn detect(data: &[u8]) -> Verdict {
    Redis::new("null").expect("redis detector").detect(data, &Peer::test(Transport::Tcp))
}

fn command(data: &[u8]) -> String {
    match detect(data) {
        Verdict::Matched(d) => {
            assert_eq!((d.protocol.as_str(), d.attributes.len()), ("redis", 1));
            d.attribute("command").expect("command").to_string()
        }
        other => panic!("{:?}: expected a match, got {other:?}", String::from_utf8_lossy(data)),
    }
}

/// Where the first element of a RESP command ends.
fn first_element_end(capture: &[u8]) -> usize {
    let name = capture.iter().skip(8).position(|&b| b == b'\r').expect("CR") + 8;
    name + 2
}

#[test]
fn redis_cli_commands() {
    assert_eq!(command(PING), "PING");
    assert_eq!(command(SET), "SET");
    assert_eq!(command(HELLO3), "HELLO");
    assert_eq!(command(AUTH), "AUTH");
}

#[test]
fn every_prefix_waits() {
    for capture in [PING, SET, HELLO3, AUTH] {
        let end = first_element_end(capture);
        check_prefixes_until(&Redis, capture, end, &Peer::test(Transport::Tcp));
    }
    // Once the name's length is read, the exact end is known.
    assert_eq!(detect(b"*1\r\n$4\r\nPI"), Verdict::NeedMore(14));
}

#[test]
fn resp_rules() {
    assert_eq!(command(b"*2\r\n$6\r\nclient\r\n$7\r\nsetname\r\n"), "CLIENT");
    assert_eq!(command(b"*1024\r\n$3\r\nDEL\r\n"), "DEL");
    assert_eq!(command(b"*3\r\n$20\r\nGEORADIUSBYMEMBER_RO\r\n"), "GEORADIUSBYMEMBER_RO");
    let refused: &[&[u8]] = &[
        b"*0\r\n",
        b"*1025\r\n",
        b"*01\r\n",
        b"*-1\r\n",
        b"*1\n",
        b"*1\r\r",
        b"*\r\n",
        b"*1\r\n+PING\r\n",
        b"*1\r\n$04\r\nPING\r\n",
        b"*1\r\n$5\r\nPING\r\n",
        b"*1\r\n$4\r\nPONG\r\n",
        b"*1\r\n$4\r\nPINGX\r\n",
        b"*1\r\n$4\r\nPING\rX",
        b"*1\r\n$21\r\n",
        b"*1\r\n$4\r\nPI\x00",
    ];
    for case in refused {
        assert_eq!(detect(case), Verdict::NoMatch, "{:?}", String::from_utf8_lossy(case));
    }
}

#[test]
fn inline_commands() {
    assert_eq!(command(b"PING\r\n"), "PING");
    assert_eq!(command(b"ping\n"), "PING");
    assert_eq!(command(b"HELLO 3\r\n"), "HELLO");
    assert_eq!(command(b"auth  default s3cret\r\n"), "AUTH");
    assert_eq!(command(b"SET greeting \"hello world\"\r\nGET greeting\r\n"), "SET");
    assert_eq!(command(b"GET user:1\r\n"), "GET");
    assert_eq!(command(b"KEYS *\r\n"), "KEYS");
    for prefix in [&b"P"[..], b"PIN", b"PING", b"PING\r", b"HELLO 3", b"GET key", b"GET "] {
        assert_eq!(detect(prefix), Verdict::NeedMore(0), "{prefix:?}");
    }
    let mut long = b"SET k ".to_vec();
    long.resize(INLINE_MAX - 2, b'v');
    assert_eq!(detect(&long), Verdict::NeedMore(0));
    long.extend(b"\r\n");
    assert_eq!(command(&long), "SET");
    long.truncate(INLINE_MAX - 2);
    long.extend(b"vv");
    assert_eq!(detect(&long), Verdict::NoMatch);
}

#[test]
fn english_lines_are_not_inline_commands() {
    let english: &[&[u8]] = &[
        b"Set the table for dinner.\r\n",
        b"Get well soon\n",
        b"Hello, how are you?\r\n",
        b"hello world\r\n",
        b"Ping me when you are back\n",
        b"Info about the project is in the README\n",
        b"Select the best option\n",
        b"Time flies like an arrow\n",
        b"Keys are in the drawer\n",
        b"Echo the words back\n",
        b"Exec summary attached\n",
        b"Type your name here:\n",
        b"Quit smoking today\n",
        b"Save the date: 12 December\n",
        b"Monitor the logs closely\n",
        b"Config files live in /etc\n",
        b"Client asked for a refund\n",
        b"Scan the document\n",
        b"Multi-line text follows\n",
        b"Del Mar is a city in California\n",
        b"Role models matter\n",
    ];
    for line in english {
        assert_eq!(detect(line), Verdict::NoMatch, "{:?}", String::from_utf8_lossy(line));
    }
    // Arguments that fit do match, in any case and with quotes.
    for (line, name) in [
        (&b"set greeting \"hello world\" EX 60\r\n"[..], "SET"),
        (b"SELECT 2\r\n", "SELECT"),
        (b"info server memory\r\n", "INFO"),
        (b"HELLO 3 AUTH default pw SETNAME app\r\n", "HELLO"),
        (b"EXPIRE k 10 NX\r\n", "EXPIRE"),
        (b"CONFIG GET maxmemory\r\n", "CONFIG"),
        (b"SCAN 0 MATCH user:* COUNT 100\r\n", "SCAN"),
        (b"MSET a 1 b 2\r\n", "MSET"),
        (b"ping hello\r\n", "PING"),
    ] {
        assert_eq!(command(line), name, "{:?}", String::from_utf8_lossy(line));
    }
}

#[test]
fn inline_refusals() {
    let refused: &[&[u8]] = &[
        b"PINGS\r\n",
        b"PIN\r\n",
        b"PING\rX",
        b"PING\x00\r\n",
        b"SET k \x01\r\n",
        b"GET key HTTP/1.1\r\n",
        b"GET /index.html\r\n",
        b"GET\t/x\r\n",
        b"COPY /a HTTP/1.1\r\n",
        b"MOVE /a HTTP/1.1\r\n",
        b"NICK guest\r\n",
        b"EHLO example.com\r\n",
        b" PING\r\n",
        b"\r\n",
    ];
    for case in refused {
        assert_eq!(detect(case), Verdict::NoMatch, "{:?}", String::from_utf8_lossy(case));
    }
}

#[test]
fn other_protocols_do_not_match() {
    for (name, bytes) in other_protocols_except("redis") {
        assert_eq!(detect(&bytes), Verdict::NoMatch, "{name}");
    }
    // HTTP methods look like inline commands.
    for case in [&b"GET /"[..], b"DELETE /x HTTP/1.1\r\n\r\n", b"OPTIONS * HTTP/1.1\r\n\r\n"] {
        assert_eq!(detect(case), Verdict::NoMatch, "{:?}", String::from_utf8_lossy(case));
    }
}

fn check(data: &[u8]) -> Result<(), TestCaseError> {
    let verdict = detect(data);
    check_need_more(data, &verdict, true, 64).map_err(TestCaseError::fail)?;
    if matches!(verdict, Verdict::NeedMore(_)) {
        prop_assert!(data.len() < INLINE_MAX);
    }
    Ok(())
}

proptest! {
    #[test]
    fn arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..300), star in any::<bool>()) {
        let mut data = data;
        if star && !data.is_empty() {
            data[0] = b'*';
        }
        check(&data)?;
    }

    #[test]
    fn mutated_captures(index in 0usize..6, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
                        cut in any::<usize>()) {
        let data = flipped([PING, SET, HELLO3, AUTH, b"HELLO 3\r\n", b"SET k v\r\n"][index], &flips);
        check(&data[..cut % (data.len() + 1)])?;
        check(&data)?;
    }
}
