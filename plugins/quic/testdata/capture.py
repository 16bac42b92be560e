"""Capture the first flight of an aioquic client (pip install aioquic; these
files came from aioquic 1.7.2): a UDP socket on 127.0.0.1 records the
datagrams the client sends; the handshake never completes. Datagrams that
arrive after a probe timeout (retransmissions) are left out.

Output: each datagram as a 2-byte big-endian length and its bytes.
Run: python3 capture.py (writes the aioquic_*.bin files here)."""

import asyncio
import socket
import threading
import time

from aioquic.asyncio import connect
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.packet import QuicProtocolVersion


def run(out, version, alpn, sni):
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    srv.settimeout(0.5)
    got = []

    def recv():
        end = time.time() + 1.5
        while time.time() < end:
            try:
                data, _ = srv.recvfrom(65535)
            except socket.timeout:
                continue
            got.append((time.time(), data))

    thread = threading.Thread(target=recv)
    thread.start()
    cfg = QuicConfiguration(is_client=True, alpn_protocols=alpn, server_name=sni)
    cfg.supported_versions = [version]

    async def main():
        try:
            async with connect("127.0.0.1", port, configuration=cfg):
                pass
        except Exception:
            pass

    try:
        asyncio.run(asyncio.wait_for(main(), 1.0))
    except Exception:
        pass
    thread.join()
    # Keep the first flight only: retransmissions come after a PTO (~200 ms).
    t0 = got[0][0]
    flight = [d for ts, d in got if ts - t0 < 0.1]
    print(out, [len(d) for d in flight])
    with open(out, "wb") as f:
        for d in flight:
            f.write(len(d).to_bytes(2, "big") + d)


if __name__ == "__main__":
    run("aioquic_v1_1dgram.bin", QuicProtocolVersion.VERSION_1, ["h3"], "www.example.com")
    run("aioquic_v2_1dgram.bin", QuicProtocolVersion.VERSION_2, ["h3"], "v2.example.org")
    # Many ALPN names make the ClientHello span two and three datagrams.
    alpn = ["h3-custom-protocol-%03d" % i for i in range(90)]
    run("aioquic_v1_2dgrams.bin", QuicProtocolVersion.VERSION_1, alpn[:40] + ["h3"], "two.example.net")
    run("aioquic_v1_3dgrams.bin", QuicProtocolVersion.VERSION_1, alpn + ["h3"], "three.example.net")
