#!/usr/bin/env python3
"""Write the seed inputs of every fuzz target into fuzz/corpus/<target>/.

Seeds are files named `seed-*`: the real clients' first flights of
tests/corpus/ (and the SDK's test captures), each detector's own protocol
in its corpus; the same flights with split points for `detect_loop`; the
shipped configs and a few hand-written ones for `config`; PROXY v1/v2
headers for `proxy_header`. Running it again rewrites the seeds and leaves
every other file (inputs the fuzzer kept, crashes) alone. See
docs/fuzzing.md.
"""

import json
import pathlib
import struct

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"
CAPTURES = ROOT / "tests" / "corpus"
SDK_DATA = ROOT / "plugin-sdk" / "src" / "testdata"

# Detector target -> the capture directories (and SDK captures) of its protocol.
OWN = {
    "tls": (["tls"], ["openssl_client_hello.bin"]),
    "http": (["http"], []),
    "http2": (["http2"], []),
    "ssh": (["ssh"], []),
    "dns": (["dns"], []),
    "socks4": (["socks4"], []),
    "socks5": (["socks5"], []),
    "postgres": (["postgres"], ["postgres_psql15_startup.bin"]),
    "redis": (["redis"], []),
    "mqtt": (["mqtt"], []),
    "openvpn": (["openvpn"], ["openvpn_tcp_plain.bin", "openvpn_udp_tlsauth512.bin", "openvpn_udp_tlscryptv2.bin"]),
    "wireguard": (["wireguard"], ["wireguard_go_initiation.bin"]),
    "quic": (["quic"], []),
    "xmpp": (["xmpp"], ["xmpp_slixmpp_client.bin"]),
    "rdp": (["rdp"], ["rdp_xfreerdp2_default.bin"]),
    "pattern": ([], []),
}

PATTERN_FLIGHTS = {
    "gopher": b"/about\r\n",
    "magic": b"\x00\x01\x02\x03\xde\xad\xbe\xefrest",
    "zmq": b"\xff\x00\x00\x00\x00\x00\x00\x00\x01\x7f\x03\x00",
    "irc": b"NICK fuzzer\r\nUSER fuzzer 0 * :Fuzzer\r\n",
    "beacon": b"xxHELLO123WORLDxx",
}

PATTERN_CONFIGS = {
    "null": "null",
    "empty-rules": '{"rules": []}',
    "prefix": '{"rules": [{"protocol": "gopher", "prefix": "/", "min_length": 3}]}',
    "escapes": r'{"rules": [{"protocol": "z", "prefixes": ["\\xff\\x00", "a\\r\\n\\t\\0\\\\"], "offset": 2}]}',
    "hex": '{"rules": [{"protocol": "m", "hex": "de ad\\nbe ef", "offset": 4, "transport": "udp"}]}',
    "regex": r'{"rules": [{"protocol": "irc", "regex": "^(NICK|USER) [^\\r\\n]*\\r\\n", "max_length": 512,'
    r' "attributes": {"kind": "irc", "n": 1, "on": false}}]}',
    "unanchored": r'{"rules": [{"protocol": "b", "regex": "(?i)hello[0-9]{2,4}", "max_length": 16384}]}',
    "errors": '{"rules": [{"protocol": "", "prefix": "x"}, {"protocol": "g", "regex": "a*"}, 7]}',
}

CONFIG_SNIPPETS = {
    "minimal": """listeners:
  - name: edge
    bind: 127.0.0.1:8443
    default: web
routes:
  - name: web
    to: web
backends:
  web:
    servers: [127.0.0.1:8080]
""",
    "udp-and-proxy": """listeners:
  - name: dns
    bind: "[::]:53"
    transport: udp
    detectors: [dns, quic, wireguard]
    accept_proxy: { from: [10.0.0.0/8, "2001:db8::/32"] }
    detect: { max_bytes: 2048, timeout: 250ms }
routes:
  - { name: dns, match: { protocol: dns, attributes: { qtype: A } }, to: dns }
backends:
  dns: { servers: [127.0.0.1:5353], balance: hash_client_ip, proxy_protocol: v2 }
udp: { max_sessions: 1000, session_timeout: 30s }
""",
    "plugins": """plugins:
  dir: ./plugins.d
  limits: { memory: 16MiB, call_timeout: 5ms }
  config:
    pattern:
      rules:
        - { protocol: gopher, prefix: "/", min_length: 3 }
        - { protocol: irc, regex: '^NICK ', transport: tcp }
listeners:
  - { name: a, bind: 127.0.0.1:1, detectors: [pattern, tls], default: r }
routes:
  - { name: r, match: { protocol: [gopher, irc], sni: "*.example.com" }, hooks: [deny], to: b }
backends:
  b: { servers: [{ addr: 127.0.0.1:2, weight: 3 }], health: { interval: 1s, rise: 2, fall: 3 } }
""",
    "errors": """listeners:
  - name: edge
    name: again
    bind: 999.0.0.1:99999
    detect: { max_bytes: 3, timeout: -1s }
	tab: here
routes: {}
backends:
  web:
    servers: []
    unknown: 1
""",
    "anchors": """base: &b { servers: [127.0.0.1:8080] }
backends:
  web: *b
  api: { <<: *b, balance: random }
""",
    "nested": "a: " + "[" * 40 + "]" * 40 + "\n",
    "empty": "",
    "comment": "# nothing but a comment\n",
}


def write(target, name, data):
    directory = CORPUS / target
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"seed-{name}").write_bytes(data)


def flights():
    """(case, transport, parts) of every capture in the manifest."""
    manifest = json.loads((CAPTURES / "manifest.json").read_text())
    for entry in manifest["entries"]:
        parts = [(CAPTURES / f).read_bytes() for f in entry["files"]]
        yield entry["case"], entry["transport"], parts


def detector_seeds(all_flights):
    for target, (dirs, sdk_files) in OWN.items():
        for case, _transport, parts in all_flights:
            if case.split("/")[0] in dirs:
                slug = case.replace("/", "-")
                write(target, slug, b"".join(parts))
                if len(parts) > 1:
                    for i, part in enumerate(parts, 1):
                        write(target, f"{slug}.{i}", part)
        for name in sdk_files:
            write(target, f"sdk-{name.removesuffix('.bin')}", (SDK_DATA / name).read_bytes())
        write(target, "partial-g", b"G")
    for name, flight in PATTERN_FLIGHTS.items():
        write("pattern", name, flight)
    for name, config in PATTERN_CONFIGS.items():
        write("pattern_config", name, config.encode())


def loop_input(udp, bytewise, parts):
    """The detect_loop encoding: mode, split count, u16 split points, bytes."""
    data = b"".join(parts)
    ends, at = [], 0
    for part in parts[:-1]:
        at += len(part)
        ends.append(at)
    mode = (1 if udp else 0) | (2 if bytewise else 0)
    return bytes([mode, len(ends)]) + b"".join(struct.pack(">H", e % 65536) for e in ends) + data


def loop_seeds(all_flights):
    for case, transport, parts in all_flights:
        udp = transport == "udp"
        slug = case.replace("/", "-")
        write("detect_loop", slug, loop_input(udp, False, parts))
        if not udp:
            write("detect_loop", f"{slug}-bytewise", loop_input(False, True, parts))
    # An HTTP request in three reads that cut its request line.
    write("detect_loop", "http-three-reads", loop_input(False, False, [b"GE", b"T / HT", b"TP/1.1\r\nHost: a\r\n\r\n"]))
    write("detect_loop", "empty", b"")


def config_seeds():
    for path in sorted((ROOT / "config").rglob("*.yaml")):
        write("config", str(path.relative_to(ROOT / "config")).replace("/", "-"), path.read_bytes())
    for name, text in CONFIG_SNIPPETS.items():
        write("config", f"{name}.yaml", text.encode())


def proxy_v2(command, family, addresses, tlvs=b""):
    body = addresses + tlvs
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x20 | command, family]) + struct.pack(">H", len(body)) + body


def proxy_seeds():
    v4 = bytes([192, 0, 2, 7, 198, 51, 100, 1]) + struct.pack(">HH", 40000, 443)
    v6 = bytes.fromhex("20010db8000000000000000000000007") + bytes.fromhex("20010db8000000000000000000000001")
    v6 += struct.pack(">HH", 40000, 443)
    unix = b"/tmp/a".ljust(108, b"\x00") + b"/tmp/b".ljust(108, b"\x00")
    alpn_tlv = b"\x01" + struct.pack(">H", 2) + b"h2"
    seeds = {
        "v1-tcp4": b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 443\r\nGET / HTTP/1.1\r\n\r\n",
        "v1-tcp6": b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 443\r\nSSH-2.0-x\r\n",
        "v1-unknown": b"PROXY UNKNOWN\r\n",
        "v1-unknown-long": b"PROXY UNKNOWN ffff::1 ffff::2 65535 65535\r\n",
        "v1-partial": b"PROXY TCP4 192.0.2.7 198.",
        "v2-tcp4": proxy_v2(1, 0x11, v4) + b"\x16\x03\x01",
        "v2-udp4": proxy_v2(1, 0x12, v4) + b"\x12\x34\x01\x00",
        "v2-tcp6-tlv": proxy_v2(1, 0x21, v6, alpn_tlv),
        "v2-local": proxy_v2(0, 0x00, b""),
        "v2-unix": proxy_v2(1, 0x31, unix),
        "v2-unspec": proxy_v2(1, 0x01, b"abc"),
        "v2-short": proxy_v2(1, 0x11, v4)[:20],
        "not-proxy": b"GET / HTTP/1.1\r\n\r\n",
    }
    for name, data in seeds.items():
        write("proxy_header", name, data)


def main():
    all_flights = list(flights())
    detector_seeds(all_flights)
    loop_seeds(all_flights)
    config_seeds()
    proxy_seeds()


if __name__ == "__main__":
    main()
