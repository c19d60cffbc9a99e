"""Analysis of a run folder: events -> wall time -> clock correction -> correlation -> segments.

`analyze(run_dir)` returns the summary (what summary.json holds) and the per-path traces the
figures are drawn from. See docs/report.md.
"""

from __future__ import annotations

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from vnettracer.agent.spool import read_spool
from vnettracer.analysis import inputs, partition
from vnettracer.analysis.clock import Line, clock_steps, ktime_to_wall, offset_from_probes, offset_from_trace, to_wall
from vnettracer.analysis.correlate import (
    Elsewhere,
    PathTrace,
    correlate,
    decompose,
    from_other_branch,
    packet_keys,
    rank,
    rough_offsets,
    shift_hooks,
    where_seen,
    without,
)
from vnettracer.analysis.workloads import flow_table, per_workload
from vnettracer.errors import DataError, VntError
from vnettracer.spec import Experiment


@dataclass
class Analysis:
    summary: dict
    traces: dict[str, PathTrace]
    events: pd.DataFrame | None  # all events, with host, t_ns (corrected); None when analysed out of core
    hooks_host: dict[str, str]
    elsewhere: dict[str, Elsewhere] = field(default_factory=dict)  # per path: sightings off the path

    def raise_for_integrity(self) -> None:
        """After the report is written: events the run lost on the way (unreadable spool files, a
        full spool) fail the command (exit 4), naming each file and host."""
        i = self.summary["integrity"]
        lines = [f"{u['file']}: {u['problem']} ({u['bytes_unread']} bytes unread)" for u in i["unreadable"]]
        lines += [f"{h}: {d['spool']} events not written ({d['reason']})" for h, d in i["not_recorded"].items() if d["spool"]]
        if lines:
            raise DataError(f"{self.summary['run']}: events were lost before the analysis; the report's loss figures "
                            "may count packets whose events are missing", lines)


def not_recorded(run_dir: Path) -> dict[str, dict]:
    """Per host, events the agent saw but did not record (its stats.json): `spool` (not written:
    spool cap or disk full, with the reason) and `ring` (ring buffer full: the kernel side dropped)."""
    out = {}
    for f in sorted((run_dir / "events").glob("*/stats.json")):
        try:
            st = json.loads(f.read_text())
            ring = sum(int(c.get("dropped", 0)) for c in (st.get("tracepoints") or {}).values())
            spool = int(st.get("spool_dropped", 0))
        except (OSError, ValueError, TypeError, AttributeError):
            raise VntError(f"{f}: not a readable agent stats file") from None
        if ring or spool:
            out[f.parent.name] = {"spool": spool, "reason": st.get("spool_full", ""), "ring": ring}
    return out


def load_events(run_dir: Path, unreadable: list[dict] | None = None) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Events of every host (with a `host` column) and each host's clock pairs. Spool files that
    could not be read (whole or in part) are appended to `unreadable`."""
    frames, clocks = [], {}
    root = run_dir / "events"
    if not root.is_dir():
        raise VntError(f"{run_dir} has no events/ folder: was anything traced and collected?")
    for hd in sorted(p for p in root.iterdir() if p.is_dir()):
        t = read_spool(hd, problems=unreadable).to_pandas()
        cf = hd / "clock.jsonl"
        if len(t) and not cf.exists():
            raise VntError(f"{cf} is missing: events of {hd.name} cannot be put on a clock")
        if cf.exists():
            clocks[hd.name] = inputs.read_clock(cf)
        t["host"] = hd.name
        frames.append(t)
    ev = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return ev, clocks


def load_probes(run_dir: Path, rejected: dict[str, int] | None = None) -> dict[str, pd.DataFrame]:
    """Clock probe results (t1..t4 per sample) per host, if the clock stage ran: files
    clock/probes-<host>.<phase>.csv (before and after the workload), concatenated per host.
    Rows that cannot be a real exchange are dropped and counted per file in `rejected`."""
    d = run_dir / "clock"
    per: dict[str, list[pd.DataFrame]] = {}
    for f in sorted(d.glob("probes-*.csv")) if d.is_dir() else []:
        rows, bad = inputs.read_probes(f)
        if bad and rejected is not None:
            rejected[f.name] = bad
        per.setdefault(f.name.removeprefix("probes-").split(".")[0], []).append(rows)
    return {h: pd.concat(fs, ignore_index=True).sort_values("t1") for h, fs in per.items()}


def _workload_results(run_dir: Path) -> list[dict]:
    """Each workload client's own result, as the run recorded it in meta.json (if it did)."""
    try:
        res = json.loads((run_dir / "meta.json").read_text()).get("workloads")
    except (OSError, ValueError, AttributeError):
        return []
    return res if isinstance(res, list) else []


def _per_workload(exp: Experiment, traces: dict[str, PathTrace], results: list[dict], end: int, window_ns: int,
                  off: dict[str, Elsewhere], one_clock: dict[str, bool]) -> dict[str, dict]:
    try:
        wl = exp.workload_endpoints()
    except VntError:
        return {}
    table = flow_table(wl)
    return {p.name: per_workload(traces[p.name], wl, results, end, window_ns, table=table, elsewhere=off[p.name],
                                 one_clock=one_clock[p.name]) for p in exp.paths}


# Runs up to this many events are analysed in memory; larger ones out of core, which is also faster
# from about 1 M events on (bench/analysis.py: 10 M events in 4-5 s in 4 partitions, 25 s in memory)
IN_MEMORY_EVENTS = 2_000_000
PARTITION_EVENTS = 2_500_000  # events per partition out of core


def analyze(run_dir: Path, exp: Experiment | None = None, window_ns: int = 1_000_000_000,
            workload_results: list[dict] | None = None, partitions: int | None = None,
            progress: Callable[[str], None] | None = None) -> Analysis:
    """workload_results: the workloads' own results (default: meta.json's). partitions: 0 analyses
    in memory, N out of core in N partitions (analysis/partition.py); None picks by the run's size.
    progress: told what a long (out of core) analysis is doing."""
    run_dir = Path(run_dir)
    if exp is None:
        exp = inputs.read_spec(run_dir)
    if partitions is None:
        est = inputs.spooled_events(run_dir)
        partitions = 0 if est <= IN_MEMORY_EVENTS else -(-est // PARTITION_EVENTS)
    if partitions:
        return _analyze_partitioned(run_dir, exp, window_ns, workload_results, partitions, progress or (lambda s: None))
    unreadable: list[dict] = []
    ev, clocks = load_events(run_dir, unreadable)
    if ev.empty:
        raise VntError(f"{run_dir}: no events were traced")
    ids = exp.tracepoint_ids
    host_of = {tp.name: tp.host for tp in exp.tracepoints}

    # 1. each host's ktime -> its own wall clock
    on_own_clocks(ev, clocks)

    # 2. correlate on each host's wall clock (one far off the reference's moved near it for this only)
    traces = correlate_paths(exp, ev, window_ns)

    # 3. clocks: every host against the reference (Experiment.reference_host), corrected
    rejected: dict[str, int] = {}
    traced = set(ev["host"].unique())
    clocks_ = _estimate_clocks(exp, traced, traces, host_of, load_probes(run_dir, rejected))
    for host, line in clocks_.applied.items():
        _correct(exp, ev, traces, host_of, host, line)

    # 4. decompose, throughput
    keys = packet_keys(ev)
    off = {p.name: Elsewhere.of(ev, keys, [ids[t] for t in p.tracepoints]) for p in exp.paths}
    t = ev["t_ns"].to_numpy(np.int64)
    span = (int(t.min()), int(t.max()))
    bins = _bins(t, ev["tracepoint"].to_numpy(np.int64), ev["len"].to_numpy(np.float64), span)
    summary = _summary(run_dir, exp, traces, off, span, int(len(ev)), bins, window_ns, workload_results,
                       clocks_, {"unreadable": unreadable, "probes_rejected": rejected, "clock_steps": _stepped(clocks),
                                 "silent": silent_hosts(run_dir, exp, traced)})
    return Analysis(summary, traces, ev, host_of, off)


def on_own_clocks(ev: pd.DataFrame, clocks: dict[str, pd.DataFrame]) -> None:
    """Column t_ns: each event's ktime on its own host's wall clock (its clock pairs fitted)."""
    ev["t_ns"] = np.int64(0)
    for host, pairs in clocks.items():
        m = (ev["host"] == host).to_numpy()
        ev.loc[m, "t_ns"] = to_wall(ev.loc[m, "ts_ns"].to_numpy(np.uint64), ktime_to_wall(pairs))


def _analyze_partitioned(run_dir: Path, exp: Experiment, window_ns: int, workload_results: list[dict] | None,
                         n: int, progress: Callable[[str], None]) -> Analysis:
    """The same analysis out of core (analysis/partition.py), for runs larger than memory."""
    hosts = sorted(p.name for p in (run_dir / "events").iterdir() if p.is_dir()) if (run_dir / "events").is_dir() else []
    if not hosts:
        raise VntError(f"{run_dir} has no events/ folder: was anything traced and collected?")
    clocks = {h: inputs.read_clock(run_dir / "events" / h / "clock.jsonl") for h in hosts
              if (run_dir / "events" / h / "clock.jsonl").exists()}
    unreadable: list[dict] = []
    try:
        parts = partition.split(run_dir, clocks, hosts, n, unreadable, progress)
    except ValueError as e:
        raise VntError(str(e)) from None
    try:
        if not parts.events:
            raise VntError(f"{run_dir}: no events were traced")
        host_of = {tp.name: tp.host for tp in exp.tracepoints}
        index = {h: i for i, h in enumerate(hosts)}
        shift = partition.rough_shift(parts, len(hosts), index.get(exp.reference_host))
        hook_host = {p.name: [index.get(host_of[n], 0) for n in p.tracepoints] for p in exp.paths}
        traces, kept, with_events = partition.correlate_all(
            parts, {p.name: p.tracepoints for p in exp.paths}, exp.tracepoint_ids, window_ns, progress,
            shift=shift, hook_host=hook_host)
        rejected: dict[str, int] = {}
        traced = {hosts[i] for i in with_events}
        clocks_ = _estimate_clocks(exp, traced, traces, host_of,
                                   load_probes(run_dir, rejected))
        for host, line in clocks_.applied.items():
            _correct_traces(exp, traces, host_of, host, line)
        off = {name: partition.elsewhere(o, hosts, clocks_.applied) for name, o in kept.items()}
        lo, hi, pkts, byts = partition.span_and_bins(parts, hosts, clocks_.applied, BIN_NS)
        events = parts.events
    finally:
        parts.remove()
    summary = _summary(run_dir, exp, traces, off, (lo, hi), events, (pkts, byts), window_ns, workload_results,
                       clocks_, {"unreadable": unreadable, "probes_rejected": rejected, "clock_steps": _stepped(clocks),
                                 "silent": silent_hosts(run_dir, exp, traced)})
    return Analysis(summary, traces, None, host_of, off)


def silent_hosts(run_dir: Path, exp: Experiment, traced: set[str]) -> dict[str, str]:
    """Hosts with tracepoints that gave no event (traced: the hosts that did): their agent traced
    nothing, or its spool never reached the run folder. Packets into their hooks count as lost."""
    out = {}
    for host in dict.fromkeys(tp.host for tp in exp.tracepoints):
        if host not in traced:
            out[host] = "no events" if (run_dir / "events" / host).is_dir() else "no events folder (not collected?)"
    return out


def _stepped(clocks: dict[str, pd.DataFrame]) -> dict[str, list[dict]]:
    """Per host whose wall clock was stepped during the run, where and by how much."""
    return {h: steps for h, pairs in clocks.items() if len(pairs) and (steps := clock_steps(pairs))}


def _summary(run_dir: Path, exp: Experiment, traces: dict[str, PathTrace], off: dict[str, Elsewhere],
             span: tuple[int, int], events: int, bins: tuple[np.ndarray, np.ndarray], window_ns: int,
             workload_results: list[dict] | None, clocks: Clocks, integrity: dict) -> dict:
    """What summary.json holds: decomposition per path (and per workload), throughput, with the
    clocks' record and what was unreadable or rejected on the way in."""
    ids = exp.tracepoint_ids
    names = {v: k for k, v in ids.items()}
    end = span[1]
    branch = _own_packets(exp, traces, off, window_ns, names)
    on = clock_of(clocks.applied, exp.reference_host)
    one = ends_on_one_clock(exp, on)
    # paths in threads: numpy's sorts and reductions run without the GIL (0.8 -> 0.45 s for 10 M events)
    with ThreadPoolExecutor(min(len(exp.paths), os.cpu_count() or 1) or 1) as pool:
        done = pool.map(lambda p: decompose(traces[p.name], end, window_ns, elsewhere=off[p.name], names=names,
                                            one_clock=one[p.name]), exp.paths)
        paths = {p.name: d for p, d in zip(exp.paths, done)}
    results = _workload_results(run_dir) if workload_results is None else workload_results
    for name, per in _per_workload(exp, traces, results, end, window_ns, off, one).items():
        paths[name]["workloads"] = per
    for name, came in branch.items():
        paths[name]["other_branch"] = came
    mark_clocks(paths, {tp.name: tp.host for tp in exp.tracepoints}, on)
    return {"experiment": exp.name, "run": run_dir.name, "events": events, "start_ns": span[0], "end_ns": end,
            "sampling": exp.tracer.sampling, "clock": clocks.told_at(span[0]), "paths": paths, "throughput": _throughput(*bins, names),
            "integrity": {**integrity, "not_recorded": not_recorded(run_dir)}}


def _own_packets(exp: Experiment, traces: dict[str, PathTrace], off: dict[str, Elsewhere], window_ns: int,
                 names: dict[int, str]) -> dict[str, dict[str, int]]:
    """Each path's trace without the packets of another branch that share its later hooks
    (correlate.from_other_branch); per path, where those came from: tracepoint -> packets."""
    out = {}
    for p in exp.paths:
        came = from_other_branch(traces[p.name], off[p.name], window_ns)
        out[p.name] = where_seen(came, off[p.name], names)
        if out[p.name]:
            traces[p.name] = without(traces[p.name], came >= 0)
    return out


@dataclass
class Clocks:
    """The clocks' record (summary.json "clock"), the line applied per host, and every estimate,
    whose offset is told at the run's start once the corrected span is known (told_at)."""
    record: dict
    applied: dict[str, Line]
    lines: dict[tuple[str, str], Line]

    def told_at(self, start_ns: int) -> dict:
        start = np.array([start_ns], np.int64)  # reference time: the lines are functions of it
        for (host, kind), line in self.lines.items():
            self.record["hosts"][host][kind]["offset_at_start_ns"] = float(line.at(start)[0])
        return self.record


def _estimate_clocks(exp: Experiment, hosts: set[str], traces: dict[str, PathTrace],
                     host_of: dict[str, str], probes: dict[str, pd.DataFrame]) -> Clocks:
    """Every host's offset and drift against the reference, from the trace and from probes; the
    report's record of both, and the line to apply per host."""
    ref = exp.reference_host
    clocks = Clocks({"reference": ref, "method": exp.report.clock, "hosts": {}}, {}, {})
    by_probes = {h: line for h in hosts - {ref} if (line := offset_from_probes(probes.get(h))) is not None}
    by_traces = _trace_lines(exp, traces, host_of, hosts, by_probes)
    for host in sorted(hosts - {ref}, key=_natural):
        by_trace, by_probe = by_traces.get(host), by_probes.get(host)
        want = by_trace if exp.report.clock == "trace" else by_probe
        applied = want or by_trace or by_probe
        rep: dict[str, Any] = {"applied": applied.method if applied else "none"}
        for kind, line in (("trace", by_trace), ("probe", by_probe)):
            rep[kind] = line.as_dict() if line else None
            if line:
                clocks.lines[host, kind] = line
        if by_trace and by_probe:
            t = np.array([by_trace.t0_ns], np.int64)
            rep["disagreement_ns"] = float(by_trace.at(t)[0] - by_probe.at(t)[0])
            # each is within its bound of the truth, so they cannot differ by more than both bounds
            # unless a timestamp is wrong (a clock stepped, hooks on unrelated paths)
            rep["consistent"] = abs(rep["disagreement_ns"]) <= (by_trace.bound_ns or 0) + (by_probe.bound_ns or 0)
        clocks.record["hosts"][host] = rep
        if applied:
            clocks.applied[host] = applied
    return clocks


def correlate_paths(exp: Experiment, ev: pd.DataFrame, window_ns: int) -> dict[str, PathTrace]:
    """Every path's trace. A host whose clock is far off the reference's (correlate.rough_offsets:
    more than 10 ms) is matched on its times moved by that offset; the traces keep each host's own
    wall clock, for the clock estimates that follow."""
    ids = exp.tracepoint_ids
    host, names = pd.factorize(ev["host"])  # np.unique of 10 M strings: 8 s; this: 0.3
    t = ev["t_ns"].to_numpy(np.int64)
    ref = exp.reference_host
    rough = rough_offsets(packet_keys(ev), t, host, int(names.get_loc(ref))) if ref in names else {}
    if not rough:
        return {p.name: correlate(ev, p.name, p.tracepoints, ids, window_ns) for p in exp.paths}
    shift = np.zeros(len(names), np.int64)
    shift[list(rough)] = list(rough.values())
    cols = [c for c in ("tracepoint", "packet_id", "flow_hash", "len", "flags", "l4proto") if c in ev]
    moved = {**{c: ev[c].to_numpy() for c in cols}, "t_ns": t - shift[host]}
    by_host = dict(zip(names.tolist(), shift.tolist()))
    host_of = {tp.name: tp.host for tp in exp.tracepoints}
    traces = {p.name: correlate(moved, p.name, p.tracepoints, ids, window_ns) for p in exp.paths}
    for p in exp.paths:
        shift_hooks(traces[p.name], np.array([by_host.get(host_of[n], 0) for n in p.tracepoints], np.int64))
    return traces


def window(exp: Experiment, ev: pd.DataFrame, window_ns: int = 1_000_000_000) -> dict[str, dict]:
    """Per path, its decomposition over a window of events already on each host's wall clock (what
    `vnettracer top` shows): correlated, cross-host clocks corrected from the window's own trace,
    decomposed. ev: columns host, tracepoint (id), t_ns, packet_id, flow_hash, len, flags."""
    ev = ev.copy()
    host_of = {tp.name: tp.host for tp in exp.tracepoints}
    traces = correlate_paths(exp, ev, window_ns)
    ref = exp.reference_host
    lines = _trace_lines(exp, traces, host_of, set(ev["host"]))
    for host, line in lines.items():
        _correct(exp, ev, traces, host_of, host, line)
    end = int(ev["t_ns"].max()) if len(ev) else 0
    ids, keys = exp.tracepoint_ids, packet_keys(ev)
    off = {p.name: Elsewhere.of(ev, keys, [ids[t] for t in p.tracepoints]) for p in exp.paths}
    _own_packets(exp, traces, off, window_ns, {v: k for k, v in ids.items()})
    on = clock_of(lines, ref)
    one = ends_on_one_clock(exp, on)
    out = {p.name: decompose(traces[p.name], end, window_ns, one_clock=one[p.name]) for p in exp.paths}
    mark_clocks(out, host_of, on)
    return out


def clock_of(lines: dict[str, Line], ref: str) -> dict[str, str]:
    """Whose clock each host's corrected times are on: the reference's, or that of the first host
    of its chain (anchor "none": pairs no chain joins to the reference). A host without a line (too
    few packets both ways, no probes) keeps its own."""
    return {h: (line.via[0] if line.anchor == "none" else ref) for h, line in lines.items()}


def mark_clocks(paths: dict[str, dict], host_of: dict[str, str], on: dict[str, str]) -> None:
    """Per segment, and per path for its end to end: clock_corrected, whether both ends' times are
    on one clock (else they hold the clocks' offset); shares and the dominant segment then among
    those that are (correlate.rank)."""
    for p in paths.values():
        for s in p["segments"]:
            s["clock_corrected"] = same_clock(host_of, on, s["from"], s["to"])
        p["clock_corrected"] = same_clock(host_of, on, p["tracepoints"][0], p["tracepoints"][-1])
        p["dominant"] = rank(p["segments"])


def same_clock(host_of: dict[str, str], on: dict[str, str], a: str, b: str) -> bool:
    """Whether tracepoints a and b have their times on one clock (on: clock_of)."""
    ha, hb = host_of[a], host_of[b]
    return on.get(ha, ha) == on.get(hb, hb)


def ends_on_one_clock(exp: Experiment, on: dict[str, str]) -> dict[str, bool]:
    """Per path, whether its first and last hooks' times are on one clock (on: clock_of)."""
    host_of = {tp.name: tp.host for tp in exp.tracepoints}
    return {p.name: same_clock(host_of, on, p.tracepoints[0], p.tracepoints[-1]) for p in exp.paths}


def _correct(exp: Experiment, ev: pd.DataFrame, traces: dict[str, PathTrace], host_of: dict[str, str], host: str,
             line: Line) -> None:
    """Put one host's events (and its columns of every path) on the reference's clock:
    corrected = own wall clock - (own - reference)."""
    m = (ev["host"] == host).to_numpy()
    t = ev.loc[m, "t_ns"].to_numpy(np.int64)
    ev.loc[m, "t_ns"] = line.to_reference(t)
    _correct_traces(exp, traces, host_of, host, line)


def _correct_traces(exp: Experiment, traces: dict[str, PathTrace], host_of: dict[str, str], host: str,
                    line: Line) -> None:
    """One host's columns of every path on the reference's clock."""
    for p in exp.paths:
        pt = traces[p.name]
        for j, name in enumerate(p.tracepoints):
            if host_of[name] == host:
                col = pt.times[:, j]
                seen = col >= 0
                col[seen] = line.to_reference(col[seen])


def _trace_lines(exp: Experiment, traces: dict[str, PathTrace], host_of: dict[str, str],
                 hosts: set[str], anchors: dict[str, Line] | None = None) -> dict[str, Line]:
    """Every host's trace-based line against the reference: from the segments between the two where
    paths join them both ways, else chained through hosts that are (paths host1 <-> host2 and
    host2 <-> host3 give host3's clock through host2's, a proxy's in the middle). Breadth first:
    the shortest chain is taken. Hosts no chain joins to the reference (pairs that talk only among
    themselves) are chained from one of them, one with an anchor (its probes' line) first: their
    lines follow the anchor, or without one are against that host's clock (Line.anchor)."""
    ref = exp.reference_host
    anchors = anchors or {}
    found: dict[str, Line] = {}
    done = {ref}
    for root in [ref, *sorted(hosts - {ref}, key=lambda h: (h not in anchors, _natural(h)))]:
        if root in done and root != ref:
            continue
        done.add(root)
        placed = [root]
        for via in placed:  # grows as hosts are placed
            for host in sorted(hosts - done):
                line = _trace_offset(exp, traces, host_of, via, host)
                if line is None:
                    continue
                if via != root:
                    line = found[via].then(line, via)
                elif root in anchors:
                    line = replace(anchors[root].then(line, root), anchor="probe")
                elif root != ref:
                    line = replace(line, via=(root,), anchor="none")
                found[host] = line
                done.add(host)
                placed.append(host)
    return found


def _natural(name: str) -> list:
    """host2 before host10."""
    return [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", name)]


def _trace_offset(exp: Experiment, traces: dict[str, PathTrace], host_of: dict[str, str], ref: str,
                  host: str) -> Line | None:
    """Cross-host segments ref -> host and host -> ref, over all paths, into one estimate (a
    function of ref's time; ref may be any host)."""
    tf, df, tr, dr = [], [], [], []
    for p in exp.paths:
        times = traces[p.name].times
        for j in range(len(p.tracepoints) - 1):
            a, b = host_of[p.tracepoints[j]], host_of[p.tracepoints[j + 1]]
            if {a, b} != {ref, host}:
                continue
            both = (times[:, j] >= 0) & (times[:, j + 1] >= 0)
            if (a, b) == (ref, host):
                tf.append(times[both, j])
                df.append(times[both, j + 1] - times[both, j])
            elif (a, b) == (host, ref):
                tr.append(times[both, j + 1])
                dr.append(times[both, j + 1] - times[both, j])
    if not tf or not tr:
        return None
    return offset_from_trace(np.concatenate(tf), np.concatenate(df), np.concatenate(tr), np.concatenate(dr))


BIN_NS = 1_000_000_000


def _bins(t: np.ndarray, tp: np.ndarray, length: np.ndarray, span: tuple[int, int],
          bin_ns: int = BIN_NS) -> tuple[np.ndarray, np.ndarray]:
    """Per tracepoint id (256) and 1 s bin from the run's start: packets and bytes."""
    nb = (span[1] - span[0]) // bin_ns + 1
    cell = tp * nb + (t - span[0]) // bin_ns
    pkts = np.bincount(cell, minlength=256 * nb).reshape(256, nb)
    byts = np.bincount(cell, weights=length, minlength=256 * nb).reshape(256, nb)
    return pkts, byts


def _throughput(pkts: np.ndarray, byts: np.ndarray, names: dict[int, str]) -> dict:
    """Per tracepoint: packets/s and bytes/s, mean and peak over the 1 s bins it was active in."""
    out = {}
    for k in np.flatnonzero(pkts.sum(axis=1)):
        active = pkts[k] > 0
        out[names.get(int(k), str(k))] = {
            "pkts_per_s_mean": float(pkts[k][active].mean()), "pkts_per_s_peak": float(pkts[k].max()),
            "bytes_per_s_mean": float(byts[k][active].mean()), "bytes_per_s_peak": float(byts[k].max()),
            "seconds": int(active.sum()),
        }
    return out
