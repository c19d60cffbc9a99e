"""Clock probes: an NTP-style exchange between the reference host and another host, over the
management network (never the traced data path). Never changes any clock.

The prober (on the reference host) sends (seq, t1); the responder stamps t2 on receipt and t3 on
reply; the prober stamps t4. Every stamp is that host's wall clock, with the lab's clock emulation
applied exactly as the agent applies it, so probes and traces speak of the same clocks.
"""

from __future__ import annotations

import csv
import socket
import struct
import time
from pathlib import Path

MSG = struct.Struct("!IqqqB")  # seq, t1, t2, t3, bye


class WallClock:
    """CLOCK_REALTIME, plus an emulated error: offset + drift * (t - t0) (lab only). The one place
    the emulation is computed: agents and probes both read wall time through it. t0_ns 0 means
    "the first reading"."""

    def __init__(self, offset_ns: int = 0, drift_ppm: float = 0.0, t0_ns: int = 0):
        self.offset_ns, self.drift_ppm, self.t0_ns = offset_ns, drift_ppm, t0_ns

    def emulate(self, real: int) -> int:
        if not (self.offset_ns or self.drift_ppm):
            return real
        self.t0_ns = self.t0_ns or real
        return real + self.offset_ns + int((real - self.t0_ns) * self.drift_ppm * 1e-6)

    def now(self) -> int:
        return self.emulate(time.clock_gettime_ns(time.CLOCK_REALTIME))


def respond(bind: str, port: int, seconds: float, clock: WallClock, ready=None) -> int:
    """Answer probes until a bye or `seconds` (bounded). `ready()` is called once bound.
    Returns the number answered."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((bind, port))
    if ready:
        ready()
    n, deadline = 0, time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        s.settimeout(min(left, 1.0))
        try:
            data, peer = s.recvfrom(64)
        except socket.timeout:
            continue
        t2 = clock.now()
        seq, t1, _, _, bye = MSG.unpack(data)
        if bye:
            break
        s.sendto(MSG.pack(seq, t1, t2, clock.now(), 0), peer)
        n += 1
    s.close()
    return n


def probe(addr: str, port: int, count: int, interval_s: float, clock: WallClock, out: Path) -> int:
    """`count` exchanges (bounded), appended to `out` as CSV t1,t2,t3,t4; returns samples kept."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.5)
    rows = []
    for seq in range(count):
        t1 = clock.now()
        s.sendto(MSG.pack(seq, t1, 0, 0, 0), (addr, port))
        try:
            data = s.recv(64)
        except socket.timeout:
            continue
        t4 = clock.now()
        rseq, rt1, t2, t3, _ = MSG.unpack(data)
        if rseq == seq and rt1 == t1:
            rows.append((t1, t2, t3, t4))
        time.sleep(interval_s)
    s.sendto(MSG.pack(0, 0, 0, 0, 1), (addr, port))  # tell the responder we are done
    s.close()
    new = not out.exists()
    with open(out, "a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(["t1", "t2", "t3", "t4"])
        w.writerows(rows)
    return len(rows)
