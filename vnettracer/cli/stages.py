"""The run's stages one at a time, on the lab or an inventory, each through its role:
`vnettracer tagging enable|disable`, `vnettracer workload run`, `vnettracer collect` (beside
`trace start|stop|status`, `kernel build|install` and `store deploy`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from vnettracer.cli.common import JSON, _json, _progress, _stop_bar, experiment_arg, out, run_hosts

tagging_app = typer.Typer(no_args_is_help=True, help="Packet tags on the traced hosts (roles/tagging).")
workload_app = typer.Typer(no_args_is_help=True, help="An experiment's workloads (roles/workload).")


def _tagging(experiment: str, state: str, as_json: bool) -> dict[str, dict]:
    from vnettracer.stages.tagging import tagging

    hosts = run_hosts(experiment)
    res = tagging(hosts, state, hosts.adhoc_workdir(), progress=None if as_json else _progress)
    _stop_bar()
    if as_json:
        _json(res)
    return {} if as_json else res


@tagging_app.command("enable")
def tagging_enable(experiment: str = experiment_arg(), as_json: bool = JSON) -> None:
    """Tag packets: the patched kernel's sysctl where the kernel has it, else the sockops program."""
    for host, t in sorted(_tagging(experiment, "present", as_json).items()):
        out.print(f"{host}: {t.get('mode')}")


@tagging_app.command("disable")
def tagging_disable(experiment: str = experiment_arg(), as_json: bool = JSON) -> None:
    """Undo exactly what enable did (from each host's record); prints the sockops counters."""
    for host, t in sorted(_tagging(experiment, "absent", as_json).items()):
        out.print(f"{host}: undone ({t.get('mode')}){'; counters ' + str(t['counters']) if t.get('counters') else ''}")


@workload_app.command("run")
def workload_run(experiment: str = experiment_arg(), run_id: Optional[str] = typer.Option(
                 None, help="names the output folder on the client hosts (default: a time stamp)"),
                 as_json: bool = JSON) -> None:
    """Run the experiment's workloads in order; each client's result."""
    from vnettracer.stages.workload import run_workloads

    hosts = run_hosts(experiment)
    res = run_workloads(hosts, run_id or time.strftime("%Y%m%d-%H%M%S"), hosts.adhoc_workdir(),
                        progress=None if as_json else _progress)
    _stop_bar()
    if as_json:
        return _json(res)
    t = Table("#", "kind", "client -> server", "result")
    for w, r in zip(hosts.exp.workloads, res):
        shown = ", ".join(f"{k} {v}" for k, v in r.items() if isinstance(v, (int, float)) and k != "index")
        t.add_row(str(len(t.rows) + 1), w.kind, f"{w.client} -> {w.server}", shown or "[red]no result[/red]")
    out.print(t)


def collect_cmd(
    experiment: str = experiment_arg(),
    run_id: str = typer.Argument(..., help="the run id the agents were started with (`trace start --run-id`)"),
    dest: Optional[Path] = typer.Option(None, help="run folder to fetch into (default: results/EXPERIMENT/RUN_ID)"),
) -> None:
    """Stop the agents, fetch what the hosts hold of a run into a run folder (then: vnettracer report)."""
    from vnettracer import pipeline
    from vnettracer.stages.collect import collect

    hosts = run_hosts(experiment)
    d = (dest or pipeline.results_root() / hosts.exp.name / run_id).resolve()
    d.mkdir(parents=True, exist_ok=True)
    if not (d / "spec.yml").exists():
        pipeline.start_folder(hosts.run, d, 0)
    files = collect(hosts, run_id, d, hosts.adhoc_workdir(), progress=_progress)
    _stop_bar()
    for host, n in sorted(files.items()):
        out.print(f"{host}: {n} files")
    out.print(f"collected into {d}; `vnettracer report {d}` for its report")
