"""`vnettracer lab up|down|status`."""

from __future__ import annotations

import time
from typing import Optional

import typer
from pydantic import ValidationError
from rich.table import Table

from vnettracer.cli.common import JSON, _json, _progress, _stop_bar, _yes, out
from vnettracer.errors import VntError

app = typer.Typer(no_args_is_help=True, help="The embedded lab: hosts made of network namespaces with real sshd.")


@app.command("up")
def lab_up(
    topology: str = typer.Option("flannel-vxlan", help="flannel-vxlan (2+ hosts, VXLAN overlay), bridge (1 host) "
                                 "or vms (the flannel-vxlan layout on Debian VMs under QEMU, plus a db VM)"),
    hosts: Optional[int] = typer.Option(None, help="traced hosts"),
    containers: Optional[int] = typer.Option(None, help="containers per host"),
    vm_memory: Optional[int] = typer.Option(None, help="vms: MB of memory per VM"),
    vm_accel: Optional[str] = typer.Option(None, help="vms: tcg (anywhere) or kvm"),
) -> None:
    """Build the lab (after removing leftovers of an earlier one)."""
    from vnettracer import lab
    from vnettracer.lab.topology import LabOptions

    opts: dict = {k: v for k, v in (("hosts", hosts), ("containers_per_host", containers)) if v is not None}
    vm = {k: v for k, v in (("memory_mb", vm_memory), ("accel", vm_accel)) if v is not None}
    if vm:
        opts["vm"] = vm
    try:
        options = LabOptions(**opts)
    except ValidationError as e:
        raise VntError("lab: bad option", [f"{'.'.join(map(str, x['loc'])) or 'options'}: {x['msg']}"
                                           for x in e.errors()]) from None
    t0 = time.monotonic()
    lb = lab.up(topology, options, progress=_progress)
    _stop_bar()
    out.print(f"lab up ({topology}, {time.monotonic() - t0:.1f} s); inventory: {lb.inventory}")


@app.command("down")
def lab_down() -> None:
    """Remove every namespace, link, process and file the lab made."""
    from vnettracer import lab

    removed = lab.down()
    out.print(f"lab down: removed {len(removed)} objects" if removed else "lab down: nothing to remove")


@app.command("status")
def lab_status(as_json: bool = JSON) -> None:
    """Hosts, addresses and whether each answers ssh (exit 3 if one does not)."""
    from dataclasses import asdict

    from vnettracer import lab

    rows = lab.status()
    if as_json:
        _json([asdict(r) for r in rows])
        raise typer.Exit(0 if all(r.ssh_ok for r in rows) else 3)
    t = Table("host", "role", "netns", "mgmt", "data path", "netns", "sshd", "ssh")
    for r in rows:
        t.add_row(r.name, r.role, r.netns, r.mgmt_ip, r.data_ip, _yes(r.netns_present), _yes(r.sshd_running), _yes(r.ssh_ok))
    out.print(t)
    if not all(r.ssh_ok for r in rows):
        raise typer.Exit(3)
