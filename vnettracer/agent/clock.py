"""The agent's clock pairs: (ktime, realtime) read together, into the spool's clock.jsonl; the
analysis turns each host's ktime stamps into its wall clock with them (analysis/clock.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from vnettracer.clockprobe import WallClock


class Clock:
    """(ktime, realtime) pairs: ktime is CLOCK_MONOTONIC, what bpf_ktime_get_ns() reads."""

    def __init__(self, path: Path, offset_ns: int = 0, drift_ppm: float = 0.0, t0_ns: int = 0):
        self.f = open(path, "a")
        self.wall = WallClock(offset_ns, drift_ppm, t0_ns)  # the lab's emulation, if any

    def record(self, tries: int = 5) -> None:
        """One pair: the raw realtime read between two monotonic reads, nothing else in between
        (the emulation is applied after), the tightest of a few tries; a preempted try is wide."""
        best: "tuple[int, int, int] | None" = None
        mono, real_clock = time.CLOCK_MONOTONIC, time.CLOCK_REALTIME
        get = time.clock_gettime_ns
        for _ in range(tries):
            m1 = get(mono)
            raw = get(real_clock)
            m2 = get(mono)
            if best is None or m2 - m1 < best[2] - best[0]:
                best = (m1, raw, m2)
        assert best is not None  # tries >= 1
        m1, raw, m2 = best
        real = self.wall.emulate(raw)
        self.offset_ns = real - (m1 + m2) // 2  # wall = ktime + offset, until the next pair
        self.f.write(json.dumps({"ktime_ns": (m1 + m2) // 2, "realtime_ns": real, "uncertainty_ns": m2 - m1}) + "\n")
        self.f.flush()

    def close(self) -> None:
        self.f.close()
