"""The local spool: events as Arrow IPC streams, rotated by size.

Stream format (not the file format) so that everything up to the last written batch stays
readable even if the agent is killed: nothing that reached the spool is lost.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from vnettracer.agent.record import EVENT

SCHEMA = pa.schema([(name, pa.from_numpy_dtype(EVENT.fields[name][0])) for name in EVENT.names])


class Spool:
    def __init__(self, folder: Path, rotate_bytes: int = 64 << 20, prefix: str = "events"):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.rotate_bytes = rotate_bytes
        self.prefix = prefix
        self.seq = len(list(folder.glob(f"{prefix}-*.arrows")))  # a restarted agent appends new files
        self.events = 0
        self._sink = self._writer = None
        self._bytes = 0

    def _open(self) -> None:
        self.seq += 1
        self.path = self.folder / f"{self.prefix}-{self.seq:06d}.arrows"
        self._sink = pa.OSFile(str(self.path), "wb")
        self._writer = ipc.new_stream(self._sink, SCHEMA)
        self._bytes = 0

    def write(self, events: np.ndarray) -> None:
        if not len(events):
            return
        if self._writer is None:
            self._open()
        cols = [pa.array(np.ascontiguousarray(events[name])) for name in EVENT.names]
        batch = pa.RecordBatch.from_arrays(cols, schema=SCHEMA)
        self._writer.write_batch(batch)
        self._bytes += batch.nbytes
        self.events += len(events)
        if self._bytes >= self.rotate_bytes:
            self._close_file()

    def _close_file(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._sink.close()
            self._writer = self._sink = None

    def close(self) -> None:
        self._close_file()


def read_spool(folder: Path, prefix: str = "events") -> pa.Table:
    """Every event in a spool folder, in file order (a stream cut short by a kill is read up to its
    last complete batch)."""
    tables = []
    for f in sorted(folder.glob(f"{prefix}-*.arrows")):
        batches = []
        with pa.OSFile(str(f), "rb") as src:
            try:
                reader = ipc.open_stream(src)
                for b in reader:
                    batches.append(b)
            except (pa.ArrowInvalid, OSError):
                pass  # truncated tail of a killed agent's last file
        if batches:
            tables.append(pa.Table.from_batches(batches, SCHEMA))
    return pa.concat_tables(tables) if tables else SCHEMA.empty_table()
