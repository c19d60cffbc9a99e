"""The run as a list of stages: each an object with `run(ctx)` and, where it changes the hosts,
`undo(ctx)`. One runner times each stage, records it in meta.json and pushes its undo on an
`ExitStack`, so a failure (or Ctrl-C) undoes exactly what was done, newest first.

    lab ─► prepare ─► facts ─► tagging ─► deploy ─► clock ─► workload ─► clock ─► (collect) ─► report
    └ lab down                  └ untag     └ collect (stops the agents, fetches their spools)

One module per stage (lab, prepare, facts, tagging, deploy, clock, workload, collect, report), all
reaching the hosts through one RunHosts (hosts.py). Overview: docs/architecture.md.
"""

from __future__ import annotations

import json
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from vnettracer.errors import VntError
from vnettracer.orchestrate import ssh_session
from vnettracer.spec import Run
from vnettracer.stages.hosts import RunHosts


@dataclass
class Context:
    """What the stages of one run share."""

    run: Run
    dir: Path
    meta: dict
    progress: Callable[[str], None]
    keep_lab: bool = False
    endpoint: Any = None  # the InfluxDB writer's Endpoint, when the run writes to InfluxDB
    clock_t0_ns: int = 0
    state: dict = field(default_factory=dict)  # what one stage hands the next (e.g. the analysis)

    def __post_init__(self) -> None:
        self.hosts = RunHosts(self.run)

    @property
    def exp(self):
        return self.run.experiment

    @property
    def inventory(self) -> Path:
        return self.hosts.inventory

    def say(self, stage: str) -> Callable[[str], None]:
        return lambda m: self.progress(f"[{stage}] {m}")

    def save(self) -> None:
        (self.dir / "meta.json").write_text(json.dumps(self.meta, indent=2, default=str))

    def record(self, name: str, status: str, seconds: float = 0.0, **extra) -> None:
        self.meta["stages"][name] = {"status": status, "seconds": round(seconds, 2), **extra}
        self.progress(f"[{name}] {status}" + (f" ({seconds:.1f} s)" if seconds else ""))
        self.save()


class Stage:
    """One step of the run. `skip` says why it does not apply (None: it runs); `run` returns what
    meta.json records for it; `undo`, where defined, is pushed once `run` returned (or before it
    begins: `undo_from_start`, for a stage whose half-done work must be undone too; such an undo
    finds out itself whether there is anything to undo)."""

    name = ""
    undo_from_start = False

    def skip(self, ctx: Context) -> str | None:
        return None

    def run(self, ctx: Context) -> dict:
        raise NotImplementedError

    def earlier_seconds(self, ctx: Context) -> float:
        """Time a stage run in parts (the clock probes before and after) already took."""
        return 0.0

    def after(self, ctx: Context) -> None:
        """Once recorded: e.g. fail the run over what the record says (the report's lost events)."""

    undo: Callable[[Context], None] | None = None


class Runner:
    def __init__(self, ctx: Context):
        self.ctx = ctx

    def __call__(self, stage: Stage, undo_on: ExitStack | None = None) -> dict | None:
        """Run one stage; with `undo_on`, its undo is pushed there. Returns its record (None: skipped)."""
        ctx = self.ctx
        if undo_on is not None and stage.undo is not None and stage.undo_from_start:
            undo_on.push(self._undoer(stage))  # its undo decides itself whether there is anything to undo
        reason = stage.skip(ctx)
        if reason is not None:
            ctx.record(stage.name, "skipped", reason=reason)
            return None
        t0 = time.monotonic()
        extra = stage.run(ctx) or {}
        ctx.record(stage.name, "ok", stage.earlier_seconds(ctx) + time.monotonic() - t0, **extra)
        if undo_on is not None and stage.undo is not None and not stage.undo_from_start:
            undo_on.push(self._undoer(stage))
        stage.after(ctx)
        return extra

    def _undoer(self, stage: Stage):
        """An exit callback: on success the undo's own error is raised; during a failure it is only
        reported, so that the first error is the one the user sees."""

        undo = stage.undo
        assert undo is not None

        def exit_(exc_type, exc, tb) -> bool:
            try:
                undo(self.ctx)
            except BaseException as e:  # noqa: BLE001
                if exc is None:
                    raise
                self.ctx.progress(f"[{stage.name}] undoing it failed too: {e}")
            return False

        return exit_


def run_stages(ctx: Context, setup: list[Stage], measure: list[Stage], finish: list[Stage]) -> None:
    """setup's undos (the lab) last until the very end; measure's (tagging, agents) are undone when
    the measurement ends, before the report; finish (the report) runs on what was collected."""
    runner = Runner(ctx)
    try:
        with ExitStack() as outer:
            for s in setup:
                runner(s, outer)
            # one ssh master per host for all of measure's playbooks and their undos (orchestrate.py),
            # closed before setup's undo takes the hosts down
            with ssh_session(), ExitStack() as inner:
                for s in measure:
                    runner(s, inner)
            for s in finish:
                runner(s)
        ctx.meta["finished"] = time.time()
        ctx.meta.setdefault("measured", False)
        ctx.save()
    except BaseException as e:
        ctx.meta["error"] = " ".join(e.lines()) if isinstance(e, VntError) else f"{type(e).__name__}: {e}"
        ctx.save()
        raise
