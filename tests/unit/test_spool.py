"""The agent's spool: compressed, read back exactly, and counted from its headers alone (what the
analysis sizes its memory by)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

from vnettracer.agent.record import EVENT
from vnettracer.agent.spool import Spool, events_in, iter_spool
from vnettracer.analysis.inputs import spooled_events
from vnettracer.analysis.synth import make_run


def traced_events(n: int, seed: int = 1) -> np.ndarray:
    """Events shaped like a tagged TCP run's: rising times, tags, a few flows and tracepoints."""
    rng = np.random.default_rng(seed)
    ev = np.zeros(n, EVENT)
    ev["ts_ns"] = 10**9 + np.cumsum(rng.integers(100, 5000, n))
    ev["packet_id"] = np.arange(n) // 10
    ev["flow_hash"] = rng.choice(rng.integers(0, 2**63, 4), n)
    ev["len"] = rng.choice([66, 1514, 65226], n)
    ev["tracepoint"] = np.arange(n) % 10 + 1
    ev["flags"], ev["l4proto"] = 1, 6
    return ev


def spool_of(folder, ev: np.ndarray, batch: int = 4096) -> Spool:
    s = Spool(folder)
    for i in range(0, len(ev), batch):
        s.write(ev[i:i + batch])
    s.close()
    return s


def test_spool_is_compressed_and_reads_back_exactly(tmp_path):
    ev = traced_events(100_000)
    s = spool_of(tmp_path, ev)
    files = sorted(tmp_path.glob("events-*.arrows"))
    assert sum(f.stat().st_size for f in files) < ev.nbytes / 2  # 32 bytes an event before
    back = list(iter_spool(tmp_path))
    for name in EVENT.names:
        assert np.array_equal(np.concatenate([b.column(name).to_numpy() for b in back]), ev[name]), name
    assert s.events == sum(events_in(f) for f in files) == len(ev)


def test_events_counted_up_to_the_last_complete_batch(tmp_path):
    """A file cut short (a killed agent, a truncated copy) counts what a reader can still read."""
    spool_of(tmp_path, traced_events(20_000), batch=1000)
    f = next(tmp_path.glob("events-*.arrows"))
    data = f.read_bytes()
    for cut in (len(data), len(data) - 1, len(data) * 2 // 3, len(data) // 3, 200, 7, 0):
        f.write_bytes(data[:cut])
        readable = 0
        try:
            for b in ipc.open_stream(str(f)):
                readable += b.num_rows
        except (pa.ArrowInvalid, OSError):  # cut within a message: what came before it was read
            pass
        assert events_in(f) == readable, cut
    f.write_bytes(b"\xff\xff\xff\xff\x10\x00\x00\x00" + bytes(range(16)) * 4)  # not a Message
    assert events_in(f) == 0


@pytest.mark.parametrize("packets", [3000, 20_000])
def test_analysis_sizes_a_run_by_its_events_not_its_bytes(tmp_path, packets):
    d = tmp_path / "run"
    make_run(d, packets=packets, seconds=5, seed=2, loss=0.0)
    rows = sum(b.num_rows for h in (d / "events").iterdir() for b in iter_spool(h))
    assert spooled_events(d) == rows > packets
