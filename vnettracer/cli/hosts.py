"""`vnettracer hosts check`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from vnettracer.cli.common import JSON, _json, _progress, _stop_bar, _yes, out

app = typer.Typer(no_args_is_help=True, help="Hosts of a lab or an inventory.")


@app.command("check")
def hosts_check(
    inventory: Optional[Path] = typer.Option(None, help="Ansible inventory of real hosts (default: the lab's)"),
    workdir: Optional[Path] = typer.Option(None, help="where Ansible's state goes (default: a folder beside the inventory)"),
    as_json: bool = JSON,
) -> None:
    """Gather facts from every host and show kernel, BTF, cgroup v2 and reachability (exit 3 if a host fails)."""
    from dataclasses import asdict

    from vnettracer import hosts, lab

    if inventory is None:
        inventory = lab.require().inventory
    work = workdir or inventory.resolve().parent / "hosts-check"
    t0 = time.monotonic()
    rows = hosts.check(inventory, work, progress=None if as_json else _progress)
    _stop_bar()
    failed = not rows or not all(r.reachable and not r.problem for r in rows)
    if as_json:
        _json([asdict(r) for r in rows])
        raise typer.Exit(3 if failed else 0)
    t = Table("host", "reachable", "address", "kernel", "BTF", "cgroup v2", "bpffs", "distribution", "problem")
    for r in rows:
        t.add_row(r.host, _yes(r.reachable), r.address, r.kernel, _yes(r.btf), r.cgroup2 or "[red]none[/red]",
                  r.bpffs or "[red]none[/red]", r.distribution, r.problem)
    out.print(t)
    out.print(f"{len(rows)} hosts checked in {time.monotonic() - t0:.1f} s")
    if failed:
        raise typer.Exit(3)
