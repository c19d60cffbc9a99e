"""Stage collect (the deploy stage's undo, also `experiment run --stage collect RUN_DIR`): agents
stopped, every hook detached, spools, clock pairs, stats and workload outputs fetched."""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Callable

from vnettracer.stages import Context, Stage
from vnettracer.stages.hosts import RunHosts


def collect_vars(run_id: str, dest: Path) -> dict:
    """What playbooks/collect.yml gets (by hand: the role unpacks the archives itself)."""
    return {"collect_dest": str(dest.resolve()), "collect_run_id": run_id}


def unpack(dest: Path) -> None:
    """Each host's archive (events/<host>.tar, roles/collect) unpacked below dest, then removed. Only
    plain files and folders inside dest are taken (tarfile's data filter): a host writes these."""
    for tar in sorted((dest / "events").glob("*.tar")):
        with tarfile.open(tar) as t:
            t.extractall(dest, filter="data")
        tar.unlink()


def collect(hosts: RunHosts, run_id: str, dest: Path, workdir: Path,
            progress: Callable[[str], None] | None = None) -> dict[str, int]:
    """Stop the agents and fetch their spools into dest/events/<host>/; returns files per host."""
    try:
        r = hosts.play("collect", workdir, progress=progress,
                       extravars={**collect_vars(run_id, dest), "collect_unpack": False})
    finally:
        unpack(dest)  # what arrived from the hosts that did not fail
    return {h: int(n or 0) for h, n in hosts.reports(r, "files").items()}


class CollectStage(Stage):
    name = "collect"

    def run(self, ctx: Context) -> dict:
        return {"files": collect(ctx.hosts, ctx.dir.name, ctx.dir, ctx.dir, progress=ctx.say("collect"))}
