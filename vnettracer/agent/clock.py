"""The agent's clock pairs: (ktime, realtime) read together, into the spool's clock.jsonl; the
analysis turns each host's ktime stamps into its wall clock with them (analysis/clock.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from vnettracer.clockprobe import WallClock

MAX_RATE = 1e-3  # a wall clock running more than 1000 ppm off ktime between two pairs was stepped


class Clock:
    """(ktime, realtime) pairs: ktime is CLOCK_MONOTONIC, what bpf_ktime_get_ns() reads."""

    def __init__(self, path: Path, offset_ns: int = 0, drift_ppm: float = 0.0, t0_ns: int = 0):
        self.f = open(path, "a")
        self.wall = WallClock(offset_ns, drift_ppm, t0_ns)  # the lab's emulation, if any
        self.offset_ns = 0  # wall - ktime at the last pair,
        self.ktime_ns: int | None = None  # whose ktime this is,
        self.rate = 0.0  # and how fast the offset moved since the pair before it
        self.unwritten = 0  # pairs clock.jsonl did not take (a full disk): kept in memory only
        self.error = ""

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
        k = (m1 + m2) // 2
        if self.ktime_ns is not None and k > self.ktime_ns:
            rate = (real - k - self.offset_ns) / (k - self.ktime_ns)
            self.rate = rate if abs(rate) < MAX_RATE else 0.0
        self.offset_ns, self.ktime_ns = real - k, k
        try:
            self.f.write(json.dumps({"ktime_ns": k, "realtime_ns": real, "uncertainty_ns": m2 - m1}) + "\n")
            self.f.flush()
        except OSError as e:  # the live offset above still holds; the analysis loses this pair
            self._unwritten(e)

    def offsets(self, ktime_ns: np.ndarray) -> np.ndarray:
        """wall - ktime at each of these ktimes: the last pair's offset carried on at the rate it
        moved since the pair before (a drifting clock: a constant offset until the next pair put
        up to drift x 1 s of error into live events, 20 us at the lab's 20 ppm)."""
        k = np.asarray(ktime_ns).astype(np.int64)
        return self.offset_ns + np.round((k - (self.ktime_ns or 0)) * self.rate).astype(np.int64)

    def close(self) -> None:
        try:
            self.f.close()
        except OSError as e:  # what the buffer still held could not be written
            self._unwritten(e)

    def _unwritten(self, e: OSError) -> None:
        self.unwritten += 1
        self.error = f"{type(e).__name__}: {e.strerror or e}"
