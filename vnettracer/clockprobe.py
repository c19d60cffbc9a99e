"""Clock probes: an NTP-style exchange between the reference host and another host, over the
management network (never the traced data path). Never changes any clock.

The prober (on the reference host) sends (seq, t1); the responder stamps t2 on receipt and t3 on
reply; the prober stamps t4. Every stamp is that host's wall clock, with the lab's clock emulation
applied exactly as the agent applies it, so probes and traces speak of the same clocks.

Stamps come from the kernel where it gives them (SO_TIMESTAMPING software stamps: taken when the
packet is received by, or handed to, the network device), not from clock reads around sendto and
recv, which on a busy or emulated host are off by the scheduler's whims. A send stamp is known only
after the send: the prober replaces its own t1 locally; the responder sends its t3 in a follow-up
message (two-step, as PTP does). Where the kernel gives no stamp, the user-space reading stays.
"""

from __future__ import annotations

import csv
import select
import socket
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

MSG = struct.Struct("!IqqqB")  # seq, t1, t2, t3, kind (0 probe/reply, 1 bye, 2 follow-up: t3 from the kernel)
SO_TIMESTAMPING = 37  # also SCM_TIMESTAMPING: struct scm_timestamping, three timespecs, [0] = software
# TX_SOFTWARE, RX_SOFTWARE, SOFTWARE, OPT_ID (send stamps carry the datagram's number), OPT_TSONLY
TS_FLAGS = (1 << 1) | (1 << 3) | (1 << 4) | (1 << 7) | (1 << 11)
TIMESPECS = struct.Struct("qq" * 3)
EXT_ERR = struct.Struct("=IBBBBII")  # struct sock_extended_err: ee_data (last) is the OPT_ID number
IP_RECVERR = 11


class StampedSocket:
    """A UDP socket whose receive and send times come from the kernel (CLOCK_REALTIME, software
    stamps), each passed through the host's WallClock (the lab's emulation, if any)."""

    def __init__(self, clock: WallClock):
        self.clock = clock
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sent = 0  # datagrams sent: the OPT_ID number of the next one
        try:
            self.s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, TS_FLAGS)
            self.kernel = True
        except OSError:
            self.kernel = False

    @staticmethod
    def _stamp(ancdata) -> int | None:
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPING and len(data) >= TIMESPECS.size:
                sec, nsec = TIMESPECS.unpack_from(data)[:2]
                if sec or nsec:
                    return sec * 1_000_000_000 + nsec
        return None

    def recv(self, timeout: float) -> tuple[bytes, tuple, int] | None:
        """(data, peer, receive time) or None after `timeout`."""
        self.s.settimeout(timeout)
        try:
            data, anc, _, peer = self.s.recvmsg(64, 256)
        except socket.timeout:
            return None
        now = self.clock.now()
        real = self._stamp(anc)
        return data, peer, (self.clock.emulate(real) if real else now)

    def sendto(self, data: bytes, peer: tuple) -> int:
        """Send without waiting for a stamp; returns the datagram's number."""
        self.s.sendto(data, peer)
        self.sent += 1
        return self.sent - 1

    @staticmethod
    def _number(ancdata) -> int | None:
        for level, kind, data in ancdata:
            if level == socket.IPPROTO_IP and kind == IP_RECVERR and len(data) >= EXT_ERR.size:
                return EXT_ERR.unpack_from(data)[-1]
        return None

    def send(self, data: bytes, peer: tuple) -> int | None:
        """Send; the kernel's send time of this very datagram, or None when none comes within 50 ms
        (stamps of earlier datagrams still queued are skipped by number)."""
        number = self.sendto(data, peer)
        if not self.kernel:
            return None
        deadline = time.monotonic() + 0.05
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([self.s], [], [], left)[0]:  # a queued error (the stamp) reads as readable
                continue
            try:
                _, anc, _, _ = self.s.recvmsg(1, 256, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
            except BlockingIOError:
                time.sleep(0.0005)
                continue
            real = self._stamp(anc)
            if real and self._number(anc) == number:
                return self.clock.emulate(real)
        return None

    def close(self) -> None:
        self.s.close()


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
    s = StampedSocket(clock)
    s.s.bind((bind, port))
    if ready:
        ready()
    n, deadline = 0, time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        got = s.recv(min(left, 1.0))
        if got is None:
            continue
        data, peer, t2 = got
        seq, t1, _, _, kind = MSG.unpack(data)
        if kind == 1:
            break
        t3 = s.send(MSG.pack(seq, t1, t2, clock.now(), 0), peer)
        if t3 is not None:
            s.sendto(MSG.pack(seq, t1, t2, t3, 2), peer)  # follow-up: the reply's real send time
        n += 1
    s.close()
    return n


def _exchange(s: StampedSocket, seq: int, addr: str, port: int, clock: WallClock) -> tuple | None:
    """One probe: (t1, t2, t3, t4) with the kernel's stamps where there are, or None when lost."""
    t1_user = clock.now()
    t1 = s.send(MSG.pack(seq, t1_user, 0, 0, 0), (addr, port)) or t1_user
    reply = None
    deadline = time.monotonic() + 0.5
    while (left := deadline - time.monotonic()) > 0:
        got = s.recv(left if reply is None else min(left, 0.05))
        if got is None:
            break  # lost, or no follow-up (a responder without kernel stamps)
        data, _, t = got
        rseq, rt1, t2, t3, kind = MSG.unpack(data)
        if rseq != seq or rt1 != t1_user:
            continue  # a late answer to an earlier probe
        if kind == 0:
            reply = [t1, t2, t3, t]
        elif kind == 2 and reply is not None:
            reply[2] = t3
            break
    return tuple(reply) if reply else None


def probe(addr: str, port: int, count: int, interval_s: float, clock: WallClock, out: Path) -> int:
    """`count` exchanges (bounded), appended to `out` as CSV t1,t2,t3,t4; returns samples kept."""
    s = StampedSocket(clock)
    rows = []
    for seq in range(count):
        row = _exchange(s, seq, addr, port, clock)
        if row:
            rows.append(row)
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


def probe_all(targets: dict[str, str], port: int, count: int, interval_s: float, clock: WallClock,
              out: str) -> dict[str, int]:
    """Every target (name -> address) probed at once, a thread and a socket each, into the file
    `out` names with {name} replaced; samples kept per target. (One after the other, 15 targets
    took 30 s a phase on 16 hosts.)"""
    if len(targets) > 1 and "{name}" not in out:
        raise ValueError(f"{out}: several targets need {{name}} in the output file's name")

    def one(name: str) -> int:
        path = Path(out.replace("{name}", name))
        path.parent.mkdir(parents=True, exist_ok=True)
        return probe(targets[name], port, count, interval_s, clock, path)

    with ThreadPoolExecutor(max(1, len(targets))) as pool:
        return dict(zip(targets, pool.map(one, targets)))
