"""Stage workload: the experiment's workloads in order through roles/workload, or the overhead
experiment's interleaved variants (vnettracer/overhead.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from vnettracer.stages import Context, Stage
from vnettracer.stages.hosts import RunHosts


def workload_vars(hosts: RunHosts, run_id: str) -> dict:
    """What playbooks/workload.yml gets: the workloads with their endpoints resolved."""
    return {"workload_list": hosts.exp.workload_endpoints(), "workload_run_id": run_id}


def run_workloads(hosts: RunHosts, run_id: str, workdir: Path, progress: Callable[[str], None] | None = None) -> list[dict]:
    """Run the workloads in order; returns each client's parsed result (in the experiment's order)."""
    wv = workload_vars(hosts, run_id)
    wl = wv["workload_list"]
    r = hosts.play("workload", workdir, progress=progress, timeout_s=3600, extravars=wv)
    results = {}
    for hr in r.hosts.values():
        for key, res in hr.reports.items():
            results[int(key.removeprefix("workload "))] = res
    return [results.get(w["index"], {}) for w in wl]


class WorkloadStage(Stage):
    name = "workload"

    def skip(self, ctx: Context) -> str | None:
        return None if ctx.exp.workloads else "the experiment declares no workload"

    def run(self, ctx: Context) -> dict:
        exp = ctx.exp
        ctx.meta["measured"] = True
        if exp.overhead:
            from vnettracer import overhead

            ctx.meta["overhead"] = overhead.run(ctx.hosts, ctx.dir.name, ctx.dir, progress=ctx.say("workload"))
            return {"rounds": exp.overhead.rounds, "variants": exp.overhead.variants}
        res = run_workloads(ctx.hosts, ctx.dir.name, ctx.dir, progress=ctx.say("workload"))
        ctx.meta["workloads"] = res
        return {"count": len(res)}
