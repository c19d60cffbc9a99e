"""Stage lab: bring the experiment's embedded lab up (an inventory experiment has its hosts)."""

from __future__ import annotations

from vnettracer import lab
from vnettracer.stages import Context, Stage


class LabStage(Stage):
    name = "lab"

    def skip(self, ctx: Context) -> str | None:
        return "inventory experiment" if ctx.exp.lab is None else None

    def run(self, ctx: Context) -> dict:
        lab.up(ctx.exp.lab.topology, ctx.exp.lab.options, progress=ctx.say("lab"))
        return {"topology": ctx.exp.lab.topology}

    def undo(self, ctx: Context) -> None:
        if not ctx.keep_lab:
            lab.down()
            ctx.progress("[lab] down")
