"""Analysis speed: a synthetic run of 1 M packets x 10 hooks (10 M events: the quickstart's two
paths, 500 k packets each) loaded, clock-corrected, correlated and decomposed, in memory and out of
core (analysis/partition.py); `--packets 5000000` is 100 M events.

Generation runs first; each analysis runs in a fresh process, whose peak memory is sampled as the
sum of its own and its worker processes' resident memory (every 0.1 s). Baseline in the same run,
in a process of its own: the time to only read the spools (the floor any analysis pays).

    .venv/bin/python bench/analysis.py [--packets 500000] [--modes memory,partitioned]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

READ = r"""
import json, sys, time
from pathlib import Path
from vnettracer.agent.spool import iter_spool
t0 = time.perf_counter()
n = sum(b.num_rows for d in sorted(Path(sys.argv[1], "events").iterdir()) for b in iter_spool(d))
print(json.dumps({"events": n, "read_s": time.perf_counter() - t0}))
"""

ANALYZE = r"""
import json, sys, time
from pathlib import Path
from vnettracer.analysis import analyze
t1 = time.perf_counter()
a = analyze(Path(sys.argv[1]), partitions=int(sys.argv[2]))
print(json.dumps({"events": a.summary["events"], "analyze_s": time.perf_counter() - t1,
                  "lost": a.summary["paths"]["request"]["lost"]}))
"""


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                total += next((int(ln.split()[1]) * 1024 for ln in f if ln.startswith("VmRSS")), 0)
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            continue
    return total


def run(code: str, *args: str) -> tuple[dict, int]:
    """A fresh process running `code`; its JSON line and its peak resident memory (with workers)."""
    p = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True)
    peak = [0]

    def sample() -> None:
        while p.poll() is None:
            peak[0] = max(peak[0], tree_rss(p.pid))
            time.sleep(0.1)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, _ = p.communicate()
    th.join()
    if p.returncode != 0:
        sys.exit(f"analysis failed ({p.returncode})")
    return json.loads(out.strip().splitlines()[-1]), peak[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--packets", type=int, default=500_000, help="per path (2 paths x 10 hooks)")
    ap.add_argument("--modes", default="memory,partitioned", help="memory, partitioned (automatic partition count)")
    args = ap.parse_args()
    from vnettracer.analysis import PARTITION_EVENTS, inputs
    from vnettracer.analysis.synth import make_run

    with tempfile.TemporaryDirectory(prefix="vnt-bench-") as d:
        rd = Path(d) / "run"
        t0 = time.perf_counter()
        truth = make_run(rd, packets=args.packets, seconds=300)
        print(f"generated in {time.perf_counter() - t0:.1f} s; {os.cpu_count()} cores", flush=True)
        base, _ = run(READ, str(rd))
        print(f"read spools only (baseline): {base['events']:,} events in {base['read_s']:.2f} s", flush=True)
        for mode in args.modes.split(","):
            parts = 0 if mode == "memory" else max(2, -(-inputs.spooled_events(rd) // PARTITION_EVENTS))
            r, peak = run(ANALYZE, str(rd), str(parts))
            m = r["events"] / 1e6
            print(f"{mode} ({parts} partitions): analyze {r['analyze_s']:.2f} s = {r['analyze_s'] / m:.3f} s per "
                  f"million events, {r['analyze_s'] / max(base['read_s'], 1e-9):.1f}x the read; peak memory "
                  f"{peak / 2**30:.2f} GB (all its processes); loss found {r['lost']} (true {truth.lost})", flush=True)


if __name__ == "__main__":
    main()
