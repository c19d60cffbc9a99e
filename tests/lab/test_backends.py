"""The bcc backend end to end: the quickstart traced by trace.bpf.c compiled on the hosts by bcc
gives the same report as the libbpf objects on the same lab, within the noise of two runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml
from conftest import leftovers, vnettracer

from vnettracer import ROOT


def quickstart(tmp_path: Path, backend: str) -> Path:
    """The quickstart with this backend (no redis, no InfluxDB: the tracer is what differs)."""
    src = yaml.safe_load((ROOT / "experiments" / "quickstart.yml").read_text())
    src["name"] = f"qs-{backend}"
    src["tracer"] = {"backend": backend}
    src["workloads"] = [w for w in src["workloads"] if w["kind"] != "redis"]
    src.pop("sinks", None)
    f = tmp_path / f"qs-{backend}.yml"
    f.write_text(yaml.safe_dump(src))
    return f


def segments(run: Path) -> dict[tuple[str, str], dict]:
    summary = json.loads((run / "summary.json").read_text())
    return {(p, s["name"]): s for p, ps in summary["paths"].items() for s in ps["segments"]}


def test_bcc_backend_agrees_with_libbpf(root, tmp_path):
    env = {**os.environ, "VNT_RESULTS_DIR": str(tmp_path / "results")}
    runs = {}
    try:
        for backend in ("libbpf", "bcc"):
            r = vnettracer("experiment", "run", str(quickstart(tmp_path, backend)), "--keep-lab", env=env)
            assert r.returncode == 0, r.stderr
            (runs[backend],) = (tmp_path / "results" / f"qs-{backend}").iterdir()
    finally:
        down = vnettracer("lab", "down")
    assert down.returncode == 0, down.stderr
    for host in ("host1", "host2"):
        stats = json.loads((runs["bcc"] / "events" / host / "stats.json").read_text())
        assert stats["backend"] == "bcc" and stats["bpf_object"] == "trace.bpf.c"
        assert json.loads((runs["libbpf"] / "events" / host / "stats.json").read_text())["backend"] == "libbpf"
    a, b = segments(runs["libbpf"]), segments(runs["bcc"])
    assert set(a) == set(b) and len(a) == 18  # 9 segments each way
    for key, s in a.items():
        t = b[key]
        assert t["count"] > 1000 and t["negative"] == 0, (key, t)
        # the same hooks see the same packets: counts within a few percent (the workloads ran again)
        assert abs(t["count"] - s["count"]) <= 0.1 * s["count"], (key, s["count"], t["count"])
        # and the same time between them, within the noise of two runs on a shared machine
        assert abs(t["p50_ns"] - s["p50_ns"]) <= 0.35 * max(s["p50_ns"], t["p50_ns"]) + 3000, (key, s, t)
    for run in runs.values():
        spec = yaml.safe_load((run / "spec.yml").read_text())
        summary = json.loads((run / "summary.json").read_text())
        assert all(summary["paths"][p["name"]]["complete"] > 1000 for p in spec["paths"])
    assert leftovers() == []
