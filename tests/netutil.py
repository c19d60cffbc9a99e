"""Bounded TCP/UDP echo between lab namespaces, a tcpdump capture, and our TCP option read from a
scapy packet, for lab tests."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

SERVER = r"""
import socket, sys
proto, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.settimeout(15)
s.bind(("0.0.0.0", port))
if proto == "tcp":
    s.listen(1)
print("ready", flush=True)
for _ in range(n):  # bounded: n messages, 15 s idle timeout
    if proto == "tcp":
        c, _ = s.accept(); data = c.recv(65536); c.sendall(data); c.close()
    else:
        data, peer = s.recvfrom(65536); s.sendto(data, peer)
"""

CLIENT = r"""
import socket, sys
proto, addr, port, msg = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].encode()
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
s.settimeout(5)
if proto == "tcp":
    s.connect((addr, port)); s.sendall(msg); print(s.recv(65536).decode())
else:
    s.sendto(msg, (addr, port)); print(s.recvfrom(65536)[0].decode())
"""


def in_netns(ns: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def echo(client_ns: str, server_ns: str, addr: str, proto: str, port: int, msgs: list[str]) -> list[str]:
    """Send each message from client_ns to addr:port served in server_ns; return the replies."""
    srv = subprocess.Popen(in_netns(server_ns, sys.executable, "-c", SERVER, proto, str(port), str(len(msgs))),
                           stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout.readline().strip() == "ready"
        replies = []
        for m in msgs:
            r = subprocess.run(in_netns(client_ns, sys.executable, "-c", CLIENT, proto, addr, str(port), m),
                               capture_output=True, text=True, timeout=20)
            assert r.returncode == 0, r.stderr
            replies.append(r.stdout.strip())
        srv.wait(timeout=20)
        return replies
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()


class Capture:
    """tcpdump on one device of a namespace, written to a pcap; read back with tcpdump -r."""

    def __init__(self, ns: str, device: str, bpf_filter: str, pcap: Path):
        self.pcap = pcap
        self.proc = subprocess.Popen(in_netns(ns, "tcpdump", "-i", device, "--immediate-mode", "-U", "-n", "-w", str(pcap), bpf_filter),
                                     stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # tcpdump says "listening on" once the capture runs
            line = self.proc.stderr.readline()
            if "listening on" in line or not line:
                break

    def stop(self) -> list[str]:
        time.sleep(0.3)
        self.proc.terminate()
        self.proc.wait(timeout=10)
        r = subprocess.run(["tcpdump", "-r", str(self.pcap), "-nn"], capture_output=True, text=True)
        return r.stdout.splitlines()


def tag_id(tcp) -> int | None:
    """The packet id of our TCP option (kind 253, length 8, ExID 0x564e) in a scapy TCP layer, or None."""
    from vnettracer.agent.record import TCPOPT_EXID, TCPOPT_KIND

    for kind, value in tcp.options:
        if kind == TCPOPT_KIND:
            assert len(value) == 6 and int.from_bytes(value[:2], "big") == TCPOPT_EXID, value
            return int.from_bytes(value[2:], "big")
    return None
