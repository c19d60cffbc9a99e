"""Lab lifecycle: down leaves nothing; up recovers from a killed up and from a lab left running."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from conftest import alive, leftovers, vnettracer
from vnettracer import lab as labmod
from vnettracer.lab import netns


def sshd_pids(ns: str) -> list[int]:
    out = []
    for pid in netns.netns_pids(ns):
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() == "sshd":
                    out.append(pid)
        except FileNotFoundError:
            pass
    return out


def test_down_leaves_nothing(root):
    try:
        lab = labmod.up(progress=lambda m: None)
        pids = list(lab.pids.values())
        assert all(alive(p) for p in pids)
        assert len(leftovers()) > 0
        # a process started inside a container namespace is ended by down, too
        sleeper = subprocess.Popen(["ip", "netns", "exec", "vnt-host1-c1", "sleep", "300"], start_new_session=True)
    finally:
        removed = labmod.down()
    assert sleeper.wait(timeout=10) != 0
    assert leftovers() == []
    assert not any(alive(p) for p in pids)
    assert any(r.startswith("netns vnt-host1") for r in removed)


def test_up_recovers_from_killed_up(root):
    d = labmod.lab_dir()
    proc = subprocess.Popen([os.path.join(os.path.dirname(os.sys.executable), "vnettracer"), "lab", "up"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not (d / "hosts" / "host1" / "sshd.log").exists() and time.monotonic() < deadline:
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)  # mid-way: network built, sshds starting
        assert proc.wait(timeout=10) == -signal.SIGKILL
        assert netns.lab_netns(), "the killed up should have left namespaces behind"

        r = vnettracer("lab", "up")
        assert r.returncode == 0, r.stderr
        assert "removed leftovers of an earlier lab" in r.stderr
        for h in ("vnt-host1", "vnt-host2", "vnt-db"):
            assert len(sshd_pids(h)) == 1, f"{h}: sshd processes {sshd_pids(h)}"
        st = vnettracer("lab", "status")
        assert st.returncode == 0, st.stdout + st.stderr

        # up over a lab that is still running replaces it: old sshds gone, new ones answer
        old = labmod.require().pids
        r = vnettracer("lab", "up")
        assert r.returncode == 0, r.stderr
        assert not any(alive(p) for p in old.values())
        assert vnettracer("lab", "status").returncode == 0
    finally:
        r = vnettracer("lab", "down")
    assert r.returncode == 0 and "removed" in r.stdout
    assert leftovers() == []
    assert vnettracer("lab", "down").stdout.strip() == "lab down: nothing to remove"
