"""After the report: per-second segment summaries into InfluxDB (vnt_segment), and what agents could
not send during the run (outboxes fetched by collect) replayed in order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from vnettracer.analysis import Analysis
from vnettracer.analysis.correlate import losses
from vnettracer.store import lineproto
from vnettracer.store.client import Endpoint
from vnettracer.store.writer import Writer, WriterStats, pending_outboxes, replay

SECOND = 1_000_000_000


def per_second(a: Analysis) -> pd.DataFrame:
    """One row per (path, segment, second of the segment's first hook): count, p50/p99/max (us), lost,
    and whether both hooks' times are on one clock (else the segment holds their offset)."""
    rows = []
    end = a.summary["end_ns"]
    for name, pt in a.traces.items():
        corrected = a.summary["paths"][name].get("clock_corrected", True)
        lost_after, _, _ = losses(pt, end, elsewhere=a.elsewhere.get(name), one_clock=corrected)
        for j in range(len(pt.tracepoints) - 1):
            seg = f"{pt.tracepoints[j]} -> {pt.tracepoints[j + 1]}"
            at = pt.times[:, j]
            both = (at >= 0) & (pt.times[:, j + 1] >= 0)
            lat = pd.DataFrame({"second": at[both] // SECOND * SECOND,
                                "us": (pt.times[both, j + 1] - at[both]) / 1000.0})
            g = lat.groupby("second")["us"]
            df = pd.DataFrame({"count": g.size(), "p50_us": g.quantile(0.5), "p99_us": g.quantile(0.99),
                               "max_us": g.max()})
            lost = pd.Series(at[lost_after == j] // SECOND * SECOND).value_counts()
            df = df.join(lost.rename("lost"), how="outer")
            df = df.fillna({"count": 0, "lost": 0}).fillna(0.0)
            df[["count", "lost"]] = df[["count", "lost"]].astype(np.int64)
            df = df.rename_axis("second").reset_index()
            df["path"], df["segment"] = name, seg
            df["clock_corrected"] = a.summary["paths"][name]["segments"][j].get("clock_corrected", True)
            rows.append(df)
    cols = ["path", "segment", "second", "count", "p50_us", "p99_us", "max_us", "lost", "clock_corrected"]
    return pd.concat(rows, ignore_index=True)[cols] if rows else pd.DataFrame(columns=cols)


def publish(run_dir: Path, a: Analysis, ep: Endpoint, log=print) -> dict:
    """Replay the run's leftover outboxes, then write the segment summaries."""
    replayed = {str(ob.relative_to(run_dir)): replay(ep, ob, log=log).as_dict() for ob in pending_outboxes(run_dir)}
    seg = per_second(a)
    w = Writer(ep, run_dir / "influx-outbox", log=log)
    w.add(lineproto.segments(seg, run_dir.name))
    st: WriterStats = w.close(timeout_s=60)
    return {"url": ep.url, "database": ep.database, "segment_points": int(len(seg)),
            "segment_points_unsent": st.backlog_points, "replayed": replayed}
