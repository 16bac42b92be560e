//! Built-in `tls` detector: reads the ClientHello with the SDK's reader
//! ([`refractium_plugin_sdk::tls`]) and reports its SNI, its ALPN list and the
//! attributes `version` (highest version offered: `1.3`, `1.2`, `1.1`, `1.0`
//! or `ssl3`) and `ech` (`true` when Encrypted Client Hello is offered).

use refractium_plugin_sdk::testing::MAX_NEED_MORE;
use refractium_plugin_sdk::tls::{ClientHello, HelloParse, parse_client_hello};
use refractium_plugin_sdk::{Detection, Detector, Peer, Verdict};

pub struct Tls;

impl Detector for Tls {
    const NAME: &'static str = "tls";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn new(_config: &str) -> Result<Self, String> {
        Ok(Tls)
    }

    fn detect(&self, data: &[u8], _peer: &Peer) -> Verdict {
        match parse_client_hello(data) {
            HelloParse::Complete(hello) => Verdict::Matched(detection(hello)),
            // A hello announced longer than the host ever holds (records
            // included) can never be read whole: say so now, rather than
            // ask for more than the contract allows and hold the client
            // until its buffer fills (found by fuzzing: a 9-byte prefix
            // announcing a 64 KiB hello asked for 65550 bytes).
            HelloParse::NeedMore(n) if n > MAX_NEED_MORE => Verdict::NoMatch,
            HelloParse::NeedMore(n) => Verdict::NeedMore(n),
            HelloParse::NotTls => Verdict::NoMatch,
        }
    }
}

/// The detection a complete ClientHello gives (its names move into it).
pub fn detection(hello: ClientHello) -> Detection {
    let version = version_name(hello.max_version());
    let mut detection = Detection::new("tls").alpn(hello.alpn);
    if let Some(sni) = hello.sni {
        detection = detection.sni(sni);
    }
    detection = detection.attr("version", version);
    if hello.ech {
        detection = detection.attr("ech", "true");
    }
    detection
}

/// A version as operators write it.
fn version_name(version: u16) -> String {
    match version {
        0x0300 => "ssl3".to_string(),
        0x0301 => "1.0".to_string(),
        0x0302 => "1.1".to_string(),
        0x0303 => "1.2".to_string(),
        0x0304 => "1.3".to_string(),
        other => format!("0x{other:04x}"),
    }
}

refractium_plugin_sdk::export_detector!(Tls);

#[cfg(test)]
mod tests {
    use super::*;
    use refractium_plugin_sdk::Transport;

    fn vec16(body: &[u8]) -> Vec<u8> {
        let len = u16::try_from(body.len()).expect("fits u16");
        [&len.to_be_bytes()[..], body].concat()
    }

    /// A ClientHello in one record with the given extensions (type, body).
    fn hello(version: u16, extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut body = version.to_be_bytes().to_vec();
        body.extend([0; 32]);
        body.extend([0, 0, 2, 0x13, 0x01, 1, 0]);
        let exts: Vec<u8> =
            extensions.iter().flat_map(|(kind, ext)| [&kind.to_be_bytes()[..], &vec16(ext)].concat()).collect();
        body.extend(vec16(&exts));
        let len = u32::try_from(body.len()).expect("fits u32").to_be_bytes();
        let message = [&[1u8][..], &len[1..], &body].concat();
        [&[22u8, 3, 1][..], &vec16(&message)].concat()
    }

    fn sni(name: &str) -> (u16, Vec<u8>) {
        (0, vec16(&[&[0u8][..], &vec16(name.as_bytes())].concat()))
    }

    fn alpn(names: &[&str]) -> (u16, Vec<u8>) {
        let list: Vec<u8> =
            names.iter().flat_map(|n| [&[u8::try_from(n.len()).expect("short")][..], n.as_bytes()].concat()).collect();
        (0x10, vec16(&list))
    }

    fn detect(data: &[u8]) -> Verdict {
        let tls = Tls::new("null").expect("tls detector");
        tls.detect(data, &Peer::test(Transport::Tcp))
    }

    #[test]
    fn tls13_hello_with_sni_and_alpn() {
        let data = hello(
            0x0303,
            &[sni("Api.Example.com"), alpn(&["h2", "http/1.1"]), (0x2b, vec![4, 0x03, 0x04, 0x03, 0x03])],
        );
        let expected = Detection::new("tls").sni("api.example.com").alpn(["h2", "http/1.1"]).attr("version", "1.3");
        assert_eq!(detect(&data), Verdict::Matched(expected));
    }

    #[test]
    fn tls12_hello_and_ech() {
        let data = hello(0x0303, &[sni("outer.example"), (0xfe0d, vec![0; 64])]);
        let expected = Detection::new("tls").sni("outer.example").attr("version", "1.2").attr("ech", "true");
        assert_eq!(detect(&data), Verdict::Matched(expected));
        let data = hello(0x0301, &[]);
        let verdict = detect(&data);
        let detection = verdict.detection().expect("matched");
        assert_eq!((detection.sni.as_deref(), detection.attribute("version")), (None, Some("1.0")));
    }

    #[test]
    fn prefixes_need_more() {
        let data = hello(0x0303, &[sni("example.com")]);
        for len in 0..data.len() {
            match detect(&data[..len]) {
                Verdict::NeedMore(n) => assert!(n > len, "prefix {len}: NeedMore({n})"),
                other => panic!("prefix {len}: {other:?}"),
            }
        }
        assert_eq!(detect(&data[..20]), Verdict::NeedMore(data.len()));
        assert!(detect(&data).is_match());
    }

    /// `NeedMore` is the total a complete hello needs, a lower bound: one
    /// beyond the most the host buffers is a hello it can never read.
    #[test]
    fn a_hello_longer_than_the_host_holds_is_refused_at_once() {
        // A 64 KiB handshake message announced in a 218-byte first record.
        let prefix = b"\x16\x03\x01\x00\xda\x01\x01\x00\x00";
        assert_eq!(detect(prefix), Verdict::NoMatch);
        // The largest hello the host can hold is still waited for.
        let fits = b"\x16\x03\x01\x40\x00\x01\x00\xff\xdf";
        match detect(fits) {
            Verdict::NeedMore(n) => assert!(n > fits.len() && n <= MAX_NEED_MORE, "NeedMore({n})"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn other_protocols_do_not_match() {
        for data in
            [&b"GET / HTTP/1.1\r\n"[..], b"SSH-2.0-x\r\n", b"\x16\x03\x01\x00\x05\x02\0\0\x01\0", b"\x15\x03\x03"]
        {
            assert_eq!(detect(data), Verdict::NoMatch, "{data:?}");
        }
    }
}
