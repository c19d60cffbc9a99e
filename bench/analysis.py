"""Analysis speed: a synthetic run of 1 M packets x 10 hooks (10 M events: the quickstart's two
paths, 500 k packets each) loaded, clock-corrected, correlated and decomposed.

Generation runs first; the analysis runs in a fresh process so that its peak memory (max RSS) is
its own. Baseline in the same run: the time to only read the spools (the floor any analysis pays).

    .venv/bin/python bench/analysis.py [--packets 500000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
t0 = time.perf_counter()
from vnettracer.agent.spool import read_spool
n = sum(read_spool(d).num_rows for d in sorted(Path(sys.argv[1], "events").iterdir()))
t_read = time.perf_counter() - t0
from vnettracer.analysis import analyze
t1 = time.perf_counter()
a = analyze(Path(sys.argv[1]))
t_an = time.perf_counter() - t1
print(json.dumps({"events": a.summary["events"], "read_s": t_read, "analyze_s": t_an,
                  "maxrss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                  "lost": a.summary["paths"]["request"]["lost"]}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--packets", type=int, default=500_000, help="per path (2 paths x 10 hooks)")
    args = ap.parse_args()
    from vnettracer.analysis.synth import make_run

    with tempfile.TemporaryDirectory(prefix="vnt-bench-") as d:
        run = Path(d) / "run"
        t0 = time.perf_counter()
        truth = make_run(run, packets=args.packets, seconds=300)
        gen = time.perf_counter() - t0
        r = json.loads(subprocess.run([sys.executable, "-c", CHILD, str(run)], capture_output=True, text=True,
                                      check=True).stdout)
    m = r["events"] / 1e6
    print(f"events {r['events']:,} (generated in {gen:.1f} s)")
    print(f"read spools only (baseline): {r['read_s']:.2f} s")
    print(f"analyze (load, clocks, correlate, decompose, throughput): {r['analyze_s']:.2f} s "
          f"= {r['analyze_s'] / m:.3f} s per million events, {r['analyze_s'] / max(r['read_s'], 1e-9):.1f}x the read")
    print(f"peak memory of the analysis process: {r['maxrss_gb']:.2f} GB")
    print(f"loss found {r['lost']} (true {truth.lost})")


if __name__ == "__main__":
    main()
