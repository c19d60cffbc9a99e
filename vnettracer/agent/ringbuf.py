"""Batch reader of a BPF ring buffer: mmap the ring, decode all ready records at once with numpy.

Events are written with BPF_RB_NO_WAKEUP, so nothing wakes us: the agent polls. Every record has
the same size (8-byte header + struct vnt_event), so the ready part of the ring is an array of
records; the kernel maps the data pages twice in a row, so a batch that wraps is still contiguous.
"""

from __future__ import annotations

import mmap
import struct

import numpy as np

from vnettracer.agent.record import EVENT, RECORD

BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30


class RingBuffer:
    def __init__(self, map_fd: int, size: int):
        if size & (size - 1):
            raise ValueError(f"ring buffer size {size} is not a power of two")
        self.size = size
        self.mask = size - 1
        self.page = mmap.PAGESIZE
        # consumer page (we write our position there), then producer page + data mapped twice
        self._cons = mmap.mmap(map_fd, self.page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._prod = mmap.mmap(map_fd, self.page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=self.page)
        self._rec = RECORD.itemsize
        self._want_len = EVENT.itemsize
        self.consumed = 0  # events read so far

    def _pos(self, m: mmap.mmap) -> int:
        return struct.unpack_from("<Q", m, 0)[0]

    def pending_bytes(self) -> int:
        return self._pos(self._prod) - self._pos(self._cons)

    def read(self, max_events: int = 1 << 20) -> np.ndarray:
        """All committed events (up to max_events), as a copy; advances the consumer position."""
        cons = self._pos(self._cons)
        prod = self._pos(self._prod)
        n = min((prod - cons) // self._rec, max_events)
        if n <= 0:
            return np.empty(0, EVENT)
        recs = np.frombuffer(self._prod, RECORD, count=n, offset=self.page + (cons & self.mask))
        hdr = recs["len"]
        busy = (hdr & BUSY_BIT) != 0
        if busy.any():  # a producer has reserved but not committed yet: stop before it
            n = int(np.argmax(busy))
            recs, hdr = recs[:n], hdr[:n]
        if n and not np.all((hdr & ~np.uint32(DISCARD_BIT)) == self._want_len):
            bad = hdr[(hdr & ~np.uint32(DISCARD_BIT)) != self._want_len][0]
            raise RuntimeError(f"ring buffer record of {bad & 0x3FFFFFFF} bytes; expected {self._want_len}")
        keep = (hdr & DISCARD_BIT) == 0
        events = recs["event"][keep].copy() if not keep.all() else recs["event"].copy()
        struct.pack_into("<Q", self._cons, 0, cons + n * self._rec)
        self.consumed += len(events)
        return events

    def close(self) -> None:
        self._cons.close()
        self._prod.close()
