"""What a host holds of a run, packed in one archive (hostcli collect pack) and unpacked on the
controller (stages/collect.unpack): the run folder's layout, nothing else, nothing left behind."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
import time
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from vnettracer import hostcli
from vnettracer.stages.collect import unpack


def _host(state: Path, run: str) -> None:
    spool = state / "spool" / run
    (spool / "influx-outbox").mkdir(parents=True)
    for f in ("events-000001.arrows", "events-000002.arrows", "clock.jsonl", "stats.json", "agent.log.tmp"):
        (spool / f).write_text(f)
    (spool / "influx-outbox" / "000001.lp").write_text("m v=1")
    (state / "workload" / run).mkdir(parents=True)
    (state / "workload" / run / "01-tcp_rr.json").write_text("{}")
    (state / "spool" / "other-run").mkdir()
    (state / "spool" / "other-run" / "events-000001.arrows").write_text("not this run")


def _pack(state: Path, run: str, host: str, out: Path) -> dict:
    """The counts the pack printed; the sha1 it printed beside them is the archive's (roles/collect
    fetches against it)."""
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert hostcli.main(["collect", "pack", "--run-id", run, "--host", host, "--out", str(out),
                             "--state-dir", str(state)]) == 0
    got = json.loads(buf.getvalue())
    assert got.pop("sha1") == hashlib.sha1(out.read_bytes()).hexdigest()
    return got


def test_pack_and_unpack_give_the_run_folder(tmp_path):
    state, dest = tmp_path / "state", tmp_path / "results" / "run1"
    _host(state, "run1")
    (dest / "events").mkdir(parents=True)
    counts = _pack(state, "run1", "host1", dest / "events" / "host1.tar")
    assert counts == {"spool": 4, "outbox": 1, "workload": 1}
    unpack(dest)
    got = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert got == ["events/host1/clock.jsonl", "events/host1/events-000001.arrows", "events/host1/events-000002.arrows",
                   "events/host1/influx-outbox/000001.lp", "events/host1/stats.json", "workload/01-tcp_rr.json"]
    assert (dest / "events" / "host1" / "stats.json").read_text() == "stats.json"
    assert not list(state.glob("**/*.part"))


def test_pack_of_a_host_with_nothing(tmp_path):
    """An agent that never started: an empty archive, zero files, no error."""
    out = tmp_path / "a.tar"
    assert _pack(tmp_path / "state", "run1", "host2", out) == {"spool": 0, "outbox": 0, "workload": 0}
    with tarfile.open(out) as t:
        assert t.getnames() == []


def test_unpack_refuses_paths_outside_the_run(tmp_path):
    """A host's archive is data: a member that climbs out of the run folder is refused."""
    dest = tmp_path / "run"
    (dest / "events").mkdir(parents=True)
    with tarfile.open(dest / "events" / "evil.tar", "w") as t:
        info = tarfile.TarInfo("../../escaped.txt")
        info.size = 1
        t.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(tarfile.OutsideDestinationError):
        unpack(dest)
    assert not (tmp_path.parent / "escaped.txt").exists() and not (tmp_path / "escaped.txt").exists()


def test_list_names_what_the_archive_holds(tmp_path):
    """--list (roles/collect's per-file fallback) gives the same files and places as the archive."""
    state = tmp_path / "state"
    _host(state, "run1")
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert hostcli.main(["collect", "pack", "--list", "--run-id", "run1", "--host", "host1",
                             "--state-dir", str(state)]) == 0
    listed = json.loads(buf.getvalue())
    _pack(state, "run1", "host1", tmp_path / "a.tar")
    with tarfile.open(tmp_path / "a.tar") as t:
        assert sorted(f["dest"] for f in listed["files"]) == sorted(t.getnames())
    assert all(Path(f["src"]).is_file() for f in listed["files"]) and listed["spool"] == 4


def _agent_like(state: Path, ignore_term: bool) -> subprocess.Popen:
    """A process the pidfile check takes for the agent (its command line names vnettracer and
    agent), writing a spool file when it ends the way the agent drains its ring."""
    spool = state / "spool" / "run1"
    spool.mkdir(parents=True, exist_ok=True)
    code = ("import signal, sys, time, pathlib\n"
            f"spool = pathlib.Path({str(spool)!r})\n"
            "def end(*_):\n"
            "    (spool / 'events-000009.arrows').write_text('drained'); sys.exit(0)\n"
            f"signal.signal(signal.SIGTERM, {'signal.SIG_IGN' if ignore_term else 'end'})\n"
            "(spool / 'up').write_text('')\n"
            "time.sleep(60)\n")
    p = subprocess.Popen([sys.executable, "-c", code, "vnettracer", "agent"])
    deadline = time.monotonic() + 10
    while not (spool / "up").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    (spool / "up").unlink()
    (state / "run").mkdir(parents=True, exist_ok=True)
    (state / "run" / "agent.pid").write_text(f"{p.pid}\n")
    return p


def _pack_stopping(state: Path, out: Path, capsys) -> tuple[int, dict, str]:
    rc = hostcli.main(["collect", "pack", "--stop-agent", "--stop-timeout", "0.5", "--run-id", "run1",
                       "--host", "host1", "--out", str(out), "--state-dir", str(state)])
    got = capsys.readouterr()
    return rc, json.loads(got.out), got.err


def test_pack_stops_the_agent_first_so_its_last_events_are_in(tmp_path, capsys):
    state = tmp_path / "state"
    agent = _agent_like(state, ignore_term=False)
    try:
        rc, counts, _ = _pack_stopping(state, tmp_path / "a.tar", capsys)
        assert rc == 0 and agent.wait(timeout=5) == 0
        assert counts["agent"]["stopped"] and counts["spool"] == 1
        with tarfile.open(tmp_path / "a.tar") as t:
            assert t.getnames() == ["events/host1/events-000009.arrows"]
    finally:
        agent.kill()
        agent.wait()


def test_an_agent_that_does_not_stop_still_has_its_files_packed(tmp_path, capsys):
    """Exit 4: the archive is written (nothing lost), the host is failed after the fetch
    (roles/collect/tasks/main.yml), stderr says why."""
    state = tmp_path / "state"
    _host(state, "run1")
    agent = _agent_like(state, ignore_term=True)
    try:
        rc, counts, err = _pack_stopping(state, tmp_path / "a.tar", capsys)
        assert rc == hostcli.PACKED_AGENT_FAILED == 4
        assert f"pid {agent.pid} did not stop" in err and "did not stop" in counts["agent"]["error"]
        assert agent.poll() is None and counts["spool"] == 4
        with tarfile.open(tmp_path / "a.tar") as t:
            assert len(t.getnames()) == 6
    finally:
        agent.kill()
        agent.wait()
