//! Tests on CONNECT packets captured from mosquitto_pub 2.0.11 (`-V 31`,
//! `-V 311` with and without client id and credentials, `-V 5` with CONNECT
//! properties and with a will) and hand-made edge cases.

use super::*;
use proptest::prelude::*;
use refractium_plugin_sdk::Transport;
use refractium_plugin_sdk::testing::{check_counted_prefixes_until, check_need_more, flipped, other_protocols_except};

const V31: &[u8] = include_bytes!("../testdata/mqtt31.bin");
const V311: &[u8] = include_bytes!("../testdata/mqtt311.bin");
const V311_NOID: &[u8] = include_bytes!("../testdata/mqtt311_noid.bin");
const V5: &[u8] = include_bytes!("../testdata/mqtt5.bin");
const V5_WILL: &[u8] = include_bytes!("../testdata/mqtt5_will.bin");

/// Captures with the index where their client id ends.
const CAPTURES: &[(&[u8], usize)] = &[(V31, 25), (V311, 24), (V311_NOID, 14), (V5, 31), (V5_WILL, 18)];

fn detect(data: &[u8]) -> Verdict {
    Mqtt::new("null").expect("mqtt detector").detect(data, &Peer::test(Transport::Tcp))
}

fn attrs(data: &[u8]) -> (String, Option<String>) {
    match detect(data) {
        Verdict::Matched(d) => {
            assert_eq!(d.protocol, "mqtt");
            (d.attribute("version").expect("version").to_string(), d.attribute("client_id").map(str::to_string))
        }
        other => panic!("{data:?}: expected a match, got {other:?}"),
    }
}

fn expect(version: &str, id: Option<&str>) -> (String, Option<String>) {
    (version.to_string(), id.map(str::to_string))
}

/// A CONNECT with the given variable header and payload.
fn packet(body: &[u8]) -> Vec<u8> {
    let mut p = vec![0x10];
    let mut n = body.len();
    loop {
        let byte = u8::try_from(n % 128).expect("7 bits");
        n /= 128;
        p.push(if n > 0 { byte | 0x80 } else { byte });
        if n == 0 {
            break;
        }
    }
    p.extend(body);
    p
}

#[test]
fn mosquitto_connects() {
    assert_eq!(attrs(V31), expect("3.1", Some("sensor-31")));
    assert_eq!(attrs(V311), expect("3.1.1", Some("sensor-311")));
    assert_eq!(attrs(V311_NOID), expect("3.1.1", Some("")));
    assert_eq!(attrs(V5), expect("5", Some("sensor-5")));
    assert_eq!(attrs(V5_WILL), expect("5", Some("")));
}

#[test]
fn every_prefix_waits_for_the_client_id() {
    for &(capture, id_end) in CAPTURES {
        check_counted_prefixes_until(&Mqtt, capture, id_end, &Peer::test(Transport::Tcp));
    }
}

#[test]
fn header_rules() {
    let v311 = |flags: u8| packet(&[b"\x00\x04MQTT\x04", &[flags][..], b"\x00\x3c\x00\x01x"].concat());
    assert!(detect(&v311(0x02)).is_match());
    assert!(detect(&v311(0x2c)).is_match()); // will, QoS 1, retain
    assert!(detect(&v311(0xc0)).is_match()); // user name and password
    for bad in [0x03, 0x1c, 0x08, 0x20, 0x40] {
        // reserved bit, will QoS 3, QoS/retain without will, password alone
        assert_eq!(detect(&v311(bad)), Verdict::NoMatch, "flags {bad:#x}");
    }
    // MQTT 5 allows a password without a user name.
    assert!(detect(&packet(b"\x00\x04MQTT\x05\x40\x00\x3c\x00\x00\x01x")).is_match());
    // A bridge sets the 0x80 bit of the level.
    assert_eq!(attrs(&packet(b"\x00\x04MQTT\x84\x02\x00\x3c\x00\x01b")), expect("3.1.1", Some("b")));
    let refused: &[&[u8]] = &[
        b"\x00\x04MQTT\x03\x02\x00\x3c\x00\x01x", // MQTT level 3
        b"\x00\x06MQIsdp\x04\x02\x00\x3c\x00\x01x",
        b"\x00\x04MQTX\x04\x02\x00\x3c\x00\x01x",
        b"\x00\x05MQTTT\x04\x02\x00\x3c\x00\x01x",
        b"\x00\x04MQTT\x04\x02\x00\x3c\x00\x05x", // client id past the packet
        b"\x00\x04MQTT\x04\x02\x00\x3c\x00\x02\xc3\x28", // invalid UTF-8
        b"\x00\x04MQTT\x04\x02\x00\x3c\x00\x01\x00", // U+0000
    ];
    for body in refused {
        assert_eq!(detect(&packet(body)), Verdict::NoMatch, "{body:?}");
    }
    // A control character keeps the match but not the attribute.
    assert_eq!(attrs(&packet(b"\x00\x04MQTT\x04\x02\x00\x3c\x00\x02a\x07")), expect("3.1.1", None));
}

#[test]
fn remaining_length_rules() {
    // Non-minimal encodings, 5 bytes, too small or too large.
    let cases: &[&[u8]] = &[
        b"\x10\x8c\x00",
        b"\x10\x80\x80\x80\x80\x01",
        b"\x10\x0b",
        b"\x10\x81\x80\x10",
        b"\x12\x0c",
        b"\x20\x02\x00\x00",
    ];
    for case in cases {
        assert_eq!(detect(case), Verdict::NoMatch, "{case:?}");
    }
    assert_eq!(detect(b"\x10"), Verdict::NeedMore(2));
    assert_eq!(detect(b"\x10\x80"), Verdict::NeedMore(3));
    assert_eq!(detect(b"\x10\x0c\x00\x04MQ"), Verdict::NeedMore(8));
    assert_eq!(detect(b"\x10\x0c\x00\x04MX"), Verdict::NoMatch);
}

#[test]
fn v5_properties() {
    let with = |props: &[u8]| {
        let len = u8::try_from(props.len()).expect("short");
        packet(&[&b"\x00\x04MQTT\x05\x02\x00\x3c"[..], &[len], props, b"\x00\x02id"].concat())
    };
    let ok: &[&[u8]] = &[
        b"",
        b"\x11\x00\x00\x00\x3c\x21\x00\x14",
        b"\x27\x00\x01\x00\x00\x22\x00\x00\x19\x01\x17\x00",
        b"\x26\x00\x01k\x00\x01v\x26\x00\x01k\x00\x00",
        b"\x15\x00\x05SCRAM\x16\x00\x03\x01\x02\x03",
    ];
    for props in ok {
        assert_eq!(attrs(&with(props)), expect("5", Some("id")), "{props:?}");
    }
    let bad: &[&[u8]] = &[
        b"\x01\x00",                                 // payload format: not a CONNECT property
        b"\x11\x00\x00\x00\x3c\x11\x00\x00\x00\x3c", // repeated
        b"\x21\x00\x00",                             // receive maximum 0
        b"\x27\x00\x00\x00\x00",                     // maximum packet size 0
        b"\x19\x02",
        b"\x15\x00\x02\xff\xfe",
        b"\x11\x00\x00", // runs past the properties
    ];
    for props in bad {
        assert_eq!(detect(&with(props)), Verdict::NoMatch, "{props:?}");
    }
}

#[test]
fn huge_fields_match_without_client_id() {
    // Properties of 5000 bytes (authentication data): not waited for.
    let mut props = b"\x16\x13\x85".to_vec();
    props.extend([7u8; 0x1385]);
    let plen = props.len();
    let mut body = b"\x00\x04MQTT\x05\x02\x00\x3c".to_vec();
    body.extend([u8::try_from(plen % 128).expect("7 bits") | 0x80, u8::try_from(plen / 128).expect("fits")]);
    body.extend(&props);
    body.extend(b"\x00\x01z");
    let p = packet(&body);
    assert!(p.len() > WAIT);
    assert_eq!(attrs(&p[..20]), expect("5", None));
    assert_eq!(attrs(&p), expect("5", Some("z")));
    // A 5000-byte client id in 3.1.1.
    let mut body = b"\x00\x04MQTT\x04\x02\x00\x3c\x13\x88".to_vec();
    body.extend([b'c'; 5000]);
    let p = packet(&body);
    assert_eq!(attrs(&p[..16]), expect("3.1.1", None));
}

#[test]
fn other_protocols_do_not_match() {
    for (name, bytes) in other_protocols_except("mqtt") {
        assert_eq!(detect(&bytes), Verdict::NoMatch, "{name}");
    }
    // A PUBLISH is MQTT, but not a client's first packet.
    assert_eq!(detect(b"\x30\x0b\x00\x01tpayload"), Verdict::NoMatch);
}

fn check(data: &[u8]) -> Result<(), TestCaseError> {
    check_need_more(data, &detect(data), false, WAIT).map_err(TestCaseError::fail)
}

proptest! {
    #[test]
    fn arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..300), connect in any::<bool>()) {
        let mut data = data;
        if connect && !data.is_empty() {
            data[0] = 0x10;
        }
        check(&data)?;
    }

    #[test]
    fn mutated_captures(index in 0usize..5, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
                        cut in any::<usize>()) {
        let data = flipped(CAPTURES[index].0, &flips);
        check(&data[..cut % (data.len() + 1)])?;
        check(&data)?;
    }
}
