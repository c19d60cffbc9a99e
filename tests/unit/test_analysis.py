"""Analysis on synthetic runs with known answers: delays, loss, duplicates, reordering, clocks."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest
from conftest import vnettracer

from vnettracer.analysis import analyze
from vnettracer.analysis.clock import offset_from_probes
from vnettracer.analysis.report import markdown
from vnettracer.analysis.synth import EPOCH, make_chain_run, make_run


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


@pytest.mark.parametrize("offset_s", [3.0, -7.0])
def test_clock_seconds_off_still_correlates(tmp_path, offset_s):
    """A host whose clock is seconds off (a VM without NTP): far more than the 1 s matching window,
    yet packets are matched across the hosts (nothing lost but the run's real losses), the
    offset and drift are found, and out of core gives the same summary."""
    d = tmp_path / "run"
    truth = make_run(d, packets=5000, seconds=20, offset_us=offset_s * 1e6, drift_ppm=20, loss=0.01, dup=0.0)
    a = analyze(d, partitions=0)
    req, rep = a.summary["paths"]["request"], a.summary["paths"]["reply"]
    assert (req["lost"], rep["lost"], req["joined"], rep["joined"]) == (truth.lost, 0, 0, 0)
    assert req["complete"] == 5000 - truth.lost and rep["complete"] == 5000
    h2 = a.summary["clock"]["hosts"]["host2"]
    start = a.summary["start_ns"] - EPOCH
    assert h2["trace"]["offset_at_start_ns"] == pytest.approx(truth.theta(np.array([start]))[0], abs=1000)
    assert h2["trace"]["drift_ppm"] == pytest.approx(truth.drift_ppm, abs=1.0)
    assert all(s["negative"] == 0 for p in (req, rep) for s in p["segments"])
    b = analyze(d, partitions=4)
    assert json.dumps(b.summary, sort_keys=True) == json.dumps(a.summary, sort_keys=True)


def test_clock_offset_is_told_at_the_runs_start(tmp_path):
    """Another host's first event (its container's router solicitations) comes seconds before the
    reference host's: each estimate's offset at start is its offset at the summary's start_ns."""
    d = tmp_path / "run"
    truth = make_run(d, packets=2000, seconds=10, drift_ppm=20, loss=0.0, dup=0.0, quiet_s=3.0)
    for parts in (0, 2):
        s = analyze(d, partitions=parts).summary
        assert s["paths"]["reply"]["group"] == 3 and s["paths"]["reply"]["lost"] == 0
        start = s["start_ns"] - EPOCH
        assert start < 1_000_000  # host2's first solicitation, not host1's first packet 3 s later
        h2 = s["clock"]["hosts"]["host2"]
        assert h2["trace"]["offset_at_start_ns"] == pytest.approx(truth.theta(np.array([start]))[0], abs=1000)


def test_clock_of_a_host_joined_to_the_reference_only_through_another(tmp_path):
    """host1 <-> host2 <-> host3 (a proxy on host2): host3 shares no packet with the reference and
    its clock is 4 s off, yet its packets are matched and its clock found through host2's, and the
    report says through which host."""
    d = tmp_path / "run"
    truth = make_chain_run(d, {"host2": (1500, 20), "host3": (-4e6, -10)})
    a = analyze(d, partitions=0)
    s = a.summary
    assert {n: (p["complete"], p["lost"]) for n, p in s["paths"].items()} == {
        n: (3000, 0) for n in ("host1-host2", "host2-host1", "host2-host3", "host3-host2")}
    start = np.array([s["start_ns"] - EPOCH])
    for host, via in (("host2", []), ("host3", ["host2"])):
        c = s["clock"]["hosts"][host]
        assert c["applied"] == "trace" and c["trace"]["via"] == via
        assert c["trace"]["offset_at_start_ns"] == pytest.approx(truth[host].theta(start)[0], abs=1000)
        assert c["trace"]["drift_ppm"] == pytest.approx(truth[host].drift_ppm, abs=0.5)
    assert all(seg["negative"] == 0 for p in s["paths"].values() for seg in p["segments"])
    assert "| host3 | trace via host2 |" in markdown(s)
    b = analyze(d, partitions=3)
    assert json.dumps(b.summary, sort_keys=True) == json.dumps(s, sort_keys=True)


@pytest.mark.parametrize("probed", [(), ("host2", "host3", "host4")], ids=["no-probes", "probes"])
def test_clocks_of_pairs_that_talk_only_among_themselves(tmp_path, probed):
    """Two pairs that share no packet (the 16-host bench is eight such pairs): host1 <-> host2 and
    host3 <-> host4, host3 3 s ahead of the reference and host4 2 s behind. The second pair's
    packets are matched although its clocks are 5 s apart, and host4's clock is found from the
    trace against host3's: with probes host3 is placed by them and host4 through it, without them
    host4 is put on host3's clock (the report says so). Either way the second pair's segments are
    right, in memory and out of core alike. Before, nothing of that pair was matched."""
    d = tmp_path / "run"
    truth = make_chain_run(d, {"host2": (1500, 20), "host3": (3e6, 5), "host4": (-2e6, -10)},
                           links=[("host1", "host2"), ("host3", "host4")], probed=probed)
    s = analyze(d, partitions=0).summary
    assert {n: (p["complete"], p["lost"]) for n, p in s["paths"].items()} == {
        n: (3000, 0) for n in ("host1-host2", "host2-host1", "host3-host4", "host4-host3")}
    for p in s["paths"].values():
        for seg in p["segments"]:  # 20 us of wire and exponential queueing of 2 us mean: median 21.4
            assert seg["negative"] == 0 and seg["p50_ns"] == pytest.approx(21_390, abs=300), seg["name"]
    c = s["clock"]["hosts"]
    start = s["start_ns"] - EPOCH
    assert c["host4"]["applied"] == "trace" and c["host4"]["trace"]["via"] == ["host3"]
    if probed:
        assert c["host3"]["applied"] == "probe" and c["host4"]["trace"]["anchor"] == "probe"
        assert c["host4"]["trace"]["offset_at_start_ns"] == pytest.approx(truth["host4"].theta(start), abs=2000)
        assert "| host4 | trace via host3 (host3 by its probes) |" in markdown(s)
    else:
        assert c["host3"]["applied"] == "none" and c["host4"]["trace"]["anchor"] == "none"
        at = start - truth["host3"].theta(start)  # host4's line is told when host3's clock reads start_ns
        rel = truth["host4"].theta(at) - truth["host3"].theta(at)
        assert c["host4"]["trace"]["offset_at_start_ns"] == pytest.approx(rel, abs=1000)
        assert "| host4 | trace via host3 (against host3's clock) |" in markdown(s)
        assert "segments among them are right" in markdown(s)
    b = analyze(d, partitions=2)
    assert json.dumps(b.summary, sort_keys=True) == json.dumps(s, sort_keys=True)


def test_top_has_the_figures_of_pairs_that_talk_only_among_themselves(tmp_path):
    """`vnettracer top`'s window (analysis.window, on each host's own wall clock): the segments
    between host3 and host4, 5 s apart and sharing no packet with the reference, are corrected
    against each other and get figures; before, host4 was never matched to anything."""
    from vnettracer.analysis import inputs, load_events, on_own_clocks, window

    d = tmp_path / "run"
    make_chain_run(d, {"host2": (1500, 20), "host3": (3e6, 5), "host4": (-2e6, -10)},
                   links=[("host1", "host2"), ("host3", "host4")])
    ev, clocks = load_events(d)
    on_own_clocks(ev, clocks)
    out = window(inputs.read_spec(d), ev[["host", "tracepoint", "t_ns", "packet_id", "flow_hash", "len", "flags"]])
    for name in ("host3-host4", "host4-host3"):
        (seg,) = out[name]["segments"]
        assert seg["clock_corrected"] and seg["count"] == 3000 and seg["p50_ns"] == pytest.approx(21_390, abs=300)


def test_clock_stepped_during_the_run(tmp_path):
    """host2's wall clock is stepped 50 ms forward 6 s into a 20 s run (NTP at a VM's boot): its
    events keep ktime's rate, so the drift found is the clock's own, nothing is lost or negative,
    and the report names the step."""
    d = tmp_path / "run"
    truth = make_run(d, packets=4000, seconds=20, drift_ppm=20, loss=0.0, dup=0.0, step=(6.0, 50_000))
    for parts in (0, 2):
        a = analyze(d, partitions=parts)
        s = a.summary
        assert [(p["complete"], p["lost"]) for p in s["paths"].values()] == [(4000, 0), (4000, 0)]
        assert all(seg["negative"] == 0 for p in s["paths"].values() for seg in p["segments"])
        h2 = s["clock"]["hosts"]["host2"]
        # on the clock after its step (the longest stretch): the truth plus 50 ms
        start = np.array([s["start_ns"] - EPOCH])
        assert h2["trace"]["offset_at_start_ns"] == pytest.approx(truth.theta(start)[0] + 50e6, abs=1000)
        assert h2["trace"]["drift_ppm"] == pytest.approx(20, abs=0.5)
        (st,) = s["integrity"]["clock_steps"]["host2"]
        assert st["step_ns"] == pytest.approx(50e6, abs=1000)
        assert st["at_ns"] - EPOCH - 50e6 - truth.theta(np.array([6e9]))[0] == pytest.approx(6e9, abs=1e4)
        assert "## Clock steps" in markdown(s) and "| host2 |" in markdown(s)


def test_tagged_packets_are_followed_across_nat(tmp_path):
    """A DNAT on the way (a service address, a published port) changes the flow from hook 3 on;
    tagged packets keep their tag and are followed across it: only the run's real losses. The few
    without a tag (handshakes) become other packets there: not followed, and not lost; the report
    says where the NAT is."""
    d = tmp_path / "run"
    truth = make_run(d, packets=3000, seconds=10, loss=0.01, dup=0.0, nat_at=3)
    a = analyze(d, partitions=0)
    req, rep = a.summary["paths"]["request"], a.summary["paths"]["reply"]
    u, v = truth.untagged["request"], truth.untagged["reply"]
    assert 20 < u < 100 and 20 < v < 100
    lost_tagged = req["packets"] - req["complete"] - req["across_nat"] - req["joined"]
    assert (req["lost"], req["across_nat"], rep["lost"], rep["across_nat"]) == (lost_tagged, u, 0, v)
    assert truth.lost - u < req["lost"] <= truth.lost and rep["complete"] == 3000 - v
    assert [s["renamed"] > 0 for s in req["segments"]] == [False, False, True] + [False] * 6
    assert "a NAT at h1-cni0-in -> h1-flannel-eg" in markdown(a.summary)
    assert all(seg["negative"] == 0 for p in (req, rep) for seg in p["segments"])
    b = analyze(d, partitions=4)
    assert json.dumps(b.summary, sort_keys=True) == json.dumps(a.summary, sort_keys=True)


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


def test_report_cli_writes_the_report_and_gates_on_a_baseline(tmp_path):
    """As CI uses it: `vnettracer report RUN --baseline BASE --junit`: every report file written,
    exit 1 for the slowed segment, one JUnit case per segment (the gate's rules: test_gate.py)."""
    base, slow = tmp_path / "base", tmp_path / "slow"
    make_run(base, packets=5000, seconds=20, seed=5)
    make_run(slow, packets=5000, seconds=20, seed=6, slow_segment=6_000)
    r = vnettracer("report", str(slow), "--baseline", str(base), "--max-regression", "20%", "--junit", str(tmp_path / "j.xml"))
    assert r.returncode == 1, r.stdout + r.stderr
    for f in ("report.md", "report.html", "summary.json", "figures/segments.png", "figures/cdf.png",
              "figures/over_time.png", "figures/clock.png"):
        assert (slow / f).is_file(), f
    s = json.loads((slow / "summary.json").read_text())
    assert s["version"] == 1 and set(s["paths"]) == {"request", "reply"}
    assert "Dominant segment: **h1-eth0-eg -> h2-eth0-in**" in (slow / "report.md").read_text()
    suite = ET.parse(tmp_path / "j.xml").getroot()
    failed = [tc.get("name") for tc in suite.iter("testcase") if tc.find("failure") is not None]
    assert failed == ["h1-flannel-eg -> h1-eth0-eg"]  # the segment made slower, and only it
    assert suite.get("tests") == "18" and suite.get("failures") == "1"
    assert not (base / "report.md").exists()  # the baseline is read, never written


def test_compare_names_the_segments_it_could_not_compare(tmp_path):
    """`vnettracer compare A B` where B's experiment changed: the segments in only one run are
    named under the table (and in the HTML), not dropped unsaid; runs with no segment in common
    are an error (exit 2), not an empty table."""
    import yaml

    a, b = tmp_path / "a", tmp_path / "b"
    for d, seed in ((a, 1), (b, 2)):
        make_run(d, packets=300, seconds=2, seed=seed)
    spec = yaml.safe_load((b / "spec.yml").read_text())
    reply = next(p for p in spec["paths"] if p["name"] == "reply")
    reply["tracepoints"] = reply["tracepoints"][:-1]  # B's reply ends a hook earlier
    (b / "spec.yml").write_text(yaml.safe_dump(spec))
    r = vnettracer("compare", str(a), str(b), "--html", str(tmp_path / "c.html"))
    assert r.returncode == 0, r.stderr
    assert "not compared, only in A: reply: h1-veth-eg -> h1c1-eth0-in" in r.stdout
    assert "only in B" not in r.stdout and "of 51 figures changed" in r.stdout  # 17 shared segments x 3
    assert "Not compared, only in A: reply: h1-veth-eg -&gt; h1c1-eth0-in" in (tmp_path / "c.html").read_text()
    for p in spec["paths"]:
        p["name"] += "-new"
    (b / "spec.yml").write_text(yaml.safe_dump(spec))
    r = vnettracer("compare", str(a), str(b))
    assert r.returncode == 2 and "share no segment: nothing to compare" in r.stderr, r.stdout + r.stderr


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


def test_window_minima_are_each_windows_least_delay_and_when():
    """Per window: the least delay and the time of its first point with it (ties in input order);
    NaN for an empty window; points before the first edge or past the last are left out."""
    from vnettracer.analysis.clock import window_minima

    rng = np.random.default_rng(5)
    edges = np.arange(0, 10_001, 1000, dtype=np.int64)
    t = rng.integers(-500, 11_000, 5000).astype(np.int64)
    t = t[(t < 3000) | (t >= 4000)]  # window 3 empty
    d = rng.integers(0, 50, len(t)).astype(np.float64)  # many ties
    mins, at = window_minima(t, d, edges)
    for w in range(len(edges) - 1):
        inside = np.flatnonzero((t >= edges[w]) & (t < edges[w + 1]))
        if not len(inside):
            assert w == 3 and np.isnan(mins[w]) and np.isnan(at[w])
            continue
        least = d[inside].min()
        assert mins[w] == least and at[w] == t[inside[d[inside] == least][0]], w


@pytest.mark.parametrize("seconds", [2, 60])  # offset alone; offset and drift
def test_clock_bounds_cover_unequal_delays(seconds):
    """Minimum delays of 30 us one way and 170 us the other move both estimates by 70 us; each
    estimate's bound (half the minimum round trip) covers its error, and no more than needed."""
    from vnettracer.analysis.clock import offset_from_trace

    rng = np.random.default_rng(11)
    n = 400 * seconds
    t = np.sort(rng.uniform(0, seconds * 1e9, n)).astype(np.int64)
    theta = 2_000_000 + 3e-6 * t
    trace = offset_from_trace(t, 30_000 + rng.exponential(5_000, n) + theta, t, 170_000 + rng.exponential(5_000, n) - theta)
    fwd, back = 30_000 + rng.exponential(5_000, n), 170_000 + rng.exponential(5_000, n)
    t2 = t + fwd + theta
    t4 = t2 + 5_000 - theta + back
    probe = offset_from_probes(pd.DataFrame({"t1": t, "t2": t2.astype(np.int64), "t3": (t2 + 5_000).astype(np.int64),
                                             "t4": t4.astype(np.int64)}))
    for line in (trace, probe):
        at = np.array([line.t0_ns])
        err = abs(line.at(at)[0] - (2_000_000 + 3e-6 * line.t0_ns))
        assert 60_000 < err <= line.bound_ns < 120_000, (line, err)


def test_report_warns_where_trace_and_probes_cannot_both_be_right():
    from vnettracer.analysis.report import markdown

    def summary(disagreement):
        h = {"applied": "trace", "trace": {"offset_at_start_ns": 1e6, "bound_ns": 40e3, "drift_ppm": 1.0},
             "probe": {"offset_at_start_ns": 1e6, "bound_ns": 60e3, "drift_ppm": 1.0},
             "disagreement_ns": disagreement, "consistent": abs(disagreement) <= 100e3}
        return {"experiment": "x", "run": "r", "events": 0, "start_ns": 0, "end_ns": 1,
                "clock": {"reference": "host1", "method": "trace", "hosts": {"host2": h}}, "paths": {},
                "throughput": {}}

    assert "| host2 | trace | 1000.00 | 40.00 | 1.000 | 1000.00 | 60.00 | 1.000 | 90.00 |" in markdown(summary(90e3))
    assert "Warning" not in markdown(summary(90e3))
    assert "**Warning**: on host2 trace and probes disagree" in markdown(summary(-150e3))


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


@pytest.mark.parametrize("out_of_core", [False, True], ids=["in-memory", "partitioned"])
def test_packets_that_take_another_branch_are_diverted_not_lost(out_of_core):
    """One sender talking to two hosts: paths a (hooks 1,2,3,4) and b (1,2,5,6) share their first
    two hooks. Each path sees the other's packets leave it: diverted, with where they went. Only
    packets that vanish (here 30 of flow x after hook 2) are lost, on both paths; packets to a group
    address seen only at hook 1 (a container's router solicitations) are neither. Out of core, the
    partitions keep only the off-path sightings of packets that left a path: the same answer."""
    from vnettracer.agent.record import F_GROUP
    from vnettracer.analysis import partition
    from vnettracer.analysis.correlate import Elsewhere, correlate, decompose, packet_keys

    rng = np.random.default_rng(4)
    rows = []
    for flow, hooks, n in ((1, [1, 2, 3, 4], 400), (2, [1, 2, 5, 6], 300)):
        for i in range(n):
            t0 = int(rng.integers(0, 5e9))
            vanish = flow == 1 and i < 30
            for j, h in enumerate(hooks[:2] if vanish else hooks):
                rows.append((h, t0 + 1000 * j, i, flow, 2))
    rows += [(1, int(t), 0, 3, 2 | F_GROUP) for t in np.linspace(0, 5e9, 5)]  # one packet, repeated 1.25 s apart
    ev = pd.DataFrame(rows, columns=["tracepoint", "t_ns", "packet_id", "flow_hash", "flags"])
    ev["len"] = 100
    ids = {f"t{k}": k for k in range(1, 7)}
    names = {v: k for k, v in ids.items()}
    keys = packet_keys(ev)
    paths = {"a": ["t1", "t2", "t3", "t4"], "b": ["t1", "t2", "t5", "t6"]}
    out = {}
    if out_of_core:
        parts = partition.Partitions(4)
        try:
            parts.add_host({c: ev[c].to_numpy(dt) if c in ev else np.zeros(len(ev), dt) for c, dt in partition.COLUMNS.items()})
            traces, kept, _ = partition.correlate_all(parts, paths, ids, 10**9, lambda s: None)
        finally:
            parts.remove()
        for pname in paths:
            off = partition.elsewhere(kept[pname], ["h"], {})
            assert len(off.keys) == 2 * (300 if pname == "a" else 370)  # only what left the path: 2 hooks each
            out[pname] = decompose(traces[pname], end_ns=10**12, elsewhere=off, names=names)
    for pname, tps in paths.items():
        if not out_of_core:
            pt = correlate(ev, pname, tps, ids)
            out[pname] = decompose(pt, end_ns=10**12, elsewhere=Elsewhere.of(ev, keys, [ids[t] for t in tps]), names=names)
    a, b = out["a"], out["b"]
    assert (a["lost"], a["diverted"], a["diverted_to"], a["group"]) == (30, 300, {"t5": 300}, 5)
    assert (b["lost"], b["diverted"], b["diverted_to"], b["group"]) == (30, 370, {"t3": 370}, 5)
    assert a["segments"][1]["lost"] == 30 and a["segments"][1]["diverted"] == 300 and a["segments"][1]["loss_rate"] == 30 / 700
    assert a["segments"][0]["lost"] == a["segments"][2]["lost"] == 0


def test_packets_of_another_path_on_shared_hooks_are_not_counted_on_this_one(tmp_path):
    """Two container pairs behind one bridge and NIC: each path's shared hooks also see the other
    pair's packets. Those (seen just before at the other path's first hook) are not this path's:
    not in its packets, segments or workloads, and said where they came from; packets that joined
    from nowhere known stay "joined". The same out of core."""
    from vnettracer.analysis.synth import make_shared_run

    d = tmp_path / "run"
    make_shared_run(d, pairs=(500, 3000), joined=7)
    s = analyze(d).summary
    one, two = s["paths"]["one"], s["paths"]["two"]
    assert (one["packets"], one["complete"], one["joined"], one["other_branch"]) == (507, 500, 7, {"a2": 3000})
    assert [g["count"] for g in one["segments"]] == [500, 507, 507, 507]
    assert (two["packets"], two["complete"], two["other_branch"]) == (3007, 3000, {"a1": 500})
    assert (two["joined"], two["diverted"], two["lost"]) == (7, 0, 0)  # the 7 of nowhere known
    assert "3000 packets of another path not counted (from a2 3000)" in markdown(s)
    assert json.dumps(analyze(d, partitions=3).summary, sort_keys=True) == json.dumps(s, sort_keys=True)
    from vnettracer.analysis import inputs, load_events, on_own_clocks, window

    ev, clocks = load_events(d)
    on_own_clocks(ev, clocks)
    top = window(inputs.read_spec(d), ev[["host", "tracepoint", "t_ns", "packet_id", "flow_hash", "len", "flags"]])
    assert (top["one"]["packets"], top["two"]["packets"]) == (507, 3007)  # `vnettracer top` alike


def test_out_of_core_analysis_equals_in_memory(synth):
    """The partitioned analysis (runs larger than memory) gives the in-memory summary exactly, and
    the same per-path traces row for row; its temporary partition files are gone afterwards."""
    import tempfile
    from pathlib import Path

    d, _, a = synth
    before = set(Path(tempfile.gettempdir()).glob("vnt-partitions-*"))
    said = []
    b = analyze(d, partitions=4, progress=said.append)  # its 4 x 8 files per host held open
    assert json.dumps(b.summary, sort_keys=True) == json.dumps(a.summary, sort_keys=True)
    for name, pt in a.traces.items():
        assert np.array_equal(pt.times, b.traces[name].times) and np.array_equal(pt.keys, b.traces[name].keys)
    assert "analysis: correlated partition 4/4" in said
    assert set(Path(tempfile.gettempdir()).glob("vnt-partitions-*")) == before


def test_paths_with_few_or_no_packets_in_memory_and_out_of_core(tmp_path):
    """A path that saw no packet is reported with none (not a failed analysis); a path seldom used
    leaves most partitions without any of its events: the partitioned analysis gives the same."""
    d = tmp_path / "run"
    make_run(d, packets=5, seconds=2, silent=("reply",))
    a = analyze(d, partitions=0)
    paths = a.summary["paths"]
    assert (paths["request"]["packets"], paths["request"]["complete"]) == (5, 5)
    assert (paths["reply"]["packets"], paths["reply"]["lost"], paths["reply"]["end_to_end"]["count"]) == (0, 0, 0)
    assert "reply" in markdown(a.summary)
    assert json.dumps(analyze(d, partitions=16).summary, sort_keys=True) == json.dumps(a.summary, sort_keys=True)


def test_out_of_core_finds_a_far_clock_whose_packets_are_in_a_few_partitions(tmp_path):
    """host4's clock is 7 s off and only 40 of its packets are in the run: most of the 64 partitions
    hold none of them, yet out of core its packets are matched as in memory (its rough offset comes
    from every partition's share of the sample, not from the first partition's)."""
    d = tmp_path / "run"
    make_chain_run(d, {"host2": (300, 10), "host3": (-4000, -20), "host4": (7e6, 0)}, packets=20)
    a = analyze(d, partitions=0).summary
    assert a["paths"]["host3-host4"]["complete"] == a["paths"]["host4-host3"]["complete"] == 20
    assert json.dumps(analyze(d, partitions=64).summary, sort_keys=True) == json.dumps(a, sort_keys=True)


def test_segments_across_a_clock_not_corrected_are_marked_not_ranked_and_fail_the_gate(tmp_path):
    """One-way traffic and no clock probes: host2's clock cannot be estimated. The wire between the
    hosts then holds the clocks' 1.5 ms offset: it is marked, has no share, is not the dominant
    segment, a baseline gate fails it instead of comparing it, and `compare` never calls it a change."""
    from vnettracer.analysis.gate import compare

    d = tmp_path / "run"
    make_run(d, packets=50, seconds=2, offset_us=1500, silent=("reply",))
    s = analyze(d).summary
    assert s["clock"]["hosts"]["host2"]["applied"] == "none"
    req = s["paths"]["request"]
    wire = next(g for g in req["segments"] if g["from"] == "h1-eth0-eg")
    assert wire["p50_ns"] > 1_000_000 and not wire["clock_corrected"] and wire["share"] is None
    assert all(g["clock_corrected"] for g in req["segments"] if g is not wire) and not req["clock_corrected"]
    assert req["dominant"] == "h1-flannel-eg -> h1-eth0-eg"  # the largest of the others (8 us)
    assert sum(g["share"] for g in req["segments"] if g is not wire) == pytest.approx(1.0)
    md = markdown(s)
    assert "| h1-eth0-eg -> h2-eth0-in (clocks not corrected) |" in md and "**Not corrected**: host2" in md
    failed = [c for c in compare(s, s, 0.2) if not c.ok and c.path == "request"]  # reply: never seen
    assert [c.segment for c in failed] == [wire["name"]]
    assert "not comparable" in failed[0].problems[0]
    from vnettracer.analysis.compare import compare as compare_runs

    rows = [c for c in compare_runs(d, d) if c.segment == wire["name"] and c.what != "loss_pct"]
    assert len(rows) == 2 and not any(c.comparable or c.real for c in rows)


def test_a_clock_far_ahead_and_not_corrected_does_not_hide_losses_as_in_flight(tmp_path):
    """One-way traffic, host2's clock 3 s ahead and not corrected: the path's end to end holds the
    offset, so it cannot tell how long a packet may still be on its way at the capture's end. The
    in-flight horizon is then the correlation window (1 s), not twice that p99 (6 s, which made
    most of the run's losses "in flight"); the InfluxDB points say the wire is not corrected."""
    from vnettracer.store.publish import per_second

    d = tmp_path / "run"
    truth = make_run(d, packets=4000, seconds=10, offset_us=3_000_000, drift_ppm=0, loss=0.05, silent=("reply",))
    a = analyze(d)
    req = a.summary["paths"]["request"]
    assert a.summary["clock"]["hosts"]["host2"]["applied"] == "none" and not req["clock_corrected"]
    assert req["end_to_end"]["p50_ns"] > 2.9e9  # the offset, uncorrected
    assert req["lost"] + req["in_flight_at_end"] == truth.lost
    assert req["in_flight_at_end"] < 0.2 * truth.lost and req["lost"] > 0.8 * truth.lost
    rows = per_second(a)
    wire = rows[rows["segment"] == "h1-eth0-eg -> h2-eth0-in"]
    assert len(wire) and not wire["clock_corrected"].any() and wire["lost"].sum() == req["lost"]
    assert rows[rows["segment"] != "h1-eth0-eg -> h2-eth0-in"]["clock_corrected"].all()


def test_a_sampled_run_says_its_counts_are_of_the_kept_packets(tmp_path):
    """With tracer.sampling N the counts and throughput are of 1 in N packets: the report says so
    at the top and over the throughput table; an unsampled run says nothing of it."""
    import yaml

    d = tmp_path / "run"
    make_run(d, packets=300, seconds=2)
    plain = markdown(analyze(d).summary)
    assert "Sampled" not in plain and "## Throughput per tracepoint\n" in plain
    spec = yaml.safe_load((d / "spec.yml").read_text())
    spec["tracer"]["sampling"] = 4
    (d / "spec.yml").write_text(yaml.safe_dump(spec))
    s = analyze(d).summary
    md = markdown(s)
    assert s["sampling"] == 4 and "**Sampled**: 1 in 4 packets kept" in md
    assert md.index("**Sampled**") < md.index("## Path request")
    assert "## Throughput per tracepoint (kept packets: about 1 in 4 of the traffic)" in md


def test_a_host_that_gave_no_event_is_named_first_in_the_report(tmp_path):
    """host2's spool never reached the run folder: no request packet arrives past the wire,
    so the report says first that host2 gave no event (both analyses)."""
    import shutil

    d = tmp_path / "run"
    make_run(d, packets=200, seconds=2)
    shutil.rmtree(d / "events" / "host2")
    s = analyze(d).summary
    assert s["integrity"]["silent"] == {"host2": "no events folder (not collected?)"}
    req = s["paths"]["request"]
    assert (req["complete"], req["lost"] + req["in_flight_at_end"], s["paths"]["reply"]["complete"]) == (0, 200, 0)
    md = markdown(s)
    assert md.index("## Hosts without events") < md.index("## Path request") and "| host2 |" in md
    assert "Reference host: host1; every event is on its clock: nothing to correct." in md  # no empty table
    assert json.dumps(analyze(d, partitions=4).summary, sort_keys=True) == json.dumps(s, sort_keys=True)


def test_out_of_core_analysis_within_a_default_open_file_limit(synth):
    """A run split into many partitions (8 column files each per host) is analysed under the usual
    default of 1024 open files, to the same summary: past what the limit holds, the split opens
    each file for its write."""
    import subprocess
    import sys

    d, _, a = synth
    code = ("import json, resource, sys; from pathlib import Path; from vnettracer.analysis import analyze\n"
            "if __name__ == '__main__':\n"
            "    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))\n"
            "    print(json.dumps(analyze(Path(sys.argv[1]), partitions=256).summary, sort_keys=True))")
    out = subprocess.run([sys.executable, "-c", code, str(d)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == json.dumps(a.summary, sort_keys=True)


def test_workloads_on_one_path_reported_each_with_its_own_figures():
    """tcp_rr and a UDP echo share a path: their packets are told apart by flow (server port and
    protocol, any client port), each gets its own end to end, beside what its client measured."""
    from vnettracer import spec
    from vnettracer.agent.identity import flow_hash
    from vnettracer.analysis.correlate import correlate
    from vnettracer.analysis.workloads import per_workload

    exp = spec.load("quickstart")[0].experiment
    wl = exp.workload_endpoints()
    rr, echo = wl[0], wl[1]
    assert (rr["kind"], echo["kind"]) == ("tcp_rr", "udp_echo")
    rows = []
    for w, proto, cport, delay, n in ((rr, 6, 45678, 30_000, 500), (echo, 17, 51000, 80_000, 200)):
        fh = flow_hash(w["client_addr"], w["server_addr"], proto, cport, w["port"])
        for i in range(n):
            rows += [(1, i * 10**6, i, fh), (2, i * 10**6 + delay, i, fh)]
    ev = pd.DataFrame(rows, columns=["tracepoint", "t_ns", "packet_id", "flow_hash"])
    ev["flow_hash"] = ev["flow_hash"].astype(np.uint64)
    ev["len"], ev["flags"] = 100, 2
    pt = correlate(ev, "p", ["a", "b"], {"a": 1, "b": 2})
    results = [{"latency_us": {"p50": 14.0, "p99": 20.0}}, {"rtt_us": {"p50": 160.0}}]
    per = per_workload(pt, wl, results, end_ns=10**12, window_ns=10**9)
    assert set(per) == {"1:tcp_rr:11111", "2:udp_echo:12345"}
    assert per["1:tcp_rr:11111"]["packets"] == 500 and per["2:udp_echo:12345"]["packets"] == 200
    assert per["1:tcp_rr:11111"]["end_to_end"]["p50_ns"] == 30_000
    assert per["2:udp_echo:12345"]["end_to_end"]["p50_ns"] == 80_000
    assert per["1:tcp_rr:11111"]["own"] == {"latency_us.p50": 14.0, "latency_us.p99": 20.0}
    assert per["2:udp_echo:12345"]["own"] == {"rtt_us.p50": 160.0}


def test_experiment_baseline_gates_the_run(tmp_path):
    """`report.baseline` in the experiment: the report stage compares with it and fails the run
    (exit code 1) naming the regressed segment; gate.xml and meta.json say the same."""
    from vnettracer.analysis.inputs import read_spec
    from vnettracer.errors import RegressionError
    from vnettracer.spec import Run
    from vnettracer.stages import Context, Runner
    from vnettracer.stages.report import ReportStage

    base, slow = tmp_path / "base", tmp_path / "slow"
    make_run(base, packets=5000, seconds=20, seed=5)
    make_run(slow, packets=5000, seconds=20, seed=6, slow_segment=6_000)
    exp = read_spec(slow)
    exp = exp.model_copy(update={"report": exp.report.model_copy(update={"baseline": str(base)})})
    meta = {"stages": {}}
    ctx = Context(Run(params={}, experiment=exp, source=str(slow / "spec.yml")), slow, meta, lambda m: None)
    with pytest.raises(RegressionError) as e:
        Runner(ctx)(ReportStage())
    assert e.value.exit_code == 1 and e.value.problems == ["request: h1-flannel-eg -> h1-eth0-eg: " +
                                                           e.value.problems[0].split(": ", 2)[2]]
    assert meta["gate"]["regressed"] == ["request: h1-flannel-eg -> h1-eth0-eg"] and meta["gate"]["segments"] == 18
    assert ET.parse(slow / "gate.xml").getroot().get("failures") == "1"
    assert not (base / "report.md").exists()  # the baseline is read, never written


def test_compare_tells_a_real_change_from_noise(tmp_path):
    """Two runs of the same system and one with a slower segment: only that segment's p50 moves
    beyond its interval; the same system compared with itself shows no real change."""
    base, again, slow = tmp_path / "base", tmp_path / "again", tmp_path / "slow"
    make_run(base, packets=5000, seconds=20, seed=5)
    make_run(again, packets=5000, seconds=20, seed=7)
    make_run(slow, packets=5000, seconds=20, seed=6, slow_segment=6_000)
    r = vnettracer("compare", str(base), str(slow), "--json", "--html", str(tmp_path / "c.html"))
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    real_p50 = [(x["path"], x["segment"]) for x in rows if x["real"] and x["what"] == "p50_us"]
    assert real_p50 == [("request", "h1-flannel-eg -> h1-eth0-eg")]
    moved = next(x for x in rows if x["segment"] == "h1-flannel-eg -> h1-eth0-eg" and x["what"] == "p50_us")
    assert 5.5 < moved["diff"] < 6.5 and moved["lo"] > 5
    assert "h1-flannel-eg -&gt; h1-eth0-eg" in (tmp_path / "c.html").read_text()
    same = json.loads(vnettracer("compare", str(base), str(again), "--json").stdout)
    assert not [x for x in same if x["real"]]


@pytest.fixture
def drawn(monkeypatch):
    """The figures the report draws, by file name, kept open instead of saved (closed afterwards)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vnettracer.analysis import report

    figs: dict = {}
    monkeypatch.setattr(report, "_save", lambda fig, path: figs.setdefault(path.name, fig) and path)
    yield figs
    for fig in figs.values():
        plt.close(fig)


def test_figures_label_each_path_and_keep_a_robust_scale(synth, tmp_path, drawn):
    """segments.png: each path's bar carries its own segment names (the reply's too); over_time.png:
    one odd bin does not set the scale, and each workload's span is marked."""
    import matplotlib.pyplot as plt

    from vnettracer.analysis import report

    d, truth, a = synth
    report._stacked(a, tmp_path / "segments.png")
    for ax, p in zip(drawn["segments.png"].axes, a.summary["paths"].values()):
        assert [t.get_text() for t in ax.get_legend().get_texts()] == [g["name"] for g in p["segments"]]

    fig, ax = plt.subplots()
    tops = [10.0] * 200 + [700.0]
    a.summary["paths"]["request"]["workloads"] = {"1:tcp_rr:11111": {"first_ns": a.summary["start_ns"],
                                                                     "last_ns": a.summary["start_ns"] + 10**9}}
    report._phases_and_scale(ax, a, "request", a.summary["start_ns"], tops)
    assert ax.get_ylim()[1] == pytest.approx(15.0)
    assert any("clipped" in t.get_text() for t in ax.texts) and any(t.get_text() == "1:tcp_rr:11111" for t in ax.texts)
    plt.close(fig)
    del a.summary["paths"]["request"]["workloads"]


def test_cdf_is_drawn_at_quantiles_exactly_and_quietly(synth, tmp_path, drawn):
    """cdf.png: a segment of more packets than CDF_POINTS is drawn at that many quantiles, exact
    there (median, extremes), with no warning (a legend placed "best" over every point was one, and
    most of the report's time on large runs)."""
    import warnings

    from vnettracer.analysis import report

    d, truth, a = synth
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report.segment_figures(a, [report.cdf_figure(tmp_path / "cdf.png")])
    for ax, name in zip(drawn["cdf.png"].axes, a.traces):
        segs = report._segment_latencies(a, name)
        assert [ln.get_label() for ln in ax.lines] == [label for label, _, lat in segs if len(lat)]
        for ln, (_, _, lat) in zip(ax.lines, segs):
            x, y = ln.get_xdata(), ln.get_ydata()
            assert len(lat) > report.CDF_POINTS and len(x) == report.CDF_POINTS
            assert x[0] == lat.min() and x[-1] == lat.max()
            assert x[report.CDF_POINTS // 2] == pytest.approx(np.median(lat)) and y[report.CDF_POINTS // 2] == 0.5


def test_figures_of_many_paths_stay_readable(synth, tmp_path, drawn, monkeypatch):
    """A run of 7 paths (16 hosts have 16): cdf.png puts its panels two a row (a request beside its
    reply), not all in one row 6 inches each (a 16-path run drew 10,560 pixels wide, which a page
    shrinks to 68 pixels a panel); each panel titled with its path, no empty panel left."""
    from vnettracer.analysis import report

    d, truth, a = synth
    many = {f"{name}-{i}": pt for i in range(4) for name, pt in a.traces.items()}
    monkeypatch.setattr(a, "traces", dict(list(many.items())[:7]))
    report.segment_figures(a, [report.cdf_figure(tmp_path / "cdf.png"),
                               report.over_time_figure(a, tmp_path / "over_time.png")])
    fig = drawn["cdf.png"]
    assert tuple(fig.get_size_inches()) == (12, 16)
    assert [ax.get_title().split(":")[0] for ax in fig.axes] == list(a.traces)
    places = {(round(ax.get_position().x0, 2), round(ax.get_position().y0, 2)) for ax in fig.axes}
    assert len(places) == 7 and len({x for x, _ in places}) == 2 and len({y for _, y in places}) == 4
    assert len(drawn["over_time.png"].axes) == 7


@pytest.mark.parametrize("cores", [2, 1])
def test_figures_drawn_beside_the_rest_and_here_if_that_failed(tmp_path, monkeypatch, cores):
    """report._alongside: the figures it is given are drawn in a forked child while the rest are
    drawn here; a child that failed, or hangs past its grace, has them drawn again here (where its
    error would come out); an error here ends the child at once (nothing left running); on one core
    they are drawn here."""
    import functools
    import time

    from vnettracer.analysis import report

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    me, log = os.getpid(), tmp_path / "drawn"

    def draw(fail_in_child: bool) -> None:
        with open(log, "a") as f:
            f.write("here\n" if os.getpid() == me else "child\n")
        if fail_in_child and os.getpid() != me:
            raise RuntimeError("a figure failed in the child")

    for fail, drawn in ((False, ["child"]), (True, ["child", "here"])):
        log.unlink(missing_ok=True)
        with report._alongside(functools.partial(draw, fail)):
            pass
        assert log.read_text().split() == (drawn if cores > 1 else ["here"])
    if cores == 1:
        return
    pidfile = tmp_path / "child.pid"

    def slow() -> None:
        pidfile.write_text(str(os.getpid()))
        time.sleep(30)

    log.unlink()
    monkeypatch.setattr(report, "CHILD_GRACE_S", 0.5)
    t0 = time.monotonic()
    with report._alongside(lambda: draw(False) if os.getpid() == me else (draw(False), time.sleep(30))):
        pass  # a child that hangs (a lock held at the fork) is ended and its figures drawn here
    assert log.read_text().split() == ["child", "here"] and time.monotonic() - t0 < 10

    t0 = time.monotonic()
    with pytest.raises(ValueError), report._alongside(slow):
        while not pidfile.exists() and time.monotonic() < t0 + 10:
            time.sleep(0.01)
        raise ValueError("the report failed here")
    assert time.monotonic() - t0 < 10
    with pytest.raises(ProcessLookupError):  # killed and reaped
        os.kill(int(pidfile.read_text()), 0)


def test_key_time_order_is_lexsort_with_ties_kept():
    """The fast (key, time) order is np.lexsort's, equal (key, time) rows in their own order, and
    falls back to lexsort when the key ranks and the time span do not fit one int64 together."""
    from vnettracer.analysis.correlate import key_time_order

    rng = np.random.default_rng(7)
    key = rng.choice(rng.integers(0, 2**63, 500, dtype=np.int64).astype(np.uint64), 20_000)
    t = EPOCH + rng.integers(0, 5_000, 20_000, dtype=np.int64)  # few distinct times: many ties
    assert np.array_equal(key_time_order(key, t), np.lexsort((t, key)))
    t[0] += 2**62  # a span of 2^62 ns with 500 ranks: does not fit
    assert np.array_equal(key_time_order(key, t), np.lexsort((t, key)))
    assert key_time_order(key[:1], t[:1]).tolist() == [0] and len(key_time_order(key[:0], t[:0])) == 0
