"""Stage facts: every host answers and can trace (kernel, BTF, cgroup v2), recorded in meta.json.
The prepare stage's playbook gathers the same facts (one playbook fewer); without it (a run whose
prepare did not report them) playbooks/hosts-check.yml runs."""

from __future__ import annotations

from dataclasses import asdict

from vnettracer import hosts
from vnettracer.errors import HostError
from vnettracer.stages import Context, Stage


class FactsStage(Stage):
    name = "facts"

    def run(self, ctx: Context) -> dict:
        rows = ctx.state.get("host_rows") or hosts.check(ctx.inventory, ctx.dir)
        ctx.meta["hosts"] = {row.host: asdict(row) for row in rows}
        bad = [row for row in rows if not row.reachable or row.problem]
        if bad:
            raise HostError("facts: hosts failed", [f"{b.host}: {b.problem or 'unreachable'}" for b in bad])
        return {}
