"""The CI gate's rules (analysis/gate.py) on summaries with known numbers."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from vnettracer.analysis import gate
from vnettracer.errors import RegressionError


def summary(**segs) -> dict:
    """One path 'request' with segments name -> (p50_us, p99_us, loss_rate)."""
    return {"paths": {"request": {"segments": [
        {"name": n, "count": 1000, "p50_ns": p50 * 1000, "p99_ns": p99 * 1000, "loss_rate": loss}
        for n, (p50, p99, loss) in segs.items()]}}}


BASE = summary(a=(10, 20, 0.0), b=(100, 300, 0.01))


def test_the_same_run_passes():
    checks = gate.compare(BASE, BASE, 0.2)
    assert [c.segment for c in checks] == ["a", "b"] and all(c.ok for c in checks)


@pytest.mark.parametrize("now,bad", [
    (summary(a=(12.1, 20, 0.0), b=(100, 300, 0.01)), {"a": "p50 10.00 -> 12.10 us (+21%)"}),
    (summary(a=(10, 20, 0.0), b=(100, 400, 0.01)), {"b": "p99 300.00 -> 400.00 us (+33%)"}),
    (summary(a=(10, 20, 0.002), b=(100, 300, 0.01)), {"a": "loss 0.000% -> 0.200%"}),
    (summary(a=(10, 20, 0.0)), {"b": "segment missing or never seen in this run"}),
])
def test_each_rule_names_the_segment_and_what_grew(now, bad):
    checks = gate.compare(now, BASE, 0.2)
    assert {c.segment: "; ".join(c.problems) for c in checks if not c.ok} == bad


def test_small_changes_are_not_regressions():
    """Within the limit, below the 500 ns floor (a 1 us segment doubling is noise on a real
    machine), or loss within 0.1 % absolute: all pass."""
    now = summary(a=(11.9, 23.9, 0.0009), b=(100.4, 300, 0.0119))
    assert all(c.ok for c in gate.compare(now, BASE, 0.2))
    tiny = summary(a=(0.2, 0.4, 0.0))
    assert all(c.ok for c in gate.compare(summary(a=(0.6, 0.8, 0.0)), tiny, 0.2))


def test_junit_has_one_case_per_segment_and_the_failure_detail(tmp_path):
    checks = gate.compare(summary(a=(20, 20, 0.0), b=(100, 300, 0.01)), BASE, 0.2)
    gate.junit(checks, tmp_path / "gate.xml", suite="exp<1>")
    suite = ET.parse(tmp_path / "gate.xml").getroot()
    assert suite.get("name") == "exp<1>" and suite.get("tests") == "2" and suite.get("failures") == "1"
    (fail,) = [tc for tc in suite.iter("testcase") if tc.find("failure") is not None]
    assert fail.get("classname") == "request" and fail.get("name") == "a"
    assert fail.find("failure").get("message") == "p50 10.00 -> 20.00 us (+100%)"
    assert "p99 20.00 -> 20.00 us" in fail.find("failure").text
    with pytest.raises(RegressionError) as e:
        gate.raise_for_regressions(checks, "20%")
    assert e.value.exit_code == 1 and e.value.lines()[-1].strip() == "request: a: p50 10.00 -> 20.00 us (+100%)"


@pytest.mark.parametrize("text,value", [("20%", 0.2), ("5.5%", 0.055), ("0.3", 0.3)])
def test_percentages(text, value):
    assert gate.parse_pct(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["lots", "0%", "-5%", "2000%", ""])
def test_bad_percentages_are_refused(text):
    with pytest.raises(ValueError):
        gate.parse_pct(text)
