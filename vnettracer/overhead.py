"""What tracing costs (experiment section `overhead:`): the experiment's workloads run once per
variant per round on the same lab, variants interleaved and their order rotated each round (the
machine is shared and noisy), switched at runtime between workload runs:

- untraced: agents running, no hook attached;
- traced-N: the experiment's first N tracepoints attached;
- tcpdump: no hook; tcpdump (snaplen 128, writing a file) on the device of every tracepoint.

Results: per variant the median over rounds of each workload's main metric, and its ratio to
untraced; overhead.json and overhead.md in the run folder. Afterwards every tracepoint is attached
again, so the run ends as any other.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Callable

from vnettracer import runtime, trace
from vnettracer.spec import Run

# per workload kind: (metric name, how to read it, higher is better)
METRICS = {
    "tcp_rr": ("p50 latency (us)", lambda r: r["latency_us"]["p50"], False),
    "iperf3": ("throughput (Gbit/s)", lambda r: r["gbit_per_s"], True),
    "udp_echo": ("p50 RTT (us)", lambda r: r["rtt_us"]["p50"], False),
    "redis": ("requests/s", lambda r: min(t["rps"] for t in r["tests"].values()), True),
}
CAPTURES = "/var/lib/vnettracer/run/overhead-tcpdump"


def _devices(run: Run) -> dict[str, list[tuple[str | None, str]]]:
    exp = run.experiment
    hosts = exp.host_names()
    out: dict[str, list[tuple[str | None, str]]] = {}
    for tp in exp.tracepoints:
        ns = hosts[tp.host].containers[tp.netns].netns if tp.netns else None
        if (ns, tp.device) not in out.setdefault(tp.host, []):
            out[tp.host].append((ns, tp.device))
    return out


def run(r: Run, run_id: str, d: Path, progress: Callable[[str], None] = print) -> dict:
    exp = r.experiment
    ov = exp.overhead
    tg = runtime.targets(r)
    traced_hosts = sorted({tp.host for tp in exp.tracepoints})
    order = [tp.name for tp in exp.tracepoints]
    host_of = {tp.name: tp.host for tp in exp.tracepoints}

    def hooks(n: int) -> dict[str, list[str]]:
        return {h: [t for t in order[:n] if host_of[t] == h] for h in traced_hosts}

    rows = []
    try:
        for k in range(ov.rounds):
            variants = ov.variants[k % len(ov.variants):] + ov.variants[:k % len(ov.variants)]
            for v in variants:
                n = int(v.split("-")[1]) if v.startswith("traced-") else 0
                runtime.agent_set(tg, hooks(n))
                pids = runtime.capture_start(tg, _devices(r), CAPTURES) if v == "tcpdump" else {}
                try:
                    res = trace.workloads(r, run_id, d)
                finally:
                    cap = runtime.capture_stop(tg, pids, CAPTURES) if pids else {}
                rows.append({"round": k + 1, "variant": v, "workloads": res, "tcpdump": cap})
                shown = ", ".join(f"{METRICS[w['kind']][0]} {METRICS[w['kind']][1](w):.4g}"
                                  for w in res if w.get("kind") in METRICS)
                progress(f"round {k + 1}/{ov.rounds} {v}: {shown}")
    finally:
        runtime.agent_set(tg, hooks(len(order)))  # the run goes on with every tracepoint
    summary = summarize(rows, ov.variants)
    (d / "overhead.json").write_text(json.dumps({"rounds": rows, "summary": summary}, indent=1, default=str))
    (d / "overhead.md").write_text(markdown(summary, ov.rounds))
    return summary


def summarize(rows: list[dict], variants: list[str]) -> dict:
    """Per workload (index) and variant: median of the metric over rounds, ratio to untraced."""
    out: dict = {}
    for row in rows:
        for i, w in enumerate(row["workloads"], start=1):
            if w.get("kind") not in METRICS:
                continue
            name, get, higher = METRICS[w["kind"]]
            e = out.setdefault(f"{i}-{w['kind']}", {"metric": name, "higher_is_better": higher, "variants": {}})
            e["variants"].setdefault(row["variant"], {"values": []})["values"].append(get(w))
        for h, c in row.get("tcpdump", {}).items():
            t = out.setdefault("tcpdump", {})
            t.setdefault(h, {"captured": 0, "dropped_by_kernel": 0})
            t[h]["captured"] += c["captured"]
            t[h]["dropped_by_kernel"] += c["dropped_by_kernel"]
    for key, e in out.items():
        if key == "tcpdump":
            continue
        base = e["variants"].get("untraced")
        base_med = statistics.median(base["values"]) if base else None
        for v in variants:
            if v in e["variants"]:
                x = e["variants"][v]
                x["median"] = statistics.median(x["values"])
                x["ratio"] = x["median"] / base_med if base_med else None
    return out


def markdown(summary: dict, rounds: int) -> str:
    lines = [f"## Tracing overhead ({rounds} rounds, variants interleaved)", ""]
    for key, e in summary.items():
        if key == "tcpdump":
            continue
        lines += [f"### workload {key}: {e['metric']} ({'higher' if e['higher_is_better'] else 'lower'} is better)",
                  "", "| variant | median | ratio to untraced |", "|---|---|---|"]
        for v, x in e["variants"].items():
            ratio = f"x{x['ratio']:.3f}" if x.get("ratio") is not None else "-"
            lines.append(f"| {v} | {x['median']:.4g} | {ratio} |")
        lines.append("")
    if "tcpdump" in summary:
        lines.append("tcpdump (snaplen 128): " + "; ".join(
            f"{h}: {c['captured']} packets captured, {c['dropped_by_kernel']} dropped by the kernel"
            for h, c in summary["tcpdump"].items()))
    return "\n".join(lines) + "\n"
