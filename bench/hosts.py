"""Run time against the number of hosts: whole runs on the netns lab, 2 traced hosts against N.

The N-host experiment is the quickstart's shape repeated per pair of hosts (host 2k-1 and 2k, a
container each, 10 hooks each way across the VXLAN overlay, built from experiments/quickstart.yml's
tracepoints and paths), one short tcp_rr per pair, InfluxDB on. Each round runs the 2-host and the
N-host experiment back to back (order alternating), each a whole `vnettracer experiment run` from
no lab; the stages' times come from the runs' meta.json. Reported per host count: every stage's
median, and the paired ratio N/2 of prepare + deploy + collect (analysis/paired.py).

`--quickstart R` instead runs experiments/quickstart.yml R times and reports its wall time, lab up
to report (the command's own `1 run(s) in X s`).

    sudo .venv/bin/python bench/hosts.py [--hosts 16] [--rounds 1]
    sudo .venv/bin/python bench/hosts.py --quickstart 3
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from vnettracer import ROOT
from vnettracer.analysis.paired import paired

SCALED = ("prepare", "deploy", "collect")
STAGES = ("lab", "prepare", "facts", "tagging", "deploy", "clock", "workload", "collect", "report")


def pair_experiment(hosts: int) -> dict:
    """The quickstart's hooks and paths for every pair of hosts."""
    qs = yaml.safe_load((ROOT / "experiments" / "quickstart.yml").read_text())
    tps, paths, flows, workloads = [], [], [], []
    for k in range(hosts // 2):
        a, b = 2 * k + 1, 2 * k + 2
        ren, pre = {"host1": f"host{a}", "host2": f"host{b}"}, f"p{k + 1}-"
        for tp in qs["tracepoints"]:
            tps.append({**tp, "name": pre + tp["name"], "host": ren[tp["host"]]})
        for p in qs["paths"]:
            paths.append({"name": pre + p["name"], "tracepoints": [pre + t for t in p["tracepoints"]]})
        flows.append({"src": f"10.244.{a}.11/32", "dst": f"10.244.{b}.11/32", "both_directions": True})
        workloads.append({"kind": "tcp_rr", "client": f"host{a}/c1", "server": f"host{b}/c1", "duration_s": 2,
                          "size": 64, "rate": 1000})
    return {"name": f"hosts-{hosts}", "description": f"{hosts // 2} quickstart pairs",
            "lab": {"topology": "flannel-vxlan", "options": {"hosts": hosts, "containers_per_host": 1}},
            "tracepoints": tps, "paths": paths, "flows": flows, "workloads": workloads,
            "sinks": {"influxdb": {"enabled": True, "raw_events": False}}}


def run(experiment: str, results: Path) -> tuple[float, dict[str, float]]:
    """One whole run from no lab: its wall time as the command reports it, and each stage's seconds."""
    env = {**os.environ, "VNT_RESULTS_DIR": str(results)}
    cli = Path(sys.executable).with_name("vnettracer")
    out = subprocess.run([str(cli), "experiment", "run", experiment],
                         capture_output=True, text=True, timeout=1800, env=env)
    if out.returncode != 0:
        raise SystemExit(f"{experiment} failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    wall = float(re.search(r"1 run\(s\) in ([\d.]+) s", out.stdout).group(1))
    meta = json.loads(max(results.glob("*/*/meta.json"), key=lambda p: p.stat().st_mtime).read_text())
    return wall, {k: v.get("seconds", 0.0) for k, v in meta["stages"].items()}


def hosts_bench(n: int, rounds: int, work: Path) -> None:
    files = {}
    for h in (2, n):
        files[h] = work / f"hosts-{h}.yml"
        files[h].write_text(yaml.safe_dump(pair_experiment(h), sort_keys=False))
    per: dict[int, list[dict[str, float]]] = {2: [], n: []}
    ratios = []
    for r in range(rounds):
        got = {}
        for h in ((2, n) if r % 2 == 0 else (n, 2)):
            wall, stages = run(str(files[h]), work / "results")
            stages["total"] = wall
            per[h].append(stages)
            got[h] = sum(stages.get(s, 0.0) for s in SCALED)
            print(f"round {r + 1}: {h:2d} hosts: {wall:6.1f} s, prepare+deploy+collect {got[h]:6.1f} s", flush=True)
        ratios.append({"2": got[2], str(n): got[n]})
    print(f"\n| stage | 2 hosts s | {n} hosts s |\n|---|---|---|")
    for s in (*STAGES, "total"):
        print(f"| {s} | {statistics.median(x.get(s, 0) for x in per[2]):.1f} | "
              f"{statistics.median(x.get(s, 0) for x in per[n]):.1f} |")
    rat = paired(ratios, "2")[str(n)]
    print(f"\nprepare+deploy+collect, {n} hosts / 2 hosts: x{rat.ratio:.2f} ({rat.ci[0]:.2f}-{rat.ci[1]:.2f}), "
          f"{rounds} round(s), goal <= x2: {rat.verdict(2.0, lower_is_better=True)}")


def quickstart_bench(rounds: int, work: Path) -> None:
    walls, per = [], []
    for r in range(rounds):
        wall, stages = run("quickstart", work / "results")
        walls.append(wall)
        per.append(stages)
        print(f"round {r + 1}: quickstart {wall:.1f} s", flush=True)
    print("\n" + ", ".join(f"{s} {statistics.median(x.get(s, 0) for x in per):.1f}" for s in STAGES))
    print(f"quickstart, lab up to report: median {statistics.median(walls):.1f} s "
          f"(min {min(walls):.1f}, max {max(walls):.1f}; {rounds} runs)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--quickstart", type=int, default=0, metavar="R", help="time the quickstart R times instead")
    a = ap.parse_args()
    if a.hosts < 4 or a.hosts % 2:
        ap.error("--hosts: an even number, at least 4")
    with tempfile.TemporaryDirectory(prefix="vnt-bench-hosts-") as tmp:
        if a.quickstart:
            quickstart_bench(a.quickstart, Path(tmp))
        else:
            hosts_bench(a.hosts, a.rounds, Path(tmp))


if __name__ == "__main__":
    main()
