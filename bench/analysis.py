"""Analysis speed: a synthetic run of 1 M packets x 10 hooks (10 M events: the quickstart's two
paths, 500 k packets each) loaded, clock-corrected, correlated and decomposed, in memory and out of
core (analysis/partition.py); `--packets 5000000` is 100 M events.

Generation runs first; each analysis runs in a fresh process so that its peak memory (max RSS) is
its own. Baseline in the same run: the time to only read the spools (the floor any analysis pays).

    .venv/bin/python bench/analysis.py [--packets 500000] [--modes memory,partitioned]
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
from vnettracer.agent.spool import iter_spool
n = sum(b.num_rows for d in sorted(Path(sys.argv[1], "events").iterdir()) for b in iter_spool(d))
t_read = time.perf_counter() - t0
from vnettracer.analysis import analyze
t1 = time.perf_counter()
a = analyze(Path(sys.argv[1]), partitions=None if sys.argv[2] == "auto" else int(sys.argv[2]))
t_an = time.perf_counter() - t1
print(json.dumps({"events": a.summary["events"], "read_s": t_read, "analyze_s": t_an,
                  "maxrss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                  "lost": a.summary["paths"]["request"]["lost"]}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--packets", type=int, default=500_000, help="per path (2 paths x 10 hooks)")
    ap.add_argument("--modes", default="memory,partitioned", help="memory, partitioned (automatic partition count)")
    args = ap.parse_args()
    from vnettracer.analysis.synth import make_run

    with tempfile.TemporaryDirectory(prefix="vnt-bench-") as d:
        run = Path(d) / "run"
        t0 = time.perf_counter()
        truth = make_run(run, packets=args.packets, seconds=300)
        gen = time.perf_counter() - t0
        print(f"generated in {gen:.1f} s", flush=True)
        for mode in args.modes.split(","):
            parts = {"memory": "0", "partitioned": "auto"}[mode]
            if mode == "partitioned":  # automatic count, at least 2 partitions on small runs
                from vnettracer.analysis import PARTITION_EVENTS, inputs

                parts = str(max(2, -(-inputs.spooled_events(run) // PARTITION_EVENTS)))
            r = json.loads(subprocess.run([sys.executable, "-c", CHILD, str(run), parts], capture_output=True,
                                          text=True, check=True).stdout)
            m = r["events"] / 1e6
            print(f"{mode} ({parts} partitions): events {r['events']:,}; read spools only (baseline) {r['read_s']:.2f} s; "
                  f"analyze {r['analyze_s']:.2f} s = {r['analyze_s'] / m:.3f} s per million events, "
                  f"{r['analyze_s'] / max(r['read_s'], 1e-9):.1f}x the read; peak memory {r['maxrss_gb']:.2f} GB; "
                  f"loss found {r['lost']} (true {truth.lost})", flush=True)


if __name__ == "__main__":
    main()
