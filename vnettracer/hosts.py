"""`vnettracer hosts check`: facts from every host of an inventory through Ansible."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from vnettracer.orchestrate import PlaybookResult, run_playbook


@dataclass
class HostCheck:
    host: str
    reachable: bool
    address: str = ""  # where the other hosts reach it (roles/common/action_plugins/vnt_host.py)
    kernel: str = ""
    btf: bool = False
    cgroup2: str = ""  # where cgroup v2 is mounted, "" if nowhere
    bpffs: str = ""
    distribution: str = ""
    problem: str = ""


def check(inventory: Path, workdir: Path, progress: Callable[[str], None] | None = None) -> list[HostCheck]:
    """One row per host of the inventory; unreachable or failing hosts are rows too, not errors."""
    return rows(run_playbook("hosts-check", inventory, workdir, progress=progress))


def rows(result: PlaybookResult) -> list[HostCheck]:
    """The rows from a playbook that ran roles/common's facts tasks (hosts-check, prepare)."""
    problems = {f.host: str(f.msg) for f in result.failures}
    out = []
    for host, hr in sorted(result.hosts.items()):
        rep = hr.reports.get("host") or {}
        out.append(HostCheck(
            host=host,
            reachable=hr.unreachable == 0,
            address=rep.get("address", ""),
            kernel=rep.get("kernel", ""),
            btf=bool(rep.get("btf")),
            cgroup2=", ".join(rep.get("cgroup2") or []),
            bpffs=", ".join(rep.get("bpffs") or []),
            distribution=rep.get("distribution", ""),
            problem=problems.get(host, ""),
        ))
    return out
