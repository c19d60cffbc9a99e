"""Shared fixtures. tests/unit/: pure logic, no root, seconds. tests/lab/: real hosts (network
namespaces, sshd, BPF, QEMU); they need root (CI runs as root): without it they fail, never skip."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from vnettracer import lab as labmod
from vnettracer.lab import netns
from vnettracer.procs import alive  # noqa: F401 - used by the lab tests

# Ctrl-C must reach the commands the tests interrupt (lab up, store serve, a run): a suite started
# as a background job of a non-interactive shell has SIGINT ignored, and its children would inherit
# that; with a handler here they start with the default (a handler does not survive exec).
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


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


_BUILDS: list[subprocess.Popen] = []
LAST = ["test_kernel.py", "test_vm_cluster.py"]


def pytest_collection_finish(session):
    """The patched kernel (test_kernel, test_vm_cluster) and the VMs' debootstrap root take 20-30
    minutes cold: begin them now, at the lowest CPU priority, so they overlap the tests before
    those that need them (which then wait for them: the build scripts take a lock and reuse a
    finished build). Ended by pid at the end of the session if still running."""
    files = {item.path.name for item in session.items}
    if session.config.option.collectonly or os.geteuid() != 0 or not files & {"test_kernel.py", "test_vm_cluster.py"}:
        return
    from vnettracer import ROOT

    jobs = [["kernel-build/build.sh", "deb", "vm"]]
    if "test_vm_cluster.py" in files:
        jobs.append(["kernel-build/mkvm.sh", "rootfs"])
    (ROOT / "build").mkdir(exist_ok=True)
    with open(ROOT / "build" / "background-builds.log", "ab") as log:
        for argv in jobs:
            _BUILDS.append(subprocess.Popen(["nice", "-n", "19", *argv], cwd=ROOT, stdout=log, stderr=log,
                                            stdin=subprocess.DEVNULL, start_new_session=True))


def pytest_sessionfinish(session, exitstatus):
    for p in _BUILDS:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)  # its own session: the build script and its make/compilers
            p.wait(timeout=60)


def pytest_collection_modifyitems(items):
    """Every test under tests/lab/ is a lab test (root, real hosts, minutes); tests/unit/ needs
    neither (`make test-unit`)."""
    lab_tests = Path(__file__).parent / "lab"
    for item in items:
        if lab_tests in item.path.parents:
            item.add_marker(pytest.mark.lab)
    # the tests that need the patched kernel last: its build (begun in the background at collection)
    # then overlaps every other test
    items.sort(key=lambda item: LAST.index(item.path.name) + 1 if item.path.name in LAST else 0)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A VntError's problem lines (host, task, message) in the failure report."""
    outcome = yield
    rep = outcome.get_result()
    if call.excinfo is not None and hasattr(call.excinfo.value, "lines"):
        rep.sections.append(("vnettracer error", "\n".join(call.excinfo.value.lines())))
