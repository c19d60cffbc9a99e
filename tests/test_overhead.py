"""The overhead summary: medians over rounds, ratios to untraced (pure logic)."""

from __future__ import annotations

from vnettracer.overhead import markdown, summarize


def _row(k, variant, p50, gbit):
    return {"round": k, "variant": variant, "tcpdump": {},
            "workloads": [{"kind": "tcp_rr", "latency_us": {"p50": p50}}, {"kind": "iperf3", "gbit_per_s": gbit}]}


def test_medians_and_ratios():
    rows = [_row(1, "untraced", 10.0, 8.0), _row(1, "traced-20", 12.0, 7.0),
            _row(2, "traced-20", 13.0, 7.2), _row(2, "untraced", 11.0, 9.0),
            _row(3, "untraced", 30.0, 8.5), _row(3, "traced-20", 11.0, 6.0)]
    s = summarize(rows, ["untraced", "traced-20"])
    rr, bulk = s["1-tcp_rr"]["variants"], s["2-iperf3"]["variants"]
    assert rr["untraced"]["median"] == 11.0 and rr["traced-20"]["median"] == 12.0  # an outlier round does not move it
    assert rr["traced-20"]["ratio"] == 12.0 / 11.0 and rr["untraced"]["ratio"] == 1.0
    assert bulk["traced-20"]["ratio"] == 7.0 / 8.5
    md = markdown(s, 3)
    assert "| traced-20 | 12 | x1.091 |" in md and "lower is better" in md and "higher is better" in md
