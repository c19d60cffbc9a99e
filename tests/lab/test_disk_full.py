"""A spool on a disk that really fills (a 2 MB tmpfs: needs root to mount)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from vnettracer.agent.record import EVENT
from vnettracer.agent.spool import Spool, read_spool


def test_full_disk_counts_what_was_not_written(root, tmp_path):
    """Events that do not fit are counted with the reason (seen coming, or ENOSPC); the file written
    so far stays readable."""
    # 320 KB that do not compress (the spool is LZ4-compressed: zeros would fit)
    batch = np.frombuffer(np.random.default_rng(0).bytes(10_000 * EVENT.itemsize), EVENT)
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=True)
    try:
        sp = Spool(mnt, min_free_bytes=0)
        for _ in range(10):
            sp.write(batch)
        sp.close()
        assert sp.full.startswith(("disk full", "write failed")) and sp.dropped > 0
        assert sp.events + sp.dropped == 100_000
        problems: list = []
        assert read_spool(mnt, problems=problems).num_rows <= sp.events
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)  # lazily: also when a file there is still open


def test_collect_pack_on_a_full_disk_fails_and_leaves_nothing(root, tmp_path):
    """A host whose disk cannot take the archive: the pack fails (roles/collect then fetches the
    files one by one) and no half-written archive is left behind."""
    run = tmp_path / "state" / "spool" / "r1"
    run.mkdir(parents=True)
    (run / "events-000001.arrows").write_bytes(np.random.default_rng(0).bytes(1 << 20))  # incompressible 1 MB
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], check=True)
    try:
        r = subprocess.run([sys.executable, "-m", "vnettracer.hostcli", "collect", "pack", "--run-id", "r1",
                            "--host", "host1", "--out", str(mnt / "collect-r1.tar"), "--state-dir",
                            str(tmp_path / "state")], capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and "No space left" in r.stderr
        assert list(mnt.iterdir()) == []
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)
