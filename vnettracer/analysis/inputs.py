"""A run folder's files, read and checked: a bad one is named in one line (VntError), never a
traceback, and never half-used. Probe rows that cannot be true are dropped and counted.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from pydantic import ValidationError

from vnettracer.agent.spool import events_in
from vnettracer.errors import VntError
from vnettracer.spec import Experiment

MAX_PROBE_RTT_NS = 10_000_000_000  # a probe answered after more than this is not a clock sample


def _first_error(e: ValidationError) -> str:
    x = e.errors()[0]
    return f"{'.'.join(map(str, x['loc'])) or '(top level)'}: {x['msg']}"


def read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise VntError(f"{path}: missing ({what})") from None
    except OSError as e:
        raise VntError(f"{path}: cannot read ({e.strerror})") from None
    except ValueError as e:
        raise VntError(f"{path}: not valid JSON ({e}); {what}") from None
    if not isinstance(data, dict):
        raise VntError(f"{path}: not a JSON object; {what}")
    return data


def read_spec(run_dir: Path) -> Experiment:
    f = run_dir / "spec.yml"
    try:
        data = yaml.safe_load(f.read_text())
    except FileNotFoundError:
        runs = sorted(d.name for d in run_dir.glob("*/") if (d / "spec.yml").is_file()) if run_dir.is_dir() else []
        held = f"; it holds {len(runs)} run(s), the latest {run_dir / runs[-1]}" if runs else ""
        raise VntError(f"{run_dir} is not a run folder (no spec.yml){held}") from None
    except (OSError, yaml.YAMLError) as e:
        raise VntError(f"{f}: not readable YAML ({' '.join(str(e).split())[:200]})") from None
    try:
        exp = Experiment.model_validate(data)
        exp.lab_plan()  # the lab's options as a whole (a topology's host count, say)
        return exp
    except ValidationError as e:
        raise VntError(f"{f}: not an experiment this version reads ({_first_error(e)})") from None
    except ValueError as e:
        raise VntError(f"{f}: not an experiment this version reads (lab: {e})") from None


def read_meta(run_dir: Path) -> dict:
    if not (run_dir / "meta.json").exists():
        raise VntError(f"{run_dir} is not a run folder (no meta.json)")
    meta = read_json(run_dir / "meta.json", "the run's record, written by `experiment run`")
    if not isinstance(meta.get("stages", {}), dict):
        raise VntError(f"{run_dir / 'meta.json'}: 'stages' is not an object")
    return meta


def read_summary(path: Path) -> dict:
    """A report's summary.json (e.g. a baseline's), with the fields the gate reads."""
    s = read_json(path, "a report's summary")
    paths = s.get("paths")
    if not isinstance(paths, dict) or not all(isinstance(p, dict) and isinstance(p.get("segments"), list)
                                              for p in paths.values()):
        raise VntError(f"{path}: not a report summary (no paths with segments)")
    return s


def read_clock(path: Path) -> pd.DataFrame:
    """An agent's (ktime, realtime) pairs: integers, ktime increasing."""
    try:
        df = pd.read_json(path, lines=True, dtype=False)
    except (ValueError, OSError) as e:
        raise VntError(f"{path}: not readable JSON lines ({' '.join(str(e).split())[:160]})") from None
    need = {"ktime_ns", "realtime_ns"}
    if df.empty or not need <= set(df.columns):
        raise VntError(f"{path}: needs lines with ktime_ns and realtime_ns (has {len(df)} lines)")
    try:
        k = df["ktime_ns"].to_numpy(np.int64)
        r = df["realtime_ns"].to_numpy(np.int64)
    except (TypeError, ValueError):
        raise VntError(f"{path}: ktime_ns and realtime_ns must be integers") from None
    if (k <= 0).any() or (r <= 0).any() or (np.diff(k) < 0).any():
        raise VntError(f"{path}: clock pairs must be positive and in ktime order")
    out = pd.DataFrame({"ktime_ns": k, "realtime_ns": r})
    if "uncertainty_ns" in df:
        out["uncertainty_ns"] = pd.to_numeric(df["uncertainty_ns"], errors="coerce").fillna(0).clip(lower=0)
    return out


def read_probes(path: Path) -> tuple[pd.DataFrame, int]:
    """Clock probes t1..t4 (ns): rows that cannot be a real exchange (non-positive, t4 < t1,
    t3 < t2, reply slower than the exchange, or too slow to say anything) are dropped and counted."""
    try:
        df = pd.read_csv(path)
    except (ValueError, OSError, pd.errors.ParserError) as e:
        raise VntError(f"{path}: not readable CSV ({' '.join(str(e).split())[:160]})") from None
    cols = ["t1", "t2", "t3", "t4"]
    if not set(cols) <= set(df.columns):
        raise VntError(f"{path}: needs columns t1, t2, t3, t4 (has {', '.join(map(str, df.columns))})")
    t = df[cols].apply(pd.to_numeric, errors="coerce")
    ok = t.notna().all(axis=1) & (t > 0).all(axis=1)
    t = t[ok].astype(np.int64)
    rtt = (t.t4 - t.t1) - (t.t3 - t.t2)
    good = (t.t4 >= t.t1) & (t.t3 >= t.t2) & (rtt >= 0) & (rtt <= MAX_PROBE_RTT_NS)
    return t[good].reset_index(drop=True), int(len(df) - good.sum())


def spooled_events(run_dir: Path) -> int:
    """How many events the run's spools hold: what decides whether the analysis fits in memory.
    Counted, not taken from the files' sizes: the spools are compressed."""
    return sum(events_in(f) for f in (run_dir / "events").glob("*/events-*.arrows"))
