"""The local spool: events as Arrow IPC streams, rotated by size.

Stream format (not the file format) so that everything up to the last written batch stays
readable even if the agent is killed: nothing that reached the spool is lost.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from vnettracer.agent.columns import numbers
from vnettracer.agent.record import EVENT_FIELDS

SCHEMA = pa.schema([(name, pa.from_numpy_dtype(dt)) for name, dt in EVENT_FIELDS])


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
        self._writer = ipc.new_stream(self._sink, SCHEMA)
        self._bytes = 0

    def write(self, events: np.ndarray) -> None:
        if not len(events):
            return
        cols = [numbers(events[name]) for name, _ in EVENT_FIELDS]
        batch = pa.RecordBatch.from_arrays(cols, schema=SCHEMA)
        nbytes = events.nbytes  # the columns' bytes (fixed width, no nulls); batch.nbytes walks the buffers
        if self.full or not self._room(nbytes):
            self.dropped += len(events)
            return
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
