"""CI gate: compare a run's segments with a baseline run's; a regression fails the build.

Per segment of every path: p50 and p99 latency may not grow by more than `max_regression`
(relative, ignoring changes below `floor_ns`), and the loss rate may not grow by more than
`max_regression` relative plus 0.1 % absolute. A segment missing from the run fails too, and so
does one across hosts whose clocks the run could not correct (its times hold their offset).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr


@dataclass
class Check:
    path: str
    segment: str
    problems: list[str]
    detail: str

    @property
    def ok(self) -> bool:
        return not self.problems


def parse_pct(text: str) -> float:
    t = text.strip()
    try:
        v = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise ValueError(f"'{text}' is not a percentage like 20%") from None
    if not 0 < v <= 10:
        raise ValueError(f"'{text}' is out of range (0%, 1000%]")
    return v


def compare(now: dict, base: dict, max_regression: float, floor_ns: float = 500.0) -> list[Check]:
    checks = []
    for pname, bp in base["paths"].items():
        np_ = now["paths"].get(pname, {"segments": []})
        segs = {s["name"]: s for s in np_["segments"]}
        for bs in bp["segments"]:
            s = segs.get(bs["name"])
            if s is None or not s.get("count"):
                checks.append(Check(pname, bs["name"], ["segment missing or never seen in this run"], ""))
                continue
            if s.get("clock_corrected") is False:
                checks.append(Check(pname, bs["name"], ["its hosts' clocks are not corrected in this run (too few "
                                                        "packets both ways, no clock probes): not comparable"], ""))
                continue
            problems = []
            for key in ("p50_ns", "p99_ns"):
                b, n = bs.get(key), s.get(key)
                if b is not None and n is not None and n > b * (1 + max_regression) and n - b > floor_ns:
                    problems.append(f"{key[:3]} {b / 1000:.2f} -> {n / 1000:.2f} us (+{(n / b - 1):.0%})")
            bl, nl = bs.get("loss_rate", 0.0), s.get("loss_rate", 0.0)
            if nl > bl * (1 + max_regression) + 0.001:
                problems.append(f"loss {bl:.3%} -> {nl:.3%}")
            detail = (f"p50 {bs.get('p50_ns', 0) / 1000:.2f} -> {s.get('p50_ns', 0) / 1000:.2f} us, "
                      f"p99 {bs.get('p99_ns', 0) / 1000:.2f} -> {s.get('p99_ns', 0) / 1000:.2f} us, "
                      f"loss {bl:.3%} -> {nl:.3%}")
            checks.append(Check(pname, bs["name"], problems, detail))
    return checks


def junit(checks: list[Check], path: Path, suite: str = "vnettracer") -> None:
    fails = sum(not c.ok for c in checks)
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           f"<testsuite name={quoteattr(suite)} tests=\"{len(checks)}\" failures=\"{fails}\" errors=\"0\">"]
    for c in checks:
        out.append(f"  <testcase classname={quoteattr(c.path)} name={quoteattr(c.segment)}>")
        if not c.ok:
            msg = "; ".join(c.problems)
            out.append(f"    <failure message={quoteattr(msg)}>{escape(c.detail)}</failure>")
        out.append("  </testcase>")
    out.append("</testsuite>")
    path.write_text("\n".join(out) + "\n")


def against(summary: dict, baseline: Path, max_regression: float) -> list[Check]:
    """Compare a run's summary with a baseline run folder (its summary.json, or its events
    analysed in memory: the baseline folder is never written)."""
    from vnettracer.analysis import analyze, inputs
    from vnettracer.errors import VntError

    if not baseline.is_dir():
        raise VntError(f"baseline run folder {baseline} does not exist")
    bfile = baseline / "summary.json"
    base = inputs.read_summary(bfile) if bfile.is_file() else analyze(baseline).summary
    return compare(summary, base, max_regression)


def raise_for_regressions(checks: list[Check], max_regression: str) -> None:
    from vnettracer.errors import RegressionError

    bad = [c for c in checks if not c.ok]
    if bad:
        raise RegressionError(f"{len(bad)} of {len(checks)} segments regressed beyond {max_regression}",
                              [f"{c.path}: {c.segment}: {'; '.join(c.problems)}" for c in bad])
