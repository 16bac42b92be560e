#!/usr/bin/env python3
"""Re-create the corpus of real client first flights in tests/corpus/.

For every case a listener is opened on 127.0.0.1 (TCP or UDP, random port), a
REAL client program is run against it with a time limit, and what the client
sends before it hears anything back is written under tests/corpus/<case>...:

  TCP: every read made within ~1 s of the accept. One read gives NAME.bin;
       several reads (a ClientHello larger than one segment) give NAME.1.bin,
       NAME.2.bin, ... and the manifest entry is a flight.
  UDP: each datagram as NAME.N.bin (only the datagrams of the first flight,
       not the client's retransmissions).

The listener never answers, so every capture is the client's first flight.

Usage (as root, on Debian 12):  python3 tests/corpus/capture.py [--no-install] [--only PREFIX]...

Phase 1 installs the clients (apt-get, pip). Phase 2 re-executes this script
in fresh network and mount namespaces (`unshare --net --mount`), where:
  * only a private loopback exists, so no client can reach anything else;
  * /etc/hosts is bind-mounted to map www.example.com, example.com (and
    localhost) to 127.0.0.1, so clients that cannot be told an address still
    send the intended names (SNI, Host:, XMPP `to`);
  * lo gets an Ethernet MTU (1500), no GSO, and a 200 kbit/s token bucket (one 1500-byte packet every 60 ms), so
    a flight larger than one segment arrives as separate reads, as it does
    on a real network path.
Nothing is sent to any address outside 127.0.0.0/8.

The manifest (manifest.json) is rewritten with one entry per case; with
--only, entries of other cases are kept as they were.
"""

import argparse
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MANIFEST = HERE / "manifest.json"
SNI = "www.example.com"

APT_PACKAGES = [
    "curl", "wget", "openssl", "gnutls-bin", "openssh-client", "bind9-dnsutils", "postgresql-client",
    "redis-tools", "mosquitto-clients", "openvpn", "wireguard-tools", "wireguard-go", "freerdp2-x11",
    "xvfb", "xauth", "chromium", "iproute2", "util-linux",
]
PIP_PACKAGES = ["aioquic", "slixmpp", "pyOpenSSL", "cryptography"]


# --------------------------------------------------------------------------- phase 1: install

def install():
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if shutil.which("apt-get"):
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False)
        apt = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "--no-upgrade"]
        r = subprocess.run([*apt, *APT_PACKAGES], env=env)
        if r.returncode != 0:  # one missing package must not stop the others
            for pkg in APT_PACKAGES:
                r = subprocess.run([*apt, pkg], env=env)
                if r.returncode != 0:
                    print(f"install: apt package {pkg} could not be installed; its cases will be skipped")
    for pkg in PIP_PACKAGES:
        r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", pkg])
        if r.returncode != 0:
            print(f"install: PyPI package {pkg} could not be installed; its cases will be skipped")


# --------------------------------------------------------------------------- phase 2: the namespace

def setup_namespace(work):
    """Private loopback with an Ethernet-like path, and a hosts file of our own."""
    hosts = work / "hosts"
    hosts.write_text(f"127.0.0.1 localhost {SNI} example.com\n::1 localhost ip6-localhost\n")
    subprocess.run(["mount", "--bind", str(hosts), "/etc/hosts"], check=True)
    resolv = work / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
    subprocess.run(["mount", "--bind", str(resolv), "/etc/resolv.conf"], check=False)
    subprocess.run(["ip", "link", "set", "lo", "up", "mtu", "1500"], check=True)
    subprocess.run(["ip", "link", "set", "lo", "gso_max_size", "1500"], check=False)
    r = subprocess.run(["tc", "qdisc", "add", "dev", "lo", "root", "tbf", "rate", "200kbit", "burst", "1600",
                        "latency", "1s"])
    if r.returncode != 0:
        print("namespace: no token bucket on lo; large flights may arrive in one read")


# --------------------------------------------------------------------------- capture primitives

class Skip(Exception):
    pass


def start(argv, env=None, stdin=subprocess.DEVNULL, cwd=None):
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=full_env,
                            cwd=cwd, start_new_session=True)


def stop(proc):
    """End the client we started (its whole process group) and return its output."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(3)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(3)
    out = proc.stdout.read() if proc.stdout else b""
    return out.decode("utf-8", "replace")[-2000:]


def capture_tcp(argv_for, timeout=10.0, window=1.0, env=None, stdin=subprocess.DEVNULL, cwd=None):
    """Reads of the first connection the client makes, within `window` s of the accept."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]
    proc = start(argv_for(port), env=env, stdin=stdin, cwd=cwd)
    reads = []
    try:
        deadline = time.monotonic() + timeout
        conn = None
        while conn is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Skip(f"client made no connection within {timeout:.0f} s")
            ready, _, _ = select.select([srv], [], [], min(left, 0.1))
            if ready:
                conn, _ = srv.accept()
            elif proc.poll() is not None:
                raise Skip(f"client exited ({proc.returncode}) without connecting")
        end = time.monotonic() + window
        while True:
            left = end - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select([conn], [], [], left)
            if not ready:
                break
            data = conn.recv(65536)
            if not data:
                break
            reads.append(data)
        conn.close()
    except Skip as e:
        raise Skip(f"{e}; client output: {stop(proc).strip()[-600:]!r}")
    finally:
        stop(proc)
        srv.close()
    return reads


def capture_udp(argv_for, timeout=10.0, window=0.3, datagrams=1, env=None, cwd=None):
    """The first `datagrams` datagrams of the first client address, within `window` s of the first."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    proc = start(argv_for(port), env=env, cwd=cwd)
    got = []
    try:
        deadline = time.monotonic() + timeout
        client = None
        while len(got) < datagrams:
            limit = deadline if client is None else min(deadline, first + window)
            left = limit - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select([srv], [], [], min(left, 0.1))
            if not ready:
                if client is None and proc.poll() is not None:
                    raise Skip(f"client exited ({proc.returncode}) without sending")
                continue
            data, addr = srv.recvfrom(65536)
            if client is None:
                client, first = addr, time.monotonic()
            if addr == client:
                got.append(data)
        if not got:
            raise Skip(f"client sent no datagram within {timeout:.0f} s")
    except Skip as e:
        raise Skip(f"{e}; client output: {stop(proc).strip()[-600:]!r}")
    finally:
        stop(proc)
        srv.close()
    return got


# --------------------------------------------------------------------------- client versions

def first_line(argv, pattern=None):
    try:
        r = subprocess.run(argv, capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (r.stdout + r.stderr).decode("utf-8", "replace")
    if pattern:
        m = re.search(pattern, text)
        return m.group(0) if m else "unknown"
    return text.strip().splitlines()[0] if text.strip() else "unknown"


def py_version(module):
    try:
        from importlib.metadata import version
        return f"{module} {version(module)}"
    except Exception:
        return f"{module} unknown"


def py_ssl_version():
    import ssl
    return f"Python {sys.version.split()[0]} ssl ({ssl.OPENSSL_VERSION})"


def pyopenssl_version():
    try:
        from OpenSSL import SSL
        lib = SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode()
        return f"{py_version('pyOpenSSL')} ({lib}, bundled by {py_version('cryptography')})"
    except Exception:
        return "pyOpenSSL unknown"


def ssh_software():
    """The softwareversion token OpenSSH puts in its banner (`OpenSSH_9.2p1`)."""
    return first_line(["ssh", "-V"], r"OpenSSH_[^\s,]+")


# --------------------------------------------------------------------------- the clients' scripts

PY_SSL = r"""
import socket, ssl, sys
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.set_alpn_protocols(["h2", "http/1.1"])
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
ctx.wrap_socket(s, server_hostname="www.example.com")
"""

PY_PQ = r"""
# pyOpenSSL on the OpenSSL that `cryptography` bundles (3.5 or later): its
# default groups offer an X25519MLKEM768 hybrid key share (1216 bytes).
import socket, sys
from OpenSSL import SSL
ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
ctx.set_alpn_protos([b"h2", b"http/1.1"])
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
s.settimeout(None)  # pyOpenSSL needs a blocking socket
c = SSL.Connection(ctx, s)
c.set_tlsext_host_name(b"www.example.com")
c.set_connect_state()
c.do_handshake()
"""

PY_URLLIB = r"""
import sys, urllib.request
urllib.request.urlopen(f"http://www.example.com:{sys.argv[1]}/", timeout=5)
"""

PY_QUIC = r"""
import asyncio, ssl, sys
from aioquic.asyncio import connect
from aioquic.quic.configuration import QuicConfiguration
alpn = sys.argv[2].split(",")
sni = sys.argv[3]
async def main():
    config = QuicConfiguration(is_client=True, alpn_protocols=alpn, server_name=sni, verify_mode=ssl.CERT_NONE)
    async with connect("127.0.0.1", int(sys.argv[1]), configuration=config, wait_connected=True):
        pass
asyncio.run(asyncio.wait_for(main(), 8))
"""

PY_XMPP = r"""
# argv: port, "starttls" (stream header in clear) or "direct-tls" (XEP-0368)
import asyncio, sys, slixmpp
xmpp = slixmpp.ClientXMPP("user@example.com", "secret")
xmpp.enable_direct_tls = sys.argv[2] == "direct-tls"
xmpp.enable_starttls = sys.argv[2] == "starttls"
xmpp.connect(host="127.0.0.1", port=int(sys.argv[1]))
asyncio.get_event_loop().run_until_complete(asyncio.sleep(5))
"""

QUIC_ALPNS = ["h3"] + [f"x-refractium-test-protocol-{i:03d}" for i in range(40)]


# --------------------------------------------------------------------------- OpenVPN / WireGuard set-up

class OpenVpnKeys:
    """A throwaway CA and client certificate, plus tls-auth / tls-crypt / tls-crypt-v2 keys."""

    def __init__(self, work):
        self.dir = work / "openvpn"
        self.dir.mkdir(exist_ok=True)
        d = self.dir
        run = lambda *a: subprocess.run(a, check=True, capture_output=True, cwd=d)  # noqa: E731
        run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=corpus-ca")
        run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "client.key", "-out", "client.csr", "-subj", "/CN=corpus-client")
        run("openssl", "x509", "-req", "-in", "client.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "client.crt", "-days", "2")
        run("openvpn", "--genkey", "secret", "ta.key")
        run("openvpn", "--genkey", "tls-crypt-v2-server", "v2server.key")
        run("openvpn", "--tls-crypt-v2", "v2server.key", "--genkey", "tls-crypt-v2-client", "v2client.key")

    def argv(self, port, proto, extra=()):
        d = self.dir
        return ["openvpn", "--client", "--dev", "null", "--nobind", "--remote", "127.0.0.1", str(port),
                "--proto", proto, "--ca", str(d / "ca.crt"), "--cert", str(d / "client.crt"),
                "--key", str(d / "client.key"), "--connect-retry-max", "1", "--verb", "3", *extra]


def wireguard_argv(work):
    """A shell script: wireguard-go on interface wgc, a peer at 127.0.0.1:PORT with
    persistent keepalive 1 s, so the interface sends a handshake initiation at
    once with no tunnel traffic at all."""
    script = work / "wg.sh"
    script.write_text(
        "set -e\n"
        "umask 077\n"
        "wg genkey > \"$WORK/wg.key\"\n"
        "wg genkey | wg pubkey > \"$WORK/wg.peer\"\n"
        "ip link del wgc 2>/dev/null || true\n"
        "WG_PROCESS_FOREGROUND=1 wireguard-go wgc &\n"
        "for i in $(seq 50); do ip link show wgc >/dev/null 2>&1 && break; sleep 0.1; done\n"
        "ip link set wgc up\n"
        "wg set wgc private-key \"$WORK/wg.key\" peer \"$(cat \"$WORK/wg.peer\")\" "
        "endpoint 127.0.0.1:$1 persistent-keepalive 1\n"
        "wait\n")
    return lambda port: ["sh", str(script), str(port)]


# --------------------------------------------------------------------------- the cases

def expect(protocol, sni=None, alpn=(), **attributes):
    return {"protocol": protocol, "sni": sni, "alpn": list(alpn), "attributes": attributes}


def chromium_argv(work, port, url, quic=False):
    profile = tempfile.mkdtemp(prefix="chromium-", dir=work)
    argv = ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
            "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-extensions",
            f"--host-resolver-rules=MAP {SNI} 127.0.0.1:{port}, MAP * ~NOTFOUND", "--ignore-certificate-errors",
            "--timeout=5000", "--dump-dom"]
    if quic:
        argv += ["--enable-quic", f"--origin-to-force-quic-on={SNI}:443"]
    return argv + [url]


def cases(work):
    """(name, transport, capture thunk, client version thunk, expectation, note, hand_made)."""
    sni = SNI
    h2 = ["h2", "http/1.1"]
    ovpn = {}

    def keys():
        if "k" not in ovpn:
            ovpn["k"] = OpenVpnKeys(work)
        return ovpn["k"]

    py = sys.executable
    curl_v = lambda: first_line(["curl", "--version"], r"curl \S+") + " (" + first_line(  # noqa: E731
        ["curl", "--version"], r"OpenSSL/\S+") + ")"
    wget_v = lambda: first_line(["wget", "--version"], r"GNU Wget \S+")  # noqa: E731
    chromium_v = lambda: first_line(["chromium", "--version"])  # noqa: E731
    dig_v = lambda: first_line(["dig", "-v"], r"DiG \S+")  # noqa: E731
    psql_v = lambda: first_line(["psql", "--version"])  # noqa: E731
    redis_v = lambda: first_line(["redis-cli", "--version"])  # noqa: E731
    mosq_v = lambda: first_line(["mosquitto_pub", "--help"], r"mosquitto_pub version \S+")  # noqa: E731
    ovpn_v = lambda: first_line(["openvpn", "--version"], r"OpenVPN \S+")  # noqa: E731
    curl_url = lambda port, scheme="https": f"{scheme}://{sni}:{port}/"  # noqa: E731
    curl = ["curl", "-s", "-o", "/dev/null", "--max-time", "5"]

    def tcp(argv_for, **kw):
        return lambda: capture_tcp(argv_for, **kw)

    def udp(argv_for, **kw):
        return lambda: capture_udp(argv_for, **kw)

    yield ("tls/curl-h2", "tcp", tcp(lambda p: curl + ["-k", curl_url(p)]), curl_v,
           expect("tls", sni, h2, version="1.3"), "curl's default ClientHello (OpenSSL), ALPN h2 then http/1.1", False)
    yield ("tls/curl-tls12", "tcp", tcp(lambda p: curl + ["-k", "--http1.1", "--tls-max", "1.2", curl_url(p)]),
           curl_v, expect("tls", sni, ["http/1.1"], version="1.2"), "curl --http1.1 --tls-max 1.2", False)
    yield ("tls/wget", "tcp",
           tcp(lambda p: ["wget", "-q", "-O", "/dev/null", "-t", "1", "-T", "5", "--no-check-certificate",
                          curl_url(p)]),
           wget_v, expect("tls", sni, version="1.3"), "Debian's wget uses GnuTLS and sends no ALPN", False)
    yield ("tls/openssl-s_client", "tcp",
           tcp(lambda p: ["openssl", "s_client", "-connect", f"127.0.0.1:{p}", "-servername", sni, "-alpn",
                          "h2,http/1.1"], stdin=subprocess.PIPE),
           lambda: first_line(["openssl", "version"]), expect("tls", sni, h2, version="1.3"), "", False)
    yield ("tls/gnutls-cli", "tcp",
           tcp(lambda p: ["gnutls-cli", "--insecure", "--alpn", "h2", "--alpn", "http/1.1", "-p", str(p), sni],
               stdin=subprocess.PIPE),
           lambda: first_line(["gnutls-cli", "--version"], r"gnutls-cli \S+"), expect("tls", sni, h2, version="1.3"),
           "", False)
    yield ("tls/python-ssl", "tcp", tcp(lambda p: [py, "-c", PY_SSL, str(p)]), py_ssl_version,
           expect("tls", sni, h2, version="1.3"), "ssl.create_default_context() with ALPN h2, http/1.1", False)
    yield ("tls/pyopenssl-mlkem", "tcp", tcp(lambda p: [py, "-c", PY_PQ, str(p)]), pyopenssl_version,
           expect("tls", sni, h2, version="1.3"),
           "post-quantum hybrid key share X25519MLKEM768 (OpenSSL >= 3.5 default groups): the ClientHello "
           "(~1.6 KB) is larger than one 1460-byte segment and arrives in two reads", False)
    yield ("tls/chromium", "tcp",
           tcp(lambda p: chromium_argv(work, p, f"https://{sni}/"), timeout=40),
           chromium_v, expect("tls", sni, h2, version="1.3", ech="true"),
           "headless Chromium: GREASE ECH extension (no ECH config is known, so Chromium sends a GREASE "
           "encrypted_client_hello, indistinguishable on the wire from real ECH) and an X25519MLKEM768 key "
           "share, so the ClientHello spans two segments", False)
    yield ("http/curl", "tcp", tcp(lambda p: curl + [curl_url(p, "http")]), curl_v,
           expect("http", None, (), host=sni, method="GET", version="1.1"), "", False)
    yield ("http/curl-post", "tcp", tcp(lambda p: curl + ["-d", "a=1", curl_url(p, "http") + "form"]), curl_v,
           expect("http", None, (), host=sni, method="POST", version="1.1"), "", False)
    yield ("http/wget", "tcp",
           tcp(lambda p: ["wget", "-q", "-O", "/dev/null", "-t", "1", "-T", "5", curl_url(p, "http")]), wget_v,
           expect("http", None, (), host=sni, method="GET", version="1.1"), "", False)
    yield ("http/python-urllib", "tcp", tcp(lambda p: [py, "-c", PY_URLLIB, str(p)]),
           lambda: f"Python {sys.version.split()[0]} urllib",
           expect("http", None, (), host=sni, method="GET", version="1.1"), "", False)
    yield ("http2/curl-prior-knowledge", "tcp", tcp(lambda p: curl + ["--http2-prior-knowledge", curl_url(p, "http")]),
           curl_v, expect("http2"), "preface, SETTINGS, WINDOW_UPDATE and HEADERS in one flight", False)
    yield ("ssh/openssh", "tcp",
           tcp(lambda p: ["ssh", "-p", str(p), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                          "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5", "alice@127.0.0.1", "true"]),
           lambda: first_line(["ssh", "-V"], r"OpenSSH_\S+ [^,]*"),
           expect("ssh", None, (), version="2.0", software=ssh_software()),
           "the client's identification line; it waits for the server's before KEXINIT", False)
    dig = ["dig", "@127.0.0.1", "+tries=1", "+time=3"]
    yield ("dns/dig-udp", "udp", udp(lambda p: dig + ["-p", str(p), "example.com"]), dig_v,
           expect("dns", qname="example.com", qtype="A"),
           "A query with EDNS and a DNS cookie (dig's defaults)", False)
    yield ("dns/dig-tcp", "tcp", tcp(lambda p: dig + ["-p", str(p), "+tcp", "example.com"]), dig_v,
           expect("dns", qname="example.com", qtype="A"),
           "the same query over TCP, with its 2-byte length prefix", False)
    yield ("dns/dig-aaaa-dnssec", "udp", udp(lambda p: dig + ["-p", str(p), "example.com", "AAAA", "+dnssec"]),
           dig_v, expect("dns", qname="example.com", qtype="AAAA"), "AAAA query, EDNS with the DO bit", False)
    proxy = lambda scheme: lambda p: curl + ["-x", f"{scheme}://127.0.0.1:{p}", f"http://{sni}/"]  # noqa: E731
    yield ("socks4/curl", "tcp", tcp(proxy("socks4")), curl_v,
           expect("socks4", version="4", command="connect", dest="127.0.0.1:80"),
           f"SOCKS4 CONNECT; curl resolved {sni} itself (to 127.0.0.1, via the capture's hosts file)", False)
    yield ("socks4/curl-4a", "tcp", tcp(proxy("socks4a")), curl_v,
           expect("socks4", version="4a", command="connect", dest=f"{sni}:80"),
           "SOCKS4a: address 0.0.0.x and the host name after the user id", False)
    yield ("socks5/curl-5h", "tcp", tcp(proxy("socks5h")), curl_v, expect("socks5"),
           "the method-selection greeting (no auth); the request follows only after the server's choice", False)
    yield ("socks5/curl-5h-auth", "tcp",
           tcp(lambda p: curl + ["-x", f"socks5h://alice:secret@127.0.0.1:{p}", f"http://{sni}/"]), curl_v,
           expect("socks5"), "greeting offering no-auth and username/password", False)
    pg = lambda opts: lambda p: ["psql", f"host=127.0.0.1 port={p} user=alice dbname=shop {opts}",  # noqa: E731
                                 "-c", "select 1"]
    pg_env = {"PGCONNECT_TIMEOUT": "5", "PGPASSWORD": "", "PGSSLMODE": "", "PGGSSENCMODE": ""}
    yield ("postgres/psql-startup", "tcp", tcp(pg("sslmode=disable gssencmode=disable"), env=pg_env), psql_v,
           expect("postgres", request="startup", user="alice", database="shop"),
           "StartupMessage v3.0 (user alice, database shop)", False)
    yield ("postgres/psql-sslrequest", "tcp", tcp(pg("sslmode=require gssencmode=disable"), env=pg_env), psql_v,
           expect("postgres", request="ssl"), "SSLRequest (8 bytes)", False)
    yield ("postgres/psql-gssencrequest", "tcp", tcp(pg("sslmode=disable gssencmode=require"), env=pg_env), psql_v,
           expect("postgres", request="gssenc"), "GSSENCRequest (8 bytes)", False)
    rc = lambda *args: lambda p: ["redis-cli", "-h", "127.0.0.1", "-p", str(p), *args]  # noqa: E731
    yield ("redis/redis-cli-ping", "tcp", tcp(rc("PING")), redis_v, expect("redis", command="PING"),
           "RESP array PING", False)
    yield ("redis/redis-cli-resp3", "tcp", tcp(rc("-3", "PING")), redis_v, expect("redis", command="HELLO"),
           "HELLO 3 first (RESP3)", False)
    yield ("redis/redis-cli-auth", "tcp", tcp(rc("-a", "secret", "--no-auth-warning", "PING")), redis_v,
           expect("redis", command="AUTH"), "AUTH first", False)
    mq = lambda v: lambda p: ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(p), "-t", "t", "-m", "m",  # noqa: E731
                              "-V", v, "-i", "myclient"]
    for v, label, version in (("mqttv31", "3.1 (MQIsdp)", "3.1"), ("mqttv311", "3.1.1", "3.1.1"),
                              ("mqttv5", "5.0", "5")):
        yield (f"mqtt/mosquitto-pub-{v}", "tcp", tcp(mq(v)), mosq_v,
               expect("mqtt", version=version, client_id="myclient"),
               f"CONNECT, protocol {label}, client id myclient", False)
    yield ("openvpn/tcp", "tcp", tcp(lambda p: keys().argv(p, "tcp-client"), timeout=15), ovpn_v,
           expect("openvpn", opcode="hard-reset-client-v2", wrapping="none"),
           "P_CONTROL_HARD_RESET_CLIENT_V2 with its 2-byte length prefix", False)
    yield ("openvpn/udp", "udp", udp(lambda p: keys().argv(p, "udp"), timeout=15), ovpn_v,
           expect("openvpn", opcode="hard-reset-client-v2", wrapping="none"),
           "P_CONTROL_HARD_RESET_CLIENT_V2", False)
    yield ("openvpn/udp-tls-auth", "udp",
           udp(lambda p: keys().argv(p, "udp", ["--tls-auth", str(keys().dir / "ta.key"), "1"]), timeout=15),
           ovpn_v, expect("openvpn", opcode="hard-reset-client-v2", wrapping="tls-auth"),
           "--tls-auth: HMAC-SHA1 and packet id before the opcode's payload", False)
    yield ("openvpn/tcp-tls-auth", "tcp",
           tcp(lambda p: keys().argv(p, "tcp-client", ["--tls-auth", str(keys().dir / "ta.key"), "1"]), timeout=15),
           ovpn_v, expect("openvpn", opcode="hard-reset-client-v2", wrapping="tls-auth"), "--tls-auth over TCP", False)
    yield ("openvpn/udp-tls-crypt", "udp",
           udp(lambda p: keys().argv(p, "udp", ["--tls-crypt", str(keys().dir / "ta.key")]), timeout=15),
           ovpn_v, expect("openvpn", opcode="hard-reset-client-v2", wrapping="tls-crypt"),
           "--tls-crypt: the control packet is encrypted after the header", False)
    yield ("openvpn/tcp-tls-crypt-v2", "tcp",
           tcp(lambda p: keys().argv(p, "tcp-client", ["--tls-crypt-v2", str(keys().dir / "v2client.key")]),
               timeout=15),
           ovpn_v, expect("openvpn", opcode="hard-reset-client-v3", wrapping="tls-crypt-v2"),
           "--tls-crypt-v2: P_CONTROL_HARD_RESET_CLIENT_V3 with the wrapped client key",
           False)
    yield ("openvpn/udp-tls-crypt-v2", "udp",
           udp(lambda p: keys().argv(p, "udp", ["--tls-crypt-v2", str(keys().dir / "v2client.key")]), timeout=15),
           ovpn_v, expect("openvpn", opcode="hard-reset-client-v3", wrapping="tls-crypt-v2"),
           "--tls-crypt-v2 over UDP (P_CONTROL_HARD_RESET_CLIENT_V3)", False)
    yield ("wireguard/wireguard-go", "udp",
           udp(wireguard_argv(work), timeout=15, env={"WORK": str(work)}),
           lambda: first_line(["wireguard-go", "--version"], r"wireguard-go \S+") + ", "
           + first_line(["wg", "--version"], r"wireguard-tools \S+"),
           expect("wireguard"), "handshake initiation (type 1, 148 bytes), triggered by persistent-keepalive", False)
    yield ("quic/aioquic-h3", "udp", udp(lambda p: [py, "-c", PY_QUIC, str(p), "h3", sni]),
           lambda: py_version("aioquic"), expect("quic", sni, ["h3"], version="1"),
           "QUIC v1 Initial, padded to 1200 bytes; the ClientHello fits in it", False)
    yield ("quic/aioquic-many-alpn", "udp",
           udp(lambda p: [py, "-c", PY_QUIC, str(p), ",".join(QUIC_ALPNS), sni], datagrams=2),
           lambda: py_version("aioquic"), expect("quic", sni, QUIC_ALPNS, version="1"),
           "41 ALPN ids make the ClientHello too big for one Initial: its CRYPTO data spans two datagrams", False)
    yield ("quic/chromium", "udp",
           udp(lambda p: chromium_argv(work, p, f"https://{sni}/", quic=True), timeout=40, datagrams=2),
           chromium_v, expect("quic", sni, ["h3"], version="1"),
           "headless Chromium forced onto QUIC: X25519MLKEM768 key share, so the ClientHello spans two Initial "
           "datagrams; Chromium also scatters its CRYPTO frames within a packet", False)
    yield ("xmpp/slixmpp", "tcp", tcp(lambda p: [py, "-c", PY_XMPP, str(p), "starttls"]),
           lambda: py_version("slixmpp"), expect("xmpp", to="example.com"),
           "client stream header to example.com (STARTTLS path)",
           False)
    yield ("tls/slixmpp-direct-tls", "tcp", tcp(lambda p: [py, "-c", PY_XMPP, str(p), "direct-tls"]),
           lambda: py_version("slixmpp"), expect("tls", "example.com", version="1.3"),
           "XMPP over direct TLS (XEP-0368), slixmpp's first try by default: a ClientHello for the JID's "
           "domain, no ALPN", False)
    yield ("rdp/xfreerdp", "tcp",
           tcp(lambda p: ["xvfb-run", "-a", "xfreerdp", f"/v:127.0.0.1:{p}", "/u:alice", "/cert:ignore",
                          "/timeout:5000"], timeout=20),
           lambda: "xfreerdp (" + first_line(["dpkg-query", "-W", "-f", "${Package} ${Version}", "freerdp2-x11"]) + ")",
           expect("rdp", cookie="alice"),
           "X.224 Connection Request with cookie mstshash=alice and RDP_NEG_REQ", False)


# Why a client may connect and then send nothing.
SILENT_WHY = {
    "postgres/psql-gssencrequest": "libpq opens the connection, finds no Kerberos credential cache, and closes it "
    "without a GSSENCRequest; a KDC and a ticket would be needed",
}

HAND_MADE = [
    # (case, transport, files' bytes, expectation, note)
    ("junk/silent", "tcp", [b""], expect(None), "a client that connects and says nothing (zero-byte flight)"),
    ("junk/partial-g", "tcp", [b"G"], expect(None), "one byte, G: the start of many things, complete as none"),
    ("http/split-midline", "tcp", [b"GET /index.html HTTP/1.1\r\nHo", b"st: www.example.com\r\nAccept: */*\r\n\r\n"],
     expect("http", None, (), host=SNI, method="GET", version="1.1"),
     "an HTTP/1.1 request cut in the middle of its Host header over two reads"),
    ("redis/inline-ping", "tcp", [b"PING\r\n"], expect("redis", command="PING"),
     "an inline command, as `printf 'PING\\r\\n' | nc` or telnet sends it (typed by hand, no client library)"),
]


# --------------------------------------------------------------------------- writing

def write_files(name, transport, chunks):
    path = HERE / name
    path.parent.mkdir(parents=True, exist_ok=True)
    for old in path.parent.glob(path.name + ".*bin"):
        if re.fullmatch(re.escape(path.name) + r"(\.\d+)?\.bin", old.name):
            old.unlink()
    if transport == "tcp" and len(chunks) == 1:
        files = [path.with_name(path.name + ".bin")]
    else:
        files = [path.with_name(f"{path.name}.{i}.bin") for i in range(1, len(chunks) + 1)]
    for f, data in zip(files, chunks):
        f.write_bytes(data)
    return [str(f.relative_to(HERE)) for f in files]


def entry(name, transport, files, client, exp, note, hand_made):
    return {"case": name, "transport": transport, "files": files, "flight": len(files) > 1, "client": client,
            "expect": exp, "hand_made": hand_made, "note": note}


def run_captures(only):
    work = Path(tempfile.mkdtemp(prefix="corpus-"))
    setup_namespace(work)
    selected = lambda name: not only or any(name.startswith(o) for o in only)  # noqa: E731
    entries, skipped = {}, {}

    for name, transport, capture, version, exp, note, hand_made in cases(work):
        if not selected(name):
            continue
        started = time.monotonic()
        try:
            chunks = capture()
        except Skip as e:
            skipped[name] = str(e)
            print(f"SKIP {name}: {e}", flush=True)
            continue
        except (OSError, subprocess.CalledProcessError) as e:
            skipped[name] = f"client could not run: {e}"
            print(f"SKIP {name}: client could not run: {e}", flush=True)
            continue
        if not any(chunks):
            why = SILENT_WHY.get(name, "")
            skipped[name] = "client connected but sent nothing" + (f" ({why})" if why else "")
            print(f"SKIP {name}: {skipped[name]}", flush=True)
            continue
        files = write_files(name, transport, chunks)
        sizes = "+".join(str(len(c)) for c in chunks)
        if len(chunks) > 1:
            unit = "reads" if transport == "tcp" else "datagrams"
            note = (note + "; " if note else "") + f"arrived as {len(chunks)} {unit} ({sizes} bytes)"
        entries[name] = entry(name, transport, files, version(), exp, note, hand_made)
        print(f"ok   {name}: {sizes} bytes in {time.monotonic() - started:.1f} s", flush=True)

    random_file = HERE / "junk" / "random-4k.bin"
    for name, transport, chunks, exp, note in HAND_MADE:
        if selected(name):
            entries[name] = entry(name, transport, write_files(name, transport, chunks), "hand-made", exp, note, True)
    if selected("junk/random-4k"):
        random_file.parent.mkdir(parents=True, exist_ok=True)
        if not random_file.exists():  # generated once (os.urandom) and committed; kept on re-capture
            random_file.write_bytes(os.urandom(4096))
        for transport in ("tcp", "udp"):
            name = "junk/random-4k" + ("-udp" if transport == "udp" else "")
            entries[name] = entry(name, transport, ["junk/random-4k.bin"], "os.urandom (generated once, kept)",
                                  expect(None), "4 KiB of random bytes", True)

    old = json.loads(MANIFEST.read_text())["entries"] if MANIFEST.exists() and only else []
    merged = {e["case"]: e for e in old}
    merged.update(entries)
    # A case skipped this time but captured before keeps its old entry and files.
    manifest = {
        "about": "Real first flights of real clients; see README.md. Re-create with python3 tests/corpus/capture.py.",
        "entries": [merged[k] for k in sorted(merged)],
        "skipped": {**(json.loads(MANIFEST.read_text()).get("skipped", {}) if MANIFEST.exists() and only else {}),
                    **skipped},
    }
    for name in entries:
        manifest["skipped"].pop(name, None)
    MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n")
    total = sum(f.stat().st_size for f in HERE.rglob("*.bin"))
    print(f"\n{len(entries)} cases written, {len(skipped)} skipped; corpus files total {total} bytes")
    for name, why in skipped.items():
        print(f"  skipped {name}: {why}")
    shutil.rmtree(work, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-install", action="store_true", help="do not run apt-get / pip")
    parser.add_argument("--only", action="append", default=[], help="capture only cases starting with this")
    args = parser.parse_args()
    if os.environ.get("REFRACTIUM_CORPUS_NETNS") == "1":
        run_captures(args.only)
        return
    if os.geteuid() != 0:
        sys.exit("capture.py must run as root (it installs clients and uses a private network namespace)")
    if not args.no_install:
        install()
    argv = ["unshare", "--net", "--mount", "--propagation", "private", sys.executable, str(Path(__file__).resolve()),
            "--no-install"]
    for o in args.only:
        argv += ["--only", o]
    env = dict(os.environ, REFRACTIUM_CORPUS_NETNS="1")
    sys.exit(subprocess.run(argv, env=env).returncode)


if __name__ == "__main__":
    main()
