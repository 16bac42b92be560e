//! Tests of the `quic` detector: the RFC 9001 and RFC 9369 Appendix A
//! vectors (keys and the protected client Initial), flights captured from a
//! real client (aioquic, one to three datagrams), flights shaped by the
//! builder in `build` (split, reordered, coalesced, padded), other
//! protocols, and property-based fuzzing in `fuzz`.

mod build;
mod fuzz;

use super::*;
use crate::crypto::Secrets;
use build::{Initial, ack_and_ping, client_hello, crypto, crypto_reversed, zero_rtt};
use refractium_plugin_sdk::testing::hex;

const RFC_DCID: &[u8] = b"\x83\x94\xc8\xf0\x3e\x51\x57\x08";

/// The datagrams of a capture: each a 2-byte big-endian length and its bytes.
pub fn datagrams(capture: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = capture;
    while let [hi, lo, tail @ ..] = rest {
        let (datagram, tail) = tail.split_at(usize::from(u16::from_be_bytes([*hi, *lo])));
        out.push(datagram.to_vec());
        rest = tail;
    }
    out
}

pub fn detect(data: &[u8]) -> Verdict {
    Quic::new("null").expect("quic detector").detect(data, &Peer::test(Transport::Udp))
}

fn matched(data: &[u8]) -> Detection {
    match detect(data) {
        Verdict::Matched(detection) => detection,
        other => panic!("expected a match, got {other:?}"),
    }
}

fn rfc9001_packet() -> Vec<u8> {
    hex(include_str!("../testdata/rfc9001_a2_client_initial.hex"))
}

fn rfc9369_packet() -> Vec<u8> {
    hex(include_str!("../testdata/rfc9369_a2_client_initial.hex"))
}

#[test]
fn rfc9001_a1_keys() {
    let secrets = Secrets::client_initial(Version::V1, RFC_DCID).expect("keys");
    assert_eq!(
        secrets.initial_secret.to_vec(),
        hex("7db5df06e7a69e432496adedb00851923595221596ae2ae9fb8115c1e9ed0a44")
    );
    assert_eq!(
        secrets.client_initial_secret.to_vec(),
        hex("c00cf151ca5be075ed0ebfb5c80323c42d6b7db67881289af4008f1f6c357aea")
    );
    assert_eq!(secrets.key.to_vec(), hex("1f369613dd76d5467730efcbe3b1a22d"));
    assert_eq!(secrets.iv.to_vec(), hex("fa044b2f42a3fd3b46fb255c"));
    assert_eq!(secrets.hp.to_vec(), hex("9f50449e04a0e810283a1e9933adedd2"));
}

#[test]
fn rfc9369_a1_keys() {
    let secrets = Secrets::client_initial(Version::V2, RFC_DCID).expect("keys");
    assert_eq!(
        secrets.initial_secret.to_vec(),
        hex("2062e8b3cd8d52092614b8071d0aa1fb7c2e3ac193f78b280e72d8f5751f6aba")
    );
    assert_eq!(
        secrets.client_initial_secret.to_vec(),
        hex("14ec9d6eb9fd7af83bf5a668bc17a7e283766aade7ecd0891f70f9ff7f4bf47b")
    );
    assert_eq!(secrets.key.to_vec(), hex("8b1a0bc121284290a29e0971b5cd045d"));
    assert_eq!(secrets.iv.to_vec(), hex("91f73e2351d8fa91660e909f"));
    assert_eq!(secrets.hp.to_vec(), hex("45b95e15235d6f45a6b19cbcb0294ba9"));
}

#[test]
fn rfc_a2_header_protection_masks() {
    for (version, sample, mask) in [
        (Version::V1, "d1b1c98dd7689fb8ec11d242b123dc9b", "437b9aec36"),
        (Version::V2, "ffe67b6abcdb4298b485dd04de806071", "94a0c95e80"),
    ] {
        let hp = Secrets::client_initial(version, RFC_DCID).expect("keys").hp;
        let block = refractium_plugin_sdk::crypto::aes128_ecb_encrypt(&hp, &hex(sample)).expect("one block");
        assert_eq!(block[..5].to_vec(), hex(mask), "{version:?}");
    }
}

#[test]
fn rfc_a2_client_initials_decrypt() {
    let frame = hex(include_str!("../testdata/rfc9001_a2_crypto_frame.hex"));
    let mut expected = frame.clone();
    expected.resize(1162, 0);
    for (version, packet) in [(Version::V1, rfc9001_packet()), (Version::V2, rfc9369_packet())] {
        assert_eq!(packet.len(), 1200);
        let header = LongHeader::parse(&packet, 0).expect("header");
        assert_eq!((header.version, header.packet_type, header.dcid), (version, PacketType::Initial, RFC_DCID));
        assert_eq!((header.pn_offset, header.end), (18, 1200));
        let keys = InitialKeys::new(version, header.dcid).expect("keys");
        let opened = keys.open(&packet, &header, None).expect("authenticates");
        assert_eq!(opened.packet_number, 2);
        assert_eq!(opened.payload, expected, "{version:?}");
    }
}

#[test]
fn rfc_a2_client_initials_match() {
    for (packet, version) in [(rfc9001_packet(), "1"), (rfc9369_packet(), "2")] {
        let expected = Detection::new("quic")
            .sni("example.com")
            .alpn(["alpn"])
            .attr("version", version)
            .attr("dcid", "8394c8f03e515708");
        assert_eq!(detect(&packet), Verdict::Matched(expected));
        // The same bytes on a TCP listener are not QUIC.
        let tcp = Quic::new("null").expect("quic").detect(&packet, &Peer::test(Transport::Tcp));
        assert_eq!(tcp, Verdict::NoMatch);
    }
}

#[test]
fn rfc_a2_tampering_is_refused() {
    let packet = rfc9001_packet();
    for at in [0, 5, 9, 17, 18, 19, 21, 22, 600, 1183, 1199] {
        let mut bad = packet.clone();
        bad[at] ^= 0x01;
        assert_eq!(detect(&bad), Verdict::NoMatch, "byte {at}");
    }
    // A.3: the server's Initial (empty DCID, 135 bytes) is no client Initial.
    let server = hex(
        "cf000000010008f067a5502a4262b5004075c0d95a482cd0991cd25b0aac406a5816b6394100f37a1c69797554780bb38cc5a99f5ede4c\
         f73c3ec2493a1839b3dbcba3f6ea46c5b7684df3548e7ddeb9c3bf9c73cc3f3bded74b562bfb19fb84022f8ef4cdd93795d77d06edbb7aaf\
         2f58891850abbdca3d20398c276456cbc42158407dd074ee",
    );
    assert_eq!(detect(&server), Verdict::NoMatch);
}

#[test]
fn aioquic_single_datagram_flights() {
    for (capture, sni, version) in [
        (&include_bytes!("../testdata/aioquic_v1_1dgram.bin")[..], "www.example.com", "1"),
        (&include_bytes!("../testdata/aioquic_v2_1dgram.bin")[..], "v2.example.org", "2"),
    ] {
        let flight = datagrams(capture);
        assert_eq!(flight.iter().map(Vec::len).collect::<Vec<_>>(), [1200]);
        let detection = matched(&flight[0]);
        assert_eq!(detection.sni.as_deref(), Some(sni));
        assert_eq!(detection.alpn, ["h3"]);
        assert_eq!(detection.attribute("version"), Some(version));
        let dcid = detection.attribute("dcid").expect("dcid");
        assert_eq!(dcid.len(), 16, "aioquic picks an 8-byte DCID");
    }
}

#[test]
fn aioquic_multi_datagram_flights() {
    for (capture, count, sni) in [
        (&include_bytes!("../testdata/aioquic_v1_2dgrams.bin")[..], 2, "two.example.net"),
        (&include_bytes!("../testdata/aioquic_v1_3dgrams.bin")[..], 3, "three.example.net"),
    ] {
        let flight = datagrams(capture);
        assert_eq!(flight.len(), count);
        let mut data = Vec::new();
        for (i, datagram) in flight.iter().enumerate() {
            data.extend(datagram);
            if i + 1 < count {
                assert_eq!(detect(&data), Verdict::NeedMore(0), "{sni}: {} datagrams", i + 1);
            }
        }
        let detection = matched(&data);
        assert_eq!(detection.sni.as_deref(), Some(sni));
        // The three-datagram hello offers 91 names: the first 64 are kept,
        // as many as the proxy accepts in a detection.
        let kept = if count == 2 { 41 } else { refractium_plugin_sdk::tls::MAX_ALPN_NAMES };
        assert_eq!(detection.alpn.len(), kept);
        assert_eq!(detection.alpn.first().map(String::as_str), Some("h3-custom-protocol-000"));
        assert_eq!(detection.attribute("version"), Some("1"));
        // Zero bytes after each datagram's packets change nothing.
        let padded: Vec<u8> = flight.iter().flat_map(|d| [&d[..], &[0; 37]].concat()).collect();
        assert_eq!(matched(&padded), detection);
    }
}

#[test]
fn hello_split_and_reordered() {
    let hello = client_hello("split.example", &["h3", "h3-29"], 1500);
    // Reversed CRYPTO frames in one packet, after ACK and PING frames.
    let payload = [ack_and_ping(), crypto_reversed(&hello, 300)].concat();
    let one = Initial::new(Version::V1, 0, payload).padded_to(1200).build();
    let detection = matched(&one);
    assert_eq!((detection.sni.as_deref(), detection.alpn.len()), (Some("split.example"), 2));
    assert_eq!(detection.attribute("dcid"), Some("1122334455667788"));
    // Two coalesced Initial packets in one datagram, second half first.
    let (a, b) = hello.split_at(800);
    let second = Initial::new(Version::V2, 0, crypto(800, b)).build();
    let first = Initial::new(Version::V2, 1, crypto(0, a)).padded_to(1200 - second.len()).build();
    let data = [second, first].concat();
    assert_eq!(matched(&data).attribute("version"), Some("2"));
    // Two datagrams: a short Initial padded with zero bytes, then the rest
    // behind a 0-RTT packet.
    let mut first = Initial::new(Version::V1, 0, crypto(0, a)).build();
    first.resize(1250, 0);
    let rest = [zero_rtt(40), Initial::new(Version::V1, 1, crypto(800, b)).padded_to(1200).build()].concat();
    assert_eq!(detect(&first), Verdict::NeedMore(0));
    assert!(detect(&[&first[..], &rest].concat()).is_match());
    // A packet of another connection and junk before the rest are skipped.
    let mut other = Initial::new(Version::V1, 1, crypto(800, b)).padded_to(1200).build();
    other[50] ^= 1;
    let junk = [0x5a; 30];
    assert!(detect(&[&first[..], &other, &junk, &rest].concat()).is_match());
}

#[test]
fn incomplete_or_abandoned_hellos() {
    let hello = client_hello("wait.example", &["h3"], 2000);
    let part = Initial::new(Version::V1, 0, crypto(0, &hello[..900])).padded_to(1200).build();
    assert_eq!(detect(&part), Verdict::NeedMore(0));
    // The client closes the connection before the hello is complete.
    let close = [0x1c, 0x0a, 0x00, 0x00];
    let closed = Initial::new(Version::V1, 1, [crypto(900, &hello[900..1000]), close.to_vec()].concat());
    assert_eq!(detect(&[&part[..], &closed.padded_to(1200).build()].concat()), Verdict::NoMatch);
    // Sixteen packets without the rest of the hello: give up.
    let mut data = part.clone();
    for pn in 1..16 {
        data.extend(Initial::new(Version::V1, pn, vec![0x01]).padded_to(1200).build());
    }
    assert_eq!(detect(&data), Verdict::NeedMore(0));
    data.extend(Initial::new(Version::V1, 16, crypto(900, &hello[900..])).padded_to(1200).build());
    assert_eq!(detect(&data), Verdict::NoMatch);
    // A hello announcing more than 64 KiB, or a stream that is no hello.
    let huge = Initial::new(Version::V1, 0, crypto(0, &[1, 0x01, 0x10, 0x00, 3, 3])).padded_to(1200).build();
    assert_eq!(detect(&huge), Verdict::NoMatch);
    let server_hello = Initial::new(Version::V1, 0, crypto(0, &[2, 0, 0, 0x50, 3, 3])).padded_to(1200).build();
    assert_eq!(detect(&server_hello), Verdict::NoMatch);
}

#[test]
fn header_rules() {
    let hello = client_hello("rules.example", &["h3"], 0);
    let data = Initial::new(Version::V1, 0, crypto(0, &hello)).padded_to(1200).build();
    assert!(detect(&data).is_match());
    // An unpadded first datagram.
    let short = Initial::new(Version::V1, 0, crypto(0, &hello)).padded_to(1199).build();
    assert_eq!((short.len(), detect(&short)), (1199, Verdict::NoMatch));
    // A 7-byte DCID (decryptable, but not a client's first Initial), and
    // the longest ones allowed.
    for (dcid_len, scid_len, ok) in [(7, 0, false), (20, 20, true), (8, 0, true)] {
        let mut packet = Initial::new(Version::V1, 0, crypto(0, &hello));
        packet.dcid = vec![0x42; dcid_len];
        packet.scid = vec![0x24; scid_len];
        packet.token = vec![0x99; 40];
        packet.pn_len = 4;
        let data = packet.padded_to(1200).seal(&vec![0x42; dcid_len]);
        assert_eq!(detect(&data).is_match(), ok, "dcid {dcid_len}");
    }
    // Fixed bit cleared, other versions (grease, draft-29, negotiation), a
    // Handshake packet first.
    for (at, value) in [(0, 0x80), (4, 0x00), (1, 0x1a), (4, 0x02)] {
        let mut bad = data.clone();
        bad[at] = if at == 0 { bad[0] & !0x40 | value } else { value };
        assert_eq!(detect(&bad), Verdict::NoMatch, "byte {at} = {value:#x}");
    }
    let mut grease = data.clone();
    grease[1..5].copy_from_slice(&[0x1a, 0x2a, 0x3a, 0x4a]);
    assert_eq!(detect(&grease), Verdict::NoMatch);
    let mut handshake = data.clone();
    handshake[0] |= 0x20;
    assert_eq!(detect(&handshake), Verdict::NoMatch);
    // A packet longer than 16 KiB.
    let jumbo = Initial::new(Version::V1, 0, crypto(0, &hello)).padded_to(16 * 1024 + 1).build();
    assert_eq!(detect(&jumbo), Verdict::NoMatch);
}

#[test]
fn packet_numbers() {
    use crate::crypto::decode_packet_number;
    // RFC 9000 Appendix A.3.
    assert_eq!(decode_packet_number(Some(0xa82f_30ea), 0x9b32, 2), 0xa82f_9b32);
    assert_eq!(decode_packet_number(None, 2, 4), 2);
    assert_eq!(decode_packet_number(Some(0xff), 0x01, 1), 0x101);
    assert_eq!(decode_packet_number(Some(u64::MAX), 0xff, 1), u64::MAX);
}

#[test]
fn other_protocols_do_not_match() {
    let mut dns = hex("abcd01000001000000000001076578616d706c6503636f6d0000010001");
    dns.resize(1232, 0);
    let mut dns_c0 = dns.clone();
    dns_c0[0] = 0xc3;
    let mut wireguard = vec![1, 0, 0, 0];
    wireguard.resize(1200, 0x33);
    let openvpn = [&[0x38][..], &[0x11; 1199]].concat();
    let mut random = vec![0u8; 1400];
    let mut seed: u32 = 0x1234_5678;
    for byte in &mut random {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        *byte = (seed >> 24) as u8;
    }
    // Random bytes behind a plausible v1 Initial header: AEAD refuses them.
    let mut fake = hex("c0 00000001 08 0102030405060708 00 00 4500");
    fake.extend(&random[..1280]);
    for data in [&dns[..], &dns_c0, &wireguard, &openvpn, &random, &fake, b"", b"\xc0", b"\xc0\x00\x00\x00\x01"] {
        assert_eq!(detect(data), Verdict::NoMatch, "{:02x?}", &data[..data.len().min(8)]);
    }
}
