"""Stage collect (the deploy stage's undo, also `experiment run --stage collect RUN_DIR`): agents
stopped, every hook detached, spools, clock pairs, stats and workload outputs fetched."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from vnettracer.stages import Context, Stage
from vnettracer.stages.hosts import RunHosts


def collect_vars(run_id: str, dest: Path) -> dict:
    """What playbooks/collect.yml gets."""
    return {"collect_dest": str(dest.resolve()), "collect_run_id": run_id}


def collect(hosts: RunHosts, run_id: str, dest: Path, workdir: Path,
            progress: Callable[[str], None] | None = None) -> dict[str, int]:
    """Stop the agents and fetch their spools into dest/events/<host>/; returns files per host."""
    r = hosts.play("collect", workdir, progress=progress, extravars=collect_vars(run_id, dest))
    return {h: int(n or 0) for h, n in hosts.reports(r, "files").items()}


class CollectStage(Stage):
    name = "collect"

    def run(self, ctx: Context) -> dict:
        return {"files": collect(ctx.hosts, ctx.dir.name, ctx.dir, ctx.dir, progress=ctx.say("collect"))}
