"""Runtime control targets come from the same inventory, keys and known_hosts Ansible uses."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vnettracer import ROOT, hostpkg, runtime
from vnettracer.spec import load


def test_targets_from_an_inventory(tmp_path):
    (tmp_path / "cluster.yml").write_text(
        "all:\n  vars:\n    ansible_user: admin\n    ansible_ssh_private_key_file: /keys/lab\n"
        "    ansible_ssh_common_args: -o UserKnownHostsFile=cluster_known_hosts -o StrictHostKeyChecking=yes\n"
        "  children:\n    traced:\n      hosts:\n        node1: {ansible_host: 192.0.2.11}\n"
        "        node2: {ansible_host: 192.0.2.12, tracer_venv: /srv/vnt}\n"
        "        node3: {ansible_host: 192.0.2.13, tracer_python: /usr/local/bin/python3.11}\n")
    exp = tmp_path / "exp.yml"
    exp.write_text("name: cl\ninventory: {file: cluster.yml}\nhosts:\n  node1: {role: traced}\n  node2: {role: traced}\n"
                   "  node3: {role: traced}\n")
    (run,) = load(str(exp))
    t = runtime.targets(run)
    assert (t["node1"].address, t["node1"].user, t["node1"].key) == ("192.0.2.11", "admin", "/keys/lab")
    assert t["node1"].known_hosts == str(tmp_path / "cluster_known_hosts")
    assert t["node1"].python == "/opt/vnettracer/venv/bin/python" and t["node2"].python == "/srv/vnt/bin/python"
    assert t["node3"].python == "/usr/local/bin/python3.11"  # as roles/hostpkg resolves it for the roles
    hostpkg_defaults = (ROOT / "roles" / "hostpkg" / "defaults" / "main.yml").read_text()
    assert f"default('{hostpkg.VENV}')" in hostpkg_defaults


def test_pidfile_names_a_process_only_if_it_is_the_one(tmp_path):
    """A pid file is believed only for a live process started before the file was written and
    whose command line matches: a pid reused by a later process is never signalled."""
    import subprocess
    import sys
    import time

    from vnettracer.procs import from_pidfile

    pf = tmp_path / "x.pid"
    early = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "vnettracer", "agent"])
    try:
        time.sleep(0.2)
        pf.write_text(f"{early.pid}\n")
        assert from_pidfile(pf, "vnettracer", "agent") == early.pid
        assert from_pidfile(pf, "redis-server") is None  # not what the file is for
        time.sleep(1.2)
        late = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "vnettracer", "agent"])
        try:
            os.utime(pf, (time.time() - 5, time.time() - 5))  # the file predates the process
            pf.write_text(f"{late.pid}\n")
            os.utime(pf, (time.time() - 5, time.time() - 5))
            assert from_pidfile(pf, "vnettracer", "agent") is None
        finally:
            late.kill()
            late.wait()
    finally:
        early.kill()
        early.wait()
    assert from_pidfile(pf) is None  # dead
    pf.write_text("garbage")
    assert from_pidfile(pf) is None


def test_ssh_session_folder_removed_and_a_killed_runs_swept(tmp_path, monkeypatch):
    """The run's folder of ssh control sockets goes with the session; one a killed run (SIGKILL)
    left is removed by the next session, one of a live process is not."""
    import subprocess
    import tempfile

    from vnettracer import orchestrate

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.Popen(["true"])
    dead.wait()
    left = tmp_path / f"vnt-cp-{dead.pid}-x1"
    live = tmp_path / f"vnt-cp-{os.getppid()}-x2"
    for d in (left, live):
        d.mkdir()
    with orchestrate.ssh_session() as cp:
        assert Path(cp).parent == tmp_path and Path(cp).name.startswith(f"vnt-cp-{os.getpid()}-")
        with orchestrate.ssh_session() as inner:
            assert inner == cp
    assert not left.exists() and live.is_dir() and not Path(cp).exists()


@pytest.mark.parametrize("given", [None, "7"])
def test_ansible_runs_64_hosts_at_once_unless_told(tmp_path, monkeypatch, given):
    """Ansible as vnettracer runs it (the checkout's ansible.cfg, the run's environment) takes a task
    to 64 hosts at once, so a cluster of 21 to 64 hosts is not run in waves of 20 (the old setting);
    ANSIBLE_FORKS in the user's environment wins (a small controller)."""
    import subprocess
    import sys

    from vnettracer import orchestrate

    if given is None:
        monkeypatch.delenv("ANSIBLE_FORKS", raising=False)
    else:
        monkeypatch.setenv("ANSIBLE_FORKS", given)
    env = orchestrate._ansible_env(tmp_path, str(tmp_path / "cp"))
    r = subprocess.run([str(Path(sys.executable).parent / "ansible-config"), "dump", "--only-changed"], env=env,
                       capture_output=True, text=True, check=True)
    forks = [line for line in r.stdout.splitlines() if line.startswith("DEFAULT_FORKS")]
    assert forks and forks[0].endswith(f"= {given or 64}"), r.stdout
