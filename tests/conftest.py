"""Shared fixtures. Lab tests need root (CI runs as root): without it they fail, never skip."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from vnettracer import lab as labmod
from vnettracer.lab import netns
from vnettracer.procs import alive  # noqa: F401 - used by the lab tests


def leftovers() -> list[str]:
    """Everything of a lab still on the machine: what `lab down` must leave empty."""
    left = [f"netns {n}" for n in netns.lab_netns()]
    left += [f"link {n}" for n in netns.lab_root_links()]
    left += [f"cgroup {c}" for c in netns.lab_cgroups()]
    with open("/proc/self/mountinfo") as f:
        left += [f"mount {line.split()[4]}" for line in f if str(labmod.lab_dir()) in line or "/var/lib/vnettracer" in line]
    if labmod.lab_dir().exists():
        left.append(f"dir {labmod.lab_dir()}")
    for pid in filter(str.isdigit, os.listdir("/proc")):  # the VM lab's QEMU and supervisors
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f"{labmod.lab_dir()}/vms/" in cmd and int(pid) != os.getpid():
            left.append(f"process {pid} {cmd[:80]}")
    return left


@pytest.fixture(scope="session")
def root():
    if os.geteuid() != 0:
        pytest.fail("lab tests need root (network namespaces, sshd): run `make test` as root")


@pytest.fixture(scope="module")
def lab(root):
    """A flannel-vxlan lab for the tests of one module; removed afterwards, also on failure."""
    try:
        yield labmod.up(progress=lambda m: None)
    finally:
        labmod.down()


def vnettracer(*args: str, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    """Run the CLI as a user would."""
    exe = Path(os.sys.executable).parent / "vnettracer"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout, **kw)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A VntError's problem lines (host, task, message) in the failure report."""
    outcome = yield
    rep = outcome.get_result()
    if call.excinfo is not None and hasattr(call.excinfo.value, "lines"):
        rep.sections.append(("vnettracer error", "\n".join(call.excinfo.value.lines())))
