"""Line protocol for the three measurements (docs/storage.md), built column-wise.

- vnt_event   tags host, run, tracepoint; fields pid (packet id, u64 bits as int64), len, flags;
              time = event wall time (ns)
- vnt_segment tags run, path, segment; fields count, p50_us, p99_us, max_us, lost, clock_corrected;
              time = second
- vnt_agent   tags host, run; fields events, dropped, parse_fail, cpu_s, spooled; time = sample time

A point's identity in InfluxDB is (measurement, tags, time): writing it again overwrites it. Events
of one tracepoint that share a nanosecond would overwrite each other, so `unique_times` moves such
ties apart by 1 ns each (deterministically, before the batch is spooled).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from vnettracer.agent.columns import numbers, strings

if TYPE_CHECKING:  # the agent (traced hosts) has no pandas; only segments() takes a frame
    import pandas as pd


def escape_tag(s: str) -> str:
    return s.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def unique_times(key: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """ts with ties inside each key moved apart: the smallest strictly increasing times >= ts per key
    (in time order); untied points keep their time."""
    order = np.lexsort((ts, key))
    k, t = key[order], ts[order]
    if not ((k[1:] == k[:-1]) & (t[1:] <= t[:-1])).any():
        return ts
    i = np.arange(len(t), dtype=np.int64)
    fixed = t - i  # t'_i = i + max_{j<=i}(t_j - j), the max running within each key
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    for lo, hi in zip(starts, np.r_[starts[1:], len(k)]):  # one pass per tracepoint, not per event
        np.maximum.accumulate(fixed[lo:hi], out=fixed[lo:hi])
    fixed += i
    out = np.empty_like(ts)
    out[order] = fixed
    return out


def _pc():
    """pyarrow.compute, imported on first use: 40 ms of every agent's start, and an agent that sends
    no raw events never needs it."""
    import pyarrow.compute as pc

    return pc


def _join(cols: list) -> bytes:
    arr = _pc().binary_join_element_wise(*cols, strings([""])[0])  # arrays in, one array out
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32 if arr.type == pa.string() else np.int64)
    lo, hi = offsets[arr.offset], offsets[arr.offset + len(arr)]
    return arr.buffers()[2].to_pybytes()[lo:hi]


def _s(a: np.ndarray) -> pa.Array:
    """Numbers as decimal strings; small non-negative integers through a lookup table (4x faster)."""
    if a.dtype.kind == "u" and a.dtype.itemsize <= 2:
        uniq, inv = np.unique(a, return_inverse=True)
        return strings([str(int(v)) for v in uniq]).take(numbers(inv))
    return _pc().cast(numbers(a), pa.string())


def events(ev: np.ndarray, run: str, host: str, names: dict[int, str], wall_offset_ns: "int | np.ndarray") -> bytes:
    """vnt_event lines for a batch of agent events (vnettracer.agent.record.EVENT)."""
    if not len(ev):
        return b""
    tp = ev["tracepoint"]
    ts = unique_times(tp, ev["ts_ns"].astype(np.int64) + wall_offset_ns)
    uniq, inv = np.unique(tp, return_inverse=True)
    head = f"vnt_event,host={escape_tag(host)},run={escape_tag(run)},tracepoint="
    prefixes = strings([head + escape_tag(names.get(int(t), str(int(t)))) + " pid=" for t in uniq]).take(numbers(inv))
    lit = strings(["i,flow=", "i,len=", "i,flags=", "i ", "\n"])  # pa.scalar() would import pandas too
    return _join([prefixes, _s(ev["packet_id"].view(np.int64)), lit[0], _s(ev["flow_hash"].view(np.int64)),
                  lit[1], _s(ev["len"]), lit[2], _s(ev["flags"]), lit[3], _s(ts), lit[4]])


def agent(stats: dict, run: str, time_ns: int) -> bytes:
    """One vnt_agent line from the agent's stats (agent/agent.py Agent.stats)."""
    tps = stats.get("tracepoints", {}).values()
    total = {k: sum(int(t.get(k, 0)) for t in tps) for k in ("emitted", "dropped", "parse_fail")}
    return (f"vnt_agent,host={escape_tag(stats['host'])},run={escape_tag(run)} events={total['emitted']}i,"
            f"dropped={total['dropped']}i,parse_fail={total['parse_fail']}i,cpu_s={float(stats.get('cpu_s', 0))},"
            f"spooled={int(stats.get('spooled_events', 0))}i {time_ns}\n").encode()


def segments(per_second: pd.DataFrame, run: str) -> bytes:
    """vnt_segment lines from a frame with columns path, segment, second (ns), count, p50_us,
    p99_us, max_us, lost and, if there, clock_corrected (else true)."""
    if per_second.empty:
        return b""
    head = pa.array(("vnt_segment,path=" + per_second["path"].map(escape_tag) + ",run=" + escape_tag(run)
                     + ",segment=" + per_second["segment"].map(escape_tag) + " count=").to_numpy(str))
    f = {c: _s(per_second[c].to_numpy()) for c in ("count", "p50_us", "p99_us", "max_us", "lost", "second")}
    cc = per_second["clock_corrected"].to_numpy(bool) if "clock_corrected" in per_second else np.ones(len(per_second), bool)
    corrected = strings(["false", "true"]).take(numbers(cc.astype(np.int64)))
    return _join([head, f["count"], pa.scalar("i,p50_us="), f["p50_us"], pa.scalar(",p99_us="), f["p99_us"],
                  pa.scalar(",max_us="), f["max_us"], pa.scalar(",lost="), f["lost"], pa.scalar("i,clock_corrected="),
                  corrected, pa.scalar(" "), f["second"], pa.scalar("\n")])
