"""`vnettracer kernel install`: roles/kernel on the hosts of an inventory (the patched kernel's
packages installed, a reboot into it, uname -r and the sysctls checked)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from vnettracer import BUILD, ROOT
from vnettracer.errors import VntError
from vnettracer.orchestrate import run_playbook

if TYPE_CHECKING:
    from vnettracer.spec import Run


def install(inventory: Path, packages: Path, hosts: str = "traced", workdir: Path | None = None,
            progress: Callable[[str], None] | None = None) -> dict[str, dict]:
    """Returns per host what roles/kernel reported (release before/after, rebooted, sysctls)."""
    if not packages.is_dir():
        raise VntError(f"{packages} is not a folder of kernel packages (`make kernel` prints one)")
    workdir = workdir or inventory.resolve().parent / ".vnettracer" / f"kernel-{time.strftime('%Y%m%d-%H%M%S')}"
    r = run_playbook("kernel", inventory, workdir, progress=progress, timeout_s=3600, extravars={
        "kernel_packages_dir": str(packages.resolve()), "kernel_hosts": hosts}).raise_for_failures()
    return {h: hr.reports.get("kernel") or {} for h, hr in r.hosts.items()}


def build_packages(config: str = "vm", progress: Callable[[str], None] | None = None) -> Path:
    """kernel-build/build.sh deb CONFIG: the folder of the patched kernel's packages (reused while
    patches, config fragment and script are unchanged; cold, the vm config takes 15-25 minutes on 2
    cores)."""
    say = progress or (lambda m: None)
    say(f"patched kernel packages: kernel-build/build.sh deb {config} (reused when built before; a first build "
        f"takes 20-40 minutes on 2 cores, its log under {BUILD / 'kernel'})")
    p = subprocess.Popen([str(ROOT / "kernel-build" / "build.sh"), "deb", config], stdout=subprocess.PIPE,
                         env={**os.environ, "KERNEL_BUILD_DIR": str(BUILD / "kernel")},
                         stderr=subprocess.PIPE, text=True)
    out, err = p.communicate()
    if p.returncode != 0:
        raise VntError(f"kernel: building the packages failed: {err.strip()[-800:]}")
    for line in err.strip().splitlines()[-2:]:
        say(line)
    return Path(out.strip().splitlines()[-1])


def prepare(run: Run, inventory: Path, workdir: Path, progress: Callable[[str], None] | None = None) -> dict:
    """The experiment's `kernel:` section: packages (given or built), installed on the traced hosts,
    rebooted into; per host what roles/kernel reported."""
    k = run.experiment.kernel
    pkgs = run.resolve(k.packages) if k.packages else build_packages(k.config, progress)
    traced = sorted(n for n, h in run.experiment.host_names().items() if h.role == "traced")  # not others the inventory holds
    return install(inventory, pkgs, ",".join(traced), workdir=workdir, progress=progress)
