"""`vnettracer experiment run`: spec -> lab -> prepare -> ... -> results folder.

Each stage is a playbook run through `orchestrate.run_playbook`. Stages not built yet are listed
in meta.json as not run, with the reason: a run never pretends to have measured anything.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Callable

import yaml

from vnettracer import ROOT, __version__, hosts, lab, trace
from vnettracer.errors import VntError
from vnettracer.orchestrate import run_playbook
from vnettracer.spec import Run, load
from vnettracer.store import credentials
from vnettracer.store import deploy as store_deploy
from vnettracer.store.publish import publish

# Stages in pipeline order (DESIGN.md) and, for those not built yet, why they do not run.
STAGES = ["lab", "prepare", "facts", "deploy", "clock", "workload", "collect", "report"]
PACKAGES = ["ansible-core", "ansible-runner", "pydantic", "pandas", "pyarrow", "numpy", "fabric", "influxdb"]


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
    return Path(os.environ.get("VNT_RESULTS_DIR", ROOT / "results"))


def run_dir_for(run: Run, stamp: str) -> Path:
    suffix = "".join(f"_{k}-{v}" for k, v in run.params.items())
    d = results_root() / run.experiment.name / f"{stamp}{suffix}"
    d.mkdir(parents=True, exist_ok=False)
    return d


def _has_events(d: Path) -> bool:
    from vnettracer.agent.spool import read_spool

    return any(read_spool(h).num_rows for h in (d / "events").glob("*") if h.is_dir())


RERUNNABLE = ("report",)  # the other stages need the live lab and agents of their run


def rerun_stage(run_dir: Path, stage: str, progress: Callable[[str], None] = print) -> Path:
    """Run one stage again on an existing run folder (e.g. the report, after changing the analysis)."""
    if stage not in STAGES:
        raise VntError(f"unknown stage '{stage}'; stages: {', '.join(STAGES)}")
    if stage not in RERUNNABLE:
        raise VntError(f"stage '{stage}' cannot be re-run on a finished run (it needs that run's live lab and "
                       f"agents); re-runnable: {', '.join(RERUNNABLE)}")
    meta_file = run_dir / "meta.json"
    if not meta_file.is_file():
        raise VntError(f"{run_dir} is not a run folder (no meta.json)")
    from vnettracer.analysis import analyze
    from vnettracer.analysis.report import write

    t0 = time.monotonic()
    write(analyze(run_dir), run_dir)
    meta = json.loads(meta_file.read_text())
    meta.setdefault("stages", {})["report"] = {"status": "ok", "seconds": round(time.monotonic() - t0, 2),
                                               "rerun": time.time()}
    meta_file.write_text(json.dumps(meta, indent=2, default=str))
    progress(f"[report] ok ({time.monotonic() - t0:.1f} s)")
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


def _run_one(r: Run, d: Path, keep_lab: bool, progress: Callable[[str], None]) -> None:
    exp = r.experiment
    (d / "spec.yml").write_text(yaml.safe_dump(exp.model_dump(mode="json"), sort_keys=False))
    meta: dict = {"experiment": exp.name, "params": r.params, "git_revision": git_revision(),
                  "versions": versions(), "controller_kernel": platform.release(),
                  "started": time.time(), "stages": {}}

    def stage(name: str, status: str, seconds: float = 0.0, **extra) -> None:
        meta["stages"][name] = {"status": status, "seconds": round(seconds, 2), **extra}
        progress(f"[{name}] {status}" + (f" ({seconds:.1f} s)" if seconds else ""))
        (d / "meta.json").write_text(json.dumps(meta, indent=2, default=str))

    built_lab = tagged = False
    try:
        t0 = time.monotonic()
        if exp.lab is not None:
            lab.up(exp.lab.topology, exp.lab.options, progress=lambda m: progress(f"[lab] {m}"))
            built_lab = True
            inventory = lab.require().inventory
            stage("lab", "ok", time.monotonic() - t0, topology=exp.lab.topology)
        else:
            inventory = r.resolve(exp.inventory.file)
            stage("lab", "skipped", reason="inventory experiment")

        t0 = time.monotonic()
        if exp.kernel.install:
            from vnettracer import kernel

            meta["kernel"] = kernel.prepare(r, inventory, d, progress=lambda m: progress(f"[prepare] {m}"))
        influx = exp.sinks.influxdb
        creds = ep = None
        if influx.enabled:
            creds_dir = lab.lab_dir() if exp.lab else Path(r.source).parent / ".vnettracer"
            creds = credentials.load_or_create(creds_dir)
        store_args = store_deploy.role_args(creds, influx.database) if creds else {}
        res = run_playbook("prepare", inventory, d, progress=lambda m: progress(f"[prepare] {m}"),
                           extravars={**trace.host_vars(r), **store_args.get("extravars", {})},
                           secrets=store_args.get("secrets"))
        res.raise_for_failures()
        if creds:
            ep = store_deploy.endpoint(res, influx.database, creds)
            meta["influxdb"] = {"url": ep.url, "database": ep.database, "raw_events": influx.raw_events,
                                "credentials": str(credentials.credentials_file(creds_dir))}
        tagged = True  # from here on, undone on any failure (also a half-done present)
        tags = trace.tagging(r, "present", d, progress=lambda m: progress(f"[prepare] {m}"))
        meta["tagging"] = tags
        stage("prepare", "ok", time.monotonic() - t0, changed=res.changed(),
              tagging={h: t.get("mode") for h, t in tags.items()})

        t0 = time.monotonic()
        rows = hosts.check(inventory, d)
        meta["hosts"] = {row.host: asdict(row) for row in rows}
        bad = [row for row in rows if not row.reachable or row.problem]
        if bad:
            raise VntError("facts: hosts failed", [f"{b.host}: {b.problem or 'unreachable'}" for b in bad])
        stage("facts", "ok", time.monotonic() - t0)

        deployed = False
        clock_t0 = time.time_ns()  # epoch of the lab's emulated clock drift, shared by agents and probes
        if trace.clock_emulation(r):
            meta["clock_emulation"] = {"t0_ns": clock_t0, "hosts": trace.clock_emulation(r),
                                       "note": "lab emulation: all lab hosts really share one clock"}
        if exp.tracepoints:
            t0 = time.monotonic()
            started = trace.start(r, d.name, d, progress=lambda m: progress(f"[deploy] {m}"), clock_t0_ns=clock_t0,
                        influxdb=ep and {"url": ep.url, "database": ep.database, "user": ep.user,
                                         "password": ep.password, "raw_events": influx.raw_events})
            deployed = True
            stage("deploy", "ok", time.monotonic() - t0, tracepoints=len(exp.tracepoints),
                  agents={h: hr.reports.get("agent") for h, hr in started.hosts.items()})
        else:
            stage("deploy", "skipped", reason="no tracepoints")
        try:
            probed = len([h for h, hs in exp.host_names().items() if hs.role == "traced"]) > 1
            if probed:
                t0 = time.monotonic()
                before = trace.clock_probes(r, d.name, "before", d, d, clock_t0,
                                            progress=lambda m: progress(f"[clock] {m}"))
                stage("clock", "ok", time.monotonic() - t0, before=before)
            else:
                stage("clock", "skipped", reason="one traced host: nothing to compare its clock with")
            if exp.workloads and exp.overhead:
                from vnettracer import overhead

                t0 = time.monotonic()
                meta["overhead"] = overhead.run(r, d.name, d, progress=lambda m: progress(f"[workload] {m}"))
                meta["measured"] = True
                stage("workload", "ok", time.monotonic() - t0, rounds=exp.overhead.rounds,
                      variants=exp.overhead.variants)
            elif exp.workloads:
                t0 = time.monotonic()
                res = trace.workloads(r, d.name, d, progress=lambda m: progress(f"[workload] {m}"))
                meta["workloads"] = res
                meta["measured"] = True
                stage("workload", "ok", time.monotonic() - t0, count=len(res))
            else:
                stage("workload", "skipped", reason="the experiment declares no workload")
            if probed:
                t0 = time.monotonic()
                after = trace.clock_probes(r, d.name, "after", d, d, clock_t0, progress=lambda m: progress(f"[clock] {m}"))
                stage("clock", "ok", meta["stages"]["clock"]["seconds"] + time.monotonic() - t0,
                      before=meta["stages"]["clock"]["before"], after=after)
        finally:
            if deployed or exp.workloads:  # agents never outlive a run: stopped here, on success or failure
                t0 = time.monotonic()
                files = trace.collect(r, d.name, d, d, progress=lambda m: progress(f"[collect] {m}"))
                stage("collect", "ok", time.monotonic() - t0, files=files)
            undone = trace.tagging(r, "absent", d, progress=lambda m: progress(f"[collect] {m}"))
            tagged = False
            for h, t in undone.items():
                meta["tagging"].setdefault(h, {})["counters"] = t.get("counters", {})
        t0 = time.monotonic()
        if _has_events(d):
            from vnettracer.analysis import analyze
            from vnettracer.analysis.report import write

            a = analyze(d, exp)
            write(a, d)
            if ep:
                meta["influxdb"].update(publish(d, a, ep, log=lambda m: progress(f"[report] {m}")))
            stage("report", "ok", time.monotonic() - t0)
        else:
            stage("report", "skipped", reason="no events were traced (no workload ran)")
        meta["finished"] = time.time()
        meta.setdefault("measured", False)
        (d / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
    except BaseException as e:
        if tagged:  # a failure between tagging and collect: undo it before the lab goes (or stays)
            try:
                trace.tagging(r, "absent", d, progress=lambda m: progress(f"[collect] {m}"))
            except BaseException as undo:  # noqa: BLE001 - the first error is the one to report
                progress(f"[collect] undoing the tagging failed too: {undo}")
        meta["error"] = " ".join(e.lines()) if isinstance(e, VntError) else (type(e).__name__ + ": " + str(e))
        (d / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
        raise
    finally:
        if built_lab and not keep_lab:
            lab.down()
            progress("[lab] down")

