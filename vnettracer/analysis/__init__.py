"""Analysis of a run folder: events -> wall time -> clock correction -> correlation -> segments.

`analyze(run_dir)` returns the summary (what summary.json holds) and the per-path traces the
figures are drawn from. See docs/report.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from vnettracer.agent.spool import read_spool
from vnettracer.analysis.clock import Line, ktime_to_wall, offset_from_probes, offset_from_trace, to_wall
from vnettracer.analysis.correlate import PathTrace, correlate, decompose
from vnettracer.errors import VntError
from vnettracer.spec import Experiment


@dataclass
class Analysis:
    summary: dict
    traces: dict[str, PathTrace]
    events: pd.DataFrame  # all events, with host, t_ns (corrected)
    hooks_host: dict[str, str]


def load_events(run_dir: Path) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Events of every host (with a `host` column) and each host's clock pairs."""
    frames, clocks = [], {}
    root = run_dir / "events"
    if not root.is_dir():
        raise VntError(f"{run_dir} has no events/ folder: was anything traced and collected?")
    for hd in sorted(p for p in root.iterdir() if p.is_dir()):
        t = read_spool(hd).to_pandas()
        cf = hd / "clock.jsonl"
        if len(t) and not cf.exists():
            raise VntError(f"{cf} is missing: events of {hd.name} cannot be put on a clock")
        if cf.exists():
            clocks[hd.name] = pd.read_json(cf, lines=True)
        t["host"] = hd.name
        frames.append(t)
    ev = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return ev, clocks


def load_probes(run_dir: Path) -> dict[str, pd.DataFrame]:
    """Clock probe results (t1..t4 per sample) per host, if the clock stage ran: files
    clock/probes-<host>.<phase>.csv (before and after the workload), concatenated per host."""
    d = run_dir / "clock"
    per: dict[str, list[pd.DataFrame]] = {}
    for f in sorted(d.glob("probes-*.csv")) if d.is_dir() else []:
        per.setdefault(f.name.removeprefix("probes-").split(".")[0], []).append(pd.read_csv(f))
    return {h: pd.concat(fs, ignore_index=True).sort_values("t1") for h, fs in per.items()}


def analyze(run_dir: Path, exp: Experiment | None = None, window_ns: int = 1_000_000_000) -> Analysis:
    run_dir = Path(run_dir)
    if exp is None:
        try:
            exp = Experiment.model_validate(yaml.safe_load((run_dir / "spec.yml").read_text()))
        except OSError:
            raise VntError(f"{run_dir} is not a run folder (no spec.yml)") from None
    ev, clocks = load_events(run_dir)
    if ev.empty:
        raise VntError(f"{run_dir}: no events were traced")
    ids = exp.tracepoint_ids
    host_of = {tp.name: tp.host for tp in exp.tracepoints}

    # 1. each host's ktime -> its own wall clock
    ev["t_ns"] = np.int64(0)
    for host, pairs in clocks.items():
        m = (ev["host"] == host).to_numpy()
        ev.loc[m, "t_ns"] = to_wall(ev.loc[m, "ts_ns"].to_numpy(np.uint64), ktime_to_wall(pairs))

    # 2. correlate on uncorrected wall times (offsets are far below the matching window)
    traces = {p.name: correlate(ev, p.name, p.tracepoints, ids, window_ns) for p in exp.paths}

    # 3. clocks: every host against the reference (the first path's first hook's host)
    ref = host_of[exp.paths[0].tracepoints[0]] if exp.paths else sorted(clocks)[0]
    probes = load_probes(run_dir)
    clock_rep: dict = {"reference": ref, "method": exp.report.clock, "hosts": {}}
    corrections: dict[str, Line] = {}
    for host in sorted(set(ev["host"]) - {ref}):
        by_trace = _trace_offset(exp, traces, host_of, ref, host)
        by_probe = offset_from_probes(probes.get(host)) if host in probes else None
        want = by_trace if exp.report.clock == "trace" else by_probe
        applied = want or by_trace or by_probe
        start = np.array([int(ev["t_ns"].min())], np.int64)
        rep = {"applied": applied.method if applied else "none"}
        for kind, line in (("trace", by_trace), ("probe", by_probe)):
            rep[kind] = {**line.as_dict(), "offset_at_start_ns": float(line.at(start)[0])} if line else None
        if by_trace and by_probe:
            t = np.array([by_trace.t0_ns], np.int64)
            rep["disagreement_ns"] = float(by_trace.at(t)[0] - by_probe.at(t)[0])
        clock_rep["hosts"][host] = rep
        if applied:
            corrections[host] = applied
    for host, line in corrections.items():  # corrected = own wall clock - (own - reference)
        m = (ev["host"] == host).to_numpy()
        ev.loc[m, "t_ns"] = ev.loc[m, "t_ns"].to_numpy(np.int64) - np.round(line.at(ev.loc[m, "t_ns"].to_numpy(np.int64))).astype(np.int64)
        for p in exp.paths:
            pt = traces[p.name]
            for j, name in enumerate(p.tracepoints):
                if host_of[name] == host:
                    col = pt.times[:, j]
                    seen = col >= 0
                    col[seen] = col[seen] - np.round(line.at(col[seen])).astype(np.int64)

    # 4. decompose, throughput
    end = int(ev["t_ns"].max())
    paths = {p.name: decompose(traces[p.name], end, window_ns) for p in exp.paths}
    summary = {
        "experiment": exp.name, "run": run_dir.name, "events": int(len(ev)),
        "start_ns": int(ev["t_ns"].min()), "end_ns": end, "clock": clock_rep, "paths": paths,
        "throughput": _throughput(ev, {v: k for k, v in ids.items()}),
    }
    return Analysis(summary, traces, ev, host_of)


def _trace_offset(exp: Experiment, traces: dict[str, PathTrace], host_of: dict[str, str], ref: str,
                  host: str) -> Line | None:
    """Cross-host segments ref -> host and host -> ref, over all paths, into one estimate."""
    tf, df, tr, dr = [], [], [], []
    for p in exp.paths:
        times = traces[p.name].times
        for j in range(len(p.tracepoints) - 1):
            a, b = host_of[p.tracepoints[j]], host_of[p.tracepoints[j + 1]]
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


def _throughput(ev: pd.DataFrame, names: dict[int, str], bin_ns: int = 1_000_000_000) -> dict:
    """Per tracepoint: packets/s and bytes/s, mean and peak over the 1 s bins it was active in."""
    t = ev["t_ns"].to_numpy(np.int64)
    b = (t - t.min()) // bin_ns
    nb = int(b.max()) + 1
    tp = ev["tracepoint"].to_numpy(np.int64)
    cell = tp * nb + b
    pkts = np.bincount(cell, minlength=256 * nb).reshape(256, nb)
    byts = np.bincount(cell, weights=ev["len"].to_numpy(np.float64), minlength=256 * nb).reshape(256, nb)
    out = {}
    for k in np.flatnonzero(pkts.sum(axis=1)):
        active = pkts[k] > 0
        out[names.get(int(k), str(k))] = {
            "pkts_per_s_mean": float(pkts[k][active].mean()), "pkts_per_s_peak": float(pkts[k].max()),
            "bytes_per_s_mean": float(byts[k][active].mean()), "bytes_per_s_peak": float(byts[k].max()),
            "seconds": int(active.sum()),
        }
    return out
