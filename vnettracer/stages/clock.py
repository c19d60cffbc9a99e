"""Stage clock: NTP-style probes (roles/clock) from the reference host to every other traced host
over the management network, before and after the workload; CSVs land in the run's clock/."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from vnettracer.stages import Context, Stage
from vnettracer.stages.hosts import RunHosts


def probe_vars(hosts: RunHosts, run_id: str, dest: Path, clock_t0_ns: int, addresses: dict[str, str] | None = None) -> dict:
    """What playbooks/clock.yml gets, but for the phase (before or after the workload). addresses:
    the hosts' management addresses where the prepare stage found them (roles/clock then does not
    look for them again)."""
    exp = hosts.exp
    ref = exp.reference_host
    return {"clock_reference": ref, "clock_targets": [h for h in exp.traced_hosts if h != ref], "clock_run_id": run_id,
            "clock_dest": str(dest.resolve()), "clock_emulation": exp.clock_errors(), "clock_t0_ns": clock_t0_ns,
            "clock_addresses": addresses or {}}


def probes(hosts: RunHosts, run_id: str, phase: str, dest: Path, workdir: Path, clock_t0_ns: int,
           progress: Callable[[str], None] | None = None, addresses: dict[str, str] | None = None) -> dict[str, int]:
    """One round of probes; returns samples per host."""
    r = hosts.play("clock", workdir, progress=progress,
                   extravars={**probe_vars(hosts, run_id, dest, clock_t0_ns, addresses), "clock_phase": phase})
    return {h: int(n) for h, n in (hosts.reports(r, "probes").get(hosts.exp.reference_host) or {}).items()}


class ClockStage(Stage):
    name = "clock"

    def __init__(self, phase: str):
        self.phase = phase

    def skip(self, ctx: Context) -> str | None:
        return None if len(ctx.exp.traced_hosts) > 1 else "one traced host: nothing to compare its clock with"

    def earlier_seconds(self, ctx: Context) -> float:
        return ctx.meta["stages"]["clock"]["seconds"] if self.phase == "after" else 0.0

    def run(self, ctx: Context) -> dict:
        rows = ctx.state.get("host_rows") or []  # the prepare stage's, with each host's address
        addresses = {row.host: row.address for row in rows if row.address}
        got = probes(ctx.hosts, ctx.dir.name, self.phase, ctx.dir, ctx.dir, ctx.clock_t0_ns, progress=ctx.say("clock"),
                     addresses=addresses)
        earlier = {k: v for k, v in ctx.meta["stages"].get("clock", {}).items() if k == "before"}
        return {**earlier, self.phase: got}
