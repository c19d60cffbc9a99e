"""`vnettracer kernel build|install`."""

from __future__ import annotations

from pathlib import Path

import typer

from vnettracer.cli.common import _progress, _stop_bar, out

app = typer.Typer(no_args_is_help=True, help="The patched kernel on real hosts (roles/kernel).")


@app.command("build")
def kernel_build(config: str = typer.Option("vm", help="vm (defconfig + kvm_guest: quick, boots Debian under "
                                             "QEMU), cloud (Debian's cloud-amd64 config) or generic (Debian's amd64)")) -> None:
    """Build the patched kernel's Debian packages (kernel-build/build.sh; reused while nothing changed)."""
    from vnettracer import kernel
    from vnettracer.errors import VntError

    if config not in ("vm", "cloud", "generic"):
        raise VntError(f"--config {config}: vm, cloud or generic")
    folder = kernel.build_packages(config, progress=_progress)
    _stop_bar()
    out.print(f"packages: {folder}  (vnettracer kernel install --packages {folder} ...)")


@app.command("install")
def kernel_install(
    inventory: Path = typer.Option(..., help="Ansible inventory of the hosts"),
    packages: Path = typer.Option(..., help="folder with the kernel's .deb packages (`make kernel` prints it)"),
    hosts: str = typer.Option("traced", help="inventory group or host pattern"),
) -> None:
    """Install the patched kernel, reboot into it, check uname -r and net.ipv4.tcp_option."""
    from vnettracer import kernel

    res = kernel.install(inventory, packages, hosts, progress=_progress)
    _stop_bar()
    for host, rep in sorted(res.items()):
        out.print(f"{host}: {rep.get('before')} -> {rep.get('release')}"
                  f"{' (rebooted)' if str(rep.get('rebooted')).lower() == 'true' else ' (already running it)'}, "
                  f"net.ipv4.tcp_option={rep.get('tcp_option')}")
