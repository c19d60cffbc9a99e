"""`vnettracer experiment run`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer

from vnettracer.cli.common import _progress, _stop_bar, experiment_arg, out
from vnettracer.errors import VntError

app = typer.Typer(no_args_is_help=True, help="Run experiments end to end.")


@app.command("vars")
def experiment_vars(
    name: str = experiment_arg("experiment name or .yml file (without loop variables)"),
    dest: Path = typer.Argument(..., help="a new run folder: spec.yml, meta.json and vars.json go there"),
) -> None:
    """What vnettracer passes to the roles, for a run with plain ansible-playbook (playbooks/site.yml);
    `vnettracer report DEST` afterwards."""
    from vnettracer import pipeline
    from vnettracer.spec import load_one

    if dest.exists():
        raise VntError(f"{dest} exists; give a new folder (its name is the run id on the hosts)")
    d = pipeline.by_hand(name, dest.resolve())
    meta = json.loads((d / "meta.json").read_text())
    out.print(f"ansible-playbook -i {meta['by_hand']['inventory']} playbooks/site.yml -e @{d / 'vars.json'}")
    out.print(f"vnettracer report {d}")
    if load_one(name).experiment.sinks.influxdb.enabled:
        out.print("note: sinks.influxdb is left off here (its passwords are secrets); `experiment run` deploys it")


@app.command("run")
def experiment_run(
    name: str = experiment_arg("experiment name (experiments/NAME.yml) or a .yml file; with --stage: a run folder"),
    keep_lab: bool = typer.Option(False, "--keep-lab", help="leave the lab up afterwards"),
    stage: Optional[str] = typer.Option(None, help="run one stage again on an existing run folder (collect, report)"),
    results_list: Optional[Path] = typer.Option(None, help="also write the run folders to this file, one per "
                                                "line (for scripts and CI)"),
) -> None:
    """Run an experiment end to end; prints where its results are."""
    from vnettracer import pipeline

    t0 = time.monotonic()
    if stage is not None:
        d = pipeline.rerun_stage(Path(name), stage, progress=_progress)
        _stop_bar()
        out.print(f"stage {stage} of {d} done in {time.monotonic() - t0:.1f} s")
        out.print(f"  report:  {d / 'report.md'}  (and {d / 'report.html'})")
        return
    dirs = pipeline.run(name, keep_lab=keep_lab, progress=_progress)
    _stop_bar()
    if results_list is not None:
        results_list.write_text("".join(f"{d}\n" for d in dirs))
    out.print(f"experiment {name}: {len(dirs)} run(s) in {time.monotonic() - t0:.1f} s")
    for d in dirs:
        out.print(f"  results: {d}")
        if (d / "report.md").exists():
            out.print(f"  report:  {d / 'report.md'}  (and {d / 'report.html'})")
        else:
            out.print("  no report: nothing was traced, see meta.json")
