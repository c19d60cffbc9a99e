"""`vnettracer trace start|stop|status`."""

from __future__ import annotations

import time
from typing import Optional

import typer
from rich.table import Table

from vnettracer.cli.common import JSON, _json, _progress, _stop_bar, experiment_arg, out, run_hosts

app = typer.Typer(no_args_is_help=True, help="Tracer agents of an experiment (roles/tracer).")


@app.command("start")
def trace_start(
    experiment: str = experiment_arg("experiment name or .yml file"),
    run_id: Optional[str] = typer.Option(None, help="names the spool folder on each host (default: a time stamp)"),
) -> None:
    """Start the agents on every traced host; returns once every hook is attached."""
    from vnettracer.stages import deploy

    hosts = run_hosts(experiment)
    rid = run_id or time.strftime("%Y%m%d-%H%M%S")
    res = deploy.start(hosts, rid, hosts.adhoc_workdir(), progress=_progress)
    _stop_bar()
    for host, hr in sorted(res.hosts.items()):
        out.print(f"{host}: {hr.reports.get('agent', 'no tracepoints here')}")
    out.print(f"tracing run {rid} ({len(hosts.exp.tracepoints)} tracepoints) in {res.seconds:.1f} s")


@app.command("stop")
def trace_stop(experiment: str = experiment_arg("experiment name or .yml file")) -> None:
    """Stop the agents; every hook is detached."""
    from vnettracer.stages import deploy

    hosts = run_hosts(experiment)
    res = deploy.stop(hosts, hosts.adhoc_workdir(), progress=_progress)
    _stop_bar()
    out.print(f"agents stopped on {len(res.hosts)} hosts in {res.seconds:.1f} s")


@app.command("status")
def trace_status(experiment: str = experiment_arg("experiment name or .yml file"),
                 as_json: bool = JSON) -> None:
    """Per tracepoint: events seen, emitted, filtered, dropped, parse failures."""
    from vnettracer.stages import deploy

    hosts = run_hosts(experiment)
    stats = deploy.status(hosts, hosts.adhoc_workdir(), progress=None if as_json else _progress)
    _stop_bar()
    if as_json:
        _json(stats)
        return
    t = Table("host", "tracepoint", "id", "seen", "emitted", "filtered", "sampled out", "dropped", "parse fail")
    for host, st in sorted(stats.items()):
        if not st:
            t.add_row(host, "[dim]no agent[/dim]", "", "", "", "", "", "", "")
        for name, c in (st.get("tracepoints") or {}).items():
            t.add_row(host, name, str(c["id"]), *(str(c[k]) for k in
                      ("seen", "emitted", "filtered", "sampled_out", "dropped", "parse_fail")))
    out.print(t)
