#!/usr/bin/env python3
"""Record what a client sends first, for detector test data (loopback only).

capture.py tcp PORT OUTFILE [TIMEOUT]: accept one connection on 127.0.0.1:PORT
and write every byte received until the client closes or TIMEOUT seconds
(default 3) pass without data.

capture.py udp PORT OUTFILE [TIMEOUT]: write the first datagram received on
127.0.0.1:PORT to OUTFILE, and up to two more to OUTFILE.1 and OUTFILE.2.
"""
import socket
import sys

proto, port, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 3.0

if proto == "tcp":
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen(1)
    server.settimeout(20)
    conn, _ = server.accept()
    conn.settimeout(timeout)
    received = b""
    try:
        while chunk := conn.recv(65536):
            received += chunk
    except socket.timeout:
        pass
    with open(out, "wb") as f:
        f.write(received)
else:
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", port))
    server.settimeout(20)
    received, _ = server.recvfrom(65536)
    with open(out, "wb") as f:
        f.write(received)
    server.settimeout(timeout)
    try:
        for i in (1, 2):
            datagram, _ = server.recvfrom(65536)
            with open(f"{out}.{i}", "wb") as f:
                f.write(datagram)
    except socket.timeout:
        pass
print(out, len(received))
