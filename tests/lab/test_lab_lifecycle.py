"""Lab lifecycle: down leaves nothing; up recovers from a killed up and from a lab left running."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
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


def inside(ns: str, pid: int, comm: str, timeout_s: float = 10) -> bool:
    """Whether process `pid` runs `comm` in netns `ns` within timeout_s (`ip netns exec` enters the
    namespace, then execs the command)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if pid in netns.netns_pids(ns) and Path(f"/proc/{pid}/comm").read_text().strip() == comm:
                return True
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    return False


def test_down_leaves_nothing(root):
    sleeper = None
    try:
        lab = labmod.up(progress=lambda m: None)
        pids = list(lab.pids.values())
        assert all(alive(p) for p in pids)
        assert len(leftovers()) > 0
        # a process running inside a container namespace is ended by down, too (once it is in: one
        # still entering while down removes the namespaces is not what this checks)
        sleeper = subprocess.Popen(["ip", "netns", "exec", "vnt-host1-c1", "sleep", "300"], start_new_session=True)
        assert inside("vnt-host1-c1", sleeper.pid, "sleep")
    finally:
        removed = labmod.down()
    try:
        assert sleeper.wait(timeout=10) != 0
    finally:
        if sleeper.poll() is None:  # down missed it: ours to end, by pid
            sleeper.kill()
            sleeper.wait(timeout=10)
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


def test_lab_folder_another_user_could_change_is_refused(tmp_path, monkeypatch):
    """Lab state drives Ansible as root: a lab folder open to others, a symlinked one, one under a
    world-writable folder, or a symlinked lock are refused before anything is read or written."""
    from vnettracer.errors import VntError

    monkeypatch.setenv("VNT_LAB_DIR", str(tmp_path / "lab"))
    assert labmod.check_private(tmp_path / "lab", create=True).stat().st_mode & 0o777 == 0o700
    os.chmod(tmp_path / "lab", 0o755)
    with pytest.raises(VntError, match="not a private folder"):
        labmod.load()
    os.chmod(tmp_path / "lab", 0o700)
    (tmp_path / "real").mkdir(mode=0o700)
    (tmp_path / "lab").rmdir()
    (tmp_path / "lab").symlink_to(tmp_path / "real")
    with pytest.raises(VntError, match="a symlink"):
        labmod.check_private(tmp_path / "lab")
    (tmp_path / "lab").unlink()
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    os.chmod(open_dir, 0o777)
    with pytest.raises(VntError, match="writable by other users"):
        labmod.check_private(open_dir / "lab", create=True)
    assert not (open_dir / "lab").exists()
    (tmp_path / "elsewhere").write_text("")
    Path(f"{tmp_path / 'lab'}.lock").symlink_to(tmp_path / "elsewhere")
    r = vnettracer("lab", "down", env={**os.environ, "VNT_LAB_DIR": str(tmp_path / "lab")})
    assert r.returncode == 2 and "symlink is refused" in r.stderr, r.stderr
    assert (tmp_path / "elsewhere").read_text() == ""
