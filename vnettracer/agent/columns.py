"""Arrow arrays built from their buffers, for the host side.

pyarrow.array() asks its pandas shim whether the input is a pandas object, and the shim imports
pandas where it is installed: in an agent, 0.24-1 s of CPU at its first spool write, that is in
the workload (seen in a profile of the lab's agents, docs/benchmarks.md). These build the same
arrays without it. The host package (vnettracer/hostpkg.py) does not need pandas.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def numbers(a: np.ndarray) -> pa.Array:
    """A 1-d numeric numpy array as an Arrow array (zero-copy when it is contiguous)."""
    a = np.ascontiguousarray(a)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("="))
    return pa.Array.from_buffers(pa.from_numpy_dtype(a.dtype), len(a), [None, pa.py_buffer(a)])


def strings(values: list[str]) -> pa.Array:
    """Python strings as an Arrow string array."""
    raw = [v.encode() for v in values]
    offsets = np.zeros(len(raw) + 1, np.int32)
    np.cumsum([len(r) for r in raw], out=offsets[1:])
    return pa.StringArray.from_buffers(len(raw), pa.py_buffer(offsets), pa.py_buffer(b"".join(raw)))
