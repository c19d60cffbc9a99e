"""Clock probes on loopback: kernel stamps (t2 before t3 always: a send stamp is this datagram's own)
and the offset of the best exchange within microseconds of an emulated error."""

from __future__ import annotations

import csv
import threading
import time

from vnettracer import clockprobe


def test_probes_find_an_emulated_offset(tmp_path):
    truth = clockprobe.WallClock(1_500_000, 20.0)
    t = threading.Thread(target=clockprobe.respond, args=("127.0.0.1", 12391, 10, truth))
    t.start()
    time.sleep(0.3)
    out = tmp_path / "p.csv"
    n = clockprobe.probe("127.0.0.1", 12391, 100, 0.001, clockprobe.WallClock(), out)
    t.join(timeout=15)
    rows = [list(map(int, r)) for r in list(csv.reader(open(out)))[1:]]
    assert n == len(rows) >= 95
    assert all(t1 < t4 and t2 <= t3 for t1, t2, t3, t4 in rows)
    t1, t2, t3, t4 = min(rows, key=lambda r: (r[3] - r[0]) - (r[2] - r[1]))
    offset = ((t2 - t1) + (t3 - t4)) / 2
    expected = 1_500_000 + 20e-6 * (t2 - truth.t0_ns)
    assert abs(offset - expected) < 10_000, (offset, expected)
