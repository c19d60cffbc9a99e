"""The lab's delay element (netem does not exist on this kernel): a user-space forwarder in its own
namespace, spliced between one host's eth0 and the underlay wire. Every frame that arrives on
one side is sent out of the other `delay_us` later, in both directions, so the segment across the
wire gains a known delay each way (and the trace-based clock estimate, which needs the minimum
delay to be the same both ways, stays right).

    python -m vnettracer.lab.delay IF_A IF_B DELAY_US     (run by `lab up` inside vnt-delay)
"""

from __future__ import annotations

import heapq
import select
import socket
import sys
import time

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


def _open(ifname: str) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((ifname, 0))
    s.setblocking(False)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    return s


def forward(a: str, b: str, delay_us: float) -> None:
    sa, sb = _open(a), _open(b)
    other = {sa: sb, sb: sa}
    delay = int(delay_us * 1000)
    due: list[tuple[int, int, socket.socket, bytes]] = []
    seq = 0
    while True:
        now = time.monotonic_ns()
        while due and due[0][0] <= now:
            _, _, out, frame = heapq.heappop(due)
            try:
                out.send(frame)
            except OSError:
                pass  # e.g. a frame too big for the link: dropped, as a real element would
        timeout = max(0.0, (due[0][0] - time.monotonic_ns()) / 1e9) if due else 1.0
        ready, _, _ = select.select([sa, sb], [], [], timeout)
        for s in ready:
            while True:
                try:
                    frame, addr = s.recvfrom(65535)
                except BlockingIOError:
                    break
                if addr[2] == PACKET_OUTGOING:  # our own sends, seen again
                    continue
                heapq.heappush(due, (time.monotonic_ns() + delay, seq, other[s], frame))
                seq += 1


if __name__ == "__main__":
    forward(sys.argv[1], sys.argv[2], float(sys.argv[3]))
