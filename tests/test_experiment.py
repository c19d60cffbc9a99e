"""`vnettracer experiment run` end to end on the lab, and an interrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import yaml

from conftest import leftovers, vnettracer
from vnettracer.procs import descendants

EXE = os.path.join(os.path.dirname(os.sys.executable), "vnettracer")


def test_quickstart_runs_the_built_stages(root, tmp_path):
    env = {**os.environ, "VNT_RESULTS_DIR": str(tmp_path)}
    r = vnettracer("experiment", "run", "quickstart", env=env)
    assert r.returncode == 0, r.stderr
    (run,) = (tmp_path / "quickstart").iterdir()
    assert f"results: {run}" in r.stdout
    assert "no report: nothing was measured" in r.stdout  # it must not pretend
    meta = json.loads((run / "meta.json").read_text())
    st = meta["stages"]
    assert [s for s in st if st[s]["status"] == "ok"] == ["lab", "prepare", "facts", "deploy", "collect"]
    assert all(st[s]["status"] == "not run" and st[s]["reason"] for s in ("clock", "workload"))
    assert st["report"]["status"] == "skipped" and "no events" in st["report"]["reason"]
    assert st["deploy"]["tracepoints"] == 20
    for h in ("host1", "host2"):  # spools came home: stats say every hook was attached, clock pairs exist
        stats = json.loads((run / "events" / h / "stats.json").read_text())
        assert len(stats["tracepoints"]) == 10 and stats["attach"] in ("tcx", "clsact")
        assert (run / "events" / h / "clock.jsonl").read_text().count("ktime_ns") >= 1
    assert meta["measured"] is False
    assert set(meta["hosts"]) == {"host1", "host2", "db"}
    assert all(h["reachable"] and h["btf"] for h in meta["hosts"].values())
    assert meta["versions"]["ansible-core"].startswith("2.19")
    assert len(meta["git_revision"]) >= 40 or meta["git_revision"] == "unknown"
    spec = yaml.safe_load((run / "spec.yml").read_text())
    assert spec["name"] == "quickstart" and len(spec["tracepoints"]) == 20
    assert leftovers() == []


def test_interrupted_run_leaves_nothing(root, tmp_path):
    env = {**os.environ, "VNT_RESULTS_DIR": str(tmp_path)}
    proc = subprocess.Popen([EXE, "experiment", "run", "quickstart"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        seen = ""
        while "prepare: Installed packages" not in seen and time.monotonic() < deadline:
            seen += proc.stderr.readline()
        assert "prepare:" in seen, seen
        workers = [p for p in descendants(proc.pid)]
        assert workers, "ansible-playbook should be running"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "interrupted: cleaned up what this command made" in err
    time.sleep(0.5)
    still = [p for p in workers if os.path.exists(f"/proc/{p}") and open(f"/proc/{p}/stat").read().split(") ")[1][0] != "Z"]
    assert still == [], f"ansible processes left running: {still}"
    assert leftovers() == []
    (run,) = (tmp_path / "quickstart").iterdir()
    meta = json.loads((run / "meta.json").read_text())
    assert "KeyboardInterrupt" in meta["error"]
