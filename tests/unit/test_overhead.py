"""The overhead summary: medians over rounds, and ratios paired with the untraced run of the same
round, with an interval and the spread (pure logic)."""

from __future__ import annotations

import pytest

from vnettracer.analysis.paired import Ratio, bootstrap_ci, paired
from vnettracer.overhead import markdown, summarize


def _row(k, variant, p50, gbit):
    return {"round": k, "variant": variant, "tcpdump": {},
            "workloads": [{"kind": "tcp_rr", "latency_us": {"p50": p50}}, {"kind": "iperf3", "gbit_per_s": gbit}]}


def test_ratios_are_paired_per_round():
    rows = [_row(1, "untraced", 10.0, 8.0), _row(1, "traced-20", 12.0, 7.0),
            _row(2, "traced-20", 13.0, 7.2), _row(2, "untraced", 11.0, 9.0),
            _row(3, "untraced", 30.0, 8.5), _row(3, "traced-20", 11.0, 6.0)]
    s = summarize(rows, ["untraced", "traced-20"])
    rr, bulk = s["1-tcp_rr"]["variants"], s["2-iperf3"]["variants"]
    assert rr["untraced"]["median"] == 11.0 and rr["traced-20"]["median"] == 12.0  # an outlier round does not move it
    assert rr["traced-20"]["ratio"] == pytest.approx(13.0 / 11.0) and rr["untraced"]["ratio"] == 1.0
    assert rr["traced-20"]["spread"] == pytest.approx([11.0 / 30.0, 12.0 / 10.0])
    assert bulk["traced-20"]["ratio"] == pytest.approx(7.2 / 9.0) and bulk["traced-20"]["paired_rounds"] == 3
    lo, hi = rr["traced-20"]["ci"]
    assert lo <= rr["traced-20"]["ratio"] <= hi
    md = markdown(s, 3)
    assert "| traced-20 | 12 | x1.182 |" in md and "lower is better" in md and "higher is better" in md


def test_a_bimodal_machine_does_not_fake_the_figure():
    """RR p50 is bimodal on a shared machine (7.9 us in some rounds, 11.2 us in others) and the
    traced variant costs 1.23x. One traced run lands in the other mode than its round's untraced
    run: dividing medians taken across rounds then reports a speed-up (x0.87); pairing per round
    reports x1.23, and the spread shows the odd round."""
    base = [7.9, 7.9, 11.2, 11.2, 11.2]
    traced = [7.9 * 1.23, 7.9 * 1.23, 7.9 * 1.23, 11.2 * 1.23, 11.2 * 1.23]  # round 3's traced run: fast mode
    naive = sorted(traced)[2] / sorted(base)[2]
    assert naive == pytest.approx(0.8676, abs=1e-3)
    r = paired([{"untraced": b, "traced": t} for b, t in zip(base, traced)], "untraced")["traced"]
    assert r.ratio == pytest.approx(1.23) and r.spread[0] == pytest.approx(0.8676, abs=1e-3)
    assert r.verdict(1.10, lower_is_better=True) in ("not met", "undecided (interval straddles the goal)")


def test_verdicts_respect_the_interval():
    assert Ratio(1.05, (1.02, 1.08), (1.0, 1.1), 9).verdict(1.10, lower_is_better=True) == "met"
    assert Ratio(1.23, (1.18, 1.30), (1.1, 1.4), 9).verdict(1.10, lower_is_better=True) == "not met"
    assert Ratio(1.09, (1.05, 1.14), (1.0, 1.2), 9).verdict(1.10, lower_is_better=True).startswith("undecided")
    assert Ratio(0.96, (0.955, 0.97), (0.9, 1.0), 9).verdict(0.95, lower_is_better=False) == "met"
    lo, hi = bootstrap_ci([1.0, 1.0, 1.0])
    assert lo == hi == 1.0
