"""The hosts of one run, shared by its stages: which inventory reaches them (the running lab's, or
the experiment's own), worked out once, and the one door to their playbooks."""

from __future__ import annotations

import time
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

from vnettracer import lab
from vnettracer.errors import VntError
from vnettracer.orchestrate import PlaybookResult, group_members, inventory_listing, run_playbook
from vnettracer.spec import HostSpec, Run


class RunHosts:
    def __init__(self, run: Run):
        self.run = run
        self.exp = run.experiment

    @cached_property
    def inventory(self) -> Path:
        """The running lab's inventory (it must be the lab the experiment asks for), or the
        experiment's. The netns lab's says its hosts run this venv (tracer_python); other hosts
        run the host package."""
        if self.exp.lab is None:
            inv = self.run.inventory_file()
            if problems := inventory_problems(self.exp.host_names(), inventory_listing(inv)):
                raise VntError(f"inventory {inv} does not hold the experiment's hosts:\n  " + "\n  ".join(problems))
            return inv
        lb = lab.require()
        if lb.plan.topology != self.exp.lab.topology or {h.name for h in lb.plan.hosts} != set(self.exp.host_names()):
            raise VntError(f"the lab that is up ({lb.plan.topology}, hosts {', '.join(h.name for h in lb.plan.hosts)}) "
                           f"is not the one {self.exp.name} needs; run `vnettracer lab up` with its topology")
        return lb.inventory

    @property
    def shares_controller(self) -> bool:
        """Netns lab hosts run the controller's own files (no host package to install)."""
        plan = self.exp.lab_plan()
        return plan is not None and plan.shares_controller

    def play(self, playbook: str, workdir: Path, progress: Callable[[str], None] | None = None,
             **kwargs: Any) -> PlaybookResult:
        """Run one playbook on the experiment's hosts (an inventory may hold more); any failed host
        raises (HostError, one line per host)."""
        kwargs.setdefault("limit", self.pattern)
        return run_playbook(playbook, self.inventory, workdir, progress=progress, **kwargs).raise_for_failures()

    @property
    def pattern(self) -> str:
        """The experiment's hosts as an Ansible host pattern."""
        return ",".join(sorted(self.exp.host_names()))

    @staticmethod
    def reports(result: PlaybookResult, key: str) -> dict[str, Any]:
        """Per host: what its `report: KEY` task said (None where it said nothing)."""
        return {h: hr.reports.get(key) for h, hr in result.hosts.items()}

    @property
    def own_dir(self) -> Path:
        """Where vnettracer keeps what belongs to these hosts (InfluxDB credentials, hand-run work):
        the lab's folder, or .vnettracer beside the experiment file."""
        return lab.lab_dir() if self.exp.lab else Path(self.run.source).parent / ".vnettracer"

    def adhoc_workdir(self) -> Path:
        """Where Ansible's files of a command run by hand (`vnettracer trace ...`) go."""
        base = self.own_dir / "trace" if self.exp.lab else self.own_dir
        d = base / time.strftime("%Y%m%d-%H%M%S")
        d.mkdir(parents=True, exist_ok=True)
        return d


def inventory_problems(hosts: dict[str, HostSpec], listing: dict) -> list[str]:
    """What keeps an inventory from running the experiment's hosts: a host it does not hold, or
    holds outside the group the playbooks run its role on (traced, db)."""
    known = set(listing["_meta"]["hostvars"])
    out = []
    for name, h in hosts.items():
        if name not in known:
            out.append(f"{name}: not in the inventory (it holds {', '.join(sorted(known)) or 'no host'})")
        elif name not in group_members(listing, h.role):
            out.append(f"{name}: not in the inventory's group '{h.role}', where the experiment's {h.role} hosts go")
    return out
