"""Batch reader of a BPF ring buffer: mmap the ring, decode all ready records at once with numpy.

Events are written with BPF_RB_NO_WAKEUP, so nothing wakes us: the agent polls. Every record has
the same size (8-byte header + struct vnt_event), so the ready part of the ring is an array of
records; the kernel maps the data pages twice in a row, so a batch that wraps is still contiguous.
"""

from __future__ import annotations

import mmap

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
        # positions as 8-byte views: a numpy store is one aligned 8-byte write. (struct.pack_into
        # writes byte by byte, and the kernel then sees torn consumer positions: spurious "ring full")
        self._cons_pos = np.frombuffer(self._cons, "<u8", count=1)
        self._prod_pos = np.frombuffer(self._prod, "<u8", count=1)
        self._rec = RECORD.itemsize
        self._want_len = EVENT.itemsize
        self.consumed = 0  # events read so far

    def pending_bytes(self) -> int:
        return int(self._prod_pos[0]) - int(self._cons_pos[0])

    def read(self, max_events: int = 1 << 20) -> np.ndarray:
        """All committed events (up to max_events), as a copy; advances the consumer position."""
        cons = int(self._cons_pos[0])
        prod = int(self._prod_pos[0])
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
        self._cons_pos[0] = cons + n * self._rec
        self.consumed += len(events)
        return events

    def close(self) -> None:
        del self._cons_pos, self._prod_pos  # views must go before their mappings
        self._cons.close()
        self._prod.close()
