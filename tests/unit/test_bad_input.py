"""Bad run folders never give a silent wrong answer: each bad file is named in one line (no
traceback), nothing is rewritten before the check, and unreadable events fail the report (exit 4)."""

from __future__ import annotations

import json
import resource

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest
from conftest import vnettracer

from vnettracer.analysis import analyze
from vnettracer.analysis.synth import make_run


@pytest.fixture
def run(tmp_path):
    d = tmp_path / "run"
    make_run(d, packets=2000, seconds=10, seed=3, loss=0.0)
    (d / "meta.json").write_text(json.dumps({"experiment": "quickstart", "stages": {}}))
    return d


def one_line_error(r, code: int, *must: str) -> str:
    assert r.returncode == code, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    for s in must:
        assert s in r.stderr, r.stderr
    return r.stderr


def test_truncated_spool_is_named_and_fails_the_report(run):
    f = run / "events" / "host2" / "events-000001.arrows"
    with open(f, "r+b") as h:
        h.truncate(f.stat().st_size // 2)
    r = vnettracer("report", str(run))
    one_line_error(r, 4, str(f), "bytes unread", "events were lost before the analysis")
    md = (run / "report.md").read_text()  # the report is still written, and says so first
    assert "## Unreadable data" in md and str(f) in md
    s = json.loads((run / "summary.json").read_text())
    assert s["integrity"]["unreadable"][0]["file"] == str(f)


def test_spool_of_another_schema_is_named(run):
    f = run / "events" / "host1" / "events-000002.arrows"
    other = pa.schema([("x", pa.int64())])
    with pa.OSFile(str(f), "wb") as sink, ipc.new_stream(sink, other) as w:
        w.write_batch(pa.RecordBatch.from_arrays([pa.array(np.arange(10))], schema=other))
    one_line_error(vnettracer("report", str(run)), 4, str(f), "schema is not the event schema")


@pytest.mark.parametrize("name,content,expect", [
    ("meta.json", "{not json", "not valid JSON"),
    ("meta.json", "[1, 2]", "not a JSON object"),
    ("spec.yml", "name: [unclosed", "not readable YAML"),
    ("spec.yml", "name: q\ntracepoints: 7\n", "not an experiment this version reads"),
])
def test_corrupt_run_files_named_nothing_rewritten(run, name, content, expect):
    (run / name).write_text(content)
    r = vnettracer("experiment", "run", str(run), "--stage", "report")
    one_line_error(r, 2, name, expect)
    assert not (run / "report.md").exists() and (run / name).read_text() == content


@pytest.mark.parametrize("content,expect", [
    ('{"ktime_ns": 1, "realtime_ns": 2}\n{broken', "not readable JSON lines"),
    ('{"k": 1}\n', "needs lines with ktime_ns and realtime_ns"),
    ('{"ktime_ns": "x", "realtime_ns": 2}\n', "must be integers"),
])
def test_corrupt_clock_file_named(run, content, expect):
    f = run / "events" / "host2" / "clock.jsonl"
    f.write_text(content)
    one_line_error(vnettracer("report", str(run)), 2, str(f), expect)


def test_bad_baseline_named(run, tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    (base / "summary.json").write_text('{"paths": 3}')
    r = vnettracer("report", str(run), "--baseline", str(base))
    one_line_error(r, 2, "summary.json", "not a report summary")
    assert (base / "summary.json").read_text() == '{"paths": 3}'


def test_the_experiment_folder_instead_of_a_run_names_its_latest_run(run):
    """`report results/EXP` (the experiment's folder, not one of its runs): the error says which
    run to give."""
    r = vnettracer("report", str(run.parent))
    one_line_error(r, 2, "is not a run folder (no spec.yml); it holds 1 run(s), the latest " + str(run))


def test_impossible_probe_rows_dropped_and_cheap(run):
    clock = run / "clock"
    clock.mkdir()
    t1 = 1_795_000_000_000_000_000 + np.arange(50) * 100_000_000
    rows = ["t1,t2,t3,t4"] + [f"{a},{a + 50_000},{a + 60_000},{a + 100_000}" for a in t1] + ["0,0,0,0", "5,4,3,2"]
    (clock / "probes-host2.before.csv").write_text("\n".join(rows) + "\n")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    a = analyze(run)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 500_000  # KiB
    assert a.summary["integrity"]["probes_rejected"] == {"probes-host2.before.csv": 2}
    assert a.summary["clock"]["hosts"]["host2"]["probe"]["samples"] == 50


def test_spool_cap_and_free_space_floor_count_what_was_not_written(tmp_path):
    """A spool cap and a free-space floor: events that do not fit are counted with the reason (a
    real full disk: tests/lab/test_disk_full.py)."""
    from vnettracer.agent.record import EVENT
    from vnettracer.agent.spool import Spool

    batch = np.zeros(10_000, EVENT)  # 320 KB
    capped = Spool(tmp_path / "capped", max_bytes=1 << 20)
    for _ in range(10):
        capped.write(batch)
    assert capped.full == "spool cap of 1 MB reached" and capped.events == 30_000 and capped.dropped == 70_000
    floor = Spool(tmp_path / "floor", min_free_bytes=1 << 60)
    floor.write(batch)
    assert floor.full.startswith("disk full") and floor.dropped == 10_000 and floor.events == 0


def test_events_not_recorded_fail_the_report(run):
    st = run / "events" / "host2" / "stats.json"
    st.write_text(json.dumps({"spool_dropped": 1234, "spool_full": "spool cap of 1 MB reached",
                              "tracepoints": {"h2-eth0-in": {"dropped": 7}}}))
    r = vnettracer("report", str(run))
    one_line_error(r, 4, "host2: 1234 events not written (spool cap of 1 MB reached)")
    md = (run / "report.md").read_text()
    assert "## Events not recorded" in md and "| host2 | 1234 | spool cap of 1 MB reached | 7 |" in md


def test_outbox_cap_counts_dropped_batches(tmp_path):
    """InfluxDB away and the outbox at its cap: further batches are counted, never queued unbounded."""
    import socket

    from vnettracer.store.http import Endpoint
    from vnettracer.store.writer import Writer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nobody listens once this closes
    w = Writer(Endpoint(f"http://127.0.0.1:{port}", "x", "u", "p"), tmp_path / "outbox", batch_points=1000,
               backoff_s=(5.0, 5.0), timeout_s=1.0, max_outbox_bytes=100_000)
    line = b"m,host=a v=1i 1700000000000000000\n" * 1000  # about 36 KB a batch
    for _ in range(10):
        w.add(line)
    st = w.close(timeout_s=0.5)
    assert st.dropped_batches >= 6 and st.dropped_points == st.dropped_batches * 1000
    kept = sorted((tmp_path / "outbox").glob("*.lp"))
    assert len(kept) + st.dropped_batches == 10 and sum(f.stat().st_size for f in kept) <= 100_000
