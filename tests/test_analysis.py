"""Analysis on synthetic runs with known answers: delays, loss, duplicates, reordering, clocks."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest

from conftest import vnettracer
from vnettracer.analysis import analyze
from vnettracer.analysis.clock import offset_from_probes
from vnettracer.analysis.synth import EPOCH, make_run


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    d = tmp_path_factory.mktemp("run") / "synth"
    truth = make_run(d, packets=20_000, seconds=100, offset_us=1500, drift_ppm=20, loss=0.01, dup=0.005)
    return d, truth, analyze(d)


def test_segment_delays_recovered_within_1_percent(synth):
    _, truth, a = synth
    for pname, p in a.summary["paths"].items():
        for j, seg in enumerate(p["segments"]):
            true = float(np.median(truth.seg_delays[f"{pname}/{j}"]))
            assert seg["p50_ns"] == pytest.approx(true, rel=0.01), (pname, seg["name"])
            assert seg["negative"] == 0


def test_loss_exact_and_where(synth):
    _, truth, a = synth
    req = a.summary["paths"]["request"]
    assert req["lost"] == truth.lost > 0
    by_seg = {s["name"]: s["lost"] for s in req["segments"]}
    assert by_seg[truth.lost_at] == truth.lost
    assert sum(by_seg.values()) == truth.lost
    assert a.summary["paths"]["reply"]["lost"] == 0


def test_duplicates_counted_first_kept(synth):
    _, truth, a = synth
    req = a.summary["paths"]["request"]
    assert req["duplicates"] == truth.duplicates > 0
    # the duplicates came 1 us late at hook 3: had they been kept, segment 2 would be longer
    assert req["segments"][1]["max_ns"] < req["segments"][2]["max_ns"] + 20_000


def test_clock_offset_and_drift_recovered(synth):
    _, truth, a = synth
    h2 = a.summary["clock"]["hosts"]["host2"]
    assert h2["applied"] == "trace"
    start = a.summary["start_ns"] - EPOCH
    assert h2["trace"]["offset_at_start_ns"] == pytest.approx(truth.theta(np.array([start]))[0], abs=1000)
    assert h2["trace"]["drift_ppm"] == pytest.approx(truth.drift_ppm, abs=1.0)


def test_segments_sum_to_end_to_end(synth):
    _, _, a = synth
    for pt in a.traces.values():
        complete = (pt.times >= 0).all(axis=1)
        t = pt.times[complete]
        assert (np.diff(t, axis=1).sum(axis=1) == t[:, -1] - t[:, 0]).all()
        assert (np.diff(t, axis=1) >= 0).all()  # after clock correction nothing runs backwards


def test_dominant_segment_is_the_wire(synth):
    _, _, a = synth
    assert a.summary["paths"]["request"]["dominant"] == "h1-eth0-eg -> h2-eth0-in"
    assert a.summary["paths"]["reply"]["dominant"] == "h2-eth0-eg -> h1-eth0-in"


def test_ids_that_repeat_after_the_window_are_new_packets(tmp_path):
    from vnettracer.analysis.correlate import correlate

    ids = {"a": 1, "b": 2}
    t = np.array([0, 10_000, 5_000_000_000, 5_000_012_000], np.int64)
    ev = pd.DataFrame({"tracepoint": [1, 2, 1, 2], "t_ns": t, "packet_id": np.uint64(7), "flow_hash": np.uint64(9),
                       "len": 100, "flags": 2})
    pt = correlate(ev, "p", ["a", "b"], ids, window_ns=1_000_000_000)
    assert pt.times.tolist() == [[0, 10_000], [5_000_000_000, 5_000_012_000]]
    assert pt.id_repeats == 1


def test_probe_offsets_min_rtt_filtered():
    rng = np.random.default_rng(3)
    n = 2000
    t1 = np.sort(rng.uniform(0, 60e9, n)).astype(np.int64)
    theta = 800_000 + 5e-6 * t1  # 800 us, 5 ppm
    fwd, back = 20_000 + rng.exponential(30_000, n), 20_000 + rng.exponential(30_000, n)
    t2 = t1 + fwd + theta
    t3 = t2 + 5_000
    t4 = t3 - theta + back
    line = offset_from_probes(pd.DataFrame({"t1": t1, "t2": t2.astype(np.int64), "t3": t3.astype(np.int64),
                                            "t4": t4.astype(np.int64)}))
    assert line.at(np.array([0]))[0] == pytest.approx(800_000, abs=2000)
    assert line.drift * 1e6 == pytest.approx(5, abs=1)


def test_report_and_gate_cli(tmp_path):
    base, slow = tmp_path / "base", tmp_path / "slow"
    make_run(base, packets=5000, seconds=20, seed=5)
    make_run(slow, packets=5000, seconds=20, seed=6, slow_segment=6_000)
    r = vnettracer("report", str(base))
    assert r.returncode == 0, r.stderr
    for f in ("report.md", "report.html", "summary.json", "figures/segments.png", "figures/cdf.png",
              "figures/over_time.png", "figures/clock.png"):
        assert (base / f).is_file(), f
    s = json.loads((base / "summary.json").read_text())
    assert s["version"] == 1 and set(s["paths"]) == {"request", "reply"}
    md = (base / "report.md").read_text()
    assert "Dominant segment: **h1-eth0-eg -> h2-eth0-in**" in md

    same = vnettracer("report", str(base), "--baseline", str(base), "--junit", str(tmp_path / "same.xml"))
    assert same.returncode == 0, same.stdout + same.stderr
    assert "all 18 segments within 20%" in same.stdout

    r = vnettracer("report", str(slow), "--baseline", str(base), "--max-regression", "20%", "--junit", str(tmp_path / "j.xml"))
    assert r.returncode == 1
    suite = ET.parse(tmp_path / "j.xml").getroot()
    failed = [tc.get("name") for tc in suite.iter("testcase") if tc.find("failure") is not None]
    assert failed == ["h1-flannel-eg -> h1-eth0-eg"]  # the segment made slower, and only it
    assert suite.get("tests") == "18" and suite.get("failures") == "1"

    bad = vnettracer("report", str(base), "--max-regression", "lots")
    assert bad.returncode == 2 and "not a percentage" in bad.stderr


CHROMIUM = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def test_html_report_renders_in_chromium(synth, tmp_path):
    import subprocess

    import matplotlib.image as mpimg

    from vnettracer.analysis.report import write

    d, _, a = synth
    html = write(a, d)["html"]
    profile = tmp_path / "profile"
    common = CHROMIUM + [f"--user-data-dir={profile}"]
    dom = subprocess.run(common + ["--dump-dom", html.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert dom.count("<table>") >= 4  # clocks, two paths, throughput
    assert dom.count('src="data:image/png;base64,') == 4  # figures are embedded: the file stands alone
    assert "h1-eth0-eg -&gt; h2-eth0-in" in dom or "h1-eth0-eg -> h2-eth0-in" in dom
    shot = tmp_path / "report.png"
    subprocess.run(common + ["--window-size=1200,2400", f"--screenshot={shot}", html.as_uri()],
                   capture_output=True, timeout=120, check=True)
    img = mpimg.imread(shot)
    assert img.shape[0] >= 2000 and img.shape[1] >= 1100
    gray = img[..., :3].mean(axis=2)
    assert gray.std() > 0.05 and (gray < 0.5).mean() > 0.005  # text and figures, not a blank page


def test_short_sparse_trace_gives_offset_without_drift():
    """Two seconds of sparse exchanges cannot show drift: offset only, and right."""
    from vnettracer.analysis.clock import offset_from_trace

    rng = np.random.default_rng(7)
    t = np.sort(rng.uniform(0, 2e9, 200)).astype(np.int64)
    theta = 1_500_000
    d_fwd = 20_000 + rng.exponential(3_000, 200) + theta
    d_rev = 20_000 + rng.exponential(3_000, 200) - theta
    line = offset_from_trace(t, d_fwd, t, d_rev)
    assert line.drift == 0.0
    assert line.at(np.array([0]))[0] == pytest.approx(theta, abs=2_000)


def test_rerun_report_stage_on_a_run_folder(tmp_path):
    d = tmp_path / "run"
    make_run(d, packets=2000, seconds=10, seed=9)
    (d / "meta.json").write_text(json.dumps({"experiment": "quickstart", "stages": {}}))
    r = vnettracer("experiment", "run", str(d), "--stage", "report")
    assert r.returncode == 0, r.stderr
    assert (d / "report.html").is_file() and f"report:  {d / 'report.md'}" in r.stdout
    assert json.loads((d / "meta.json").read_text())["stages"]["report"]["status"] == "ok"
    bad = vnettracer("experiment", "run", str(d), "--stage", "workload")
    assert bad.returncode == 2 and "cannot be re-run" in bad.stderr
    bad = vnettracer("experiment", "run", str(d), "--stage", "nope")
    assert bad.returncode == 2 and "unknown stage 'nope'" in bad.stderr
