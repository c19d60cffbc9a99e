"""The local spool: events as Arrow IPC streams, rotated by size.

Stream format (not the file format) so that everything up to the last written batch stays
readable even if the agent is killed: nothing that reached the spool is lost.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from vnettracer.agent.columns import numbers
from vnettracer.agent.record import EVENT_FIELDS

SCHEMA = pa.schema([(name, pa.from_numpy_dtype(dt)) for name, dt in EVENT_FIELDS])
# LZ4 on each batch's buffers, where this pyarrow has it: lab spools shrink about 4x, and with them
# the page cache the agent fills beside the workload (bulk throughput, docs/benchmarks.md) and what
# collect fetches. zstd shrinks them 8x at twice the agent's CPU. Readers need no option.
WRITE_OPTIONS = ipc.IpcWriteOptions(compression="lz4" if pa.Codec.is_available("lz4") else None)


class Spool:
    """Events into rotated stream files. Bounded: past `max_bytes` in total, or with less than
    `min_free_bytes` left on the disk (or on ENOSPC), events are not written but counted in
    `dropped`, and `full` says why: the analysis reports them; nothing is lost silently."""

    def __init__(self, folder: Path, rotate_bytes: int = 64 << 20, prefix: str = "events",
                 max_bytes: int = 8 << 30, min_free_bytes: int = 256 << 20):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.rotate_bytes = rotate_bytes
        self.prefix = prefix
        self.seq = len(list(folder.glob(f"{prefix}-*.arrows")))  # a restarted agent appends new files
        self.events = 0
        self.dropped = 0
        self.full = ""
        self.max_bytes, self.min_free_bytes = max_bytes, min_free_bytes
        self.total_bytes = sum(f.stat().st_size for f in folder.glob(f"{prefix}-*.arrows"))
        self._sink: Any = None
        self._writer: Any = None  # the open file's ipc stream writer
        self._bytes = 0
        self._checked: int | None = None  # total_bytes when the disk's free space was last looked at

    def _room(self, nbytes: int) -> bool:
        if self.total_bytes + nbytes > self.max_bytes:
            self.full = f"spool cap of {self.max_bytes >> 20} MB reached"
        elif self._checked is None or self.total_bytes - self._checked >= 8 << 20:  # the disk, every 8 MB written
            self._checked = self.total_bytes
            st = os.statvfs(self.folder)
            if st.f_bavail * st.f_frsize - nbytes < self.min_free_bytes:
                self.full = f"disk full: less than {self.min_free_bytes >> 20} MB free on {self.folder}"
        return not self.full

    def _open(self) -> None:
        self.seq += 1
        self.path = self.folder / f"{self.prefix}-{self.seq:06d}.arrows"
        # buffered, and flushed after each batch: one write(2) a batch instead of one per buffer
        self._sink = pa.BufferedOutputStream(pa.OSFile(str(self.path), "wb"), buffer_size=1 << 20)
        self._writer = ipc.new_stream(self._sink, SCHEMA, options=WRITE_OPTIONS)
        self._bytes = 0

    def write(self, events: np.ndarray) -> None:
        if not len(events):
            return
        nbytes = events.nbytes  # the columns' bytes (fixed width, no nulls); batch.nbytes walks the buffers
        if self.full or not self._room(nbytes):
            self.dropped += len(events)
            return
        batch = pa.RecordBatch.from_arrays([numbers(events[name]) for name, _ in EVENT_FIELDS], schema=SCHEMA)
        try:
            if self._writer is None:
                self._open()
            self._writer.write_batch(batch)
            self._sink.flush()
        except OSError as e:  # ENOSPC and the like: this batch (and what follows) is counted, not lost silently
            self.full = f"write failed: {e.strerror or e}"
            self.dropped += len(events)
            return
        self._bytes += nbytes
        self.total_bytes += nbytes
        self.events += len(events)
        if self._bytes >= self.rotate_bytes:
            self._close_file()

    def _close_file(self) -> None:
        """Finish the current file. A disk that fills up here leaves a file cut short: read_spool
        reads it up to its last complete batch and names it, so it is marked full, not raised."""
        if self._writer is not None:
            for part in (self._writer, self._sink):
                try:
                    part.close()
                except OSError as e:
                    self.full = self.full or f"write failed: {e}"
            self._writer = self._sink = None

    def close(self) -> None:
        self._close_file()


def iter_spool(folder: Path, prefix: str = "events", problems: list[dict] | None = None) -> Iterator[pa.RecordBatch]:
    """Every record batch of a spool folder, in file order, one at a time (for runs larger than
    memory). A stream cut short (a killed agent's last file, a truncated copy) is read up to its
    last complete batch; a file of another schema is skipped. Each such file is appended to
    `problems` as {file, problem, bytes_unread} once it has been read."""
    for f in sorted(folder.glob(f"{prefix}-*.arrows")):
        problem, done, n = None, 0, 0
        size = f.stat().st_size
        with pa.OSFile(str(f), "rb") as src:
            try:
                reader = ipc.open_stream(src)
                if not reader.schema.equals(SCHEMA):
                    problem = f"schema is not the event schema ({reader.schema.names})"
                else:
                    for b in reader:
                        n += 1
                        done = src.tell()
                        yield b
                    done = size
            except (pa.ArrowInvalid, OSError) as e:
                problem = f"unreadable after {n} batches ({str(e).splitlines()[0][:120]})"
        if problem is not None and problems is not None:
            problems.append({"file": str(f), "problem": problem, "bytes_unread": size - done})


def read_spool(folder: Path, prefix: str = "events", problems: list[dict] | None = None) -> pa.Table:
    """Every event in a spool folder, in file order, as one table (see iter_spool)."""
    return pa.Table.from_batches(list(iter_spool(folder, prefix, problems)), SCHEMA)


def events_in(f: Path) -> int:
    """How many events a spool file holds (up to its last complete batch), from its messages'
    headers alone: the bodies, compressed, are skipped (Arrow's IPC stream format: a message is
    0xFFFFFFFF, the metadata's size, a flatbuffer Message, then a body of Message.bodyLength)."""
    n, size = 0, f.stat().st_size
    with open(f, "rb") as src:
        while True:
            head = src.read(8)
            if len(head) < 8:
                return n
            cont, meta_len = struct.unpack("<Ii", head)
            if cont != 0xFFFFFFFF or meta_len <= 0:
                return n  # the end-of-stream marker, or not this format
            meta = src.read(meta_len)
            if len(meta) < meta_len:
                return n  # cut short in its metadata
            try:
                msg = _Table(meta, struct.unpack_from("<I", meta)[0])
                body = msg.scalar(3, "<q")
                rows = msg.table(2).scalar(0, "<q") if msg.scalar(1, "<B") == 3 else 0  # a RecordBatch's length
            except struct.error:  # not a flatbuffer
                return n
            if body < 0 or src.tell() + body > size:
                return n  # cut short within this batch
            n += rows
            src.seek(body, 1)


class _Table:
    """A flatbuffer table: its fields through its vtable (default 0 where a field is absent)."""

    def __init__(self, buf: bytes, pos: int):
        self.buf, self.pos = buf, pos
        self.vt = pos - struct.unpack_from("<i", buf, pos)[0]

    def _at(self, i: int) -> int:
        if 4 + 2 * i >= struct.unpack_from("<H", self.buf, self.vt)[0]:
            return 0
        off = struct.unpack_from("<H", self.buf, self.vt + 4 + 2 * i)[0]
        return self.pos + off if off else 0

    def scalar(self, i: int, fmt: str) -> int:
        at = self._at(i)
        return struct.unpack_from(fmt, self.buf, at)[0] if at else 0

    def table(self, i: int) -> "_Table":
        at = self._at(i)
        return _Table(self.buf, at + struct.unpack_from("<I", self.buf, at)[0])
