"""What tracing costs (experiment section `overhead:`): the experiment's workloads run once per
variant per round on the same lab, variants interleaved and their order rotated each round (the
machine is shared and noisy), switched at runtime between workload runs:

- untraced: agents running, no hook attached;
- traced-N: the experiment's first N tracepoints attached;
- tcpdump: no hook; tcpdump (snaplen 128, writing a file) on the device of every tracepoint;
- original: no hook; the 2018 tracer (bcc socket filters, trace_pipe) on those devices.

Results: per variant the median over rounds of each workload's main metric, and its ratio to
untraced; overhead.json and overhead.md in the run folder. Afterwards every tracepoint is attached
again, so the run ends as any other.
"""

from __future__ import annotations

import contextlib
import json
import statistics
from pathlib import Path
from typing import Callable, Iterator

from vnettracer import runtime
from vnettracer.analysis.paired import paired
from vnettracer.spec import Run, original_pair
from vnettracer.stages.hosts import RunHosts
from vnettracer.stages.workload import run_workloads

# per workload kind: (metric name, how to read it, higher is better)
METRICS = {
    "tcp_rr": ("p50 latency (us)", lambda r: r["latency_us"]["p50"], False),
    "iperf3": ("throughput (Gbit/s)", lambda r: r["gbit_per_s"], True),
    "udp_echo": ("p50 RTT (us)", lambda r: r["rtt_us"]["p50"], False),
    "redis": ("requests/s", lambda r: min(t["rps"] for t in r["tests"].values()), True),
}
CAPTURES = "/var/lib/vnettracer/run/overhead-tcpdump"
ORIGINAL = "/var/lib/vnettracer/run/overhead-original"


def _devices(run: Run) -> dict[str, list[tuple[str | None, str]]]:
    exp = run.experiment
    hosts = exp.host_names()
    out: dict[str, list[tuple[str | None, str]]] = {}
    for tp in exp.tracepoints:
        ns = hosts[tp.host].containers[tp.netns].netns if tp.netns else None
        if tp.device is None:  # a kernel tracepoint: no device to capture on
            continue
        if (ns, tp.device) not in out.setdefault(tp.host, []):
            out[tp.host].append((ns, tp.device))
    return out


def run(hosts: RunHosts, run_id: str, d: Path, progress: Callable[[str], None] = print) -> dict:
    r, exp = hosts.run, hosts.exp
    ov = exp.overhead
    assert ov is not None  # the workload stage calls this only for an overhead experiment
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
                with _beside(tg, r, v) as extra:
                    res = run_workloads(hosts, run_id, d)
                rows.append({"round": k + 1, "variant": v, "workloads": res, **extra})
                shown = ", ".join(f"{METRICS[w['kind']][0]} {METRICS[w['kind']][1](w):.4g}"
                                  for w in res if w.get("kind") in METRICS)
                progress(f"round {k + 1}/{ov.rounds} {v}: {shown}")
    finally:
        runtime.agent_set(tg, hooks(len(order)))  # the run goes on with every tracepoint
    summary = summarize(rows, ov.variants)
    (d / "overhead.json").write_text(json.dumps({"rounds": rows, "summary": summary}, indent=1, default=str))
    (d / "overhead.md").write_text(markdown(summary, ov.rounds))
    return summary


@contextlib.contextmanager
def _beside(tg: dict, r: Run, variant: str) -> Iterator[dict]:
    """What runs beside the workloads in this variant (tcpdump, the 2018 tracer); what it reported
    lands in the yielded dict once it stopped."""
    out: dict = {}
    devices = _devices(r)
    hosts = {h: len(d) for h, d in devices.items()}  # stopped on every host, also after a failed start
    if variant == "tcpdump":
        try:
            runtime.capture_start(tg, devices, CAPTURES)
            yield out
        finally:
            out["tcpdump"] = runtime.capture_stop(tg, hosts, CAPTURES)
    elif variant == "original":
        pair = original_pair(r.experiment)
        assert pair is not None  # spec.check refuses the variant without one
        try:
            runtime.original_start(tg, devices, pair, ORIGINAL)
            yield out
        finally:
            out["original"] = runtime.original_stop(tg, hosts, ORIGINAL)
    else:
        yield out


def summarize(rows: list[dict], variants: list[str]) -> dict:
    """Per workload (index) and variant: the metric's median over rounds, and its ratio to the
    untraced run of the same round, as the median of those paired ratios with a 95 % bootstrap
    interval and the spread (analysis/paired.py)."""
    out: dict = {}
    per_round: dict[str, dict[int, dict[str, float]]] = {}
    for row in rows:
        for i, w in enumerate(row["workloads"], start=1):
            if w.get("kind") not in METRICS:
                continue
            name, get, higher = METRICS[w["kind"]]
            key = f"{i}-{w['kind']}"
            e = out.setdefault(key, {"metric": name, "higher_is_better": higher, "variants": {}})
            e["variants"].setdefault(row["variant"], {"values": []})["values"].append(get(w))
            per_round.setdefault(key, {}).setdefault(row["round"], {})[row["variant"]] = get(w)
        for h, c in row.get("tcpdump", {}).items():
            t = out.setdefault("tcpdump", {})
            t.setdefault(h, {"captured": 0, "dropped_by_kernel": 0})
            t[h]["captured"] += c["captured"]
            t[h]["dropped_by_kernel"] += c["dropped_by_kernel"]
        for c in row.get("original", {}).values():  # one trace_pipe per kernel: lab hosts share it
            o = out.setdefault("original", {"records": 0, "bytes": 0})
            o["records"] += c["records"]
            o["bytes"] += c["bytes"]
    for key, e in out.items():
        if key in ("tcpdump", "original"):
            continue
        ratios = paired(list(per_round[key].values()), "untraced")
        for v in variants:
            if v in e["variants"]:
                x = e["variants"][v]
                x["median"] = statistics.median(x["values"])
                r = ratios.get(v)
                x.update({"ratio": r.ratio, "ci": list(r.ci), "spread": list(r.spread), "paired_rounds": r.rounds}
                         if r else {"ratio": None})
    return out


def markdown(summary: dict, rounds: int) -> str:
    lines = [f"## Tracing overhead ({rounds} rounds, variants interleaved)", "",
             "Ratio: each round's value over the untraced run of the same round; the median of those, its 95 % "
             "bootstrap interval and the spread over rounds.", ""]
    for key, e in summary.items():
        if key in ("tcpdump", "original"):
            continue
        lines += [f"### workload {key}: {e['metric']} ({'higher' if e['higher_is_better'] else 'lower'} is better)",
                  "", "| variant | median | ratio to untraced | 95 % interval | spread |", "|---|---|---|---|---|"]
        for v, x in e["variants"].items():
            if x.get("ratio") is None:
                lines.append(f"| {v} | {x['median']:.4g} | - | - | - |")
                continue
            lo, hi = x["ci"]
            a, b = x["spread"]
            lines.append(f"| {v} | {x['median']:.4g} | x{x['ratio']:.3f} | {lo:.3f}-{hi:.3f} | {a:.3f}-{b:.3f} |")
        lines.append("")
    if "tcpdump" in summary:
        lines.append("tcpdump (snaplen 128): " + "; ".join(
            f"{h}: {c['captured']} packets captured, {c['dropped_by_kernel']} dropped by the kernel"
            for h, c in summary["tcpdump"].items()))
    if "original" in summary:
        o = summary["original"]
        lines.append(f"original (2018: bcc socket filters, bpf_trace_printk, trace_pipe): {o['records']} records read, "
                     f"{o['bytes']} bytes")
    return "\n".join(lines) + "\n"
