"""`vnettracer experiment run`: spec -> stages (vnettracer/stages/) -> results folder.

A stage that does not apply is listed in meta.json as skipped, with the reason: a run never
pretends to have measured anything.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Callable

import yaml

from vnettracer import INSTALLED, ROOT, __version__
from vnettracer.errors import VntError
from vnettracer.spec import Run, load
from vnettracer.stages import Context, Runner, run_stages
from vnettracer.stages.clock import ClockStage
from vnettracer.stages.collect import CollectStage
from vnettracer.stages.deploy import DeployStage
from vnettracer.stages.facts import FactsStage
from vnettracer.stages.lab import LabStage
from vnettracer.stages.prepare import PrepareStage
from vnettracer.stages.report import ReportStage
from vnettracer.stages.tagging import TaggingStage
from vnettracer.stages.workload import WorkloadStage

# Stages in run order (vnettracer/stages/__init__.py)
STAGES = ["lab", "prepare", "tagging", "facts", "deploy", "clock", "workload", "collect", "report"]
PACKAGES = ["ansible-core", "ansible-runner", "pydantic", "pandas", "pyarrow", "numpy", "fabric", "influxdb", "requests"]


def git_revision() -> str:
    try:
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def versions() -> dict[str, str]:
    out = {"vnettracer": __version__, "python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = "missing"
    return out


def results_root() -> Path:
    default = Path.cwd() / "results" if INSTALLED else ROOT / "results"
    return Path(os.environ.get("VNT_RESULTS_DIR") or default)


def run_dir_for(run: Run, stamp: str) -> Path:
    suffix = "".join(f"_{k}-{v}" for k, v in run.params.items())
    d = results_root() / run.experiment.name / f"{stamp}{suffix}"
    d.mkdir(parents=True, exist_ok=False)
    return d


# stages that make sense on a run folder: collect (what the hosts still hold, e.g. after the
# controller was killed mid-run; the run's lab or inventory must still be there), then report
RERUNNABLE = ("collect", "report")


def rerun_stage(run_dir: Path, stage: str, progress: Callable[[str], None] = print) -> Path:
    """Run one stage again on an existing run folder (e.g. the report, after changing the analysis)."""
    if stage not in STAGES:
        raise VntError(f"unknown stage '{stage}'; stages: {', '.join(STAGES)}")
    if stage not in RERUNNABLE:
        raise VntError(f"stage '{stage}' cannot be re-run on a finished run (it needs that run's live lab and "
                       f"agents); re-runnable: {', '.join(RERUNNABLE)}")
    from vnettracer.analysis import inputs

    meta = inputs.read_meta(run_dir)  # checked before anything is written
    exp = inputs.read_spec(run_dir)
    r = Run(params=meta.get("params") or {}, experiment=exp, source=meta.get("source") or str(run_dir / "spec.yml"))
    ctx = Context(r, run_dir, meta, progress)
    meta.setdefault("stages", {})
    runner = Runner(ctx)
    if stage == "collect":  # after a controller died mid-run: stop, fetch, untag
        runner(CollectStage())
        TaggingStage().undo(ctx)
    meta["rerun"] = {"stage": stage, "at": time.time()}
    runner(ReportStage())
    return run_dir


def run(name_or_file: str, keep_lab: bool = False, progress: Callable[[str], None] = print) -> list[Path]:
    """Run every combination of the experiment's loop variables; returns the run folders."""
    runs = load(name_or_file)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dirs = []
    for i, r in enumerate(runs, start=1):
        if len(runs) > 1:
            progress(f"run {i}/{len(runs)}: {r.params}")
        d = run_dir_for(r, stamp)
        dirs.append(d)
        _run_one(r, d, keep_lab=keep_lab and i == len(runs), progress=progress)
    if len(runs) > 1:
        index = [{"params": r.params, "dir": str(d.relative_to(results_root()))} for r, d in zip(runs, dirs)]
        (dirs[0].parent / f"{stamp}-sweep.json").write_text(json.dumps(index, indent=2))
    return dirs


def start_folder(r: Run, d: Path, clock_t0_ns: int) -> dict:
    """spec.yml and the run's meta.json as a run begins."""
    exp = r.experiment
    (d / "spec.yml").write_text(yaml.safe_dump(exp.model_dump(mode="json"), sort_keys=False))
    meta: dict = {"experiment": exp.name, "params": r.params, "source": str(Path(r.source).resolve()),
                  "git_revision": git_revision(), "versions": versions(), "controller_kernel": platform.release(),
                  "started": time.time(), "stages": {}}
    if exp.clock_errors():  # the epoch of the emulated drift, shared by agents and probes
        meta["clock_emulation"] = {"t0_ns": clock_t0_ns, "hosts": exp.clock_errors(),
                                   "note": "lab emulation: all lab hosts really share one clock"}
    (d / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
    return meta


def by_hand(name_or_file: str, dest: Path) -> Path:
    """A run folder for a run by plain Ansible: spec.yml, meta.json and vars.json, every variable the
    stages would pass (`ansible-playbook -i INVENTORY playbooks/site.yml -e @DEST/vars.json`, then
    `vnettracer report DEST`). InfluxDB is left to `experiment run` (its passwords are secrets)."""
    from vnettracer import hostpkg
    from vnettracer.spec import load_one
    from vnettracer.stages.clock import probe_vars
    from vnettracer.stages.collect import collect_vars
    from vnettracer.stages.deploy import start_vars
    from vnettracer.stages.hosts import RunHosts
    from vnettracer.stages.tagging import tagging_vars
    from vnettracer.stages.workload import workload_vars

    r = load_one(name_or_file)
    hosts, t0 = RunHosts(r), time.time_ns()
    dest.mkdir(parents=True, exist_ok=False)
    meta = start_folder(r, dest, t0)
    run_id = dest.name
    plain = {**({} if hosts.shares_controller else hostpkg.role_vars()), **tagging_vars(hosts),
             **start_vars(hosts, run_id, t0), **probe_vars(hosts, run_id, dest, t0), **workload_vars(hosts, run_id),
             **collect_vars(run_id, dest), "vnt_influxdb": False}
    (dest / "vars.json").write_text(json.dumps(plain, indent=1))
    meta["by_hand"] = {"inventory": str(hosts.inventory), "vars": str(dest / "vars.json")}
    (dest / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
    return dest


def _run_one(r: Run, d: Path, keep_lab: bool, progress: Callable[[str], None]) -> None:
    t0 = time.time_ns()
    meta = start_folder(r, d, t0)
    ctx = Context(r, d, meta, progress, keep_lab=keep_lab, clock_t0_ns=t0)
    run_stages(ctx, setup=[LabStage()],
               measure=[PrepareStage(), FactsStage(), TaggingStage(), DeployStage(), ClockStage("before"),
                        WorkloadStage(), ClockStage("after")],
               finish=[ReportStage()])
