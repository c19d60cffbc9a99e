"""Batch reader of a BPF ring buffer: mmap the ring, decode all ready records at once with numpy.

Events are written with BPF_RB_NO_WAKEUP, so nothing wakes us: the agent polls. A record is an
8-byte header and n struct vnt_event (n = 1 for bcc builds, up to VNT_STAGE_EVENTS for libbpf's);
records of one size in a row are read as one array. The kernel maps the data pages twice in a row,
so a run that wraps is still contiguous.
"""

from __future__ import annotations

import mmap

import numpy as np

from vnettracer.agent.record import EVENT

BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
assert EVENT.itemsize % 8 == 0  # records (8-byte header + n events) are 8-aligned, with no padding


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
        self.consumed = 0  # events read so far

    def pending_bytes(self) -> int:
        return int(self._prod_pos[0]) - int(self._cons_pos[0])

    def read(self, max_events: int = 1 << 20) -> np.ndarray:
        """All committed events (up to about max_events), as a copy; advances the consumer position.

        A record holds one event (bcc builds) or a batch of them (libbpf builds stage events per
        CPU, bpf/trace.bpf.c): the ready part of the ring is read as runs of records of one size,
        each run one numpy view."""
        cons, prod = int(self._cons_pos[0]), int(self._prod_pos[0])
        parts, got = [], 0
        while cons < prod and got < max_events:
            taken, events = self._run(cons, prod, max_events - got)
            if not taken:
                break  # a producer has reserved but not committed yet: stop before it
            cons += taken
            parts.append(events)
            got += len(events)
        self._cons_pos[0] = cons
        self.consumed += got
        if not parts:
            return np.empty(0, EVENT)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _run(self, cons: int, prod: int, max_events: int) -> tuple[int, np.ndarray]:
        """Bytes and events of the committed records from `cons` that have the first one's size."""
        off = self.page + (cons & self.mask)
        first = int(np.frombuffer(self._prod, "<u4", count=1, offset=off)[0])
        if first & BUSY_BIT:
            return 0, np.empty(0, EVENT)
        size = first & ~(BUSY_BIT | DISCARD_BIT)
        if not size or size % EVENT.itemsize:
            raise RuntimeError(f"ring buffer record of {size} bytes; expected a multiple of {EVENT.itemsize}")
        per = size // EVENT.itemsize
        step = 8 + size  # a record: its header, then its events
        n = min((prod - cons) // step, max(1, -(-max_events // per)))
        hdr = np.frombuffer(self._prod, "<u4", count=n * step // 4, offset=off)[::step // 4]
        other = (hdr & ~np.uint32(DISCARD_BIT)) != size  # busy, or another size: the run ends there
        if other.any():
            n = int(np.argmax(other))
            hdr = hdr[:n]
        # the events as bytes, one row a record: copying those is a memcpy a row, where a copy
        # through a structured view goes field by field (11 times slower, docs/benchmarks.md)
        raw = np.frombuffer(self._prod, np.uint8, count=n * step, offset=off).reshape(n, step)[:, 8:]
        keep = (hdr & DISCARD_BIT) == 0
        raw = raw.copy() if keep.all() else raw[keep]  # a copy: the ring's space is given back
        return n * step, raw.view(EVENT).reshape(-1)

    def close(self) -> None:
        del self._cons_pos, self._prod_pos  # views must go before their mappings
        self._cons.close()
        self._prod.close()
