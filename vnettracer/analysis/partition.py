"""Analysis out of core: runs with more events than fit in memory (a 60-second bulk run on 20 hooks
is hundreds of millions of events).

Pass 1 streams every host's spool batch by batch onto its own wall clock and splits the events by
packet key into partition files (numpy columns under a temporary folder): the top bits of the key,
so every sighting of a packet lands in the same partition and the partitions, in order, are in
key order. Pass 2 correlates each partition with the same code as the in-memory analysis
(correlate.correlate) and concatenates the per-path traces, which then equal the in-memory ones
row for row. Sightings off a path are kept only for the packets that left it (what tells a
diverted packet from a lost one). Pass 3, once clocks are corrected, reads the partitions again for
the per-tracepoint throughput; the run's span is each host's first and last time (kept by pass 1),
corrected. Memory: one partition's events plus the traces.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import resource
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd

from vnettracer.agent.record import IDENTITY_NAMES
from vnettracer.agent.spool import events_in, iter_spool
from vnettracer.analysis.clock import Line, ktime_to_wall, to_wall
from vnettracer.analysis.correlate import Elsewhere, PathTrace, correlate, key_time_order, packet_keys, rough_offsets, sample_step, shares, shift_hooks

COLUMNS = {"t_ns": np.int64, "packet_id": np.uint64, "flow_hash": np.uint64, "len": np.uint32,
           "tracepoint": np.uint16, "flags": np.uint8, "l4proto": np.uint8, "host": np.uint8}
IDENTITY_ORDER = [IDENTITY_NAMES[k] for k in sorted(IDENTITY_NAMES)] + ["trailer"]
# Events gathered from a spool before they are split into the partitions: enough for about 62 k
# events per partition file and write, 1 M to 4 M. A few partitions: 8 MB columns, reused from the
# heap flush after flush; at 4 M (32 MB columns, mapped afresh each time) the split of 5 M events
# into 4 took 1.4-3.2 s instead of 0.3 s, mostly page faults. Many partitions: fewer, larger writes
# (bench/analysis.py, docs/benchmarks.md).
FLUSH_EVENTS = (1_000_000, 62_500, 4_000_000)  # least, per partition, most
FD_MARGIN = 64  # open files left to the rest of the process while a host's partitions are written
BULKY = ("times", "lengths", "keys", "flows", "group", "tagged")  # a trace's per-packet arrays


class Partitions:
    """The run's events split by packet key into `n` partitions of numpy column files: one folder
    per host (written by a process each), a partition is the same file name in every folder."""

    def __init__(self, n: int, folder: Path | None = None):
        self.bits = max(1, (n - 1).bit_length())
        self.n = 1 << self.bits
        self.dir = Path(tempfile.mkdtemp(prefix="vnt-partitions-", dir=folder))
        self.events = 0
        self.first, self.last = _no_times()  # per host index: its events' least and greatest time
        self.samples: list[tuple] = []  # per host: the (key, t_ns, host) sample rough_shift reads

    def add_host(self, cols: dict[str, np.ndarray]) -> None:
        """One more host's events (the COLUMNS, t_ns on its wall clock) at once."""
        w = _HostWriter(self.dir / f"h{len(list(self.dir.glob('h*'))):03d}", self.bits)
        try:
            w.add(cols)
        finally:
            w.close()
        self.took(w.events, w.first, w.last, w.sample())

    def took(self, events: int, first: np.ndarray, last: np.ndarray, sample: tuple) -> None:
        """A writer's count, times and sample, once its host is written."""
        self.events += events
        np.minimum(self.first, first, out=self.first)
        np.maximum(self.last, last, out=self.last)
        self.samples.append(sample)

    def read(self, p: int, columns=COLUMNS) -> dict[str, np.ndarray]:
        return read_partition(self.dir, p, columns)

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class _HostWriter:
    """One host's events appended to their partitions' files under its own folder: n partitions x
    8 columns, held open while they fit well inside the process's open-file limit (a default of
    1024 holds 120 partitions), else each opened for its write (an open and a close cost 150-230
    us on the bench machine)."""

    def __init__(self, folder: Path, bits: int, step: int = 1):
        folder.mkdir()
        self.folder, self.bits, self.n = folder, bits, 1 << bits
        self.first, self.last = _no_times()
        self.step = np.uint64(step - 1)  # the sample for rough_shift: events whose key is a multiple of step
        self._sample: list[tuple] = []
        held = self.n * len(COLUMNS) + FD_MARGIN <= resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self._files = {(p, c): open(self._path(p, c), "wb") for p in range(self.n) for c in COLUMNS} if held else None
        self.events = 0

    def _path(self, p: int, c: str) -> Path:
        return self.folder / f"{p:04d}.{c}"

    def _write(self, p: int, c: str, data: memoryview) -> None:
        if self._files is not None:
            self._files[p, c].write(data)
            return
        with open(self._path(p, c), "ab") as f:
            f.write(data)

    def add(self, cols: dict[str, np.ndarray]) -> None:
        """Append events (the COLUMNS, t_ns already on the host's wall clock) to their partitions."""
        keys = packet_keys(cols)
        part = (keys >> np.uint64(64 - self.bits)).astype(np.uint16)  # bits <= 16
        pick = (keys & self.step) == 0
        self._sample.append((keys[pick], cols["t_ns"][pick], cols["host"][pick]))
        np.minimum.at(self.first, cols["host"], cols["t_ns"])
        np.maximum.at(self.last, cols["host"], cols["t_ns"])
        order = np.argsort(part, kind="stable")  # a radix sort for 16-bit keys
        bounds = np.searchsorted(part[order], np.arange(self.n + 1))
        for c in COLUMNS:
            col = cols[c][order]
            for p in range(self.n):
                if bounds[p + 1] > bounds[p]:
                    self._write(p, c, col[bounds[p]:bounds[p + 1]].data)  # a contiguous slice: no copy
        self.events += len(part)

    def sample(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Key, time and host of the events kept for rough_shift."""
        if not self._sample:
            return np.zeros(0, np.uint64), np.zeros(0, np.int64), np.zeros(0, np.uint8)
        keys, t, host = zip(*self._sample)
        return np.concatenate(keys), np.concatenate(t), np.concatenate(host)

    def close(self) -> None:
        """Every partition's files exist, empty where the host had none of its events."""
        if self._files is not None:
            for f in self._files.values():
                f.close()
            return
        for p in range(self.n):
            for c in COLUMNS:
                self._path(p, c).touch()


def read_partition(folder: Path, p: int, columns=COLUMNS) -> dict[str, np.ndarray]:
    """Partition p: every host's part of it, in host order."""
    hosts = sorted(folder.glob("h*"))
    return {c: np.concatenate([np.fromfile(h / f"{p:04d}.{c}", COLUMNS[c]) for h in hosts] or [np.zeros(0, COLUMNS[c])])
            for c in columns}


def split(run_dir: Path, clocks: dict[str, pd.DataFrame], hosts: list[str], n: int,
          unreadable: list[dict], progress: Callable[[str], None]) -> Partitions:
    """Pass 1: every host's spool, on its wall clock, into n partitions (a process per host, as
    many at once as there are cores, at most 4)."""
    parts = Partitions(n)
    # the rough offsets' sample, as the in-memory analysis takes it (the same step: the same packets)
    step = sample_step(max((sum(events_in(f) for f in (run_dir / "events" / h).glob("events-*.arrows")) for h in hosts),
                           default=0))
    jobs = [(run_dir / "events" / h, parts.dir / f"h{i:03d}", parts.bits, i, ktime_to_wall(clocks[h]) if h in clocks else None,
             step) for i, h in enumerate(hosts)]
    try:
        with _pool(len(jobs)) as run:
            for host, (*written, problems) in zip(hosts, run(_split_host, jobs)):
                parts.took(*written)
                unreadable += problems
                progress(f"analysis: {host}: {written[0]:,} events split into {parts.n} partitions")
    except BaseException:
        parts.remove()
        raise
    return parts


def _split_host(job: tuple) -> tuple[int, np.ndarray, np.ndarray, tuple, list[dict]]:
    """One host's spool into its partition files; (events, least and greatest time per host index,
    the sample for rough_shift, unreadable files)."""
    spool, folder, bits, host, fit, step = job
    out = _HostWriter(folder, bits, step)
    least, per_partition, most = FLUSH_EVENTS
    flush_at = min(most, max(least, per_partition << bits))
    problems: list[dict] = []
    pending: list = []
    try:
        for batch in iter_spool(spool, problems=problems):
            if fit is None:
                raise ValueError(f"{spool / 'clock.jsonl'} is missing: events of {spool.name} cannot be put on a clock")
            pending.append(batch)
            if sum(b.num_rows for b in pending) >= flush_at:
                _flush(out, pending, fit, host)
        if pending:
            _flush(out, pending, fit, host)
    finally:
        out.close()
    return out.events, out.first, out.last, out.sample(), problems


def _no_times() -> tuple[np.ndarray, np.ndarray]:
    """Least and greatest time per host index (the host column is uint8), before any event."""
    return np.full(256, np.iinfo(np.int64).max, np.int64), np.full(256, np.iinfo(np.int64).min, np.int64)


def _workers(jobs: int, workers: int | None = None) -> int:
    return min(workers or os.cpu_count() or 1, 4, jobs)


@contextlib.contextmanager
def _pool(jobs: int, workers: int | None = None) -> Iterator[Callable]:
    """map() over worker processes (one per core, at most 4), or in this process for one job."""
    workers = _workers(jobs, workers)
    if workers <= 1:
        yield map
        return
    ctx = multiprocessing.get_context("forkserver")
    # workers fork from a server that has this module (numpy, pandas) loaded: a pool then starts in
    # 0.03 s instead of 0.7 s (each new worker imported them again)
    ctx.set_forkserver_preload([__name__])
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        yield pool.map


def _flush(out: _HostWriter, batches: list, fit: tuple[int, int, float], host: int) -> None:
    cols = {c: np.concatenate([b.column(c).to_numpy() for b in batches]) for c in
            ("packet_id", "flow_hash", "len", "tracepoint", "flags", "l4proto")}
    cols["t_ns"] = to_wall(np.concatenate([b.column("ts_ns").to_numpy() for b in batches]), fit)
    cols["host"] = np.full(len(cols["t_ns"]), host, np.uint8)
    out.add(cols)
    batches.clear()


@dataclass
class OffPath:
    """Sightings off one path of the packets that left it or joined it, with their host (corrected
    later)."""

    keys: list
    times: list
    tracepoints: list
    hosts: list


def rough_shift(parts: Partitions, hosts: int, ref: int | None) -> np.ndarray:
    """Per host index, its clock's rough offset from the reference's (correlate.rough_offsets; 0
    where none), from the sample the split kept: the packets the in-memory analysis looks at, from
    every partition (one partition may hold none of a seldom used path's packets)."""
    shift = np.zeros(max(hosts, 1), np.int64)
    if ref is None or not parts.samples:
        return shift
    keys, t, host = (np.concatenate(c) for c in zip(*parts.samples))
    for h, off in rough_offsets(keys, t, host, ref, step=1).items():
        shift[h] = off
    return shift


def correlate_all(parts: Partitions, paths: dict[str, list[str]], ids: dict[str, int], window_ns: int,
                  progress: Callable[[str], None], workers: int | None = None, shift: np.ndarray | None = None,
                  hook_host: dict[str, list[int]] | None = None
                  ) -> tuple[dict[str, PathTrace], dict[str, OffPath], set[int]]:
    """Pass 2: per-path traces (paths: name -> tracepoint names) over all partitions; the
    sightings off each path of its packets that left it; the hosts (indexes) that have events.
    Partitions are correlated by `workers` processes (default: one per core, at most 4), their
    results merged in partition order.
    shift (per host index, rough_shift) moves a host's times by it for the matching only; hook_host
    (per path, each hook's host index) takes it off the traces again."""
    pieces: dict[str, list[PathTrace]] = {name: [] for name in paths}
    off = {name: OffPath([], [], [], []) for name in paths}
    with_events: set[int] = set()
    # worker processes hand their traces back as files (a pipe would copy them twice)
    moves = None
    if shift is not None and shift.any() and hook_host is not None:
        moves = (shift, {name: shift[np.asarray(hook_host[name], np.int64)] for name in paths})
    jobs = [(parts.dir, k, paths, ids, window_ns, _workers(parts.n, workers) > 1, moves)
            for k in range(parts.n)]
    with _pool(len(jobs), workers) as run:
        for k, res in enumerate(run(_correlate_partition, jobs)):
            if res is not None:
                traces, kept, got = res
                with_events |= got
                for name in paths:
                    pieces[name].append(traces[name])
                    for f, v in zip(("keys", "times", "tracepoints", "hosts"), kept[name]):
                        getattr(off[name], f).append(v)
            progress(f"analysis: correlated partition {k + 1}/{parts.n}")
    return {name: merge(ps, paths[name]) for name, ps in pieces.items()}, off, with_events


def _correlate_partition(job: tuple) -> tuple | None:
    """One partition: its events in (packet key, time) order once, then every path's trace and the
    off-path sightings of the packets that left it. In a worker process (to_files), the traces'
    arrays go to files beside the partition and come back as their paths."""
    folder, k, paths, ids, window_ns, to_files, moves = job
    ev = read_partition(folder, k)
    if not len(ev["t_ns"]):
        return None
    hosts = {int(h) for h in np.unique(ev["host"])}
    if moves is not None:  # hosts far off the reference's clock, moved near it for the matching
        ev["t_ns"] = ev["t_ns"] - moves[0][ev["host"]]
    keys = packet_keys(ev)
    order = key_time_order(keys, ev["t_ns"])  # once for every path: each takes its rows in this order
    ev = {c: a[order] for c, a in ev.items()}
    keys = keys[order]
    traces, kept = {}, {}
    for i, (name, tps) in enumerate(paths.items()):
        traces[name] = correlate(ev, name, tps, ids, window_ns, presorted=True)
        kept[name] = _off_path(ev, keys, traces[name], [ids[n] for n in tps])
        if moves is not None:  # back on each host's own wall clock
            shift_hooks(traces[name], moves[1][name])
            kept[name] = (kept[name][0], kept[name][1] + moves[0][kept[name][3]], *kept[name][2:])
        if to_files:
            for f in BULKY:
                path = folder / f"trace-{k:04d}-{i}.{f}.npy"
                np.save(path, getattr(traces[name], f))
                setattr(traces[name], f, str(path))
    return traces, kept, hosts


def _off_path(ev: dict[str, np.ndarray], keys: np.ndarray, pt: PathTrace, path_ids: list[int]) -> tuple:
    """The partition's sightings off the path (key, time, tracepoint, host) of the packets that left
    it before its last hook, or joined it after its first (correlate.from_other_branch)."""
    seen = pt.seen
    nh = seen.shape[1]
    last = np.where(seen.any(axis=1), nh - 1 - np.argmax(seen[:, ::-1], axis=1), -1)
    gone = np.unique(pt.keys[((last < nh - 1) & seen[:, 0]) | (~seen[:, 0] & (last >= 0))])
    on_path = np.zeros(256, bool)
    on_path[path_ids] = True
    rows = np.flatnonzero(~on_path[ev["tracepoint"]])
    if len(gone) and len(rows):
        i = np.minimum(np.searchsorted(gone, keys[rows]), len(gone) - 1)
        rows = rows[gone[i] == keys[rows]]
    else:
        rows = rows[:0]
    return keys[rows], ev["t_ns"][rows], ev["tracepoint"][rows], ev["host"][rows]


def merge(pieces: list[PathTrace], tracepoints: list[str]) -> PathTrace:
    """One path's trace from its partitions' (in partition order: key order, as in memory)."""
    if not pieces:
        return PathTrace("", tracepoints, np.zeros((0, len(tracepoints)), np.int64), np.zeros(0, np.uint32),
                         np.zeros(len(tracepoints), np.int64))
    counts: dict[str, int] = {}
    for pt in pieces:
        for k, v in pt.identity_counts.items():
            counts[k] = counts.get(k, 0) + v
    counts = {k: counts[k] for k in IDENTITY_ORDER if k in counts}  # the order identity_counts gives
    bulky = {f: _stack([getattr(p, f) for p in pieces]) for f in BULKY}
    return PathTrace(pieces[0].name, tracepoints, bulky["times"], bulky["lengths"],
                     np.sum([p.duplicates for p in pieces], axis=0), shares(counts), sum(p.id_repeats for p in pieces),
                     bulky["keys"], bulky["flows"], counts, bulky["group"], bulky["tagged"],
                     np.sum([p.renamed for p in pieces], axis=0))


def _stack(parts: list) -> np.ndarray:
    """Arrays (or .npy files a worker wrote) one after the other, copied one at a time into the
    result: at most one piece is mapped beside it."""
    def load(a):
        return np.load(a, mmap_mode="r") if isinstance(a, str) else a

    shapes = [load(a).shape for a in parts]
    first = load(parts[0])
    out = np.empty((sum(sh[0] for sh in shapes), *first.shape[1:]), first.dtype)
    i = 0
    for a, sh in zip(parts, shapes):
        out[i:i + sh[0]] = load(a)
        i += sh[0]
        if isinstance(a, str):
            os.unlink(a)
    return out


def elsewhere(off: OffPath, hosts: list[str], corrections: dict[str, Line]) -> Elsewhere:
    """The kept off-path sightings on the reference clock."""
    keys, times = np.concatenate(off.keys or [np.zeros(0, np.uint64)]), np.concatenate(off.times or [np.zeros(0, np.int64)])
    tps, hs = np.concatenate(off.tracepoints or [np.zeros(0, np.uint16)]), np.concatenate(off.hosts or [np.zeros(0, np.uint8)])
    times = correct(times, hs, hosts, corrections)
    return Elsewhere(keys, times, tps)


def correct(t: np.ndarray, host_idx: np.ndarray, hosts: list[str], corrections: dict[str, Line]) -> np.ndarray:
    """Times of these hosts' events on the reference clock (as analysis._correct does in memory)."""
    t = t.copy()
    for i, h in enumerate(hosts):
        if h in corrections:
            m = host_idx == i
            t[m] = corrections[h].to_reference(t[m])
    return t


def span_and_bins(parts: Partitions, hosts: list[str], corrections: dict[str, Line], bin_ns: int
                  ) -> tuple[int, int, np.ndarray, np.ndarray]:
    """Pass 3: the corrected span of the run, and per tracepoint and second, packets and bytes. The
    span is each host's first and last time corrected (a correction keeps the order of times)."""
    had = np.flatnonzero(parts.first <= parts.last)  # host indexes with events
    lo, hi = (int(correct(parts.first[had], had, hosts, corrections).min()),
              int(correct(parts.last[had], had, hosts, corrections).max())) if len(had) else (0, 0)
    nb = (hi - lo) // bin_ns + 1
    pkts = np.zeros(256 * nb, np.int64)
    byts = np.zeros(256 * nb, np.float64)
    for k in range(parts.n):
        c = parts.read(k, ("t_ns", "host", "tracepoint", "len"))
        t = correct(c["t_ns"], c["host"], hosts, corrections)
        cell = c["tracepoint"].astype(np.int64) * nb + (t - lo) // bin_ns
        pkts += np.bincount(cell, minlength=256 * nb)
        byts += np.bincount(cell, weights=c["len"].astype(np.float64), minlength=256 * nb)
    return lo, hi, pkts.reshape(256, nb), byts.reshape(256, nb)
