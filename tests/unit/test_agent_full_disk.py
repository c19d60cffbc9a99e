"""An agent whose disk is full keeps tracing: the files beside its spool that it cannot write (its
stats, its clock pairs) are said once and counted, never raised into its loop (the spool counts its
own losses: tests/lab/test_disk_full.py)."""

from __future__ import annotations

import json

from vnettracer.agent.agent import Agent
from vnettracer.agent.clock import Clock
from vnettracer.agent.config import AgentConfig


def test_clock_pairs_a_full_disk_refuses_are_counted_and_the_offset_still_moves(tmp_path):
    c = Clock(tmp_path / "clock.jsonl")
    c.record()
    c.f.close()
    c.f = open("/dev/full", "a")  # every write: ENOSPC
    before = c.ktime_ns
    for _ in range(3):
        c.record()
    assert c.unwritten == 3 and "No space left" in c.error
    assert c.ktime_ns is not None and before is not None and c.ktime_ns > before  # the live pair moved on
    c.close()
    assert len((tmp_path / "clock.jsonl").read_text().splitlines()) == 1


def test_stats_that_cannot_be_written_are_said_once_and_served_anyway(tmp_path):
    said: list[str] = []
    cfg = AgentConfig(host="h1", run_id="r1", state_dir=tmp_path)
    cfg.spool_dir.mkdir(parents=True)
    a = Agent(cfg, log=said.append)
    a._write_stats()
    assert json.loads((cfg.spool_dir / "stats.json").read_text())["write_errors"] == {}
    (cfg.spool_dir / "stats.json.tmp").mkdir()  # the next write cannot make its file
    a.clock = Clock(cfg.spool_dir / "clock.jsonl")
    a.clock.f.close()
    a.clock.f = open("/dev/full", "a")
    a.clock.record()
    for _ in range(3):
        st = a._write_stats()
    assert set(st["write_errors"]) == {"stats.json", "clock.jsonl"} and st["clock_pairs_unwritten"] == 1
    assert len(said) == 2 and all("tracing goes on" in m for m in said)
    assert "stats.json" in said[0] and "clock.jsonl" in said[1]
