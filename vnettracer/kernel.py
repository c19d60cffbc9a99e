"""`vnettracer kernel install`: roles/kernel on the hosts of an inventory (the patched kernel's
packages installed, a reboot into it, uname -r and the sysctls checked)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from vnettracer.errors import VntError
from vnettracer.orchestrate import run_playbook


def install(inventory: Path, packages: Path, hosts: str = "traced", workdir: Path | None = None,
            progress: Callable[[str], None] | None = None) -> dict[str, dict]:
    """Returns per host what roles/kernel reported (release before/after, rebooted, sysctls)."""
    if not packages.is_dir():
        raise VntError(f"{packages} is not a folder of kernel packages (`make kernel` prints one)")
    workdir = workdir or inventory.resolve().parent / ".vnettracer" / f"kernel-{time.strftime('%Y%m%d-%H%M%S')}"
    r = run_playbook("kernel", inventory, workdir, progress=progress, timeout_s=3600, extravars={
        "kernel_packages_dir": str(packages.resolve()), "kernel_hosts": hosts}).raise_for_failures()
    return {h: hr.reports.get("kernel") or {} for h, hr in r.hosts.items()}
